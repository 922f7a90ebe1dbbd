package clientapi

// End-to-end encryption keys: /keys/upload, /keys/query, /keys/claim,
// /keys/changes. Cross-signing lives in keys_crosssigning.go, signature
// checks in keys_sign.go, to-device messages in todevice.go, key backup in
// keybackup.go. The server only ever handles public keys and ciphertext.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
	"enclave/syncapi"
)

// RemoteKeys is how /keys/query and /keys/claim reach users of other
// servers. Federation implements it (federation /user/keys/query and
// /user/keys/claim) and installs it with SetRemoteKeys; until then remote
// servers are reported under "failures".
type RemoteKeys interface {
	// QueryKeys asks server for the keys of its users (user ID -> device
	// IDs, none meaning all).
	QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*storage.KeysQueryResult, error)
	// ClaimKeys claims one-time keys of server's users (user -> device ->
	// algorithm); the answer maps user -> device -> key ID -> key.
	ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// RemoteToDevice delivers to-device messages to users of another server
// (federation's m.direct_to_device EDU). messages maps user -> device (or
// "*") -> content.
type RemoteToDevice interface {
	SendToDevice(ctx context.Context, server, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error
}

// keys is the handler group for end-to-end encryption: device and one-time
// keys, cross-signing, key backup and to-device messages. The remote faces
// are installed after construction (federation comes up later), hence the
// lock.
type keys struct {
	opts     Options
	db       *storage.DB
	sync     *syncapi.Syncer
	accounts *accounts // UIA for cross-signing uploads

	mu          sync.RWMutex
	fedKeys     RemoteKeys
	fedToDevice RemoteToDevice
}

// SetRemoteKeys installs federation's remote key queries and claims.
func (a *API) SetRemoteKeys(rk RemoteKeys) {
	a.keys.mu.Lock()
	a.keys.fedKeys = rk
	a.keys.mu.Unlock()
}

// SetRemoteToDevice installs federation's to-device delivery.
func (a *API) SetRemoteToDevice(rt RemoteToDevice) {
	a.keys.mu.Lock()
	a.keys.fedToDevice = rt
	a.keys.mu.Unlock()
}

func (ks *keys) remoteKeys() RemoteKeys {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.fedKeys
}

func (ks *keys) remoteToDevice() RemoteToDevice {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.fedToDevice
}

// serverOf returns the server name of a user ID, or "" if malformed.
func serverOf(userID string) string {
	if len(userID) < 4 || userID[0] != '@' || len(userID) > 255 {
		return ""
	}
	i := strings.IndexByte(userID, ':')
	if i < 2 || i == len(userID)-1 {
		return ""
	}
	return userID[i+1:]
}

// Bounds on what one request may carry.
const (
	maxKeyIDLen       = 255
	maxKeyJSONLen     = 8 << 10
	maxKeysPerUpload  = 1000
	maxQueriedUsers   = 5000
	maxClaimedDevices = 10000
	defaultFedTimeout = 10 * time.Second
	maxFedTimeout     = 30 * time.Second
	signedCurve25519  = "signed_curve25519"
)

// --- /keys/upload ---

type keysUploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	Unstable     map[string]json.RawMessage `json:"org.matrix.msc2732.fallback_keys"`
}

