package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
	"enclave/roomserver"
	"enclave/storage"
)

// RoomServer is everything federation asks of the room server: reads,
// inbound events, remote joins and invites, and the DAG walks that answer
// other servers. New takes it whole so that the constructor says what the
// component uses (internal/server checks *roomserver.RoomServer meets it).
type RoomServer interface {
	roomserver.API
	// InputRemoteEvents authorises and stores events received from origin,
	// returning a per-event error (nil = accepted; soft-failed events are
	// accepted but kept out of the timeline).
	InputRemoteEvents(ctx context.Context, origin spec.ServerName, pdus []gomatrixserverlib.PDU) map[string]error
	JoinRemoteRoom(ctx context.Context, origin spec.ServerName, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU) error
	StoreRemoteInvite(ctx context.Context, invite gomatrixserverlib.PDU) error
	// StoreRemoteMembership records a local user's leave or knock made
	// through origin in a room this server takes no part in.
	StoreRemoteMembership(ctx context.Context, origin spec.ServerName, ev gomatrixserverlib.PDU) error
	LatestForRemote(ctx context.Context, roomID string) (gomatrixserverlib.IRoomVersion, []string, int64, roomserver.StateMap, error)
	AuthChainOf(ctx context.Context, evs []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error)
	BuildFromProto(proto *gomatrixserverlib.ProtoEvent, ver gomatrixserverlib.IRoomVersion) (gomatrixserverlib.PDU, error)
	SetFetcher(fetcher roomserver.EventFetcher)
	StoreBackfilled(ctx context.Context, origin spec.ServerName, roomID string, pdus []gomatrixserverlib.PDU) (int, error)
	EarliestEvents(ctx context.Context, roomID string) ([]string, error)
	FillGap(ctx context.Context, origin spec.ServerName, roomID, gapEvent string, pdus []gomatrixserverlib.PDU) (int, error)
	// PartialJoins stores faster joins (partialsync.go).
	PartialJoins() roomserver.PartialJoins
}

// EDUHandler processes one inbound EDU of a type in eduHandlers.
type EDUHandler func(ctx context.Context, origin spec.ServerName, content json.RawMessage) error

// Federation is the federation component of one server: the shared
// services (outbound client, queues, policy, key ring, lifecycle) and the
// handler groups that serve the federation endpoints (handlers.go).
type Federation struct {
	cfg        *config.Config
	db         *storage.DB
	rs         RoomServer
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	key        ed25519.PrivateKey

	router *mux.Router
	client fclient.FederationClient
	keys   gomatrixserverlib.JSONVerifier
	// keyRing is keys as its concrete type, for gomatrixserverlib helpers
	// (PerformJoin) that want one.
	keyRing *gomatrixserverlib.KeyRing

	policy    atomic.Pointer[policy]
	limiter   *originLimiter
	audit     atomic.Pointer[AuditFunc]
	metrics   *metrics
	version   atomic.Pointer[string]
	transport *outboundTransport
	fetcher   *keyFetcher
	queue     *queue
	x         *extras

	// The handler groups of the federation endpoints (handlers.go).
	in       *inbound
	inEDUs   *inboundEDUs
	joins    *joins
	history  *history
	queries  *queries
	srvKeys  *serverKeys
	userKeys *userKeys
	media    *media

	// partial resyncs the rooms joined with partial state.
	partial *partialSync

	stopOnce sync.Once
}

// requestTimeout bounds outbound federation requests made through Client.
const requestTimeout = 2 * time.Minute

// New builds the federation component: policy, key ring, outbound client
// and queue, and the federation routes (keys, version, /send). It records
// the current signing key (retiring a replaced one). Call Start to resume
// queued deliveries and Stop on shutdown.
func New(cfg *config.Config, db *storage.DB, rs RoomServer, keyID string, key ed25519.PrivateKey) (*Federation, error) {
	if err := config.ValidateServerName(cfg.ServerName); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(keyID, "ed25519:") || len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("federation: need an ed25519 signing key")
	}
	notaries, err := parseNotaries(cfg.Federation.KeyNotaries)
	if err != nil {
		return nil, err
	}
	roots, err := cfg.RootCAs()
	if err != nil {
		return nil, err
	}
	f := &Federation{
		cfg:        cfg,
		db:         db,
		rs:         rs,
		serverName: spec.ServerName(cfg.ServerName),
		keyID:      gomatrixserverlib.KeyID(keyID),
		key:        key,
		router:     mux.NewRouter(),
		limiter:    newOriginLimiter(cfg.Federation.RequestsPerSecond, cfg.Federation.RequestBurst),
		metrics:    newMetrics(),
		x:          newExtras(),
	}
	for _, n := range notaries {
		if n.name == f.serverName {
			return nil, errors.New("federation.key_notaries: this server cannot be its own notary")
		}
	}
	f.policy.Store(newPolicy(f.serverName, cfg.Federation))
	f.transport = newOutboundTransport(f, roots)
	f.client = fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: f.serverName, KeyID: f.keyID, PrivateKey: key}},
		fclient.WithTransport(f.transport),
		fclient.WithTimeout(requestTimeout),
		fclient.WithUserAgent("Enclave"),
	)
	f.newHandlers()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.srvKeys.loadOwnKeys(ctx); err != nil {
		return nil, fmt.Errorf("federation: recording signing key: %w", err)
	}
	f.fetcher = newKeyFetcher(f, notaries)
	f.keyRing = &gomatrixserverlib.KeyRing{
		KeyDatabase: &keyDatabase{f: f},
		KeyFetchers: []gomatrixserverlib.KeyFetcher{f.fetcher},
	}
	f.keys = f.keyRing
	f.srvKeys.fetcher = f.fetcher
	f.in.keys, f.joins.keys = f.keys, f.keys
	f.queue = newQueue(f)
	f.partial = newPartialSync(f)
	f.in.edus = f.inEDUs.eduHandlers()
	if err := f.mount(f.routes()); err != nil {
		return nil, err
	}
	return f, nil
}

// Start resumes delivery to every destination with queued rows.
func (f *Federation) Start() error {
	go f.in.pruneInboundTxns()
	f.partial.resume()
	return f.queue.start()
}

// Stop ends the queue workers (queued rows stay for the next start) and
// drops idle outbound connections.
func (f *Federation) Stop() {
	f.stopOnce.Do(func() {
		f.partial.stop()
		f.queue.stop(10 * time.Second)
		f.transport.closeIdle()
	})
}

// Client is the signed, policy-checked outbound federation client.
func (f *Federation) Client() fclient.FederationClient { return f.client }

// HandleEDU adds or replaces the handler of one EDU type after New built
// the table (eduHandlers); the integration tests count EDUs of a type of
// their own with it.
func (f *Federation) HandleEDU(typ string, h EDUHandler) {
	f.in.edusMu.Lock()
	defer f.in.edusMu.Unlock()
	f.in.edus[typ] = h
}

// ServerName is this server's name.
func (f *Federation) ServerName() spec.ServerName { return f.serverName }
