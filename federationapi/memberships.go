package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/roomserver"
	"enclave/storage"
)

// Memberships is what the client API and the room server ask of
// federation for rooms hosted elsewhere: joins and backfill, invites of
// other servers' users (countersigned by their server before they are
// stored), leaves and knocks in rooms this server takes no part in, and
// remote alias lookups. A type of its own, so the Federation type keeps to
// its shared services.
type Memberships struct{ f *Federation }

// Memberships returns the membership face of the component.
func (f *Federation) Memberships() Memberships { return Memberships{f} }

// remoteMembershipTimeout bounds one membership round trip to another
// server (the client waits for it).
const remoteMembershipTimeout = 30 * time.Second

// JoinRemote implements clientapi.Federation (Federation.JoinRemote).
func (m Memberships) JoinRemote(ctx context.Context, userID, roomIDOrAlias string, via []string, content map[string]any) (string, error) {
	return m.f.JoinRemote(ctx, userID, roomIDOrAlias, via, content)
}

// Backfill implements clientapi.Federation (Federation.Backfill).
func (m Memberships) Backfill(ctx context.Context, roomID string, limit int) (int, error) {
	return m.f.Backfill(ctx, roomID, limit)
}

// FillGap asks for the events missing in the room's newest hole whose
// free positions lie in (lo, hi] (clientapi.Federation.FillGap): /backfill from
// where the hole ends, to the server of the event above it first, then
// the others in the room. A server that answers nothing we lack closes
// the hole; one that cannot be reached leaves it for the next reader.
func (m Memberships) FillGap(ctx context.Context, roomID string, lo, hi int64, limit int) (int, error) {
	f := m.f
	g, err := storage.GapBelow(ctx, f.db, roomID, lo, hi)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	st, vi, err := stateAndVersion(ctx, f.rs, roomID)
	if err != nil {
		return 0, err
	}
	servers := f.partial.in(roomID, st)
	if above, err := storage.GetEvent(ctx, f.db, g.EventID); err == nil {
		if _, origin, err := gomatrixserverlib.SplitID('@', above.Sender); err == nil {
			servers = append([]spec.ServerName{origin}, servers...)
		}
	}
	tried := map[spec.ServerName]bool{f.serverName: true}
	for _, server := range servers {
		if tried[server] {
			continue
		}
		tried[server] = true
		txn, err := f.client.Backfill(ctx, f.serverName, server, roomID, limit, g.PrevIDs)
		if err != nil {
			logrus.WithError(err).WithField("server", server).Debug("backfill of a gap failed")
			continue
		}
		return f.rs.FillGap(ctx, server, roomID, g.EventID, verifiedPDUs(ctx, vi, f.keys, txn.PDUs))
	}
	return 0, nil
}

// inviteStrippedTypes are the state events an invitee is shown.
var inviteStrippedTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar", "m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

// strippedState is the stripped state shown to invitees and knockers;
// with an inviter, also the inviter's member event (the invitee's client
// shows their name and avatar with the invite). The create event goes
// whole, signed as it is in the room (MSC4311): the invitee's server can
// check it against the room ID (its hash, from v12) and name the creators.
func strippedState(st roomserver.StateMap, inviter string) []json.RawMessage {
	out := []json.RawMessage{}
	add := func(e gomatrixserverlib.PDU) {
		if e.Type() == spec.MRoomCreate {
			out = append(out, json.RawMessage(e.JSON()))
			return
		}
		if b, err := json.Marshal(gomatrixserverlib.NewInviteStrippedState(e)); err == nil {
			out = append(out, b)
		}
	}
	for _, t := range inviteStrippedTypes {
		if e := st.Get(t, ""); e != nil {
			add(e)
		}
	}
	if inviter != "" {
		if e := st.Get("m.room.member", inviter); e != nil {
			add(e)
		}
	}
	return out
}

