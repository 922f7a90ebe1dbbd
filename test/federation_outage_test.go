package test

import (
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"enclave/storage"
)

// TestFederationOutage: B is down while A's user sends 200 messages; when
// B comes back every one reaches B's user once, in order, through /sync
// and /messages. Then B goes down again, A queues more and is itself
// restarted with the queue non-empty; A comes back first, then B, and
// nothing is lost or duplicated.
func TestFederationOutage(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "outage"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	fedJoin(t, bob, room, a)
	sc := fedStartSync(t, bob, room)

	// 1. B is down while A sends.
	b.Stop()
	outage := fedSeq("out-", 200)
	start := time.Now()
	fedSendSeq(t, alice, room, outage)
	t.Logf("A sent %d messages in %v while B was down", len(outage), time.Since(start))
	if p, _, err := fedQueueDepth(a, b); err != nil || p != len(outage) {
		t.Fatalf("A's queue for B holds %d PDUs (%v), want %d", p, err, len(outage))
	}
	b.Start()
	restarted := time.Now()
	sc.rebase(t, b)
	bob = fedRebase(t, bob, b)
	fedWantExactly(t, "B's sync after the outage", sc.until(t, "out-", len(outage), 45*time.Second), outage)
	t.Logf("B had all %d messages %v after it restarted", len(outage), time.Since(restarted))
	fedWantExactly(t, "B's /messages after the outage", fedBodies(fedTimeline(t, bob, room), "out-"), outage)
	fedQueueEmpty(t, a, b, 10*time.Second)

	// 2. B down again; A queues, and A restarts with its queue non-empty.
	b.Stop()
	queued := fedSeq("queued-", 50)
	fedSendSeq(t, alice, room, queued)
	a.Stop()
	a.Start()
	alice = fedRebase(t, alice, a)
	if p, _, err := fedQueueDepth(a, b); err != nil || p != len(queued) {
		t.Fatalf("after A's restart its queue for B holds %d PDUs (%v), want %d", p, err, len(queued))
	}
	after := fedSeq("after-", 10) // sent once A is back, B still down
	fedSendSeq(t, alice, room, after)
	b.Start()
	sc.rebase(t, b)
	bob = fedRebase(t, bob, b)
	all := append(append(append([]string(nil), outage...), queued...), after...)
	sc.until(t, "after-", len(after), 45*time.Second)
	fedWantExactly(t, "B's sync over both outages", fedBodies(sc.events, ""), all)
	fedWantExactly(t, "B's /messages over both outages", fedBodies(fedTimeline(t, bob, room), ""), all)
	// A's own view is the same sequence.
	fedWantExactly(t, "A's /messages", fedBodies(fedTimeline(t, alice, room), ""), all)
	fedQueueEmpty(t, a, b, 10*time.Second)
}
