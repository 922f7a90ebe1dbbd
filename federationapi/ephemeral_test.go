package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/storage"
)

// TestEphemeralSenderTypingLapse: a local user's typing goes to the other
// servers in the room at once, and a lapse without a stop sends the stop,
// unless the user is typing again here.
func TestEphemeralSenderTypingLapse(t *testing.T) {
	f := newTestFederation(t, &fakeRooms{versions: map[string]gomatrixserverlib.RoomVersion{}}, nil)
	ctx := context.Background()
	for _, u := range []string{"@alice:self.test", "@bob:remote.test"} {
		if err := storage.SetCurrentState(ctx, f.db, storage.CurrentStateRow{RoomID: "!r:self.test", Type: "m.room.member", StateKey: u, EventID: "$" + u, Membership: "join", StreamPos: 1}); err != nil {
			t.Fatal(err)
		}
	}
	typing := []string{}
	e := f.EphemeralSender(func(string) []string { return typing })
	t.Cleanup(e.Stop)
	// Typing EDUs coalesce in the queue: the queued one is the latest.
	n := 0
	latest := func() (queued, typing bool) {
		t.Helper()
		n++
		b, err := storage.ClaimBatch(ctx, f.db, "remote.test", fmt.Sprint("t", n), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.EDUs) == 0 {
			return false, false
		}
		if err := storage.DeleteBatch(ctx, f.db, "remote.test", b.TxnID); err != nil {
			t.Fatal(err)
		}
		var edu struct {
			Content struct {
				Typing bool `json:"typing"`
			} `json:"content"`
		}
		if err := json.Unmarshal(b.EDUs[len(b.EDUs)-1].JSON, &edu); err != nil {
			t.Fatal(err)
		}
		return true, edu.Content.Typing
	}

	e.SendTyping(ctx, "!r:self.test", "@alice:self.test", true, 10*time.Millisecond)
	if q, typ := latest(); !q || !typ {
		t.Fatalf("typing start: queued %v typing %v", q, typ)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		q, typ := latest()
		if q {
			if typ {
				t.Fatal("the lapse sent typing: true")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no stop after the lapse")
		}
		time.Sleep(20 * time.Millisecond)
	}

	typing = []string{"@alice:self.test"} // typing again here: no stop
	e.SendTyping(ctx, "!r:self.test", "@alice:self.test", true, 10*time.Millisecond)
	if q, typ := latest(); !q || !typ {
		t.Fatalf("typing again: queued %v typing %v", q, typ)
	}
	time.Sleep(time.Second)
	if q, _ := latest(); q {
		t.Fatal("a lapse while still typing sent a stop")
	}

	// A remote user's typing is not this server's to send.
	e.SendTyping(ctx, "!r:self.test", "@bob:remote.test", true, time.Minute)
	if q, _ := latest(); q {
		t.Fatal("a remote user's typing was sent")
	}
}
