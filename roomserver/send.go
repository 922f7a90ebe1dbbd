package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/storage"
)

// PowerLevel returns userID's power level in state, honouring v12's
// privileged creators and the no-power-levels default.
func PowerLevel(state StateMap, userID string) int64 {
	create := state.Get("m.room.create", "")
	if create != nil {
		if ver, err := gomatrixserverlib.GetRoomVersion(create.Version()); err == nil && ver.PrivilegedCreators() {
			for _, c := range gomatrixserverlib.CreatorsFromCreateEvent(create) {
				if c == userID {
					return 1 << 53
				}
			}
		}
	}
	pl := PowerLevels(state)
	return pl.UserLevel(spec.SenderID(userID))
}

// PowerLevels returns the room's power levels, or the defaults with the
// creator at 100 when the room has no m.room.power_levels event.
func PowerLevels(state StateMap) gomatrixserverlib.PowerLevelContent {
	if ev := state.Get("m.room.power_levels", ""); ev != nil {
		if pl, err := gomatrixserverlib.NewPowerLevelContentFromEvent(ev); err == nil {
			return pl
		}
	}
	var pl gomatrixserverlib.PowerLevelContent
	pl.Defaults()
	pl.Users = map[string]int64{}
	if create := state.Get("m.room.create", ""); create != nil {
		pl.Users[string(create.SenderID())] = 100
	}
	return pl
}

// checkLocalState refuses, as malformed (400 M_BAD_JSON) rather than
// forbidden, state a local user may not send in any room: a second create
// event (MSC4291: the room ID is its hash), and in rooms with privileged
// creators (MSC4289) power levels that list a creator, whose power is
// infinite and never in power levels.
func checkLocalState(h *roomHead, req SendRequest) error {
	if req.StateKey == nil {
		return nil
	}
	switch req.Type {
	case spec.MRoomCreate:
		return badRequest("a room has exactly one m.room.create event, sent when it is created")
	case spec.MRoomPowerLevels:
		if *req.StateKey != "" || !h.version.PrivilegedCreators() {
			return nil
		}
		create := h.state.Get(spec.MRoomCreate, "")
		if create == nil {
			return nil
		}
		var c struct {
			Users map[string]json.RawMessage `json:"users"`
		}
		if json.Unmarshal(req.Content, &c) != nil {
			return nil // the auth rules judge malformed content
		}
		for _, u := range gomatrixserverlib.CreatorsFromCreateEvent(create) {
			if _, ok := c.Users[u]; ok {
				return badRequest("%s is a room creator: creators have unlimited power and are not listed in power levels", u)
			}
		}
	}
	return nil
}

// TxnScope is the scope a client's transaction ID is recorded under for a
// send to roomID: the spec's idempotency key is device, room and txnId, so
// the same txnId in another room is another event.
func TxnScope(roomID string) string { return "send:" + roomID }

// SendEvent implements API.
func (s *RoomServer) SendEvent(ctx context.Context, req SendRequest) (*storage.Event, error) {
	unlock := s.lock(req.RoomID)
	defer unlock()

	if req.TxnID != "" {
		if id, err := storage.GetTxn(ctx, s.db, req.Sender, req.DeviceID, TxnScope(req.RoomID), req.TxnID); err == nil {
			return storage.GetEvent(ctx, s.db, id)
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
	}
	h, err := s.head(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	if err := checkLocalState(h, req); err != nil {
		return nil, err
	}
	prev := h.extremities
	if len(prev) > maxPrevEvents {
		prev = prev[len(prev)-maxPrevEvents:]
	}
	at := time.Now()
	if req.TS > 0 {
		at = time.UnixMilli(req.TS)
	}
	ev, err := s.build(h.version, req.RoomID, h.state, prev, h.maxDepth+1, req, at)
	if err != nil {
		return nil, err
	}
	if err := checkAllowed(ev, h.state); err != nil {
		return nil, err
	}
	if err := s.checkInviteFilter(ctx, ev); err != nil {
		return nil, err
	}
	if s.inviteSigner != nil && s.isRemoteInvite(ev) {
		// The invite is stored (and sent to the room) as the invitee's
		// server countersigned it: every server checks that signature.
		signed, err := s.inviteSigner(ctx, ev, h.state)
		if err != nil {
			return nil, &NotAllowedError{Reason: "the invitee's server did not accept the invite: " + err.Error()}
		}
		ev = signed
	}
	var stored *storage.Event
	var next *roomHead
	start := time.Now()
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		stored, next, err = s.appendLocal(ctx, tx, req.RoomID, h, ev, req)
		if err != nil {
			return err
		}
		if req.TxnID != "" {
			if err := storage.PutTxn(ctx, tx, req.Sender, req.DeviceID, TxnScope(req.RoomID), req.TxnID, ev.EventID(), time.Now().UnixMilli()); err != nil {
				return err
			}
		}
		return storage.UpdateRoomHead(ctx, tx, req.RoomID, next.extremities, next.snapshot, next.maxDepth, stored.StreamPos)
	})
	if err != nil && req.TxnID != "" && storage.IsUniqueViolation(err) {
		// The transaction ID was recorded after our check by a writer
		// our room lock does not cover: a process killed mid-send whose
		// commit PostgreSQL finished late, while its successor served the
		// client's retry. Answer that event, as for any retry.
		if id, gerr := storage.GetTxn(ctx, s.db, req.Sender, req.DeviceID, TxnScope(req.RoomID), req.TxnID); gerr == nil {
			return storage.GetEvent(ctx, s.db, id)
		}
	}
	if err != nil {
		return nil, err
	}
	s.observePersist("local", start)
	s.setHead(req.RoomID, next)
	return stored, nil
}

