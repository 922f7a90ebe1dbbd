package adminapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

func sortStrings(s []string) { sort.Strings(s) }

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

// nullable returns s, or nil (JSON null) when empty.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// roomJSON renders a room as Synapse's List Room API does.
func roomJSON(r *storage.AdminRoom) map[string]any {
	create := r.State["m.room.create"]
	federatable := true
	if v, ok := create["m.federate"].(bool); ok {
		federatable = v
	}
	return map[string]any{
		"room_id":              r.RoomID,
		"name":                 nullable(str(r.State["m.room.name"], "name")),
		"canonical_alias":      nullable(str(r.State["m.room.canonical_alias"], "alias")),
		"joined_members":       r.JoinedMembers,
		"joined_local_members": r.JoinedLocalMembers,
		"version":              r.Version,
		"creator":              r.Creator,
		"encryption":           nullable(str(r.State["m.room.encryption"], "algorithm")),
		"federatable":          federatable,
		"public":               r.IsPublic,
		"join_rules":           nullable(str(r.State["m.room.join_rules"], "join_rule")),
		"guest_access":         nullable(str(r.State["m.room.guest_access"], "guest_access")),
		"history_visibility":   nullable(str(r.State["m.room.history_visibility"], "history_visibility")),
		"state_events":         r.StateEvents,
		"room_type":            nullable(str(create, "type")),
	}
}

// sortKey orders rooms per order_by; "largest first" orders are negated.
func roomLess(orderBy string) (func(a, b map[string]any) int, bool) {
	strKey := func(k string) func(a, b map[string]any) int {
		return func(a, b map[string]any) int {
			x, _ := a[k].(string)
			y, _ := b[k].(string)
			return strings.Compare(strings.ToLower(x), strings.ToLower(y))
		}
	}
	intDesc := func(k string) func(a, b map[string]any) int {
		return func(a, b map[string]any) int { return b[k].(int) - a[k].(int) }
	}
	boolDesc := func(k string) func(a, b map[string]any) int {
		return func(a, b map[string]any) int {
			x, y := a[k].(bool), b[k].(bool)
			switch {
			case x == y:
				return 0
			case x:
				return -1
			}
			return 1
		}
	}
	switch orderBy {
	case "", "name", "alphabetical":
		return strKey("name"), true
	case "size", "joined_members":
		return intDesc("joined_members"), true
	case "joined_local_members", "state_events":
		return intDesc(orderBy), true
	case "canonical_alias", "creator", "encryption", "join_rules", "guest_access", "history_visibility":
		return strKey(orderBy), true
	case "version":
		return func(a, b map[string]any) int {
			x, _ := strconv.Atoi(a["version"].(string))
			y, _ := strconv.Atoi(b["version"].(string))
			return y - x
		}, true
	case "federatable", "public":
		return boolDesc(orderBy), true
	}
	return nil, false
}

// GET /_synapse/admin/v1/rooms
func (a *API) listRooms(r *http.Request, _ *httpapi.Device) httpapi.Response {
	from, ok1 := intParam(r, "from", 0)
	limit, ok2 := intParam(r, "limit", 100)
	public, ok3 := boolParam(r, "public_rooms")
	empty, ok4 := boolParam(r, "empty_rooms")
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return badParam("from and limit must be non-negative integers; public_rooms and empty_rooms true or false")
	}
	q := r.URL.Query()
	less, ok := roomLess(q.Get("order_by"))
	if !ok {
		return badParam("unknown order_by %q", q.Get("order_by"))
	}
	dir := q.Get("dir")
	if dir != "" && dir != "f" && dir != "b" {
		return badParam("dir must be f or b")
	}
	rooms, err := storage.ListAdminRooms(r.Context(), a.DB, a.ServerName, "")
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	term := q.Get("search_term")
	var all []map[string]any
	for _, room := range rooms {
		j := roomJSON(room)
		if term != "" {
			name, _ := j["name"].(string)
			alias, _ := j["canonical_alias"].(string)
			aliasLocal, _, _ := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
			if !strings.Contains(strings.ToLower(name), strings.ToLower(term)) && !strings.Contains(strings.ToLower(aliasLocal), strings.ToLower(term)) && !strings.Contains(room.RoomID, term) {
				continue
			}
		}
		if public != nil && room.IsPublic != *public {
			continue
		}
		if empty != nil && (room.JoinedMembers == 0) != *empty {
			continue
		}
		all = append(all, j)
	}
	sort.SliceStable(all, func(i, j int) bool {
		c := less(all[i], all[j])
		if c == 0 {
			c = strings.Compare(all[i]["room_id"].(string), all[j]["room_id"].(string))
		}
		if dir == "b" {
			return c > 0
		}
		return c < 0
	})
	total := len(all)
	page := []map[string]any{}
	if from < total {
		page = all[from:min(total, from+limit)]
	}
	body := map[string]any{"rooms": page, "offset": from, "total_rooms": total}
	if next := from + len(page); next < total && len(page) > 0 {
		body["next_batch"] = next
		body["next_token"] = next
	}
	if from > 0 {
		body["prev_batch"] = max(0, from-limit)
	}
	return httpapi.JSON(http.StatusOK, body)
}

