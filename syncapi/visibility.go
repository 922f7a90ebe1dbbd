package syncapi

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/storage"
)

// Visible filters events of one room down to those the room's history
// visibility lets userID read (spec: "History visibility"):
//
//   - world_readable: everyone;
//   - the user's membership at the event was join: visible;
//   - invited: also visible if the user was invited at the event;
//   - shared: also visible if the user joined at or after the event;
//   - joined: only while joined.
//
// A user always sees their own membership events. The events of an erased
// user (deactivated with erase) are redacted for a viewer who was not
// joined when they were sent, as Synapse does.
func (s *Syncer) Visible(ctx context.Context, userID, roomID string, evs []*storage.Event) ([]*storage.Event, error) {
	out, _, err := s.VisibleAt(ctx, userID, roomID, evs)
	return out, err
}

// Memberships is a viewer's membership at each event of a batch (event ID
// to membership), the unsigned.membership of MSC4115. VisibleAt derives it
// from the state it reads anyway, so it costs no query per event; an
// event it has no entry for is one the viewer was not in the room at.
type Memberships map[string]string

// VisibleAt is Visible that also answers the viewer's membership at each
// event it keeps (their own membership events are read from the event).
func (s *Syncer) VisibleAt(ctx context.Context, userID, roomID string, evs []*storage.Event) ([]*storage.Event, Memberships, error) {
	ms := Memberships{}
	out, err := s.visible(ctx, userID, roomID, evs, ms)
	return out, ms, err
}

func (s *Syncer) visible(ctx context.Context, userID, roomID string, evs []*storage.Event, ms Memberships) ([]*storage.Event, error) {
	if len(evs) == 0 {
		return evs, nil
	}
	type verdict struct{ hv, membership string }
	bySnapshot := map[int64]verdict{}
	var joins []int64
	joinsLoaded := false
	out := evs[:0:0]
	for _, ev := range evs {
		if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == userID {
			out = append(out, ev)
			continue
		}
		v, ok := bySnapshot[ev.SnapshotBefore]
		if !ok {
			v.hv = "shared"
			if hv, err := s.rs.StateEventAt(ctx, ev.SnapshotBefore, "m.room.history_visibility", ""); err != nil {
				return nil, err
			} else if hv != nil {
				var c struct {
					HV string `json:"history_visibility"`
				}
				if json.Unmarshal(hv.Content(), &c) == nil && c.HV != "" {
					v.hv = c.HV
				}
			}
			if m, err := s.rs.StateEventAt(ctx, ev.SnapshotBefore, "m.room.member", userID); err != nil {
				return nil, err
			} else if m != nil {
				v.membership, _ = m.Membership()
			}
			bySnapshot[ev.SnapshotBefore] = v
		}
		visible := v.hv == "world_readable" || v.membership == "join" || (v.hv == "invited" && v.membership == "invite")
		if !visible && v.hv == "shared" {
			if !joinsLoaded {
				var err error
				if joins, err = storage.UserJoinPositions(ctx, s.db, roomID, userID); err != nil {
					return nil, err
				}
				joinsLoaded = true
			}
			for _, p := range joins {
				if p >= ev.StreamPos {
					visible = true
					break
				}
			}
		}
		if visible && v.membership != "join" && ev.Sender != userID && !ev.Redacted {
			// An erased user's events are for those who were there.
			erased, err := storage.Erased(ctx, s.db, ev.Sender)
			if err != nil {
				return nil, err
			}
			if erased {
				if ev, err = redactedCopy(ev); err != nil {
					return nil, err
				}
			}
		}
		if visible {
			ms[ev.EventID] = v.membership
			out = append(out, ev)
		}
	}
	return out, nil
}

// redactedCopy is ev as its room version's redaction algorithm leaves it;
// the stored event is not touched.
func redactedCopy(ev *storage.Event) (*storage.Event, error) {
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(ev.RoomVersion))
	if err != nil {
		return nil, err
	}
	js, err := ver.RedactEventJSON(ev.JSON)
	if err != nil {
		return nil, err
	}
	cp := *ev
	cp.JSON, cp.Redacted = js, true
	return &cp, nil
}
