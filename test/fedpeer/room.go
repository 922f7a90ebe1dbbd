package fedpeer

import (
	"encoding/json"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Room is a room as the peer sees it: every event it was given or made,
// the state (last writer wins: the peer does not resolve state, the server
// under test does) and the forward extremities.
type Room struct {
	ID      string
	Version gomatrixserverlib.IRoomVersion

	p       *Peer
	mu      sync.Mutex
	events  map[string]gomatrixserverlib.PDU
	state   map[string]gomatrixserverlib.PDU // "type|state_key"
	forward map[string]bool
	depth   int64
}

func slot(ev gomatrixserverlib.PDU) string { return ev.Type() + "|" + *ev.StateKey() }

// Add records ev: it becomes a forward extremity instead of its prev
// events, and a state event becomes the current state of its slot.
func (r *Room) Add(ev gomatrixserverlib.PDU) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.events[ev.EventID()]; ok {
		return
	}
	r.events[ev.EventID()] = ev
	for _, prev := range ev.PrevEventIDs() {
		delete(r.forward, prev)
	}
	r.forward[ev.EventID()] = true
	if ev.StateKey() != nil {
		r.state[slot(ev)] = ev
	}
	r.depth = max(r.depth, ev.Depth())
}

// Keep records ev so the peer serves it (/event, missing events) without
// making it part of the room's state or forward extremities: how a test
// plants an event that the server under test can only fetch.
func (r *Room) Keep(ev gomatrixserverlib.PDU) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events[ev.EventID()] = ev
}

// Event is the event with eventID the peer has (nil if none).
func (r *Room) Event(eventID string) gomatrixserverlib.PDU {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[eventID]
}

// State is the current state event of (typ, stateKey), nil if none.
func (r *Room) State(typ, stateKey string) gomatrixserverlib.PDU {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[typ+"|"+stateKey]
}

// Forward is the room's forward extremities, sorted.
func (r *Room) Forward() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.forward))
	for id := range r.forward {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// AuthFor is the auth events the spec requires for proto, from the current
// state (the create event left out where the room version says so).
func (r *Room) AuthFor(t testing.TB, proto gomatrixserverlib.ProtoEvent) []string {
	t.Helper()
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&proto)
	if err != nil {
		t.Fatalf("auth events for %s: %v", proto.Type, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []string{}
	for _, tup := range needed.Tuples() {
		if tup.EventType == spec.MRoomCreate && r.Version.DomainlessRoomIDs() {
			continue
		}
		if e := r.state[tup.EventType+"|"+tup.StateKey]; e != nil {
			out = append(out, e.EventID())
		}
	}
	return out
}

// Build signs proto as the peer. Unset fields default to the room: room
// ID, prev events (the forward extremities), auth events (AuthFor) and
// depth (one past the deepest event known). The event is not added to the
// room; SendPDUs adds it once the server under test accepts it.
func (r *Room) Build(t testing.TB, proto gomatrixserverlib.ProtoEvent) gomatrixserverlib.PDU {
	t.Helper()
	if proto.RoomID == "" {
		proto.RoomID = r.ID
	}
	if proto.PrevEvents == nil {
		proto.PrevEvents = r.Forward()
	}
	if proto.AuthEvents == nil {
		proto.AuthEvents = r.AuthFor(t, proto)
	}
	if proto.Depth == 0 {
		r.mu.Lock()
		proto.Depth = r.depth + 1
		r.mu.Unlock()
	}
	if proto.Content == nil {
		proto.Content = spec.RawJSON("{}")
	}
	ev, err := r.Version.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), r.p.ServerName, r.p.KeyID, r.p.Key)
	if err != nil {
		t.Fatalf("fedpeer building %s: %v", proto.Type, err)
	}
	return ev
}

// Message builds an m.room.message (m.text) from sender.
func (r *Room) Message(t testing.TB, sender, body string) gomatrixserverlib.PDU {
	t.Helper()
	c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	return r.Build(t, gomatrixserverlib.ProtoEvent{SenderID: sender, Type: "m.room.message", Content: c})
}

// StateEvent builds a state event from sender.
func (r *Room) StateEvent(t testing.TB, sender, typ, stateKey string, content any) gomatrixserverlib.PDU {
	t.Helper()
	c, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	return r.Build(t, gomatrixserverlib.ProtoEvent{SenderID: sender, Type: typ, StateKey: &stateKey, Content: c})
}

// walkBack collects events from the given ones backwards through prev
// events, stopping at stop (exclusive) and after limit events; include
// says whether the starting events themselves are returned (backfill) or
// only their ancestors' walk starts from them (get_missing_events returns
// the latest events' ancestors only).
func (r *Room) walkBack(from, stop []string, limit int, include bool) []gomatrixserverlib.PDU {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, s := range stop {
		seen[s] = true
	}
	var queue []string
	if include {
		queue = append(queue, from...)
	} else {
		for _, id := range from {
			seen[id] = true
			if e := r.events[id]; e != nil {
				queue = append(queue, e.PrevEventIDs()...)
			}
		}
	}
	var out []gomatrixserverlib.PDU
	for len(queue) > 0 && len(out) < limit {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		e := r.events[id]
		if e == nil {
			continue
		}
		out = append(out, e)
		queue = append(queue, e.PrevEventIDs()...)
	}
	return out
}
