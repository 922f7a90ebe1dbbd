package clientapi

import (
	"context"
	"net/http"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/storage"
	"enclave/syncapi"
)

const maxStatusMsgLen = 1024

func (so *social) presence() *syncapi.Presence { return so.sync.Presence() }

func (so *social) getPresence(r *http.Request, dev *httpapi.Device) httpapi.Response {
	target := httpapi.Vars(r)["userId"]
	if !looksLikeUserID(target) {
		return httpapi.InvalidParam("invalid user ID %q", target)
	}
	if target != dev.UserID {
		shares, err := storage.SharesRoom(r.Context(), so.db, dev.UserID, target)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		if !shares {
			exists, err := storage.AccountExists(r.Context(), so.db, target)
			if err != nil {
				return httpapi.InternalError(r, err)
			}
			if !exists {
				return httpapi.NotFound("no presence for this user")
			}
			return httpapi.Forbidden("you do not share a room with this user")
		}
	}
	p := so.presence()
	if !p.Enabled() {
		return httpapi.JSON(200, map[string]any{"presence": syncapi.PresenceOffline})
	}
	c, err := p.Get(r.Context(), target)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, c)
}

func (so *social) putPresence(r *http.Request, dev *httpapi.Device) httpapi.Response {
	if httpapi.Vars(r)["userId"] != dev.UserID {
		return httpapi.Forbidden("you may only set your own presence")
	}
	var body struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if body.Presence == "" {
		return httpapi.MissingParam("presence is required")
	}
	if !syncapi.ValidPresence(body.Presence) {
		return httpapi.InvalidParam("presence must be online, unavailable or offline")
	}
	if body.StatusMsg != nil && utf8.RuneCountInString(*body.StatusMsg) > maxStatusMsgLen {
		return httpapi.InvalidParam("status_msg is longer than %d characters", maxStatusMsgLen)
	}
	// With presence disabled the request is accepted and ignored.
	if err := so.presence().Set(r.Context(), dev.UserID, body.Presence, body.StatusMsg, true); err != nil {
		return httpapi.InternalError(r, err)
	}
	if so.ephemeral != nil {
		so.ephemeral.PresenceChanged()
	}
	return httpapi.JSON(200, map[string]any{})
}

// syncPresence applies /sync's set_presence (called by the sync handler).
// A failure to record presence never fails the sync.
func (so *social) syncPresence(ctx context.Context, userID, setPresence string) {
	if err := so.presence().SyncActivity(ctx, userID, setPresence); err != nil {
		logrus.WithError(err).WithField("user_id", userID).Warn("presence: recording sync activity")
	}
}
