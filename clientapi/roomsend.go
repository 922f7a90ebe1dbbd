package clientapi

// Room writes from clients: sending messages and state, and redacting.
// Every write goes through the room server (rooms.sendEvent).

import (
	"encoding/json"
	"errors"
	"net/http"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

func (rm *rooms) putState(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	content, resp, ok := httpapi.ReadJSONObject(r)
	if !ok {
		return resp
	}
	v := httpapi.Vars(r)
	typ, key := v["eventType"], v["stateKey"]
	if typ == "m.room.canonical_alias" {
		var c struct {
			Alias      string   `json:"alias"`
			AltAliases []string `json:"alt_aliases"`
		}
		if err := json.Unmarshal(content, &c); err != nil {
			return httpapi.BadJSON("invalid m.room.canonical_alias content")
		}
		for _, al := range append([]string{c.Alias}, c.AltAliases...) {
			if al == "" {
				continue
			}
			if id, _, err := storage.GetAlias(r.Context(), rm.db, al); err != nil || id != roomID {
				return httpapi.Errf(400, "M_BAD_ALIAS", "alias %s does not point to this room", al)
			}
		}
	}
	ev, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: dev.UserID, Type: typ, StateKey: &key, Content: content})
	if !ok {
		return resp
	}
	return httpapi.JSON(200, map[string]string{"event_id": ev.EventID})
}

func (rm *rooms) send(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	content, resp, ok := httpapi.ReadJSONObject(r)
	if !ok {
		return resp
	}
	v := httpapi.Vars(r)
	ev, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: dev.UserID, Type: v["eventType"], Content: content, TxnID: v["txnId"], DeviceID: dev.DeviceID})
	if !ok {
		return resp
	}
	return httpapi.JSON(200, map[string]string{"event_id": ev.EventID})
}

func (rm *rooms) redact(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	var body struct {
		Reason string `json:"reason,omitempty"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	v := httpapi.Vars(r)
	target, err := storage.GetEvent(r.Context(), rm.db, v["eventId"])
	if errors.Is(err, storage.ErrNotFound) || (err == nil && target.RoomID != roomID) {
		return httpapi.NotFound("event not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	content, _ := json.Marshal(body)
	ev, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: dev.UserID, Type: "m.room.redaction", Redacts: v["eventId"], Content: content, TxnID: "redact:" + v["txnId"], DeviceID: dev.DeviceID})
	if !ok {
		return resp
	}
	return httpapi.JSON(200, map[string]string{"event_id": ev.EventID})
}
