package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"enclave/storage"
)

// The room index: search text, relations and directory stats, derived
// from the events the room server stores.
//
// Search text and relations are written by a room server hook (IndexEvent),
// inside the transaction that stores each event, rather than by a
// Subscribe listener after commit: an event is then never visible without
// its relation (a client that sees a thread reply in /sync can ask
// /relations at once), a crash between commit and indexing cannot lose a
// row, and a redaction removes the text and the relation in the same
// transaction that strips the event. The cost is a few small writes
// inside each event's transaction.
//
// The directory stats are derived from current state, which the room
// server writes after its hooks have run (and, for federated events, only
// after state resolution), so the hook recomputes them right after the
// event's transaction commits, before the sending request returns. They
// are a cache of current state: rooms without a row are rebuilt by
// PrepareIndex at start.

// PrepareIndex readies the search index and rebuilds the directory stats
// of rooms created before the directory tables existed. The assembly runs
// it before the server takes requests.
func PrepareIndex(ctx context.Context, db *storage.DB) error {
	if err := storage.PrepareSearch(ctx, db); err != nil {
		return err
	}
	missing, err := storage.RoomsMissingStats(ctx, db)
	if err != nil {
		return err
	}
	for _, id := range missing {
		if err := storage.RefreshRoomStats(ctx, db, id); err != nil {
			return fmt.Errorf("room stats of %s: %w", id, err)
		}
	}
	return nil
}

// jsonString returns a content field if it is a non-empty string.
func jsonString(c map[string]json.RawMessage, key string) string {
	var s string
	if raw, ok := c[key]; ok && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

// IndexEvent is the room server hook (a Hook) that keeps the search index,
// the relations table and the directory stats in step with the room.
func IndexEvent(ctx context.Context, tx *storage.Tx, ev *storage.Event, pdu gomatrixserverlib.PDU) error {
	if ev.Outlier || ev.Rejected || ev.SoftFailed || ev.StreamPos == 0 {
		return nil
	}
	var content map[string]json.RawMessage
	_ = json.Unmarshal(pdu.Content(), &content)

	// Relations; m.relates_to stays unencrypted in encrypted rooms.
	var rel struct {
		RelType string `json:"rel_type"`
		EventID string `json:"event_id"`
		Key     string `json:"key"`
	}
	if raw, ok := content["m.relates_to"]; ok && json.Unmarshal(raw, &rel) == nil && rel.RelType != "" && rel.EventID != "" && rel.EventID != ev.EventID {
		if err := storage.InsertRelation(ctx, tx, storage.Relation{EventID: ev.EventID, RoomID: ev.RoomID, RelatesTo: rel.EventID, RelType: rel.RelType,
			Type: ev.Type, Sender: ev.Sender, StreamPos: ev.StreamPos, AggregationKey: rel.Key}); err != nil {
			return err
		}
	}

	// Search text: plaintext message bodies, room names and topics only.
	key, text := "", ""
	switch {
	case ev.Type == "m.room.message" && ev.StateKey == nil:
		key, text = "content.body", jsonString(content, "body")
	case ev.Type == "m.room.name" && ev.StateKey != nil && *ev.StateKey == "":
		key, text = "content.name", jsonString(content, "name")
	case ev.Type == "m.room.topic" && ev.StateKey != nil && *ev.StateKey == "":
		key, text = "content.topic", jsonString(content, "topic")
	}
	if text != "" {
		if err := storage.InsertSearchEntry(ctx, tx, storage.SearchEntry{EventID: ev.EventID, RoomID: ev.RoomID, Sender: ev.Sender, Key: key,
			Body: text, StreamPos: ev.StreamPos, OriginTS: ev.OriginTS}); err != nil {
			return err
		}
	}

	// Directory stats, once the new current state is committed.
	if sk := ev.StateKey; sk != nil {
		db, room := tx.DB(), ev.RoomID
		switch {
		case *sk == "" && storage.IsStatsStateType(ev.Type):
			tx.AfterCommit(func() { refreshStats(db, room, false) })
		case ev.Type == "m.room.member":
			tx.AfterCommit(func() { refreshStats(db, room, true) })
		}
	}

	// A redaction that took effect removes what the target contributed.
	if ev.Type == "m.room.redaction" {
		target := pdu.Redacts()
		if target == "" {
			target = jsonString(content, "redacts")
		}
		if target == "" {
			return nil
		}
		t, err := storage.GetEvent(ctx, tx, target)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if !t.Redacted || t.RoomID != ev.RoomID {
			return nil
		}
		if err := storage.DeleteSearchEntry(ctx, tx, target); err != nil {
			return err
		}
		if err := storage.DeleteRelation(ctx, tx, target); err != nil {
			return err
		}
		if t.StateKey != nil {
			db, room := tx.DB(), ev.RoomID
			tx.AfterCommit(func() { refreshStats(db, room, false) })
		}
	}
	return nil
}

// refreshStats recomputes a room's directory stats (only the member count
// when countOnly); a failure leaves them stale until the next change.
func refreshStats(db *storage.DB, roomID string, countOnly bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if countOnly {
		err = storage.RefreshJoinedCount(ctx, db, roomID)
	} else {
		err = storage.RefreshRoomStats(ctx, db, roomID)
	}
	if err != nil {
		logrus.WithError(err).WithField("room_id", roomID).Warn("refreshing room directory stats")
	}
}
