package roomserver

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/storage"
)

// backfillMu serialises the allocation of backfill positions.
var backfillMu sync.Mutex

// StoreBackfilled keeps history fetched with /backfill: events older than
// anything we hold. They take negative stream positions, below every
// existing event, so /messages pages back into them while /sync (which
// only moves forward from non-negative tokens) never replays them. They do
// not change the room's extremities or current state. Each must pass the
// auth rules against its own auth events (fetched if needed); the state
// before them is taken as the state at the earliest event we already had.
func (s *RoomServer) StoreBackfilled(ctx context.Context, origin spec.ServerName, roomID string, pdus []gomatrixserverlib.PDU) (int, error) {
	unlock := s.lock(roomID)
	defer unlock()
	h, err := s.head(ctx, roomID)
	if err != nil {
		return 0, err
	}
	backfillMu.Lock()
	defer backfillMu.Unlock()
	_, _, earliestSnap, err := storage.EarliestTimelineEvent(ctx, s.db, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	minPos, err := storage.MinEventPos(ctx, s.db)
	if err != nil {
		return 0, err
	}
	next := min(minPos, 0) - 1
	// Newest first: each gets a lower position than the one after it.
	sorted := append([]gomatrixserverlib.PDU(nil), pdus...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Depth() > sorted[j].Depth() })
	stored := 0
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, ev := range sorted {
			if ev.RoomID().String() != roomID || ev.Version() != h.version.Version() {
				continue
			}
			if old, err := storage.GetEvent(ctx, tx, ev.EventID()); err == nil && !old.Outlier {
				continue
			}
			authState, err := s.authStateFor(ctx, origin, h, ev)
			if err != nil || checkAllowed(ev, authState) != nil {
				continue
			}
			se := &storage.Event{
				StreamPos: next, EventID: ev.EventID(), RoomID: roomID, RoomVersion: string(h.version.Version()), Type: ev.Type(), StateKey: ev.StateKey(),
				Sender: string(ev.SenderID()), Depth: ev.Depth(), OriginTS: int64(ev.OriginServerTS()), ReceivedTS: time.Now().UnixMilli(),
				JSON: ev.JSON(), SnapshotBefore: earliestSnap, SnapshotAfter: earliestSnap,
			}
			if ev.Type() == spec.MRoomMember {
				se.Membership, _ = ev.Membership()
			}
			ok, err := storage.InsertEvent(ctx, tx, se)
			if err != nil {
				return err
			}
			if !ok {
				if err := storage.PromoteOutlier(ctx, tx, se); err != nil {
					return err
				}
			}
			next--
			stored++
		}
		return nil
	})
	return stored, err
}

// EarliestEvents returns the prev events of the room's oldest timeline
// event that we do not hold: where a /backfill request starts.
func (s *RoomServer) EarliestEvents(ctx context.Context, roomID string) ([]string, error) {
	id, _, _, err := storage.EarliestTimelineEvent(ctx, s.db, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	evs, err := s.Events(ctx, []string{id})
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	prev := evs[0].PrevEventIDs()
	_, missing, err := s.timelineEvents(ctx, prev)
	return missing, err
}
