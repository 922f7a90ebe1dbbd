package test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"enclave/config"
	"enclave/storage"
)

// TestSlowBodiesDoNotStarveServer reproduces the trickling-body attack:
// hundreds of connections from one host each send headers and then one
// body byte at a time. The host gets at most listen.max_connections_per_ip
// connections, the ones it gets are closed once their body falls below
// the minimum rate, and /versions keeps answering other clients throughout.
// A body that keeps the minimum rate still goes through.
func TestSlowBodiesDoNotStarveServer(t *testing.T) {
	const perIP, attackers = 40, 300
	srv := Start(t, storage.SQLite, Options{Configure: func(c *config.Config) {
		c.Listen.Client = "127.0.0.1:0"
		c.Listen.MaxConnectionsPerIP = perIP
		c.Listen.BodyTimeout = config.Duration{Duration: 2 * time.Second}
		c.Listen.BodyMinRate = 1024
	}})
	addr := strings.TrimPrefix(srv.URL, "http://")
	attacker := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 2 * time.Second}

	var accepted, refused, closedByServer atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	start := time.Now()
	for i := 0; i < attackers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := attacker.Dial("tcp", addr)
			if err != nil {
				refused.Add(1)
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
			first := true
			buf := make([]byte, 512)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Write([]byte(" ")); err != nil && !first {
					closedByServer.Add(1)
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				_, err := c.Read(buf)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					if first {
						accepted.Add(1) // still open: the server took it
						first = false
					}
					continue
				}
				// EOF, reset or a response: the server is done with us.
				if first {
					refused.Add(1)
				} else {
					closedByServer.Add(1)
				}
				return
			}
		}()
	}

	// /versions from another address answers during the whole attack.
	client := &http.Client{Timeout: 2 * time.Second}
	var slowest time.Duration
	for time.Since(start) < 5*time.Second {
		t0 := time.Now()
		resp, err := client.Get(srv.URL + "/_matrix/client/versions")
		if err != nil {
			t.Fatalf("/versions during the attack: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/versions during the attack: %d", resp.StatusCode)
		}
		slowest = max(slowest, time.Since(t0))
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("attacker connections: %d accepted, %d refused at once, %d closed by the server mid-body; slowest /versions %v",
		accepted.Load(), refused.Load(), closedByServer.Load(), slowest)
	if accepted.Load() > perIP {
		t.Errorf("%d attacker connections accepted, cap is %d", accepted.Load(), perIP)
	}
	if accepted.Load()+refused.Load() != attackers {
		t.Errorf("accepted %d + refused %d != %d attackers", accepted.Load(), refused.Load(), attackers)
	}
	if accepted.Load() == 0 || closedByServer.Load() != accepted.Load() {
		t.Errorf("%d trickling connections accepted but only %d closed by the server within 5 s (grace 2 s)", accepted.Load(), closedByServer.Load())
	}
	if slowest > time.Second {
		t.Errorf("/versions took %v during the attack", slowest)
	}

	// A body that keeps above the minimum rate (about 4 KiB/s for 3 s,
	// longer than the grace) is served.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := bytes.Repeat([]byte(" "), 12*1024)
	body = append(body, `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"nobody"},"password":"wrong"}`...)
	fmt.Fprintf(c, "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	for len(body) > 0 {
		n := min(len(body), 410)
		if _, err := c.Write(body[:n]); err != nil {
			t.Fatalf("steady body cut off: %v", err)
		}
		body = body[n:]
		time.Sleep(100 * time.Millisecond)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("steady body: no response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("steady body: status %d, want 403 (wrong password)", resp.StatusCode)
	}
}
