package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/storage"
)

// The key ring verifies signatures on requests and events. Keys come from,
// in order: this server's own keys (in memory, never the network), the
// federation_server_keys cache, then a fetch — directly from the server, or
// only through the configured notaries. Fetches use the policy-checked
// client, so keys are never fetched from a server we may not contact.

// keyDatabase implements gomatrixserverlib.KeyDatabase.
type keyDatabase struct{ f *Federation }

// FetcherName implements gomatrixserverlib.KeyFetcher.
func (k *keyDatabase) FetcherName() string { return "store" }

// FetchKeys implements gomatrixserverlib.KeyFetcher.
func (k *keyDatabase) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for req := range reqs {
		if req.ServerName == k.f.serverName {
			if res, ok := k.f.srvKeys.ownKeyResult(req.KeyID); ok {
				out[req] = res
			}
			continue
		}
		row, err := storage.GetServerKey(ctx, k.f.db, string(req.ServerName), string(req.KeyID))
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		pub, err := base64.RawStdEncoding.DecodeString(row.PublicKey)
		if err != nil {
			continue
		}
		out[req] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: pub},
			ValidUntilTS: spec.Timestamp(row.ValidUntilTS),
			ExpiredTS:    spec.Timestamp(row.ExpiredTS),
		}
	}
	return out, nil
}

// StoreKeys implements gomatrixserverlib.KeyDatabase.
func (k *keyDatabase) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	rows := make([]storage.ServerKey, 0, len(results))
	for req, res := range results {
		if req.ServerName == k.f.serverName || len(res.Key) != ed25519.PublicKeySize {
			continue
		}
		rows = append(rows, storage.ServerKey{
			ServerName:   string(req.ServerName),
			KeyID:        string(req.KeyID),
			PublicKey:    base64.RawStdEncoding.EncodeToString(res.Key),
			ValidUntilTS: int64(res.ValidUntilTS),
			ExpiredTS:    int64(res.ExpiredTS),
		})
	}
	return storage.UpsertServerKeys(ctx, k.f.db, rows)
}

// ownKeyResult answers a lookup of one of this server's keys.
func (f *serverKeys) ownKeyResult(keyID gomatrixserverlib.KeyID) (gomatrixserverlib.PublicKeyLookupResult, bool) {
	if keyID == f.keyID {
		return gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(f.key.Public().(ed25519.PublicKey))},
			ExpiredTS:    gomatrixserverlib.PublicKeyNotExpired,
			ValidUntilTS: spec.AsTimestamp(time.Now().Add(ownKeyValidity)),
		}, true
	}
	for _, k := range f.oldKeys {
		if k.id == keyID {
			return gomatrixserverlib.PublicKeyLookupResult{
				VerifyKey:    gomatrixserverlib.VerifyKey{Key: k.pub},
				ExpiredTS:    k.expired,
				ValidUntilTS: gomatrixserverlib.PublicKeyNotValid,
			}, true
		}
	}
	return gomatrixserverlib.PublicKeyLookupResult{}, false
}

// notary is a configured key notary (perspective server).
type notary struct {
	name   spec.ServerName
	pinned map[gomatrixserverlib.KeyID]ed25519.PublicKey // from config; empty: trust on first use
}

// parseNotaries reads federation.key_notaries entries:
// "server.name [ed25519:id=base64 ...]".
func parseNotaries(entries []string) ([]notary, error) {
	var out []notary
	for _, e := range entries {
		fields := strings.Fields(e)
		if len(fields) == 0 {
			continue
		}
		n := notary{name: spec.ServerName(fields[0]), pinned: map[gomatrixserverlib.KeyID]ed25519.PublicKey{}}
		if _, _, ok := spec.ParseAndValidateServerName(n.name); !ok {
			return nil, fmt.Errorf("federation.key_notaries: invalid server name %q", fields[0])
		}
		for _, pin := range fields[1:] {
			id, b64, ok := strings.Cut(pin, "=")
			if !ok || !strings.HasPrefix(id, "ed25519:") {
				return nil, fmt.Errorf("federation.key_notaries: %s: want ed25519:<id>=<base64 key>, got %q", n.name, pin)
			}
			key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
			if err != nil || len(key) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("federation.key_notaries: %s: bad key for %s", n.name, id)
			}
			n.pinned[gomatrixserverlib.KeyID(id)] = key
		}
		out = append(out, n)
	}
	return out, nil
}

