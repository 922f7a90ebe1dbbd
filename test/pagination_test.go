package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// sendConcurrently has every client send n messages, all clients at once,
// each one request at a time, and returns the acknowledged event IDs.
func sendConcurrently(t *testing.T, ctx context.Context, clis []*mautrix.Client, room id.RoomID, n int, tag string) map[id.EventID]bool {
	t.Helper()
	var mu sync.Mutex
	acked := map[id.EventID]bool{}
	var wg sync.WaitGroup
	for i, c := range clis {
		wg.Add(1)
		go func(i int, c *mautrix.Client) {
			defer wg.Done()
			for j := 0; j < n; j++ {
				r, err := c.SendText(ctx, room, fmt.Sprintf("%s %d.%d", tag, i, j))
				if err != nil {
					t.Errorf("send: %v", err)
					return
				}
				mu.Lock()
				acked[r.EventID] = true
				mu.Unlock()
			}
		}(i, c)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return acked
}

// TestPaginationFromLimitedSync checks that when a /sync timeline is cut
// short (limited), paging /messages back from its prev_batch reaches every
// event, exactly once and in order, for events sent concurrently by many
// senders: once for a single large gap, and continuously, for a client
// whose small-limit sync loop runs while the senders send.
func TestPaginationFromLimitedSync(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		const senders, perSender = 8, 25
		var clis []*mautrix.Client
		for i := 0; i < senders; i++ {
			clis = append(clis, sessionClient(t, srv.URL, Register(t, srv.URL, fmt.Sprintf("p%d", i), "pw", false)))
		}
		created, err := clis[0].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		for _, c := range clis[1:] {
			if _, err := c.JoinRoomByID(ctx, room); err != nil {
				t.Fatal(err)
			}
		}
		reader := loginClient(t, srv.URL, "p0", "pw")
		small := timelineFilter(t, reader, 5)
		s0, err := reader.SyncRequest(ctx, 0, "", small, false, "")
		if err != nil {
			t.Fatal(err)
		}
		t0 := s0.NextBatch

		// One big gap: 200 concurrent sends, then one sync with limit 5.
		acked := sendConcurrently(t, ctx, clis, room, perSender, "gap")
		want := ids(pageAll(t, reader, room, t0, "", mautrix.DirectionForward, 1000))
		if len(want) != senders*perSender {
			t.Fatalf("/messages forward from the sync token: %d events, want %d", len(want), senders*perSender)
		}
		for _, e := range want {
			if !acked[e] {
				t.Fatalf("/messages from the sync token returned %s, which no sender sent", e)
			}
		}
		s1, err := reader.SyncRequest(ctx, 0, t0, small, false, "")
		if err != nil {
			t.Fatal(err)
		}
		jr := s1.Rooms.Join[room]
		if jr == nil || !jr.Timeline.Limited || len(jr.Timeline.Events) != 5 || jr.Timeline.PrevBatch == "" {
			t.Fatalf("sync after 200 sends with limit 5: want a limited 5-event timeline with prev_batch, got %+v", jr)
		}
		back := pageAll(t, reader, room, jr.Timeline.PrevBatch, t0, mautrix.DirectionBackward, 7)
		got := append(ids(reversed(back)), ids(jr.Timeline.Events)...)
		sameIDs(t, "limited sync + /messages back to the since token", got, want)
		// Without a `to`, paging back from prev_batch reaches the room's start.
		whole := pageAll(t, reader, room, jr.Timeline.PrevBatch, "", mautrix.DirectionBackward, 64)
		if last := whole[len(whole)-1]; last.Type.Type != event.StateCreate.Type {
			t.Fatalf("paging back from prev_batch ends at %s, not the create event", last.Type)
		}
		if len(whole) != len(back)+len(pageAll(t, reader, room, t0, "", mautrix.DirectionBackward, 64)) {
			t.Fatalf("paging back from prev_batch to the start: %d events, want %d", len(whole), len(back)+len(pageAll(t, reader, room, t0, "", mautrix.DirectionBackward, 64)))
		}

		// /context's start and end tokens continue exactly where it stops.
		everything := ids(pageAll(t, reader, room, "", "", mautrix.DirectionForward, 1000))
		at := map[id.EventID]int{}
		for i, e := range everything {
			at[e] = i
		}
		mid := want[len(want)/2]
		c, err := reader.Context(ctx, room, mid, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		i := at[mid]
		sameIDs(t, "/context events_before", ids(c.EventsBefore), reversed(everything[i-5:i]))
		sameIDs(t, "/context events_after", ids(c.EventsAfter), everything[i+1:i+6])
		before, err := reader.Messages(ctx, room, c.Start, "", mautrix.DirectionBackward, nil, 3)
		if err != nil {
			t.Fatal(err)
		}
		sameIDs(t, "/messages back from /context start", ids(before.Chunk), reversed(everything[i-8:i-5]))
		after, err := reader.Messages(ctx, room, c.End, "", mautrix.DirectionForward, nil, 3)
		if err != nil {
			t.Fatal(err)
		}
		sameIDs(t, "/messages on from /context end", ids(after.Chunk), everything[i+6:i+9])

		// Continuously: a limit-1 and a limit-5 sync loop run while the
		// senders send, filling each gap from prev_batch back to the
		// previous since token.
		for _, limit := range []int{1, 5} {
			f := timelineFilter(t, reader, limit)
			start, err := reader.SyncRequest(ctx, 0, "", f, false, "")
			if err != nil {
				t.Fatal(err)
			}
			total := senders * perSender
			type out struct {
				evs     []id.EventID
				limited int
				err     error
			}
			done := make(chan out, 1)
			go func() {
				var o out
				since := start.NextBatch
				for len(o.evs) < total {
					resp, err := reader.SyncRequest(ctx, 10000, since, f, false, "")
					if err != nil {
						o.err = err
						break
					}
					if jr := resp.Rooms.Join[room]; jr != nil && len(jr.Timeline.Events) > 0 {
						if len(jr.Timeline.Events) > limit {
							o.err = fmt.Errorf("timeline of %d events with limit %d", len(jr.Timeline.Events), limit)
							break
						}
						if jr.Timeline.Limited {
							o.limited++
							gap, err := pageAllErr(ctx, reader, room, jr.Timeline.PrevBatch, since, mautrix.DirectionBackward, 10)
							if err != nil {
								o.err = err
								break
							}
							o.evs = append(o.evs, ids(reversed(gap))...)
						}
						o.evs = append(o.evs, ids(jr.Timeline.Events)...)
					}
					since = resp.NextBatch
				}
				done <- o
			}()
			sendConcurrently(t, ctx, clis, room, perSender, fmt.Sprintf("live%d", limit))
			o := <-done
			if o.err != nil {
				t.Fatal(o.err)
			}
			want := ids(pageAll(t, reader, room, start.NextBatch, "", mautrix.DirectionForward, 1000))
			noDuplicates(t, fmt.Sprintf("limit %d sync loop", limit), o.evs)
			sameIDs(t, fmt.Sprintf("limit %d sync loop with gap filling", limit), o.evs, want)
			if limit == 1 && o.limited == 0 {
				t.Fatal("the limit-1 loop never saw a limited timeline: the test did not exercise gap filling")
			}
			t.Logf("limit %d: %d limited timelines filled", limit, o.limited)
		}
	})
}

