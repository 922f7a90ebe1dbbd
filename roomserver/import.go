package roomserver

import (
	"context"
	"time"

	"enclave/storage"
)

// ImportEvents stores n requests, in order, as one chain of local events on the
// room's tip, in one transaction: the importer's batch path (one commit per
// few hundred messages instead of one per message is what makes a large
// export import at thousands of messages a second). Each event is built on
// the previous one, authorised against the state it extends, and goes
// through every hook (audit, index, federation and appservice queues) like
// a send; inTx runs after each event inside the same transaction, so the
// importer's record of the source message commits with the event or not
// at all. An auth failure rolls the whole batch back.
//
// next builds the i-th request when its turn comes, so a request may name
// an event stored earlier in the same batch (a reaction, a thread reply).
func (s *RoomServer) ImportEvents(ctx context.Context, roomID string, n int, next func(i int) (SendRequest, error), inTx func(tx *storage.Tx, i int, ev *storage.Event) error) ([]*storage.Event, error) {
	unlock := s.lock(roomID)
	defer unlock()
	h, err := s.head(ctx, roomID)
	if err != nil {
		return nil, err
	}
	out := make([]*storage.Event, 0, n)
	var tip *roomHead
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		out = out[:0]
		cur := h
		for i := 0; i < n; i++ {
			req, err := next(i)
			if err != nil {
				return err
			}
			req.RoomID = roomID
			prev := cur.extremities
			if len(prev) > maxPrevEvents {
				prev = prev[len(prev)-maxPrevEvents:]
			}
			at := time.Now()
			if req.TS > 0 {
				at = time.UnixMilli(req.TS)
			}
			ev, err := s.build(cur.version, roomID, cur.state, prev, cur.maxDepth+1, req, at)
			if err != nil {
				return err
			}
			if err := checkAllowed(ev, cur.state); err != nil {
				return err
			}
			stored, nh, err := s.appendLocal(ctx, tx, roomID, cur, ev, req)
			if err != nil {
				return err
			}
			if inTx != nil {
				if err := inTx(tx, i, stored); err != nil {
					return err
				}
			}
			out = append(out, stored)
			cur = nh
		}
		tip = cur
		if len(out) == 0 {
			return nil
		}
		return storage.UpdateRoomHead(ctx, tx, roomID, cur.extremities, cur.snapshot, cur.maxDepth, out[len(out)-1].StreamPos)
	})
	if err != nil {
		return nil, err
	}
	s.setHead(roomID, tip)
	return out, nil
}
