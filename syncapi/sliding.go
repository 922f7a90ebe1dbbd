package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/roomserver"
	"enclave/storage"
)

// Simplified sliding sync (MSC4186), the sync Element X uses. Rooms are
// ordered by recency (the room's last stream position, which is also the
// bump_stamp); each list returns the rooms in its ranges. The server keeps,
// per connection (user, device, conn_id), which rooms it has sent at which
// position, so an incremental request sends only rooms that changed or that
// the client has not seen. That state is in memory: after a restart a pos
// is answered with M_UNKNOWN_POS and the client starts a new session.
// Extensions reuse the /sync extensions over the same (pos, now] range.

// SlidingRequest is the body (and query) of a sliding sync request.
type SlidingRequest struct {
	ConnID string `json:"conn_id,omitempty"`
	TxnID  string `json:"txn_id,omitempty"`
	// Pos in the body is accepted as well as the pos query parameter
	// (Complement's MSC4308 tests send it there).
	Pos               string                       `json:"pos,omitempty"`
	Lists             map[string]SlidingList       `json:"lists,omitempty"`
	RoomSubscriptions map[string]SlidingRoomConfig `json:"room_subscriptions,omitempty"`
	Extensions        SlidingExtensionsRequest     `json:"extensions"`
}

// SlidingRoomConfig is what the client wants of each room.
type SlidingRoomConfig struct {
	RequiredState [][2]string `json:"required_state,omitempty"`
	TimelineLimit int         `json:"timeline_limit"`
}

// SlidingList is one named list: the ranges of the sorted, filtered rooms.
type SlidingList struct {
	SlidingRoomConfig
	Ranges  [][2]int        `json:"ranges"`
	Filters *SlidingFilters `json:"filters,omitempty"`
}

// SlidingFilters narrow a list (all set fields must hold).
type SlidingFilters struct {
	IsDM         *bool     `json:"is_dm,omitempty"`
	IsEncrypted  *bool     `json:"is_encrypted,omitempty"`
	IsInvite     *bool     `json:"is_invite,omitempty"`
	RoomTypes    []*string `json:"room_types,omitempty"`
	NotRoomTypes []*string `json:"not_room_types,omitempty"`
}

// SlidingExtensionsRequest enables the extensions.
type SlidingExtensionsRequest struct {
	ToDevice *struct {
		Enabled *bool  `json:"enabled"`
		Since   string `json:"since,omitempty"`
	} `json:"to_device,omitempty"`
	E2EE        *slidingEnabled `json:"e2ee,omitempty"`
	AccountData *slidingEnabled `json:"account_data,omitempty"`
	Receipts    *slidingEnabled `json:"receipts,omitempty"`
	Typing      *slidingEnabled `json:"typing,omitempty"`
	// ThreadSubscriptions is MSC4308's extension: the user's thread
	// subscription changes since pos, the newest limit of them.
	ThreadSubscriptions *struct {
		Enabled *bool `json:"enabled"`
		Limit   *int  `json:"limit"`
	} `json:"io.element.msc4308.thread_subscriptions,omitempty"`
}

type slidingEnabled struct {
	Enabled *bool `json:"enabled"`
}

func (e *slidingEnabled) on() bool { return e != nil && e.Enabled != nil && *e.Enabled }

// SlidingResponse is the response body.
type SlidingResponse struct {
	TxnID      string                         `json:"txn_id,omitempty"`
	Pos        string                         `json:"pos"`
	Lists      map[string]SlidingListResponse `json:"lists"`
	Rooms      map[string]*SlidingRoom        `json:"rooms"`
	Extensions map[string]any                 `json:"extensions"`
}

// SlidingListResponse is a list's total room count.
type SlidingListResponse struct {
	Count int `json:"count"`
}

