package roomserver

import (
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// State resolution v2.1 (MSC4297, room version 12), written here because
// the pinned gomatrixserverlib's v2.1 entry point panics for v12 rooms
// (it never learns the create event once it stops starting from the
// unconflicted state). The algorithm is the spec's v2 with its two changes:
//
//   - the first iterative auth checks start from an empty state map, so
//     power events are replayed on top of their own auth events rather than
//     on an unconflicted state their history may not agree with;
//   - the full conflicted set also holds the conflicted state subgraph: all
//     events on an auth_events path from one conflicted event to another.
//
// Everything else (the reverse topological power ordering, the mainline
// ordering, the final reapplication of the unconflicted state) is v2.

// resolveV2 resolves sets by state resolution v2, or with v21 by v2.1;
// events must hold every event of the sets' auth chains by ID (missing
// ones are treated as not there). create is the room's create event, which
// v12 events do not list in auth_events.
func resolveV2(sets []StateMap, events map[string]gomatrixserverlib.PDU, create gomatrixserverlib.PDU, isRejected func(string) bool, v21 bool) StateMap {
	for _, st := range sets {
		for _, e := range st {
			events[e.EventID()] = e
		}
	}
	conflicted, unconflicted := splitConflicted(sets)
	unconf := StateMap{}
	for _, e := range unconflicted {
		unconf[StateKey{e.Type(), *e.StateKey()}] = e
	}
	if len(conflicted) == 0 {
		return unconf
	}
	g := &authGraph{events: events}
	conflictedIDs := map[string]bool{}
	for _, e := range conflicted {
		conflictedIDs[e.EventID()] = true
	}

	// Full conflicted set: conflicted ∪ auth difference ∪ conflicted subgraph.
	full := map[string]bool{}
	for id := range conflictedIDs {
		full[id] = true
	}
	for id := range g.authDifference(sets) {
		full[id] = true
	}
	if v21 {
		for id := range g.conflictedSubgraph(conflictedIDs) {
			full[id] = true
		}
	}
	for id := range full {
		if events[id] == nil || isRejected(id) {
			delete(full, id)
		}
	}

	// Power events of the full conflicted set and the parts of their auth
	// chains that are in it too.
	powerSet := map[string]bool{}
	for id := range full {
		if isPowerEvent(events[id]) {
			powerSet[id] = true
			for a := range g.chain(id) {
				if full[a] {
					powerSet[a] = true
				}
			}
		}
	}
	pl := powerLevelOf{g: g, create: create}
	ordered := g.reverseTopologicalPowerOrder(powerSet, pl.senderLevel)
	start := unconf // v2 starts from the unconflicted state, v2.1 from nothing
	if v21 {
		start = StateMap{}
	}
	partial := iterativeAuth(start, ordered, events, create, isRejected)

	// The remaining events in mainline order of the resolved power levels.
	var others []gomatrixserverlib.PDU
	for id := range full {
		if !powerSet[id] {
			others = append(others, events[id])
		}
	}
	others = g.mainlineOrder(others, partial.Get(spec.MRoomPowerLevels, ""))
	partial = iterativeAuth(partial, others, events, create, isRejected)

	for k, e := range unconf {
		partial[k] = e
	}
	return partial
}

// authGraph answers auth-DAG questions over a set of events by ID.
type authGraph struct {
	events map[string]gomatrixserverlib.PDU
	chains map[string]map[string]bool // memoised auth chains
}

// chain is the auth chain of id: every event reachable by auth_events,
// not including id itself.
func (g *authGraph) chain(id string) map[string]bool {
	if g.chains == nil {
		g.chains = map[string]map[string]bool{}
	}
	if c, ok := g.chains[id]; ok {
		return c
	}
	out := map[string]bool{}
	stack := []string{id}
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		e := g.events[cur]
		if e == nil {
			continue
		}
		for _, a := range e.AuthEventIDs() {
			if !out[a] {
				out[a] = true
				stack = append(stack, a)
			}
		}
	}
	g.chains[id] = out
	return out
}