// CountersignInvite is the room server's InviteSigner: it sends the invite
// to the invitee's server (/invite v2) and returns the event that server
// signed. Every server that later checks the invite (the invitee's, when
// its user joins and the invite comes back in send_join's state) needs that
// signature, so the invite is stored only once it has it.
func (m Memberships) CountersignInvite(ctx context.Context, ev gomatrixserverlib.PDU, st roomserver.StateMap) (gomatrixserverlib.PDU, error) {
	f := m.f
	_, target, err := gomatrixserverlib.SplitID('@', *ev.StateKey())
	if err != nil {
		return nil, err
	}
	// /invite v2 by hand: the library's request type strips every state
	// event, the create event too.
	content := map[string]any{"event": json.RawMessage(ev.JSON()), "room_version": ev.Version(), "invite_room_state": strippedState(st, string(ev.SenderID()))}
	var resp struct {
		Event json.RawMessage `json:"event"`
	}
	ctx, cancel := context.WithTimeout(ctx, remoteMembershipTimeout)
	defer cancel()
	path := "/_matrix/federation/v2/invite/" + url.PathEscape(ev.RoomID().String()) + "/" + url.PathEscape(ev.EventID())
	if err := f.fedJSON(ctx, target, http.MethodPut, path, content, &resp, 1<<20); err != nil {
		return nil, err
	}
	ver, err := gomatrixserverlib.GetRoomVersion(ev.Version())
	if err != nil {
		return nil, err
	}
	signed, err := ver.NewEventFromUntrustedJSON(resp.Event)
	if err != nil {
		return nil, fmt.Errorf("invalid countersigned invite: %w", err)
	}
	if signed.EventID() != ev.EventID() {
		return nil, errors.New("the countersigned invite is a different event")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, f.keys, roomserver.UserIDForSender); err != nil {
		return nil, fmt.Errorf("countersigned invite: %w", err)
	}
	return signed, nil
}

// LeaveRemote leaves (rejects an invite to, or retracts a knock on) a room
// this server takes no part in, through the servers given or, failing
// them, the room's and the inviting server (make_leave, send_leave); the
// leave is then recorded here. When no server takes the leave, an invite
// or knock we hold only beside the room is rejected here alone, so a user
// is never stuck with an invite from a server that is gone.
func (m Memberships) LeaveRemote(ctx context.Context, userID, roomID string, via []string, content map[string]any) error {
	ctx, cancel := context.WithTimeout(ctx, remoteMembershipTimeout)
	defer cancel()
	err := m.leaveThrough(ctx, userID, roomID, via, content)
	if err == nil {
		return nil
	}
	if lerr := m.leaveLocally(ctx, userID, roomID, content); lerr != nil {
		return err
	}
	logrus.WithError(err).WithField("room_id", roomID).Info("federation: no server took the leave; rejected here only")
	return nil
}

// leaveLocally stores a leave we sign ourselves on top of the user's
// invite or knock, when we hold the room only beside (no state).
func (m Memberships) leaveLocally(ctx context.Context, userID, roomID string, content map[string]any) error {
	f := m.f
	if st, err := f.rs.CurrentState(ctx, roomID); err != nil || st.Get(spec.MRoomCreate, "") != nil {
		return errors.New("the room's state is held here: not an invite alone")
	}
	own, err := storage.LatestMembershipBefore(ctx, f.db, roomID, userID, 1<<62)
	if err != nil {
		return err
	}
	if own.Membership != spec.Invite && own.Membership != spec.Knock {
		return errors.New("no invite or knock to reject")
	}
	prev, err := f.rs.PDU(own)
	if err != nil {
		return err
	}
	ver, err := gomatrixserverlib.GetRoomVersion(prev.Version())
	if err != nil {
		return err
	}
	proto := gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID,
		PrevEvents: []string{prev.EventID()}, AuthEvents: []string{prev.EventID()}, Depth: prev.Depth() + 1}
	ev, err := m.buildFromTemplate(proto, ver.Version(), userID, roomID, spec.Leave, content)
	if err != nil {
		return err
	}
	return f.rs.StoreRemoteMembership(ctx, f.serverName, ev)
}