// Hero is a member shown for a room without a name.
type Hero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// SlidingRoom is one room of the response.
type SlidingRoom struct {
	Name              string          `json:"name,omitempty"`
	Avatar            string          `json:"avatar,omitempty"`
	Initial           bool            `json:"initial,omitempty"`
	IsDM              bool            `json:"is_dm,omitempty"`
	InviteState       []StrippedEvent `json:"invite_state,omitempty"`
	NotificationCount int             `json:"notification_count"`
	HighlightCount    int             `json:"highlight_count"`
	Timeline          []ClientEvent   `json:"timeline,omitempty"`
	RequiredState     []ClientEvent   `json:"required_state,omitempty"`
	PrevBatch         string          `json:"prev_batch,omitempty"`
	Limited           bool            `json:"limited,omitempty"`
	JoinedCount       *int            `json:"joined_count,omitempty"`
	InvitedCount      *int            `json:"invited_count,omitempty"`
	NumLive           *int            `json:"num_live,omitempty"`
	BumpStamp         int64           `json:"bump_stamp"`
	Heroes            []Hero          `json:"heroes,omitempty"`
}

// ErrUnknownPos is returned for a pos this server cannot continue from
// (unknown connection, e.g. after a restart): the client starts over.
var ErrUnknownPos = errors.New("unknown pos")

// MaxTimelineLimit bounds timeline_limit.
const MaxTimelineLimit = 100

// slidingConn is what one connection has been sent.
type slidingConn struct {
	mu   sync.Mutex
	sent map[string]sentRoom
}

type sentRoom struct {
	pos int64  // the response pos it was sent with
	cfg string // the room config it was sent with
}

func (s *Syncer) slidingConn(key string, create bool) *slidingConn {
	cache := s.sliding
	if c, ok := cache.Get(key); ok {
		return c
	}
	if !create {
		return nil
	}
	c := &slidingConn{sent: map[string]sentRoom{}}
	cache.Put(key, c)
	return c
}

// SlidingParams are one sliding sync call.
type SlidingParams struct {
	UserID, DeviceID string
	Pos              *Token // nil starts a new session
	Timeout          time.Duration
	Req              *SlidingRequest
}

// Sliding answers a sliding sync request: at once for a new session or when
// something changed, otherwise when woken or when the timeout passes.
func (s *Syncer) Sliding(ctx context.Context, p SlidingParams) (*SlidingResponse, error) {
	key := p.UserID + "\x00" + p.DeviceID + "\x00" + p.Req.ConnID
	conn := s.slidingConn(key, p.Pos == nil)
	if conn == nil {
		return nil, ErrUnknownPos
	}
	if p.Pos == nil {
		conn.mu.Lock()
		conn.sent = map[string]sentRoom{} // a new session
		conn.mu.Unlock()
	}
	deadline := time.Now().Add(p.Timeout)
	for {
		wake := s.n.channel(p.UserID)
		to := s.Current()
		since := Token{}
		if p.Pos != nil {
			since = *p.Pos
			if since.Eph > to.Eph {
				since.Eph = 0
			}
			since.Pos = min(since.Pos, to.Pos)
		}
		resp, empty, err := s.slidingBuild(ctx, p, conn, since, to)
		if err != nil {
			return nil, err
		}
		if p.Pos == nil || !empty || !time.Now().Before(deadline) || s.shuttingDown() {
			return resp, nil
		}
		s.n.addWaiter(SlidingWaiter, 1)
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-wake:
		case <-timer.C:
		case <-s.stopping:
		case <-ctx.Done():
			timer.Stop()
			s.n.addWaiter(SlidingWaiter, -1)
			return nil, ctx.Err()
		}
		timer.Stop()
		s.n.addWaiter(SlidingWaiter, -1)
	}
}

// slidingRoomInfo is a candidate room of the user.
type slidingRoomInfo struct {
	id         string
	membership string
	bump       int64
	memberPos  int64
	state      roomserver.StateMap // loaded on demand
}

func (s *Syncer) roomState(ctx context.Context, r *slidingRoomInfo) (roomserver.StateMap, error) {
	if r.state == nil {
		st, err := s.rs.CurrentState(ctx, r.id)
		if err != nil {
			return nil, err
		}
		r.state = st
	}
	return r.state, nil
}

