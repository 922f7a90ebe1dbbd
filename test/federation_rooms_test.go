package test

import (
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// waitForBody long-polls cli's sync until an m.room.message with the body
// appears in roomID, failing after timeout.
func waitForBody(t *testing.T, cli *mautrix.Client, roomID id.RoomID, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	since := ""
	for time.Now().Before(deadline) {
		resp, err := cli.SyncRequest(ctxT(t), 2000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		if jr, ok := resp.Rooms.Join[roomID]; ok {
			for _, ev := range jr.Timeline.Events {
				if ev.Type == event.EventMessage && body(ev) == want {
					return
				}
			}
		}
	}
	t.Fatalf("%s never saw %q in %s", cli.UserID, want, roomID)
}

// TestFederationRoomJoinAndMessages: a user on A creates a room, a user on
// B joins it over federation (make_join/send_join), messages flow both
// ways, and a late joiner on C pages history back via backfill.
func TestFederationRoomJoinAndMessages(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres, storage.SQLite)
	c.StartAll()
	a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	alice := sessionClient(t, a.URL, Register(t, a.URL, "alice", "pw", false))
	bob := sessionClient(t, b.URL, Register(t, b.URL, "bob", "pw", false))
	carol := sessionClient(t, cc.URL, Register(t, cc.URL, "carol", "pw", false))

	room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "coalition"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctxT(t), room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err != nil {
		t.Fatalf("bob joining over federation: %v", err)
	}
	// A learns of bob's join through send_join.
	members, err := alice.JoinedMembers(ctxT(t), room.RoomID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := members.Joined[bob.UserID]; !ok {
		t.Fatalf("A does not see bob joined: %v", members.Joined)
	}
	for i := 0; i < 5; i++ {
		if _, err := alice.SendText(ctxT(t), room.RoomID, "from A "+string(rune('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	waitForBody(t, bob, room.RoomID, "from A 4", 30*time.Second)
	if _, err := bob.SendText(ctxT(t), room.RoomID, "from B"); err != nil {
		t.Fatal(err)
	}
	waitForBody(t, alice, room.RoomID, "from B", 30*time.Second)

	// carol on C joins late; the earlier messages come by backfill.
	if _, err := carol.JoinRoom(ctxT(t), room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err != nil {
		t.Fatalf("carol joining: %v", err)
	}
	evs := pageAll(t, carol, room.RoomID, "", "", mautrix.DirectionBackward, 10)
	var bodies []string
	for _, ev := range evs {
		if ev.Type == event.EventMessage {
			bodies = append(bodies, body(ev))
		}
	}
	joined := strings.Join(bodies, "|")
	for _, want := range []string{"from A 0", "from A 4", "from B"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("carol's history lacks %q: %v", want, bodies)
		}
	}
	// And carol's messages reach A and B.
	if _, err := carol.SendText(ctxT(t), room.RoomID, "from C"); err != nil {
		t.Fatal(err)
	}
	waitForBody(t, alice, room.RoomID, "from C", 30*time.Second)
	waitForBody(t, bob, room.RoomID, "from C", 30*time.Second)
}
