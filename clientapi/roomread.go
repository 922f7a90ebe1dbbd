package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"sort"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
	"enclave/syncapi"
)

// events serves reading rooms: state, members, single events, /messages,
// /context, relations and threads, search, receipts and read markers,
// typing and notifications. Each read goes through access, so history
// visibility is applied in one place.
type events struct {
	opts Options
	db   *storage.DB
	rs   roomserver.API
	sync *syncapi.Syncer
	// Set by SetFederation (nil: federation off): backfill for /messages,
	// and the sender of typing and receipts to other servers.
	fed       Federation
	ephemeral EphemeralSender
}

// readAccess says what of a room a user may read: the state (current, or
// as it was when they left) and the stream position reading stops at.
type readAccess struct {
	state  roomserver.StateMap
	capPos int64
}

// access decides whether userID may read roomID at all: members read it
// now, former members read it up to their departure, anyone reads a
// world_readable room.
func (eg *events) access(ctx context.Context, userID, roomID string) (*readAccess, httpapi.Response, bool) {
	cur, err := eg.rs.CurrentState(ctx, roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return nil, httpapi.Forbidden("you are not allowed to read room %s", roomID), false
	} else if err != nil {
		return nil, httpapi.InternalError(nil, err), false
	}
	switch cur.Membership(userID) {
	case "join":
		return &readAccess{state: cur, capPos: math.MaxInt64}, httpapi.Response{}, true
	case "leave", "ban":
		// A room the user forgot is no longer theirs to read (the spec's
		// forget: "the user will no longer be able to retrieve history").
		forgotten, err := storage.ForgottenRooms(ctx, eg.db, userID)
		if err != nil {
			return nil, httpapi.InternalError(nil, err), false
		}
		if forgotten[roomID] {
			break
		}
		last, err := storage.LatestMembershipBefore(ctx, eg.db, roomID, userID, math.MaxInt64)
		if err != nil {
			return nil, httpapi.InternalError(nil, err), false
		}
		// A user who was only ever invited (and rejected) sees nothing.
		if joins, _ := storage.UserJoinPositions(ctx, eg.db, roomID, userID); len(joins) > 0 {
			st, err := eg.rs.StateAtSnapshot(ctx, last.SnapshotAfter)
			if err != nil {
				return nil, httpapi.InternalError(nil, err), false
			}
			return &readAccess{state: st, capPos: last.StreamPos}, httpapi.Response{}, true
		}
	}
	if hv := cur.Get("m.room.history_visibility", ""); hv != nil {
		if v, _ := hv.HistoryVisibility(); v == "world_readable" {
			return &readAccess{state: cur, capPos: math.MaxInt64}, httpapi.Response{}, true
		}
	}
	return nil, httpapi.Forbidden("you are not allowed to read room %s", roomID), false
}

// readableRoom validates the request's room ID and checks the caller may
// read the room (see access).
func (eg *events) readableRoom(r *http.Request, dev *httpapi.Device) (string, *readAccess, httpapi.Response, bool) {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return "", nil, resp, false
	}
	acc, resp, ok := eg.access(r.Context(), dev.UserID, roomID)
	return roomID, acc, resp, ok
}

func viewer(dev *httpapi.Device) syncapi.Viewer {
	return syncapi.Viewer{UserID: dev.UserID, DeviceID: dev.DeviceID}
}

// formatPDUs renders state events (by loading their stored rows).
func (eg *events) formatStored(ctx context.Context, dev *httpapi.Device, evs []*storage.Event, withRoomID bool) []syncapi.ClientEvent {
	return eg.formatStoredAt(ctx, dev, evs, withRoomID, nil)
}

// formatStoredAt is formatStored with the viewer's membership at each
// event (unsigned.membership, MSC4115) from syncapi's VisibleAt.
func (eg *events) formatStoredAt(ctx context.Context, dev *httpapi.Device, evs []*storage.Event, withRoomID bool, ms syncapi.Memberships) []syncapi.ClientEvent {
	out := make([]syncapi.ClientEvent, 0, len(evs))
	v := viewer(dev)
	v.Memberships = ms
	for _, e := range evs {
		pdu, err := eg.rs.PDU(e)
		if err != nil {
			continue
		}
		out = append(out, syncapi.FormatEvent(e, pdu, v, withRoomID))
	}
	eg.bundle(ctx, dev, out) // unsigned m.relations, one batch per page (relations.go)
	return out
}

