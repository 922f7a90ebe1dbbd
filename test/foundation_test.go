package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// syncLog is what one client's incremental /sync loop saw of a room.
type syncLog struct {
	events  []*event.Event // timeline events in arrival order
	batches []syncBatch    // next_batch after each response
	limited bool
}

type syncBatch struct {
	token string
	seen  int // timeline events received up to and including this response
}

// followSync long-polls /sync from since until done(log) holds, recording
// the room's timeline. Any limited timeline is recorded (callers that
// expect none assert on it).
func followSync(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, filterID, since string, done func(*syncLog) bool) (*syncLog, string, error) {
	l := &syncLog{}
	for !done(l) {
		if ctx.Err() != nil {
			return l, since, fmt.Errorf("sync did not finish: saw %d events: %w", len(l.events), ctx.Err())
		}
		resp, err := cli.SyncRequest(ctx, 10000, since, filterID, false, "")
		if err != nil {
			return l, since, err
		}
		if jr := resp.Rooms.Join[roomID]; jr != nil {
			l.limited = l.limited || jr.Timeline.Limited
			l.events = append(l.events, jr.Timeline.Events...)
		}
		since = resp.NextBatch
		l.batches = append(l.batches, syncBatch{since, len(l.events)})
	}
	return l, since, nil
}

func countMessages(l *syncLog) int { return len(messagesOnly(l.events)) }

