package federationapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
)

func TestPolicyDestinations(t *testing.T) {
	fc := config.FederationConfig{Enabled: true, AllowedServers: []string{"*.good.org", "127.0.0.2"}, DeniedServers: []string{"bad.good.org"}}
	p := newPolicy("self.good.org", fc)
	for _, tc := range []struct {
		dest spec.ServerName
		ok   bool
	}{
		{"a.good.org", true},
		{"a.good.org:8448", true},
		{"127.0.0.2:9000", true},
		{"bad.good.org", false},      // deny wins
		{"other.org", false},         // not on the allow-list
		{"self.good.org", false},     // never ourselves
		{"a.good.org:99999", false},  // invalid name
		{"", false},                  // invalid name
		{"a b.good.org", false},      // invalid name
		{"[::1]:8448", false},        // not listed
		{"x.good.org/evil", false},   // invalid name
		{"A.GOOD.ORG", true},         // case-insensitive
		{"127.0.0.3:9000", false},    // other address
		{"a.good.org:8448:1", false}, // invalid name
	} {
		err := p.checkDestination(tc.dest)
		if (err == nil) != tc.ok {
			t.Errorf("checkDestination(%q) = %v, want ok=%v", tc.dest, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrRefused) {
			t.Errorf("refusal for %q is not ErrRefused: %v", tc.dest, err)
		}
	}
	off := newPolicy("self.good.org", config.FederationConfig{Enabled: false})
	if err := off.checkDestination("a.good.org"); !errors.Is(err, ErrRefused) {
		t.Errorf("disabled federation allowed a destination: %v", err)
	}
	if off.allowedPeer("a.good.org") {
		t.Error("disabled federation allowed a peer")
	}
}

func TestOriginLimiter(t *testing.T) {
	l := newOriginLimiter(2, 3)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.take("a.org", now); !ok {
			t.Fatalf("request %d within burst limited", i)
		}
	}
	ok, wait := l.take("a.org", now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("over burst: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.take("b.org", now); !ok {
		t.Fatal("another origin shares the bucket")
	}
	if ok, _ := l.take("a.org", now.Add(600*time.Millisecond)); !ok {
		t.Fatal("bucket did not refill")
	}
	l.configure(0, 1)
	for range 10 {
		if ok, _ := l.take("a.org", now); !ok {
			t.Fatal("rate 0 should disable the limit")
		}
	}
}

// A refused destination gets no connection at all: not even resolution.
// The listener stands in for the refused server and must see no accept.
func TestOutboundRefusedMakesNoConnection(t *testing.T) {
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
	denied := spec.ServerName(l.Addr().String())
	var audited []string
	f := newTestFederation(t, nil, func(c *config.Config) {
		c.Federation.DeniedServers = []string{"127.0.0.1"}
	})
	f.SetAuditHook(func(action string, server spec.ServerName, detail string) {
		audited = append(audited, action+" "+string(server))
	})
	ctx := context.Background()
	if _, err := f.RemoteVersion(ctx, denied); !errors.Is(err, ErrRefused) {
		t.Fatalf("GetVersion to a denied server: %v", err)
	}
	if _, err := f.Client().GetServerKeys(ctx, denied); !errors.Is(err, ErrRefused) {
		t.Fatalf("GetServerKeys to a denied server: %v", err)
	}
	if err := f.SendEDU(ctx, []spec.ServerName{denied}, gomatrixserverlib.EDU{Type: "m.typing", Content: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if p, e, _ := queueDepth(f, denied); p+e != 0 {
		t.Fatalf("a refused destination was queued: %d %d", p, e)
	}
	// Our own name is never a destination either, and sending to it queues nothing.
	if _, err := f.RemoteVersion(ctx, f.serverName); !errors.Is(err, ErrRefused) {
		t.Fatalf("GetVersion to self: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := accepts.Load(); n != 0 {
		t.Fatalf("%d connections made to a refused server", n)
	}
	if got := counterValue(t, f.metrics.refused.WithLabelValues("outbound")); got != 4 {
		t.Fatalf("outbound refusals counted %v, want 4", got)
	}
	if len(audited) != 4 || !strings.HasPrefix(audited[0], "federation.outbound_refused "+string(denied)) {
		t.Fatalf("audit records %v", audited)
	}
}

func TestResolveExplicitNamesWithoutNetwork(t *testing.T) {
	f := newTestFederation(t, nil, nil)
	ctx := context.Background()
	for name, want := range map[spec.ServerName]fclient.ResolutionResult{
		"example.org:1234": {Destination: "example.org:1234", Host: "example.org:1234", TLSServerName: "example.org"},
		"10.1.2.3":         {Destination: "10.1.2.3:8448", Host: "10.1.2.3", TLSServerName: "10.1.2.3"},
		"[::1]:99":         {Destination: "[::1]:99", Host: "[::1]:99", TLSServerName: "::1"},
	} {
		got, err := f.transport.resolve(ctx, name)
		if err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("resolve(%s) = %+v %v, want %+v", name, got, err, want)
		}
	}
	if _, err := f.transport.resolve(ctx, "bad name"); err == nil {
		t.Error("invalid name resolved")
	}
}

func TestCacheTTL(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"":                            wellKnownDefaultTTL,
		"max-age=60":                  time.Minute,
		"public, MAX-AGE=120":         2 * time.Minute,
		"max-age=99999999999999999":   wellKnownMaxTTL,
		"max-age=-5":                  wellKnownDefaultTTL,
		"no-cache, max-age=notnumber": wellKnownDefaultTTL,
	} {
		if got := cacheTTL(in); got != want {
			t.Errorf("cacheTTL(%q) = %v, want %v", in, got, want)
		}
	}
}

// The listener refuses everything once federation is disabled by reload,
// and outbound stops too.
func TestReloadPolicyDisables(t *testing.T) {
	f := newTestFederation(t, nil, nil)
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	get := func() int {
		resp, err := http.Get(srv.URL + "/_matrix/federation/v1/version")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("version while enabled: %d", code)
	}
	cfg := *f.cfg
	cfg.Federation.Enabled = false
	if err := f.ReloadPolicy(&cfg); err != nil {
		t.Fatal(err)
	}
	if code := get(); code != http.StatusForbidden {
		t.Fatalf("version while disabled: %d", code)
	}
	if _, err := f.RemoteVersion(context.Background(), "other.test:8448"); !errors.Is(err, ErrRefused) {
		t.Fatalf("outbound while disabled: %v", err)
	}
	cfg.Federation.Enabled = true
	if err := f.ReloadPolicy(&cfg); err != nil {
		t.Fatal(err)
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("version after re-enabling: %d", code)
	}
	cfg.ServerName = "renamed.test"
	if err := f.ReloadPolicy(&cfg); err == nil {
		t.Fatal("server_name change accepted on reload")
	}
}