// authDifference is the union of the sets' full auth chains minus their
// intersection.
func (g *authGraph) authDifference(sets []StateMap) map[string]bool {
	count := map[string]int{}
	for _, st := range sets {
		full := map[string]bool{}
		for _, e := range st {
			for a := range g.chain(e.EventID()) {
				full[a] = true
			}
		}
		for a := range full {
			count[a]++
		}
	}
	out := map[string]bool{}
	for a, n := range count {
		if n < len(sets) {
			out[a] = true
		}
	}
	return out
}

// conflictedSubgraph is every event lying on an auth_events path that
// starts and ends at conflicted events (endpoints included): the events
// reachable from a conflicted event from which a conflicted event is
// reachable.
func (g *authGraph) conflictedSubgraph(conflicted map[string]bool) map[string]bool {
	reach := map[string]bool{}
	for id := range conflicted {
		reach[id] = true
		for a := range g.chain(id) {
			reach[a] = true
		}
	}
	// leads[x]: a conflicted event is reachable from x (x included).
	leads := map[string]bool{}
	done := map[string]bool{}
	var visit func(id string) bool
	visit = func(id string) bool {
		if done[id] {
			return leads[id]
		}
		done[id] = true
		l := conflicted[id]
		if e := g.events[id]; e != nil {
			for _, a := range e.AuthEventIDs() {
				if visit(a) {
					l = true
				}
			}
		}
		leads[id] = l
		return l
	}
	out := map[string]bool{}
	for id := range reach {
		if visit(id) {
			out[id] = true
		}
	}
	return out
}

// isPowerEvent: power levels, join rules, and kicks and bans (a leave or
// ban whose sender is not its subject).
func isPowerEvent(e gomatrixserverlib.PDU) bool {
	sk := e.StateKey()
	if sk == nil {
		return false
	}
	switch e.Type() {
	case spec.MRoomPowerLevels, spec.MRoomJoinRules:
		return *sk == ""
	case spec.MRoomMember:
		if *sk == "" || *sk == string(e.SenderID()) {
			return false
		}
		m, err := e.Membership()
		return err == nil && (m == spec.Leave || m == spec.Ban)
	}
	return false
}

// powerLevelOf computes a sender's power level at an event for ordering.
type powerLevelOf struct {
	g      *authGraph
	create gomatrixserverlib.PDU
}

// senderLevel is the sender's level by the event's auth events: infinite
// for creators in rooms with privileged creators (MSC4289), else the power
// levels event among the auth events, else 100 for the creator of an
// older room and 0 for everyone else.
func (p powerLevelOf) senderLevel(e gomatrixserverlib.PDU) int64 {
	sender := string(e.SenderID())
	create := p.create
	var plEv gomatrixserverlib.PDU
	for _, a := range e.AuthEventIDs() {
		ae := p.g.events[a]
		if ae == nil || ae.StateKey() == nil || *ae.StateKey() != "" {
			continue
		}
		switch ae.Type() {
		case spec.MRoomPowerLevels:
			plEv = ae
		case spec.MRoomCreate:
			if create == nil {
				create = ae
			}
		}
	}
	if create != nil {
		if ver, err := gomatrixserverlib.GetRoomVersion(create.Version()); err == nil && ver.PrivilegedCreators() {
			for _, c := range gomatrixserverlib.CreatorsFromCreateEvent(create) {
				if c == sender {
					return gomatrixserverlib.CreatorPowerLevel
				}
			}
		}
	}
	if plEv != nil {
		if c, err := gomatrixserverlib.NewPowerLevelContentFromEvent(plEv); err == nil {
			return c.UserLevel(e.SenderID())
		}
		return 0
	}
	if create != nil && string(create.SenderID()) == sender {
		return 100
	}
	return 0
}

