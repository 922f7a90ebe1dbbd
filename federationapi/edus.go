package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/roomserver"
	"enclave/storage"
)

// Typing, receipts and presence over federation, and the plumbing the
// E2EE and media halves share: the local services federation delivers
// into, and the workers that turn local changes into EDUs.
//
// Outbound, typing is pushed by the client API (EphemeralSender), while read
// receipts and presence are read back from the stream: a tailer follows
// the stream position and sends local users' new m.read receipts and
// presence rows to the servers sharing the room (or a room) with them.
// Inbound, an EDU is applied only for users of the origin server who are
// joined to the room concerned (typing, receipts) or share a room with a
// local user (presence); anything else is ignored.

// Local is what federation's EDU, E2EE and media handlers need from the
// rest of the server. The assembly installs it with StartLocal at start; until then
// EDUs that need it are dropped (the next update repairs them).
type Local struct {
	// NotifyUsers wakes local users' /sync long-polls.
	NotifyUsers func(users ...string)
	// NotifyRoom wakes everyone in a room.
	NotifyRoom func(roomID string)
	// SetTyping records a user's typing state in a room for timeout.
	SetTyping func(roomID, userID string, typing bool, timeout time.Duration)
	// PresenceEnabled reports config presence.enabled.
	PresenceEnabled func() bool
	// StreamPos is the highest visible stream position.
	StreamPos func() int64
	// Media serves this server's media to other servers.
	Media LocalMedia
}

// LocalMedia is the media repository as federation sees it
// (mediaapi.Repo implements it): it writes the plain answer for one of
// this server's media (a download, or a thumbnail sized by the request's
// query) that serveMedia frames as multipart.
type LocalMedia interface {
	ServeFederation(w http.ResponseWriter, r *http.Request, mediaID string, thumb bool)
}

// Limits and timings of the EDU handlers.
const (
	// remoteTypingTimeout is how long a remote user stays typing without
	// a fresh m.typing EDU (senders need not repeat it while typing).
	remoteTypingTimeout = 60 * time.Second
	// tailInterval is how often the tailer looks for new receipts and
	// presence when nothing kicks it.
	tailInterval = time.Second
	tailPage     = 500
	maxStatusMsg = 1024
	// todevicePruneEvery and todeviceRetention bound the to-device
	// deduplication table.
	todevicePruneEvery = 10 * time.Minute
	todeviceRetention  = 24 * time.Hour
)

// extras is the state of the EDU, E2EE and media handlers: the local
// services, the remote key cache and the outbound workers.
type extras struct {
	local atomic.Pointer[Local]
	keys  *keyCache

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	devQ    []storage.DeviceListChange
	joinQ   []devicesTo // joiners' devices for servers new to them
	devWake chan struct{}
	kick    chan struct{}
}

