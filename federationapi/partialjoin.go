package federationapi

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/internal/httpapi"
	"enclave/roomserver"
)

// Faster room joins (MSC3706, MSC3902), the resident side: a send_join v2
// with omit_members=true is answered with the state before the join less
// its m.room.member events, and the auth chain of what is left. A room of
// thousands of members is then a few dozen events to send, verify and
// store; the joining server fetches the members afterwards (/state_ids,
// /state) while its user already takes part.

// heroCount is how many members a nameless room's summary names (the
// client-server m.heroes): their memberships stay in a partial answer so
// the joining server's clients can name the room (MSC3943).
const heroCount = 5

// partialState is the state a partial send_join answer carries: every
// non-member event, the joiner's own earlier membership, and for a room with neither a name nor a canonical
// alias the heroes' member events.
func partialState(before roomserver.StateMap, joiner string) []gomatrixserverlib.PDU {
	var out []gomatrixserverlib.PDU
	var members []roomserver.StateKey
	for k, e := range before {
		if k.Type != spec.MRoomMember {
			out = append(out, e)
			continue
		}
		if k.StateKey == joiner {
			// The joiner's own earlier membership (an invite it
			// answers) is what its server checks the join against.
			out = append(out, e)
			continue
		}
		if m, _ := e.Membership(); m == spec.Join || m == spec.Invite {
			members = append(members, k)
		}
	}
	if before.Get("m.room.name", "") == nil && before.Get("m.room.canonical_alias", "") == nil {
		sort.Slice(members, func(i, j int) bool { return members[i].StateKey < members[j].StateKey })
		for _, k := range members[:min(heroCount, len(members))] {
			out = append(out, before[k])
		}
	}
	return out
}

// partialJoinAnswer is the omit_members=true answer to a send_join of ev
// (before is the state before it). The auth chain covers the state sent
// and the join's own auth events (the joiner's earlier membership, an
// authorising user's join), less the events already in state, as MSC3706
// allows, but for the create event.
func (f *joins) partialJoinAnswer(ctx context.Context, ev gomatrixserverlib.PDU, before roomserver.StateMap) httpapi.Response {
	state := partialState(before, string(ev.SenderID()))
	roots := append([]gomatrixserverlib.PDU(nil), state...)
	if auth, err := f.rs.Events(ctx, ev.AuthEventIDs()); err == nil {
		roots = append(roots, auth...)
	} else {
		return httpapi.Errf(500, "M_UNKNOWN", "internal error")
	}
	chain, err := f.rs.AuthChainOf(ctx, roots)
	if err != nil {
		return httpapi.Errf(500, "M_UNKNOWN", "internal error")
	}
	inState := make(map[string]bool, len(state))
	for _, e := range state {
		inState[e.EventID()] = true
	}
	trimmed := chain[:0:0]
	for _, e := range chain {
		// The create event stays: gomatrixserverlib-based joiners
		// (Dendrite, Enclave) look for it in the auth chain.
		if !inState[e.EventID()] || e.Type() == spec.MRoomCreate {
			trimmed = append(trimmed, e)
		}
	}
	return httpapi.JSON(200, map[string]any{
		"origin":          f.serverName,
		"state":           pduJSONs(state),
		"auth_chain":      pduJSONs(trimmed),
		"event":           json.RawMessage(ev.JSON()),
		"members_omitted": true,
		"servers_in_room": ServersInRoom(before),
	})
}
