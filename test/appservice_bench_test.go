package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"enclave/config"
	"enclave/storage"
)

// TestAppServiceFanoutBench is acceptance 4 of issue 14, opt-in (it is a
// measurement, not a check CI should time): ENCLAVE_APPSERVICE_BENCH=1.
// mxbench's fanout load — a 50-member room, every member long-polling
// /sync, 10 senders in a closed loop, 2000 messages — with one of the
// members an appservice's namespace user, and a bridge (a raw HTTP
// server) timing when each message reaches it. Delivery latency is from
// the start of the message's PUT to the bridge's receipt of the
// transaction holding it. Every message must arrive exactly once; the
// p99 is reported, and with ENCLAVE_APPSERVICE_BENCH_STRICT=1 it must be
// at most 100 ms.
//
//	ENCLAVE_APPSERVICE_BENCH=1 go test -tags goolm -count=1 ./test -run TestAppServiceFanoutBench -v
//
// Knobs: ENCLAVE_APPSERVICE_BENCH_MESSAGES (2000), _SENDERS (10),
// _MEMBERS (50), _RATE (messages per second over all senders; 0, the
// default, is fanout's closed loop: each sender sends as soon as its last
// PUT answered, which saturates the server).
func TestAppServiceFanoutBench(t *testing.T) {
	if os.Getenv("ENCLAVE_APPSERVICE_BENCH") == "" {
		t.Skip("a benchmark: set ENCLAVE_APPSERVICE_BENCH=1 to run it")
	}
	knob := func(name string, def int) int {
		if n, err := strconv.Atoi(os.Getenv("ENCLAVE_APPSERVICE_BENCH_" + name)); err == nil && n > 0 {
			return n
		}
		return def
	}
	messages, senders, members, rate := knob("MESSAGES", 2000), knob("SENDERS", 10), knob("MEMBERS", 50), knob("RATE", 0)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		res := runAppServiceFanout(t, d, messages, senders, members, rate)
		t.Logf("RESULT store=%s messages=%d senders=%d members=%d rate=%d send_msgs_per_s=%.1f put_p50_ms=%.1f put_p99_ms=%.1f bridge_p50_ms=%.1f bridge_p95_ms=%.1f bridge_p99_ms=%.1f bridge_max_ms=%.1f from_commit_p50_ms=%.1f from_commit_p99_ms=%.1f txns=%d undelivered=%d dup=%d",
			d, messages, senders, members, rate, res.rate, res.put[0], res.put[2], res.del[0], res.del[1], res.del[2], res.del[3], res.fromTS[0], res.fromTS[2], res.txns, res.undelivered, res.dups)
		if res.undelivered != 0 || res.dups != 0 {
			t.Fatalf("%d messages never reached the bridge, %d reached it twice", res.undelivered, res.dups)
		}
		if os.Getenv("ENCLAVE_APPSERVICE_BENCH_STRICT") != "" && res.del[2] > 100 {
			t.Fatalf("bridge delivery p99 %.1f ms, want at most 100 ms", res.del[2])
		}
	})
}

type asFanoutResult struct {
	rate              float64
	put, del, fromTS  [4]float64 // p50, p95, p99, max (ms)
	txns              int
	undelivered, dups int
}

// pct returns the p50, p95, p99 and max of ms.
func pct(ms []float64) [4]float64 {
	if len(ms) == 0 {
		return [4]float64{}
	}
	sort.Float64s(ms)
	at := func(p float64) float64 { return ms[min(len(ms)-1, int(p*float64(len(ms))))] }
	return [4]float64{at(0.50), at(0.95), at(0.99), ms[len(ms)-1]}
}

