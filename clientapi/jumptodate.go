package clientapi

import (
	"errors"
	"net/http"
	"strconv"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// timestampToEvent (jump to date, MSC3030, spec v1.6) finds the room's
// event closest to ts in direction dir, for members only. With federation
// on, the room's other servers are asked too (we may lack what happened
// before we joined), the answer closer to ts wins, and a remote one is
// backfilled so that /context and /messages can start from it.
func (eg *events) timestampToEvent(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return httpapi.InvalidParam("ts must be a timestamp in milliseconds")
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		return httpapi.InvalidParam("dir must be f or b")
	}
	m, err := eg.rs.Membership(r.Context(), roomID, dev.UserID)
	if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.InternalError(r, err)
	}
	if m != "join" {
		return httpapi.Forbidden("you are not a member of room %s", roomID)
	}
	forward := dir == "f"
	id, ots, err := storage.EventAtTimestamp(r.Context(), eg.db, roomID, ts, forward)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return httpapi.InternalError(r, err)
	}
	if eg.fed != nil {
		rid, rts, rerr := eg.fed.TimestampToEvent(r.Context(), roomID, ts, dir)
		if rerr == nil && (id == "" || (forward && rts < ots) || (!forward && rts > ots)) {
			id, ots = rid, rts
			eg.fetchOlder(r, roomID, id)
		}
	}
	if id == "" {
		return httpapi.NotFound("no event %s of %d in room %s", map[bool]string{true: "after", false: "before"}[forward], ts, roomID)
	}
	return httpapi.JSON(200, map[string]any{"event_id": id, "origin_server_ts": ots})
}

// fetchOlder backfills (a few rounds) until a remote answer is stored
// here, so the client can open /context and paginate from it. The answer
// stands either way: the event exists on the room's servers.
func (eg *events) fetchOlder(r *http.Request, roomID, eventID string) {
	for round := 0; round < 3; round++ {
		if _, err := storage.GetEvent(r.Context(), eg.db, eventID); err == nil {
			return
		}
		if n, err := eg.fed.Backfill(r.Context(), roomID, 100); err != nil || n == 0 {
			return
		}
	}
}
