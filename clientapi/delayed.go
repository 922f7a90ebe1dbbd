package clientapi

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// delayParam is the query parameter that makes /send and /state schedule
// the event instead (MSC4140).
const delayParam = "org.matrix.msc4140.delay"

// errRepeated ends a schedule transaction whose txnId was seen before.
var errRepeated = errors.New("delayed event already scheduled for this transaction ID")

// maxEventDelay bounds a delay: a scheduled event is a promise the server
// keeps across restarts, not a reminder service.
const maxEventDelay = 24 * time.Hour

// delayedEvents serves MSC4140: it schedules events, lists, cancels,
// restarts and sends them, and a background loop sends those due.
type delayedEvents struct {
	db *storage.DB
	rs roomserver.API
	// wake tells the loop the schedule changed (it sleeps until the
	// soonest event is due rather than polling the store).
	wake chan struct{}
}

func (de *delayedEvents) poke() {
	select {
	case de.wake <- struct{}{}:
	default:
	}
}

// delay reads the delay of a /send or /state request; ok false with the
// error response, set false when the request has none.
func delayOf(r *http.Request) (ms int64, set bool, resp httpapi.Response, ok bool) {
	v := r.URL.Query().Get(delayParam)
	if v == "" {
		return 0, false, httpapi.Response{}, true
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, false, httpapi.InvalidParam("%s must be a number of milliseconds", delayParam), false
	}
	if ms > maxEventDelay.Milliseconds() {
		return 0, false, httpapi.Errf(http.StatusBadRequest, "M_MAX_DELAY_EXCEEDED", "the delay may be at most %d ms", maxEventDelay.Milliseconds()), false
	}
	return ms, true, httpapi.Response{}, true
}

// schedule stores a delayed event for a member of the room. A /send
// retried with the same transaction ID (txnID; "" for state, which has
// none) answers the delay it scheduled the first time, as a send answers
// its event: a client retrying after a lost answer schedules nothing new.
func (de *delayedEvents) schedule(r *http.Request, dev *httpapi.Device, roomID, typ string, stateKey *string, content []byte, ms int64, txnID string) httpapi.Response {
	m, err := de.rs.Membership(r.Context(), roomID, dev.UserID)
	if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.InternalError(r, err)
	}
	if m != "join" {
		return httpapi.Forbidden("you are not a member of room %s", roomID)
	}
	now := time.Now().UnixMilli()
	d := &storage.DelayedEvent{DelayID: "syd" + rand.Text(), UserID: dev.UserID, DeviceID: dev.DeviceID, RoomID: roomID, Type: typ,
		StateKey: stateKey, Content: content, DelayMS: ms, RunningSince: now, SendAt: now + ms}
	scope := "delayed:" + roomID
	err = de.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		if txnID != "" {
			if id, err := storage.GetTxn(r.Context(), tx, dev.UserID, dev.DeviceID, scope, txnID); err == nil {
				d.DelayID = id
				return errRepeated
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			if err := storage.PutTxn(r.Context(), tx, dev.UserID, dev.DeviceID, scope, txnID, d.DelayID, now); err != nil {
				return err
			}
		}
		return storage.InsertDelayedEvent(r.Context(), tx, d)
	})
	if err != nil && txnID != "" && storage.IsUniqueViolation(err) {
		// A concurrent retry recorded the transaction ID first.
		if id, gerr := storage.GetTxn(r.Context(), de.db, dev.UserID, dev.DeviceID, scope, txnID); gerr == nil {
			d.DelayID, err = id, errRepeated
		}
	}
	if errors.Is(err, errRepeated) {
		return httpapi.JSON(200, map[string]string{"delay_id": d.DelayID})
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	de.poke()
	return httpapi.JSON(200, map[string]string{"delay_id": d.DelayID})
}

