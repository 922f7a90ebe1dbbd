package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/roomserver"
	"enclave/storage"
)

func timeNow() time.Time { return time.Now() }

// ErrNoServers is returned when no server could be asked to join a room.
var ErrNoServers = errors.New("no server to join through")

// JoinRemote joins userID to a room hosted elsewhere (make_join, then
// send_join; every event of the returned state and auth chain is verified
// before it is accepted). roomIDOrAlias may be a remote alias.
func (f *Federation) JoinRemote(ctx context.Context, userID, roomIDOrAlias string, via []string, content map[string]any) (string, error) {
	roomID := roomIDOrAlias
	var servers []spec.ServerName
	for _, v := range via {
		servers = append(servers, spec.ServerName(v))
	}
	if strings.HasPrefix(roomIDOrAlias, "#") {
		_, domain, err := gomatrixserverlib.SplitID('#', roomIDOrAlias)
		if err != nil {
			return "", err
		}
		dir, err := f.client.LookupRoomAlias(ctx, f.serverName, domain, roomIDOrAlias)
		if err != nil {
			return "", fmt.Errorf("looking up %s: %w", roomIDOrAlias, err)
		}
		roomID = dir.RoomID
		servers = append(servers, dir.Servers...)
	}
	if _, domain, err := gomatrixserverlib.SplitID('!', roomID); err == nil && domain != "" && len(servers) == 0 {
		servers = append(servers, domain) // a last resort: the via servers given are the caller's choice
	}
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return "", err
	}
	rid, err := spec.NewRoomID(roomID)
	if err != nil {
		return "", err
	}
	var lastErr error = ErrNoServers
	tried := map[spec.ServerName]bool{}
	for _, server := range servers {
		if server == f.serverName || tried[server] {
			continue
		}
		tried[server] = true
		jc := f.joinClient()
		resp, ferr := gomatrixserverlib.PerformJoin(ctx, jc, gomatrixserverlib.PerformJoinInput{
			UserID: uid, RoomID: rid, ServerName: server, Content: content,
			PrivateKey: f.key, KeyID: f.keyID, KeyRing: f.keyRing,
			EventProvider: func(rv gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
				return f.rs.Events(ctx, ids)
			},
			UserIDQuerier: roomserver.UserIDForSender,
		})
		if ferr != nil {
			lastErr = ferr.Err
			logrus.WithError(ferr.Err).WithField("server", server).Warn("remote join failed")
			if jc.sent != nil {
				f.Memberships().undoJoin(server, jc.sent)
			}
			continue
		}
		ver := resp.JoinEvent.Version()
		state := resp.StateSnapshot.GetStateEvents().TrustedEvents(ver, false)
		auth := resp.StateSnapshot.GetAuthEvents().TrustedEvents(ver, false)
		jctx := context.WithValue(ctx, deliveredKey{}, delivered{eventID: resp.JoinEvent.EventID(), server: server})
		if jc.answer != nil && jc.answer.MembersOmitted {
			// A faster join: the members follow in the background.
			servers := append([]string{string(server)}, jc.answer.ServersInRoom...)
			f.partial.track(roomID, servers)
			if err := f.rs.PartialJoins().JoinRemoteRoom(jctx, server, resp.JoinEvent, state, auth, servers); err != nil {
				f.partial.done(roomID)
				f.Memberships().undoJoin(server, resp.JoinEvent)
				return "", err
			}
			f.partial.start(roomID, resp.JoinEvent.EventID(), ver, servers)
			return roomID, nil
		}
		if err := f.rs.JoinRemoteRoom(jctx, server, resp.JoinEvent, state, auth); err != nil {
			f.Memberships().undoJoin(server, resp.JoinEvent)
			return "", err
		}
		return roomID, nil
	}
	return "", lastErr
}

// deliveredKey marks in a context the server that already has an event of
// ours: the one that answered our send_join. QueueRoomEvent leaves it out,
// so our join is not sent to it again in /send (the resident server
// passes it on to the others in the room itself).
type deliveredKey struct{}

// relayKey marks in a context a membership event a remote server sent us
// through send_join, send_leave or send_knock, with that server: the
// event's transaction queues it for the room's other servers
// (QueueRoomEvent), so a crash after we answered cannot leave them unaware.
type relayKey struct{}

type delivered struct {
	eventID string
	server  spec.ServerName
}

