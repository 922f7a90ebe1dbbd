package roomserver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"

	"enclave/internal/lru"
	"enclave/storage"
)

// maxPrevEvents caps how many forward extremities a new event references.
const maxPrevEvents = 20

// OutputEvent is what the room server appends to its output stream: a
// stored event, delivered once its stream position is visible to readers.
type OutputEvent struct {
	Event *storage.Event
	PDU   gomatrixserverlib.PDU
}

// Hook runs inside the transaction that stores an event; if it fails, the
// event is not stored. The audit trail is a Hook, so no event is ever
// stored without its record.
type Hook func(ctx context.Context, tx *storage.Tx, ev *storage.Event, pdu gomatrixserverlib.PDU) error

// StateHook is a Hook that also sees the room's state right after the
// event. The federation sender is one: it queues the event for every
// server in the room inside the event's transaction, so an acknowledged
// event is never left unsent by a crash between commit and enqueue. State
// hooks run after the plain hooks; state must not be modified.
type StateHook func(ctx context.Context, tx *storage.Tx, ev *storage.Event, pdu gomatrixserverlib.PDU, state StateMap) error

// RoomServer implements API.
type RoomServer struct {
	db         *storage.DB
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	key        ed25519.PrivateKey

	locks sync.Map // room ID -> *sync.Mutex: one writer per room

	roomsMu sync.Mutex
	rooms   map[string]*roomHead // current state of rooms, loaded on demand

	events    *lru.Cache[string, gomatrixserverlib.PDU]
	snapshots *lru.Cache[int64, map[StateKey]string]

	fetcher EventFetcher
	// inviteSigner has a remote invitee's server countersign an invite
	// before it is stored (federation's /invite; nil with federation off).
	inviteSigner InviteSigner

	hooksMu    sync.RWMutex
	hooks      []Hook
	stateHooks []StateHook
	listeners  []func(OutputEvent)

	persist *prometheus.HistogramVec // see newPersistLatency

	// partial holds the rooms joined with partial state (partialstate.go).
	partial partialRooms
}

// roomHead is the in-memory copy of a room's tip: only changed under the
// room lock, after the transaction that changed the store has committed.
type roomHead struct {
	version     gomatrixserverlib.IRoomVersion
	extremities []string
	snapshot    int64
	chain       int64 // delta chain length of snapshot
	maxDepth    int64
	state       StateMap
	// gapBelow, on the head an event is stored on, names the event's
	// prev events we lack: positions are set aside below it for them.
	gapBelow []string
}

// stateIDs returns the head's state as event IDs.
func (h *roomHead) stateIDs() map[StateKey]string {
	m := make(map[StateKey]string, len(h.state))
	for k, v := range h.state {
		m[k] = v.EventID()
	}
	return m
}

// New makes a room server that signs local events with key.
func New(db *storage.DB, serverName string, keyID string, key ed25519.PrivateKey) *RoomServer {
	return &RoomServer{
		db:         db,
		serverName: spec.ServerName(serverName),
		keyID:      gomatrixserverlib.KeyID(keyID),
		key:        key,
		rooms:      map[string]*roomHead{},
		events:     lru.New[string, gomatrixserverlib.PDU](50000),
		snapshots:  lru.New[int64, map[StateKey]string](4096),
		persist:    newPersistLatency(),
	}
}

// AddHook registers a transactional hook (see Hook).
func (s *RoomServer) AddHook(h Hook) {
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	s.hooks = append(s.hooks, h)
}

// AddStateHook registers a transactional hook that needs the state after
// the event (see StateHook).
func (s *RoomServer) AddStateHook(h StateHook) {
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	s.stateHooks = append(s.stateHooks, h)
}

// Subscribe registers fn to receive every stored event in stream order of
// visibility. fn must not block for long.
func (s *RoomServer) Subscribe(fn func(OutputEvent)) {
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	s.listeners = append(s.listeners, fn)
}

