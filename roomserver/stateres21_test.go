package roomserver

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// dag builds a v12 room's events by hand: each with the auth_events and
// prev_events given, a strictly increasing origin_server_ts, and the
// signature of a test key (resolution does not check signatures).
type dag struct {
	t      *testing.T
	key    ed25519.PrivateKey
	ver    gomatrixserverlib.IRoomVersion
	roomID string
	ts     time.Time
	last   string
	events map[string]gomatrixserverlib.PDU
	names  map[string]string // event ID -> test name, for messages
}

func newDAG(t *testing.T, creator string) (*dag, gomatrixserverlib.PDU) {
	_, key, _ := ed25519.GenerateKey(nil)
	d := &dag{t: t, key: key, ver: gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV12),
		ts: time.UnixMilli(1_700_000_000_000), events: map[string]gomatrixserverlib.PDU{}, names: map[string]string{}}
	create := d.ev("create", creator, spec.MRoomCreate, "", map[string]any{"room_version": "12"}, nil)
	return d, create
}

// ev builds one state event on top of the previous one built.
func (d *dag) ev(name, sender, typ, stateKey string, content any, auth []gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	d.t.Helper()
	cb, _ := json.Marshal(content)
	authIDs := []string{}
	for _, a := range auth {
		authIDs = append(authIDs, a.EventID())
	}
	prev := []string{}
	if d.last != "" {
		prev = []string{d.last}
	}
	d.ts = d.ts.Add(time.Second)
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: d.roomID, Type: typ, StateKey: &stateKey,
		PrevEvents: prev, AuthEvents: authIDs, Depth: int64(len(d.events) + 1), Content: cb, Version: d.ver}
	e, err := d.ver.NewEventBuilderFromProtoEvent(&proto).Build(d.ts, "test", "ed25519:t", d.key)
	if err != nil {
		d.t.Fatalf("building %s: %v", name, err)
	}
	if typ == spec.MRoomCreate {
		d.roomID = "!" + e.EventID()[1:]
	}
	d.last = e.EventID()
	d.events[e.EventID()] = e
	d.names[e.EventID()] = name
	return e
}

func (d *dag) name(e gomatrixserverlib.PDU) string {
	if e == nil {
		return "<none>"
	}
	return d.names[e.EventID()]
}

func stateOf(evs ...gomatrixserverlib.PDU) StateMap {
	st := StateMap{}
	for _, e := range evs {
		st[StateKey{e.Type(), *e.StateKey()}] = e
	}
	return st
}

func (d *dag) resolve(sets ...StateMap) StateMap {
	events := map[string]gomatrixserverlib.PDU{}
	var create gomatrixserverlib.PDU
	for id, e := range d.events {
		events[id] = e
		if e.Type() == spec.MRoomCreate {
			create = e
		}
	}
	return resolveV2(sets, events, create, func(string) bool { return false }, true)
}

func member(m string) map[string]any { return map[string]any{"membership": m} }

