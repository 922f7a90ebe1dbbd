// Package federationapi is the Server-Server API: the federation listener
// (signed requests in, verified against the key ring and the federation
// policy), the outbound client (signed requests out, only to servers the
// policy allows), and the per-destination queues that carry this server's
// events and EDUs to the others.
package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
	"enclave/roomserver"
	"enclave/storage"
)

// RoomInput is what federation asks of the room server.
type RoomInput interface {
	roomserver.API
	// InputRemoteEvents authorises and stores events received from origin,
	// returning a per-event error (nil = accepted; soft-failed events are
	// accepted but kept out of the timeline).
	InputRemoteEvents(ctx context.Context, origin spec.ServerName, pdus []gomatrixserverlib.PDU) map[string]error
}

// EDUHandler processes one inbound EDU of a registered type.
type EDUHandler func(ctx context.Context, origin spec.ServerName, content json.RawMessage) error

// Federation is the federation component of one server.
type Federation struct {
	cfg        *config.Config
	db         *storage.DB
	rs         RoomInput
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	key        ed25519.PrivateKey

	router *mux.Router
	client fclient.FederationClient
	keys   gomatrixserverlib.JSONVerifier
	edus   map[string]EDUHandler
}

// HandleEDU registers the handler for an EDU type (m.typing, m.receipt,
// m.direct_to_device, m.device_list_update, m.signing_key_update, …).
func (f *Federation) HandleEDU(typ string, h EDUHandler) { f.edus[typ] = h }

// Client is the signed, policy-checked outbound federation client.
func (f *Federation) Client() fclient.FederationClient { return f.client }

// ServerName is this server's name.
func (f *Federation) ServerName() spec.ServerName { return f.serverName }
