package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/internal/glob"
	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// serverInRoom reports whether server has a joined member in the state.
func serverInRoom(st roomserver.StateMap, server spec.ServerName) bool {
	for k, e := range st {
		if k.Type != spec.MRoomMember {
			continue
		}
		if m, _ := e.Membership(); m != spec.Join {
			continue
		}
		if _, d, err := gomatrixserverlib.SplitID('@', k.StateKey); err == nil && d == server {
			return true
		}
	}
	return false
}

// ServersInRoom lists the servers with joined members in the state.
func ServersInRoom(st roomserver.StateMap) []spec.ServerName {
	seen := map[spec.ServerName]bool{}
	var out []spec.ServerName
	for k, e := range st {
		if k.Type != spec.MRoomMember {
			continue
		}
		// The domain first: membership is parsed from the event's
		// content, and this runs inside every local event's transaction
		// (QueueRoomEvent), so a known server's other members are skipped.
		_, d, err := gomatrixserverlib.SplitID('@', k.StateKey)
		if err != nil || seen[d] {
			continue
		}
		if m, _ := e.Membership(); m == spec.Join {
			seen[d] = true
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// aclAllows applies the room's m.room.server_acl to a server.
func aclAllows(st roomserver.StateMap, server spec.ServerName) bool {
	ev := st.Get("m.room.server_acl", "")
	if ev == nil {
		return true
	}
	var acl struct {
		Allow           []string `json:"allow"`
		Deny            []string `json:"deny"`
		AllowIPLiterals *bool    `json:"allow_ip_literals"`
	}
	if json.Unmarshal(ev.Content(), &acl) != nil {
		return true
	}
	host := string(server)
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	host = strings.Trim(host, "[]")
	if acl.AllowIPLiterals != nil && !*acl.AllowIPLiterals && isIPLiteral(host) {
		return false
	}
	for _, d := range acl.Deny {
		if glob.Match(d, host) {
			return false
		}
	}
	for _, a := range acl.Allow {
		if glob.Match(a, host) {
			return true
		}
	}
	return false
}

func isIPLiteral(h string) bool {
	return strings.Contains(h, ":") || strings.Trim(h, "0123456789.") == ""
}

// makeMembership answers make_join / make_leave / make_knock with an event
// template for the remote user, if the current state would allow it.
func (f *joins) makeMembership(membership string) roomHandler {
	return func(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
		v := mux.Vars(r)
		roomID, userID := v["roomId"], v["userId"]
		_, domain, err := gomatrixserverlib.SplitID('@', userID)
		if err != nil || domain != origin {
			return httpapi.Errf(403, "M_FORBIDDEN", "the user must belong to the requesting server")
		}
		ver, prev, depth, st, err := f.rs.LatestForRemote(r.Context(), roomID)
		if errors.Is(err, roomserver.ErrRoomNotFound) || (err == nil && st.Get(spec.MRoomCreate, "") == nil) {
			return httpapi.Errf(404, "M_NOT_FOUND", "unknown room")
		} else if err != nil {
			return httpapi.Errf(500, "M_UNKNOWN", "internal error")
		}
		if !aclAllows(st, origin) {
			return httpapi.Errf(403, "M_FORBIDDEN", "server is denied by the room's ACL")
		}
		if membership == spec.Join || membership == "knock" {
			if vers := r.URL.Query()["ver"]; !containsVersion(vers, ver.Version()) {
				return httpapi.JSON(400, map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "room version not supported by your server", "room_version": string(ver.Version())})
			}
		}
		cm := map[string]string{"membership": membership}
		if membership == spec.Join {
			via, resp := f.joinAuthoriser(r.Context(), st, userID)
			if resp != nil {
				return *resp
			}
			if via != "" {
				cm["join_authorised_via_users_server"] = via
			}
		}
		content, _ := json.Marshal(cm)
		proto := gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID, PrevEvents: prev, Depth: depth, Content: content, Version: ver}
		provider, _ := gomatrixserverlib.NewAuthEvents(st.Events())
		b := ver.NewEventBuilderFromProtoEvent(&proto)
		if err := b.AddAuthEvents(provider); err != nil {
			return httpapi.JSON(403, &httpapi.MatrixError{ErrCode: "M_FORBIDDEN", Err: err.Error()})
		}
		// Check the template against the current state by building it with
		// our own key: the real one is signed by the requesting server.
		trial, err := b.Build(timeNow(), origin, f.keyID, f.key)
		if err != nil {
			return httpapi.JSON(400, &httpapi.MatrixError{ErrCode: "M_BAD_JSON", Err: err.Error()})
		}
		provider2, _ := gomatrixserverlib.NewAuthEvents(st.Events())
		if err := gomatrixserverlib.Allowed(trial, provider2, roomserver.UserIDForSender); err != nil {
			return httpapi.JSON(403, &httpapi.MatrixError{ErrCode: "M_FORBIDDEN", Err: err.Error()})
		}
		proto.AuthEvents = b.AuthEvents
		return httpapi.JSON(200, map[string]any{"room_version": ver.Version(), "event": proto})
	}
}

func containsVersion(vers []string, v gomatrixserverlib.RoomVersion) bool {
	if len(vers) == 0 {
		return v == gomatrixserverlib.RoomVersionV1
	}
	for _, x := range vers {
		if x == string(v) {
			return true
		}
	}
	return false
}

// sendMembership accepts a signed join/leave/knock from the remote server,
// stores it, and (for joins) answers with the state and auth chain.
func (f *joins) sendMembership(membership string) roomHandler {
	return func(r *http.Request, origin spec.ServerName, body []byte) httpapi.Response {
		v := mux.Vars(r)
		roomID := v["roomId"]
		ver, _, _, st, err := f.rs.LatestForRemote(r.Context(), roomID)
		if errors.Is(err, roomserver.ErrRoomNotFound) || (err == nil && st.Get(spec.MRoomCreate, "") == nil) {
			return httpapi.Errf(404, "M_NOT_FOUND", "unknown room")
		} else if err != nil {
			return httpapi.Errf(500, "M_UNKNOWN", "internal error")
		}
		ev, err := ver.NewEventFromUntrustedJSON(body)
		if err != nil {
			return httpapi.JSON(400, &httpapi.MatrixError{ErrCode: "M_BAD_JSON", Err: err.Error()})
		}
		if ev.EventID() != v["eventId"] || ev.RoomID().String() != roomID || ev.Type() != spec.MRoomMember || ev.StateKey() == nil || *ev.StateKey() != string(ev.SenderID()) {
			return httpapi.Errf(400, "M_BAD_JSON", "event does not match the request")
		}
		if m, _ := ev.Membership(); m != membership {
			return httpapi.Errf(400, "M_BAD_JSON", "wrong membership")
		}
		if _, d, err := gomatrixserverlib.SplitID('@', string(ev.SenderID())); err != nil || d != origin {
			return httpapi.Errf(403, "M_FORBIDDEN", "the sender must belong to the requesting server")
		}
		if !aclAllows(st, origin) {
			return httpapi.Errf(403, "M_FORBIDDEN", "server is denied by the room's ACL")
		}
		if membership == spec.Join {
			var resp *httpapi.Response
			if ev, resp = f.countersignJoin(r.Context(), st, ev); resp != nil {
				return *resp
			}
		}
		if err := gomatrixserverlib.VerifyEventSignatures(r.Context(), ev, f.keys, roomserver.UserIDForSender); err != nil {
			return httpapi.JSON(403, &httpapi.MatrixError{ErrCode: "M_FORBIDDEN", Err: "bad signature: " + err.Error()})
		}
		// Stored with its relay to the room's other servers queued in the
		// same transaction (QueueRoomEvent).
		rctx := context.WithValue(r.Context(), relayKey{}, delivered{eventID: ev.EventID(), server: origin})
		res := f.rs.InputRemoteEvents(rctx, origin, []gomatrixserverlib.PDU{ev})
		if err := res[ev.EventID()]; err != nil {
			return httpapi.JSON(403, &httpapi.MatrixError{ErrCode: "M_FORBIDDEN", Err: err.Error()})
		}
		if membership == spec.Knock {
			// The knocker's server shows the room with this stripped state.
			st, _ := f.rs.CurrentState(r.Context(), roomID)
			return httpapi.JSON(200, map[string]any{"knock_room_state": strippedState(st, "")})
		}
		if membership != spec.Join {
			return httpapi.JSON(200, struct{}{})
		}
		before, err := f.rs.StateAt(r.Context(), ev.EventID(), false)
		if err != nil {
			return httpapi.Errf(500, "M_UNKNOWN", "internal error")
		}
		if r.URL.Query().Get("omit_members") == "true" {
			return f.partialJoinAnswer(r.Context(), ev, before)
		}
		chain, err := f.rs.AuthChainOf(r.Context(), before.Events())
		if err != nil {
			return httpapi.Errf(500, "M_UNKNOWN", "internal error")
		}
		return httpapi.JSON(200, map[string]any{
			"origin":          f.serverName,
			"state":           pduJSONs(before.Events()),
			"auth_chain":      pduJSONs(chain),
			"event":           json.RawMessage(ev.JSON()),
			"members_omitted": false,
			"servers_in_room": ServersInRoom(before),
		})
	}
}

// v1Membership serves the deprecated v1 send_join and send_leave, which
// servers that predate v2 still call: the same checks and effect, the
// answer wrapped as [200, body] as v1 specifies (errors are unchanged).
func v1Membership(h roomHandler) roomHandler {
	return func(r *http.Request, origin spec.ServerName, body []byte) httpapi.Response {
		// v1 has no omit_members: its answer is always the full state.
		if r.URL.RawQuery != "" {
			r = r.Clone(r.Context())
			r.URL.RawQuery = ""
		}
		resp := h(r, origin, body)
		if resp.Code != http.StatusOK {
			return resp
		}
		return httpapi.JSON(http.StatusOK, []any{http.StatusOK, resp.Body})
	}
}

func pduJSONs(evs []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.JSON())
	}
	return out
}