func (s *Syncer) slidingBuild(ctx context.Context, p SlidingParams, conn *slidingConn, since, to Token) (*SlidingResponse, bool, error) {
	initial := p.Pos == nil
	resp := &SlidingResponse{TxnID: p.Req.TxnID, Pos: to.String(), Lists: map[string]SlidingListResponse{}, Rooms: map[string]*SlidingRoom{}, Extensions: map[string]any{}}
	userRooms, err := storage.UserRooms(ctx, s.db, p.UserID)
	if err != nil {
		return nil, false, err
	}
	var all []*slidingRoomInfo
	byID := map[string]*slidingRoomInfo{}
	var hidden *inviteHider // read on the first invite
	var joined []string
	for id, ur := range userRooms {
		r := &slidingRoomInfo{id: id, membership: ur.Membership, bump: ur.LastPos, memberPos: ur.MemberPos}
		switch ur.Membership {
		case "join":
			joined = append(joined, id)
		case "invite":
			if hidden == nil {
				hidden = s.inviteHider(ctx, p.UserID)
			}
			if hidden.active() {
				st, err := s.roomState(ctx, r)
				if err != nil {
					return nil, false, err
				}
				if inv := st.Get("m.room.member", p.UserID); inv != nil && hidden.hides(string(inv.SenderID())) {
					continue // as in /sync: dropIgnoredInvites
				}
			}
			if ur.MemberPos > 0 {
				r.bump = ur.MemberPos
			}
		case "leave", "ban":
			// A room left since pos is sent once more so the client sees
			// the leave; otherwise left rooms are not listed.
			if initial || ur.MemberPos <= since.Pos {
				continue
			}
			r.bump = ur.MemberPos
		default:
			continue
		}
		all = append(all, r)
		byID[id] = r
	}
	sort.Strings(joined)
	sort.Slice(all, func(i, j int) bool {
		if all[i].bump != all[j].bump {
			return all[i].bump > all[j].bump
		}
		return all[i].id < all[j].id
	})
	dms, err := s.directRooms(ctx, p.UserID)
	if err != nil {
		return nil, false, err
	}

	// The rooms in the lists' windows and subscriptions, with the union of
	// what each asks for.
	want := map[string]*SlidingRoomConfig{}
	var order []string
	add := func(id string, c SlidingRoomConfig) {
		w := want[id]
		if w == nil {
			w = &SlidingRoomConfig{}
			want[id] = w
			order = append(order, id)
		}
		w.TimelineLimit = max(w.TimelineLimit, min(c.TimelineLimit, MaxTimelineLimit))
		w.RequiredState = append(w.RequiredState, c.RequiredState...)
	}
	names := make([]string, 0, len(p.Req.Lists))
	for name := range p.Req.Lists {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l := p.Req.Lists[name]
		var rooms []*slidingRoomInfo
		for _, r := range all {
			ok, err := s.slidingFilter(ctx, p.UserID, l.Filters, r, dms)
			if err != nil {
				return nil, false, err
			}
			if ok {
				rooms = append(rooms, r)
			}
		}
		resp.Lists[name] = SlidingListResponse{Count: len(rooms)}
		for _, rg := range l.Ranges {
			for i := max(rg[0], 0); i <= rg[1] && i < len(rooms); i++ {
				add(rooms[i].id, l.SlidingRoomConfig)
			}
		}
	}
	subs := make([]string, 0, len(p.Req.RoomSubscriptions))
	for id := range p.Req.RoomSubscriptions {
		subs = append(subs, id)
	}
	sort.Strings(subs)
	for _, id := range subs {
		if byID[id] != nil { // only rooms the user is in or invited to
			add(id, p.Req.RoomSubscriptions[id])
		}
	}

	conn.mu.Lock()
	sent := make(map[string]sentRoom, len(conn.sent))
	for k, v := range conn.sent {
		sent[k] = v
	}
	conn.mu.Unlock()

	req := &Request{UserID: p.UserID, DeviceID: p.DeviceID, Since: since, To: to, Initial: initial, Filter: &Filter{}, JoinedRooms: joined}
	legacy := &Response{NextBatch: to.String(), Rooms: Rooms{Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{}, Leave: map[string]*LeftRoom{}}}
	newlySent := map[string]sentRoom{}
	for _, id := range order {
		r, cfg := byID[id], want[id]
		cfgKey := configKey(cfg)
		prev, known := sent[id]
		known = known && !initial && prev.pos <= since.Pos && prev.cfg == cfgKey
		if known && r.bump <= since.Pos && r.memberPos <= since.Pos {
			continue // nothing new for a room the client has
		}
		room, err := s.slidingRoom(ctx, req, r, cfg, known, dms[id])
		if err != nil {
			return nil, false, err
		}
		resp.Rooms[id] = room
		newlySent[id] = sentRoom{pos: to.Pos, cfg: cfgKey}
		if r.membership == "join" {
			jr := legacy.JoinedRoom(id)
			jr.Timeline.Events = room.Timeline
		}
	}

	// The /sync extensions over the same range: relations bundle the
	// timelines, unread counts fill the rooms, the rest map to extensions.
	if err := s.slidingExtensions(ctx, p, req, legacy, resp, want); err != nil {
		return nil, false, err
	}
	for id, room := range resp.Rooms {
		if jr := legacy.Rooms.Join[id]; jr != nil {
			room.Timeline = jr.Timeline.Events
			if jr.UnreadNotifications != nil {
				room.NotificationCount = jr.UnreadNotifications.NotificationCount
				room.HighlightCount = jr.UnreadNotifications.HighlightCount
			}
		}
	}

	conn.mu.Lock()
	for id, v := range newlySent {
		if r := byID[id]; r != nil && (r.membership == "leave" || r.membership == "ban") {
			delete(conn.sent, id)
			continue
		}
		conn.sent[id] = v
	}
	conn.mu.Unlock()
	return resp, len(resp.Rooms) == 0 && len(resp.Extensions) == 0, nil
}

