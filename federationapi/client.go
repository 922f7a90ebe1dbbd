package federationapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"
)

// outboundTransport is the http.RoundTripper under the federation client.
// Requests arrive as matrix://<server name>/path. For each one it:
//
//  1. applies the policy to the server name BEFORE anything touches the
//     network (no DNS, no .well-known, no dial for a refused server);
//  2. resolves the name per the spec (IP literals and explicit host:port
//     without any lookup; otherwise .well-known, then SRV, then :8448);
//  3. connects with TLS 1.3 or newer, verifying the certificate against the
//     system pool plus tls.ca_bundle for the resolved TLS server name.
type outboundTransport struct {
	f     *Federation
	roots *x509.CertPool

	mu         sync.Mutex
	transports map[string]*http.Transport // by TLS server name
	wellKnown  *http.Transport
	resolved   map[spec.ServerName]resolution
	dialer     *net.Dialer
}

type resolution struct {
	results []fclient.ResolutionResult
	expires time.Time
}

func newOutboundTransport(f *Federation, roots *x509.CertPool) *outboundTransport {
	return &outboundTransport{
		f:          f,
		roots:      roots,
		transports: map[string]*http.Transport{},
		resolved:   map[spec.ServerName]resolution{},
		dialer:     &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
	}
}

// RoundTrip implements http.RoundTripper.
func (t *outboundTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "matrix" {
		closeBody(r)
		return nil, fmt.Errorf("federation: unsupported URL scheme %q", r.URL.Scheme)
	}
	dest := spec.ServerName(r.URL.Host)
	if err := t.f.pol().checkDestination(dest); err != nil {
		closeBody(r)
		t.f.refuseOutbound(dest, err)
		return nil, err
	}
	results, err := t.resolve(r.Context(), dest)
	if err != nil {
		closeBody(r)
		return nil, err
	}
	var lastErr error
	for i, res := range results {
		req := r.Clone(r.Context())
		if i > 0 && r.Body != nil {
			if r.GetBody == nil {
				break // body already consumed and cannot be replayed
			}
			if req.Body, err = r.GetBody(); err != nil {
				return nil, err
			}
		}
		req.URL.Scheme = "https"
		req.URL.Host = res.Destination
		req.Host = string(res.Host)
		resp, err := t.transportFor(res.TLSServerName).RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		logrus.WithError(err).WithField("destination", dest).Debug("federation: request failed")
	}
	t.forget(dest) // a stale resolution may be the cause; look it up afresh next time
	if lastErr == nil {
		lastErr = fmt.Errorf("federation: no address for %s", dest)
	}
	return nil, lastErr
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}

// transportFor returns the pooled transport for a TLS server name: one per
// name because the name the certificate must match is per connection.
func (t *outboundTransport) transportFor(tlsName string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr := t.transports[tlsName]; tr != nil {
		return tr
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS13,
			RootCAs:    t.roots,
			ServerName: tlsName,
		},
		DialContext:           t.dialer.DialContext,
		Proxy:                 http.ProxyFromEnvironment,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
	}
	t.transports[tlsName] = tr
	return tr
}

// wellKnownTransport is for .well-known lookups. They go to the domain's
// web server, not a federation listener, so TLS 1.2 is accepted there; the
// certificate is still verified (system pool plus tls.ca_bundle) against
// the URL's host, which also holds across redirects.
func (t *outboundTransport) wellKnownTransport() *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.wellKnown == nil {
		t.wellKnown = &http.Transport{
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: t.roots},
			DialContext:         t.dialer.DialContext,
			Proxy:               http.ProxyFromEnvironment,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 1,
		}
	}
	return t.wellKnown
}

// closeIdle drops pooled connections (on shutdown).
func (t *outboundTransport) closeIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.transports {
		tr.CloseIdleConnections()
	}
	if t.wellKnown != nil {
		t.wellKnown.CloseIdleConnections()
	}
}

func (t *outboundTransport) forget(dest spec.ServerName) {
	t.mu.Lock()
	delete(t.resolved, dest)
	t.mu.Unlock()
}

// Resolution cache lifetimes.
const (
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMaxTTL     = 48 * time.Hour
	noWellKnownTTL      = time.Hour
)

