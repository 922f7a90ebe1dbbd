package clientapi

// Room writes from clients: sending messages and state, and redacting.
// Every write goes through the room server (rooms.sendEvent).

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

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
	if typ == "m.room.create" {
		// Before the unchanged-state shortcut: a room has one create event
		// (from v12 its hash is the room ID, MSC4291).
		return httpapi.BadJSON("a room has exactly one m.room.create event, sent when it is created")
	}
	if typ == "m.room.canonical_alias" {
		if resp, ok := rm.checkCanonicalAlias(r, roomID, content); !ok {
			return resp
		}
	}
	if ms, set, resp, ok := delayOf(r); !ok {
		return resp
	} else if set {
		return rm.delayed.schedule(r, dev, roomID, typ, &key, content, ms, "")
	}
	if dev.ShadowBanned {
		return fakeSend()
	}
	if id, ok := rm.sameState(r, roomID, dev.UserID, typ, key, content); ok {
		return httpapi.JSON(200, map[string]string{"event_id": id})
	}
	ts, resp, ok := massagedTS(r, dev)
	if !ok {
		return resp
	}
	ev, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: dev.UserID, Type: typ, StateKey: &key, Content: content, TS: ts})
	if !ok {
		return resp
	}
	rm.delayed.stateSet(r.Context(), roomID, typ, key)
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
	ts, resp, ok := massagedTS(r, dev)
	if !ok {
		return resp
	}
	v := httpapi.Vars(r)
	if dev.ShadowBanned {
		return fakeSend()
	}
	if ms, set, resp, ok := delayOf(r); !ok {
		return resp
	} else if set {
		return rm.delayed.schedule(r, dev, roomID, v["eventType"], nil, content, ms, v["txnId"])
	}
	ev, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: dev.UserID, Type: v["eventType"], Content: content, TxnID: v["txnId"], DeviceID: dev.DeviceID, TS: ts})
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
	if errors.Is(err, storage.ErrNotFound) {
		// An event we do not have (a remote one not fetched yet) may be
		// redacted by whoever may redact others' events: the redaction is
		// sent on, and applied here if the event arrives later.
		if st, serr := rm.rs.CurrentState(r.Context(), roomID); serr != nil || roomserver.PowerLevel(st, dev.UserID) < roomserver.PowerLevels(st).Redact {
			return httpapi.NotFound("event not found")
		}
	} else if err == nil && target.RoomID != roomID {
		return httpapi.NotFound("event not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if dev.ShadowBanned {
		return fakeSend()
	}
	content, _ := json.Marshal(body)
	ev, resp, ok := rm.sendEvent(r, roomserver.SendRequest{RoomID: roomID, Sender: dev.UserID, Type: "m.room.redaction", Redacts: v["eventId"], Content: content, TxnID: "redact:" + v["txnId"], DeviceID: dev.DeviceID})
	if !ok {
		return resp
	}
	return httpapi.JSON(200, map[string]string{"event_id": ev.EventID})
}

// checkCanonicalAlias applies the spec's rules for m.room.canonical_alias:
// an alias that is not one is M_INVALID_PARAM, one that does not point to
// this room (missing, deleted, another room's) is M_BAD_ALIAS. The empty
// content (no alias) is how a canonical alias is removed.
func (rm *rooms) checkCanonicalAlias(r *http.Request, roomID string, content json.RawMessage) (httpapi.Response, bool) {
	var c struct {
		Alias      *json.RawMessage  `json:"alias"`
		AltAliases []json.RawMessage `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return httpapi.InvalidParam("alt_aliases must be a list of aliases"), false
	}
	var aliases []string
	for _, raw := range append([]json.RawMessage{derefRaw(c.Alias)}, c.AltAliases...) {
		if raw == nil {
			continue
		}
		var al string
		if err := json.Unmarshal(raw, &al); err != nil || !validAlias(al) {
			return httpapi.InvalidParam("%s is not a room alias", raw), false
		}
		aliases = append(aliases, al)
	}
	for _, al := range aliases {
		if id, _, err := storage.GetAlias(r.Context(), rm.db, al); errors.Is(err, storage.ErrNotFound) || (err == nil && id != roomID) {
			return httpapi.Errf(http.StatusBadRequest, "M_BAD_ALIAS", "alias %s does not point to this room", al), false
		} else if err != nil {
			return httpapi.InternalError(r, err), false
		}
	}
	return httpapi.Response{}, true
}

func derefRaw(p *json.RawMessage) json.RawMessage {
	if p == nil || string(*p) == "null" {
		return nil
	}
	return *p
}

// validAlias is the spec's room alias grammar: #localpart:server, both
// parts non-empty, at most 255 bytes.
func validAlias(al string) bool {
	local, server, ok := strings.Cut(strings.TrimPrefix(al, "#"), ":")
	return ok && strings.HasPrefix(al, "#") && local != "" && server != "" && len(al) <= 255
}

// sameState returns the current state event when the sender sets it to
// exactly the content it already has: the spec makes that a no-op
// answering the existing event ID (clients re-send state they read, and
// an identical event would only add noise to every member's timeline).
func (rm *rooms) sameState(r *http.Request, roomID, sender, typ, key string, content json.RawMessage) (string, bool) {
	st, err := rm.rs.CurrentState(r.Context(), roomID)
	if err != nil {
		return "", false // the send answers the error
	}
	cur := st.Get(typ, key)
	if cur == nil || string(cur.SenderID()) != sender || st.Membership(sender) != "join" {
		return "", false
	}
	a, errA := gomatrixserverlib.CanonicalJSON(cur.Content())
	b, errB := gomatrixserverlib.CanonicalJSON(content)
	if errA != nil || errB != nil || string(a) != string(b) {
		return "", false
	}
	return cur.EventID(), true
}

// fakeSend answers a shadow-banned user's send as a real one would, with
// an event ID that names nothing: nothing is stored, relayed or audited
// as sent, so the user cannot tell and no one else sees it.
func fakeSend() httpapi.Response {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return httpapi.JSON(200, map[string]string{"event_id": "$" + base64.RawURLEncoding.EncodeToString(b)})
}
