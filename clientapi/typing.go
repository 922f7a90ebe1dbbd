package clientapi

import (
	"net/http"
	"time"
)

func (a *API) typingRoutes() {
	a.v3("PUT", "/rooms/{roomId}/typing/{userId}", "typing", a.putTyping)
}

// Typing timeouts: the default when none is given, and the cap.
const (
	defaultTypingTimeout = 30 * time.Second
	maxTypingTimeout     = 2 * time.Minute
)

// requireJoined answers 403 unless the user is joined to the room.
func (a *API) requireJoined(r *http.Request, roomID, userID string) (Response, bool) {
	m, err := a.rs.Membership(r.Context(), roomID, userID)
	if err != nil || m != "join" {
		return Forbidden("you are not joined to room %s", roomID), false
	}
	return Response{}, true
}

func (a *API) putTyping(r *http.Request, dev *Device) Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	if vars(r)["userId"] != dev.UserID {
		return Forbidden("you may only set your own typing state")
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if resp, ok := decodeJSON(r, &body); !ok {
		return resp
	}
	if body.Typing == nil {
		return BadJSON("typing is required")
	}
	if resp, ok := a.requireJoined(r, roomID, dev.UserID); !ok {
		return resp
	}
	timeout := defaultTypingTimeout
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return BadJSON("timeout must not be negative")
		}
		timeout = min(time.Duration(*body.Timeout)*time.Millisecond, maxTypingTimeout)
	}
	a.sync.Typing().Set(roomID, dev.UserID, *body.Typing, timeout)
	return JSON(200, map[string]any{})
}