func (eg *events) formatState(ctx context.Context, dev *httpapi.Device, pdus []gomatrixserverlib.PDU) ([]syncapi.ClientEvent, error) {
	ids := make([]string, len(pdus))
	for i, p := range pdus {
		ids[i] = p.EventID()
	}
	stored, err := storage.GetEvents(ctx, eg.db, ids)
	if err != nil {
		return nil, err
	}
	sort.Slice(stored, func(i, j int) bool { return stored[i].StreamPos < stored[j].StreamPos })
	return eg.formatStored(ctx, dev, stored, true), nil
}

func (eg *events) members(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, acc, resp, ok := eg.readableRoom(r, dev)
	if !ok {
		return resp
	}
	state := acc.state
	q := r.URL.Query()
	if at := q.Get("at"); at != "" {
		tok, err := syncapi.ParseToken(at)
		if err != nil {
			return httpapi.InvalidParam("invalid at token")
		}
		pos := min(tok.Pos, acc.capPos)
		snap, err := storage.SnapshotAtPos(r.Context(), eg.db, roomID, pos)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		if snap == 0 {
			// The token precedes the room (an initial sync's prev_batch
			// when its timeline starts at the room's creation): the
			// members as the user first joined, the earliest state their
			// timeline shows them.
			joins, err := storage.UserJoinPositions(r.Context(), eg.db, roomID, dev.UserID)
			if err != nil {
				return httpapi.InternalError(r, err)
			}
			if len(joins) > 0 && joins[0] <= acc.capPos {
				if snap, err = storage.SnapshotAtPos(r.Context(), eg.db, roomID, joins[0]); err != nil {
					return httpapi.InternalError(r, err)
				}
			}
		}
		if state, err = eg.rs.StateAtSnapshot(r.Context(), snap); err != nil {
			return httpapi.InternalError(r, err)
		}
	}
	want, notWant := q.Get("membership"), q.Get("not_membership")
	var evs []gomatrixserverlib.PDU
	for k, e := range state {
		if k.Type != "m.room.member" {
			continue
		}
		m, _ := e.Membership()
		if (want != "" && m != want) || (notWant != "" && m == notWant) {
			continue
		}
		evs = append(evs, e)
	}
	chunk, err := eg.formatState(r.Context(), dev, evs)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{"chunk": chunk})
}

func (eg *events) joinedMembers(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, acc, resp, ok := eg.readableRoom(r, dev)
	if !ok {
		return resp
	}
	if acc.capPos != math.MaxInt64 {
		// The current members are for members (and world-readable rooms),
		// not for who left: the spec's 403.
		return httpapi.Forbidden("you are not a member of room %s", roomID)
	}
	joined := map[string]any{}
	for k, e := range acc.state {
		if k.Type != "m.room.member" {
			continue
		}
		if m, _ := e.Membership(); m != "join" {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(e.Content(), &c)
		joined[k.StateKey] = map[string]any{"display_name": c.DisplayName, "avatar_url": c.AvatarURL}
	}
	return httpapi.JSON(200, map[string]any{"joined": joined})
}

func (eg *events) roomState(r *http.Request, dev *httpapi.Device) httpapi.Response {
	_, acc, resp, ok := eg.readableRoom(r, dev)
	if !ok {
		return resp
	}
	evs, err := eg.formatState(r.Context(), dev, acc.state.Events())
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, evs)
}

func (eg *events) roomStateEvent(r *http.Request, dev *httpapi.Device) httpapi.Response {
	_, acc, resp, ok := eg.readableRoom(r, dev)
	if !ok {
		return resp
	}
	v := httpapi.Vars(r)
	ev := acc.state.Get(v["eventType"], v["stateKey"])
	if ev == nil {
		return httpapi.NotFound("no %s state event with key %q", v["eventType"], v["stateKey"])
	}
	if r.URL.Query().Get("format") == "event" {
		evs, err := eg.formatState(r.Context(), dev, []gomatrixserverlib.PDU{ev})
		if err != nil || len(evs) == 0 {
			return httpapi.InternalError(r, err)
		}
		return httpapi.JSON(200, evs[0])
	}
	return httpapi.Response{Code: 200, Body: []byte(ev.Content())}
}

