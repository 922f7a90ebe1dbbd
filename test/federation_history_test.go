package test

import (
	"math"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// Backfill over federation (issue 12; what the conformance suite's
// TestMessagesOverFederation checks): a late joiner pages back through
// every earlier message, in order, whatever /messages limit it uses, and
// the history is fetched page by page as it is read, not at join.

// fedHeldTimeline counts the room's timeline events n stores.
func fedHeldTimeline(t *testing.T, n *FedNode, room id.RoomID) int {
	t.Helper()
	evs, err := storage.RoomEventsRange(ctxT(t), n.DB, room.String(), math.MinInt64, math.MaxInt64, 100000, true)
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// fedPagedBodies pages cli's /messages back from the newest event with the
// given limit and returns the bodies with prefix, oldest first.
func fedPagedBodies(t *testing.T, cli *mautrix.Client, room id.RoomID, limit int, prefix string) []string {
	t.Helper()
	return fedBodies(reversed(pageAll(t, cli, room, "", "", mautrix.DirectionBackward, limit)), prefix)
}

func TestFederationBackfillReachesAll(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres, storage.Postgres)
	c.StartAll()
	a, b, cn := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	carol := fedUser(t, cn, "carol")
	// A room on A (SQLite) joined from B and C (PostgreSQL), then a room
	// on C joined from A.
	room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	want := fedSeq("filler ", 300)
	fedSendSeq(t, alice, room.RoomID, want)

	fedJoin(t, bob, room.RoomID, a)
	// The join does not pull the history: it comes as it is read.
	if n := fedHeldTimeline(t, b, room.RoomID); n > 50 {
		t.Fatalf("B holds %d timeline events right after joining; history must come on demand", n)
	}
	// A limit above what one /backfill answers (100) still reaches all.
	fedWantExactly(t, "bob's history, limit 200", fedPagedBodies(t, bob, room.RoomID, 200, "filler "), want)
	fedWantExactly(t, "alice's history", fedPagedBodies(t, alice, room.RoomID, 200, "filler "), want)
	if n := fedHeldTimeline(t, b, room.RoomID); n < 300 {
		t.Fatalf("B stores %d timeline events after paging, want all 300 messages", n)
	}

	// The default page size (10) too, on a PostgreSQL-backed joiner of a
	// room whose host is the SQLite one.
	fedJoin(t, carol, room.RoomID, a)
	fedWantExactly(t, "carol's history, limit 10", fedPagedBodies(t, carol, room.RoomID, 10, "filler "), want)

	// And the other way round: a room on C (PostgreSQL) joined from A.
	room2, err := carol.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	want2 := fedSeq("c ", 150)
	fedSendSeq(t, carol, room2.RoomID, want2)
	fedJoin(t, alice, room2.RoomID, cn)
	fedWantExactly(t, "alice's history of C's room", fedPagedBodies(t, alice, room2.RoomID, 120, "c "), want2)
	fedWantExactly(t, "carol's own history", fedPagedBodies(t, carol, room2.RoomID, 120, "c "), want2)
}
