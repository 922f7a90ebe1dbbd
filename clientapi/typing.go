package clientapi

import (
	"enclave/internal/httpapi"
	"net/http"
	"time"
)

// Typing timeouts: the default when none is given, and the cap.
const (
	defaultTypingTimeout = 30 * time.Second
	maxTypingTimeout     = 2 * time.Minute
)

// requireJoined answers 403 unless the user is joined to the room.
func (eg *events) requireJoined(r *http.Request, roomID, userID string) (httpapi.Response, bool) {
	m, err := eg.rs.Membership(r.Context(), roomID, userID)
	if err != nil || m != "join" {
		return httpapi.Forbidden("you are not joined to room %s", roomID), false
	}
	return httpapi.Response{}, true
}

func (eg *events) putTyping(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	if httpapi.Vars(r)["userId"] != dev.UserID {
		return httpapi.Forbidden("you may only set your own typing state")
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if body.Typing == nil {
		return httpapi.BadJSON("typing is required")
	}
	if resp, ok := eg.requireJoined(r, roomID, dev.UserID); !ok {
		return resp
	}
	timeout := defaultTypingTimeout
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return httpapi.BadJSON("timeout must not be negative")
		}
		timeout = min(time.Duration(*body.Timeout)*time.Millisecond, maxTypingTimeout)
	}
	eg.sync.Typing().Set(roomID, dev.UserID, *body.Typing, timeout)
	if eg.ephemeral != nil {
		eg.ephemeral.SendTyping(r.Context(), roomID, dev.UserID, *body.Typing, timeout)
	}
	return httpapi.JSON(200, map[string]any{})
}