// reverseTopologicalPowerOrder sorts the events of ids so that every event
// comes after the events of ids in its auth chain; among the events free to
// go next, the one whose sender has the highest power level, then the
// lowest origin_server_ts, then the lowest event ID.
func (g *authGraph) reverseTopologicalPowerOrder(ids map[string]bool, level func(gomatrixserverlib.PDU) int64) []gomatrixserverlib.PDU {
	type node struct {
		ev    gomatrixserverlib.PDU
		level int64
		deps  int
	}
	nodes := map[string]*node{}
	for id := range ids {
		nodes[id] = &node{ev: g.events[id], level: level(g.events[id])}
	}
	dependents := map[string][]string{}
	for id, n := range nodes {
		for a := range g.chain(id) {
			if nodes[a] != nil {
				n.deps++
				dependents[a] = append(dependents[a], id)
			}
		}
	}
	less := func(a, b *node) bool {
		if a.level != b.level {
			return a.level > b.level
		}
		if a.ev.OriginServerTS() != b.ev.OriginServerTS() {
			return a.ev.OriginServerTS() < b.ev.OriginServerTS()
		}
		return a.ev.EventID() < b.ev.EventID()
	}
	var ready []*node
	for _, n := range nodes {
		if n.deps == 0 {
			ready = append(ready, n)
		}
	}
	out := make([]gomatrixserverlib.PDU, 0, len(nodes))
	for len(ready) > 0 {
		best := 0
		for i := range ready {
			if less(ready[i], ready[best]) {
				best = i
			}
		}
		n := ready[best]
		ready = append(ready[:best], ready[best+1:]...)
		out = append(out, n.ev)
		for _, d := range dependents[n.ev.EventID()] {
			dn := nodes[d]
			dn.deps--
			if dn.deps == 0 {
				ready = append(ready, dn)
			}
		}
	}
	return out
}

// mainlineOrder sorts evs by the position of their closest power levels
// event on the mainline of pl (older first; none at all sorts first), then
// origin_server_ts, then event ID.
func (g *authGraph) mainlineOrder(evs []gomatrixserverlib.PDU, pl gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	// depth 1 is the oldest mainline event.
	var mainline []string
	for cur := pl; cur != nil; cur = g.authPowerLevels(cur) {
		mainline = append(mainline, cur.EventID())
	}
	depthOf := map[string]int{}
	for i, id := range mainline {
		depthOf[id] = len(mainline) - i
	}
	depth := func(e gomatrixserverlib.PDU) int {
		for cur := g.authPowerLevels(e); cur != nil; cur = g.authPowerLevels(cur) {
			if d, ok := depthOf[cur.EventID()]; ok {
				return d
			}
		}
		return 0
	}
	type item struct {
		ev    gomatrixserverlib.PDU
		depth int
	}
	items := make([]item, len(evs))
	for i, e := range evs {
		items[i] = item{e, depth(e)}
	}
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if a.depth != b.depth {
			return a.depth < b.depth
		}
		if a.ev.OriginServerTS() != b.ev.OriginServerTS() {
			return a.ev.OriginServerTS() < b.ev.OriginServerTS()
		}
		return a.ev.EventID() < b.ev.EventID()
	})
	out := make([]gomatrixserverlib.PDU, len(items))
	for i, it := range items {
		out[i] = it.ev
	}
	return out
}

// authPowerLevels is the power levels event among e's auth events.
func (g *authGraph) authPowerLevels(e gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	for _, a := range e.AuthEventIDs() {
		if ae := g.events[a]; ae != nil && ae.Type() == spec.MRoomPowerLevels && ae.StateKey() != nil && *ae.StateKey() == "" {
			return ae
		}
	}
	return nil
}

// iterativeAuth applies evs in order on top of partial, keeping those the
// auth rules allow. Each is checked against its own (not rejected)
// auth_events, with the slots the rules need taken from the partial state
// where it has them; the create event of a v12 room is implied.
func iterativeAuth(partial StateMap, evs []gomatrixserverlib.PDU, events map[string]gomatrixserverlib.PDU, create gomatrixserverlib.PDU, isRejected func(string) bool) StateMap {
	out := make(StateMap, len(partial)+len(evs))
	for k, v := range partial {
		out[k] = v
	}
	for _, e := range evs {
		if e.StateKey() == nil {
			continue
		}
		auth := StateMap{}
		if create != nil {
			auth[StateKey{spec.MRoomCreate, ""}] = create
		}
		for _, a := range e.AuthEventIDs() {
			if ae := events[a]; ae != nil && ae.StateKey() != nil && !isRejected(a) {
				auth[StateKey{ae.Type(), *ae.StateKey()}] = ae
			}
		}
		for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{e}).Tuples() {
			if pe := out.Get(t.EventType, t.StateKey); pe != nil {
				auth[StateKey{t.EventType, t.StateKey}] = pe
			}
		}
		if err := checkAllowed(e, auth); err != nil {
			continue
		}
		out[StateKey{e.Type(), *e.StateKey()}] = e
	}
	return out
}