// parseDeviceKeys checks an uploaded device_keys object against the
// uploading device and returns it as stored (without "unsigned") with the
// device's ed25519 key.
func parseDeviceKeys(raw json.RawMessage, userID, deviceID string) ([]byte, string, httpapi.Response, bool) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, "", httpapi.BadJSON("device_keys must be an object"), false
	}
	var head struct {
		UserID     string            `json:"user_id"`
		DeviceID   string            `json:"device_id"`
		Algorithms []string          `json:"algorithms"`
		Keys       map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, "", httpapi.BadJSON("device_keys has the wrong shape: %v", err), false
	}
	if head.UserID != userID || head.DeviceID != deviceID {
		return nil, "", httpapi.InvalidParam("device_keys must be for user %s and device %s", userID, deviceID), false
	}
	ed := head.Keys["ed25519:"+deviceID]
	if ed == "" || len(head.Algorithms) == 0 {
		return nil, "", httpapi.BadJSON("device_keys must list algorithms and an ed25519:%s key", deviceID), false
	}
	if _, err := decodeKey(ed); err != nil {
		return nil, "", httpapi.InvalidParam("the device's ed25519 key is not a valid key"), false
	}
	delete(obj, "unsigned")
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, "", httpapi.BadJSON("device_keys: %v", err), false
	}
	return b, ed, httpapi.Response{}, true
}

// parseOneTimeKeys validates uploaded one-time or fallback keys.
func parseOneTimeKeys(m map[string]json.RawMessage, what string) ([]storage.OneTimeKey, httpapi.Response, bool) {
	if len(m) > maxKeysPerUpload {
		return nil, httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "at most %d %s per upload", maxKeysPerUpload, what), false
	}
	out := make([]storage.OneTimeKey, 0, len(m))
	for id, raw := range m {
		alg, kid, ok := strings.Cut(id, ":")
		if !ok || alg == "" || kid == "" || len(id) > maxKeyIDLen {
			return nil, httpapi.InvalidParam("%s key ID %q must be <algorithm>:<id>", what, id), false
		}
		if len(raw) > maxKeyJSONLen {
			return nil, httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "%s key %s is too large", what, id), false
		}
		var s string
		var obj struct {
			Key *string `json:"key"`
		}
		if json.Unmarshal(raw, &s) != nil {
			if err := json.Unmarshal(raw, &obj); err != nil || obj.Key == nil || *obj.Key == "" {
				return nil, httpapi.InvalidParam("%s key %s must be a key string or an object with a key", what, id), false
			}
		} else if s == "" {
			return nil, httpapi.InvalidParam("%s key %s is empty", what, id), false
		}
		compact, err := compactJSON(raw)
		if err != nil {
			return nil, httpapi.BadJSON("%s key %s: %v", what, id, err), false
		}
		out = append(out, storage.OneTimeKey{KeyID: id, Algorithm: alg, JSON: compact})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out, httpapi.Response{}, true
}

func compactJSON(raw json.RawMessage) (json.RawMessage, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

var errKeyConflict = errors.New("key conflict")

func (ks *keys) keysUpload(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req keysUploadRequest
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	var devKeys []byte
	var ed string
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		var resp httpapi.Response
		var ok bool
		if devKeys, ed, resp, ok = parseDeviceKeys(req.DeviceKeys, dev.UserID, dev.DeviceID); !ok {
			return resp
		}
	}
	otks, resp, ok := parseOneTimeKeys(req.OneTimeKeys, "one-time")
	if !ok {
		return resp
	}
	fb := req.FallbackKeys
	if len(fb) == 0 {
		fb = req.Unstable
	}
	fallback, resp, ok := parseOneTimeKeys(fb, "fallback")
	if !ok {
		return resp
	}
	seen := map[string]bool{}
	for _, k := range fallback {
		if seen[k.Algorithm] {
			return httpapi.InvalidParam("at most one fallback key per algorithm")
		}
		seen[k.Algorithm] = true
	}
	ctx := r.Context()
	var conflict *storage.KeyConflictError
	var counts map[string]int
	err := ks.db.WithTx(ctx, func(tx *storage.Tx) error {
		if devKeys != nil {
			changed, err := storage.SetDeviceKeys(ctx, tx, dev.UserID, dev.DeviceID, devKeys, ed, time.Now().UnixMilli())
			if err != nil {
				return err
			}
			if changed {
				if _, err := storage.RecordDeviceListChange(ctx, tx, dev.UserID, []string{dev.DeviceID}, false, ""); err != nil {
					return err
				}
			}
		}
		if err := storage.AddOneTimeKeys(ctx, tx, dev.UserID, dev.DeviceID, otks); err != nil {
			if errors.As(err, &conflict) {
				return errKeyConflict
			}
			return err
		}
		for _, k := range fallback {
			if err := storage.SetFallbackKey(ctx, tx, dev.UserID, dev.DeviceID, k); err != nil {
				return err
			}
		}
		// One entry per upload that publishes anything (clients also post
		// empty uploads just to read their key counts): what, not the keys.
		if devKeys != nil || len(otks) > 0 || len(fallback) > 0 {
			if err := ks.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionDeviceKeys, Target: dev.DeviceID,
				Details: map[string]any{"device_keys": devKeys != nil, "one_time_keys": len(otks), "fallback_keys": len(fallback)}}); err != nil {
				return err
			}
		}
		var err error
		counts, err = storage.OneTimeKeyCounts(ctx, tx, dev.UserID, dev.DeviceID)
		return err
	})
	if errors.Is(err, errKeyConflict) {
		return httpapi.InvalidParam("one-time key %s already exists with a different key", conflict.KeyID)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if len(otks) > 0 || len(fallback) > 0 {
		// The device's key counts changed: its waiting /sync answers with
		// them (a client that just logged in waits for them to go on).
		ks.sync.NotifyUsers(dev.UserID)
	}
	if _, ok := counts[signedCurve25519]; !ok {
		counts[signedCurve25519] = 0
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"one_time_key_counts": counts})
}

