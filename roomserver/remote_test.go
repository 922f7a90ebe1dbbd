package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// remoteBuild builds an event for a room hosted by host, as a remote
// server does from a make_join template, signed by builder.
func remoteBuild(t *testing.T, host, builder *RoomServer, roomID, sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	ver, prev, depth, st, err := host.LatestForRemote(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := json.Marshal(content)
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey, PrevEvents: prev, Depth: depth, Content: cb, Version: ver}
	b := ver.NewEventBuilderFromProtoEvent(&proto)
	provider, _ := gomatrixserverlib.NewAuthEvents(st.Events())
	if err := b.AddAuthEvents(provider); err != nil {
		t.Fatal(err)
	}
	proto.AuthEvents = b.AuthEvents
	ev, err := builder.BuildFromProto(&proto, ver)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func newNamed(t *testing.T, db *storage.DB, name string) *RoomServer {
	_, key, _ := ed25519.GenerateKey(nil)
	return New(db, name, "ed25519:t", key)
}

// newEvents returns the timeline events of rs's room after position pos.
func newEvents(t *testing.T, rs *RoomServer, roomID string, after int64) []gomatrixserverlib.PDU {
	t.Helper()
	evs, err := storage.RoomEventsRange(context.Background(), rs.db, roomID, after, 1<<62, 1000, false)
	if err != nil {
		t.Fatal(err)
	}
	var out []gomatrixserverlib.PDU
	for _, e := range evs {
		p, err := rs.PDU(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func stateIDs(st StateMap) map[StateKey]string {
	m := map[StateKey]string{}
	for k, v := range st {
		m[k] = v.EventID()
	}
	return m
}

// TestRemoteJoinAndPartitionConverges: bob on server B joins alice's room
// on A; during a partition alice demotes bob while bob bans carol; after
// the events are exchanged both servers hold the same resolved state.
func TestRemoteJoinAndPartitionConverges(t *testing.T) {
	for _, ver := range []gomatrixserverlib.RoomVersion{"10", "12"} {
		t.Run("v"+string(ver), func(t *testing.T) {
			ctx := context.Background()
			dbA := storagetest.Open(t, storage.SQLite)
			dbB := storagetest.Open(t, storage.Postgres)
			A := newNamed(t, dbA, "a.test")
			B := newNamed(t, dbB, "b.test")
			alice, bob, carol := "@alice:a.test", "@bob:b.test", "@carol:a.test"
			users := map[string]int{alice: 100}
			if ver == "12" {
				users = map[string]int{}
			}
			roomID, err := A.CreateRoom(ctx, CreateRoomRequest{Creator: alice, RoomVersion: ver, Events: []InitialEvent{
				{Type: "m.room.member", StateKey: sp(alice), Content: map[string]any{"membership": "join"}},
				{Type: "m.room.power_levels", StateKey: sp(""), Content: map[string]any{"users": users}},
				{Type: "m.room.join_rules", StateKey: sp(""), Content: map[string]any{"join_rule": "public"}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			// carol (local to A) joins.
			if _, err := A.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: carol, Type: "m.room.member", StateKey: &carol, Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
				t.Fatal(err)
			}
			// bob joins through A (make_join/send_join).
			join := remoteBuild(t, A, B, roomID, bob, "m.room.member", &bob, map[string]string{"membership": "join"})
			if err := A.InputRemoteEvents(ctx, "b.test", []gomatrixserverlib.PDU{join})[join.EventID()]; err != nil {
				t.Fatalf("A rejected bob's join: %v", err)
			}
			before, _ := A.StateAt(ctx, join.EventID(), false)
			chain, _ := A.AuthChainOf(ctx, before.Events())
			if err := B.JoinRemoteRoom(ctx, "a.test", join, before.Events(), chain); err != nil {
				t.Fatalf("B installing the room: %v", err)
			}
			// alice makes bob a moderator (50); B receives it.
			plUsers := map[string]int{bob: 50}
			if ver != "12" {
				plUsers[alice] = 100
			}
			pl, err := A.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.power_levels", StateKey: sp(""), Content: mustJSON(map[string]any{"users": plUsers})})
			if err != nil {
				t.Fatal(err)
			}
			plPDU, _ := A.PDU(pl)
			if err := B.InputRemoteEvents(ctx, "a.test", []gomatrixserverlib.PDU{plPDU})[pl.EventID]; err != nil {
				t.Fatalf("B rejected power levels: %v", err)
			}
			mark := A.db.Stream.Current()
			markB := B.db.Stream.Current()
			// Partition: alice demotes bob on A; bob bans carol on B.
			demoteUsers := map[string]int{bob: 0}
			if ver != "12" {
				demoteUsers[alice] = 100
			}
			if _, err := A.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.power_levels", StateKey: sp(""), Content: mustJSON(map[string]any{"users": demoteUsers})}); err != nil {
				t.Fatal(err)
			}
			if _, err := B.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: bob, Type: "m.room.member", StateKey: &carol, Content: json.RawMessage(`{"membership":"ban"}`)}); err != nil {
				t.Fatalf("bob's ban on B: %v", err)
			}
			// Heal: exchange what each side wrote.
			fromA := newEvents(t, A, roomID, mark)
			fromB := newEvents(t, B, roomID, markB)
			for _, e := range fromB {
				if err := A.InputRemoteEvents(ctx, "b.test", []gomatrixserverlib.PDU{e})[e.EventID()]; err != nil {
					t.Logf("A: %s %v", e.Type(), err)
				}
			}
			for _, e := range fromA {
				if err := B.InputRemoteEvents(ctx, "a.test", []gomatrixserverlib.PDU{e})[e.EventID()]; err != nil {
					t.Logf("B: %s %v", e.Type(), err)
				}
			}
			stA, _ := A.CurrentState(ctx, roomID)
			stB, _ := B.CurrentState(ctx, roomID)
			idsA, idsB := stateIDs(stA), stateIDs(stB)
			if len(idsA) != len(idsB) {
				t.Fatalf("state sizes differ: A %d, B %d", len(idsA), len(idsB))
			}
			for k, v := range idsA {
				if idsB[k] != v {
					t.Fatalf("state differs at %v: A %s, B %s", k, v, idsB[k])
				}
			}
			// Both agree, and the outcome follows state resolution: alice's
			// demotion and bob's ban were concurrent; whichever won, the
			// servers agree on carol's membership.
			if stA.Membership(carol) != stB.Membership(carol) {
				t.Fatal("carol's membership differs")
			}
			// A rejected event (forged power levels from bob, who lacks power)
			// is refused and changes nothing.
			forged := remoteBuild(t, A, B, roomID, bob, "m.room.power_levels", sp(""), map[string]any{"users": map[string]int{bob: 100}})
			if err := A.InputRemoteEvents(ctx, "b.test", []gomatrixserverlib.PDU{forged})[forged.EventID()]; err == nil {
				st, _ := A.CurrentState(ctx, roomID)
				if st.Get("m.room.power_levels", "").EventID() == forged.EventID() {
					t.Fatal("forged power levels became current state")
				}
			}
			_ = spec.Join
		})
	}
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