// appendLocal stores ev, which extends the room's tip h, inside tx and
// returns the stored row and the room's next tip (not yet installed: the
// caller installs it once the transaction commits).
func (s *RoomServer) appendLocal(ctx context.Context, tx *storage.Tx, roomID string, h *roomHead, ev gomatrixserverlib.PDU, req SendRequest) (*storage.Event, *roomHead, error) {
	se, next, err := s.storeEvent(ctx, tx, roomID, h, ev, false, req)
	if err != nil {
		return nil, nil, err
	}
	if sk := ev.StateKey(); sk != nil {
		if err := storage.SetCurrentState(ctx, tx, storage.CurrentStateRow{RoomID: roomID, Type: ev.Type(), StateKey: *sk, EventID: ev.EventID(), Membership: se.Membership, StreamPos: se.StreamPos}); err != nil {
			return nil, nil, err
		}
	}
	return se, next, nil
}

// storeEvent writes ev into the timeline on top of the state `before`
// (snapshot, chain and state of the room just before ev) and returns the
// stored row and a head holding the state after ev, with ev as the only
// extremity. Soft-failed events are stored but never shown or published.
// Hooks (audit, then the state hooks: federation's queue) run inside tx;
// listeners (sync, push) run once the event's stream position is visible.
func (s *RoomServer) storeEvent(ctx context.Context, tx *storage.Tx, roomID string, before *roomHead, ev gomatrixserverlib.PDU, softFailed bool, req SendRequest) (*storage.Event, *roomHead, error) {
	next := &roomHead{version: before.version, extremities: []string{ev.EventID()}, snapshot: before.snapshot, chain: before.chain, maxDepth: max(before.maxDepth, ev.Depth()), state: before.state}
	// What we store, cache and keep in the state carries the slot's
	// previous content (clients read e.g. an accepted invite's is_direct
	// from a join's prev_content); hooks get the event as it was signed.
	stored := withPrevContent(ev, before.state)
	var pos, gapLo int64
	if len(before.gapBelow) > 0 {
		gapLo, pos = tx.NextPosAfterGap("events", gapSlots)
	} else {
		pos = tx.NextPos("events")
	}
	se := &storage.Event{
		StreamPos:      pos,
		EventID:        ev.EventID(),
		RoomID:         roomID,
		RoomVersion:    string(before.version.Version()),
		Type:           ev.Type(),
		StateKey:       ev.StateKey(),
		Sender:         string(ev.SenderID()),
		Depth:          ev.Depth(),
		OriginTS:       int64(ev.OriginServerTS()),
		ReceivedTS:     time.Now().UnixMilli(),
		JSON:           stored.JSON(),
		SoftFailed:     softFailed,
		SnapshotBefore: before.snapshot,
		SnapshotAfter:  before.snapshot,
		TxnID:          req.TxnID,
		TxnDevice:      req.DeviceID,
		Imported:       req.Imported,
	}
	if ev.Type() == spec.MRoomMember {
		se.Membership, _ = ev.Membership()
	}
	if sk := ev.StateKey(); sk != nil {
		id, chain, err := s.writeSnapshot(ctx, tx, roomID, before.snapshot, before.chain, before.stateIDs(), []storage.StateEntry{{Type: ev.Type(), StateKey: *sk, EventID: ev.EventID()}})
		if err != nil {
			return nil, nil, err
		}
		se.SnapshotAfter = id
		next.snapshot, next.chain = id, chain
		next.state = make(StateMap, len(before.state)+1)
		for k, v := range before.state {
			next.state[k] = v
		}
		next.state[StateKey{ev.Type(), *sk}] = stored
	}
	inserted, err := storage.InsertEvent(ctx, tx, se)
	if err != nil {
		return nil, nil, err
	}
	if !inserted {
		// Held as an outlier (an auth or state event fetched earlier): it
		// now takes its place in the timeline.
		old, err := storage.GetEvent(ctx, tx, ev.EventID())
		if err != nil {
			return nil, nil, err
		}
		if !old.Outlier {
			return nil, nil, fmt.Errorf("roomserver: event %s already stored", ev.EventID())
		}
		if err := storage.PromoteOutlier(ctx, tx, se); err != nil {
			return nil, nil, err
		}
	}
	if len(before.gapBelow) > 0 && !softFailed { // a soft-failed event is in no timeline
		if err := storage.InsertGap(ctx, tx, &storage.Gap{RoomID: roomID, EventID: ev.EventID(), EventPos: pos,
			NextPos: pos - 1, FloorPos: gapLo, PrevIDs: before.gapBelow}); err != nil {
			return nil, nil, err
		}
	}
	if softFailed {
		return se, next, nil
	}
	if ev.Type() == spec.MRoomRedaction {
		if err := s.applyRedaction(ctx, tx, next, ev); err != nil {
			return nil, nil, err
		}
	}
	s.hooksMu.RLock()
	hooks, stateHooks := s.hooks, s.stateHooks
	listeners := s.listeners
	s.hooksMu.RUnlock()
	for _, hook := range hooks {
		if err := hook(ctx, tx, se, ev); err != nil {
			return nil, nil, fmt.Errorf("roomserver: hook: %w", err)
		}
	}
	for _, hook := range stateHooks {
		if err := hook(ctx, tx, se, ev, next.state); err != nil {
			return nil, nil, fmt.Errorf("roomserver: state hook: %w", err)
		}
	}
	if !req.Imported { // an import's history would flush the cache of live rooms
		tx.AfterCommit(func() { s.events.Put(ev.EventID(), stored) })
	}
	tx.Publish(pos, func() {
		for _, l := range listeners {
			l(OutputEvent{Event: se, PDU: stored})
		}
	})
	return se, next, nil
}