// --- /keys/query ---

func fedTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return defaultFedTimeout
	}
	return min(time.Duration(*ms)*time.Millisecond, maxFedTimeout)
}

func (ks *keys) keysQuery(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.DeviceKeys == nil {
		return httpapi.MissingParam("device_keys is required")
	}
	if len(req.DeviceKeys) > maxQueriedUsers {
		return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "at most %d users per query", maxQueriedUsers)
	}
	local := map[string][]string{}
	remote := map[string]map[string][]string{}
	for u, devs := range req.DeviceKeys {
		srv := serverOf(u)
		switch {
		case srv == "":
			return httpapi.InvalidParam("invalid user ID %q", u)
		case srv == ks.opts.ServerName:
			local[u] = devs
		default:
			if remote[srv] == nil {
				remote[srv] = map[string][]string{}
			}
			remote[srv][u] = devs
		}
	}
	ctx := r.Context()
	res, err := storage.QueryLocalKeys(ctx, ks.db, dev.UserID, local)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	failures := map[string]any{}
	if len(remote) > 0 {
		ks.queryRemoteKeys(ctx, remote, fedTimeout(req.Timeout), res, failures)
	}
	out := map[string]any{"device_keys": res.DeviceKeys, "failures": failures}
	if res.MasterKeys != nil {
		out["master_keys"] = res.MasterKeys
	}
	if res.SelfSigningKeys != nil {
		out["self_signing_keys"] = res.SelfSigningKeys
	}
	if res.UserSigningKeys != nil {
		out["user_signing_keys"] = res.UserSigningKeys
	}
	return httpapi.JSON(http.StatusOK, out)
}

func unreachable(msg string) map[string]any {
	return map[string]any{"status": http.StatusServiceUnavailable, "message": msg}
}

