// Package notifier evaluates push rules for every stored event and records
// the resulting notifications (unread counts, GET /notifications). It runs
// after the event's transaction commits (roomserver Subscribe) on its own
// goroutine, in batches, so storing events never waits for it. It also
// wakes the rooms' long-polls for those events once their counts are
// stored (the assembly builds the syncer with EventWakesHandedOff): one
// wake, one response.
//
// It does not deliver pushes: pushers are stored but no push gateway is
// ever contacted.
//
// Imports: internal/pushrules, internal/lru, storage; it reads rooms through
// its own RoomState interface, which the assembly adapts from the room
// server. Called by: the assembly (Subscribe), syncapi and clientapi (counts).
package notifier
