package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
	"enclave/syncapi"
)

// Thread subscriptions (MSC4306, unstable prefix) and their pagination
// endpoint (MSC4308). The subscription state drives the
// .io.element.msc4306.rule.*_thread push rules (the notifier reads it)
// and the sliding sync extension.
type threadSubs struct {
	db   *storage.DB
	rs   roomserver.API
	sync *syncapi.Syncer
}

// Unstable error codes of MSC4306.
const (
	errNotInThread              = "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD"
	errConflictingUnsubsciption = "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION"
)

// thread resolves the path's room and thread root for a joined member: a
// root that is not a timeline event of the room, or a room the user is
// not in, is 404 M_NOT_FOUND (the MSC does not tell the two apart).
func (ts *threadSubs) thread(r *http.Request, dev *httpapi.Device) (roomID, rootID string, resp httpapi.Response, ok bool) {
	roomID, resp, ok = roomIDParam(r)
	if !ok {
		return "", "", resp, false
	}
	rootID = httpapi.Vars(r)["threadRootId"]
	if m, err := ts.rs.Membership(r.Context(), roomID, dev.UserID); err != nil || m != "join" {
		return "", "", httpapi.NotFound("thread not found"), false
	}
	ev, err := storage.GetEvent(r.Context(), ts.db, rootID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (ev.RoomID != roomID || ev.StreamPos <= 0)) {
		return "", "", httpapi.NotFound("thread not found"), false
	} else if err != nil {
		return "", "", httpapi.InternalError(r, err), false
	}
	return roomID, rootID, httpapi.Response{}, true
}

// threadRootOf returns the thread root an event replies in ("" for none).
func threadRootOf(js []byte) string {
	var ev struct {
		Content struct {
			RelatesTo struct {
				RelType string `json:"rel_type"`
				EventID string `json:"event_id"`
			} `json:"m.relates_to"`
		} `json:"content"`
	}
	if json.Unmarshal(js, &ev) != nil || ev.Content.RelatesTo.RelType != "m.thread" {
		return ""
	}
	return ev.Content.RelatesTo.EventID
}

func (ts *threadSubs) get(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, rootID, resp, ok := ts.thread(r, dev)
	if !ok {
		return resp
	}
	s, err := storage.GetThreadSubscription(r.Context(), ts.db, dev.UserID, roomID, rootID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !s.Subscribed) {
		return httpapi.NotFound("not subscribed to this thread")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{"automatic": s.Automatic})
}

// put subscribes: manually, or automatically ({"automatic": cause event}),
// where the cause must be in the thread and come after the user's latest
// unsubscription.
func (ts *threadSubs) put(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, rootID, resp, ok := ts.thread(r, dev)
	if !ok {
		return resp
	}
	var body struct {
		Automatic *string `json:"automatic"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	var causePos int64
	if body.Automatic != nil {
		cause, err := storage.GetEvent(r.Context(), ts.db, *body.Automatic)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return httpapi.InternalError(r, err)
		}
		if err != nil || cause.RoomID != roomID || cause.StreamPos <= 0 || threadRootOf(cause.JSON) != rootID {
			return httpapi.Errf(http.StatusBadRequest, errNotInThread, "%s is not an event of this thread", *body.Automatic)
		}
		causePos = cause.StreamPos
	}
	err := ts.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		pos, err := storage.SubscribeThread(r.Context(), tx, dev.UserID, roomID, rootID, causePos)
		if err == nil && pos > 0 {
			ts.publish(tx, pos, dev.UserID)
		}
		return err
	})
	if errors.Is(err, storage.ErrConflictingUnsubscription) {
		return httpapi.Errf(http.StatusConflict, errConflictingUnsubsciption, "you unsubscribed from this thread after that event")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}

func (ts *threadSubs) delete(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, rootID, resp, ok := ts.thread(r, dev)
	if !ok {
		return resp
	}
	err := ts.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		pos, err := storage.UnsubscribeThread(r.Context(), tx, dev.UserID, roomID, rootID)
		if err == nil {
			ts.publish(tx, pos, dev.UserID)
		}
		return err
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}

// publish wakes the user's syncs once the change is visible (the sliding
// sync extension reads it).
func (ts *threadSubs) publish(tx *storage.Tx, pos int64, userID string) {
	tx.Publish(pos, func() { ts.sync.NotifyUsers(userID) })
}

// Pagination bounds of /thread_subscriptions.
const (
	defaultThreadSubsLimit = 100
	maxThreadSubsLimit     = 1000
)

// list is GET /unstable/io.element.msc4308/thread_subscriptions: the
// user's changes with to < pos <= from, newest first, dir=b only.
func (ts *threadSubs) list(r *http.Request, dev *httpapi.Device) httpapi.Response {
	q := r.URL.Query()
	if d := q.Get("dir"); d != "b" {
		return httpapi.InvalidParam("dir must be b")
	}
	limit := defaultThreadSubsLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return httpapi.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, maxThreadSubsLimit)
	}
	from := ts.sync.Current().Pos
	if v := q.Get("from"); v != "" {
		t, err := syncapi.ParseToken(v)
		if err != nil {
			return httpapi.InvalidParam("invalid from token")
		}
		from = min(t.Pos, from)
	}
	var to int64
	if v := q.Get("to"); v != "" {
		t, err := syncapi.ParseToken(v)
		if err != nil {
			return httpapi.InvalidParam("invalid to token")
		}
		to = t.Pos
	}
	out, err := syncapi.ThreadSubscriptionPage(r.Context(), ts.db, dev.UserID, to, from, limit)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if end, ok := out["prev_batch"]; ok {
		delete(out, "prev_batch")
		out["end"] = end
	}
	return httpapi.JSON(200, out)
}