// TestFoundationRoundTrip drives the real server with mautrix through the
// whole basic life of a room: two users register and log in, create a
// room, invite, join, send 200 messages concurrently from two devices,
// read them back with /messages in both directions and with incremental
// /sync (no duplicate, no gap, no limited timeline, own transaction IDs
// only on the sending device), then restart the server on the same data
// and continue /sync from the old tokens without loss.
func TestFoundationRoundTrip(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dataDir, dbURL := t.TempDir(), storagetest.NewURL(t, d)
		srv := Start(t, d, Options{DataDir: dataDir, DBURL: dbURL})
		ctx := ctxT(t)

		aliceReg := registerClient(t, srv.URL, "alice", "alice-pass-1")
		bobReg := registerClient(t, srv.URL, "bob", "bob-pass-1")
		alice := loginClient(t, srv.URL, "alice", "alice-pass-1")
		bob := loginClient(t, srv.URL, "bob", "bob-pass-1")
		if alice.DeviceID == aliceReg.DeviceID || bob.DeviceID == bobReg.DeviceID {
			t.Fatal("login reused the registration device")
		}
		for _, c := range []*mautrix.Client{aliceReg, bobReg, alice, bob} {
			who, err := c.Whoami(ctx)
			if err != nil || who.UserID != c.UserID || who.DeviceID != c.DeviceID {
				t.Fatalf("whoami %s/%s: %+v %v", c.UserID, c.DeviceID, who, err)
			}
		}

		bobFilter := timelineFilter(t, bob, 500)
		first, err := bob.SyncRequest(ctx, 0, "", bobFilter, false, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(first.Rooms.Join)+len(first.Rooms.Invite) != 0 {
			t.Fatalf("bob is in rooms before any were made: %+v", first.Rooms)
		}

		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "foundation"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		// The invite reaches bob's long-poll with the room's stripped state.
		inv, err := bob.SyncRequest(ctx, 5000, first.NextBatch, bobFilter, false, "")
		if err != nil {
			t.Fatal(err)
		}
		ir := inv.Rooms.Invite[room]
		if ir == nil {
			t.Fatalf("invite not in bob's sync: %+v", inv.Rooms)
		}
		var sawName bool
		for _, e := range ir.State.Events {
			if e.Type.Type == event.StateRoomName.Type && e.Content.Raw["name"] == "foundation" {
				sawName = true
			}
		}
		if !sawName {
			t.Fatal("invite_state lacks the room name")
		}
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		members, err := bob.JoinedMembers(ctx, room)
		if err != nil || len(members.Joined) != 2 {
			t.Fatalf("joined members: %+v %v", members, err)
		}
		for _, u := range []id.UserID{alice.UserID, bob.UserID} {
			if _, ok := members.Joined[u]; !ok {
				t.Fatalf("%s not among joined members %+v", u, members.Joined)
			}
		}
		joined, err := bob.SyncRequest(ctx, 5000, inv.NextBatch, bobFilter, false, "")
		if err != nil {
			t.Fatal(err)
		}
		if joined.Rooms.Join[room] == nil {
			t.Fatalf("bob's join not in sync: %+v", joined.Rooms)
		}
		start := joined.NextBatch

		// Two incremental sync loops follow the sends: bob's, and alice's
		// other device.
		const perDevice = 100
		aliceRegFilter := timelineFilter(t, aliceReg, 500)
		type result struct {
			log *syncLog
			end string
			err error
		}
		follow := func(c *mautrix.Client, filter string) chan result {
			ch := make(chan result, 1)
			go func() {
				l, end, err := followSync(ctx, c, room, filter, start, func(l *syncLog) bool { return countMessages(l) >= 2*perDevice })
				ch <- result{l, end, err}
			}()
			return ch
		}
		bobSync, aliceRegSync := follow(bob, bobFilter), follow(aliceReg, aliceRegFilter)

		// Two devices send concurrently, each one request at a time.
		sent := map[id.UserID][]id.EventID{}
		txns := map[id.EventID]string{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, c := range []*mautrix.Client{alice, bob} {
			wg.Add(1)
			go func(c *mautrix.Client) {
				defer wg.Done()
				for i := 0; i < perDevice; i++ {
					txn := fmt.Sprintf("t%d-%s", i, c.DeviceID)
					resp, err := c.SendMessageEvent(ctx, room, event.EventMessage,
						map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%s %d", c.UserID, i)}, mautrix.ReqSendEvent{TransactionID: txn})
					if err != nil {
						t.Errorf("send %s %d: %v", c.UserID, i, err)
						return
					}
					mu.Lock()
					sent[c.UserID] = append(sent[c.UserID], resp.EventID)
					txns[resp.EventID] = txn
					mu.Unlock()
				}
			}(c)
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		// A retried transaction returns the same event and stores nothing.
		again, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "dup"},
			mautrix.ReqSendEvent{TransactionID: fmt.Sprintf("t0-%s", alice.DeviceID)})
		if err != nil || again.EventID != sent[alice.UserID][0] {
			t.Fatalf("retried txn: got %v %v, want %s", again, err, sent[alice.UserID][0])
		}

		// /messages backwards from the end and forwards from the start.
		back := pageAll(t, bob, room, "", "", mautrix.DirectionBackward, 17)
		fwd := pageAll(t, bob, room, "", "", mautrix.DirectionForward, 23)
		sameIDs(t, "backward paging reversed vs forward paging", ids(reversed(back)), ids(fwd))
		noDuplicates(t, "forward paging", ids(fwd))
		if fwd[0].Type.Type != event.StateCreate.Type {
			t.Fatalf("forward paging starts with %s, not the create event", fwd[0].Type)
		}
		msgs := messagesOnly(fwd)
		if len(msgs) != 2*perDevice {
			t.Fatalf("/messages holds %d messages, want %d", len(msgs), 2*perDevice)
		}
		// Each device's messages are in the order it sent them.
		pos := map[id.EventID]int{}
		for i, e := range msgs {
			pos[e.ID] = i
		}
		for u, evs := range sent {
			for i, e := range evs {
				p, ok := pos[e]
				if !ok {
					t.Fatalf("acknowledged event %s of %s missing from /messages", e, u)
				}
				if i > 0 && p <= pos[evs[i-1]] {
					t.Fatalf("%s's message %d is before its message %d", u, i, i-1)
				}
				if want := fmt.Sprintf("%s %d", u, i); body(msgs[p]) != want || msgs[p].Sender != u {
					t.Fatalf("event %s: sender %s body %q, want %s %q", e, msgs[p].Sender, body(msgs[p]), u, want)
				}
			}
		}
		// Paging forwards from a sync token yields exactly what came after it.
		since := pageAll(t, bob, room, start, "", mautrix.DirectionForward, 50)
		sameIDs(t, "forward paging from the pre-send token", ids(since), ids(msgs))

		var bobLog *syncLog
		for _, f := range []struct {
			name string
			ch   chan result
		}{{"bob", bobSync}, {"alice's other device", aliceRegSync}} {
			r, name := <-f.ch, f.name
			if r.err != nil {
				t.Fatalf("%s sync: %v", name, r.err)
			}
			if r.log.limited {
				t.Fatalf("%s sync: limited timeline with a 500-event filter", name)
			}
			noDuplicates(t, name+" sync", ids(r.log.events))
			sameIDs(t, name+" sync vs /messages", ids(r.log.events), ids(msgs))
			for _, e := range r.log.events {
				own := name == "bob" && e.Sender == bob.UserID
				if !own && e.Unsigned.TransactionID != "" {
					t.Fatalf("%s sees transaction_id %q of another device's event %s", name, e.Unsigned.TransactionID, e.ID)
				}
				if own && e.Unsigned.TransactionID != txns[e.ID] {
					t.Fatalf("bob's own event %s: transaction_id %q, want %q", e.ID, e.Unsigned.TransactionID, txns[e.ID])
				}
			}
			if name == "bob" {
				bobLog = r.log
			}
		}
		endToken := bobLog.batches[len(bobLog.batches)-1].token
		// A mid-stream token: the first batch boundary past the half.
		var mid syncBatch
		for _, b := range bobLog.batches {
			if b.seen >= perDevice {
				mid = b
				break
			}
		}
		afterMid := ids(bobLog.events[mid.seen:])

		// Restart on the same data dir and database.
		srv.Stop()
		srv = Start(t, d, Options{DataDir: dataDir, DBURL: dbURL})
		alice, bob = rebase(t, alice, srv.URL), rebase(t, bob, srv.URL)
		if who, err := bob.Whoami(ctx); err != nil || who.UserID != bob.UserID {
			t.Fatalf("bob's access token after restart: %+v %v", who, err)
		}
		quiet, err := bob.SyncRequest(ctx, 0, endToken, bobFilter, false, "")
		if err != nil {
			t.Fatal(err)
		}
		if jr := quiet.Rooms.Join[room]; jr != nil && len(jr.Timeline.Events) > 0 {
			t.Fatalf("sync from the last token after restart repeats %d events", len(jr.Timeline.Events))
		}
		// A long-poll from the old token wakes for messages sent after restart.
		const after = 5
		woke := make(chan result, 1)
		go func() {
			l, end, err := followSync(ctx, bob, room, bobFilter, endToken, func(l *syncLog) bool { return countMessages(l) >= after })
			woke <- result{l, end, err}
		}()
		var late []id.EventID
		for i := 0; i < after; i++ {
			resp, err := alice.SendText(ctx, room, fmt.Sprintf("after restart %d", i))
			if err != nil {
				t.Fatal(err)
			}
			late = append(late, resp.EventID)
		}
		select {
		case res := <-woke:
			if res.err != nil {
				t.Fatal(res.err)
			}
			if res.log.limited {
				t.Fatal("post-restart sync was limited")
			}
			sameIDs(t, "sync from the pre-restart token", ids(res.log.events), late)
		case <-time.After(30 * time.Second):
			t.Fatal("long-poll from the pre-restart token never returned the new messages")
		}
		// From the mid-stream token: the second half and the new messages.
		res, _, err := followSync(ctx, bob, room, bobFilter, mid.token, func(l *syncLog) bool { return len(l.events) >= len(afterMid)+after })
		if err != nil {
			t.Fatal(err)
		}
		if res.limited {
			t.Fatal("sync from the mid token was limited")
		}
		sameIDs(t, "sync from the mid-stream token after restart", ids(res.events), append(append([]id.EventID{}, afterMid...), late...))
		full := messagesOnly(pageAll(t, bob, room, "", "", mautrix.DirectionBackward, 100))
		if len(full) != 2*perDevice+after {
			t.Fatalf("after restart /messages holds %d messages, want %d", len(full), 2*perDevice+after)
		}
	})
}
