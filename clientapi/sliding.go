package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"enclave/internal/httpapi"
	"enclave/syncapi"
)

// Simplified sliding sync (MSC4186): the sync Element X requires. The
// work is in syncapi.Syncer.Sliding; this checks the request.

// Request bounds: a client asking for more is refused, not truncated.
const (
	maxSlidingLists         = 64
	maxSlidingSubscriptions = 1000
	maxSlidingRanges        = 16
	maxSlidingRequiredState = 256
	maxSlidingConnID        = 64
)

func (sy *syncing) slidingHandler(r *http.Request, dev *httpapi.Device) httpapi.Response {
	q := r.URL.Query()
	p := syncapi.SlidingParams{UserID: dev.UserID, DeviceID: dev.DeviceID}
	if s := q.Get("timeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			return httpapi.InvalidParam("timeout must be a non-negative integer")
		}
		p.Timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	switch q.Get("set_presence") {
	case "", "online", "offline", "unavailable":
	default:
		return httpapi.InvalidParam("set_presence must be online, offline or unavailable")
	}
	var req syncapi.SlidingRequest
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if c := q.Get("conn_id"); c != "" && req.ConnID == "" {
		req.ConnID = c
	}
	pos := q.Get("pos")
	if pos == "" {
		pos = req.Pos
	}
	if pos != "" {
		tok, err := syncapi.ParseToken(pos)
		if err != nil || tok.Pos < 0 {
			return httpapi.Errf(400, "M_UNKNOWN_POS", "unknown pos")
		}
		p.Pos = &tok
	}
	if resp, ok := checkSliding(&req); !ok {
		return resp
	}
	sy.social.syncPresence(r.Context(), dev.UserID, q.Get("set_presence"))
	p.Req = &req
	resp, err := sy.sync.Sliding(r.Context(), p)
	switch {
	case errors.Is(err, syncapi.ErrUnknownPos):
		return httpapi.Errf(400, "M_UNKNOWN_POS", "unknown pos: start a new session")
	case errors.Is(err, context.Canceled):
		return httpapi.Errf(499, "M_UNKNOWN", "client went away")
	case err != nil:
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, resp)
}

func checkSliding(req *syncapi.SlidingRequest) (httpapi.Response, bool) {
	if len(req.ConnID) > maxSlidingConnID {
		return httpapi.InvalidParam("conn_id is too long"), false
	}
	if len(req.Lists) > maxSlidingLists || len(req.RoomSubscriptions) > maxSlidingSubscriptions {
		return httpapi.InvalidParam("too many lists or room subscriptions"), false
	}
	checkConfig := func(c syncapi.SlidingRoomConfig) (httpapi.Response, bool) {
		if c.TimelineLimit < 0 {
			return httpapi.InvalidParam("timeline_limit must not be negative"), false
		}
		if len(c.RequiredState) > maxSlidingRequiredState {
			return httpapi.InvalidParam("required_state is too long"), false
		}
		return httpapi.Response{}, true
	}
	for _, l := range req.Lists {
		if len(l.Ranges) > maxSlidingRanges {
			return httpapi.InvalidParam("too many ranges"), false
		}
		for _, rg := range l.Ranges {
			if rg[0] < 0 || rg[1] < rg[0] {
				return httpapi.InvalidParam("a range is [start, end] with 0 <= start <= end"), false
			}
		}
		if resp, ok := checkConfig(l.SlidingRoomConfig); !ok {
			return resp, false
		}
	}
	for id, c := range req.RoomSubscriptions {
		if !strings.HasPrefix(id, "!") || !strings.Contains(id, ":") {
			return httpapi.InvalidParam("invalid room ID %q in room_subscriptions", id), false
		}
		if resp, ok := checkConfig(c); !ok {
			return resp, false
		}
	}
	return httpapi.Response{}, true
}
