package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// TestFederationCrashDelivery (issue 10, acceptance point 3): two real
// server processes share a room; alice on A sends 200 messages while A is
// SIGKILLed every 5–15 sends at a random point — right after a send was
// answered 200, a few milliseconds later, or while a send is in flight —
// and restarted on the same data. After each restart every acknowledged
// event must reach B without help from a later event (B would otherwise
// fetch a gap with /get_missing_events and hide a lost queue row), and at
// the end every one is on B, once. A send that was in flight when A died
// is retried with the same transaction ID: it must be stored once, and if
// it had been answered, under the same event ID.
func TestFederationCrashDelivery(t *testing.T) {
	bin := enclaveBinary(t)
	for _, d := range storagetest.Dialects {
		t.Run(string(d), func(t *testing.T) { fedCrashRun(t, bin, d) })
	}
}

// fedProc is a federating `enclave serve` planned by a FedCluster node.
type fedProc struct {
	bin string
	n   *FedNode
	c   *FedCluster
	p   *proc
}

func (f *fedProc) start(t *testing.T) {
	t.Helper()
	f.p = startBinary(t, f.bin, f.n.DataDir, f.n.DBURL,
		"ENCLAVE_SERVER_NAME="+f.n.ServerName,
		"ENCLAVE_LISTEN_FEDERATION="+f.n.ServerName,
		"ENCLAVE_TLS_CERT="+f.n.CertFile,
		"ENCLAVE_TLS_KEY="+f.n.KeyFile,
		"ENCLAVE_TLS_CA_BUNDLE="+f.c.CAFile,
		"ENCLAVE_FEDERATION_ENABLED=true",
		"ENCLAVE_FEDERATION_ALLOWED_SERVERS="+strings.Join(f.c.allowList(), ","),
	)
}

// crashSend is one client send's outcome.
type crashSend struct {
	txn   string
	event string // "" until answered 200 (or found stored)
	// committed: found stored after the kill, though never answered
	committed bool
}

