package federationapi

import (
	"fmt"
	"net/http"

	"enclave/internal/httpapi"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Access is the permission class of a federation route, the federation
// counterpart of the client API's per-route RBAC permission: it says what
// a request must carry before the route's handler runs.
type Access string

const (
	// AccessSigned routes need an X-Matrix signature from a server the
	// federation policy allows (then the body limit and rate limit apply).
	AccessSigned Access = "federation.signed"
	// AccessOpen routes need no signature: server keys and the version are
	// public, and the OpenID userinfo token is its own secret. They still
	// answer nothing while federation is disabled.
	AccessOpen Access = "federation.open"
)

// route is one row of the federation route table. Exactly one handler is
// set, matching the access class: signed (JSON answer), signedRaw (writes
// its own body, e.g. multipart media) or open.
type route struct {
	method, path string
	access       Access
	signed       SignedHandler
	signedRaw    func(w http.ResponseWriter, r *http.Request, origin spec.ServerName)
	open         func(r *http.Request) httpapi.Response
}

func signedRoute(method, path string, h SignedHandler) route {
	return route{method: method, path: path, access: AccessSigned, signed: h}
}

func signedRawRoute(method, path string, h func(http.ResponseWriter, *http.Request, spec.ServerName)) route {
	return route{method: method, path: path, access: AccessSigned, signedRaw: h}
}

func openRoute(method, path string, h func(r *http.Request) httpapi.Response) route {
	return route{method: method, path: path, access: AccessOpen, open: h}
}

// routes is every federation endpoint this server serves.
func (f *Federation) routes() []route {
	const v1, v2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
	return []route{
		// Server keys and notary (open: keys are how signatures are checked).
		openRoute(http.MethodGet, "/_matrix/key/v2/server", f.srvKeys.serveOwnKeys),
		openRoute(http.MethodGet, "/_matrix/key/v2/server/{keyID}", f.srvKeys.serveOwnKeys), // deprecated form
		openRoute(http.MethodPost, "/_matrix/key/v2/query", f.srvKeys.queryKeysBatch),
		openRoute(http.MethodGet, "/_matrix/key/v2/query/{serverName}", f.srvKeys.queryKeysOne),
		openRoute(http.MethodGet, "/_matrix/key/v2/query/{serverName}/{keyID}", f.srvKeys.queryKeysOne), // deprecated form
		openRoute(http.MethodGet, v1+"/version", f.serveVersion),
		openRoute(http.MethodGet, v1+"/openid/userinfo", f.queries.openIDUserInfo),

		// Inbound transactions: PDUs and EDUs.
		signedRoute(http.MethodPut, v1+"/send/{txnId}", f.in.sendTransaction),

		// Joins, leaves, knocks and invites.
		signedRoute(http.MethodGet, v1+"/make_join/{roomId}/{userId}", f.joins.makeMembership(spec.Join)),
		signedRoute(http.MethodGet, v1+"/make_leave/{roomId}/{userId}", f.joins.makeMembership(spec.Leave)),
		signedRoute(http.MethodGet, v1+"/make_knock/{roomId}/{userId}", f.joins.makeMembership(spec.Knock)),
		signedRoute(http.MethodPut, v2+"/send_join/{roomId}/{eventId}", f.joins.sendMembership(spec.Join)),
		signedRoute(http.MethodPut, v2+"/send_leave/{roomId}/{eventId}", f.joins.sendMembership(spec.Leave)),
		signedRoute(http.MethodPut, v1+"/send_join/{roomId}/{eventId}", v1Membership(f.joins.sendMembership(spec.Join))),
		signedRoute(http.MethodPut, v1+"/send_leave/{roomId}/{eventId}", v1Membership(f.joins.sendMembership(spec.Leave))),
		signedRoute(http.MethodPut, v1+"/send_knock/{roomId}/{eventId}", f.joins.sendMembership(spec.Knock)),
		signedRoute(http.MethodPut, v2+"/invite/{roomId}/{eventId}", f.joins.inviteV2),

		// Room history and state.
		signedRoute(http.MethodGet, v1+"/state/{roomId}", f.history.state(false)),
		signedRoute(http.MethodGet, v1+"/state_ids/{roomId}", f.history.state(true)),
		signedRoute(http.MethodGet, v1+"/event/{eventId}", f.history.getEvent),
		signedRoute(http.MethodGet, v1+"/event_auth/{roomId}/{eventId}", f.history.eventAuth),
		signedRoute(http.MethodGet, v1+"/backfill/{roomId}", f.history.backfill),
		signedRoute(http.MethodGet, v1+"/timestamp_to_event/{roomId}", f.history.timestampToEvent),
		signedRoute(http.MethodPost, v1+"/get_missing_events/{roomId}", f.history.getMissingEvents),

		// Queries and the room directory.
		signedRoute(http.MethodGet, v1+"/query/directory", f.queries.queryDirectory),
		signedRoute(http.MethodGet, v1+"/query/profile", f.queries.queryProfile),
		signedRoute(http.MethodGet, v1+"/publicRooms", f.queries.getPublicRooms),
		signedRoute(http.MethodPost, v1+"/publicRooms", f.queries.postPublicRooms),
		signedRoute(http.MethodGet, v1+"/hierarchy/{roomId}", f.queries.hierarchy),

		// End-to-end encryption.
		signedRoute(http.MethodPost, v1+"/user/keys/query", f.userKeys.userKeysQuery),
		signedRoute(http.MethodPost, v1+"/user/keys/claim", f.userKeys.userKeysClaim),
		signedRoute(http.MethodGet, v1+"/user/devices/{userId}", f.userKeys.userDevices),

		// Media (multipart answers).
		signedRawRoute(http.MethodGet, v1+"/media/download/{mediaId}", f.media.serveMedia(false)),
		signedRawRoute(http.MethodGet, v1+"/media/thumbnail/{mediaId}", f.media.serveMedia(true)),
	}
}

// eduHandlers is every inbound EDU type /send processes; other types are
// ignored, as the spec asks.
func (f *inboundEDUs) eduHandlers() map[string]EDUHandler {
	return map[string]EDUHandler{
		spec.MTyping:           f.onTyping,
		spec.MReceipt:          f.onReceipt,
		spec.MPresence:         f.onPresence,
		spec.MDirectToDevice:   f.onDirectToDevice,
		spec.MDeviceListUpdate: f.onDeviceListUpdate,
		mSigningKeyUpdate:      f.onSigningKeyUpdate,
	}
}

// mount adds the route table to the router, refusing (fail closed) a
// route whose access class is missing or does not match its handler.
func (f *Federation) mount(table []route) error {
	f.setFallbackHandlers()
	for _, rt := range table {
		var h http.HandlerFunc
		switch {
		case rt.access == AccessSigned && rt.signed != nil && rt.signedRaw == nil && rt.open == nil:
			h = f.signedHandler(rt.signed)
		case rt.access == AccessSigned && rt.signedRaw != nil && rt.signed == nil && rt.open == nil:
			h = f.signedRawHandler(rt.signedRaw)
		case rt.access == AccessOpen && rt.open != nil && rt.signed == nil && rt.signedRaw == nil:
			h = openHandler(rt.open)
		default:
			return fmt.Errorf("federation: route %s %s has no valid access class (%q)", rt.method, rt.path, rt.access)
		}
		f.router.Handle(rt.path, h).Methods(rt.method)
	}
	return nil
}
