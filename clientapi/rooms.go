package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// rooms is the handler group for room lifecycle and membership: create,
// join (locally or over federation), invite/kick/ban, leave, forget, knock,
// upgrade, sending events, and the room summary and hierarchy previews.
// Writes go through the room server; fed is nil while federation is off.
type rooms struct {
	opts     Options
	db       *storage.DB
	rs       roomserver.API
	fed      Federation
	accounts *accounts // optional authentication of preview endpoints
	// accountData carries members' room push rules over an upgrade.
	accountData *accountData
	delayed     *delayedEvents // MSC4140 scheduling on /send and /state
	// upgradeLocks serialises upgrades of the same room, so a double click
	// cannot create two replacement rooms.
	upgradeLocks sync.Map // room ID -> *sync.Mutex
}

// roomError maps room server errors to the spec's responses.
func roomError(r *http.Request, err error) httpapi.Response {
	var na *roomserver.NotAllowedError
	var br *roomserver.BadRequestError
	switch {
	case errors.As(err, &na):
		return httpapi.Forbidden("%s", na.Reason)
	case errors.As(err, &br):
		// gomatrixserverlib words its 64 KiB event limit "event is too long".
		if strings.Contains(br.Reason, "too large") || strings.Contains(br.Reason, "exceeds") || strings.Contains(br.Reason, "event is too long") {
			return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "%s", br.Reason)
		}
		return httpapi.BadJSON("%s", br.Reason)
	case errors.Is(err, roomserver.ErrRoomNotFound):
		return httpapi.Forbidden("unknown room or not a member")
	case errors.Is(err, roomserver.ErrAliasInUse):
		return httpapi.Errf(http.StatusBadRequest, "M_ROOM_IN_USE", "room alias already taken")
	}
	return httpapi.InternalError(r, err)
}

func (rm *rooms) sendEvent(r *http.Request, req roomserver.SendRequest) (*storage.Event, httpapi.Response, bool) {
	ev, err := rm.rs.SendEvent(r.Context(), req)
	if err != nil {
		return nil, roomError(r, err), false
	}
	// Answer once the event is visible: a read right after the 200 sees it.
	_ = rm.db.Stream.Wait(r.Context(), ev.StreamPos)
	return ev, httpapi.Response{}, true
}

var validRoomID = regexp.MustCompile(`^![^:]+(:.+)?$`)

func roomIDParam(r *http.Request) (string, httpapi.Response, bool) {
	id := httpapi.Vars(r)["roomId"]
	if !validRoomID.MatchString(id) {
		return "", httpapi.InvalidParam("invalid room ID %q", id), false
	}
	return id, httpapi.Response{}, true
}

// --- createRoom ---

type createRoomRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           map[string]any    `json:"creation_content"`
	InitialState              []initialStateReq `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride map[string]any    `json:"power_level_content_override"`
}

type initialStateReq struct {
	Type     string         `json:"type"`
	StateKey string         `json:"state_key"`
	Content  map[string]any `json:"content"`
}

var validAliasName = regexp.MustCompile(`^[^:\s#]+$`)

// additionalCreators validates creation_content.additional_creators
// (MSC4289): absent, or an array of valid user IDs.
func additionalCreators(cc map[string]any) ([]string, error) {
	v, ok := cc["additional_creators"]
	if !ok {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("additional_creators must be an array of user IDs")
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		u, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("additional_creators must hold user ID strings")
		}
		if _, err := spec.NewUserID(u, true); err != nil || len(u) > maxIDBytes {
			return nil, fmt.Errorf("additional_creators: %q is not a valid user ID", clipString(u, maxIDBytes))
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

func (rm *rooms) createRoom(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req createRoomRequest
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	ver := gomatrixserverlib.RoomVersion(roomserver.DefaultRoomVersion)
	if req.RoomVersion != "" {
		ver = gomatrixserverlib.RoomVersion(req.RoomVersion)
		if impl, err := gomatrixserverlib.GetRoomVersion(ver); err != nil || !impl.Stable() {
			return httpapi.Errf(400, "M_UNSUPPORTED_ROOM_VERSION", "room version %q is not supported", req.RoomVersion)
		}
	}
	impl := gomatrixserverlib.MustGetRoomVersion(ver)
	switch req.Visibility {
	case "", "private", "public":
	default:
		return httpapi.InvalidParam("visibility must be public or private")
	}
	preset := req.Preset
	if preset == "" {
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	}
	joinRule, guest := "invite", "can_join"
	switch preset {
	case "public_chat":
		joinRule, guest = "public", "forbidden"
	case "private_chat", "trusted_private_chat":
	default:
		return httpapi.InvalidParam("unknown preset %q", preset)
	}
	for _, u := range req.Invite {
		if _, _, err := gomatrixserverlib.SplitID('@', u); err != nil || len(u) > maxIDBytes {
			return httpapi.InvalidParam("invalid user ID to invite: %q", clipString(u, maxIDBytes))
		}
	}
	alias := ""
	if req.RoomAliasName != "" {
		if !validAliasName.MatchString(req.RoomAliasName) {
			return httpapi.InvalidParam("invalid room_alias_name %q", clipString(req.RoomAliasName, maxIDBytes))
		}
		alias = "#" + req.RoomAliasName + ":" + rm.opts.ServerName
		if len(alias) > maxIDBytes {
			// As PUT /directory/room refuses it: the spec bounds aliases.
			return httpapi.InvalidParam("room alias %s… is longer than %d bytes", clipString(alias, 64), maxIDBytes)
		}
		if resp, ok := aliasReserved(rm.accounts.appservices, dev, alias); !ok {
			return resp
		}
		if _, _, err := storage.GetAlias(r.Context(), rm.db, alias); err == nil {
			return httpapi.Errf(400, "M_ROOM_IN_USE", "room alias %s already taken", alias)
		}
	}
	creator := dev.UserID
	users := map[string]any{}
	tombstone := 100
	var additional []string
	if impl.PrivilegedCreators() {
		// MSC4289: creators (the sender and additional_creators) have
		// unlimited power and are not listed in power levels; the
		// tombstone needs more than an ordinary admin (150), so only a
		// creator or someone given that much can upgrade; a trusted
		// private chat's invitees become creators.
		tombstone = 150
		var err error
		if additional, err = additionalCreators(req.CreationContent); err != nil {
			return httpapi.BadJSON("%v", err)
		}
		if preset == "trusted_private_chat" {
			for _, u := range req.Invite {
				if u != creator && !slices.Contains(additional, u) {
					additional = append(additional, u)
				}
			}
		}
		if len(additional) > 0 {
			if req.CreationContent == nil {
				req.CreationContent = map[string]any{}
			}
			req.CreationContent["additional_creators"] = additional
		}
		if ou, ok := req.PowerLevelContentOverride["users"].(map[string]any); ok {
			for _, c := range append([]string{creator}, additional...) {
				if _, in := ou[c]; in {
					return httpapi.BadJSON("%s is a room creator: creators have unlimited power and are not listed in power levels", c)
				}
			}
		}
	} else {
		users[creator] = 100
		if preset == "trusted_private_chat" {
			for _, u := range req.Invite {
				users[u] = 100
			}
		}
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": tombstone,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]any{"room": 50},
	}
	for k, v := range req.PowerLevelContentOverride {
		pl[k] = v
	}
	sp := func(s string) *string { return &s }
	member := map[string]any{"membership": "join"}
	if p, err := rm.profile(r.Context(), creator); err == nil {
		for k, v := range p {
			member[k] = v
		}
	}
	if req.IsDirect {
		member["is_direct"] = true
	}
	events := []roomserver.InitialEvent{
		{Type: "m.room.member", StateKey: sp(creator), Content: member},
		{Type: "m.room.power_levels", StateKey: sp(""), Content: pl},
	}
	if alias != "" {
		events = append(events, roomserver.InitialEvent{Type: "m.room.canonical_alias", StateKey: sp(""), Content: map[string]any{"alias": alias}})
	}
	presetState := []roomserver.InitialEvent{
		{Type: "m.room.join_rules", StateKey: sp(""), Content: map[string]any{"join_rule": joinRule}},
		{Type: "m.room.history_visibility", StateKey: sp(""), Content: map[string]any{"history_visibility": "shared"}},
		{Type: "m.room.guest_access", StateKey: sp(""), Content: map[string]any{"guest_access": guest}},
	}
	overridden := map[roomserver.StateKey]bool{}
	for _, is := range req.InitialState {
		overridden[roomserver.StateKey{Type: is.Type, StateKey: is.StateKey}] = true
	}
	for _, e := range presetState {
		if !overridden[roomserver.StateKey{Type: e.Type, StateKey: *e.StateKey}] {
			events = append(events, e)
		}
	}
	for _, is := range req.InitialState {
		if is.Type == "" || is.Type == "m.room.create" || is.Type == "m.room.member" || is.Type == "m.room.power_levels" {
			return httpapi.InvalidParam("initial_state may not set %q", is.Type)
		}
		c := is.Content
		if c == nil {
			c = map[string]any{}
		}
		events = append(events, roomserver.InitialEvent{Type: is.Type, StateKey: sp(is.StateKey), Content: c})
	}
	if req.Name != nil && *req.Name != "" {
		events = append(events, roomserver.InitialEvent{Type: "m.room.name", StateKey: sp(""), Content: map[string]any{"name": *req.Name}})
	}
	if req.Topic != nil && *req.Topic != "" {
		// The plain topic and its rich m.topic block (spec v1.15, MSC3765),
		// which newer clients read first.
		events = append(events, roomserver.InitialEvent{Type: "m.room.topic", StateKey: sp(""), Content: map[string]any{"topic": *req.Topic,
			"m.topic": map[string]any{"m.text": []any{map[string]any{"mimetype": "text/plain", "body": *req.Topic}}}}})
	}
	var remoteInvites []string
	for _, u := range req.Invite {
		if rm.fed != nil && !strings.HasSuffix(u, ":"+rm.opts.ServerName) {
			// Sent once the room exists: the invitee's server countersigns
			// each remote invite before it is stored.
			remoteInvites = append(remoteInvites, u)
			continue
		}
		queryUser(r.Context(), rm.accounts.appservices, u)
		if roomserver.InviteBlocked(r.Context(), rm.db, u, creator) {
			// Refused before anything is created (MSC4155).
			return httpapi.Forbidden("%s does not accept invites from %s", u, creator)
		}
		c := map[string]any{"membership": "invite"}
		if req.IsDirect {
			c["is_direct"] = true
		}
		events = append(events, roomserver.InitialEvent{Type: "m.room.member", StateKey: sp(u), Content: c})
	}
	createContent := map[string]any{}
	for k, v := range req.CreationContent {
		createContent[k] = v
	}
	roomID, err := rm.rs.CreateRoom(r.Context(), roomserver.CreateRoomRequest{
		Creator: creator, RoomVersion: ver, CreateContent: createContent, Events: events,
		Public: req.Visibility == "public", Alias: alias,
	})
	if err != nil {
		return roomError(r, err)
	}
	for _, u := range remoteInvites {
		c := map[string]any{"membership": "invite"}
		if req.IsDirect {
			c["is_direct"] = true
		}
		cb, _ := json.Marshal(c)
		target := u
		if _, err := rm.rs.SendEvent(r.Context(), roomserver.SendRequest{RoomID: roomID, Sender: creator, Type: "m.room.member", StateKey: &target, Content: cb}); err != nil {
			return roomError(r, err)
		}
	}
	// Answer once the room's events are visible (they are at or below Last).
	_ = rm.db.Stream.Wait(r.Context(), rm.db.Stream.Last())
	body := map[string]any{"room_id": roomID}
	if alias != "" {
		body["room_alias"] = alias
	}
	return httpapi.JSON(200, body)
}

// profile returns the user's displayname and avatar_url for member events.
func (rm *rooms) profile(ctx context.Context, userID string) (map[string]any, error) {
	p, err := storage.GetProfile(ctx, rm.db, userID)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if p.DisplayName != "" {
		out["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" {
		out["avatar_url"] = p.AvatarURL
	}
	return out, nil
}

// --- membership ---

type membershipBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

func (rm *rooms) joinRoomIDOrAlias(r *http.Request, dev *httpapi.Device) httpapi.Response {
	target := httpapi.Vars(r)["roomIdOrAlias"]
	roomID := target
	if strings.HasPrefix(target, "#") {
		var id string
		var err error
		if strings.HasSuffix(target, ":"+rm.opts.ServerName) {
			id, err = resolveLocalAlias(r.Context(), rm.db, rm.accounts.appservices, target)
		} else {
			id, _, err = storage.GetAlias(r.Context(), rm.db, target)
		}
		if errors.Is(err, storage.ErrNotFound) && !strings.HasSuffix(target, ":"+rm.opts.ServerName) {
			return rm.remoteJoin(r, dev, target, rm.joinContent(r.Context(), dev.UserID, ""))
		}
		if errors.Is(err, storage.ErrNotFound) {
			return httpapi.NotFound("room alias %s not found", target)
		} else if err != nil {
			return httpapi.InternalError(r, err)
		}
		roomID = id
	} else if !validRoomID.MatchString(target) {
		return httpapi.InvalidParam("%q is neither a room ID nor an alias", target)
	}
	return rm.join(r, dev, roomID)
}

func (rm *rooms) joinRoomByID(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	return rm.join(r, dev, roomID)
}

func (rm *rooms) join(r *http.Request, dev *httpapi.Device, roomID string) httpapi.Response {
	var body map[string]any
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	content := rm.joinContent(r.Context(), dev.UserID, "")
	if !copyExtra(content, body, "third_party_signed") {
		return httpapi.BadJSON("reason must be a string")
	}
	if rm.needsRemoteJoin(r.Context(), roomID) {
		return rm.remoteJoin(r, dev, roomID, content)
	}
	if m, err := rm.rs.Membership(r.Context(), roomID, dev.UserID); err != nil {
		return httpapi.InternalError(r, err)
	} else if m == "join" {
		return httpapi.JSON(200, map[string]string{"room_id": roomID})
	}
	via, remote := rm.joinAuthoriser(r.Context(), roomID, dev.UserID) // restricted rooms (knock.go)
	if via != "" {
		content["join_authorised_via_users_server"] = via
	} else if remote && rm.fed != nil {
		return rm.remoteJoin(r, dev, roomID, content)
	}
	cb, _ := json.Marshal(content)
	uid := dev.UserID
	if _, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: uid, Type: "m.room.member", StateKey: &uid, Content: cb}); !ok {
		return resp
	}
	_ = storage.ClearForgotten(r.Context(), rm.db, uid, roomID)
	rm.inheritPushRules(r, uid, roomID)
	return httpapi.JSON(200, map[string]string{"room_id": roomID})
}

// inheritPushRules copies a joining user's push rules for the room this
// one replaced (m.room.create's predecessor): an upgrade made on another
// server, or one this user was not in the old room's members for, still
// carries their rules over. Best effort: the join has happened.
func (rm *rooms) inheritPushRules(r *http.Request, userID, roomID string) {
	st, err := rm.rs.CurrentState(r.Context(), roomID)
	if err != nil {
		return
	}
	var c struct {
		Predecessor struct {
			RoomID string `json:"room_id"`
		} `json:"predecessor"`
	}
	if create := st.Get("m.room.create", ""); create == nil || json.Unmarshal(create.Content(), &c) != nil || c.Predecessor.RoomID == "" {
		return
	}
	if err := rm.accountData.copyRoomPushRules(r.Context(), userID, c.Predecessor.RoomID, roomID); err != nil {
		logrus.WithError(err).WithField("room_id", roomID).Warn("join: could not copy push rules from the predecessor room")
	}
}

// joinContent is the content of a user's join: membership and profile.
func (rm *rooms) joinContent(ctx context.Context, userID, reason string) map[string]any {
	content := map[string]any{"membership": "join"}
	if p, err := rm.profile(ctx, userID); err == nil {
		for k, v := range p {
			content[k] = v
		}
	}
	if reason != "" {
		content["reason"] = reason
	}
	return content
}

// copyExtra copies what a membership request's body adds (a reason,
// custom keys) into the member event's content, as the spec's clients
// expect to find them there. What the server decides (membership, the
// profile it filled in, the authorising user) and the request's own
// parameters (drop) are not the client's to set.
func copyExtra(content, body map[string]any, drop ...string) bool {
	if r, set := body["reason"]; set {
		if _, ok := r.(string); !ok {
			return false
		}
	}
	for k, v := range body {
		if k == "membership" || k == "join_authorised_via_users_server" || slices.Contains(drop, k) {
			continue
		}
		if _, set := content[k]; set && (k == "displayname" || k == "avatar_url") {
			continue
		}
		content[k] = v
	}
	return true
}

// membershipOther handles invite, kick (leave), ban and unban (leave).
func (rm *rooms) membershipOther(action string) authedHandler {
	return func(r *http.Request, dev *httpapi.Device) httpapi.Response {
		roomID, resp, ok := roomIDParam(r)
		if !ok {
			return resp
		}
		var body membershipBody
		var extra map[string]any
		if resp, ok := httpapi.DecodeJSON(r, &extra); !ok {
			return resp
		}
		if b, _ := json.Marshal(extra); json.Unmarshal(b, &body) != nil {
			return httpapi.BadJSON("user_id and reason must be strings")
		}
		if body.UserID == "" {
			return httpapi.MissingParam("user_id is required")
		}
		if _, _, err := gomatrixserverlib.SplitID('@', body.UserID); err != nil {
			return httpapi.InvalidParam("invalid user_id %q", body.UserID)
		}
		if action == "invite" && dev.ShadowBanned {
			return httpapi.JSON(200, map[string]any{}) // as if sent: the invitee never hears of it
		}
		membership := action
		cur, err := rm.rs.Membership(r.Context(), roomID, body.UserID)
		if errors.Is(err, roomserver.ErrRoomNotFound) {
			return httpapi.Forbidden("unknown room or not a member")
		} else if err != nil {
			return httpapi.InternalError(r, err)
		}
		switch action {
		case "unban":
			if cur != "ban" {
				return httpapi.Forbidden("%s is not banned", body.UserID)
			}
			membership = "leave"
		case "leave": // kick
			if cur != "join" && cur != "invite" && cur != "knock" {
				return httpapi.Forbidden("%s is not in the room", body.UserID)
			}
		case "invite":
			if cur == "invite" {
				return httpapi.JSON(200, struct{}{})
			}
			// A bridge's user not made yet: its appservice makes it.
			queryUser(r.Context(), rm.accounts.appservices, body.UserID)
		}
		content := map[string]any{"membership": membership}
		if action == "invite" {
			if p, err := rm.profile(r.Context(), body.UserID); err == nil {
				for k, v := range p {
					content[k] = v
				}
			}
		}
		copyExtra(content, extra, "user_id", "id_server", "id_access_token", "medium", "address") // reason checked above
		cb, _ := json.Marshal(content)
		target := body.UserID
		if _, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: dev.UserID, Type: "m.room.member", StateKey: &target, Content: cb}); !ok {
			return resp
		}
		return httpapi.JSON(200, struct{}{})
	}
}

func (rm *rooms) leaveRoom(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	var body map[string]any
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	cur, err := rm.rs.Membership(r.Context(), roomID, dev.UserID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.NotFound("room %s not found", roomID)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if cur == "leave" {
		return httpapi.JSON(200, struct{}{})
	}
	if cur == "invite" {
		// The invite to the server-notice room cannot be rejected: notices
		// must reach the user (they may leave once they have joined).
		if notices, err := storage.ServerNoticeRoom(r.Context(), rm.db, dev.UserID); err != nil {
			return httpapi.InternalError(r, err)
		} else if notices == roomID {
			return httpapi.Errf(http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM", "the server notices room cannot be left before joining it")
		}
	}
	content := map[string]any{"membership": "leave"}
	if !copyExtra(content, body) {
		return httpapi.BadJSON("reason must be a string")
	}
	uid := dev.UserID
	if rm.fed != nil && (cur == "invite" || cur == "knock") && rm.needsRemoteJoin(r.Context(), roomID) {
		// Rejecting an invite or retracting a knock in a room we take no
		// part in: the leave is made through a server in the room.
		if err := rm.fed.LeaveRemote(r.Context(), uid, roomID, rm.remoteVia(r, uid, roomID), content); err != nil {
			return httpapi.Errf(http.StatusForbidden, "M_FORBIDDEN", "could not leave %s through another server: %v", roomID, err)
		}
		_ = rm.db.Stream.Wait(r.Context(), rm.db.Stream.Last())
		return httpapi.JSON(200, struct{}{})
	}
	cb, _ := json.Marshal(content)
	if _, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: uid, Type: "m.room.member", StateKey: &uid, Content: cb}); !ok {
		return resp
	}
	return httpapi.JSON(200, struct{}{})
}

func (rm *rooms) forgetRoom(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	cur, err := rm.rs.Membership(r.Context(), roomID, dev.UserID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.NotFound("room %s not found", roomID)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if cur == "join" || cur == "invite" || cur == "knock" {
		return httpapi.Errf(400, "M_UNKNOWN", "leave the room before forgetting it")
	}
	if err := storage.SetForgotten(r.Context(), rm.db, dev.UserID, roomID); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, struct{}{})
}

func (rm *rooms) joinedRooms(r *http.Request, dev *httpapi.Device) httpapi.Response {
	rooms, err := storage.RoomsByMembership(r.Context(), rm.db, dev.UserID, "join")
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	ids := make([]string, 0, len(rooms))
	for id := range rooms {
		ids = append(ids, id)
	}
	return httpapi.JSON(200, map[string]any{"joined_rooms": ids})
}