// queryRemoteKeys asks every remote server in parallel, merging answers
// into res and unreachable servers into failures.
func (ks *keys) queryRemoteKeys(ctx context.Context, remote map[string]map[string][]string, timeout time.Duration, res *storage.KeysQueryResult, failures map[string]any) {
	rk := ks.remoteKeys()
	if rk == nil {
		for srv := range remote {
			failures[srv] = unreachable("federation is not enabled")
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for srv, users := range remote {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := rk.QueryKeys(ctx, srv, users)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || got == nil {
				logrus.WithError(err).WithField("server", srv).Debug("keys: remote query failed")
				failures[srv] = unreachable("could not reach the server")
				return
			}
			for u, d := range got.DeviceKeys {
				if serverOf(u) == srv {
					res.DeviceKeys[u] = d
				}
			}
			merge := func(dst *map[string]json.RawMessage, src map[string]json.RawMessage) {
				for u, k := range src {
					if serverOf(u) != srv {
						continue
					}
					if *dst == nil {
						*dst = map[string]json.RawMessage{}
					}
					(*dst)[u] = k
				}
			}
			merge(&res.MasterKeys, got.MasterKeys)
			merge(&res.SelfSigningKeys, got.SelfSigningKeys)
		}()
	}
	wg.Wait()
}

// --- /keys/claim ---

func (ks *keys) keysClaim(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.OneTimeKeys == nil {
		return httpapi.MissingParam("one_time_keys is required")
	}
	n := 0
	local := map[string]map[string]string{}
	remote := map[string]map[string]map[string]string{}
	for u, devs := range req.OneTimeKeys {
		n += len(devs)
		srv := serverOf(u)
		switch {
		case srv == "":
			return httpapi.InvalidParam("invalid user ID %q", u)
		case srv == ks.opts.ServerName:
			local[u] = devs
		default:
			if remote[srv] == nil {
				remote[srv] = map[string]map[string]string{}
			}
			remote[srv][u] = devs
		}
	}
	if n > maxClaimedDevices {
		return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "at most %d devices per claim", maxClaimedDevices)
	}
	ctx := r.Context()
	keys, err := storage.ClaimLocalKeys(ctx, ks.db, local)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	wakeClaimed(ks.sync.NotifyUsers, keys)
	failures := map[string]any{}
	if len(remote) > 0 {
		ks.claimRemoteKeys(ctx, remote, fedTimeout(req.Timeout), keys, failures)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"one_time_keys": keys, "failures": failures})
}

func (ks *keys) claimRemoteKeys(ctx context.Context, remote map[string]map[string]map[string]string, timeout time.Duration, keys map[string]map[string]map[string]json.RawMessage, failures map[string]any) {
	rk := ks.remoteKeys()
	if rk == nil {
		for srv := range remote {
			failures[srv] = unreachable("federation is not enabled")
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for srv, want := range remote {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := rk.ClaimKeys(ctx, srv, want)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[srv] = unreachable("could not reach the server")
				return
			}
			for u, d := range got {
				if serverOf(u) == srv {
					keys[u] = d
				}
			}
		}()
	}
	wg.Wait()
}

// --- /keys/changes ---

func (ks *keys) keysChanges(r *http.Request, dev *httpapi.Device) httpapi.Response {
	q := r.URL.Query()
	fromS, toS := q.Get("from"), q.Get("to")
	if fromS == "" || toS == "" {
		return httpapi.MissingParam("from and to are required")
	}
	from, err := syncapi.ParseToken(fromS)
	if err != nil {
		return httpapi.InvalidParam("invalid from token")
	}
	to, err := syncapi.ParseToken(toS)
	if err != nil {
		return httpapi.InvalidParam("invalid to token")
	}
	if cur := ks.sync.Current().Pos; to.Pos > cur {
		to.Pos = cur
	}
	changed, left, err := storage.DeviceListUpdates(r.Context(), ks.db, dev.UserID, from.Pos, to.Pos)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if changed == nil {
		changed = []string{}
	}
	if left == nil {
		left = []string{}
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"changed": changed, "left": left})
}

// wakeClaimed wakes the /sync long-polls of the users whose keys a claim
// took: their devices' one-time key counts (or unused fallback keys) changed.
func wakeClaimed(wake func(users ...string), claimed map[string]map[string]map[string]json.RawMessage) {
	users := make([]string, 0, len(claimed))
	for u, devs := range claimed {
		if len(devs) > 0 {
			users = append(users, u)
		}
	}
	if len(users) > 0 {
		wake(users...)
	}
}
