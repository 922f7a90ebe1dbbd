package federationapi

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/internal/httpapi"
	"enclave/roomserver"
)

// Restricted joins through this server (make_join / send_join for a room
// whose join rule is restricted or knock_restricted). A joining user who
// is neither invited nor joined needs a resident user with the power to
// invite named in join_authorised_via_users_server, and that user's
// server's signature on the join. This server vouches only for what it
// can see: the user's membership of an allowed room it is in.

// joinAuthoriser picks the local user to authorise userID's join, or the
// error make_join answers: 400 M_UNABLE_TO_AUTHORISE_JOIN when this server
// is in none of the allowed rooms (another resident server may be, so the
// joining server tries it), 403 when it is and the user is in none of
// them, 400 M_UNABLE_TO_GRANT_JOIN when no local member may invite. via
// is "" (and resp nil) when the join needs no authoriser.
func (f *joins) joinAuthoriser(ctx context.Context, st roomserver.StateMap, userID string) (via string, resp *httpapi.Response) {
	rule, allow := roomserver.JoinRule(st)
	if rule != "restricted" && rule != "knock_restricted" {
		return "", nil
	}
	if m := st.Membership(userID); m == spec.Join || m == spec.Invite {
		return "", nil
	}
	fail := func(code int, errcode, msg string) (string, *httpapi.Response) {
		r := httpapi.Errf(code, errcode, "%s", msg)
		return "", &r
	}
	if len(allow) == 0 {
		return fail(403, "M_FORBIDDEN", "the room's join rule allows no one without an invite")
	}
	known, member := false, false
	for _, room := range allow {
		ast, err := f.rs.CurrentState(ctx, room)
		if err != nil || !serverInRoom(ast, f.serverName) {
			continue
		}
		known = true
		if ast.Membership(userID) == spec.Join {
			member = true
			break
		}
	}
	switch {
	case !known:
		return fail(400, "M_UNABLE_TO_AUTHORISE_JOIN", "this server is in none of the rooms the join rule allows and cannot check the user's membership")
	case !member:
		return fail(403, "M_FORBIDDEN", "the user is not a member of any room the join rule allows")
	}
	auths := roomserver.JoinAuthorisers(st, string(f.serverName))
	if len(auths) == 0 {
		return fail(400, "M_UNABLE_TO_GRANT_JOIN", "no user on this server may invite to the room")
	}
	return auths[0], nil
}

// countersignJoin signs a send_join's restricted join when it names a
// local authoriser, after checking again what make_join checked (the
// state may have moved, and the joining server chose the content). Joins
// that name no local user are returned as they are.
func (f *joins) countersignJoin(ctx context.Context, st roomserver.StateMap, ev gomatrixserverlib.PDU) (gomatrixserverlib.PDU, *httpapi.Response) {
	var c struct {
		Via string `json:"join_authorised_via_users_server"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.Via == "" {
		return ev, nil
	}
	if _, d, err := gomatrixserverlib.SplitID('@', c.Via); err != nil || d != f.serverName {
		return ev, nil
	}
	want, resp := f.joinAuthoriser(ctx, st, string(ev.SenderID()))
	if resp != nil {
		return nil, resp
	}
	if want == "" {
		return ev, nil // already invited or joined: the key is not used
	}
	ok := false
	for _, a := range roomserver.JoinAuthorisers(st, string(f.serverName)) {
		ok = ok || a == c.Via
	}
	if !ok {
		r := httpapi.Errf(403, "M_FORBIDDEN", "%s may not authorise joins to this room", c.Via)
		return nil, &r
	}
	return ev.Sign(string(f.serverName), f.keyID, f.key), nil
}
