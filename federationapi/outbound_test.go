package federationapi

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
	"enclave/roomserver"
	"enclave/storage"
)

// member builds k's m.room.member event for user in roomID.
func (k testKey) member(t testing.TB, roomID, sender, user, membership string) gomatrixserverlib.PDU {
	t.Helper()
	eb := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: roomID, Type: spec.MRoomMember, StateKey: &user,
		PrevEvents: []string{"$prev"}, AuthEvents: []string{"$create"}, Depth: 3,
		Content: spec.RawJSON(`{"membership":"` + membership + `"}`),
	})
	ev, err := eb.Build(time.Now(), k.name, k.id, k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestQueueRoomEvent: the room server's state hook queues a local event,
// in the caller's transaction, for every other server with a joined
// member, a kicked user's server too; not for a server the policy
// refuses (noted for catch-up instead), an invitee's server (/invite
// reached it) or for remote senders' events; and nothing survives a
// rollback.
func TestQueueRoomEvent(t *testing.T) {
	f := newTestFederation(t, nil, func(c *config.Config) { c.Federation.DeniedServers = []string{"denied.test"} })
	ctx := context.Background()
	self, far := newTestKey(t, "self.test"), newTestKey(t, "far.test")
	room := "!r:self.test"
	st := roomserver.StateMap{}
	for _, m := range []struct{ user, membership string }{
		{"@a:self.test", "join"}, {"@b:far.test", "join"}, {"@e:far.test", "join"},
		{"@c:denied.test", "join"}, {"@d:gone.test", "leave"},
	} {
		st[roomserver.StateKey{Type: spec.MRoomMember, StateKey: m.user}] = self.member(t, room, m.user, m.user, m.membership)
	}
	hook := func(ev gomatrixserverlib.PDU, fail bool) {
		t.Helper()
		err := f.db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := f.QueueRoomEvent(ctx, tx, nil, ev, st); err != nil {
				return err
			}
			if fail {
				return errors.New("the event's transaction fails")
			}
			return nil
		})
		if err != nil && !fail {
			t.Fatal(err)
		}
	}
	depth := func(dest spec.ServerName) int {
		t.Helper()
		p, _, err := queueDepth(f, dest)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	want := func(what string, counts map[spec.ServerName]int) {
		t.Helper()
		for d, n := range counts {
			if got := depth(d); got != n {
				t.Errorf("%s: %d PDUs queued for %s, want %d", what, got, d, n)
			}
		}
	}

	hook(self.event(t, room, "@a:self.test", "hello"), false)
	want("local message", map[spec.ServerName]int{"far.test": 1, "denied.test": 0, "gone.test": 0, "self.test": 0})
	cu, err := storage.CatchUps(ctx, f.db)
	if err != nil || len(cu) != 1 || cu[0].Destination != "denied.test" || cu[0].RoomID != room {
		t.Errorf("catch-ups %v (%v), want denied.test for %s", cu, err, room)
	}

	hook(self.event(t, room, "@a:self.test", "rolled back"), true)
	want("rolled back", map[spec.ServerName]int{"far.test": 1})

	hook(far.event(t, room, "@b:far.test", "from far"), false)
	want("remote sender", map[spec.ServerName]int{"far.test": 1})

	hook(self.member(t, room, "@a:self.test", "@d:gone.test", "ban"), false)
	want("ban", map[spec.ServerName]int{"far.test": 2, "gone.test": 1})

	hook(self.member(t, room, "@a:self.test", "@x:invited.test", "invite"), false)
	want("invite", map[spec.ServerName]int{"far.test": 3, "invited.test": 0})
}