// joinClient adapts the federation client to PerformJoin for one join
// attempt, remembering the join the other server accepted.
func (f *Federation) joinClient() *joinClient {
	return &joinClient{c: f.client, partial: f.cfg.Federation.FasterJoins}
}

type joinClient struct {
	c fclient.FederationClient
	// sent is the join send_join delivered: the other server has it even
	// if PerformJoin then fails on the answer, and must be told we left.
	sent gomatrixserverlib.PDU
	// answer is send_join's answer (members_omitted, servers_in_room).
	answer *fclient.RespSendJoin
	// partial asks for omit_members (federation.faster_joins).
	partial bool
}

func (j *joinClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	r, err := j.c.MakeJoin(ctx, origin, s, roomID, userID)
	return &r, err
}

func (j *joinClient) SendJoin(ctx context.Context, origin, s spec.ServerName, event gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	// omit_members=true (MSC3706): a resident that knows it answers
	// without the member events, one that does not with the full state.
	send := j.c.SendJoin
	if j.partial {
		send = j.c.SendJoinPartialState
	}
	r, err := send(ctx, origin, s, event)
	if err == nil {
		j.sent = event
		j.answer = &r
	}
	return &r, err
}

// QueueRoomEvent is the room server's StateHook (the assembly registers
// it) that queues every event our users create for the other servers in
// the room (st is the state right after ev), inside the event's
// transaction: the event and its queue rows commit together, so a crash
// cannot leave an acknowledged event unsent; the senders are woken after
// commit. A kicked or banned user's server is told too; an invite went to
// the invitee's server (/invite) before it was stored. Events of remote senders,
// including those that reached us over federation, are their origin's to
// send, except a membership a remote server gave us through send_join,
// send_leave or send_knock (marked with relayKey): the joining server
// talks only to us, so we pass it on to the others in the room, queued in
// the same transaction as ours.
func (f *Federation) QueueRoomEvent(ctx context.Context, tx *storage.Tx, se *storage.Event, ev gomatrixserverlib.PDU, st roomserver.StateMap) error {
	relay, relayed := ctx.Value(relayKey{}).(delivered)
	relayed = relayed && relay.eventID == ev.EventID()
	_, domain, err := gomatrixserverlib.SplitID('@', string(ev.SenderID()))
	if (err != nil || domain != f.serverName) && !relayed {
		return nil
	}
	if ev.Type() == spec.MRoomMember && !relayed {
		if err := f.announceDevicesOnJoin(ctx, tx, se, ev, st); err != nil {
			return fmt.Errorf("federation: devices of %s: %w", ev.SenderID(), err)
		}
	}
	dests := map[spec.ServerName]bool{}
	for _, s := range ServersInRoom(st) {
		dests[s] = true
	}
	if ev.Type() == spec.MRoomMember && ev.StateKey() != nil {
		if _, target, err := gomatrixserverlib.SplitID('@', *ev.StateKey()); err == nil && target != f.serverName {
			// A kicked or banned (or unbanned) server learns of it; an
			// invite reached the invitee's server through /invite before
			// it was stored (Memberships.CountersignInvite).
			if m, _ := ev.Membership(); m != spec.Invite {
				dests[target] = true
			}
		}
	}
	for _, s := range f.partial.servers(ev.RoomID().String()) {
		dests[s] = true // the state does not name them yet
	}
	delete(dests, f.serverName)
	if d, ok := ctx.Value(deliveredKey{}).(delivered); ok && d.eventID == ev.EventID() {
		delete(dests, d.server)
	}
	if relayed {
		delete(dests, relay.server) // it sent us the event
	}
	if len(dests) == 0 {
		return nil
	}
	list := make([]spec.ServerName, 0, len(dests))
	for d := range dests {
		list = append(list, d)
	}
	if err := f.queue.enqueuePDU(ctx, tx, list, ev); err != nil {
		return fmt.Errorf("federation: queueing %s: %w", ev.EventID(), err)
	}
	return nil
}

// Fetcher returns the federation implementation of roomserver.EventFetcher.
func (f *Federation) Fetcher() roomserver.EventFetcher { return fetcher{f} }

type fetcher struct{ f *Federation }

