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
			ok, err := s.storeHistoryEvent(ctx, tx, origin, h, roomID, ev, next, earliestSnap)
			if err != nil {
				return err
			}
			if ok {
				next--
				stored++
			}
		}
		return nil
	})
	return stored, err
}

// storeHistoryEvent stores one event fetched with /backfill at pos, on
// the snapshot snap, if it is not in our timeline yet and passes the auth
// rules against its own auth events (fetched from origin if needed). It
// reports whether it was stored.
func (s *RoomServer) storeHistoryEvent(ctx context.Context, tx *storage.Tx, origin spec.ServerName, h *roomHead, roomID string, ev gomatrixserverlib.PDU, pos, snap int64) (bool, error) {
	if ev.RoomID().String() != roomID || ev.Version() != h.version.Version() {
		return false, nil
	}
	if old, err := storage.GetEvent(ctx, tx, ev.EventID()); err == nil && !old.Outlier {
		return false, nil
	}
	authState, err := s.authStateFor(ctx, origin, h, ev)
	if err != nil || checkAllowed(ev, authState) != nil {
		return false, nil
	}
	se := &storage.Event{
		StreamPos: pos, EventID: ev.EventID(), RoomID: roomID, RoomVersion: string(h.version.Version()), Type: ev.Type(), StateKey: ev.StateKey(),
		Sender: string(ev.SenderID()), Depth: ev.Depth(), OriginTS: int64(ev.OriginServerTS()), ReceivedTS: time.Now().UnixMilli(),
		JSON: ev.JSON(), SnapshotBefore: snap, SnapshotAfter: snap,
	}
	if ev.Type() == spec.MRoomMember {
		se.Membership, _ = ev.Membership()
	}
	ok, err := storage.InsertEvent(ctx, tx, se)
	if err != nil {
		return false, err
	}
	if !ok {
		if err := storage.PromoteOutlier(ctx, tx, se); err != nil {
			return false, err
		}
	}
	return true, nil
}

// FillGap stores events fetched with /backfill for the hole below the
// event gapEvent (storage.Gap): newest first, they take the positions set
// aside below it, so /messages pages through them in order. The hole
// moves down past them and is closed once they lead only to events we
// hold, when nothing new came, or when its positions run out. Like
// backfilled history they do not change the room's current state; they
// are placed on the state before the event above the hole.
func (s *RoomServer) FillGap(ctx context.Context, origin spec.ServerName, roomID, gapEvent string, pdus []gomatrixserverlib.PDU) (int, error) {
	unlock := s.lock(roomID)
	defer unlock()
	h, err := s.head(ctx, roomID)
	if err != nil {
		return 0, err
	}
	g, err := storage.GetGap(ctx, s.db, roomID, gapEvent)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	above, err := storage.GetEvent(ctx, s.db, gapEvent)
	if errors.Is(err, storage.ErrNotFound) {
		g.PrevIDs = nil // the event above went (retention): so does the hole
		return 0, storage.UpdateGap(ctx, s.db, g)
	} else if err != nil {
		return 0, err
	}
	sorted := append([]gomatrixserverlib.PDU(nil), pdus...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Depth() > sorted[j].Depth() })
	stored := 0
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var got []gomatrixserverlib.PDU
		for _, ev := range sorted {
			if g.NextPos < g.FloorPos {
				break
			}
			ok, err := s.storeHistoryEvent(ctx, tx, origin, h, roomID, ev, g.NextPos, above.SnapshotBefore)
			if err != nil {
				return err
			}
			if ok {
				got = append(got, ev)
				g.NextPos--
				stored++
			}
		}
		// The hole now ends at the prev events of what came that we
		// still lack.
		var lacking []string
		if len(got) > 0 {
			var prevs []string
			for _, ev := range got {
				prevs = append(prevs, ev.PrevEventIDs()...)
			}
			have, err := storage.GetEvents(ctx, tx, prevs)
			if err != nil {
				return err
			}
			held := map[string]bool{}
			for _, e := range have {
				if !e.Outlier && !e.Rejected {
					held[e.EventID] = true
				}
			}
			seen := map[string]bool{}
			for _, p := range prevs {
				if !held[p] && !seen[p] {
					seen[p] = true
					lacking = append(lacking, p)
				}
			}
		}
		g.PrevIDs = lacking
		return storage.UpdateGap(ctx, tx, g)
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