// TestStateResV21StartsFromEmptySet is MSC4297's problem A (Complement's
// TestMSC4297StateResolutionV2_1_starts_from_empty_set): alice, the
// creator, makes the room invite-only and leaves. One state set (from a
// partial /state answer) still holds the older public join rules, so both
// join rules are conflicted while alice's leave is unconflicted. v2 would
// replay the join rules on top of "alice has left" and drop both, leaving
// the room with no join rules; v2.1 replays them on their own auth events
// (alice joined) and keeps the newer, invite-only one.
func TestStateResV21StartsFromEmptySet(t *testing.T) {
	alice, bob, charlie := "@alice:a.test", "@bob:a.test", "@charlie:c.test"
	d, create := newDAG(t, alice)
	aj := d.ev("alice join", alice, spec.MRoomMember, alice, member("join"), nil)
	pl := d.ev("power levels", alice, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]any{}}, []gomatrixserverlib.PDU{aj})
	jrPublic := d.ev("join rules public", alice, spec.MRoomJoinRules, "", map[string]any{"join_rule": "public"}, []gomatrixserverlib.PDU{pl, aj})
	bj := d.ev("bob join", bob, spec.MRoomMember, bob, member("join"), []gomatrixserverlib.PDU{pl, jrPublic})
	cj := d.ev("charlie join", charlie, spec.MRoomMember, charlie, member("join"), []gomatrixserverlib.PDU{pl, jrPublic})
	jrInvite := d.ev("join rules invite", alice, spec.MRoomJoinRules, "", map[string]any{"join_rule": "invite"}, []gomatrixserverlib.PDU{pl, aj})
	al := d.ev("alice leave", alice, spec.MRoomMember, alice, member("leave"), []gomatrixserverlib.PDU{pl, aj})
	c1 := d.ev("charlie rename", charlie, spec.MRoomMember, charlie, map[string]any{"membership": "join", "displayname": "Charlie 1"}, []gomatrixserverlib.PDU{pl, jrInvite, cj})

	correct := stateOf(create, pl, jrInvite, al, bj, c1)
	stale := stateOf(create, pl, jrPublic, al, bj, cj) // the partial /state answer
	for _, order := range [][]StateMap{{correct, stale}, {stale, correct}} {
		got := d.resolve(order...)
		if jr := got.Get(spec.MRoomJoinRules, ""); jr == nil || jr.EventID() != jrInvite.EventID() {
			t.Fatalf("join rules resolved to %s, want %s", d.name(jr), d.name(jrInvite))
		}
		if m := got.Get(spec.MRoomMember, alice); m.EventID() != al.EventID() {
			t.Fatalf("alice's membership resolved to %s, want her unconflicted leave", d.name(m))
		}
		if m := got.Get(spec.MRoomMember, charlie); m.EventID() != c1.EventID() {
			t.Fatalf("charlie's membership resolved to %s, want %s", d.name(m), d.name(c1))
		}
		if len(got) != len(correct) {
			t.Fatalf("resolved %d slots, want %d", len(got), len(correct))
		}
	}

	// The same sets under v2 (ours and the library's, both starting from
	// the unconflicted state) lose the join rules: the test tells them apart.
	events := map[string]gomatrixserverlib.PDU{}
	for id, e := range d.events {
		events[id] = e
	}
	if jr := resolveV2([]StateMap{correct, stale}, events, create, func(string) bool { return false }, false).Get(spec.MRoomJoinRules, ""); jr != nil {
		t.Fatalf("v2 kept join rules %s; the scenario no longer shows problem A", d.name(jr))
	}
	conflicted, unconflicted := splitConflicted([]StateMap{correct, stale})
	var chain []gomatrixserverlib.PDU
	for _, e := range d.events {
		chain = append(chain, e)
	}
	v2 := gomatrixserverlib.ResolveStateConflictsV2(conflicted, unconflicted, chain, UserIDForSender, func(string) bool { return false })
	for _, e := range v2 {
		if e.Type() == spec.MRoomJoinRules {
			t.Fatalf("v2 kept join rules %s; the scenario no longer shows problem A", d.name(e))
		}
	}
}

// TestStateResV21IncludesConflictedSubgraph is MSC4297's problem B
// (Complement's TestMSC4297StateResolutionV2_1_includes_conflicted_subgraph):
// the creator gives alice 100; alice gives bob 50 (PL2); bob gives charlie
// 50 (PL3); eve joins and renames herself. A stale state set names PL1 as
// the power levels. PL2 is in both sets' auth chains, so not in the auth
// difference; without it bob's PL3 is replayed against PL1 (bob at 0) and
// rejected. v2.1's conflicted subgraph (PL3 → PL2 → PL1) replays PL2 first
// and PL3 stands.
func TestStateResV21IncludesConflictedSubgraph(t *testing.T) {
	creator, alice, bob, charlie, eve := "@creator:a.test", "@alice:a.test", "@bob:a.test", "@charlie:c.test", "@eve:c.test"
	d, create := newDAG(t, creator)
	crj := d.ev("creator join", creator, spec.MRoomMember, creator, member("join"), nil)
	pl0 := d.ev("initial power levels", creator, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]any{}}, []gomatrixserverlib.PDU{crj})
	jr := d.ev("join rules public", creator, spec.MRoomJoinRules, "", map[string]any{"join_rule": "public"}, []gomatrixserverlib.PDU{pl0, crj})
	pl1 := d.ev("PL1", creator, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]any{alice: 100}}, []gomatrixserverlib.PDU{pl0, crj})
	aj := d.ev("alice join", alice, spec.MRoomMember, alice, member("join"), []gomatrixserverlib.PDU{pl1, jr})
	bj := d.ev("bob join", bob, spec.MRoomMember, bob, member("join"), []gomatrixserverlib.PDU{pl1, jr})
	cj := d.ev("charlie join", charlie, spec.MRoomMember, charlie, member("join"), []gomatrixserverlib.PDU{pl1, jr})
	pl2 := d.ev("PL2", alice, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]any{alice: 100, bob: 50}}, []gomatrixserverlib.PDU{pl1, aj})
	pl3 := d.ev("PL3", bob, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]any{alice: 100, bob: 50, charlie: 50}}, []gomatrixserverlib.PDU{pl2, bj})
	ej := d.ev("eve join", eve, spec.MRoomMember, eve, member("join"), []gomatrixserverlib.PDU{pl3, jr})
	e1 := d.ev("eve rename", eve, spec.MRoomMember, eve, map[string]any{"membership": "join", "displayname": "Eve 1"}, []gomatrixserverlib.PDU{pl3, jr, ej})

	correct := stateOf(create, crj, pl3, jr, aj, bj, cj, e1)
	stale := stateOf(create, crj, pl1, jr, aj, bj, cj, ej) // PL1 is wrong: PL3 is current
	g := &authGraph{events: d.events}
	diff := g.authDifference([]StateMap{correct, stale})
	if diff[pl2.EventID()] {
		t.Fatal("PL2 is in the auth difference; the scenario no longer shows problem B")
	}
	sub := g.conflictedSubgraph(map[string]bool{pl1.EventID(): true, pl3.EventID(): true, ej.EventID(): true, e1.EventID(): true})
	for _, want := range []gomatrixserverlib.PDU{pl1, pl2, pl3, ej, e1} {
		if !sub[want.EventID()] {
			t.Fatalf("conflicted subgraph lacks %s", d.name(want))
		}
	}
	if sub[pl0.EventID()] || sub[crj.EventID()] {
		t.Fatal("conflicted subgraph holds events that lead to no conflicted event")
	}
	for _, order := range [][]StateMap{{correct, stale}, {stale, correct}} {
		got := d.resolve(order...)
		if p := got.Get(spec.MRoomPowerLevels, ""); p.EventID() != pl3.EventID() {
			t.Fatalf("power levels resolved to %s, want PL3", d.name(p))
		}
		if m := got.Get(spec.MRoomMember, eve); m.EventID() != e1.EventID() {
			t.Fatalf("eve's membership resolved to %s, want %s", d.name(m), d.name(e1))
		}
		if lvl := PowerLevel(got, charlie); lvl != 50 {
			t.Fatalf("charlie at %d after resolution, want 50", lvl)
		}
	}
}