func newExtras() *extras {
	return &extras{keys: newKeyCache(), devWake: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
}

func (f *Federation) ext() *extras { return f.x }

func (f *Federation) local() *Local { return f.ext().local.Load() }

// StartLocal installs the local services and starts the outbound workers
// (device-list updates, receipts and presence). Call it once the server
// is assembled; StopLocal ends the workers.
func (f *Federation) StartLocal(l Local) {
	x := f.ext()
	x.local.Store(&l)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.started {
		return
	}
	x.started = true
	ctx, cancel := context.WithCancel(context.Background())
	x.cancel = cancel
	x.wg.Add(2)
	go func() { defer x.wg.Done(); f.deviceListWorker(ctx) }()
	go func() { defer x.wg.Done(); f.tailEphemeral(ctx) }()
}

// StopLocal ends the outbound workers and forgets the local services.
func (f *Federation) StopLocal() {
	x := f.ext()
	x.mu.Lock()
	cancel := x.cancel
	x.mu.Unlock()
	if cancel != nil {
		cancel()
		x.wg.Wait()
	}
	x.local.Store(nil)
}

// errForeignUser is an EDU about a user who does not belong to its origin.
var errForeignUser = errors.New("user does not belong to the origin server")

// userServer returns the server part of a user ID ("" if malformed).
func userServer(userID string) spec.ServerName {
	_, d, err := gomatrixserverlib.SplitID('@', userID)
	if err != nil {
		return ""
	}
	return d
}

func (f *Federation) isLocalUser(userID string) bool { return userServer(userID) == f.serverName }

// remoteServers turns user IDs into the distinct other servers they are on.
func (f *Federation) remoteServers(users []string) []spec.ServerName {
	seen := map[spec.ServerName]bool{}
	var out []spec.ServerName
	for _, u := range users {
		if d := userServer(u); d != "" && d != f.serverName && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// reachable drops servers the federation policy refuses. Ephemeral EDUs
// (typing, receipts, presence) go through it, so they are skipped quietly
// instead of being refused and audited one by one.
func (f *Federation) reachable(servers []spec.ServerName) []spec.ServerName {
	p := f.pol()
	out := servers[:0]
	for _, s := range servers {
		if p.checkDestination(s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// serversInRoom lists the other servers with joined members in a room.
func (f *Federation) serversInRoom(ctx context.Context, roomID string) ([]spec.ServerName, error) {
	members, err := storage.RoomMembers(ctx, f.db, roomID, spec.Join)
	if err != nil {
		return nil, err
	}
	return f.remoteServers(members), nil
}

// serversSharingRoomWith lists the other servers with a member joined to
// a room userID is joined to.
func (f *Federation) serversSharingRoomWith(ctx context.Context, userID string) ([]spec.ServerName, error) {
	users, err := storage.UsersSharingRoomWith(ctx, f.db, userID)
	if err != nil {
		return nil, err
	}
	return f.remoteServers(users), nil
}

// localUsersSharingRoomWith lists this server's users joined to a room
// that userID is joined to.
func localUsersSharingRoomWith(ctx context.Context, db *storage.DB, isLocalUser func(string) bool, userID string) ([]string, error) {
	users, err := storage.UsersSharingRoomWith(ctx, db, userID)
	if err != nil {
		return nil, err
	}
	out := users[:0]
	for _, u := range users {
		if isLocalUser(u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// joinedFromOrigin checks an ephemeral EDU's user: from origin, joined to
// the room, and origin not denied by the room's server ACL.
func (f *inboundEDUs) joinedFromOrigin(ctx context.Context, origin spec.ServerName, roomID, userID string) error {
	if userServer(userID) != origin {
		return errForeignUser
	}
	m, err := f.rs.Membership(ctx, roomID, userID)
	if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
		return err
	}
	if m != spec.Join {
		return fmt.Errorf("%s is not joined to %s", userID, roomID)
	}
	id, err := storage.CurrentStateEventID(ctx, f.db, roomID, "m.room.server_acl", "")
	if err != nil || id == "" {
		return err
	}
	evs, err := f.rs.Events(ctx, []string{id})
	if err != nil || len(evs) == 0 {
		return err
	}
	if !aclAllows(roomserver.StateMap{{Type: "m.room.server_acl"}: evs[0]}, origin) {
		return fmt.Errorf("%s is denied by the server ACL of %s", origin, roomID)
	}
	return nil
}

// --- inbound ---

func (f *inboundEDUs) onTyping(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	if err := f.joinedFromOrigin(ctx, origin, c.RoomID, c.UserID); err != nil {
		return err
	}
	l := f.local()
	if l == nil || l.SetTyping == nil {
		return nil
	}
	l.SetTyping(c.RoomID, c.UserID, c.Typing, remoteTypingTimeout)
	return nil
}

// receiptEDU is the content of an m.receipt EDU: room → type → user.
type receiptEDU map[string]map[string]map[string]struct {
	EventIDs []string `json:"event_ids"`
	Data     struct {
		TS       int64  `json:"ts"`
		ThreadID string `json:"thread_id"`
	} `json:"data"`
}

func (f *inboundEDUs) onReceipt(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c receiptEDU
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	l := f.local()
	var errs []error
	for roomID, types := range c {
		for user, r := range types[storage.ReceiptRead] {
			if len(r.EventIDs) == 0 || (r.Data.ThreadID != "" && r.Data.ThreadID != "main" && r.Data.ThreadID[0] != '$') {
				continue
			}
			if err := f.joinedFromOrigin(ctx, origin, roomID, user); err != nil {
				errs = append(errs, err)
				continue
			}
			ev, err := storage.GetEvent(ctx, f.db, r.EventIDs[0])
			if err != nil || ev.RoomID != roomID || ev.StreamPos == 0 {
				errs = append(errs, fmt.Errorf("receipt for unknown event %s", r.EventIDs[0]))
				continue
			}
			rec := &storage.Receipt{RoomID: roomID, Type: storage.ReceiptRead, UserID: user, ThreadID: r.Data.ThreadID, EventID: ev.EventID, EventPos: ev.StreamPos, TS: r.Data.TS}
			err = f.db.WithTx(ctx, func(tx *storage.Tx) error {
				stored, err := storage.PutReceipt(ctx, tx, rec)
				if err == nil && stored && l != nil && l.NotifyRoom != nil {
					tx.Publish(rec.StreamPos, func() { l.NotifyRoom(roomID) })
				}
				return err
			})
			if err != nil {
				return err
			}
		}
	}
	return errors.Join(errs...)
}

type presenceUpdate struct {
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveAgo   int64   `json:"last_active_ago"`
	CurrentlyActive bool    `json:"currently_active"`
}

func (f *inboundEDUs) onPresence(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	l := f.local()
	if l == nil || l.PresenceEnabled == nil || !l.PresenceEnabled() {
		return nil
	}
	var c struct {
		Push []presenceUpdate `json:"push"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	var errs []error
	now := time.Now().UnixMilli()
	for _, p := range c.Push {
		if userServer(p.UserID) != origin {
			errs = append(errs, errForeignUser)
			continue
		}
		if p.Presence != "online" && p.Presence != "unavailable" && p.Presence != "offline" {
			continue
		}
		if p.StatusMsg != nil && utf8.RuneCountInString(*p.StatusMsg) > maxStatusMsg {
			continue
		}
		watchers, err := localUsersSharingRoomWith(ctx, f.db, f.isLocalUser, p.UserID)
		if err != nil {
			return err
		}
		if len(watchers) == 0 {
			continue // nobody here may see it
		}
		lastActive := now - max(p.LastActiveAgo, 0)
		old, err := storage.GetPresence(ctx, f.db, p.UserID)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if old != nil && old.State == p.Presence && old.CurrentlyActive == p.CurrentlyActive && eqStrPtr(old.StatusMsg, p.StatusMsg) {
			if err := storage.TouchPresence(ctx, f.db, p.UserID, lastActive); err != nil {
				return err
			}
			continue
		}
		row := &storage.Presence{UserID: p.UserID, State: p.Presence, StatusMsg: p.StatusMsg, LastActiveTS: lastActive, CurrentlyActive: p.CurrentlyActive}
		err = f.db.WithTx(ctx, func(tx *storage.Tx) error {
			pos, err := storage.PutPresence(ctx, tx, row)
			if err == nil && l.NotifyUsers != nil {
				tx.Publish(pos, func() { l.NotifyUsers(watchers...) })
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

func eqStrPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// --- outbound ---

// tailEphemeral follows the stream and sends local users' new read
// receipts and presence changes, starting from the position at start
// (older ones are history, not news).
func (f *Federation) tailEphemeral(ctx context.Context) {
	l := f.local()
	if l == nil || l.StreamPos == nil {
		return
	}
	last := l.StreamPos()
	t := time.NewTicker(tailInterval)
	defer t.Stop()
	nextPrune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.ext().kick:
		}
		if time.Now().After(nextPrune) {
			nextPrune = time.Now().Add(todevicePruneEvery)
			if _, err := storage.PruneInboundToDevice(ctx, f.db, time.Now().Add(-todeviceRetention).UnixMilli()); err != nil && ctx.Err() == nil {
				logrus.WithError(err).Warn("federation: pruning to-device message IDs")
			}
		}
		cur := l.StreamPos()
		if cur <= last {
			continue
		}
		if err := f.sendReceipts(ctx, last, cur); err != nil && ctx.Err() == nil {
			logrus.WithError(err).Warn("federation: sending read receipts")
		}
		if l.PresenceEnabled != nil && l.PresenceEnabled() {
			if err := f.sendPresence(ctx, last, cur); err != nil && ctx.Err() == nil {
				logrus.WithError(err).Warn("federation: sending presence")
			}
		}
		last = cur
	}
}

// sendReceipts sends local users' m.read receipts stored in (from, to]:
// one m.receipt EDU per room and thread, to the other servers in the room.
func (f *Federation) sendReceipts(ctx context.Context, from, to int64) error {
	type key struct{ room, thread string }
	latest := map[key]map[string]storage.FedReceipt{}
	var order []key
	for {
		rs, err := storage.ReadReceiptsRange(ctx, f.db, from, to, tailPage)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if !f.isLocalUser(r.UserID) {
				continue
			}
			k := key{r.RoomID, r.ThreadID}
			if latest[k] == nil {
				latest[k] = map[string]storage.FedReceipt{}
				order = append(order, k)
			}
			latest[k][r.UserID] = r
		}
		if len(rs) < tailPage {
			break
		}
		from = rs[len(rs)-1].StreamPos
	}
	dests := map[string][]spec.ServerName{}
	for _, k := range order {
		ds, ok := dests[k.room]
		if !ok {
			var err error
			if ds, err = f.serversInRoom(ctx, k.room); err != nil {
				return err
			}
			ds = f.reachable(ds)
			dests[k.room] = ds
		}
		if len(ds) == 0 {
			continue
		}
		users := map[string]any{}
		for u, r := range latest[k] {
			data := map[string]any{"ts": r.TS}
			if r.ThreadID != "" {
				data["thread_id"] = r.ThreadID
			}
			users[u] = map[string]any{"event_ids": []string{r.EventID}, "data": data}
		}
		content, _ := json.Marshal(map[string]any{k.room: map[string]any{storage.ReceiptRead: users}})
		if err := f.SendEDU(ctx, ds, gomatrixserverlib.EDU{Type: spec.MReceipt, Content: content}); err != nil {
			return err
		}
	}
	return nil
}

// sendPresence sends local users' presence rows stored in (from, to] to
// the servers sharing a room with each user, one user per EDU (so the
// queue can replace a stale update still waiting for a slow server).
func (f *Federation) sendPresence(ctx context.Context, from, to int64) error {
	latest := map[string]*storage.Presence{}
	var order []string
	for {
		ps, err := storage.PresenceChangesRange(ctx, f.db, from, to, tailPage)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if !f.isLocalUser(p.UserID) {
				continue
			}
			if latest[p.UserID] == nil {
				order = append(order, p.UserID)
			}
			latest[p.UserID] = p
		}
		if len(ps) < tailPage {
			break
		}
		from = ps[len(ps)-1].StreamPos
	}
	now := time.Now().UnixMilli()
	for _, u := range order {
		p := latest[u]
		dests, err := f.serversSharingRoomWith(ctx, u)
		if err != nil {
			return err
		}
		if dests = f.reachable(dests); len(dests) == 0 {
			continue
		}
		upd := presenceUpdate{UserID: u, Presence: p.State, StatusMsg: p.StatusMsg, LastActiveAgo: max(now-p.LastActiveTS, 0), CurrentlyActive: p.CurrentlyActive}
		content, _ := json.Marshal(map[string]any{"push": []presenceUpdate{upd}})
		if err := f.SendEDU(ctx, dests, gomatrixserverlib.EDU{Type: spec.MPresence, Content: content}); err != nil {
			return err
		}
	}
	return nil
}
