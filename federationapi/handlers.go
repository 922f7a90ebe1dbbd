package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/storage"
)

// The federation endpoints are served by handler groups, each holding only
// what its handlers use (New builds them; routes lists them). The
// Federation type keeps what is shared: the outbound client, the queues,
// the policy, the key ring and the component's lifecycle. A group that
// needs a shared service names it as a function field (pol, local,
// sendPDU…), so its struct says which ones it depends on.

// inbound receives transactions (PUT /send): origin serialisation,
// deduplication, PDU checks and EDU dispatch.
type inbound struct {
	db         *storage.DB
	rs         RoomServer
	serverName spec.ServerName
	keys       gomatrixserverlib.JSONVerifier
	metrics    *metrics
	pol        func() *policy

	edusMu sync.RWMutex
	edus   map[string]EDUHandler // inboundEDUs.eduHandlers, plus HandleEDU's additions

	originLocks sync.Map // spec.ServerName → *sync.Mutex, serialising /send
	txnsStored  atomic.Int64
}

// inboundEDUs applies other servers' typing, receipts, presence,
// to-device messages and device-list updates to local users.
type inboundEDUs struct {
	db          *storage.DB
	rs          RoomServer
	isLocalUser func(userID string) bool
	local       func() *Local
	ext         func() *extras
}

// joins answers make_join/leave/knock, send_join/leave/knock and invites.
type joins struct {
	db         *storage.DB // invitees' invite permission configs
	rs         RoomServer
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	key        ed25519.PrivateKey
	keys       gomatrixserverlib.JSONVerifier
	sendPDU    func(ctx context.Context, destinations []spec.ServerName, pdu gomatrixserverlib.PDU) error
}

// history serves room state, events, auth chains, backfill and missing
// events to servers allowed to see them.
type history struct {
	db         *storage.DB
	rs         RoomServer
	serverName spec.ServerName
}

// queries answers directory, profile, public-rooms, hierarchy and OpenID
// userinfo requests.
type queries struct {
	db         *storage.DB
	rs         RoomServer
	serverName spec.ServerName
}

// serverKeys publishes this server's signing keys and answers notary
// queries for other servers' keys.
type serverKeys struct {
	db         *storage.DB
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	key        ed25519.PrivateKey
	fetcher    *keyFetcher
	pol        func() *policy

	oldKeys     []oldKey // retired signing keys, published as old_verify_keys
	ownMu       sync.Mutex
	ownSigned   json.RawMessage
	ownSignedAt time.Time
}

// userKeys answers other servers' device-key queries and one-time key
// claims for local users.
type userKeys struct {
	db          *storage.DB
	isLocalUser func(userID string) bool
	local       func() *Local // NotifyUsers: a claim changes key counts
}

// media serves this server's media to other servers (multipart framing
// over the media repository, Local.Media).
type media struct {
	local func() *Local
}

// newHandlers builds the handler groups over f's shared services (the key
// ring and fetcher are set later, in New, once they exist).
func (f *Federation) newHandlers() {
	f.in = &inbound{db: f.db, rs: f.rs, serverName: f.serverName, metrics: f.metrics, pol: f.pol}
	f.inEDUs = &inboundEDUs{db: f.db, rs: f.rs, isLocalUser: f.isLocalUser, local: f.local, ext: f.ext}
	f.joins = &joins{db: f.db, rs: f.rs, serverName: f.serverName, keyID: f.keyID, key: f.key, sendPDU: f.SendPDU}
	f.history = &history{db: f.db, rs: f.rs, serverName: f.serverName}
	f.queries = &queries{db: f.db, rs: f.rs, serverName: f.serverName}
	f.srvKeys = &serverKeys{db: f.db, serverName: f.serverName, keyID: f.keyID, key: f.key, pol: f.pol}
	f.userKeys = &userKeys{db: f.db, isLocalUser: f.isLocalUser, local: f.local}
	f.media = &media{local: f.local}
}