// TestStateResV21Orders covers the orderings on a partition: alice (100)
// demotes bob while bob (50) bans carol and changes the topic. The
// demotion sorts first (higher sender power), so bob's ban and topic fail
// the iterative auth checks; a creator's concurrent change beats an admin's.
func TestStateResV21Orders(t *testing.T) {
	creator, alice, bob, carol := "@creator:a.test", "@alice:a.test", "@bob:b.test", "@carol:a.test"
	d, create := newDAG(t, creator)
	crj := d.ev("creator join", creator, spec.MRoomMember, creator, member("join"), nil)
	pl := d.ev("PL", creator, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]any{alice: 100, bob: 50}, "ban": 50, "state_default": 50}, []gomatrixserverlib.PDU{crj})
	jr := d.ev("join rules", creator, spec.MRoomJoinRules, "", map[string]any{"join_rule": "public"}, []gomatrixserverlib.PDU{pl, crj})
	aj := d.ev("alice join", alice, spec.MRoomMember, alice, member("join"), []gomatrixserverlib.PDU{pl, jr})
	bj := d.ev("bob join", bob, spec.MRoomMember, bob, member("join"), []gomatrixserverlib.PDU{pl, jr})
	cj := d.ev("carol join", carol, spec.MRoomMember, carol, member("join"), []gomatrixserverlib.PDU{pl, jr})
	base := []gomatrixserverlib.PDU{create, crj, pl, jr, aj, bj, cj}
	// Branch A.
	demote := d.ev("alice demotes bob", alice, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]any{alice: 100, bob: 0}, "ban": 50, "state_default": 50}, []gomatrixserverlib.PDU{pl, aj})
	// Branch B (bob's events are later by origin_server_ts).
	ban := d.ev("bob bans carol", bob, spec.MRoomMember, carol, member("ban"), []gomatrixserverlib.PDU{pl, bj, cj})
	topic := d.ev("bob's topic", bob, "m.room.topic", "", map[string]any{"topic": "bob's"}, []gomatrixserverlib.PDU{pl, bj})
	a := stateOf(append(base, demote)...)
	b := stateOf(append(base, ban, topic)...)
	got := d.resolve(a, b)
	if p := got.Get(spec.MRoomPowerLevels, ""); p.EventID() != demote.EventID() {
		t.Fatalf("power levels %s, want alice's demotion", d.name(p))
	}
	if m := got.Get(spec.MRoomMember, carol); m.EventID() != cj.EventID() {
		t.Fatalf("carol's membership %s, want her join (the demoted bob's ban fails)", d.name(m))
	}
	if tp := got.Get("m.room.topic", ""); tp != nil {
		t.Fatalf("topic %s stands although bob was demoted", d.name(tp))
	}

	// The creator and alice change the power levels concurrently; alice's
	// is older, but the creator's infinite power sorts it first, so alice's
	// comes last and wins only if still allowed: the creator removed her.
	byCreator := d.ev("creator removes alice", creator, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]any{bob: 50}}, []gomatrixserverlib.PDU{pl, crj})
	byAlice := d.ev("alice promotes bob", alice, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]any{alice: 100, bob: 100}}, []gomatrixserverlib.PDU{pl, aj})
	got = d.resolve(stateOf(append(base, byCreator)...), stateOf(append(base, byAlice)...))
	if p := got.Get(spec.MRoomPowerLevels, ""); p.EventID() != byCreator.EventID() {
		t.Fatalf("power levels %s, want the creator's", d.name(p))
	}
}
