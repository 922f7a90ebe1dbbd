// Package roomserver is the single writer of room state. Every event, local
// or remote, is authorised against the auth rules of its room version,
// given the state before and after it, and appended to the ordered stream
// in one transaction; sync, federation and audit consume that stream.
//
// Imports: storage and internal/lru; no other component. Called by: the
// client API (local events), federationapi (remote events, joins,
// backfill), adminapi (purge, retention), syncapi and the notifier (they
// subscribe to its output). Consumers take the small interfaces they
// declare themselves (syncapi.RoomServer, roomserver.EventFetcher …).
package roomserver