// inviteV2 receives an invite for one of our users into a remote room: we
// countersign it and show it to the user.
func (f *joins) inviteV2(r *http.Request, origin spec.ServerName, body []byte) httpapi.Response {
	var req struct {
		RoomVersion     gomatrixserverlib.RoomVersion `json:"room_version"`
		Event           json.RawMessage               `json:"event"`
		InviteRoomState []json.RawMessage             `json:"invite_room_state"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.JSON(400, &httpapi.MatrixError{ErrCode: "M_BAD_JSON", Err: err.Error()})
	}
	ver, err := gomatrixserverlib.GetRoomVersion(req.RoomVersion)
	if err != nil {
		return httpapi.JSON(400, map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "unsupported room version", "room_version": string(req.RoomVersion)})
	}
	ev, err := ver.NewEventFromUntrustedJSON(req.Event)
	if err != nil {
		return httpapi.JSON(400, &httpapi.MatrixError{ErrCode: "M_BAD_JSON", Err: err.Error()})
	}
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return httpapi.Errf(400, "M_BAD_JSON", "not a membership event")
	}
	if m, _ := ev.Membership(); m != spec.Invite {
		return httpapi.Errf(400, "M_BAD_JSON", "not an invite")
	}
	_, targetDomain, err := gomatrixserverlib.SplitID('@', *ev.StateKey())
	if err != nil || targetDomain != f.serverName {
		return httpapi.Errf(400, "M_BAD_JSON", "the invitee is not on this server")
	}
	// The invitee's invite permission config (MSC4155) is ours to apply.
	if roomserver.InviteBlocked(r.Context(), f.db, *ev.StateKey(), string(ev.SenderID())) {
		return httpapi.Errf(403, "M_FORBIDDEN", "the invitee does not accept invites from %s", ev.SenderID())
	}
	// Countersign first: the signature check requires the invited
	// server's signature on an invite, alongside the sender's.
	signed := ev.Sign(string(f.serverName), f.keyID, f.key)
	if err := gomatrixserverlib.VerifyEventSignatures(r.Context(), signed, f.keys, roomserver.UserIDForSender); err != nil {
		return httpapi.JSON(403, &httpapi.MatrixError{ErrCode: "M_FORBIDDEN", Err: "bad signature: " + err.Error()})
	}
	if len(req.InviteRoomState) > 0 {
		if withState, err := signed.SetUnsigned(map[string]any{"invite_room_state": req.InviteRoomState}); err == nil {
			signed = withState
		}
	}
	if err := f.rs.StoreRemoteInvite(r.Context(), signed); err != nil {
		return httpapi.Errf(500, "M_UNKNOWN", "internal error")
	}
	return httpapi.JSON(200, map[string]any{"event": json.RawMessage(signed.JSON())})
}

// visibleToServer decides whether origin may read events of a room: it
// must have had a member in the room (current state check).
func (f *history) visibleToServer(ctx context.Context, roomID string, origin spec.ServerName) (roomserver.StateMap, bool) {
	st, err := f.rs.CurrentState(ctx, roomID)
	if err != nil || st.Get(spec.MRoomCreate, "") == nil {
		return nil, false
	}
	if !aclAllows(st, origin) {
		return nil, false
	}
	if serverInRoom(st, origin) {
		return st, true
	}
	if hv := st.Get("m.room.history_visibility", ""); hv != nil {
		if v, _ := hv.HistoryVisibility(); v == "world_readable" {
			return st, true
		}
	}
	return nil, false
}

func (f *history) state(idsOnly bool) roomHandler {
	return func(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
		roomID := mux.Vars(r)["roomId"]
		if _, ok := f.visibleToServer(r.Context(), roomID, origin); !ok {
			return httpapi.Errf(403, "M_FORBIDDEN", "server not in room")
		}
		eventID := r.URL.Query().Get("event_id")
		ev, err := storage.GetEvent(r.Context(), f.db, eventID)
		if err != nil || ev.RoomID != roomID {
			return httpapi.Errf(404, "M_NOT_FOUND", "event not found")
		}
		st, err := f.rs.StateAt(r.Context(), eventID, false)
		if err != nil {
			return httpapi.Errf(500, "M_UNKNOWN", "internal error")
		}
		chain, err := f.rs.AuthChainOf(r.Context(), st.Events())
		if err != nil {
			return httpapi.Errf(500, "M_UNKNOWN", "internal error")
		}
		if idsOnly {
			return httpapi.JSON(200, map[string]any{"pdu_ids": eventIDs(st.Events()), "auth_chain_ids": eventIDs(chain)})
		}
		return httpapi.JSON(200, map[string]any{"pdus": pduJSONs(st.Events()), "auth_chain": pduJSONs(chain)})
	}
}

func eventIDs(evs []gomatrixserverlib.PDU) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.EventID())
	}
	return out
}

func (f *history) getEvent(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
	se, err := storage.GetEvent(r.Context(), f.db, mux.Vars(r)["eventId"])
	if err != nil {
		return httpapi.Errf(404, "M_NOT_FOUND", "event not found")
	}
	if _, ok := f.visibleToServer(r.Context(), se.RoomID, origin); !ok {
		return httpapi.Errf(403, "M_FORBIDDEN", "server not in room")
	}
	return httpapi.JSON(200, map[string]any{"origin": f.serverName, "origin_server_ts": spec.AsTimestamp(timeNow()), "pdus": []json.RawMessage{se.JSON}})
}

func (f *history) eventAuth(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
	v := mux.Vars(r)
	if _, ok := f.visibleToServer(r.Context(), v["roomId"], origin); !ok {
		return httpapi.Errf(403, "M_FORBIDDEN", "server not in room")
	}
	evs, err := f.rs.Events(r.Context(), []string{v["eventId"]})
	if err != nil || len(evs) == 0 || evs[0].RoomID().String() != v["roomId"] {
		return httpapi.Errf(404, "M_NOT_FOUND", "event not found")
	}
	chain, err := f.rs.AuthChainOf(r.Context(), evs)
	if err != nil {
		return httpapi.Errf(500, "M_UNKNOWN", "internal error")
	}
	return httpapi.JSON(200, map[string]any{"auth_chain": pduJSONs(chain)})
}

// walkBack follows prev_events from the given events, newest first by
// depth, returning at most limit events and never passing `stop`.
func (f *history) walkBack(ctx context.Context, roomID string, from []string, stop map[string]bool, limit int, includeFrom bool) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	var out []gomatrixserverlib.PDU
	frontier := from
	first := true
	for len(frontier) > 0 && len(out) < limit {
		var ids []string
		for _, id := range frontier {
			if !seen[id] && !stop[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		frontier = nil
		evs, err := f.rs.Events(ctx, ids)
		if err != nil {
			return nil, err
		}
		sort.Slice(evs, func(i, j int) bool { return evs[i].Depth() > evs[j].Depth() })
		for _, e := range evs {
			if e.RoomID().String() != roomID {
				continue
			}
			if !first || includeFrom {
				if len(out) >= limit {
					break
				}
				out = append(out, e)
			}
			frontier = append(frontier, e.PrevEventIDs()...)
		}
		first = false
	}
	return out, nil
}

func (f *history) backfill(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
	roomID := mux.Vars(r)["roomId"]
	if _, ok := f.visibleToServer(r.Context(), roomID, origin); !ok {
		return httpapi.Errf(403, "M_FORBIDDEN", "server not in room")
	}
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	evs, err := f.walkBack(r.Context(), roomID, q["v"], nil, limit, true)
	if err != nil {
		return httpapi.Errf(500, "M_UNKNOWN", "internal error")
	}
	if evs, err = f.asSeenBy(r.Context(), origin, evs); err != nil {
		return httpapi.Errf(500, "M_UNKNOWN", "internal error")
	}
	return httpapi.JSON(200, map[string]any{"origin": f.serverName, "origin_server_ts": spec.AsTimestamp(timeNow()), "pdus": pduJSONs(evs)})
}

// asSeenBy applies the room's history visibility to events served to
// origin, as the spec asks of /backfill and /get_missing_events: an event
// the server could not see (history "joined" and none of its users joined
// at that event, or "invited" and none joined or invited) is returned
// redacted, so the DAG stays whole while its content stays private.
func (f *history) asSeenBy(ctx context.Context, origin spec.ServerName, evs []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	out := make([]gomatrixserverlib.PDU, 0, len(evs))
	for _, e := range evs {
		se, err := storage.GetEvent(ctx, f.db, e.EventID())
		if err != nil {
			return nil, err
		}
		hv, err := f.rs.StateEventAt(ctx, se.SnapshotAfter, spec.MRoomHistoryVisibility, "")
		if err != nil {
			return nil, err
		}
		vis := gomatrixserverlib.HistoryVisibilityShared
		if hv != nil {
			if v, err := hv.HistoryVisibility(); err == nil {
				vis = v
			}
		}
		if vis != gomatrixserverlib.HistoryVisibilityJoined && vis != gomatrixserverlib.HistoryVisibilityInvited {
			out = append(out, e)
			continue
		}
		st, err := f.rs.StateAtSnapshot(ctx, se.SnapshotAfter)
		if err != nil {
			return nil, err
		}
		if serverCanSee(st, origin, vis) {
			out = append(out, e)
			continue
		}
		ver, err := gomatrixserverlib.GetRoomVersion(e.Version())
		if err != nil {
			return nil, err
		}
		redacted, err := ver.RedactEventJSON(e.JSON())
		if err != nil {
			return nil, err
		}
		re, err := ver.NewEventFromTrustedJSONWithEventID(e.EventID(), redacted, true)
		if err != nil {
			return nil, err
		}
		out = append(out, re)
	}
	return out, nil
}

// serverCanSee reports whether a user of server is joined in st (or, with
// "invited" visibility, invited).
func serverCanSee(st roomserver.StateMap, server spec.ServerName, vis gomatrixserverlib.HistoryVisibility) bool {
	for k, e := range st {
		if k.Type != spec.MRoomMember || userServer(k.StateKey) != server {
			continue
		}
		m, _ := e.Membership()
		if m == spec.Join || (m == spec.Invite && vis == gomatrixserverlib.HistoryVisibilityInvited) {
			return true
		}
	}
	return false
}

func (f *history) getMissingEvents(r *http.Request, origin spec.ServerName, body []byte) httpapi.Response {
	roomID := mux.Vars(r)["roomId"]
	if _, ok := f.visibleToServer(r.Context(), roomID, origin); !ok {
		return httpapi.Errf(403, "M_FORBIDDEN", "server not in room")
	}
	var req fclient.MissingEvents
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.JSON(400, &httpapi.MatrixError{ErrCode: "M_BAD_JSON", Err: err.Error()})
	}
	if req.Limit <= 0 || req.Limit > 100 {
		req.Limit = 10
	}
	stop := map[string]bool{}
	for _, e := range req.EarliestEvents {
		stop[e] = true
	}
	evs, err := f.walkBack(r.Context(), roomID, req.LatestEvents, stop, req.Limit, false)
	if err != nil {
		return httpapi.Errf(500, "M_UNKNOWN", "internal error")
	}
	kept := evs[:0]
	for _, e := range evs {
		if e.Depth() >= int64(req.MinDepth) {
			kept = append(kept, e)
		}
	}
	if evs, err = f.asSeenBy(r.Context(), origin, kept); err != nil {
		return httpapi.Errf(500, "M_UNKNOWN", "internal error")
	}
	// Oldest first, as the requester applies them in order.
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	return httpapi.JSON(200, map[string]any{"events": pduJSONs(evs)})
}

func (f *queries) queryDirectory(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
	alias := r.URL.Query().Get("room_alias")
	roomID, _, err := storage.GetAlias(r.Context(), f.db, alias)
	if err != nil {
		return httpapi.Errf(404, "M_NOT_FOUND", "room alias not found")
	}
	st, _ := f.rs.CurrentState(r.Context(), roomID)
	servers := ServersInRoom(st)
	if len(servers) == 0 {
		servers = []spec.ServerName{f.serverName}
	}
	return httpapi.JSON(200, map[string]any{"room_id": roomID, "servers": servers})
}

func (f *queries) queryProfile(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
	q := r.URL.Query()
	userID := q.Get("user_id")
	// A user ID whose server name is not one (a non-numeric port, say) is
	// a bad request, not an unknown user.
	localpart, server, err := gomatrixserverlib.SplitID('@', userID)
	if _, _, ok := spec.ParseAndValidateServerName(server); err != nil || !ok || localpart == "" {
		return httpapi.Errf(400, "M_INVALID_PARAM", "user_id is not a valid user ID")
	}
	p, err := storage.GetActiveProfile(r.Context(), f.db, userID)
	if err != nil {
		return httpapi.Errf(404, "M_NOT_FOUND", "profile not found")
	}
	out := map[string]any{}
	if p.DisplayName != nil && (q.Get("field") == "" || q.Get("field") == "displayname") {
		out["displayname"] = *p.DisplayName
	}
	if p.AvatarURL != nil && (q.Get("field") == "" || q.Get("field") == "avatar_url") {
		out["avatar_url"] = *p.AvatarURL
	}
	return httpapi.JSON(200, out)
}

// roomHandler is the shape of a signed federation endpoint.
type roomHandler = func(r *http.Request, origin spec.ServerName, body []byte) httpapi.Response

// timestampToEvent answers a server in the room with our event closest to
// a time (MSC3030, spec v1.6).
func (f *history) timestampToEvent(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
	roomID := mux.Vars(r)["roomId"]
	if _, ok := f.visibleToServer(r.Context(), roomID, origin); !ok {
		return httpapi.Errf(403, "M_FORBIDDEN", "server not in room")
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return httpapi.Errf(400, "M_INVALID_PARAM", "ts must be a timestamp in milliseconds")
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		return httpapi.Errf(400, "M_INVALID_PARAM", "dir must be f or b")
	}
	id, ots, err := storage.EventAtTimestamp(r.Context(), f.db, roomID, ts, dir == "f")
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.Errf(404, "M_NOT_FOUND", "no event found")
	} else if err != nil {
		return httpapi.Errf(500, "M_UNKNOWN", "internal error")
	}
	return httpapi.JSON(200, map[string]any{"event_id": id, "origin_server_ts": ots})
}