// keyFetcher implements gomatrixserverlib.KeyFetcher over the federation
// client, and fetches the raw responses the notary endpoint co-signs.
type keyFetcher struct {
	f        *Federation
	notaries []notary

	mu       sync.Mutex
	inflight map[spec.ServerName]*fetchCall
	failed   map[spec.ServerName]time.Time
	fetched  map[spec.ServerName]time.Time // last successful fetch
	notaryMu sync.Mutex
	tofu     map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey
}

type fetchCall struct {
	done chan struct{}
	keys []gomatrixserverlib.ServerKeys
	err  error
}

// fetchFailureBackoff stops a flood of requests signed by an unreachable
// server from each waiting on its own key fetch.
const fetchFailureBackoff = 5 * time.Second

func newKeyFetcher(f *Federation, notaries []notary) *keyFetcher {
	return &keyFetcher{
		f: f, notaries: notaries,
		inflight: map[spec.ServerName]*fetchCall{},
		failed:   map[spec.ServerName]time.Time{},
		fetched:  map[spec.ServerName]time.Time{},
		tofu:     map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey{},
	}
}

// FetcherName implements gomatrixserverlib.KeyFetcher.
func (kf *keyFetcher) FetcherName() string {
	if len(kf.notaries) > 0 {
		return "notaries"
	}
	return "direct"
}

// FetchKeys implements gomatrixserverlib.KeyFetcher.
func (kf *keyFetcher) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	servers := map[spec.ServerName]spec.Timestamp{}
	for req, ts := range reqs {
		if req.ServerName == kf.f.serverName {
			continue // our own keys never come from the network
		}
		if cur, ok := servers[req.ServerName]; !ok || ts > cur {
			servers[req.ServerName] = ts
		}
	}
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for server, ts := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			keys, err := kf.fetch(ctx, server, ts)
			if err != nil {
				logrus.WithError(err).WithField("server", server).Debug("federation: key fetch failed")
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, k := range keys {
				mapServerKeys(k, out)
			}
		}()
	}
	wg.Wait()
	return out, nil
}

// mapServerKeys adds a verified response's keys to results.
func mapServerKeys(k gomatrixserverlib.ServerKeys, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) {
	for id, vk := range k.VerifyKeys {
		results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: k.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: vk, ValidUntilTS: k.ValidUntilTS, ExpiredTS: gomatrixserverlib.PublicKeyNotExpired,
		}
	}
	for id, ok := range k.OldVerifyKeys {
		results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: k.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: ok.VerifyKey, ValidUntilTS: gomatrixserverlib.PublicKeyNotValid, ExpiredTS: ok.ExpiredTS,
		}
	}
}