func configKey(c *SlidingRoomConfig) string {
	rs := make([]string, len(c.RequiredState))
	for i, r := range c.RequiredState {
		rs[i] = r[0] + "\x00" + r[1]
	}
	sort.Strings(rs)
	b, _ := json.Marshal(struct {
		L int
		R []string
	}{c.TimelineLimit, rs})
	return string(b)
}

// directRooms reads the user's m.direct account data: the DM rooms.
func (s *Syncer) directRooms(ctx context.Context, userID string) (map[string]bool, error) {
	content, err := storage.GetAccountData(ctx, s.db, userID, "", "m.direct")
	if errors.Is(err, storage.ErrNotFound) {
		return map[string]bool{}, nil
	} else if err != nil {
		return nil, err
	}
	var m map[string][]string
	_ = json.Unmarshal(content, &m)
	out := map[string]bool{}
	for _, rooms := range m {
		for _, r := range rooms {
			out[r] = true
		}
	}
	return out, nil
}

func (s *Syncer) slidingFilter(ctx context.Context, userID string, f *SlidingFilters, r *slidingRoomInfo, dms map[string]bool) (bool, error) {
	if f == nil {
		return true, nil
	}
	if f.IsInvite != nil && *f.IsInvite != (r.membership == "invite") {
		return false, nil
	}
	if f.IsDM != nil {
		dm := dms[r.id]
		if !dm && r.membership == "invite" {
			st, err := s.roomState(ctx, r)
			if err != nil {
				return false, err
			}
			dm = isDirectInvite(st, userID)
		}
		if *f.IsDM != dm {
			return false, nil
		}
	}
	if f.IsEncrypted == nil && f.RoomTypes == nil && f.NotRoomTypes == nil {
		return true, nil
	}
	st, err := s.roomState(ctx, r)
	if err != nil {
		return false, err
	}
	if f.IsEncrypted != nil && *f.IsEncrypted != (st.Get("m.room.encryption", "") != nil) {
		return false, nil
	}
	var roomType *string
	if c := st.Get("m.room.create", ""); c != nil {
		var cc struct {
			Type *string `json:"type"`
		}
		_ = json.Unmarshal(c.Content(), &cc)
		roomType = cc.Type
	}
	matches := func(types []*string) bool {
		for _, t := range types {
			if (t == nil && roomType == nil) || (t != nil && roomType != nil && *t == *roomType) {
				return true
			}
		}
		return false
	}
	if f.RoomTypes != nil && !matches(f.RoomTypes) {
		return false, nil
	}
	return !matches(f.NotRoomTypes), nil
}

