package auditapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/storage"
)

// ImportSourceField is the content key under which an imported event
// carries its source (importer package).
const ImportSourceField = "gov.enclave.import.source"

var importSourceKey = []byte(`"` + ImportSourceField + `"`)

// EventHook returns the room server hook (roomserver.Hook) that records
// every stored event — local or received over federation — in the event's
// own transaction: room creation, membership changes, power levels, other
// state, redactions and messages.
//
// Message entries carry the event ID, room, sender, type, content size and
// the SHA-256 of the content bytes (for m.room.encrypted, of the
// ciphertext): never the content itself, in encrypted and unencrypted
// rooms alike.
func (l *Log) EventHook() func(ctx context.Context, tx *storage.Tx, ev *storage.Event, pdu gomatrixserverlib.PDU) error {
	suffix := ":" + l.opts.ServerName
	return func(ctx context.Context, tx *storage.Tx, ev *storage.Event, pdu gomatrixserverlib.PDU) error {
		content := []byte(pdu.Content())
		sum := sha256.Sum256(content)
		details := map[string]any{
			"event_id":       ev.EventID,
			"type":           ev.Type,
			"size":           len(content),
			"content_sha256": hex.EncodeToString(sum[:]),
		}
		if ev.Outlier {
			details["outlier"] = true
		}
		// Imported history names its source (platform, workspace,
		// channel, message ID, original time, import ID) in its audit
		// entry too: chain of custody from the export to the event.
		if bytes.Contains(content, importSourceKey) {
			var c map[string]json.RawMessage
			if json.Unmarshal(content, &c) == nil && len(c[ImportSourceField]) > 0 {
				var src map[string]any
				if json.Unmarshal(c[ImportSourceField], &src) == nil {
					details["import"] = src
				}
			}
		}
		e := Entry{
			Actor:   Actor{UserID: ev.Sender},
			RoomID:  ev.RoomID,
			Target:  ev.EventID,
			Details: details,
			Outcome: OutcomeSuccess,
		}
		switch {
		case ev.Rejected:
			e.Outcome = "rejected"
		case ev.SoftFailed:
			e.Outcome = "soft_failed"
		}
		if !strings.HasSuffix(ev.Sender, suffix) {
			if _, domain, err := gomatrixserverlib.SplitID('@', ev.Sender); err == nil {
				e.Actor.Server = string(domain)
			}
		} else if ev.TxnDevice != "" {
			e.Actor.DeviceID = ev.TxnDevice
		}
		// The authenticated requester, when someone else acts through the
		// server (admin API, server notices), is kept alongside the sender.
		if ca, ok := ActorFrom(ctx); ok && ca.UserID != "" && ca.UserID != ev.Sender {
			details["requested_by"] = ca.UserID
		}
		if sk := ev.StateKey; sk != nil {
			details["state_key"] = *sk
			switch ev.Type {
			case "m.room.create":
				e.Action = ActionRoomCreate
				e.Target = ev.RoomID
				var c struct {
					RoomVersion string `json:"room_version"`
					Type        string `json:"type"`
				}
				_ = json.Unmarshal(content, &c)
				details["room_version"] = c.RoomVersion
				if c.Type != "" {
					details["room_type"] = c.Type
				}
			case "m.room.member":
				e.Target = *sk
				details["membership"] = ev.Membership
				action, err := membershipAction(ctx, tx, ev)
				if err != nil {
					return err
				}
				e.Action = action
			case "m.room.power_levels":
				e.Action = ActionPowerLevels
				e.Target = ev.RoomID
				// Power levels are plain room state (never encrypted) and the
				// point of auditing them is who got which level.
				var pl map[string]any
				if json.Unmarshal(content, &pl) == nil {
					details["content"] = pl
				}
			default:
				e.Action = ActionRoomState
				e.Target = ev.Type + "|" + *sk
			}
		} else if ev.Type == "m.room.redaction" {
			e.Action = ActionRedaction
			var c struct {
				Redacts string `json:"redacts"`
			}
			_ = json.Unmarshal(content, &c)
			if r := pdu.Redacts(); r != "" {
				c.Redacts = r
			}
			details["redacts"] = c.Redacts
			e.Target = c.Redacts
		} else {
			e.Action = ActionMessage
		}
		return l.Record(ctx, tx, e)
	}
}

// membershipAction names a membership change, telling kicks from leaves
// and unbans from kicks by the previous membership.
func membershipAction(ctx context.Context, tx *storage.Tx, ev *storage.Event) (string, error) {
	self := ev.StateKey != nil && *ev.StateKey == ev.Sender
	switch ev.Membership {
	case "invite":
		return ActionInvite, nil
	case "join":
		return ActionJoin, nil
	case "ban":
		return ActionBan, nil
	case "knock":
		return ActionKnock, nil
	case "leave":
		if self {
			return ActionLeave, nil
		}
		if ev.StreamPos <= 1 {
			return ActionKick, nil
		}
		// The event itself is already inserted at StreamPos: look below it.
		prev, err := storage.LatestMembershipBefore(ctx, tx, ev.RoomID, *ev.StateKey, ev.StreamPos-1)
		if errors.Is(err, storage.ErrNotFound) {
			return ActionKick, nil
		}
		if err != nil {
			return "", err
		}
		if prev.Membership == "ban" {
			return ActionUnban, nil
		}
		return ActionKick, nil
	}
	return ActionRoomState, nil
}