func (s *RoomServer) lock(roomID string) func() {
	m, _ := s.locks.LoadOrStore(roomID, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// UserIDForSender maps sender IDs to user IDs: they are the same in every
// room version this server creates (no pseudo IDs).
func UserIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// head returns the room's tip, loading it from the store if needed.
// Callers hold the room lock or only read the result.
func (s *RoomServer) head(ctx context.Context, roomID string) (*roomHead, error) {
	s.roomsMu.Lock()
	h := s.rooms[roomID]
	s.roomsMu.Unlock()
	if h != nil {
		return h, nil
	}
	room, err := storage.GetRoom(ctx, s.db, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrRoomNotFound
	}
	if err != nil {
		return nil, err
	}
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		return nil, err
	}
	state, err := s.stateFromSnapshot(ctx, room.CurrentSnapshot)
	if err != nil {
		return nil, err
	}
	var chain int64
	if room.CurrentSnapshot != 0 {
		if _, chain, _, err = storage.GetSnapshot(ctx, s.db, room.CurrentSnapshot); err != nil {
			return nil, err
		}
	}
	h = &roomHead{version: ver, extremities: room.ForwardExtremities, snapshot: room.CurrentSnapshot, chain: chain, maxDepth: room.MaxDepth, state: state}
	s.roomsMu.Lock()
	if existing := s.rooms[roomID]; existing != nil {
		h = existing
	} else {
		s.rooms[roomID] = h
	}
	s.roomsMu.Unlock()
	return h, nil
}

func (s *RoomServer) setHead(roomID string, h *roomHead) {
	s.roomsMu.Lock()
	s.rooms[roomID] = h
	s.roomsMu.Unlock()
}

// RoomVersion implements API.
func (s *RoomServer) RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.RoomVersion, error) {
	h, err := s.head(ctx, roomID)
	if err != nil {
		return "", err
	}
	return h.version.Version(), nil
}

