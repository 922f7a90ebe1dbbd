package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/internal/invitefilter"
	"enclave/storage"
)

// JoinRemoteRoom installs a room this server joins through another one:
// the state and auth chain of the send_join response (already verified by
// federation) become the state before our join event, which becomes the
// room's tip. So it is for a room we hold but left (our copy stops where
// our last user left; an invite since may be kept beside it); a room one of
// our users is still joined to has the join input like any other remote
// event instead.
func (s *RoomServer) JoinRemoteRoom(ctx context.Context, origin spec.ServerName, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU) error {
	roomID := join.RoomID().String()
	unlock := s.lock(roomID)
	defer unlock()
	var gap []string // a room we hold but left: what we missed meanwhile
	if room, err := storage.GetRoom(ctx, s.db, roomID); err == nil && room.CurrentSnapshot != 0 {
		h, err := s.head(ctx, roomID)
		if err != nil {
			return err
		}
		if ServerJoined(h.state, s.serverName) {
			return s.inputLocked(ctx, origin, join, true)
		}
		if _, gap, err = s.timelineEvents(ctx, join.PrevEventIDs()); err != nil {
			return err
		}
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
		before := &roomHead{version: ver, snapshot: id, state: st, maxDepth: maxDepth, gapBelow: gap}
		se, after, err := s.storeEvent(ctx, tx, roomID, before, join, false, SendRequest{})
		if err != nil {
			return err
		}
		// The whole state is new to this server's current_state (rows of
		// a room we left are overwritten: SetCurrentState upserts).
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
	_, origin, err := gomatrixserverlib.SplitID('@', string(invite.SenderID()))
	if err != nil {
		return err
	}
	return s.StoreRemoteMembership(ctx, origin, invite)
}

// StoreRemoteMembership records a local user's membership in a room this
// server takes no part in: an invite from another server, or the leave
// or knock the user made through origin (make_leave/send_leave,
// make_knock/send_knock). While one of our users is joined the event
// reaches us in the room's timeline anyway. In a room we hold but left
// (our users left or were banned) it joins the timeline when we hold its
// prev events; otherwise it is kept beside the room, as for a room we
// never joined, where sync shows it with the stripped state in its
// unsigned invite_room_state.
func (s *RoomServer) StoreRemoteMembership(ctx context.Context, origin spec.ServerName, ev gomatrixserverlib.PDU) error {
	roomID := ev.RoomID().String()
	// Looked at before taking the room's lock: our own invite of a user of
	// the sending server may hold it while that server's /invite call
	// waits on this one.
	if h, err := s.head(ctx, roomID); err == nil && h.state.Get(spec.MRoomCreate, "") != nil && ServerJoined(h.state, s.serverName) {
		return nil
	}
	unlock := s.lock(roomID)
	defer unlock()
	if room, err := storage.GetRoom(ctx, s.db, roomID); err == nil && room.CurrentSnapshot != 0 {
		h, err := s.head(ctx, roomID)
		if err != nil {
			return err
		}
		if ServerJoined(h.state, s.serverName) {
			return nil
		}
		err = s.inputLocked(ctx, origin, ev, false)
		if err == nil {
			return nil
		}
		logrus.WithError(err).WithField("event_id", ev.EventID()).Debug("membership kept beside a room we left")
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return s.storeBesideRoom(ctx, ev)
}

// ServerJoined reports whether server has a joined member in st.
func ServerJoined(st StateMap, server spec.ServerName) bool {
	for k, e := range st {
		if k.Type != spec.MRoomMember {
			continue
		}
		if m, _ := e.Membership(); m != spec.Join {
			continue
		}
		if _, d, err := gomatrixserverlib.SplitID('@', k.StateKey); err == nil && d == server {
			return true
		}
	}
	return false
}

// storeBesideRoom stores a membership event outside the room's DAG: a
// timeline row at a new stream position and the user's current-state row.
func (s *RoomServer) storeBesideRoom(ctx context.Context, ev gomatrixserverlib.PDU) error {
	roomID := ev.RoomID().String()
	target := ""
	if ev.StateKey() != nil {
		target = *ev.StateKey()
	}
	membership, _ := ev.Membership()
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := storage.GetRoom(ctx, tx, roomID); errors.Is(err, storage.ErrNotFound) {
			if err := storage.InsertRoom(ctx, tx, &storage.Room{RoomID: roomID, Version: string(ev.Version()), Creator: "", CreatedTS: time.Now().UnixMilli()}); err != nil {
				return err
			}
		}
		pos := tx.NextPos("events")
		se := &storage.Event{
			StreamPos: pos, EventID: ev.EventID(), RoomID: roomID, RoomVersion: string(ev.Version()), Type: ev.Type(), StateKey: ev.StateKey(),
			Sender: string(ev.SenderID()), Depth: ev.Depth(), OriginTS: int64(ev.OriginServerTS()), ReceivedTS: time.Now().UnixMilli(),
			JSON: ev.JSON(), Membership: membership,
		}
		if ok, err := storage.InsertEvent(ctx, tx, se); err != nil {
			return err
		} else if !ok {
			return nil
		}
		if err := storage.SetCurrentState(ctx, tx, storage.CurrentStateRow{RoomID: roomID, Type: spec.MRoomMember, StateKey: target, EventID: ev.EventID(), Membership: membership, StreamPos: pos}); err != nil {
			return err
		}
		if err := storage.SetRoomLastPos(ctx, tx, roomID, pos); err != nil {
			return err
		}
		s.hooksMu.RLock()
		listeners := s.listeners
		s.hooksMu.RUnlock()
		tx.AfterCommit(func() { s.events.Put(ev.EventID(), ev) })
		tx.Publish(pos, func() {
			for _, l := range listeners {
				l(OutputEvent{Event: se, PDU: ev})
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

// InviteSigner sends a local user's invite of a user on another server to
// that server (federation's /invite) and returns the event it
// countersigned, with the same event ID. st is the room state the invite
// extends (for the stripped state the invitee is shown).
type InviteSigner func(ctx context.Context, invite gomatrixserverlib.PDU, st StateMap) (gomatrixserverlib.PDU, error)

// SetInviteSigner installs the federation step of remote invites.
func (s *RoomServer) SetInviteSigner(f InviteSigner) { s.inviteSigner = f }

// isRemoteInvite reports whether ev invites a user of another server.
func (s *RoomServer) isRemoteInvite(ev gomatrixserverlib.PDU) bool {
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return false
	}
	if m, _ := ev.Membership(); m != spec.Invite {
		return false
	}
	_, domain, err := gomatrixserverlib.SplitID('@', *ev.StateKey())
	return err == nil && domain != s.serverName
}

// checkInviteFilter refuses an invite of a local user that their invite
// permission config (MSC4155) blocks. The remote invitee's server decides
// for its own users (see the federation /invite handler).
func (s *RoomServer) checkInviteFilter(ctx context.Context, ev gomatrixserverlib.PDU) error {
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return nil
	}
	if m, _ := ev.Membership(); m != spec.Invite {
		return nil
	}
	target := *ev.StateKey()
	if _, domain, err := gomatrixserverlib.SplitID('@', target); err != nil || domain != s.serverName {
		return nil
	}
	if InviteBlocked(ctx, s.db, target, string(ev.SenderID())) {
		return &NotAllowedError{Reason: "the invitee does not accept invites from " + string(ev.SenderID())}
	}
	return nil
}

// InviteBlocked reports whether invitee's invite permission config blocks
// invites from inviter (a config that cannot be read blocks nothing).
func InviteBlocked(ctx context.Context, db *storage.DB, invitee, inviter string) bool {
	c, err := storage.GetAccountData(ctx, db, invitee, "", invitefilter.Type)
	if err != nil {
		return false
	}
	return invitefilter.Decide(c, inviter) == invitefilter.Block
}