func (a *API) loadRoom(r *http.Request) (*storage.AdminRoom, httpapi.Response, bool) {
	roomID := vars(r, "roomId")
	rooms, err := storage.ListAdminRooms(r.Context(), a.DB, a.ServerName, roomID)
	if err != nil {
		return nil, httpapi.InternalError(r, err), false
	}
	if len(rooms) == 0 {
		return nil, httpapi.NotFound("room not found"), false
	}
	return rooms[0], httpapi.Response{}, true
}

// GET /_synapse/admin/v1/rooms/{roomId}
func (a *API) getRoom(r *http.Request, _ *httpapi.Device) httpapi.Response {
	room, resp, ok := a.loadRoom(r)
	if !ok {
		return resp
	}
	j := roomJSON(room)
	j["topic"] = nullable(str(room.State["m.room.topic"], "topic"))
	j["avatar"] = nullable(str(room.State["m.room.avatar"], "url"))
	members, err := storage.RoomMembers(r.Context(), a.DB, room.RoomID, "join")
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	devices := 0
	suffix := ":" + a.ServerName
	for _, m := range members {
		if strings.HasSuffix(m, suffix) {
			ids, err := storage.ListDeviceIDs(r.Context(), a.DB, m)
			if err != nil {
				return httpapi.InternalError(r, err)
			}
			devices += len(ids)
		}
	}
	j["joined_local_devices"] = devices
	j["forgotten"] = false
	if blocked, _ := a.RBAC.RoomBlocked(room.RoomID); blocked {
		j["blocked"] = true
	}
	return httpapi.JSON(http.StatusOK, j)
}

// GET /_synapse/admin/v1/rooms/{roomId}/members
func (a *API) roomMembers(r *http.Request, _ *httpapi.Device) httpapi.Response {
	room, resp, ok := a.loadRoom(r)
	if !ok {
		return resp
	}
	members, err := storage.RoomMembers(r.Context(), a.DB, room.RoomID, "join")
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if members == nil {
		members = []string{}
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"members": members, "total": len(members)})
}