// CurrentState implements API. The returned map must not be modified.
func (s *RoomServer) CurrentState(ctx context.Context, roomID string) (StateMap, error) {
	h, err := s.head(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return h.state, nil
}

// Membership implements API.
func (s *RoomServer) Membership(ctx context.Context, roomID, userID string) (string, error) {
	st, err := s.CurrentState(ctx, roomID)
	if err != nil {
		return "", err
	}
	if st.Get(spec.MRoomCreate, "") == nil || !ServerJoined(st, s.serverName) {
		// A room we take no part in: a local user's invite, leave or knock
		// may be kept beside our copy of it (storeBesideRoom), and is then
		// the latest of the user's membership events.
		if _, d, err := gomatrixserverlib.SplitID('@', userID); err == nil && d == s.serverName {
			if e, err := storage.LatestMembershipBefore(ctx, s.db, roomID, userID, 1<<62); err == nil {
				return e.Membership, nil
			}
		}
	}
	return st.Membership(userID), nil
}

// StateAt implements API.
func (s *RoomServer) StateAt(ctx context.Context, eventID string, after bool) (StateMap, error) {
	ev, err := storage.GetEvent(ctx, s.db, eventID)
	if err != nil {
		return nil, err
	}
	id := ev.SnapshotBefore
	if after {
		id = ev.SnapshotAfter
	}
	return s.stateFromSnapshot(ctx, id)
}

// StateAtSnapshot resolves a snapshot ID to its state events.
func (s *RoomServer) StateAtSnapshot(ctx context.Context, id int64) (StateMap, error) {
	return s.stateFromSnapshot(ctx, id)
}

// Events implements API.
func (s *RoomServer) Events(ctx context.Context, ids []string) ([]gomatrixserverlib.PDU, error) {
	out := make([]gomatrixserverlib.PDU, 0, len(ids))
	var missing []string
	for _, id := range ids {
		if ev, ok := s.events.Get(id); ok {
			out = append(out, ev)
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	stored, err := storage.GetEvents(ctx, s.db, missing)
	if err != nil {
		return nil, err
	}
	for _, e := range stored {
		pdu, err := s.PDU(e)
		if err != nil {
			return nil, err
		}
		out = append(out, pdu)
	}
	return out, nil
}

// PDU parses a stored event (cached by event ID; redactions evict).
func (s *RoomServer) PDU(e *storage.Event) (gomatrixserverlib.PDU, error) {
	if ev, ok := s.events.Get(e.EventID); ok && ev.Redacted() == e.Redacted {
		return ev, nil
	}
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(e.RoomVersion))
	if err != nil {
		return nil, err
	}
	pdu, err := ver.NewEventFromTrustedJSONWithEventID(e.EventID, e.JSON, e.Redacted)
	if err != nil {
		return nil, fmt.Errorf("roomserver: parsing stored event %s: %w", e.EventID, err)
	}
	s.events.Put(e.EventID, pdu)
	return pdu, nil
}

// stateIDs resolves a snapshot chain to its (type, state_key) → event ID map.
func (s *RoomServer) stateIDs(ctx context.Context, id int64) (map[StateKey]string, error) {
	if id == 0 {
		return map[StateKey]string{}, nil
	}
	if m, ok := s.snapshots.Get(id); ok {
		return m, nil
	}
	parent, _, delta, err := storage.GetSnapshot(ctx, s.db, id)
	if err != nil {
		return nil, fmt.Errorf("roomserver: snapshot %d: %w", id, err)
	}
	base, err := s.stateIDs(ctx, parent)
	if err != nil {
		return nil, err
	}
	m := make(map[StateKey]string, len(base)+len(delta))
	for k, v := range base {
		m[k] = v
	}
	for _, d := range delta {
		if d.EventID == "" {
			delete(m, StateKey{d.Type, d.StateKey})
		} else {
			m[StateKey{d.Type, d.StateKey}] = d.EventID
		}
	}
	s.snapshots.Put(id, m)
	return m, nil
}

func (s *RoomServer) stateFromSnapshot(ctx context.Context, id int64) (StateMap, error) {
	ids, err := s.stateIDs(ctx, id)
	if err != nil {
		return nil, err
	}
	list := make([]string, 0, len(ids))
	for _, v := range ids {
		list = append(list, v)
	}
	pdus, err := s.Events(ctx, list)
	if err != nil {
		return nil, err
	}
	out := make(StateMap, len(pdus))
	for _, p := range pdus {
		out[StateKey{p.Type(), *p.StateKey()}] = p
	}
	return out, nil
}

// maxChain bounds how many deltas a snapshot read walks.
const maxChain = 32

// writeSnapshot stores the state that results from applying changes to the
// snapshot parent (whose state is parentIDs and delta chain parentChain), as
// a delta, or in full when the chain grows long. Parents are passed in, not
// read back, because they may have been written by this same transaction.
func (s *RoomServer) writeSnapshot(ctx context.Context, tx *storage.Tx, roomID string, parent, parentChain int64, parentIDs map[StateKey]string, changes []storage.StateEntry) (id, chain int64, err error) {
	delta := changes
	chain = parentChain + 1
	if parent == 0 || chain >= maxChain {
		next := make(map[StateKey]string, len(parentIDs)+len(changes))
		for k, v := range parentIDs {
			next[k] = v
		}
		for _, c := range changes {
			if c.EventID == "" {
				delete(next, StateKey{c.Type, c.StateKey})
			} else {
				next[StateKey{c.Type, c.StateKey}] = c.EventID
			}
		}
		parent, chain = 0, 0
		delta = make([]storage.StateEntry, 0, len(next))
		for k, v := range next {
			delta = append(delta, storage.StateEntry{Type: k.Type, StateKey: k.StateKey, EventID: v})
		}
	}
	id, err = storage.InsertSnapshot(ctx, tx, roomID, parent, chain, delta)
	return id, chain, err
}

func randomString(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	for i := range b {
		x, _ := rand.Int(rand.Reader, big.NewInt(int64(len(letters))))
		b[i] = letters[x.Int64()]
	}
	return string(b)
}

// authProvider collects the state an event's auth needs.
func authProvider(state StateMap, ev gomatrixserverlib.PDU) (*gomatrixserverlib.AuthEvents, error) {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev})
	var evs []gomatrixserverlib.PDU
	for _, t := range needed.Tuples() {
		if e := state.Get(t.EventType, t.StateKey); e != nil {
			evs = append(evs, e)
		}
	}
	return gomatrixserverlib.NewAuthEvents(evs)
}

