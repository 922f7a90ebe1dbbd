package test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// TestDurabilitySIGKILL runs the real binary, has several users send
// concurrently, kills the process with SIGKILL mid-stream and restarts
// it on the same data: every event whose PUT was answered 200 must still
// be there, exactly once, in each sender's order; a sync token taken
// before the kill must still deliver them; and a send whose answer was
// lost, retried with its transaction ID, must not be stored twice.
func TestDurabilitySIGKILL(t *testing.T) {
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dir := t.TempDir()
		dbURL := storagetest.NewURL(t, d)
		if d == storage.SQLite {
			dbURL = "sqlite:" + filepath.Join(dir, "enclave.db")
		}
		p := startBinary(t, bin, dir, dbURL)
		ctx := ctxT(t)

		const senders = 6
		var clis []*mautrix.Client
		for i := 0; i < senders; i++ {
			clis = append(clis, sessionClient(t, p.URL, Register(t, p.URL, fmt.Sprintf("s%d", i), "pw", false)))
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
		filter := timelineFilter(t, clis[0], 1000)
		before, err := clis[0].SyncRequest(ctx, 0, "", filter, false, "")
		if err != nil {
			t.Fatal(err)
		}

		type ack struct {
			sender id.UserID
			seq    int
			event  id.EventID
		}
		var (
			mu       sync.Mutex
			acks     []ack
			inflight = make([]string, senders) // txn of the send whose answer was lost
			total    atomic.Int64
		)
		sendCtx, stopSends := context.WithCancel(ctx)
		defer stopSends()
		var wg sync.WaitGroup
		for i, c := range clis {
			wg.Add(1)
			go func(i int, c *mautrix.Client) {
				defer wg.Done()
				for seq := 0; ; seq++ {
					txn := fmt.Sprintf("d%d-%d", i, seq)
					resp, err := c.SendMessageEvent(sendCtx, room, event.EventMessage,
						map[string]any{"msgtype": "m.text", "body": txn}, mautrix.ReqSendEvent{TransactionID: txn})
					if err != nil {
						mu.Lock()
						inflight[i] = txn
						mu.Unlock()
						return // the server is gone (or the test ended)
					}
					mu.Lock()
					acks = append(acks, ack{c.UserID, seq, resp.EventID})
					mu.Unlock()
					total.Add(1)
				}
			}(i, c)
		}
		// Kill while the senders are going full tilt.
		deadline := time.Now().Add(30 * time.Second)
		for total.Load() < 150 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		p.kill()
		wg.Wait()
		if len(acks) < 150 {
			t.Fatalf("only %d sends were acknowledged before the kill", len(acks))
		}

		p = startBinary(t, bin, dir, dbURL)
		for i := range clis {
			clis[i] = rebase(t, clis[i], p.URL)
		}
		all := pageAll(t, clis[1], room, "", "", mautrix.DirectionForward, 100)
		noDuplicates(t, "after the kill", ids(all))
		pos := map[id.EventID]int{}
		byID := map[id.EventID]*event.Event{}
		for i, e := range all {
			pos[e.ID], byID[e.ID] = i, e
		}
		last := map[id.UserID]int{}
		for _, a := range acks {
			i, ok := pos[a.event]
			if !ok {
				t.Fatalf("acknowledged event %s (%s #%d) lost after SIGKILL (%d acknowledged, %d events stored)", a.event, a.sender, a.seq, len(acks), len(all))
			}
			if byID[a.event].Sender != a.sender {
				t.Fatalf("event %s: sender %s, want %s", a.event, byID[a.event].Sender, a.sender)
			}
			if prev, ok := last[a.sender]; ok && i <= prev {
				t.Fatalf("%s's message #%d is out of order after restart", a.sender, a.seq)
			}
			last[a.sender] = i
		}
		// The sync token from before the kill delivers every acknowledged send.
		delivered := map[id.EventID]bool{}
		since := before.NextBatch
		for len(delivered) < len(acks) {
			resp, err := clis[0].SyncRequest(ctx, 0, since, filter, false, "")
			if err != nil {
				t.Fatal(err)
			}
			jr := resp.Rooms.Join[room]
			if jr == nil || len(jr.Timeline.Events) == 0 {
				break
			}
			if jr.Timeline.Limited {
				t.Fatal("sync from the pre-kill token was limited with a 1000-event filter")
			}
			for _, e := range jr.Timeline.Events {
				delivered[e.ID] = true
			}
			since = resp.NextBatch
		}
		for _, a := range acks {
			if !delivered[a.event] {
				t.Fatalf("acknowledged event %s not delivered by /sync from the pre-kill token", a.event)
			}
		}
		// Retrying the unanswered sends: at most one copy each, and the new
		// server's stream keeps going (no position reused).
		for i, txn := range inflight {
			if txn == "" {
				continue
			}
			resp, err := clis[i].SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": txn}, mautrix.ReqSendEvent{TransactionID: txn})
			if err != nil {
				t.Fatalf("retrying %s after restart: %v", txn, err)
			}
			if prior, ok := pos[resp.EventID]; ok && body(all[prior]) != txn {
				t.Fatalf("retry of %s returned unrelated event %s", txn, resp.EventID)
			}
		}
		final := pageAll(t, clis[0], room, "", "", mautrix.DirectionForward, 100)
		noDuplicates(t, "after retries", ids(final))
		bodies := map[string]int{}
		for _, e := range messagesOnly(final) {
			bodies[body(e)]++
			if bodies[body(e)] > 1 {
				t.Fatalf("message %q stored twice", body(e))
			}
		}
		for i, txn := range inflight {
			if txn != "" && bodies[txn] != 1 {
				t.Fatalf("sender %d's retried %s stored %d times", i, txn, bodies[txn])
			}
		}
		// A clean stop (SIGTERM) keeps everything too, and does not wait out
		// a client's long-poll: the poll is answered and the process exits 0.
		now, err := clis[0].SyncRequest(ctx, 0, since, filter, false, "")
		if err != nil {
			t.Fatal(err)
		}
		polled := make(chan error, 1)
		go func() {
			_, err := clis[0].SyncRequest(ctx, 30000, now.NextBatch, filter, false, "")
			polled <- err
		}()
		time.Sleep(200 * time.Millisecond) // let the poll start waiting
		stopAt := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Fatal("enclave did not stop on SIGTERM")
		}
		if took := time.Since(stopAt); took > 5*time.Second || p.cmd.ProcessState.ExitCode() != 0 {
			t.Fatalf("SIGTERM with a long-poll open: exit %d after %v:\n%s", p.cmd.ProcessState.ExitCode(), took, p.out)
		}
		if err := <-polled; err != nil {
			t.Fatalf("the open long-poll was not answered on shutdown: %v", err)
		}
		p = startBinary(t, bin, dir, dbURL)
		again := pageAll(t, rebase(t, clis[0], p.URL), room, "", "", mautrix.DirectionForward, 100)
		sameIDs(t, "after SIGTERM restart", ids(again), ids(final))
	})
}