// leaveThrough is make_leave/send_leave through the first server that
// takes it.
func (m Memberships) leaveThrough(ctx context.Context, userID, roomID string, via []string, content map[string]any) error {
	f := m.f
	var lastErr error = ErrNoServers
	for _, server := range m.candidates(ctx, userID, roomID, via) {
		tmpl, err := f.client.MakeLeave(ctx, f.serverName, server, roomID, userID)
		if err != nil {
			lastErr = err
			continue
		}
		ev, err := m.buildFromTemplate(tmpl.LeaveEvent, tmpl.RoomVersion, userID, roomID, spec.Leave, content)
		if err != nil {
			lastErr = err
			continue
		}
		if err := f.client.SendLeave(ctx, f.serverName, server, ev); err != nil {
			lastErr = err
			continue
		}
		return f.rs.StoreRemoteMembership(ctx, server, ev)
	}
	return lastErr
}

// KnockRemote knocks on a room hosted elsewhere (make_knock, send_knock)
// and records the knock with the stripped state the room's server sent.
func (m Memberships) KnockRemote(ctx context.Context, userID, roomID string, via []string, content map[string]any) error {
	f := m.f
	ctx, cancel := context.WithTimeout(ctx, remoteMembershipTimeout)
	defer cancel()
	var lastErr error = ErrNoServers
	for _, server := range m.candidates(ctx, userID, roomID, via) {
		tmpl, err := f.client.MakeKnock(ctx, f.serverName, server, roomID, userID, supportedVersions())
		if err != nil {
			lastErr = err
			continue
		}
		ev, err := m.buildFromTemplate(tmpl.KnockEvent, tmpl.RoomVersion, userID, roomID, spec.Knock, content)
		if err != nil {
			lastErr = err
			continue
		}
		resp, err := f.client.SendKnock(ctx, f.serverName, server, ev)
		if err != nil {
			lastErr = err
			continue
		}
		if len(resp.KnockRoomState) > 0 {
			if withState, err := ev.SetUnsigned(map[string]any{"invite_room_state": resp.KnockRoomState}); err == nil {
				ev = withState
			}
		}
		return f.rs.StoreRemoteMembership(ctx, server, ev)
	}
	return lastErr
}

// LookupAlias asks the alias's server which room it names (/query/directory).
func (m Memberships) LookupAlias(ctx context.Context, alias string) (string, []string, error) {
	f := m.f
	_, domain, err := gomatrixserverlib.SplitID('#', alias)
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, remoteMembershipTimeout)
	defer cancel()
	dir, err := f.client.LookupRoomAlias(ctx, f.serverName, domain, alias)
	if err != nil {
		return "", nil, err
	}
	servers := make([]string, 0, len(dir.Servers))
	for _, s := range dir.Servers {
		servers = append(servers, string(s))
	}
	return dir.RoomID, servers, nil
}

// candidates lists the servers to send a leave or knock through: the ones
// given, the room ID's server, and the sender of the user's latest
// membership event (the inviting server), never this one.
func (m Memberships) candidates(ctx context.Context, userID, roomID string, via []string) []spec.ServerName {
	f := m.f
	var out []spec.ServerName
	seen := map[spec.ServerName]bool{f.serverName: true}
	add := func(s spec.ServerName) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, v := range via {
		add(spec.ServerName(v))
	}
	if own, err := storage.LatestMembershipBefore(ctx, f.db, roomID, userID, 1<<62); err == nil {
		if _, d, err := gomatrixserverlib.SplitID('@', own.Sender); err == nil {
			add(d)
		}
	}
	if st, err := f.rs.CurrentState(ctx, roomID); err == nil {
		for _, s := range f.partial.in(roomID, st) {
			add(s)
		}
	}
	if _, d, err := gomatrixserverlib.SplitID('!', roomID); err == nil {
		add(d)
	}
	return out
}