// GET /_synapse/admin/v1/rooms/{roomId}/state
func (a *API) roomState(r *http.Request, _ *httpapi.Device) httpapi.Response {
	room, resp, ok := a.loadRoom(r)
	if !ok {
		return resp
	}
	state, err := a.Rooms.CurrentState(r.Context(), room.RoomID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	typ := r.URL.Query().Get("type")
	out := []map[string]any{}
	for _, ev := range state {
		if typ != "" && ev.Type() != typ {
			continue
		}
		var content any
		_ = json.Unmarshal(ev.Content(), &content)
		out = append(out, map[string]any{
			"type": ev.Type(), "state_key": *ev.StateKey(), "content": content, "sender": string(ev.SenderID()),
			"event_id": ev.EventID(), "room_id": room.RoomID, "origin_server_ts": int64(ev.OriginServerTS()), "unsigned": map[string]any{},
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i]["type"] != out[j]["type"] {
			return out[i]["type"].(string) < out[j]["type"].(string)
		}
		return out[i]["state_key"].(string) < out[j]["state_key"].(string)
	})
	return httpapi.JSON(http.StatusOK, map[string]any{"state": out})
}

// ---------------------------------------------------------------------------
// Room deletion.

type deleteRequest struct {
	NewRoomUserID string `json:"new_room_user_id"`
	RoomName      string `json:"room_name"`
	Message       string `json:"message"`
	Block         bool   `json:"block"`
	Purge         *bool  `json:"purge"`
	ForcePurge    bool   `json:"force_purge"`
}

type deleteResult struct {
	KickedUsers       []string `json:"kicked_users"`
	FailedToKickUsers []string `json:"failed_to_kick_users"`
	LocalAliases      []string `json:"local_aliases"`
	NewRoomID         *string  `json:"new_room_id"`
}

type deleteStatus struct {
	DeleteID string        `json:"delete_id"`
	RoomID   string        `json:"-"`
	Status   string        `json:"status"`
	Error    string        `json:"error,omitempty"`
	Shutdown *deleteResult `json:"shutdown_room"`
}

var errUnderHold = errors.New("room is under legal hold")

// Defaults of the room users of a deleted room are moved to (Synapse's).
const (
	defaultNewRoomName    = "Content Violation Notification"
	defaultNewRoomMessage = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
)

// createNoticeRoom creates the room the local users of a deleted room are
// moved to: req.NewRoomUserID creates and administers it, everyone else
// may read but not post, and its first message says why.
func (a *API) createNoticeRoom(ctx context.Context, req deleteRequest) (string, error) {
	creator := req.NewRoomUserID
	name, msg := req.RoomName, req.Message
	if name == "" {
		name = defaultNewRoomName
	}
	if msg == "" {
		msg = defaultNewRoomMessage
	}
	sp := func(s string) *string { return &s }
	roomID, err := a.Rooms.CreateRoom(ctx, roomserver.CreateRoomRequest{
		Creator:     creator,
		RoomVersion: gomatrixserverlib.RoomVersion(roomserver.DefaultRoomVersion),
		Events: []roomserver.InitialEvent{
			{Type: "m.room.member", StateKey: sp(creator), Content: map[string]any{"membership": "join"}},
			{Type: "m.room.power_levels", StateKey: sp(""), Content: map[string]any{"users": map[string]any{creator: 100}, "users_default": 0,
				"events_default": 50, "state_default": 100, "invite": 100, "kick": 100, "ban": 100, "redact": 100}},
			{Type: "m.room.join_rules", StateKey: sp(""), Content: map[string]any{"join_rule": "invite"}},
			{Type: "m.room.history_visibility", StateKey: sp(""), Content: map[string]any{"history_visibility": "shared"}},
			{Type: "m.room.name", StateKey: sp(""), Content: map[string]any{"name": name}},
		},
	})
	if err != nil {
		return "", err
	}
	content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": msg})
	if _, err := a.Rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: roomID, Sender: creator, Type: "m.room.message", Content: content}); err != nil {
		return roomID, err
	}
	return roomID, nil
}

// moveUser invites userID to the notice room (as its creator) and joins
// them to it on their behalf.
func (a *API) moveUser(ctx context.Context, newRoomID, creator, userID string) error {
	uid := userID
	if _, err := a.Rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: newRoomID, Sender: creator, Type: "m.room.member", StateKey: &uid,
		Content: json.RawMessage(`{"membership":"invite"}`)}); err != nil {
		return err
	}
	_, err := a.Rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: newRoomID, Sender: userID, Type: "m.room.member", StateKey: &uid,
		Content: json.RawMessage(`{"membership":"join"}`)})
	return err
}