func (x fetcher) MissingEvents(ctx context.Context, origin spec.ServerName, roomID string, earliest, latest []string, limit int, ver gomatrixserverlib.RoomVersion) ([]gomatrixserverlib.PDU, error) {
	res, err := x.f.client.LookupMissingEvents(ctx, x.f.serverName, origin, roomID, fclient.MissingEvents{Limit: limit, EarliestEvents: earliest, LatestEvents: latest}, ver)
	if err != nil {
		return nil, err
	}
	parsed := res.Events.UntrustedEvents(ver)
	bad := len(res.Events) - len(parsed)
	evs := x.verified(ctx, parsed)
	if bad > 0 {
		// Some events are not valid for the room version (bad JSON): the
		// origin's answer is broken and the gap stays open where they
		// were. Events merely failing their signatures (a server whose
		// keys the policy does not let us fetch) are dropped as before,
		// without condemning the answer.
		return evs, fmt.Errorf("%w: %d of %d events from %s", roomserver.ErrMalformedMissing, bad, len(res.Events), origin)
	}
	return evs, nil
}

func (x fetcher) StateBefore(ctx context.Context, origin spec.ServerName, roomID, eventID string, ver gomatrixserverlib.RoomVersion) ([]gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
	res, err := x.f.client.LookupState(ctx, x.f.serverName, origin, roomID, eventID, ver)
	if err != nil {
		return nil, nil, err
	}
	return x.verified(ctx, res.StateEvents.UntrustedEvents(ver)), x.verified(ctx, res.AuthEvents.UntrustedEvents(ver)), nil
}

func (x fetcher) Event(ctx context.Context, origin spec.ServerName, eventID string, ver gomatrixserverlib.RoomVersion) (gomatrixserverlib.PDU, error) {
	txn, err := x.f.client.GetEvent(ctx, x.f.serverName, origin, eventID)
	if err != nil {
		return nil, err
	}
	for _, raw := range txn.PDUs {
		vi, err := gomatrixserverlib.GetRoomVersion(ver)
		if err != nil {
			return nil, err
		}
		ev, err := vi.NewEventFromUntrustedJSON(raw)
		if err != nil {
			return nil, err
		}
		if ev.EventID() != eventID {
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, x.f.keys, roomserver.UserIDForSender); err != nil {
			return nil, err
		}
		return ev, nil
	}
	return nil, fmt.Errorf("event %s not returned", eventID)
}

// verified keeps the events whose signatures check out.
func (x fetcher) verified(ctx context.Context, evs []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	out := evs[:0]
	for _, e := range evs {
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, e, x.f.keys, roomserver.UserIDForSender); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// Backfill asks the other servers in the room for history older than the
// oldest event we hold, verifies it and stores it (clientapi.Federation).
func (f *Federation) Backfill(ctx context.Context, roomID string, limit int) (int, error) {
	rs := f.rs
	from, err := rs.EarliestEvents(ctx, roomID)
	if err != nil || len(from) == 0 {
		return 0, err
	}
	st, vi, err := stateAndVersion(ctx, f.rs, roomID)
	if err != nil {
		return 0, err
	}
	for _, server := range f.partial.in(roomID, st) {
		if server == f.serverName {
			continue
		}
		txn, err := f.client.Backfill(ctx, f.serverName, server, roomID, limit, from)
		if err != nil {
			logrus.WithError(err).WithField("server", server).Debug("backfill failed")
			continue
		}
		n, err := rs.StoreBackfilled(ctx, server, roomID, verifiedPDUs(ctx, vi, f.keys, txn.PDUs))
		if err != nil {
			return 0, err
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, nil
}

// verifiedPDUs parses the events of a /backfill answer for the room
// version and keeps those whose signatures verify; the room server checks
// the rest (hashes, auth) as it stores them.
func verifiedPDUs(ctx context.Context, vi gomatrixserverlib.IRoomVersion, keys gomatrixserverlib.JSONVerifier, raws []json.RawMessage) []gomatrixserverlib.PDU {
	var pdus []gomatrixserverlib.PDU
	for _, raw := range raws {
		ev, err := vi.NewEventFromUntrustedJSON(raw)
		if err != nil {
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, keys, roomserver.UserIDForSender); err != nil {
			continue
		}
		pdus = append(pdus, ev)
	}
	return pdus
}

// stateAndVersion is what a history fetch needs of a room: its current
// state (who to ask) and its room version (how to parse the answer).
func stateAndVersion(ctx context.Context, rs RoomServer, roomID string) (roomserver.StateMap, gomatrixserverlib.IRoomVersion, error) {
	st, err := rs.CurrentState(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	ver, err := rs.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	vi, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, nil, err
	}
	return st, vi, nil
}