// buildFromTemplate signs a make_leave/make_knock template as ours after
// checking it is the membership event asked for.
func (m Memberships) buildFromTemplate(proto gomatrixserverlib.ProtoEvent, rv gomatrixserverlib.RoomVersion, userID, roomID, membership string, content map[string]any) (gomatrixserverlib.PDU, error) {
	f := m.f
	if rv == "" {
		rv = gomatrixserverlib.RoomVersionV1
	}
	ver, err := gomatrixserverlib.GetRoomVersion(rv)
	if err != nil {
		return nil, err
	}
	if proto.Type != spec.MRoomMember || proto.StateKey == nil || *proto.StateKey != userID || proto.SenderID != userID || proto.RoomID != roomID {
		return nil, errors.New("the template is not this user's membership event")
	}
	c := map[string]any{}
	for k, v := range content {
		c[k] = v
	}
	c["membership"] = membership
	if proto.Content, err = json.Marshal(c); err != nil {
		return nil, err
	}
	proto.Version = ver
	ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(timeNow(), f.serverName, f.keyID, f.key)
	if err != nil {
		logrus.WithError(err).WithField("room_id", roomID).Debug("bad membership template")
		return nil, err
	}
	return ev, nil
}

// supportedVersions lists the room versions this server can take part in.
func supportedVersions() []gomatrixserverlib.RoomVersion {
	var out []gomatrixserverlib.RoomVersion
	for v := range gomatrixserverlib.RoomVersions() {
		out = append(out, v)
	}
	return out
}

// undoJoin leaves through server after a join it accepted could not be
// completed here (its answer failed our checks, or storing the room did):
// otherwise that server would list the user as joined while this one does
// not hold the room. A membership we hold for the user beside the room (an
// invite) becomes the leave, so both servers agree.
func (m Memberships) undoJoin(server spec.ServerName, join gomatrixserverlib.PDU) {
	f := m.f
	ctx, cancel := context.WithTimeout(context.Background(), remoteMembershipTimeout)
	defer cancel()
	userID, roomID := string(join.SenderID()), join.RoomID().String()
	log := logrus.WithField("room_id", roomID).WithField("server", server)
	tmpl, err := f.client.MakeLeave(ctx, f.serverName, server, roomID, userID)
	if err != nil {
		log.WithError(err).Warn("federation: could not undo a failed join")
		return
	}
	ev, err := m.buildFromTemplate(tmpl.LeaveEvent, tmpl.RoomVersion, userID, roomID, spec.Leave, nil)
	if err != nil {
		log.WithError(err).Warn("federation: could not undo a failed join")
		return
	}
	if err := f.client.SendLeave(ctx, f.serverName, server, ev); err != nil {
		log.WithError(err).Warn("federation: could not undo a failed join")
		return
	}
	if cur, err := f.rs.Membership(ctx, roomID, userID); err == nil && cur != "" && cur != spec.Join {
		if err := f.rs.StoreRemoteMembership(ctx, server, ev); err != nil {
			log.WithError(err).Warn("federation: recording the leave of a failed join")
		}
	}
}

// TimestampToEvent asks the other servers in the room, in turn, for their
// event closest to ts (MSC3030); it returns the first answer, or
// storage.ErrNotFound when none has one. Servers that fail are skipped.
func (m Memberships) TimestampToEvent(ctx context.Context, roomID string, ts int64, dir string) (string, int64, error) {
	f := m.f
	st, err := f.rs.CurrentState(ctx, roomID)
	if err != nil {
		return "", 0, err
	}
	path := "/_matrix/federation/v1/timestamp_to_event/" + url.PathEscape(roomID) + "?ts=" + strconv.FormatInt(ts, 10) + "&dir=" + url.QueryEscape(dir)
	for _, server := range f.partial.in(roomID, st) {
		if server == f.serverName {
			continue
		}
		var out struct {
			EventID  string `json:"event_id"`
			OriginTS int64  `json:"origin_server_ts"`
		}
		if err := f.fedJSON(ctx, server, http.MethodGet, path, nil, &out, 64<<10); err != nil || out.EventID == "" {
			continue
		}
		return out.EventID, out.OriginTS, nil
	}
	return "", 0, storage.ErrNotFound
}