// isDirectInvite reports whether the user's pending invite says is_direct.
func isDirectInvite(st roomserver.StateMap, userID string) bool {
	e := st.Get("m.room.member", userID)
	if e == nil {
		return false
	}
	var c struct {
		IsDirect bool `json:"is_direct"`
	}
	m, _ := e.Membership()
	return m == "invite" && json.Unmarshal(e.Content(), &c) == nil && c.IsDirect
}

// slidingRoom builds one room: everything for a room the client does not
// have (known false), otherwise what happened since pos.
func (s *Syncer) slidingRoom(ctx context.Context, req *Request, r *slidingRoomInfo, cfg *SlidingRoomConfig, known, dm bool) (*SlidingRoom, error) {
	room := &SlidingRoom{Initial: !known, BumpStamp: r.bump, IsDM: dm}
	st, err := s.roomState(ctx, r)
	if err != nil {
		return nil, err
	}
	if r.membership == "invite" {
		if isDirectInvite(st, req.UserID) {
			room.IsDM = true
		}
		ir, err := s.invitedRoom(ctx, req.UserID, r.id, nil)
		if err != nil {
			return nil, err
		}
		if ir != nil {
			room.InviteState = ir.InviteState.Events
		}
		s.slidingMeta(room, st, req.UserID)
		return room, nil
	}
	to := req.To.Pos
	if r.membership != "join" {
		to = min(to, r.memberPos) // nothing after the leave
	}
	from := int64(0)
	if known {
		from = req.Since.Pos
	}
	evs, ms, limited, err := s.recentEvents(ctx, req.UserID, r.id, from, to, cfg.TimelineLimit)
	if err != nil {
		return nil, err
	}
	room.Timeline = s.format(req, evs, ms, nil)
	room.Limited = limited
	// Pagination goes back from the timeline's first event, or from its
	// end when it is empty (timeline_limit 0).
	room.PrevBatch = Token{Pos: to}.String()
	if len(evs) > 0 {
		room.PrevBatch = Token{Pos: evs[0].StreamPos - 1}.String()
	}
	live := 0
	if !req.Initial {
		for _, e := range evs {
			if e.StreamPos > req.Since.Pos {
				live++
			}
		}
	}
	room.NumLive = &live

	// required_state is the state at the end of the timeline: all of it
	// that matches for a new room, the changed slots for a known one.
	snap, err := storage.SnapshotAtPos(ctx, s.db, r.id, to)
	if err != nil {
		return nil, err
	}
	now, err := s.rs.StateAtSnapshot(ctx, snap)
	if err != nil {
		return nil, err
	}
	var old roomserver.StateMap
	if known {
		before, err := storage.SnapshotAtPos(ctx, s.db, r.id, req.Since.Pos)
		if err != nil {
			return nil, err
		}
		if old, err = s.rs.StateAtSnapshot(ctx, before); err != nil {
			return nil, err
		}
	}
	lazy := map[string]bool{}
	for _, e := range evs {
		lazy[e.Sender] = true
	}
	var pick []gomatrixserverlib.PDU
	for k, e := range now {
		if !requiredStateMatches(cfg.RequiredState, k.Type, k.StateKey, req.UserID, lazy) {
			continue
		}
		lazyMember := k.Type == "m.room.member" && lazy[k.StateKey]
		if old != nil && !lazyMember {
			if o := old[k]; o != nil && o.EventID() == e.EventID() {
				continue
			}
		}
		pick = append(pick, e)
	}
	room.RequiredState = s.formatPDUs(ctx, req, pick)
	s.slidingMeta(room, now, req.UserID)
	return room, nil
}