func runAppServiceFanout(t *testing.T, d storage.Dialect, messages, senders, members, rate int) asFanoutResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The bridge: records when each benchmark message first arrives.
	const hsToken = "bench-hs-token"
	var mu sync.Mutex
	got := map[string]time.Time{}
	fromTS := map[string]float64{} // receipt - origin_server_ts, ms
	seen := map[string]int{}
	txns := 0
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bridge := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+hsToken {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		var body struct {
			Events []struct {
				Type    string `json:"type"`
				TS      int64  `json:"origin_server_ts"`
				Content struct {
					ID string `json:"bench_id"`
				} `json:"content"`
			} `json:"events"`
		}
		b, _ := io.ReadAll(r.Body)
		now := time.Now()
		_ = json.Unmarshal(b, &body)
		mu.Lock()
		txns++
		for _, ev := range body.Events {
			if ev.Type == "m.room.message" && ev.Content.ID != "" {
				seen[ev.Content.ID]++
				if _, ok := got[ev.Content.ID]; !ok {
					got[ev.Content.ID] = now
					fromTS[ev.Content.ID] = float64(now.UnixMicro()-ev.TS*1000) / 1000
				}
			}
		}
		mu.Unlock()
		_, _ = w.Write([]byte("{}"))
	})}
	go func() { _ = bridge.Serve(ln) }()
	defer bridge.Close()

	path := filepath.Join(t.TempDir(), "bench.yaml")
	reg := fmt.Sprintf("id: bench\nurl: http://%s\nas_token: bench-as-token\nhs_token: %s\nsender_localpart: benchbot\nrate_limited: false\nnamespaces:\n  users:\n  - regex: '@bench_.*:localhost'\n    exclusive: true\n", ln.Addr(), hsToken)
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := Start(t, d, Options{Configure: func(c *config.Config) {
		c.AppServices.ConfigFiles = []string{path}
		c.Log.Level = "warn"
	}})
	cli := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	call := func(method, u, token string, in, out any) (int, error) {
		var rd io.Reader
		if in != nil {
			b, _ := json.Marshal(in)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rd)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := cli.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil {
			_ = json.Unmarshal(b, out)
		}
		if resp.StatusCode != 200 {
			return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, u, resp.StatusCode, b)
		}
		return 200, nil
	}
	v3 := srv.URL + "/_matrix/client/v3"

	// The room: members-1 users and the bridge's puppet.
	users := make([]RegisterResult, members-1)
	for i := range users {
		users[i] = Register(t, srv.URL, fmt.Sprintf("member%d", i), "bench-password", false)
	}
	var room struct {
		RoomID string `json:"room_id"`
	}
	if _, err := call("POST", v3+"/createRoom", users[0].AccessToken, map[string]any{"preset": "public_chat"}, &room); err != nil {
		t.Fatal(err)
	}
	for _, u := range users[1:] {
		if _, err := call("POST", v3+"/join/"+url.PathEscape(room.RoomID), u.AccessToken, map[string]any{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := call("POST", v3+"/register", "bench-as-token", map[string]any{"type": "m.login.application_service", "username": "bench_puppet", "inhibit_login": true}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := call("POST", v3+"/join/"+url.PathEscape(room.RoomID)+"?user_id="+url.QueryEscape("@bench_puppet:localhost"), "bench-as-token", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}

	// Every member long-polls /sync, as in fanout.
	filter, _ := json.Marshal(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 50}, "state": map[string]any{"lazy_load_members": true}}, "presence": map[string]any{"types": []string{}}})
	var syncers sync.WaitGroup
	for _, u := range users {
		var first struct {
			NextBatch string `json:"next_batch"`
		}
		if _, err := call("GET", v3+"/sync?timeout=0&filter="+url.QueryEscape(string(filter)), u.AccessToken, nil, &first); err != nil {
			t.Fatal(err)
		}
		syncers.Add(1)
		go func() {
			defer syncers.Done()
			since := first.NextBatch
			for ctx.Err() == nil {
				var s struct {
					NextBatch string `json:"next_batch"`
				}
				if _, err := call("GET", v3+"/sync?timeout=30000&since="+url.QueryEscape(since)+"&filter="+url.QueryEscape(string(filter)), u.AccessToken, nil, &s); err == nil && s.NextBatch != "" {
					since = s.NextBatch
				} else if ctx.Err() == nil {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)

	// Send: senders closed loops over the messages.
	start := make([]time.Time, messages)
	putMS := make([]float64, messages)
	next := make(chan int, messages)
	for i := range messages {
		next <- i
	}
	close(next)
	t0 := time.Now()
	var wg sync.WaitGroup
	var sendErr error
	var errMu sync.Mutex
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := users[s%len(users)]
			for i := range next {
				if rate > 0 {
					// Open loop: message i is due at i/rate.
					time.Sleep(time.Until(t0.Add(time.Duration(i) * time.Second / time.Duration(rate))))
				}
				start[i] = time.Now()
				_, err := call("PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/b%d", v3, url.PathEscape(room.RoomID), i), u.AccessToken,
					map[string]any{"msgtype": "m.text", "body": "bench " + strconv.Itoa(i), "bench_id": strconv.Itoa(i)}, nil)
				putMS[i] = float64(time.Since(start[i])) / float64(time.Millisecond)
				if err != nil {
					errMu.Lock()
					sendErr = err
					errMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	// Drain: every message at the bridge, or 30 s.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == messages {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // anything sent twice shows now
	cancel()
	srv.Stop()
	syncers.Wait()

	mu.Lock()
	defer mu.Unlock()
	res := asFanoutResult{rate: float64(messages) / wall.Seconds(), put: pct(putMS), txns: txns}
	var del, ts []float64
	for i := range messages {
		at, ok := got[strconv.Itoa(i)]
		if !ok {
			res.undelivered++
			continue
		}
		if seen[strconv.Itoa(i)] > 1 {
			res.dups++
		}
		del = append(del, float64(at.Sub(start[i]))/float64(time.Millisecond))
		ts = append(ts, fromTS[strconv.Itoa(i)])
	}
	res.del, res.fromTS = pct(del), pct(ts)
	return res
}
