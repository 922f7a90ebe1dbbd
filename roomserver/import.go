package roomserver

import (
	"context"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/storage"
)

// ImportEvents stores n requests, in order, as one chain of local events
// on the room's tip, in one transaction: the importer's batch path (one
// commit per few hundred messages instead of one per message is what
// makes a large export import at thousands of messages a second). Each
// event is built on the previous one, authorised against the state it
// extends, and goes through every hook (audit, index, federation and
// appservice queues) like a send; inTx runs after each event inside the
// same transaction, so the importer's record of the source message
// commits with the event or not at all. An auth failure rolls the whole
// batch back.
//
// Events are built and signed on one goroutine while the previous ones
// are written on the caller's: hashing and signing take about as long
// as storing, and a host has more than one core. next(i, prevID) is
// called in order on the building goroutine, with prevID the ID of
// request i-1 as built ("" for the first), so a request may name an
// event of the same batch (a reaction, a thread reply).
func (s *RoomServer) ImportEvents(ctx context.Context, roomID string, n int, next func(i int, prevID string) (SendRequest, error), inTx func(tx *storage.Tx, i int, ev *storage.Event) error) ([]*storage.Event, error) {
	unlock := s.lock(roomID)
	defer unlock()
	h, err := s.head(ctx, roomID)
	if err != nil {
		return nil, err
	}
	type built struct {
		ev  gomatrixserverlib.PDU
		req SendRequest
		err error
	}
	stop := make(chan struct{})
	defer close(stop)
	evs := make(chan built, 64)
	go func() {
		defer close(evs)
		state, prev, depth := h.state, h.extremities, h.maxDepth
		prevID := ""
		for i := 0; i < n; i++ {
			b := built{}
			b.req, b.err = next(i, prevID)
			if b.err == nil {
				b.req.RoomID = roomID
				if len(prev) > maxPrevEvents {
					prev = prev[len(prev)-maxPrevEvents:]
				}
				at := time.Now()
				if b.req.TS > 0 {
					at = time.UnixMilli(b.req.TS)
				}
				b.ev, b.err = s.build(h.version, roomID, state, prev, depth+1, b.req, at)
			}
			if b.err == nil {
				b.err = checkAllowed(b.ev, state)
			}
			if b.err == nil {
				if sk := b.ev.StateKey(); sk != nil {
					ns := make(StateMap, len(state)+1)
					for k, v := range state {
						ns[k] = v
					}
					ns[StateKey{b.ev.Type(), *sk}] = b.ev
					state = ns
				}
				prevID = b.ev.EventID()
				prev, depth = []string{prevID}, max(depth, b.ev.Depth())
			}
			select {
			case evs <- b:
			case <-stop:
				return
			}
			if b.err != nil {
				return
			}
		}
	}()
	out := make([]*storage.Event, 0, n)
	var tip *roomHead
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		cur := h
		i := 0
		for b := range evs {
			if b.err != nil {
				return b.err
			}
			stored, nh, err := s.appendLocal(ctx, tx, roomID, cur, b.ev, b.req)
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
			i++
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