// slidingMeta sets name, avatar, member counts and heroes from state.
func (s *Syncer) slidingMeta(room *SlidingRoom, st roomserver.StateMap, userID string) {
	var c struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	if e := st.Get("m.room.name", ""); e != nil && json.Unmarshal(e.Content(), &c) == nil {
		room.Name = c.Name
	}
	if e := st.Get("m.room.avatar", ""); e != nil && json.Unmarshal(e.Content(), &c) == nil {
		room.Avatar = c.URL
	}
	joined, invited := 0, 0
	var heroes []Hero
	for k, e := range st {
		if k.Type != "m.room.member" {
			continue
		}
		m, _ := e.Membership()
		switch m {
		case "join":
			joined++
		case "invite":
			invited++
		default:
			continue
		}
		if k.StateKey == userID {
			continue
		}
		var mc struct {
			DisplayName string `json:"displayname"`
			AvatarURL   string `json:"avatar_url"`
		}
		_ = json.Unmarshal(e.Content(), &mc)
		heroes = append(heroes, Hero{UserID: k.StateKey, DisplayName: mc.DisplayName, AvatarURL: mc.AvatarURL})
	}
	sort.Slice(heroes, func(i, j int) bool { return heroes[i].UserID < heroes[j].UserID })
	if len(heroes) > 5 {
		heroes = heroes[:5]
	}
	room.JoinedCount, room.InvitedCount = &joined, &invited
	if room.Name == "" {
		room.Heroes = heroes
	}
}

// requiredStateMatches applies the required_state rules to one slot: "*"
// matches any type or key, "$ME" is the user, and "$LAZY" (members) the
// senders of the timeline.
func requiredStateMatches(rules [][2]string, typ, key, userID string, lazy map[string]bool) bool {
	for _, r := range rules {
		if r[0] != "*" && r[0] != typ {
			continue
		}
		switch r[1] {
		case "*":
			return true
		case "$ME":
			if key == userID {
				return true
			}
		case "$LAZY":
			if typ == "m.room.member" && lazy[key] {
				return true
			}
		default:
			if r[1] == key {
				return true
			}
		}
	}
	return false
}

// formatPDUs renders state events, oldest first.
func (s *Syncer) formatPDUs(ctx context.Context, req *Request, pdus []gomatrixserverlib.PDU) []ClientEvent {
	if len(pdus) == 0 {
		return nil
	}
	ids := make([]string, len(pdus))
	for i, e := range pdus {
		ids[i] = e.EventID()
	}
	stored, err := storage.GetEvents(ctx, s.db, ids)
	if err != nil {
		return nil
	}
	sort.Slice(stored, func(i, j int) bool { return stored[i].StreamPos < stored[j].StreamPos })
	out := make([]ClientEvent, 0, len(stored))
	v := Viewer{UserID: req.UserID, DeviceID: req.DeviceID}
	for _, e := range stored {
		pdu, err := s.rs.PDU(e)
		if err != nil {
			continue
		}
		out = append(out, FormatEvent(e, pdu, v, false))
	}
	return out
}

