package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// Federation is what the client API asks of the federation component:
// memberships in rooms that live on other servers, their history, and
// other servers' aliases.
type Federation interface {
	JoinRemote(ctx context.Context, userID, roomIDOrAlias string, via []string, content map[string]any) (string, error)
	// Backfill fetches up to limit events older than the oldest we hold
	// from the other servers in the room; it returns how many it stored.
	Backfill(ctx context.Context, roomID string, limit int) (int, error)
	// FillGap backfills up to limit events into the room's newest hole
	// (events we missed, storage.Gap) whose free positions lie in
	// (lo, hi]; it returns how many it stored (0: no such hole).
	FillGap(ctx context.Context, roomID string, lo, hi int64, limit int) (int, error)
	// LeaveRemote leaves a room this server takes no part in (rejecting
	// an invite, retracting a knock) through another server.
	LeaveRemote(ctx context.Context, userID, roomID string, via []string, content map[string]any) error
	// KnockRemote knocks on a room hosted elsewhere.
	KnockRemote(ctx context.Context, userID, roomID string, via []string, content map[string]any) error
	// LookupAlias asks an alias's server which room it names.
	LookupAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
	// TimestampToEvent asks the room's other servers for their event
	// closest to ts in direction dir ("f" or "b"); storage.ErrNotFound
	// when none has one.
	TimestampToEvent(ctx context.Context, roomID string, ts int64, dir string) (eventID string, originTS int64, err error)
	// RemoteHierarchy asks via's servers for a room's federation
	// /hierarchy: the room, its children and those the requesting server
	// may not see.
	RemoteHierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (room map[string]any, children []map[string]any, inaccessible []string, err error)
}

// EphemeralSender carries local users' typing, read receipts and presence
// to other servers (the federation component; unset with federation off).
// The typing, receipt and presence handlers call it after a change is
// stored; receipts and presence are read back from the stream, so they
// only need the news that there is something to send.
type EphemeralSender interface {
	// SendTyping tells the servers in the room; timeout is when the
	// typing lapses here without an explicit stop.
	SendTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration)
	ReceiptChanged()
	PresenceChanged()
}

// SetFederation connects the federation component's two faces: remote
// memberships, aliases and backfill, and the sender of typing, receipts and presence
// (nil, nil: federation off).
func (a *API) SetFederation(f Federation, e EphemeralSender) {
	a.rooms.fed = f
	a.directory.fed = f
	a.events.fed, a.events.ephemeral = f, e
	a.social.ephemeral = e
}

// AddEphemeralSender adds a listener of local typing, receipt and
// presence changes after federation's (the appservices push them to
// bridges).
func (a *API) AddEphemeralSender(e EphemeralSender) {
	if a.events.ephemeral != nil {
		e = ephemeralSenders{a.events.ephemeral, e}
	}
	a.events.ephemeral = e
	a.social.ephemeral = e
}

// ephemeralSenders tells each in turn.
type ephemeralSenders []EphemeralSender

func (es ephemeralSenders) SendTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) {
	for _, e := range es {
		e.SendTyping(ctx, roomID, userID, typing, timeout)
	}
}

func (es ephemeralSenders) ReceiptChanged() {
	for _, e := range es {
		e.ReceiptChanged()
	}
}

func (es ephemeralSenders) PresenceChanged() {
	for _, e := range es {
		e.PresenceChanged()
	}
}

// needsRemoteJoin reports whether a membership change in roomID must go
// through another server: we do not hold the room's state (unknown, or
// only an invite or knock), or we hold it but none of our users is joined
// while other servers' are (our copy stops where we left).
func (rm *rooms) needsRemoteJoin(ctx context.Context, roomID string) bool {
	st, err := rm.rs.CurrentState(ctx, roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return true
	}
	if err != nil {
		return false
	}
	if st.Get("m.room.create", "") == nil {
		return true
	}
	local := spec.ServerName(rm.opts.ServerName)
	return !roomserver.ServerJoined(st, local) && othersJoined(st, local)
}

// othersJoined reports whether a server other than local has a joined
// member in st.
func othersJoined(st roomserver.StateMap, local spec.ServerName) bool {
	for k, e := range st {
		if k.Type != "m.room.member" {
			continue
		}
		if m, _ := e.Membership(); m != "join" {
			continue
		}
		if _, d, err := gomatrixserverlib.SplitID('@', k.StateKey); err == nil && d != local {
			return true
		}
	}
	return false
}

// remoteVia is the servers to reach a remote room through: the via and
// server_name query parameters and the sender of the user's pending
// invite (the inviting server; v12 room IDs name none); when the client
// named no server, also the room ID's server and the servers joined in
// our copy of the room. Servers the client named are the ones it means
// (the residents of a restricted room that can authorise the join).
func (rm *rooms) remoteVia(r *http.Request, userID, target string) []string {
	q := r.URL.Query()
	via := append(q["via"], q["server_name"]...)
	named := len(via) > 0
	// The room ID's server only when the client named none: a client that
	// names servers (a restricted room's resident that can authorise the
	// join, say) means those, and the room's creator may have left.
	if i := strings.IndexByte(target, ':'); i > 0 && !strings.HasPrefix(target, "#") && len(via) == 0 {
		via = append(via, target[i+1:])
	}
	if strings.HasPrefix(target, "!") {
		if own, err := storage.LatestMembershipBefore(r.Context(), rm.db, target, userID, 1<<62); err == nil {
			if _, d, err := gomatrixserverlib.SplitID('@', own.Sender); err == nil && string(d) != rm.opts.ServerName {
				via = append(via, string(d))
			}
		}
		if st, err := rm.rs.CurrentState(r.Context(), target); err == nil && !named {
			for k, e := range st {
				if m, _ := e.Membership(); k.Type != "m.room.member" || m != "join" {
					continue
				}
				if _, d, err := gomatrixserverlib.SplitID('@', k.StateKey); err == nil && string(d) != rm.opts.ServerName {
					via = append(via, string(d))
				}
			}
		}
	}
	return via
}

// remoteJoin joins through federation, using the via / server_name query
// parameters and the room's or alias's server.
func (rm *rooms) remoteJoin(r *http.Request, dev *httpapi.Device, target string, content map[string]any) httpapi.Response {
	if rm.fed == nil {
		return httpapi.NotFound("room %s is not known to this server and federation is off", target)
	}
	via := rm.remoteVia(r, dev.UserID, target)
	roomID, err := rm.fed.JoinRemote(r.Context(), dev.UserID, target, via, content)
	if err != nil {
		return remoteMembershipError(target, err)
	}
	rm.inheritPushRules(r, dev.UserID, roomID)
	return httpapi.JSON(200, map[string]string{"room_id": roomID})
}