// fetch returns server's verified key responses, coalescing concurrent
// fetches of one server and pausing briefly after a failure. Each verified
// response is saved for the notary endpoint.
func (kf *keyFetcher) fetch(ctx context.Context, server spec.ServerName, minValid spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error) {
	kf.mu.Lock()
	if t, ok := kf.failed[server]; ok && time.Since(t) < fetchFailureBackoff {
		kf.mu.Unlock()
		return nil, fmt.Errorf("federation: key fetch for %s failed recently", server)
	}
	if c := kf.inflight[server]; c != nil {
		kf.mu.Unlock()
		select {
		case <-c.done:
			return c.keys, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &fetchCall{done: make(chan struct{})}
	kf.inflight[server] = c
	kf.mu.Unlock()

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	c.keys, c.err = kf.fetchUncoalesced(fctx, server, minValid)
	if c.err == nil {
		now := time.Now().UnixMilli()
		for _, k := range c.keys {
			if err := storage.SaveKeyResponse(fctx, kf.f.db, string(server), k.Raw, int64(k.ValidUntilTS), now); err != nil {
				logrus.WithError(err).Warn("federation: saving key response")
			}
		}
	}
	cancel()
	kf.mu.Lock()
	delete(kf.inflight, server)
	if c.err != nil {
		kf.failed[server] = time.Now()
	} else {
		delete(kf.failed, server)
		kf.fetched[server] = time.Now()
	}
	kf.mu.Unlock()
	close(c.done)
	return c.keys, c.err
}

// fetchedWithin reports whether server's keys were fetched successfully
// less than d ago.
func (kf *keyFetcher) fetchedWithin(server spec.ServerName, d time.Duration) bool {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	t, ok := kf.fetched[server]
	return ok && time.Since(t) < d
}

func (kf *keyFetcher) fetchUncoalesced(ctx context.Context, server spec.ServerName, minValid spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error) {
	if len(kf.notaries) == 0 {
		// A direct fetch opens a connection to server: only to a name the
		// allow-list gives exactly, so that a request merely claiming an
		// origin such as "partner:1" cannot make us probe partner's ports.
		if err := kf.f.pol().checkDestination(server); err != nil {
			kf.f.refuseOutbound(server, err) // as the transport would
			return nil, err
		}
		if !kf.f.pol().cfg.FederationDestinationAllowed(string(server)) {
			err := fmt.Errorf("%w: %s: keys are fetched only from server names the allow-list gives exactly (with their port)", ErrRefused, server)
			kf.f.refuseOutbound(server, err)
			return nil, err
		}
		k, err := kf.f.client.GetServerKeys(ctx, server)
		if err != nil {
			return nil, err
		}
		if err := checkServerKeys(server, k); err != nil {
			return nil, err
		}
		return []gomatrixserverlib.ServerKeys{k}, nil
	}
	var errs []error
	for _, n := range kf.notaries {
		keys, err := kf.fetchViaNotary(ctx, n, server, minValid)
		if err == nil && len(keys) > 0 {
			return keys, nil
		}
		if err == nil {
			err = fmt.Errorf("notary %s has no keys for %s", n.name, server)
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// checkServerKeys applies the spec's checks to a key response: it is for
// the server asked about, and every ed25519 key in it self-signs it. An
// expired response is still accepted, to check signatures on old events.
func checkServerKeys(server spec.ServerName, k gomatrixserverlib.ServerKeys) error {
	checks, _ := gomatrixserverlib.CheckKeys(server, time.Unix(0, 0), k)
	if !checks.AllChecksOK {
		return fmt.Errorf("federation: key response for %s failed verification", server)
	}
	return nil
}

func (kf *keyFetcher) fetchViaNotary(ctx context.Context, n notary, server spec.ServerName, minValid spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error) {
	notaryKeys, err := kf.notaryKeys(ctx, n)
	if err != nil {
		return nil, err
	}
	if minValid == 0 {
		minValid = spec.AsTimestamp(time.Now())
	}
	resps, err := kf.f.client.LookupServerKeys(ctx, n.name, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{
		{ServerName: server}: minValid,
	})
	if err != nil {
		return nil, err
	}
	var out []gomatrixserverlib.ServerKeys
	for _, k := range resps {
		if k.ServerName != server {
			continue
		}
		if !signedByAny(n.name, notaryKeys, k.Raw) {
			return nil, fmt.Errorf("federation: notary %s did not sign its answer for %s", n.name, server)
		}
		if err := checkServerKeys(server, k); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// notaryKeys returns the keys a notary must sign with: pinned in config,
// or fetched from the notary itself over TLS on first use.
func (kf *keyFetcher) notaryKeys(ctx context.Context, n notary) (map[gomatrixserverlib.KeyID]ed25519.PublicKey, error) {
	if len(n.pinned) > 0 {
		return n.pinned, nil
	}
	kf.notaryMu.Lock()
	defer kf.notaryMu.Unlock()
	if keys := kf.tofu[n.name]; keys != nil {
		return keys, nil
	}
	k, err := kf.f.client.GetServerKeys(ctx, n.name)
	if err != nil {
		return nil, fmt.Errorf("federation: notary %s keys: %w", n.name, err)
	}
	if err := checkServerKeys(n.name, k); err != nil {
		return nil, err
	}
	keys := map[gomatrixserverlib.KeyID]ed25519.PublicKey{}
	for id, vk := range k.VerifyKeys {
		keys[id] = ed25519.PublicKey(vk.Key)
	}
	kf.tofu[n.name] = keys
	return keys, nil
}

func signedByAny(signer spec.ServerName, keys map[gomatrixserverlib.KeyID]ed25519.PublicKey, message []byte) bool {
	for id, pub := range keys {
		if gomatrixserverlib.VerifyJSON(string(signer), id, pub, message) == nil {
			return true
		}
	}
	return false
}
