package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/internal/httpapi"
	"enclave/roomserver"
)

// Knocking (POST /knock/{roomIdOrAlias}) and restricted joins. Whether a
// knock or a join is allowed is the room version's auth rules' call
// (gomatrixserverlib); this file only builds the events they judge.

func (rm *rooms) knock(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var body struct {
		Reason string `json:"reason"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	target := httpapi.Vars(r)["roomIdOrAlias"]
	if !strings.HasPrefix(target, "#") && !validRoomID.MatchString(target) {
		return httpapi.InvalidParam("%q is neither a room ID nor an alias", target)
	}
	roomID, err := rm.resolveRoom(r.Context(), target)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	var aliasServers []string
	if roomID == "" && strings.HasPrefix(target, "#") && rm.fed != nil && !strings.HasSuffix(target, ":"+rm.opts.ServerName) {
		if roomID, aliasServers, err = rm.fed.LookupAlias(r.Context(), target); err != nil {
			return httpapi.NotFound("room alias %s not found: %v", target, err)
		}
	}
	if roomID == "" {
		return httpapi.NotFound("room %s not found", target)
	}
	cur, err := rm.rs.Membership(r.Context(), roomID, dev.UserID)
	if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.InternalError(r, err)
	}
	content := map[string]any{"membership": "knock"}
	if p, err := rm.profile(r.Context(), dev.UserID); err == nil {
		for k, v := range p {
			content[k] = v
		}
	}
	if body.Reason != "" {
		content["reason"] = body.Reason
	}
	if rm.needsRemoteJoin(r.Context(), roomID) {
		// A room this server does not hold (or no longer takes part in):
		// the knock goes through one of the room's servers.
		if rm.fed == nil {
			return httpapi.NotFound("room %s not found", target)
		}
		via := append(rm.remoteVia(r, dev.UserID, roomID), aliasServers...)
		if err := rm.fed.KnockRemote(r.Context(), dev.UserID, roomID, via, content); err != nil {
			return remoteMembershipError(target, err)
		}
		_ = rm.db.Stream.Wait(r.Context(), rm.db.Stream.Last())
		return httpapi.JSON(200, map[string]string{"room_id": roomID})
	}
	if cur == "knock" {
		return httpapi.JSON(200, map[string]string{"room_id": roomID})
	}
	cb, _ := json.Marshal(content)
	uid := dev.UserID
	if _, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: uid, Type: "m.room.member", StateKey: &uid, Content: cb}); !ok {
		return resp
	}
	return httpapi.JSON(200, map[string]string{"room_id": roomID})
}

// joinAuthoriser returns the local user to name in a join's
// join_authorised_via_users_server: for a restricted (or knock_restricted)
// room the user is not invited to but is joined to one of the allowed
// rooms of, a joined local member with the power to invite, most powerful
// first. It returns "" when the join needs no authoriser or none can be
// found here; remote is then true when the join is restricted and another
// server in the room may have a member who can authorise it (a remote
// join through that server, which signs the join, is the way in).
func (rm *rooms) joinAuthoriser(ctx context.Context, roomID, userID string) (via string, remote bool) {
	st, err := rm.rs.CurrentState(ctx, roomID)
	if err != nil {
		return "", false
	}
	rule, allow := roomserver.JoinRule(st)
	if rule != "restricted" && rule != "knock_restricted" {
		return "", false
	}
	if m := st.Membership(userID); m == "join" || m == "invite" {
		return "", false
	}
	local := spec.ServerName(rm.opts.ServerName)
	canRemote := len(allow) > 0 && othersJoined(st, local)
	allowed := false
	for _, room := range allow {
		if m, err := rm.rs.Membership(ctx, room, userID); err == nil && m == "join" {
			allowed = true
			break
		}
	}
	if !allowed {
		// Another resident server may know the membership this one does not.
		return "", canRemote
	}
	if c := roomserver.JoinAuthorisers(st, rm.opts.ServerName); len(c) > 0 {
		return c[0], false
	}
	return "", canRemote
}

// remoteMembershipError answers a failed join or knock through another
// server with the Matrix error that server gave (e.g. 403 for a banned
// user), or 404 when no server could be reached.
func remoteMembershipError(target string, err error) httpapi.Response {
	var he gomatrix.HTTPError
	if errors.As(err, &he) && he.Code >= 400 && he.Code < 500 {
		var me struct {
			ErrCode string `json:"errcode"`
			Err     string `json:"error"`
		}
		if json.Unmarshal(he.Contents, &me) == nil && me.ErrCode != "" {
			return httpapi.Errf(he.Code, me.ErrCode, "%s", me.Err)
		}
		return httpapi.Errf(he.Code, "M_FORBIDDEN", "%s refused: %v", target, err)
	}
	return httpapi.NotFound("could not reach a server of %s: %v", target, err)
}