func (eg *events) getEvent(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	ev, err := storage.GetEvent(r.Context(), eg.db, httpapi.Vars(r)["eventId"])
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (ev.RoomID != roomID || ev.StreamPos == 0 || ev.SoftFailed || ev.Rejected)) {
		return httpapi.NotFound("event not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	acc, _, ok := eg.access(r.Context(), dev.UserID, roomID)
	if !ok {
		return httpapi.NotFound("event not found")
	}
	if ev.StreamPos > acc.capPos {
		return httpapi.NotFound("event not found")
	}
	vis, ms, err := eg.sync.VisibleAt(r.Context(), dev.UserID, roomID, []*storage.Event{ev})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if len(vis) == 0 {
		return httpapi.NotFound("event not found")
	}
	return httpapi.JSON(200, eg.formatStoredAt(r.Context(), dev, vis, true, ms)[0])
}

// parseRoomEventFilter reads the filter query parameter of /messages.
func parseRoomEventFilter(r *http.Request) (*syncapi.RoomEventFilter, httpapi.Response, bool) {
	f := &syncapi.RoomEventFilter{}
	if s := r.URL.Query().Get("filter"); s != "" {
		if err := json.Unmarshal([]byte(s), f); err != nil {
			return nil, httpapi.BadJSON("invalid filter: %v", err), false
		}
	}
	return f, httpapi.Response{}, true
}

func parseLimit(r *http.Request, def, maxv int) (int, httpapi.Response, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, httpapi.Response{}, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, httpapi.InvalidParam("limit must be a non-negative integer"), false
	}
	if n == 0 {
		n = def
	}
	return min(n, maxv), httpapi.Response{}, true
}

