package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"enclave/internal/httpapi"
	"enclave/roomserver"
)

// Federation is what the client API asks of the federation component:
// joining rooms that live on other servers.
type Federation interface {
	JoinRemote(ctx context.Context, userID, roomIDOrAlias string, via []string, content map[string]any) (string, error)
	// Backfill fetches up to limit events older than the oldest we hold
	// from the other servers in the room; it returns how many it stored.
	Backfill(ctx context.Context, roomID string, limit int) (int, error)
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
// joins and backfill, and the sender of typing, receipts and presence
// (nil, nil: federation off).
func (a *API) SetFederation(f Federation, e EphemeralSender) {
	a.rooms.fed = f
	a.events.fed, a.events.ephemeral = f, e
	a.social.ephemeral = e
}

// needsRemoteJoin reports whether joining roomID must go through another
// server: we do not hold the room's state (unknown, or only an invite).
func (rm *rooms) needsRemoteJoin(ctx context.Context, roomID string) bool {
	st, err := rm.rs.CurrentState(ctx, roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return true
	}
	return err == nil && st.Get("m.room.create", "") == nil
}

// remoteJoin joins through federation, using the via / server_name query
// parameters and the room's or alias's server.
func (rm *rooms) remoteJoin(r *http.Request, dev *httpapi.Device, target string, content map[string]any) httpapi.Response {
	if rm.fed == nil {
		return httpapi.NotFound("room %s is not known to this server and federation is off", target)
	}
	q := r.URL.Query()
	via := append(q["via"], q["server_name"]...)
	if i := strings.IndexByte(target, ':'); i > 0 && !strings.HasPrefix(target, "#") {
		via = append(via, target[i+1:])
	}
	roomID, err := rm.fed.JoinRemote(r.Context(), dev.UserID, target, via, content)
	if err != nil {
		return httpapi.Errf(http.StatusNotFound, "M_NOT_FOUND", "could not join %s over federation: %v", target, err)
	}
	return httpapi.JSON(200, map[string]string{"room_id": roomID})
}