// GET /unstable/org.matrix.msc4140/delayed_events: the user's scheduled
// events.
func (de *delayedEvents) list(r *http.Request, dev *httpapi.Device) httpapi.Response {
	evs, err := storage.DelayedEventsOf(r.Context(), de.db, dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	out := make([]map[string]any, 0, len(evs))
	for _, d := range evs {
		e := map[string]any{"delay_id": d.DelayID, "room_id": d.RoomID, "type": d.Type, "delay": d.DelayMS,
			"running_since": d.RunningSince, "content": d.Content}
		if d.StateKey != nil {
			e["state_key"] = *d.StateKey
		}
		out = append(out, e)
	}
	return httpapi.JSON(200, map[string]any{"delayed_events": out})
}

// POST /delayed_events/{delayId} with {"action": ...}, or the action as
// the last path segment (the MSC's later shape).
func (de *delayedEvents) update(action string) authedHandler {
	return func(r *http.Request, dev *httpapi.Device) httpapi.Response {
		act := action
		if act == "" {
			var body struct {
				Action *string `json:"action"`
			}
			if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
				return resp
			}
			if body.Action == nil {
				return httpapi.MissingParam("action is required")
			}
			act = *body.Action
		}
		if act != "cancel" && act != "restart" && act != "send" {
			return httpapi.InvalidParam("action must be cancel, restart or send")
		}
		id := httpapi.Vars(r)["delayId"]
		d, err := storage.GetDelayedEvent(r.Context(), de.db, id)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && d.UserID != dev.UserID) {
			return httpapi.NotFound("no delayed event %s", id)
		} else if err != nil {
			return httpapi.InternalError(r, err)
		}
		switch act {
		case "cancel":
			if _, err := storage.DeleteDelayedEvent(r.Context(), de.db, id); err != nil {
				return httpapi.InternalError(r, err)
			}
		case "restart":
			if _, err := storage.RestartDelayedEvent(r.Context(), de.db, id, time.Now().UnixMilli()); err != nil {
				return httpapi.InternalError(r, err)
			}
		case "send":
			if err := de.sendNow(r.Context(), d); err != nil {
				return roomError(r, err)
			}
		}
		return httpapi.JSON(200, struct{}{})
	}
}

// sendNow sends a scheduled event if it is still scheduled: deleting the
// row first makes the loop and a client's "send" race to one event.
func (de *delayedEvents) sendNow(ctx context.Context, d *storage.DelayedEvent) error {
	deleted, err := storage.DeleteDelayedEvent(ctx, de.db, d.DelayID)
	if err != nil || !deleted {
		return err
	}
	_, err = de.rs.SendEvent(ctx, roomserver.SendRequest{RoomID: d.RoomID, Sender: d.UserID, Type: d.Type, StateKey: d.StateKey, Content: d.Content})
	return err
}

// stateSet cancels the scheduled events a state event just set replaces.
func (de *delayedEvents) stateSet(ctx context.Context, roomID, typ, stateKey string) {
	if err := storage.CancelDelayedState(ctx, de.db, roomID, typ, stateKey); err != nil {
		logrus.WithError(err).Warn("delayed events: cancelling superseded state")
	}
}

// delayedIdle is the longest the loop sleeps without news.
const delayedIdle = time.Minute

// StartDelayedEvents runs the loop that sends delayed events when due
// (those that fell due while the server was down go at once); stop ends
// it.
func (a *API) StartDelayedEvents() (stop func()) {
	de := a.delayed
	done := make(chan struct{})
	go func() {
		for {
			wait := de.sendDue()
			t := time.NewTimer(wait)
			select {
			case <-done:
				t.Stop()
				return
			case <-de.wake:
			case <-t.C:
			}
			t.Stop()
		}
	}()
	return func() { close(done) }
}

// sendDue sends the events due now and returns how long to sleep.
func (de *delayedEvents) sendDue() time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	due, err := storage.DueDelayedEvents(ctx, de.db, time.Now().UnixMilli(), 100)
	if err != nil {
		logrus.WithError(err).Warn("delayed events: listing due events")
		return time.Second
	}
	for i := range due {
		if err := de.sendNow(ctx, &due[i]); err != nil {
			// Not allowed any more (left, lost power): dropped, as a
			// client's own send would have failed.
			logrus.WithError(err).WithField("delay_id", due[i].DelayID).Info("delayed events: not sent")
		}
	}
	if len(due) == 100 {
		return 0
	}
	next, ok, err := storage.NextDelayedEventAt(ctx, de.db)
	if err != nil {
		return time.Second
	}
	if !ok {
		return delayedIdle
	}
	return max(0, min(delayedIdle, time.Until(time.UnixMilli(next))))
}