// messages pages through a room's timeline (GET /rooms/{roomId}/messages).
// Tokens are stream positions: a token P sits between the events at P and
// P+1, so paging back from a /sync prev_batch reaches every event.
func (eg *events) messages(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	// Who may read comes first: a stranger learns nothing from how the
	// request is malformed.
	acc, resp, ok := eg.access(r.Context(), dev.UserID, roomID)
	if !ok {
		return resp
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		return httpapi.InvalidParam("dir must be b or f")
	}
	limit, resp, ok := parseLimit(r, 10, 1000)
	if !ok {
		return resp
	}
	filter, resp, ok := parseRoomEventFilter(r)
	if !ok {
		return resp
	}
	current := eg.db.Stream.Current()
	upper := min(current, acc.capPos)
	var from int64
	if s := q.Get("from"); s != "" {
		tok, err := syncapi.ParseToken(s)
		if err != nil {
			return httpapi.InvalidParam("invalid from token")
		}
		from = tok.Pos
	} else if dir == "b" {
		from = upper
	} else {
		from = math.MinInt64 // the start, below any backfilled history
	}
	// Positions may be negative (backfilled history): hasTo, not a sentinel.
	var to int64
	hasTo := false
	if s := q.Get("to"); s != "" {
		tok, err := syncapi.ParseToken(s)
		if err != nil {
			return httpapi.InvalidParam("invalid to token")
		}
		to, hasTo = tok.Pos, true
	}
	var evs []*storage.Event
	var err error
	if dir == "b" {
		// Backfilled history has negative positions: no lower bound.
		lo := int64(math.MinInt64)
		if hasTo {
			lo = to
		}
		hi := min(from, upper)
		evs, err = storage.RoomEventsRange(r.Context(), eg.db, roomID, lo, hi, limit, true)
		// We hold no older events: ask the other servers (backfill), a
		// page at a time until this page is full. A server answers at
		// most 100 events a request, so a larger limit takes several; the
		// rounds are bounded so one request cannot pull a whole history.
		// A hole this page runs into (events we missed while away or
		// partitioned) is filled first, the same way.
		for round := 0; err == nil && eg.fed != nil && round < limit/50+2; round++ {
			lowest := lo
			if len(evs) == limit {
				lowest = evs[len(evs)-1].StreamPos
			}
			n, berr := eg.fed.FillGap(r.Context(), roomID, lowest, hi, min(limit, 100))
			if berr == nil && n == 0 && len(evs) < limit && !hasTo {
				n, berr = eg.fed.Backfill(r.Context(), roomID, min(limit-len(evs), 100))
			}
			if berr != nil || n == 0 {
				break
			}
			evs, err = storage.RoomEventsRange(r.Context(), eg.db, roomID, lo, hi, limit, true)
		}
	} else {
		hi := upper
		if hasTo {
			hi = min(hi, to)
		}
		evs, err = storage.RoomEventsRange(r.Context(), eg.db, roomID, from, hi, limit, false)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	body := map[string]any{"start": syncapi.Token{Pos: from}.String()}
	// end is given whenever this page held events, as clients expect: a
	// short page does not tell them the room is exhausted, the empty page
	// after it (without end) does.
	if len(evs) > 0 {
		last := evs[len(evs)-1].StreamPos
		if dir == "b" {
			last--
		}
		body["end"] = syncapi.Token{Pos: last}.String()
	}
	vis, ms, err := eg.sync.VisibleAt(r.Context(), dev.UserID, roomID, evs)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	kept := vis[:0:0]
	ignored := eg.sync.IgnoredBy(dev.UserID)
	for _, e := range vis {
		if filter.AllowsEvent(roomID, e.Type, e.Sender, e.JSON) && !syncapi.Ignored(ignored, e.Sender, e.StateKey != nil) {
			kept = append(kept, e)
		}
	}
	body["chunk"] = eg.formatStoredAt(r.Context(), dev, kept, true, ms)
	if filter.LazyLoadMembers {
		senders := map[string]bool{}
		var members []gomatrixserverlib.PDU
		for _, e := range kept {
			if !senders[e.Sender] {
				senders[e.Sender] = true
				if m := acc.state.Get("m.room.member", e.Sender); m != nil {
					members = append(members, m)
				}
			}
		}
		st, err := eg.formatState(r.Context(), dev, members)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		body["state"] = st
	}
	return httpapi.JSON(200, body)
}

func (eg *events) eventContext(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	limit, resp, ok := parseLimit(r, 10, 100)
	if !ok {
		return resp
	}
	filter, resp, ok := parseRoomEventFilter(r)
	if !ok {
		return resp
	}
	acc, resp, ok := eg.access(r.Context(), dev.UserID, roomID)
	if !ok {
		return resp
	}
	ev, err := storage.GetEvent(r.Context(), eg.db, httpapi.Vars(r)["eventId"])
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (ev.RoomID != roomID || ev.StreamPos == 0 || ev.StreamPos > acc.capPos)) {
		return httpapi.NotFound("event not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	vis, evMs, err := eg.sync.VisibleAt(r.Context(), dev.UserID, roomID, []*storage.Event{ev})
	if err != nil {
		return httpapi.InternalError(r, err)
	} else if len(vis) == 0 {
		return httpapi.NotFound("event not found")
	}
	ev = vis[0] // as this viewer may see it (an erased sender's, redacted)
	half := limit / 2
	before, err := storage.RoomEventsRange(r.Context(), eg.db, roomID, math.MinInt64, ev.StreamPos-1, half, true)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	after, err := storage.RoomEventsRange(r.Context(), eg.db, roomID, ev.StreamPos, min(eg.db.Stream.Current(), acc.capPos), limit-half, false)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	start, end := ev.StreamPos-1, ev.StreamPos
	if len(before) > 0 {
		start = before[len(before)-1].StreamPos - 1
	}
	if len(after) > 0 {
		end = after[len(after)-1].StreamPos
	}
	keep := func(evs []*storage.Event) []syncapi.ClientEvent {
		vis, ms, _ := eg.sync.VisibleAt(r.Context(), dev.UserID, roomID, evs)
		k := vis[:0:0]
		for _, e := range vis {
			if filter.AllowsEvent(roomID, e.Type, e.Sender, e.JSON) {
				k = append(k, e)
			}
		}
		return eg.formatStoredAt(r.Context(), dev, k, true, ms)
	}
	st, err := eg.rs.StateAtSnapshot(r.Context(), ev.SnapshotBefore)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	state, err := eg.formatState(r.Context(), dev, st.Events())
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{
		"event":         eg.formatStoredAt(r.Context(), dev, []*storage.Event{ev}, true, evMs)[0],
		"events_before": keep(before),
		"events_after":  keep(after),
		"start":         syncapi.Token{Pos: start}.String(),
		"end":           syncapi.Token{Pos: end}.String(),
		"state":         state,
	})
}