// slidingExtensions runs the /sync extensions for (Since, To] and maps
// their sections. The E2EE stream runs only when to_device or e2ee is
// enabled, from to_device.since when given: its since acknowledges
// (deletes) the to-device messages before it.
func (s *Syncer) slidingExtensions(ctx context.Context, p SlidingParams, req *Request, legacy *Response, out *SlidingResponse, rooms map[string]*SlidingRoomConfig) error {
	s.extMu.RLock()
	exts := s.extensions
	s.extMu.RUnlock()
	var e2ee *E2EE
	for _, e := range exts {
		if x, ok := e.(*E2EE); ok {
			e2ee = x
			continue
		}
		if err := e.Apply(ctx, req, legacy); err != nil {
			return err
		}
	}
	x := p.Req.Extensions
	toDeviceOn := x.ToDevice != nil && x.ToDevice.Enabled != nil && *x.ToDevice.Enabled
	if e2ee != nil && (toDeviceOn || x.E2EE.on()) {
		ereq := *req
		if toDeviceOn && x.ToDevice.Since != "" {
			if t, err := ParseToken(x.ToDevice.Since); err == nil && t.Pos >= 0 && t.Pos <= req.To.Pos {
				ereq.Since = Token{Pos: t.Pos}
				ereq.Initial = false
			}
		}
		eresp := &Response{Rooms: Rooms{Join: map[string]*JoinedRoom{}}}
		if err := e2ee.Apply(ctx, &ereq, eresp); err != nil {
			return err
		}
		if toDeviceOn {
			events := []any{}
			if eresp.ToDevice != nil {
				events = eresp.ToDevice.Events
			}
			if len(events) > 0 || p.Pos == nil {
				out.Extensions["to_device"] = map[string]any{"next_batch": req.To.String(), "events": events}
			}
		}
		if x.E2EE.on() {
			m := map[string]any{}
			if dl := eresp.DeviceLists; dl != nil && (len(dl.Changed) > 0 || len(dl.Left) > 0) {
				m["device_lists"] = dl
			}
			// Counts always come along (clients top keys up from them),
			// but alone they do not end a long-poll.
			if len(m) > 0 || p.Pos == nil {
				m["device_one_time_keys_count"] = eresp.DeviceOneTimeKeysCount
				m["device_unused_fallback_key_types"] = eresp.DeviceUnusedFallbackKeyTypes
				out.Extensions["e2ee"] = m
			}
		}
	}
	if x.AccountData.on() {
		ad := map[string]any{}
		if legacy.AccountData != nil && len(legacy.AccountData.Events) > 0 {
			ad["global"] = legacy.AccountData.Events
		}
		byRoom := map[string][]any{}
		for id, jr := range legacy.Rooms.Join {
			if len(jr.AccountData.Events) > 0 && rooms[id] != nil {
				byRoom[id] = jr.AccountData.Events
			}
		}
		if len(byRoom) > 0 {
			ad["rooms"] = byRoom
		}
		if len(ad) > 0 {
			out.Extensions["account_data"] = ad
		}
	}
	if ts := x.ThreadSubscriptions; ts != nil && ts.Enabled != nil && *ts.Enabled && s.db.Stream.Moved("thread_subscriptions", req.Since.Pos) {
		limit := defaultThreadSubscriptionsLimit
		if ts.Limit != nil && *ts.Limit > 0 {
			limit = min(*ts.Limit, defaultThreadSubscriptionsLimit)
		}
		page, err := ThreadSubscriptionPage(ctx, s.db, p.UserID, req.Since.Pos, req.To.Pos, limit)
		if err != nil {
			return err
		}
		if len(page) > 0 {
			out.Extensions[threadSubscriptionsExtension] = page
		}
	}
	for _, kind := range []struct {
		name, typ string
		on        bool
	}{{"receipts", "m.receipt", x.Receipts.on()}, {"typing", "m.typing", x.Typing.on()}} {
		if !kind.on {
			continue
		}
		byRoom := map[string]any{}
		for id, jr := range legacy.Rooms.Join {
			if rooms[id] == nil {
				continue
			}
			for _, ev := range jr.Ephemeral.Events {
				if m, ok := ev.(map[string]any); ok && m["type"] == kind.typ {
					byRoom[id] = ev
				}
			}
		}
		if len(byRoom) > 0 {
			out.Extensions[kind.name] = map[string]any{"rooms": byRoom}
		}
	}
	return nil
}
