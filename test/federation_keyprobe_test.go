package test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/storage"
)

// TestFederationNoKeyFetchPortProbe reproduces the red team's port probe:
// an unauthenticated request whose origin is an allowed host on another
// port ("partner:PORT") made the server fetch keys from that port. Keys
// are fetched only from server names the allow-list gives exactly, so no
// connection reaches the port, and the request is refused.
func TestFederationNoKeyFetchPortProbe(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	a, b := c.Nodes[0], c.Nodes[1]
	a.Start()
	b.Start()
	// A port of B's host that is not B's server name.
	probe := net.JoinHostPort(b.IP, fmt.Sprint(FreePort(t, b.IP)))
	accepts := fedCountingListener(t, probe)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	code, resp := fedSignedRequest(t, c, spec.ServerName(probe), "ed25519:x", key, spec.ServerName(a.ServerName), "GET", "/_matrix/federation/v1/query/profile?user_id=@u:"+a.ServerName, nil)
	if code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Fatalf("request from %s: %d %s, want it refused", probe, code, resp)
	}
	time.Sleep(300 * time.Millisecond)
	if n := accepts.Load(); n != 0 {
		t.Fatalf("%d connections reached %s: the server probed a port on a stranger's behalf", n, probe)
	}
	// B itself, named exactly, still federates.
	if _, err := a.Fed().RemoteVersion(fedCtx(t), spec.ServerName(b.ServerName)); err != nil {
		t.Fatalf("B by its full server name: %v", err)
	}
}