func fedCrashRun(t *testing.T, bin string, d storage.Dialect) {
	const total = 200
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed>>7))

	c := NewFedCluster(t, d, d)
	a := &fedProc{bin: bin, n: c.Nodes[0], c: c}
	b := &fedProc{bin: bin, n: c.Nodes[1], c: c}
	a.start(t)
	b.start(t)
	ctx := ctxT(t)
	alice := sessionClient(t, a.p.URL, Register(t, a.p.URL, "alice", "pw", false))
	bob := sessionClient(t, b.p.URL, Register(t, b.p.URL, "bob", "pw", false))
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{a.n.ServerName}}); err != nil {
		t.Fatalf("bob joining via A: %v", err)
	}

	hc := &http.Client{Timeout: 15 * time.Second}
	send := func(txn string) (string, error) {
		u := fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/%s", a.p.URL, url.PathEscape(room.String()), txn)
		body, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": txn})
		req, _ := http.NewRequest(http.MethodPut, u, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("send %s: %d %s", txn, resp.StatusCode, raw)
		}
		var r struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(raw, &r); err != nil || r.EventID == "" {
			return "", fmt.Errorf("send %s: bad answer %s", txn, raw)
		}
		return r.EventID, nil
	}
	onB := func(eventID string) bool {
		u := fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/event/%s", b.p.URL, url.PathEscape(room.String()), url.PathEscape(eventID))
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+bob.AccessToken)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	// delivered waits until B holds every acknowledged event not yet seen
	// there, before anything else is sent.
	var acked []crashSend
	checked := 0
	delivered := func(when string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for checked < len(acked) {
			if onB(acked[checked].event) {
				checked++
				continue
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: acknowledged event %s (%s) never reached B (%d of %d acknowledged reached it)",
					when, acked[checked].event, acked[checked].txn, checked, len(acked))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	kills, retried, inflightStored, inflightCommitted := 0, 0, 0, 0
	nextKill := 5 + rnd.IntN(11)
	start := time.Now()
	for i := 0; i < total; i++ {
		txn := fmt.Sprintf("crash%d", i)
		if i+1 < nextKill || i == total-1 {
			ev, err := send(txn)
			if err != nil {
				t.Fatal(err)
			}
			acked = append(acked, crashSend{txn: txn, event: ev})
			continue
		}
		// The kill point.
		var inflight []crashSend
		switch mode := rnd.IntN(4); mode {
		case 0, 1: // right after the 200, or a few milliseconds later
			ev, err := send(txn)
			if err != nil {
				t.Fatal(err)
			}
			acked = append(acked, crashSend{txn: txn, event: ev})
			if mode == 1 {
				time.Sleep(time.Duration(rnd.IntN(5000)) * time.Microsecond)
			}
			a.p.kill()
		default: // (half the kills) while a burst of sends is in
			// flight: they queue for the store's writer, so some are
			// between commit and answer
			n := min(2+rnd.IntN(7), total-i)
			res := make(chan crashSend, n)
			for j := 0; j < n; j++ {
				go func(txn string) {
					ev, _ := send(txn)
					res <- crashSend{txn: txn, event: ev}
				}(fmt.Sprintf("crash%d", i+j))
			}
			time.Sleep(time.Duration(rnd.IntN(6000)) * time.Microsecond)
			a.p.kill()
			for j := 0; j < n; j++ {
				inflight = append(inflight, <-res)
			}
			i += n - 1
		}
		kills++
		a.start(t)
		// A send answered just before the kill, retried (its answer
		// might have been lost), answers the same event.
		last := acked[len(acked)-1]
		if ev, err := send(last.txn); err != nil {
			t.Fatalf("resending %s after restart: %v", last.txn, err)
		} else if ev != last.event {
			t.Fatalf("resent %s after restart: event %s, but it was answered %s before the kill", last.txn, ev, last.event)
		}
		if len(inflight) > 0 {
			// The in-flight sends that committed before the kill must
			// reach B before a retry can create an event referring to
			// them (B would then fetch them as a gap).
			resp, err := rebase(t, alice, a.p.URL).Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
			if err != nil {
				t.Fatal(err)
			}
			stored := map[string]string{}
			for _, e := range resp.Chunk {
				stored[body(e)] = e.ID.String()
			}
			for j, s := range inflight {
				if ev := stored[s.txn]; ev != "" {
					if s.event != "" && s.event != ev {
						t.Fatalf("%s answered %s before the kill, stored as %s", s.txn, s.event, ev)
					}
					if s.event == "" {
						inflight[j].event, inflight[j].committed = ev, true
						inflightCommitted++
					}
					acked = append(acked, crashSend{txn: s.txn, event: ev})
				}
			}
			delivered(fmt.Sprintf("before the retries after kill %d", kills))
		}
		for _, s := range inflight {
			ev, err := send(s.txn)
			if err != nil {
				t.Fatalf("retrying %s after restart: %v", s.txn, err)
			}
			retried++
			if s.event != "" {
				if !s.committed {
					inflightStored++
				}
				if ev != s.event {
					t.Fatalf("retried %s: event %s, but it was stored before the kill as %s", s.txn, ev, s.event)
				}
				continue // already in acked
			}
			acked = append(acked, crashSend{txn: s.txn, event: ev})
		}
		delivered(fmt.Sprintf("after kill %d", kills))
		nextKill = i + 1 + 5 + rnd.IntN(11)
	}
	delivered("at the end")
	t.Logf("%s: %d sends, %d kills (%d sends in flight retried: %d answered before the kill, %d more committed unanswered) in %v",
		d, len(acked), kills, retried, inflightStored, inflightCommitted, time.Since(start).Round(time.Millisecond))

	// Each transaction is one event, on A and on B, with the acknowledged ID.
	want := map[string]string{}
	for _, s := range acked {
		want[s.txn] = s.event
	}
	for _, side := range []struct {
		name string
		cli  *mautrix.Client
	}{{"A", rebase(t, alice, a.p.URL)}, {"B", bob}} {
		got := map[string][]id.EventID{}
		for _, e := range messagesOnly(pageAll(t, side.cli, room, "", "", mautrix.DirectionBackward, 100)) {
			got[body(e)] = append(got[body(e)], e.ID)
		}
		for txn, ev := range want {
			if ids := got[txn]; len(ids) != 1 || ids[0].String() != ev {
				t.Errorf("%s: %s stored as %v, want exactly %s", side.name, txn, ids, ev)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d distinct messages, want %d", side.name, len(got), len(want))
		}
	}
}
