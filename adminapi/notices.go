package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// noticeSender is the system user server notices come from. Its localpart
// starts with '_', which no one can register.
func (a *API) noticeSender() string { return "@_server:" + a.ServerName }

// POST /_synapse/admin/v1/send_server_notice (and PUT …/{txnId}): send a
// message to a local user in their server-notice room, created (and the
// user invited) on first use and reused after (the user is invited back
// if they left it).
func (a *API) sendServerNotice(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req struct {
		UserID   string          `json:"user_id"`
		Content  json.RawMessage `json:"content"`
		Type     string          `json:"type"`
		StateKey *string         `json:"state_key"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if !a.isLocalUser(req.UserID) {
		return badParam("server notices can only be sent to local users")
	}
	var content map[string]any
	if err := json.Unmarshal(req.Content, &content); err != nil || content == nil {
		return httpapi.MissingParam("content must be a JSON object")
	}
	if req.Type == "" {
		req.Type = "m.room.message"
	}
	ctx := r.Context()
	acc, err := storage.GetAccount(ctx, a.DB, req.UserID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && acc.Deactivated) {
		return httpapi.NotFound("user not found")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	sender := a.noticeSender()
	roomID, err := storage.ServerNoticeRoom(ctx, a.DB, req.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if roomID != "" {
		// A user who left their notice room is invited back into it (one
		// room per user, its history kept); only a room that is gone, or
		// that they cannot come back to, is replaced.
		m, err := a.Rooms.Membership(ctx, roomID, req.UserID)
		switch {
		case err != nil || m == "ban":
			roomID = ""
		case m == "leave" || m == "":
			target := req.UserID
			invite, _ := json.Marshal(map[string]any{"membership": "invite"})
			if _, err := a.Rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: roomID, Sender: sender, Type: "m.room.member", StateKey: &target, Content: invite}); err != nil {
				roomID = ""
			}
		}
	}
	if roomID == "" {
		sp := func(s string) *string { return &s }
		roomID, err = a.Rooms.CreateRoom(ctx, roomserver.CreateRoomRequest{
			Creator:     sender,
			RoomVersion: gomatrixserverlib.RoomVersion(roomserver.DefaultRoomVersion),
			Events: []roomserver.InitialEvent{
				{Type: "m.room.member", StateKey: sp(sender), Content: map[string]any{"membership": "join", "displayname": "Server Notices"}},
				{Type: "m.room.power_levels", StateKey: sp(""), Content: map[string]any{"users": map[string]any{sender: 100}, "events_default": 0, "state_default": 100, "invite": 100, "kick": 100, "ban": 100, "redact": 100}},
				{Type: "m.room.join_rules", StateKey: sp(""), Content: map[string]any{"join_rule": "invite"}},
				{Type: "m.room.history_visibility", StateKey: sp(""), Content: map[string]any{"history_visibility": "shared"}},
				{Type: "m.room.name", StateKey: sp(""), Content: map[string]any{"name": "Server Notices"}},
				{Type: "m.room.member", StateKey: sp(req.UserID), Content: map[string]any{"membership": "invite"}},
			},
		})
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		if err := storage.SetServerNoticeRoom(ctx, a.DB, req.UserID, roomID); err != nil {
			return httpapi.InternalError(r, err)
		}
	}
	if err := a.tagNoticeRoom(ctx, req.UserID, roomID); err != nil {
		return httpapi.InternalError(r, err)
	}
	ev, err := a.Rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: roomID, Sender: sender, Type: req.Type, StateKey: req.StateKey,
		Content: req.Content, TxnID: vars(r, "txnId"), DeviceID: dev.UserID})
	if err != nil {
		var na *roomserver.NotAllowedError
		if errors.As(err, &na) {
			return httpapi.Forbidden("%s", na.Reason)
		}
		return httpapi.InternalError(r, err)
	}
	if err := a.Audit.Record(ctx, a.DB, auditapi.Entry{
		Actor:  auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
		Action: auditapi.ActionServerNotice, Target: req.UserID, RoomID: roomID,
		Details: map[string]any{"event_id": ev.EventID, "type": req.Type},
	}); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"event_id": ev.EventID})
}

// tagNoticeRoom gives the user's notice room the m.server_notice tag (in
// their m.tag room account data, as Synapse does) so that clients show it
// as the server's, keeping any tags the user set.
func (a *API) tagNoticeRoom(ctx context.Context, userID, roomID string) error {
	return a.DB.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.LockAccountData(ctx, tx, userID, roomID, "m.tag"); err != nil {
			return err
		}
		var c struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		raw, err := storage.GetAccountData(ctx, tx, userID, roomID, "m.tag")
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if len(raw) > 0 {
			_ = json.Unmarshal(raw, &c)
		}
		if _, ok := c.Tags["m.server_notice"]; ok {
			return nil
		}
		if c.Tags == nil {
			c.Tags = map[string]json.RawMessage{}
		}
		c.Tags["m.server_notice"] = json.RawMessage("{}")
		content, err := json.Marshal(c)
		if err != nil {
			return err
		}
		pos, err := storage.PutAccountData(ctx, tx, userID, roomID, "m.tag", content)
		if err != nil {
			return err
		}
		if a.NotifyUser != nil {
			tx.Publish(pos, func() { a.NotifyUser(userID) })
		}
		return nil
	})
}
