// Package federationapi is the Server-Server API: the federation listener
// (signed requests in, verified against the key ring and the federation
// policy), the outbound client (signed requests out, only to servers the
// policy allows), and the per-destination queues that carry this server's
// events and EDUs to the others.
//
// Its endpoints are rows of routes.go (each with its access class) served
// by the handler groups of handlers.go; outbound events reach the queue
// from a room-server hook inside the event's transaction (QueueRoomEvent).
//
// Imports: roomserver (remote events, joins, backfill), storage (queues,
// keys, server ACL state), config, internal/httpapi, internal/glob. Called by: the
// assembly, which gives the client API its remote faces (keys, to-device,
// profiles, typing/receipts/presence) through small interfaces.
package federationapi