// withPrevContent returns ev with unsigned prev_content, prev_sender and
// replaces_state naming the event it replaces in st, if any (the
// Client-Server API's unsigned data of state events).
func withPrevContent(ev gomatrixserverlib.PDU, st StateMap) gomatrixserverlib.PDU {
	sk := ev.StateKey()
	if sk == nil {
		return ev
	}
	prev := st.Get(ev.Type(), *sk)
	if prev == nil || prev.EventID() == ev.EventID() {
		return ev
	}
	u := map[string]any{}
	if un := ev.Unsigned(); len(un) > 0 {
		_ = json.Unmarshal(un, &u)
	}
	u["prev_content"] = json.RawMessage(prev.Content())
	u["prev_sender"] = string(prev.SenderID())
	u["replaces_state"] = prev.EventID()
	out, err := ev.SetUnsigned(u)
	if err != nil {
		return ev
	}
	return out
}

// redactsTarget returns the event a redaction redacts (top level before v11,
// content from v11).
func redactsTarget(ev gomatrixserverlib.PDU) string {
	if r := ev.Redacts(); r != "" {
		return r
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.Redacts
}

// applyRedaction strips the target's content as its room version says, if
// the redaction's sender may redact it: the original sender, or anyone
// with the room's redact power level.
func (s *RoomServer) applyRedaction(ctx context.Context, tx *storage.Tx, h *roomHead, redaction gomatrixserverlib.PDU) error {
	targetID := redactsTarget(redaction)
	target, err := storage.GetEvent(ctx, tx, targetID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil // may arrive later over federation; nothing to strip now
	}
	if err != nil {
		return err
	}
	if target.RoomID != redaction.RoomID().String() || target.Redacted {
		return nil
	}
	sender := string(redaction.SenderID())
	if target.Sender != sender {
		pl := PowerLevels(h.state)
		if PowerLevel(h.state, sender) < pl.Redact {
			return nil
		}
	}
	redacted, err := h.version.RedactEventJSON(target.JSON)
	if err != nil {
		return err
	}
	if err := storage.RedactEvent(ctx, tx, targetID, redacted, redaction.EventID()); err != nil {
		return err
	}
	tx.AfterCommit(func() { s.events.Remove(targetID) })
	if target.StateKey != nil {
		k := StateKey{target.Type, *target.StateKey}
		if cur := h.state[k]; cur != nil && cur.EventID() == targetID {
			pdu, err := h.version.NewEventFromTrustedJSONWithEventID(targetID, redacted, true)
			if err == nil {
				st := make(StateMap, len(h.state))
				for kk, v := range h.state {
					st[kk] = v
				}
				st[k] = pdu
				h.state = st
			}
		}
	}
	return nil
}

// CreateRoom implements API.
func (s *RoomServer) CreateRoom(ctx context.Context, req CreateRoomRequest) (string, error) {
	ver, err := gomatrixserverlib.GetRoomVersion(req.RoomVersion)
	if err != nil {
		return "", err
	}
	now := time.Now()
	if req.TS > 0 {
		now = time.UnixMilli(req.TS)
	}
	content := map[string]any{}
	for k, v := range req.CreateContent {
		content[k] = v
	}
	content["room_version"] = string(req.RoomVersion)
	if ver.CreatorInCreateEvent() {
		content["creator"] = req.Creator
	} else {
		delete(content, "creator")
	}
	roomID := ""
	if !ver.DomainlessRoomIDs() {
		roomID = fmt.Sprintf("!%s:%s", randomString(18), s.serverName)
	}
	cb, _ := json.Marshal(content)
	empty := ""
	create, err := s.build(ver, roomID, StateMap{}, []string{}, 1, SendRequest{Sender: req.Creator, Type: spec.MRoomCreate, StateKey: &empty, Content: cb}, now)
	if err != nil {
		return "", err
	}
	if ver.DomainlessRoomIDs() {
		roomID = "!" + create.EventID()[1:]
	}
	if err := checkAllowed(create, StateMap{}); err != nil {
		return "", err
	}
	unlock := s.lock(roomID)
	defer unlock()

	h := &roomHead{version: ver, extremities: nil, state: StateMap{}}
	var pdus = []gomatrixserverlib.PDU{create}
	// Build the rest on top of each other, checking each against the state
	// it extends, before anything is written.
	state := StateMap{StateKey{spec.MRoomCreate, ""}: create}
	prev := create.EventID()
	depth := int64(1)
	for _, ie := range req.Events {
		cb, err := json.Marshal(ie.Content)
		if err != nil {
			return "", badRequest("initial event %s: %v", ie.Type, err)
		}
		depth++
		ev, err := s.build(ver, roomID, state, []string{prev}, depth, SendRequest{Sender: req.Creator, Type: ie.Type, StateKey: ie.StateKey, Content: cb}, now)
		if err != nil {
			return "", err
		}
		if err := checkAllowed(ev, state); err != nil {
			return "", err
		}
		if sk := ev.StateKey(); sk != nil {
			ns := make(StateMap, len(state)+1)
			for k, v := range state {
				ns[k] = v
			}
			ns[StateKey{ev.Type(), *sk}] = ev
			state = ns
		}
		pdus = append(pdus, ev)
		prev = ev.EventID()
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.InsertRoom(ctx, tx, &storage.Room{RoomID: roomID, Version: string(req.RoomVersion), Creator: req.Creator, CreatedTS: now.UnixMilli(), IsPublic: req.Public}); err != nil {
			return err
		}
		if req.Alias != "" {
			ok, err := storage.InsertAlias(ctx, tx, req.Alias, roomID, req.Creator)
			if err != nil {
				return err
			}
			if !ok {
				return ErrAliasInUse
			}
		}
		cur := h
		var last *storage.Event
		for _, ev := range pdus {
			var err error
			last, cur, err = s.appendLocal(ctx, tx, roomID, cur, ev, SendRequest{Imported: req.Imported})
			if err != nil {
				return err
			}
		}
		h = cur
		if req.InTx != nil {
			if err := req.InTx(tx, roomID); err != nil {
				return err
			}
		}
		return storage.UpdateRoomHead(ctx, tx, roomID, h.extremities, h.snapshot, h.maxDepth, last.StreamPos)
	})
	if err != nil {
		return "", err
	}
	s.setHead(roomID, h)
	return roomID, nil
}