// resolve implements the spec's server name resolution. It follows
// fclient.ResolveServer, which answers IP literals and names with an
// explicit port itself (no network), but fetches .well-known through our
// own TLS settings so delegation works behind a private CA too.
func (t *outboundTransport) resolve(ctx context.Context, dest spec.ServerName) ([]fclient.ResolutionResult, error) {
	t.mu.Lock()
	c, ok := t.resolved[dest]
	t.mu.Unlock()
	if ok && time.Now().Before(c.expires) {
		return c.results, nil
	}
	host, port, valid := spec.ParseAndValidateServerName(dest)
	if !valid {
		return nil, fmt.Errorf("federation: invalid server name %q", dest)
	}
	var (
		results []fclient.ResolutionResult
		ttl     = 100 * 365 * 24 * time.Hour // literal resolutions never change
		err     error
	)
	if port != -1 || net.ParseIP(strings.Trim(host, "[]")) != nil {
		// Steps 1 and 2: no lookups at all.
		results, err = fclient.ResolveServer(ctx, dest)
	} else {
		results, ttl, err = t.resolveDelegated(ctx, dest)
	}
	if err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, fmt.Errorf("federation: no address for %s", dest)
	}
	t.mu.Lock()
	t.resolved[dest] = resolution{results: results, expires: time.Now().Add(ttl)}
	t.mu.Unlock()
	return results, nil
}

// resolveDelegated handles a hostname without a port: steps 3 to 5.
func (t *outboundTransport) resolveDelegated(ctx context.Context, dest spec.ServerName) ([]fclient.ResolutionResult, time.Duration, error) {
	delegated, ttl, err := t.lookupWellKnown(ctx, dest)
	if err != nil {
		return srvOrDefault(ctx, dest, dest), noWellKnownTTL, nil
	}
	host, port, valid := spec.ParseAndValidateServerName(delegated)
	if !valid {
		return srvOrDefault(ctx, dest, dest), noWellKnownTTL, nil
	}
	bare := strings.Trim(host, "[]")
	switch {
	case net.ParseIP(bare) != nil:
		// 3.1: delegated to an IP literal.
		addr := string(delegated)
		if port == -1 {
			addr = net.JoinHostPort(bare, "8448")
		}
		return []fclient.ResolutionResult{{Destination: addr, Host: delegated, TLSServerName: bare}}, ttl, nil
	case port != -1:
		// 3.2: delegated hostname with a port.
		return []fclient.ResolutionResult{{Destination: string(delegated), Host: delegated, TLSServerName: host}}, ttl, nil
	default:
		// 3.3 / 3.4: SRV on the delegated name, else its port 8448.
		return srvOrDefault(ctx, delegated, delegated), ttl, nil
	}
}

// srvOrDefault looks up _matrix-fed._tcp (then the deprecated _matrix._tcp)
// for name; without records it falls back to name:8448.
func srvOrDefault(ctx context.Context, name, hostHeader spec.ServerName) []fclient.ResolutionResult {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, records, err := net.DefaultResolver.LookupSRV(ctx, service, "tcp", string(name))
		if err != nil || len(records) == 0 {
			continue
		}
		out := make([]fclient.ResolutionResult, 0, len(records))
		for _, rec := range records {
			target := strings.TrimSuffix(rec.Target, ".")
			out = append(out, fclient.ResolutionResult{
				Destination:   net.JoinHostPort(target, strconv.Itoa(int(rec.Port))),
				Host:          hostHeader,
				TLSServerName: string(name),
			})
		}
		return out
	}
	return []fclient.ResolutionResult{{Destination: net.JoinHostPort(string(name), "8448"), Host: hostHeader, TLSServerName: string(name)}}
}

// lookupWellKnown fetches https://<dest>/.well-known/matrix/server with the
// federation TLS settings and returns the delegated server name and how
// long to cache it.
func (t *outboundTransport) lookupWellKnown(ctx context.Context, dest spec.ServerName) (spec.ServerName, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+string(dest)+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", 0, err
	}
	client := &http.Client{Transport: t.wellKnownTransport(), Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("well-known: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, fclient.WellKnownMaxSize))
	if err != nil {
		return "", 0, err
	}
	var wk struct {
		Server spec.ServerName `json:"m.server"`
	}
	if err := json.Unmarshal(body, &wk); err != nil || wk.Server == "" {
		return "", 0, errors.New("well-known: no m.server")
	}
	return wk.Server, cacheTTL(resp.Header.Get("Cache-Control")), nil
}

// cacheTTL reads max-age, defaulting to a day and capped at two.
func cacheTTL(cacheControl string) time.Duration {
	for _, part := range strings.Split(cacheControl, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && strings.EqualFold(k, "max-age") {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				if n > int64(wellKnownMaxTTL/time.Second) {
					return wellKnownMaxTTL
				}
				return time.Duration(n) * time.Second
			}
		}
	}
	return wellKnownDefaultTTL
}