// build makes a signed event of the room on top of prev.
func (s *RoomServer) build(ver gomatrixserverlib.IRoomVersion, roomID string, state StateMap, prev []string, depth int64, req SendRequest, now time.Time) (gomatrixserverlib.PDU, error) {
	if len(prev) == 0 && req.Type != spec.MRoomCreate {
		// A room known only from an invite or knock (no events of it
		// here): nothing to build on, and no standing to act in it.
		return nil, &NotAllowedError{Reason: "this server does not take part in the room"}
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID:   req.Sender,
		RoomID:     roomID,
		Type:       req.Type,
		StateKey:   req.StateKey,
		PrevEvents: prev,
		Redacts:    req.Redacts,
		Depth:      depth,
		Content:    spec.RawJSON(req.Content),
	}
	if len(proto.Content) == 0 {
		proto.Content = spec.RawJSON("{}")
	}
	if ver.Version() == gomatrixserverlib.RoomVersionV11 || ver.Version() == gomatrixserverlib.RoomVersionV12 {
		// From v11 "redacts" lives in content; keep it top-level too for old clients.
		if req.Redacts != "" {
			var c map[string]any
			_ = json.Unmarshal(proto.Content, &c)
			if c == nil {
				c = map[string]any{}
			}
			c["redacts"] = req.Redacts
			proto.Content, _ = json.Marshal(c)
		}
	}
	b := ver.NewEventBuilderFromProtoEvent(&proto)
	// Only the slots the auth rules name, not the whole state: sends in
	// large rooms stay cheap.
	proto.Version = ver
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&proto)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	var authEvs []gomatrixserverlib.PDU
	for _, t := range needed.Tuples() {
		if e := state.Get(t.EventType, t.StateKey); e != nil {
			authEvs = append(authEvs, e)
		}
	}
	provider, err := gomatrixserverlib.NewAuthEvents(authEvs)
	if err != nil {
		return nil, err
	}
	if err := b.AddAuthEvents(provider); err != nil {
		return nil, &NotAllowedError{Reason: err.Error()}
	}
	ev, err := b.Build(now, s.serverName, s.keyID, s.key)
	if err != nil {
		var ve gomatrixserverlib.EventValidationError
		if errors.As(err, &ve) {
			return nil, badRequest("%s", ve.Message)
		}
		return nil, badRequest("cannot build event: %v", err)
	}
	return ev, nil
}

// checkAllowed applies the room version's auth rules against state.
func checkAllowed(ev gomatrixserverlib.PDU, state StateMap) error {
	provider, err := authProvider(state, ev)
	if err != nil {
		return err
	}
	if err := gomatrixserverlib.Allowed(ev, provider, UserIDForSender); err != nil {
		return &NotAllowedError{Reason: err.Error()}
	}
	return nil
}

// StateEventAt returns one slot of a snapshot's state (nil if empty),
// without loading the rest: history-visibility checks ask this per event.
func (s *RoomServer) StateEventAt(ctx context.Context, snapshot int64, typ, stateKey string) (gomatrixserverlib.PDU, error) {
	ids, err := s.stateIDs(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	id, ok := ids[StateKey{typ, stateKey}]
	if !ok {
		return nil, nil
	}
	evs, err := s.Events(ctx, []string{id})
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return evs[0], nil
}