// shutdownRoom removes local users and aliases from a room (with
// new_room_user_id, both move to a new room that user creates), optionally
// blocks it, and purges it unless purge is false.
func (a *API) shutdownRoom(ctx context.Context, dev *httpapi.Device, roomID string, req deleteRequest) (*deleteResult, error) {
	purge := req.Purge == nil || *req.Purge
	if purge {
		held, err := storage.RoomUnderHold(ctx, a.DB, roomID)
		if err != nil {
			return nil, err
		}
		if held {
			return nil, errUnderHold
		}
	}
	res := &deleteResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}
	suffix := ":" + a.ServerName
	newRoomID := ""
	if req.NewRoomUserID != "" {
		// Only for a room we hold: a room blocked ahead of time has no one to move.
		if _, err := storage.GetRoom(ctx, a.DB, roomID); err == nil {
			if newRoomID, err = a.createNoticeRoom(ctx, req); err != nil {
				return nil, err
			}
			res.NewRoomID = &newRoomID
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
	}
	for _, m := range []string{"join", "invite", "knock"} {
		users, err := storage.RoomMembers(ctx, a.DB, roomID, m)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			if !strings.HasSuffix(u, suffix) {
				continue
			}
			uid := u
			_, err := a.Rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: roomID, Sender: u, Type: "m.room.member", StateKey: &uid,
				Content: json.RawMessage(`{"membership":"leave","reason":"room shut down by the server administrator"}`)})
			if err != nil {
				logrus.WithError(err).WithFields(logrus.Fields{"room_id": roomID, "user_id": u}).Warn("admin: removing user from room")
				res.FailedToKickUsers = append(res.FailedToKickUsers, u)
				continue
			}
			res.KickedUsers = append(res.KickedUsers, u)
			if newRoomID != "" && u != req.NewRoomUserID {
				if err := a.moveUser(ctx, newRoomID, req.NewRoomUserID, u); err != nil {
					logrus.WithError(err).WithFields(logrus.Fields{"room_id": newRoomID, "user_id": u}).Warn("admin: moving user to the new room")
				}
			}
		}
	}
	aliases, err := storage.RoomAliases(ctx, a.DB, roomID)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	// The admin API's own writes: aliases, the directory flag, the block
	// and the audit entries. With purge they run in the room server's
	// purge transaction, after the room's rows are gone.
	writes := func(tx *storage.Tx, events int64) error {
		for _, al := range aliases {
			if strings.HasSuffix(al, suffix) {
				if err := storage.DeleteAlias(ctx, tx, al); err != nil {
					return err
				}
				if newRoomID != "" { // repointed to the new room
					if _, err := storage.InsertAlias(ctx, tx, al, newRoomID, req.NewRoomUserID); err != nil {
						return err
					}
				}
				res.LocalAliases = append(res.LocalAliases, al)
			}
		}
		if err := storage.SetRoomPublic(ctx, tx, roomID, false); err != nil {
			return err
		}
		if req.Block || purge {
			if err := storage.BlockRoom(ctx, tx, storage.RoomBlock{RoomID: roomID, BlockedBy: dev.UserID, BlockedTS: now, Purged: purge}); err != nil {
				return err
			}
			if err := a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionRoomBlock, Target: roomID, RoomID: roomID, Details: map[string]any{"blocked": true}}); err != nil {
				return err
			}
		}
		if !purge {
			return nil
		}
		details := map[string]any{"events": events, "kicked_users": len(res.KickedUsers)}
		if newRoomID != "" {
			details["new_room_id"] = newRoomID
		}
		return a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionRoomPurge, Target: roomID, RoomID: roomID, Details: details})
	}
	if purge {
		_, err = a.Rooms.PurgeRoom(ctx, roomID, writes)
	} else {
		err = a.DB.WithTx(ctx, func(tx *storage.Tx) error { return writes(tx, 0) })
	}
	if err != nil {
		return nil, err
	}
	if req.Block || purge {
		a.RBAC.SetRoomBlocked(roomID, true, purge)
	}
	return res, nil
}

func (a *API) deleteRoomCommon(r *http.Request) (string, deleteRequest, httpapi.Response, bool) {
	roomID := vars(r, "roomId")
	var req deleteRequest
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return "", req, resp, false
	}
	if _, err := storage.GetRoom(r.Context(), a.DB, roomID); errors.Is(err, storage.ErrNotFound) {
		if blocked, purged := a.RBAC.RoomBlocked(roomID); !blocked && !purged {
			return "", req, httpapi.NotFound("room not found"), false
		}
	} else if err != nil {
		return "", req, httpapi.InternalError(r, err), false
	}
	if u := req.NewRoomUserID; u != "" {
		// Checked before anything changes.
		if !a.isLocalUser(u) {
			return "", req, badParam("new_room_user_id must be a user of this server"), false
		}
		acc, err := storage.GetAccount(r.Context(), a.DB, u)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && acc.Deactivated) {
			return "", req, httpapi.NotFound("user %s not found", u), false
		}
		if err != nil {
			return "", req, httpapi.InternalError(r, err), false
		}
	}
	return roomID, req, httpapi.Response{}, true
}