// TestReadYourWrites: once /send (or /createRoom) has answered, the event
// is visible to /messages and /sync, even while a transaction that took a
// lower stream position (here: a send to another room held up inside its
// transaction by a slow hook) has not committed yet.
func TestReadYourWrites(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		alice := sessionClient(t, srv.URL, Register(t, srv.URL, "alice", "pw", false))
		slowRoom, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		srv.Rooms.AddHook(func(_ context.Context, _ *storage.Tx, ev *storage.Event, _ gomatrixserverlib.PDU) error {
			if strings.Contains(string(ev.JSON), "take your time") {
				time.Sleep(700 * time.Millisecond)
			}
			return nil
		})
		s0, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		slow := make(chan error, 1)
		go func() {
			_, err := alice.SendText(ctx, slowRoom.RoomID, "take your time")
			slow <- err
		}()
		time.Sleep(150 * time.Millisecond) // the slow send now holds a position
		fast, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "fast"})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := alice.State(ctx, fast.RoomID); err != nil || st[event.StateRoomName][""] == nil {
			t.Fatalf("state of the room /createRoom just made: %v %v", st, err)
		}
		msgs, err := alice.Messages(ctx, fast.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil || len(msgs.Chunk) == 0 {
			t.Fatalf("/messages of the room /createRoom just made: %v %v", msgs, err)
		}
		sent, err := alice.SendText(ctx, fast.RoomID, "quick")
		if err != nil {
			t.Fatal(err)
		}
		last, err := alice.Messages(ctx, fast.RoomID, "", "", mautrix.DirectionBackward, nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(last.Chunk) != 1 || last.Chunk[0].ID != sent.EventID {
			t.Fatalf("/messages right after /send answered: %v, want %s", ids(last.Chunk), sent.EventID)
		}
		s1, err := alice.SyncRequest(ctx, 0, s0.NextBatch, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		jr := s1.Rooms.Join[fast.RoomID]
		if jr == nil || len(jr.Timeline.Events) == 0 || jr.Timeline.Events[len(jr.Timeline.Events)-1].ID != sent.EventID {
			t.Fatalf("/sync right after /send answered lacks %s", sent.EventID)
		}
		if err := <-slow; err != nil {
			t.Fatal(err)
		}
	})
}
