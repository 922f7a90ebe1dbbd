package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/storage"
)

const (
	// ownKeyValidity is the valid_until_ts we publish: a day keeps caches
	// fresh enough that a rotated key propagates quickly.
	ownKeyValidity = 24 * time.Hour
	// ownKeyResign is how long the signed /key/v2/server body is reused.
	ownKeyResign = time.Hour
	// maxNotaryServers bounds one batch key query.
	maxNotaryServers = 100
	// notaryRefetchInterval is the least time between two fetches of one
	// server's keys on behalf of notary queries.
	notaryRefetchInterval = time.Minute
)

// oldKey is a retired signing key of this server.
type oldKey struct {
	id      gomatrixserverlib.KeyID
	pub     spec.Base64Bytes
	expired spec.Timestamp
}

// loadOwnKeys records the current signing key in federation_own_keys
// (retiring any previous one, e.g. after generate-keys --force) and loads
// the retired keys to publish as old_verify_keys.
func (f *serverKeys) loadOwnKeys(ctx context.Context) error {
	pub := f.key.Public().(ed25519.PublicKey)
	if err := storage.RecordOwnKey(ctx, f.db, string(f.keyID), base64.RawStdEncoding.EncodeToString(pub), time.Now().UnixMilli()); err != nil {
		return err
	}
	keys, err := storage.OwnKeys(ctx, f.db)
	if err != nil {
		return err
	}
	f.oldKeys = nil
	for _, k := range keys {
		if gomatrixserverlib.KeyID(k.KeyID) == f.keyID || k.ExpiredTS == 0 {
			continue
		}
		b, err := base64.RawStdEncoding.DecodeString(k.PublicKey)
		if err != nil {
			continue
		}
		f.oldKeys = append(f.oldKeys, oldKey{id: gomatrixserverlib.KeyID(k.KeyID), pub: b, expired: spec.Timestamp(k.ExpiredTS)})
	}
	return nil
}

// ownServerKeys returns this server's signed key response (GET
// /_matrix/key/v2/server), re-signed at most hourly.
func (f *serverKeys) ownServerKeys() (json.RawMessage, error) {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	if f.ownSigned != nil && time.Since(f.ownSignedAt) < ownKeyResign {
		return f.ownSigned, nil
	}
	now := time.Now()
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName: f.serverName,
		VerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
			f.keyID: {Key: spec.Base64Bytes(f.key.Public().(ed25519.PublicKey))},
		},
		ValidUntilTS:  spec.AsTimestamp(now.Add(ownKeyValidity)),
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
	}
	for _, k := range f.oldKeys {
		fields.OldVerifyKeys[k.id] = gomatrixserverlib.OldVerifyKey{VerifyKey: gomatrixserverlib.VerifyKey{Key: k.pub}, ExpiredTS: k.expired}
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	signed, err := gomatrixserverlib.SignJSON(string(f.serverName), f.keyID, f.key, b)
	if err != nil {
		return nil, err
	}
	f.ownSigned, f.ownSignedAt = signed, now
	return signed, nil
}

func (f *serverKeys) serveOwnKeys(r *http.Request) httpapi.Response {
	b, err := f.ownServerKeys()
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, b)
}

type keyQueryResponse struct {
	ServerKeys []json.RawMessage `json:"server_keys"`
}

// queryKeysBatch is POST /_matrix/key/v2/query: this server as a notary.
func (f *serverKeys) queryKeysBatch(r *http.Request) httpapi.Response {
	var req struct {
		ServerKeys map[spec.ServerName]map[gomatrixserverlib.KeyID]struct {
			MinimumValidUntilTS spec.Timestamp `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "request body too large")
		}
		return httpapi.BadJSON("request body must be {\"server_keys\": {...}}")
	}
	if req.ServerKeys == nil {
		return httpapi.Errf(http.StatusBadRequest, "M_MISSING_PARAM", "server_keys is required")
	}
	if len(req.ServerKeys) > maxNotaryServers {
		return httpapi.BadJSON("at most %d servers per query", maxNotaryServers)
	}
	out := keyQueryResponse{ServerKeys: []json.RawMessage{}}
	for server, ids := range req.ServerKeys {
		var minValid spec.Timestamp
		for _, c := range ids {
			minValid = max(minValid, c.MinimumValidUntilTS)
		}
		out.ServerKeys = append(out.ServerKeys, f.notaryAnswer(r.Context(), server, minValid)...)
	}
	return httpapi.JSON(http.StatusOK, out)
}

// queryKeysOne is GET /_matrix/key/v2/query/{serverName}.
func (f *serverKeys) queryKeysOne(r *http.Request) httpapi.Response {
	server := spec.ServerName(mux.Vars(r)["serverName"])
	var minValid spec.Timestamp
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return httpapi.InvalidParam("minimum_valid_until_ts must be an integer")
		}
		minValid = spec.Timestamp(n)
	}
	return httpapi.JSON(http.StatusOK, keyQueryResponse{ServerKeys: append([]json.RawMessage{}, f.notaryAnswer(r.Context(), server, minValid)...)})
}

// notaryAnswer returns server's key responses co-signed by this server:
// from the cache when still valid at minValid (now if 0), else freshly
// fetched; if the server cannot be reached the last response is returned,
// as the spec asks, so old signatures stay checkable. Servers outside the
// federation policy get nothing and are never contacted.
func (f *serverKeys) notaryAnswer(ctx context.Context, server spec.ServerName, minValid spec.Timestamp) []json.RawMessage {
	if server == f.serverName {
		b, err := f.ownServerKeys()
		if err != nil {
			logrus.WithError(err).Error("federation: signing own keys")
			return nil
		}
		return []json.RawMessage{b}
	}
	if !f.pol().allowedPeer(server) {
		return nil
	}
	need := max(minValid, spec.AsTimestamp(time.Now()))
	var raws [][]byte
	cached, validUntil, err := storage.GetKeyResponse(ctx, f.db, string(server))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		logrus.WithError(err).Warn("federation: reading cached key response")
	}
	// A cached answer is also reused if it was fetched a moment ago, so
	// queries asking for far-future validity cannot make us hammer a server.
	if cached != nil && (spec.Timestamp(validUntil) >= need || f.fetcher.fetchedWithin(server, notaryRefetchInterval)) {
		raws = [][]byte{cached}
	} else if fresh, ferr := f.fetcher.fetch(ctx, server, minValid); ferr == nil && len(fresh) > 0 {
		for _, k := range fresh {
			raws = append(raws, k.Raw)
		}
	} else if cached != nil {
		raws = [][]byte{cached}
	}
	out := make([]json.RawMessage, 0, len(raws))
	for _, raw := range raws {
		signed, err := gomatrixserverlib.SignJSON(string(f.serverName), f.keyID, f.key, raw)
		if err != nil {
			continue
		}
		out = append(out, signed)
	}
	return out
}

// Verifier is the key ring: it checks JSON signatures of remote servers
// (and of this one, locally), fetching keys as the policy allows. Other
// components use it for cross-signing and device key checks.
func (f *Federation) Verifier() gomatrixserverlib.JSONVerifier { return f.keys }