// TestDurabilityRolledBackPositionNotReused: a transaction that took a
// stream position and rolled back (here: a room-server hook fails the
// send) must not let a client hold a sync token past every stored row.
// Otherwise, after a restart, the next event takes that same position and
// a /sync from the token skips it for good.
func TestDurabilityRolledBackPositionNotReused(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dataDir, dbURL := t.TempDir(), storagetest.NewURL(t, d)
		srv := Start(t, d, Options{DataDir: dataDir, DBURL: dbURL})
		ctx := ctxT(t)
		alice := sessionClient(t, srv.URL, Register(t, srv.URL, "alice", "pw", false))
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		srv.Rooms.AddHook(func(_ context.Context, _ *storage.Tx, ev *storage.Event, _ gomatrixserverlib.PDU) error {
			if strings.Contains(string(ev.JSON), "fail me") {
				return errors.New("hook refuses")
			}
			return nil
		})
		if _, err := alice.SendText(ctx, room, "fail me"); err == nil {
			t.Fatal("the hook did not fail the send")
		}
		tok, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		srv.Stop()
		srv = Start(t, d, Options{DataDir: dataDir, DBURL: dbURL})
		alice = rebase(t, alice, srv.URL)
		sent, err := alice.SendText(ctx, room, "after restart")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := alice.SyncRequest(ctx, 0, tok.NextBatch, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		var got []id.EventID
		if jr := resp.Rooms.Join[room]; jr != nil {
			got = ids(jr.Timeline.Events)
		}
		sameIDs(t, "sync from the token taken after the rolled-back send", got, []id.EventID{sent.EventID})
	})
}
