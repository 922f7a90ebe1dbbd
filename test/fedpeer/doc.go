// Package fedpeer is a small Matrix homeserver for tests, built on
// gomatrixserverlib and following the Server-Server API rather than
// Enclave's code, so that integration tests can talk to an Enclave the way
// another implementation would — and misbehave on purpose.
//
// A Peer has its own ed25519 key (served at /_matrix/key/v2/server), signs
// its requests with X-Matrix, verifies and records the transactions it is
// sent, and serves the events it knows (/event, /state_ids, /backfill,
// /get_missing_events). Peer.Join does make_join/send_join into a room on
// another server; Room.Build then creates and signs events with chosen
// prev and auth events (defaults: the room's forward extremities and the
// auth events the spec requires), which Peer.SendPDUs delivers.
//
// Peer.CreateRoom hosts a room on the peer that servers under test join
// through it (make_join/send_join v2).
//
// The Peer listens with TLS on its own loopback address; the caller gives
// it a certificate the servers under test trust (test.FedCluster.AddPeer).
//
// Imports: gomatrixserverlib and the standard library only. Called by: the
// integration tests in test/.
package fedpeer
