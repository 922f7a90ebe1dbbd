package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/storage"
)

// JoinRemoteRoom installs a room this server joins through another one:
// the state and auth chain of the send_join response (already verified by
// federation) become the state before our join event, which becomes the
// room's tip. A room we already know (e.g. we left and rejoin) has the join
// input like any other remote event instead.
func (s *RoomServer) JoinRemoteRoom(ctx context.Context, origin spec.ServerName, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU) error {
	roomID := join.RoomID().String()
	unlock := s.lock(roomID)
	defer unlock()
	if room, err := storage.GetRoom(ctx, s.db, roomID); err == nil && room.CurrentSnapshot != 0 {
		return s.inputLocked(ctx, origin, join, true)
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	ver, err := gomatrixserverlib.GetRoomVersion(join.Version())
	if err != nil {
		return err
	}
	st := StateMap{}
	for _, e := range state {
		if e.StateKey() != nil && e.RoomID().String() == roomID {
			st[StateKey{e.Type(), *e.StateKey()}] = e
		}
	}
	create := st.Get(spec.MRoomCreate, "")
	if create == nil {
		return errors.New("send_join state has no m.room.create")
	}
	if err := checkAllowed(join, st); err != nil {
		return &ErrRejected{Reason: err.Error()}
	}
	if err := s.storeOutliers(ctx, append(authChain, state...)); err != nil {
		return err
	}
	var maxDepth int64
	for _, e := range state {
		maxDepth = max(maxDepth, e.Depth())
	}
	var next *roomHead
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := storage.GetRoom(ctx, tx, roomID); errors.Is(err, storage.ErrNotFound) {
			if err := storage.InsertRoom(ctx, tx, &storage.Room{RoomID: roomID, Version: string(ver.Version()), Creator: string(create.SenderID()), CreatedTS: int64(create.OriginServerTS())}); err != nil {
				return err
			}
		}
		id, err := s.writeFullSnapshot(ctx, tx, roomID, st)
		if err != nil {
			return err
		}
		before := &roomHead{version: ver, snapshot: id, state: st, maxDepth: maxDepth}
		se, after, err := s.storeEvent(ctx, tx, roomID, before, join, false, SendRequest{})
		if err != nil {
			return err
		}
		// The whole state is new to this server's current_state.
		empty := &roomHead{version: ver, state: StateMap{}}
		if next, err = s.advanceHead(ctx, tx, roomID, empty, join, after); err != nil {
			return err
		}
		next.extremities = []string{join.EventID()}
		return storage.UpdateRoomHead(ctx, tx, roomID, next.extremities, next.snapshot, next.maxDepth, se.StreamPos)
	})
	if err != nil {
		return err
	}
	s.setHead(roomID, next)
	return nil
}

// StoreRemoteInvite records an invite for a local user to a room on
// another server that we may not know yet. The invite is shown in the
// user's sync with the stripped state the inviting server sent.
func (s *RoomServer) StoreRemoteInvite(ctx context.Context, invite gomatrixserverlib.PDU) error {
	roomID := invite.RoomID().String()
	unlock := s.lock(roomID)
	defer unlock()
	if room, err := storage.GetRoom(ctx, s.db, roomID); err == nil && room.CurrentSnapshot != 0 {
		// We are in the room already: it arrives as a normal event too.
		return nil
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	target := ""
	if invite.StateKey() != nil {
		target = *invite.StateKey()
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := storage.GetRoom(ctx, tx, roomID); errors.Is(err, storage.ErrNotFound) {
			if err := storage.InsertRoom(ctx, tx, &storage.Room{RoomID: roomID, Version: string(invite.Version()), Creator: "", CreatedTS: time.Now().UnixMilli()}); err != nil {
				return err
			}
		}
		pos := tx.NextPos("events")
		se := &storage.Event{
			StreamPos: pos, EventID: invite.EventID(), RoomID: roomID, RoomVersion: string(invite.Version()), Type: invite.Type(), StateKey: invite.StateKey(),
			Sender: string(invite.SenderID()), Depth: invite.Depth(), OriginTS: int64(invite.OriginServerTS()), ReceivedTS: time.Now().UnixMilli(),
			JSON: invite.JSON(), Membership: "invite",
		}
		if ok, err := storage.InsertEvent(ctx, tx, se); err != nil {
			return err
		} else if !ok {
			return nil
		}
		if err := storage.SetCurrentState(ctx, tx, storage.CurrentStateRow{RoomID: roomID, Type: spec.MRoomMember, StateKey: target, EventID: invite.EventID(), Membership: "invite", StreamPos: pos}); err != nil {
			return err
		}
		if err := storage.SetRoomLastPos(ctx, tx, roomID, pos); err != nil {
			return err
		}
		s.hooksMu.RLock()
		listeners := s.listeners
		s.hooksMu.RUnlock()
		tx.AfterCommit(func() { s.events.Put(invite.EventID(), invite) })
		tx.Publish(pos, func() {
			for _, l := range listeners {
				l(OutputEvent{Event: se, PDU: invite})
			}
		})
		return nil
	})
}

// InviteRoomState returns the stripped state carried in an invite's
// unsigned.invite_room_state (remote invites to rooms we are not in).
func InviteRoomState(invite gomatrixserverlib.PDU) []json.RawMessage {
	var u struct {
		State []json.RawMessage `json:"invite_room_state"`
	}
	_ = json.Unmarshal(invite.Unsigned(), &u)
	return u.State
}

// BuildForRemote builds (without storing) a local user's event in a room
// another server hosts, from a make_join/make_leave template. Federation
// signs and sends it.
func (s *RoomServer) BuildFromProto(proto *gomatrixserverlib.ProtoEvent, ver gomatrixserverlib.IRoomVersion) (gomatrixserverlib.PDU, error) {
	b := ver.NewEventBuilderFromProtoEvent(proto)
	ev, err := b.Build(time.Now(), s.serverName, s.keyID, s.key)
	if err != nil {
		return nil, fmt.Errorf("building event: %w", err)
	}
	return ev, nil
}

// LatestForRemote returns what a remote server needs to build an event in
// one of our rooms (make_join/make_leave): the room's extremities, depth
// and the current state.
func (s *RoomServer) LatestForRemote(ctx context.Context, roomID string) (ver gomatrixserverlib.IRoomVersion, prev []string, depth int64, state StateMap, err error) {
	h, err := s.head(ctx, roomID)
	if err != nil {
		return nil, nil, 0, nil, err
	}
	prev = h.extremities
	if len(prev) > maxPrevEvents {
		prev = prev[len(prev)-maxPrevEvents:]
	}
	return h.version, prev, h.maxDepth + 1, h.state, nil
}

// AuthChainOf returns the full auth chain of the given events (send_join,
// /event_auth, /state responses).
func (s *RoomServer) AuthChainOf(ctx context.Context, evs []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	return s.authChain(ctx, evs)
}
