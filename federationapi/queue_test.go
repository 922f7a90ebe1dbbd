package federationapi

import (
	"context"
	"encoding/json"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
	"enclave/storage"
)

func TestCoalesceKey(t *testing.T) {
	for _, tc := range []struct {
		edu  gomatrixserverlib.EDU
		want string
	}{
		{gomatrixserverlib.EDU{Type: "m.typing", Content: []byte(`{"room_id":"!r:a","user_id":"@u:a","typing":true}`)}, "!r:a|@u:a"},
		{gomatrixserverlib.EDU{Type: "m.typing", Content: []byte(`{"room_id":"!r:a"}`)}, ""},
		{gomatrixserverlib.EDU{Type: "m.presence", Content: []byte(`{"push":[{"user_id":"@u:a","presence":"online"}]}`)}, "@u:a"},
		{gomatrixserverlib.EDU{Type: "m.presence", Content: []byte(`{"push":[{"user_id":"@u:a"},{"user_id":"@v:a"}]}`)}, ""},
		{gomatrixserverlib.EDU{Type: "m.receipt", Content: []byte(`{"!r:a":{}}`)}, ""},
		{gomatrixserverlib.EDU{Type: "m.direct_to_device", Content: []byte(`{}`)}, ""},
		{gomatrixserverlib.EDU{Type: "m.typing", Content: []byte(`not json`)}, ""},
	} {
		if got := coalesceKey(tc.edu); got != tc.want {
			t.Errorf("coalesceKey(%s %s) = %q, want %q", tc.edu.Type, tc.edu.Content, got, tc.want)
		}
	}
}

func TestFederationJSONStripsUnsigned(t *testing.T) {
	k := newTestKey(t, "self.test")
	ev := k.event(t, "!r:self.test", "@a:self.test", "x")
	withUnsigned, err := ev.SetUnsigned(map[string]any{"transaction_id": "secret-local-txn"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := federationJSON(withUnsigned.JSON())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["unsigned"]; ok {
		t.Fatalf("unsigned left in %s", out)
	}
	// Still the same, verifiable event.
	parsed, err := parsePDU(out, gomatrixserverlib.RoomVersionV10)
	if err != nil || parsed.EventID() != ev.EventID() || parsed.Redacted() {
		t.Fatalf("stripped event: %v %v", err, parsed)
	}
}

func TestQueueBackoff(t *testing.T) {
	f := newTestFederation(t, nil, nil)
	q := f.queue
	q.backoffMin, q.backoffMax = 20*time.Millisecond, 80*time.Millisecond
	d := &destQueue{name: "x.test", wake: make(chan struct{}, 1), retry: make(chan struct{}, 1)}
	for i, want := range []time.Duration{20, 40, 80, 80} {
		start := time.Now()
		q.backoff(d)
		got := time.Since(start)
		if lo, hi := want*time.Millisecond/2, want*time.Millisecond+50*time.Millisecond; got < lo || got > hi {
			t.Errorf("attempt %d waited %v, want %v–%v", i+1, got, lo, hi)
		}
	}
	// A sign of life from the destination ends the wait at once.
	q.backoffMin, q.backoffMax = time.Hour, time.Hour
	d.failures = 0
	go func() {
		time.Sleep(20 * time.Millisecond)
		q.mu.Lock()
		q.dests[d.name] = d
		q.mu.Unlock()
		q.peerAlive(d.name) // d.failures is 1: backoff counted this attempt
	}()
	start := time.Now()
	q.backoff(d)
	if time.Since(start) > 5*time.Second {
		t.Fatal("peerAlive did not cut the backoff short")
	}
}

// Rows queued for a refused destination are neither sent nor dropped, and
// go out once a reload allows the destination again.
func TestQueueHoldsRowsWhileRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepts atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	dest := spec.ServerName(l.Addr().String())
	f := newTestFederation(t, nil, func(c *config.Config) { c.Federation.DeniedServers = []string{"127.0.0.1"} })
	ctx := context.Background()
	// As if queued before the policy changed (SendPDU would refuse now).
	if err := storage.EnqueuePDU(ctx, f.db, []string{string(dest)}, []byte(`{"type":"x"}`), 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if p, _, _ := queueDepth(f, dest); p != 1 || accepts.Load() != 0 {
		t.Fatalf("while refused: %d queued (want 1 kept), %d connections (want 0)", p, accepts.Load())
	}
	cfg := *f.cfg
	cfg.Federation.DeniedServers = nil
	if err := f.ReloadPolicy(&cfg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for accepts.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if accepts.Load() == 0 {
		t.Fatal("no delivery attempt after the destination was allowed again")
	}
	if p, _, _ := queueDepth(f, dest); p != 1 {
		t.Fatalf("undelivered PDU count %d, want 1 kept", p)
	}
}