func (a *API) deleteError(r *http.Request, err error) httpapi.Response {
	if errors.Is(err, errUnderHold) {
		return httpapi.Forbidden("room %s is under legal hold and cannot be purged", vars(r, "roomId"))
	}
	return httpapi.InternalError(r, err)
}

// DELETE /_synapse/admin/v1/rooms/{roomId}
func (a *API) deleteRoomV1(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, req, resp, ok := a.deleteRoomCommon(r)
	if !ok {
		return resp
	}
	res, err := a.shutdownRoom(r.Context(), dev, roomID, req)
	if err != nil {
		return a.deleteError(r, err)
	}
	return httpapi.JSON(http.StatusOK, res)
}

// DELETE /_synapse/admin/v2/rooms/{roomId}: Synapse runs it in the
// background; Enclave finishes before answering and keeps the status for
// the delete_status endpoints.
func (a *API) deleteRoomV2(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, req, resp, ok := a.deleteRoomCommon(r)
	if !ok {
		return resp
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	st := &deleteStatus{DeleteID: hex.EncodeToString(b), RoomID: roomID, Status: "complete"}
	res, err := a.shutdownRoom(r.Context(), dev, roomID, req)
	if errors.Is(err, errUnderHold) {
		return a.deleteError(r, err)
	}
	if err != nil {
		logrus.WithError(err).WithField("room_id", roomID).Error("admin: deleting room")
		st.Status, st.Error = "failed", "internal error"
	}
	st.Shutdown = res
	if st.Shutdown == nil {
		st.Shutdown = &deleteResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}
	}
	a.deletes.Store(st.DeleteID, st)
	return httpapi.JSON(http.StatusOK, map[string]any{"delete_id": st.DeleteID})
}

// GET /_synapse/admin/v2/rooms/{roomId}/delete_status
func (a *API) deleteStatusByRoom(r *http.Request, _ *httpapi.Device) httpapi.Response {
	roomID := vars(r, "roomId")
	results := []*deleteStatus{}
	a.deletes.Range(func(_, v any) bool {
		if st := v.(*deleteStatus); st.RoomID == roomID {
			results = append(results, st)
		}
		return true
	})
	if len(results) == 0 {
		return httpapi.NotFound("no delete task for room %s", roomID)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"results": results})
}

// GET /_synapse/admin/v2/rooms/delete_status/{deleteId}
func (a *API) deleteStatusByID(r *http.Request, _ *httpapi.Device) httpapi.Response {
	v, ok := a.deletes.Load(vars(r, "deleteId"))
	if !ok {
		return httpapi.NotFound("delete id not found")
	}
	st := v.(*deleteStatus)
	return httpapi.JSON(http.StatusOK, map[string]any{"status": st.Status, "error": st.Error, "shutdown_room": st.Shutdown})
}

// GET /_synapse/admin/v1/rooms/{roomId}/block
func (a *API) getRoomBlock(r *http.Request, _ *httpapi.Device) httpapi.Response {
	b, err := storage.GetRoomBlock(r.Context(), a.DB, vars(r, "roomId"))
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.JSON(http.StatusOK, map[string]any{"block": false})
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"block": true, "user_id": b.BlockedBy})
}

// PUT /_synapse/admin/v1/rooms/{roomId}/block
func (a *API) putRoomBlock(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID := vars(r, "roomId")
	var req struct {
		Block *bool `json:"block"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.Block == nil {
		return httpapi.MissingParam("block is required")
	}
	if !strings.HasPrefix(roomID, "!") {
		return badParam("invalid room ID")
	}
	ctx := r.Context()
	err := a.DB.WithTx(ctx, func(tx *storage.Tx) error {
		if *req.Block {
			if err := storage.BlockRoom(ctx, tx, storage.RoomBlock{RoomID: roomID, BlockedBy: dev.UserID, BlockedTS: time.Now().UnixMilli()}); err != nil {
				return err
			}
		} else if _, err := storage.UnblockRoom(ctx, tx, roomID); err != nil {
			return err
		}
		return a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionRoomBlock, Target: roomID, RoomID: roomID, Details: map[string]any{"blocked": *req.Block}})
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	a.RBAC.SetRoomBlocked(roomID, *req.Block, false)
	return httpapi.JSON(http.StatusOK, map[string]any{"block": *req.Block})
}
