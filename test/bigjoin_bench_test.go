package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"enclave/config"
	"enclave/roomserver"
	"enclave/storage"
)

// TestBigRoomJoin is the faster-joins generator (issue 12, acceptance 3),
// not a timed CI test: it runs only with ENCLAVE_BENCH_BIGJOIN=1. Server A
// holds a room of ENCLAVE_BENCH_EVENTS (30,000) state and timeline events
// with ENCLAVE_BENCH_MEMBERS (5,000) joined members, written in bulk
// through A's room server (ImportEvents, the importer's batch path: every
// event built, authorised and stored as a send would be). A user on B then
// joins; the test logs the join latency, the process's peak RSS (both
// servers run in this process, so it bounds B's) and the Go heap, then
// checks that messages sent right after the join are delivered both ways.
// ENCLAVE_BENCH_FASTER=1 turns on federation.faster_joins on B.
//
//	ENCLAVE_BENCH_BIGJOIN=1 go test -tags goolm -count=1 -timeout 30m -run TestBigRoomJoin -v ./test
func TestBigRoomJoin(t *testing.T) {
	if os.Getenv("ENCLAVE_BENCH_BIGJOIN") == "" {
		t.Skip("generator: set ENCLAVE_BENCH_BIGJOIN=1")
	}
	events := benchEnv("ENCLAVE_BENCH_EVENTS", 30000)
	members := benchEnv("ENCLAVE_BENCH_MEMBERS", 5000)
	d := storage.SQLite
	if os.Getenv("ENCLAVE_BENCH_STORE") == "postgres" {
		d = storage.Postgres
	}
	c := NewFedCluster(t, d, d)
	faster := os.Getenv("ENCLAVE_BENCH_FASTER") != ""
	c.Nodes[1].Configure = func(cfg *config.Config) { cfg.Federation.FasterJoins = faster }
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "big"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := room.RoomID.String()

	// Fill the room: members joins spread evenly among the messages.
	start := time.Now()
	ctx := context.Background()
	const batch = 1000
	every := max(1, events/max(1, members))
	joined := 0
	for done := 0; done < events; {
		n := min(batch, events-done)
		base := done
		_, err := a.Rooms.ImportEvents(ctx, roomID, n, func(i int, _ string) (roomserver.SendRequest, error) {
			k := base + i
			if joined < members && k%every == 0 {
				joined++
				uid := fmt.Sprintf("@m%05d:%s", joined, a.ServerName)
				return roomserver.SendRequest{Sender: uid, Type: "m.room.member", StateKey: &uid,
					Content: json.RawMessage(`{"membership":"join","displayname":"member ` + strconv.Itoa(joined) + `"}`)}, nil
			}
			c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("history %d", k)})
			return roomserver.SendRequest{Sender: alice.UserID.String(), Type: "m.room.message", Content: c}, nil
		}, nil)
		if err != nil {
			t.Fatalf("filling the room at %d: %v", done, err)
		}
		done += n
	}
	st, err := a.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("room on A: %d events (%d members joined), %d state events, filled in %v", events, joined, len(st), time.Since(start).Round(time.Millisecond))
	fedQueueEmpty(t, a, b, time.Minute) // nothing queued for B yet; settles A

	// Sample the process's RSS and Go heap while B joins and resyncs.
	var peakRSS, peakHeap atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			if r := mediaRSS(); r > peakRSS.Load() {
				peakRSS.Store(r)
			}
			runtime.ReadMemStats(&ms)
			if h := int64(ms.HeapInuse); h > peakHeap.Load() {
				peakHeap.Store(h)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	before := mediaRSS()
	jctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start = time.Now()
	if _, err := bob.JoinRoom(jctx, roomID, &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err != nil {
		t.Fatalf("bob joining the big room: %v", err)
	}
	joinTook := time.Since(start)
	t.Logf("join answered in %v (RSS before %d MiB)", joinTook.Round(time.Millisecond), before>>20)

	// Messages both ways, sent right after the join answered.
	start = time.Now()
	fedSendSeq(t, bob, room.RoomID, fedSeq("from B ", 5))
	fedSendSeq(t, alice, room.RoomID, fedSeq("from A ", 5))
	waitForBody(t, alice, room.RoomID, "from B 004", 5*time.Minute)
	waitForBody(t, bob, room.RoomID, "from A 004", 5*time.Minute)
	t.Logf("messages both ways delivered %v after the join answered", time.Since(start).Round(time.Millisecond))

	// The full state reaches B: every member, read back from B's store.
	start = time.Now()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		stB, err := b.Rooms.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for k := range stB {
			if k.Type == "m.room.member" && strings.HasPrefix(k.StateKey, "@m") {
				n++
			}
		}
		if n == joined {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B holds %d of %d members", n, joined)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("full state on B %v after the messages", time.Since(start).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	t.Logf("BENCH bigjoin store=%s faster_joins=%v events=%d members=%d join_ms=%d peak_rss_mib=%d peak_heap_mib=%d",
		d, faster, events, joined, joinTook.Milliseconds(), peakRSS.Load()>>20, peakHeap.Load()>>20)
}

func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
