package syncapi

import (
	"context"
	"sort"
	"sync"
	"time"

	"enclave/storage"
)

// Typing notifications live in memory only: each change of a room's
// typing set bumps the ephemeral counter (token .Eph) and wakes the room;
// /sync sends a room's current set when it changed after since.Eph.

// Typing tracks who is typing where.
type Typing struct {
	s         *Syncer
	mu        sync.Mutex
	rooms     map[string]*typingRoom
	lastPrune time.Time
}

type typingRoom struct {
	users   map[string]*typingEntry
	changed int64     // ephemeral counter at the last change of users
	emptyAt time.Time // when users last became empty
}

type typingEntry struct {
	gen   uint64
	timer *time.Timer
}

// Set marks userID as typing in roomID for timeout, or as not typing.
func (t *Typing) Set(roomID, userID string, typing bool, timeout time.Duration) {
	t.mu.Lock()
	r := t.rooms[roomID]
	if r == nil {
		r = &typingRoom{users: map[string]*typingEntry{}}
		t.rooms[roomID] = r
	}
	e := r.users[userID]
	changed := false
	switch {
	case typing:
		if e == nil {
			e = &typingEntry{}
			r.users[userID] = e
			changed = true
		} else {
			e.timer.Stop()
		}
		e.gen++
		gen := e.gen
		e.timer = time.AfterFunc(timeout, func() { t.expire(roomID, userID, gen) })
	case e != nil:
		e.timer.Stop()
		delete(r.users, userID)
		changed = true
	}
	if changed {
		t.changedLocked(r)
	}
	t.pruneLocked()
	t.mu.Unlock()
	if changed {
		t.s.NotifyRoom(roomID)
	}
}

// changedLocked records a change of r's set. The counter is bumped under
// t.mu, so a sync whose To.Eph covers the bump sees the new set.
func (t *Typing) changedLocked(r *typingRoom) {
	r.changed = t.s.BumpEphemeral()
	if len(r.users) == 0 {
		r.emptyAt = time.Now()
	}
}

func (t *Typing) expire(roomID, userID string, gen uint64) {
	t.mu.Lock()
	r := t.rooms[roomID]
	if r == nil || r.users[userID] == nil || r.users[userID].gen != gen {
		t.mu.Unlock()
		return
	}
	delete(r.users, userID)
	t.changedLocked(r)
	t.mu.Unlock()
	t.s.NotifyRoom(roomID)
}

// pruneLocked forgets rooms nobody has typed in for a while; a client
// that far behind gets no "stopped typing" for them.
func (t *Typing) pruneLocked() {
	now := time.Now()
	if now.Sub(t.lastPrune) < time.Minute {
		return
	}
	t.lastPrune = now
	for id, r := range t.rooms {
		if len(r.users) == 0 && now.Sub(r.emptyAt) > 10*time.Minute {
			delete(t.rooms, id)
		}
	}
}

// Users returns who is typing in a room, sorted.
func (t *Typing) Users(roomID string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rooms[roomID]
	if r == nil {
		return nil
	}
	out := make([]string, 0, len(r.users))
	for u := range r.users {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// ephemeral sends m.typing and m.receipt events of joined rooms.
type ephemeral struct {
	s *Syncer
	t *Typing
}

// NewEphemeralExtension makes the typing and receipts stream.
func NewEphemeralExtension(s *Syncer) Extension { return &ephemeral{s: s, t: s.typing} }

func allowsEphemeral(f *RoomEventFilter, roomID, typ string) bool {
	if !allowsRoom(f.Rooms, f.NotRooms, roomID) || anyMatch(f.NotTypes, typ, true) {
		return false
	}
	return f.Types == nil || anyMatch(*f.Types, typ, true)
}

func (e *ephemeral) Apply(ctx context.Context, req *Request, resp *Response) error {
	joined := make(map[string]bool, len(req.JoinedRooms))
	for _, r := range req.JoinedRooms {
		joined[r] = true
	}
	ef := &req.Filter.Room.Ephemeral
	ignored := e.s.IgnoredBy(req.UserID)
	e.typing(req, resp, joined, ef, ignored)
	return e.receipts(ctx, req, resp, joined, ef, ignored)
}

func (e *ephemeral) typing(req *Request, resp *Response, joined map[string]bool, ef *RoomEventFilter, ignored map[string]bool) {
	type update struct {
		room  string
		users []string
	}
	var updates []update
	e.t.mu.Lock()
	for roomID, r := range e.t.rooms {
		if !joined[roomID] {
			continue
		}
		send := r.changed > req.Since.Eph && r.changed <= req.To.Eph
		if req.Initial {
			send = len(r.users) > 0
		}
		if !send {
			continue
		}
		users := make([]string, 0, len(r.users))
		for u := range r.users {
			if !ignored[u] {
				users = append(users, u)
			}
		}
		updates = append(updates, update{roomID, users})
	}
	e.t.mu.Unlock()
	for _, u := range updates {
		if !allowsEphemeral(ef, u.room, "m.typing") {
			continue
		}
		sort.Strings(u.users)
		jr := resp.JoinedRoom(u.room)
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": u.users}})
	}
}

// receipts sends, per room, one m.receipt event with the receipts stored
// in (Since, To] (on an initial sync: all of them).
func (e *ephemeral) receipts(ctx context.Context, req *Request, resp *Response, joined map[string]bool, ef *RoomEventFilter, ignored map[string]bool) error {
	if !e.s.moved("receipts", req) {
		return nil
	}
	rs, err := storage.ReceiptsRange(ctx, e.s.db, req.UserID, req.Since.Pos, req.To.Pos)
	if err != nil {
		return err
	}
	// room -> event -> type -> user -> {ts, thread_id}
	byRoom := map[string]map[string]map[string]map[string]any{}
	var order []string
	for _, r := range rs {
		if !joined[r.RoomID] || (r.UserID != req.UserID && ignored[r.UserID]) || !allowsEphemeral(ef, r.RoomID, "m.receipt") {
			continue
		}
		room := byRoom[r.RoomID]
		if room == nil {
			room = map[string]map[string]map[string]any{}
			byRoom[r.RoomID] = room
			order = append(order, r.RoomID)
		}
		ev := room[r.EventID]
		if ev == nil {
			ev = map[string]map[string]any{}
			room[r.EventID] = ev
		}
		users := ev[r.Type]
		if users == nil {
			users = map[string]any{}
			ev[r.Type] = users
		}
		info := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			// An unthreaded receipt for the same event wins (MSC4102).
			if prev, ok := users[r.UserID].(map[string]any); ok && prev["thread_id"] == nil {
				continue
			}
			info["thread_id"] = r.ThreadID
		}
		users[r.UserID] = info
	}
	for _, roomID := range order {
		jr := resp.JoinedRoom(roomID)
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, map[string]any{"type": "m.receipt", "content": byRoom[roomID]})
	}
	return nil
}

// Stop stops the typing timers and forgets who types (at shutdown, so a
// stopped server leaves no timer running).
func (t *Typing) Stop() {
	t.mu.Lock()
	for _, r := range t.rooms {
		for _, e := range r.users {
			e.timer.Stop()
		}
	}
	t.rooms = map[string]*typingRoom{}
	t.mu.Unlock()
}
