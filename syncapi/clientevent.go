package syncapi

import (
	"encoding/json"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/storage"
)

// ClientEvent is an event in the Client-Server API format.
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

// Viewer is who an event is formatted for: their own device sees the
// transaction ID of its sends.
type Viewer struct {
	UserID   string
	DeviceID string
	// Memberships, when set, adds unsigned.membership (MSC4115) to each
	// event: the viewer's membership at it ("leave" when none).
	Memberships Memberships
}

// FormatEvent renders a stored event for a client. withRoomID is false
// inside /sync's per-room sections.
func FormatEvent(ev *storage.Event, pdu gomatrixserverlib.PDU, v Viewer, withRoomID bool) ClientEvent {
	ce := ClientEvent{
		Content:        json.RawMessage(pdu.Content()),
		EventID:        ev.EventID,
		OriginServerTS: ev.OriginTS,
		Sender:         ev.Sender,
		StateKey:       ev.StateKey,
		Type:           ev.Type,
	}
	if len(ce.Content) == 0 {
		ce.Content = json.RawMessage("{}")
	}
	if withRoomID {
		ce.RoomID = ev.RoomID
	}
	if ev.Type == "m.room.redaction" {
		ce.Redacts = pdu.Redacts()
		if ce.Redacts == "" {
			var c struct {
				Redacts string `json:"redacts"`
			}
			_ = json.Unmarshal(pdu.Content(), &c)
			ce.Redacts = c.Redacts
		}
	}
	u := map[string]any{}
	if un := pdu.Unsigned(); len(un) > 0 {
		_ = json.Unmarshal(un, &u)
	}
	if age := time.Now().UnixMilli() - ev.OriginTS; age >= 0 {
		u["age"] = age
	}
	if ev.TxnID != "" && ev.Sender == v.UserID && ev.TxnDevice == v.DeviceID {
		u["transaction_id"] = ev.TxnID
	}
	if ev.Redacted && ev.RedactedBecause != "" {
		u["redacted_because"] = map[string]any{"event_id": ev.RedactedBecause, "type": "m.room.redaction", "content": map[string]any{}}
	}
	if v.Memberships != nil {
		m := v.Memberships[ev.EventID]
		if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == v.UserID {
			m, _ = pdu.Membership() // after their own membership event
		}
		if m == "" {
			m = "leave"
		}
		u["membership"] = m
	}
	if len(u) > 0 {
		ce.Unsigned = u
	}
	return ce
}

// StrippedEvent is the stripped state shown with invites. The invite
// itself also carries its event ID and timestamp (as other servers send
// it): clients date the invite by them.
type StrippedEvent struct {
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	StateKey       string          `json:"state_key"`
	Type           string          `json:"type"`
	EventID        string          `json:"event_id,omitempty"`
	OriginServerTS int64           `json:"origin_server_ts,omitempty"`
	RoomID         string          `json:"room_id,omitempty"`
}
