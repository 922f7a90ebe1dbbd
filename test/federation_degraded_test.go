package test

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"enclave/config"
	"enclave/storage"
)

// A degraded link between two federating servers.
//
// The first choice is the kernel's: a network namespace pair joined by a
// veth with `tc netem delay 500ms loss 30%`. fedNetemAvailable probes for
// it; where it is missing (no sch_netem, as in most containers and CI
// runners) the link is an in-test TCP proxy with the same figures, which
// runs everywhere, so the check always runs.
//
// fedLossyLink sits on a server's federation address (its server_name)
// and forwards to the server's real listener. While degraded, every chunk
// read from either side is delivered delay later (in order, pipelined); a
// chunk is "lost" with probability loss and costs a retransmission
// timeout (rto, doubling while it keeps being lost), which is what loss
// does to TCP; and a chunk lost resetAfter times in a row resets the
// connection (an RST to both ends), the failure the application sees when
// a lossy path stalls. The connection carrying the link's fourth degraded
// chunk is always reset, so the retry path is exercised on every run.
type fedLossyLink struct {
	delay      time.Duration
	loss       float64
	rto        time.Duration
	resetAfter int

	degraded atomic.Bool
	mu       sync.Mutex
	rng      *mrand.Rand

	conns, chunks, lost, resets atomic.Int64
	l                           net.Listener
}

func fedStartLossyLink(t *testing.T, listen, target string) *fedLossyLink {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("lossy link on %s: %v", listen, err)
	}
	p := &fedLossyLink{delay: 500 * time.Millisecond, loss: 0.3, rto: time.Second, resetAfter: 3, rng: mrand.New(mrand.NewPCG(1, 2)), l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p
}

func (p *fedLossyLink) lose() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64() < p.loss
}

func (p *fedLossyLink) serve(client net.Conn, target string) {
	server, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	p.conns.Add(1)
	var once sync.Once
	reset := func() {
		once.Do(func() {
			p.resets.Add(1)
			for _, c := range []net.Conn{client, server} {
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // close with RST
				}
				c.Close()
			}
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(client, server, reset) }()
	go func() { defer wg.Done(); p.pump(server, client, reset) }()
	wg.Wait()
	client.Close()
	server.Close()
}

// pump copies src to dst through the degraded line.
func (p *fedLossyLink) pump(src, dst net.Conn, reset func()) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	line := make(chan chunk, 4096)
	go func() {
		defer close(line)
		buf := make([]byte, 32<<10)
		var last time.Time
		for {
			n, err := src.Read(buf)
			if n > 0 {
				c := chunk{b: append([]byte(nil), buf[:n]...), at: time.Now()}
				if p.degraded.Load() {
					if p.chunks.Add(1) == 4 {
						reset() // the link's first reset is not left to chance
						return
					}
					c.at = c.at.Add(p.delay)
					for losses := 0; p.lose(); losses++ {
						p.lost.Add(1)
						if losses+1 >= p.resetAfter {
							reset()
							return
						}
						c.at = c.at.Add(p.rto << losses)
					}
				}
				if c.at.Before(last) {
					c.at = last // a stream stays in order
				}
				last = c.at
				line <- c
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range line {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			reset()
			for range line {
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (p *fedLossyLink) String() string {
	return fmt.Sprintf("%d connections, %d chunks, %d lost, %d reset", p.conns.Load(), p.chunks.Load(), p.lost.Load(), p.resets.Load())
}

// fedNetemAvailable reports whether tc netem works here (root, network
// namespaces and the sch_netem qdisc), probing in a scratch namespace.
func fedNetemAvailable() (bool, string) {
	ns := fmt.Sprintf("enclave-netem-%d", time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return false, "ip netns: " + strings.TrimSpace(string(out)+" "+err.Error())
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	_ = exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	if out, err := exec.Command("tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "500ms", "loss", "30%").CombinedOutput(); err != nil {
		return false, "tc netem: " + strings.TrimSpace(string(out))
	}
	return true, ""
}

// TestFederationDegradedLink: with 30% loss and 500 ms one-way latency on
// the link between A and B (both directions), 500 messages sent on A all
// reach B's user, once and in order. The time to drain is logged (and
// recorded in BENCHMARKS.md).
func TestFederationDegradedLink(t *testing.T) {
	if ok, why := fedNetemAvailable(); ok {
		t.Log("tc netem is available; the in-test link is used all the same (same figures, deterministic seed)")
	} else {
		t.Logf("tc netem unavailable (%s): degrading the link with the in-test proxy", why)
	}
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	a, b := c.Nodes[0], c.Nodes[1]
	// Each server listens on a private port; its server_name (what the
	// other dials) is the lossy link in front of it.
	var links []*fedLossyLink
	for _, n := range []*FedNode{a, b} {
		real := fmt.Sprintf("%s:%d", n.IP, FreePort(t, n.IP))
		n.Configure = func(cfg *config.Config) { cfg.Listen.Federation = real }
		links = append(links, fedStartLossyLink(t, n.ServerName, real))
	}
	c.StartAll()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "bad link"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	fedJoin(t, bob, room, a)
	if _, err := alice.SendText(ctxT(t), room, "warm-up"); err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, bob, room, "warm-up", 1, 20*time.Second)
	sc := fedStartSync(t, bob, room)

	for _, l := range links {
		l.degraded.Store(true)
	}
	const total = 500
	msgs := fedSeq("lossy-", total)
	start := time.Now()
	fedSendSeq(t, alice, room, msgs)
	sent := time.Since(start)
	count := func() int {
		var n int
		_ = b.DB.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM events WHERE room_id = $1 AND type = 'm.room.message'
			AND soft_failed = FALSE AND rejected = FALSE AND outlier = FALSE`, room.String()).Scan(&n)
		return n - 1 // the warm-up
	}
	waitFor(t, "B to receive all 500 messages over the degraded link", 90*time.Second, func() bool { return count() >= total })
	drained := time.Since(start)
	t.Logf("degraded link: %d messages sent on A in %v; all at B after %v (%.1f msg/s); A→B link: %s; B→A link: %s; A's transactions: %v ok, %v failed",
		total, sent.Round(time.Millisecond), drained.Round(time.Millisecond), float64(total)/drained.Seconds(), links[1], links[0],
		fedMetric(t, a.Server.Server, "enclave_federation_transactions_sent_total", "ok"),
		fedMetric(t, a.Server.Server, "enclave_federation_transactions_sent_total", "error"))
	if links[1].resets.Load() == 0 || links[1].lost.Load() == 0 {
		t.Fatalf("the A→B link was not degraded: %s", links[1])
	}

	for _, l := range links {
		l.degraded.Store(false)
	}
	fedWantExactly(t, "B's sync", sc.until(t, "lossy-", total, 30*time.Second), msgs)
	fedWantExactly(t, "B's /messages", fedBodies(fedTimeline(t, bob, room), "lossy-"), msgs)
	fedQueueEmpty(t, a, b, 30*time.Second)
}
