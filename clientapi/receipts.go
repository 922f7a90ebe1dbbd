package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"enclave/internal/httpapi"
	"enclave/storage"
)

// receiptEvent loads the receipted event, which must be a timeline event
// of the room.
func (eg *events) receiptEvent(ctx context.Context, roomID, eventID string) (*storage.Event, httpapi.Response, bool) {
	ev, err := storage.GetEvent(ctx, eg.db, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (ev.RoomID != roomID || ev.StreamPos == 0)) {
		return nil, httpapi.NotFound("event %s not found in room", eventID), false
	} else if err != nil {
		return nil, httpapi.InternalError(nil, err), false
	}
	return ev, httpapi.Response{}, true
}

// validThreadID accepts "main" and event IDs.
func validThreadID(s string) bool { return s == "main" || (len(s) > 1 && s[0] == '$') }

func (eg *events) postReceipt(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	v := httpapi.Vars(r)
	typ := v["receiptType"]
	if typ != storage.ReceiptRead && typ != storage.ReceiptReadPrivate && typ != fullyReadType {
		return httpapi.InvalidParam("unknown receipt type %q", typ)
	}
	var body map[string]json.RawMessage
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	thread := ""
	if raw, present := body["thread_id"]; present {
		if typ == fullyReadType {
			return httpapi.InvalidParam("m.fully_read cannot have a thread_id")
		}
		if err := json.Unmarshal(raw, &thread); err != nil || !validThreadID(thread) {
			return httpapi.InvalidParam("thread_id must be \"main\" or a thread root's event ID")
		}
	}
	if resp, ok := eg.requireJoined(r, roomID, dev.UserID); !ok {
		return resp
	}
	ev, resp, ok := eg.receiptEvent(r.Context(), roomID, v["eventId"])
	if !ok {
		return resp
	}
	err := eg.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		return eg.storeMarker(r.Context(), tx, dev.UserID, roomID, typ, thread, ev)
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if eg.ephemeral != nil {
		eg.ephemeral.ReceiptChanged()
	}
	return httpapi.JSON(200, map[string]any{})
}

// storeMarker records one receipt or the fully-read marker inside tx and
// wakes who should hear: the room for m.read, only the user otherwise.
func (eg *events) storeMarker(ctx context.Context, tx *storage.Tx, userID, roomID, typ, thread string, ev *storage.Event) error {
	if typ == fullyReadType {
		content, _ := json.Marshal(map[string]string{"event_id": ev.EventID})
		pos, err := storage.PutAccountData(ctx, tx, userID, roomID, fullyReadType, content)
		if err != nil {
			return err
		}
		tx.Publish(pos, func() { eg.sync.NotifyUsers(userID) })
		return nil
	}
	rec := &storage.Receipt{RoomID: roomID, Type: typ, UserID: userID, ThreadID: thread, EventID: ev.EventID, EventPos: ev.StreamPos, TS: time.Now().UnixMilli()}
	stored, err := storage.PutReceipt(ctx, tx, rec)
	if err != nil || !stored {
		return err
	}
	if typ == storage.ReceiptRead {
		tx.Publish(rec.StreamPos, func() { eg.sync.NotifyRoom(roomID) })
	} else {
		tx.Publish(rec.StreamPos, func() { eg.sync.NotifyUsers(userID) })
	}
	return nil
}

func (eg *events) postReadMarkers(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	var body map[string]*string
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if resp, ok := eg.requireJoined(r, roomID, dev.UserID); !ok {
		return resp
	}
	type marker struct {
		typ string
		ev  *storage.Event
	}
	var markers []marker
	for _, typ := range []string{fullyReadType, storage.ReceiptRead, storage.ReceiptReadPrivate} {
		id := body[typ]
		if id == nil {
			continue
		}
		ev, resp, ok := eg.receiptEvent(r.Context(), roomID, *id)
		if !ok {
			return resp
		}
		markers = append(markers, marker{typ, ev})
	}
	err := eg.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		for _, m := range markers {
			if err := eg.storeMarker(r.Context(), tx, dev.UserID, roomID, m.typ, "", m.ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if eg.ephemeral != nil {
		eg.ephemeral.ReceiptChanged()
	}
	return httpapi.JSON(200, map[string]any{})
}
