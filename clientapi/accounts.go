package clientapi

// Accounts: password checks (the hashing is internal/accounts'), token
// minting, access-token authentication (with its in-memory cache), session
// issuance shared by login/register/refresh, and the /account and /logout
// endpoints.
//
// Helpers other groups use through their *accounts field:
//
//	requireUIA(r, body, dev, flows)           uia.go — user-interactive auth
//	authenticate(r)                           the device behind a request's token
//	deleteDevices(ctx, userID, deviceIDs)     delete devices + tokens, drop cached tokens
//	invalidateUserTokens(userID)              drop cached tokens after revoking some yourself
//	touchDevice(userID, deviceID, ip, ua)     record last-seen (throttled, async)
//	verifyUserPassword(ctx, userID, password) check a local user's password

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	acct "enclave/internal/accounts"
	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// ---------------------------------------------------------------------------
// accounts is the handler group for login, registration, sessions, UIA and
// /account: it owns the access-token cache, the admin-registration nonces
// and the last-seen throttle, so every other group authenticates through it.

type accounts struct {
	opts Options
	db   *storage.DB
	rs   roomserver.API // leaves a deactivated user's rooms
	// accountData deletes a device's own account data with the device.
	accountData *accountData

	tokens     tokenCache
	nonces     nonceStore
	seenMu     sync.Mutex
	seen       map[string]seenEntry // "user|device" -> last write
	maintainMu sync.Mutex
	lastMaint  time.Time
	guard      *loginGuard // password-guessing defences of /login and /register
	metrics    *httpMetrics
	// appservices answers for as_tokens and namespaces (SetAppServices).
	appservices AppServices
	// asSeen is each appservice's addresses its as_token was used from
	// since start: a use from a new one is audited.
	asSeenMu sync.Mutex
	asSeen   map[string]bool // "id|ip"
}

func newAccounts(opts Options, db *storage.DB, rs roomserver.API) *accounts {
	return &accounts{
		opts: opts, db: db, rs: rs,
		tokens: tokenCache{entries: map[string]cachedToken{}, gen: map[string]uint64{}},
		nonces: nonceStore{m: map[string]time.Time{}},
		seen:   map[string]seenEntry{},
		guard:  newLoginGuard(opts.LoginGuard),
		// New replaces these with the API's registered metrics.
		metrics: newHTTPMetrics(nil),
	}
}

type seenEntry struct {
	at     time.Time
	ip, ua string
}

// verifyUserPassword checks a local user's password. It returns the
// account (nil if unknown) and whether the password matched; unknown users
// and users without a password take as long as real ones and never match.
// Deactivated accounts are returned as found: callers decide.
func (ac *accounts) verifyUserPassword(ctx context.Context, userID, password string) (*storage.Account, bool, error) {
	acc, err := storage.GetAccount(ctx, ac.db, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, false, err
	}
	hash := ""
	if acc != nil {
		hash = acc.PasswordHash
	}
	if len(password) > acct.MaxPasswordBytes || password == "" {
		// Still spend the time: lengths must not reveal whether the user exists.
		hash = ""
	}
	ok, rehash, err := acct.VerifyPassword(ctx, password, hash)
	if err != nil {
		return nil, false, err
	}
	if ok && rehash {
		if h, err := acct.HashPassword(ctx, password); err == nil {
			if err := storage.SetPassword(ctx, ac.db, userID, h); err != nil {
				logrus.WithError(err).Warn("accounts: rehashing password")
			}
		}
	}
	return acc, ok, nil
}

// ---------------------------------------------------------------------------
// Tokens: 256 random bits, base64url, with a type prefix that makes leaked
// tokens recognisable. Only the hex SHA-256 is stored.

const (
	accessTokenPrefix  = "enc_at_"
	refreshTokenPrefix = "enc_rt_"
	loginTokenPrefix   = "enc_lt_"
)

func newToken(prefix string) (token, hash string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	token = prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token)
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newDeviceID returns 10 random uppercase letters.
func newDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	out := make([]byte, 0, 10)
	buf := make([]byte, 16)
	for len(out) < 10 {
		if _, err := rand.Read(buf); err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		for _, c := range buf {
			if c < 26*9 && len(out) < 10 { // reject the biased tail
				out = append(out, letters[c%26])
			}
		}
	}
	return string(out)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// ---------------------------------------------------------------------------
// Access-token authentication, on every request's path.

// tokenCacheTTL bounds how long another process's revocation can go
// unnoticed here. Revocations in this process take effect at once.
const tokenCacheTTL = 30 * time.Second

const tokenCacheMax = 200000

type tokenCache struct {
	mu      sync.RWMutex
	entries map[string]cachedToken // token hash -> entry
	gen     map[string]uint64      // user -> generation; bumping it drops the user's entries
	epoch   uint64                 // bumped by every invalidation
}

type cachedToken struct {
	dev       httpapi.Device
	expiresTS int64
	cachedAt  time.Time
	gen       uint64
}

func (c *tokenCache) get(hash string, now time.Time) (cachedToken, bool) {
	c.mu.RLock()
	e, ok := c.entries[hash]
	if ok && (now.Sub(e.cachedAt) >= tokenCacheTTL || c.gen[e.dev.UserID] != e.gen) {
		ok = false
	}
	c.mu.RUnlock()
	return e, ok
}

func (c *tokenCache) currentEpoch() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epoch
}

// put caches an entry read from the store. epoch is currentEpoch() from
// before the read: if any invalidation happened since, the row may be
// stale and is not cached.
func (c *tokenCache) put(hash string, e cachedToken, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	if len(c.entries) >= tokenCacheMax {
		c.entries = map[string]cachedToken{}
	}
	e.gen = c.gen[e.dev.UserID]
	c.entries[hash] = e
}

func (c *tokenCache) invalidateUser(userID string) {
	c.mu.Lock()
	c.gen[userID]++
	c.epoch++
	c.mu.Unlock()
}

// invalidateUserTokens drops every cached access token of the user. Call it
// after revoking tokens or deleting devices yourself (deleteDevices does).
func (ac *accounts) invalidateUserTokens(userID string) { ac.tokens.invalidateUser(userID) }

func unknownToken(soft bool, msg string) httpapi.Response {
	return httpapi.Response{Code: http.StatusUnauthorized, Body: &httpapi.MatrixError{ErrCode: "M_UNKNOWN_TOKEN", Err: msg, SoftLogout: soft}}
}

// authenticate finds the device behind the request's access token
// (Authorization: Bearer, or the deprecated access_token query parameter).
func (ac *accounts) authenticate(r *http.Request) (*httpapi.Device, httpapi.Response, bool) {
	token := ""
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		token = strings.TrimPrefix(h, "Bearer ")
	} else if t := r.URL.Query().Get("access_token"); t != "" {
		token = t
	}
	if token == "" {
		return nil, httpapi.Errf(http.StatusUnauthorized, "M_MISSING_TOKEN", "missing access token"), false
	}
	if ac.appservices != nil {
		if id, sender, ok := ac.appservices.ByToken(token); ok {
			return ac.authenticateAppService(r, id, sender)
		}
	}
	return ac.lookupAccessToken(r.Context(), token)
}

// lookupAccessToken authenticates a request's access token.
func (ac *accounts) lookupAccessToken(ctx context.Context, token string) (*httpapi.Device, httpapi.Response, bool) {
	now := time.Now()
	hash := hashToken(token)
	e, ok := ac.tokens.get(hash, now)
	if !ok {
		epoch := ac.tokens.currentEpoch()
		info, err := storage.LookupAccessToken(ctx, ac.db, hash)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, unknownToken(false, "unknown access token"), false
		}
		if err != nil {
			logrus.WithError(err).Error("accounts: looking up access token")
			return nil, httpapi.Errf(http.StatusInternalServerError, "M_UNKNOWN", "internal server error"), false
		}
		if info.Deactivated {
			return nil, unknownToken(false, "account deactivated"), false
		}
		e = cachedToken{
			dev:       httpapi.Device{UserID: info.UserID, DeviceID: info.DeviceID, AccessTokenID: info.ID, IsAdmin: info.IsAdmin, IsGuest: info.IsGuest, ShadowBanned: info.ShadowBanned},
			expiresTS: info.ExpiresTS,
			cachedAt:  now,
		}
		ac.tokens.put(hash, e, epoch)
		ac.touchDevice(info.UserID, info.DeviceID, "", "")
	}
	if e.expiresTS > 0 && now.UnixMilli() >= e.expiresTS {
		return nil, unknownToken(true, "access token expired"), false
	}
	dev := e.dev
	return &dev, httpapi.Response{}, true
}

// touchDevice records that a device was used. Writes are throttled to one
// per device per 5 minutes (or when the IP/user agent changes) and made in
// the background. Empty ip/ua keep the stored ones.
func (ac *accounts) touchDevice(userID, deviceID, ip, ua string) {
	key := userID + "|" + deviceID
	now := time.Now()
	ac.seenMu.Lock()
	prev, ok := ac.seen[key]
	if ok && now.Sub(prev.at) < 5*time.Minute && (ip == "" || ip == prev.ip) && (ua == "" || ua == prev.ua) {
		ac.seenMu.Unlock()
		return
	}
	if len(ac.seen) > tokenCacheMax {
		ac.seen = map[string]seenEntry{}
	}
	if ip == "" {
		ip = prev.ip
	}
	if ua == "" {
		ua = prev.ua
	}
	ac.seen[key] = seenEntry{at: now, ip: ip, ua: ua}
	ac.seenMu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := storage.UpdateDeviceLastSeen(ctx, ac.db, userID, deviceID, now.UnixMilli(), ip, ua); err != nil {
			logrus.WithError(err).Debug("accounts: updating last seen")
		}
	}()
}

// ---------------------------------------------------------------------------
// Sessions: a device with an access token (and maybe a refresh token).

type issuedSession struct {
	DeviceID     string
	AccessToken  string
	RefreshToken string
	ExpiresInMs  int64
}

// issueSession creates (or reuses) the user's device and mints tokens for
// it inside q (a transaction). Reusing an existing device ID revokes that
// device's previous tokens; the caller must invalidateUserTokens after
// commit (issueSession's callers do).
func (ac *accounts) issueSession(ctx context.Context, q storage.Querier, userID, deviceID, displayName string, withRefresh bool, now time.Time) (*issuedSession, error) {
	nowMs := now.UnixMilli()
	if deviceID == "" {
		for {
			deviceID = newDeviceID()
			created, err := storage.CreateDevice(ctx, q, &storage.Device{UserID: userID, DeviceID: deviceID, DisplayName: displayName, CreatedTS: nowMs, LastSeenTS: nowMs})
			if err != nil {
				return nil, err
			}
			if created {
				break
			}
		}
		if err := ac.opts.Audit.Record(ctx, q, auditapi.Entry{Actor: auditapi.Actor{UserID: userID, DeviceID: deviceID}, Action: auditapi.ActionDeviceAdd, Target: deviceID}); err != nil {
			return nil, err
		}
	} else {
		created, err := storage.CreateDevice(ctx, q, &storage.Device{UserID: userID, DeviceID: deviceID, DisplayName: displayName, CreatedTS: nowMs, LastSeenTS: nowMs})
		if err != nil {
			return nil, err
		}
		if !created {
			// A dehydrated device (MSC3814) never gets a token: logging
			// in as it would make it a session its owner cannot see.
			if d, err := storage.GetDehydratedDevice(ctx, q, userID); err == nil && d.DeviceID == deviceID {
				return nil, errDehydratedDeviceID
			} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return nil, err
			}
			if err := storage.DeleteDeviceTokens(ctx, q, userID, deviceID); err != nil {
				return nil, err
			}
		} else if err := ac.opts.Audit.Record(ctx, q, auditapi.Entry{Actor: auditapi.Actor{UserID: userID, DeviceID: deviceID}, Action: auditapi.ActionDeviceAdd, Target: deviceID}); err != nil {
			return nil, err
		}
	}
	out := &issuedSession{DeviceID: deviceID}
	at := &storage.AccessToken{UserID: userID, DeviceID: deviceID, CreatedTS: nowMs}
	if withRefresh {
		rt, rhash := newToken(refreshTokenPrefix)
		id, err := storage.InsertRefreshToken(ctx, q, &storage.RefreshToken{TokenHash: rhash, UserID: userID, DeviceID: deviceID, CreatedTS: nowMs})
		if err != nil {
			return nil, err
		}
		out.RefreshToken = rt
		at.RefreshTokenID = id
		out.ExpiresInMs = ac.refreshAccessLifetime().Milliseconds()
	} else if ac.opts.AccessTokenLifetime > 0 {
		out.ExpiresInMs = ac.opts.AccessTokenLifetime.Milliseconds()
	}
	if out.ExpiresInMs > 0 {
		at.ExpiresTS = nowMs + out.ExpiresInMs
	}
	out.AccessToken, at.TokenHash = newToken(accessTokenPrefix)
	if _, err := storage.InsertAccessToken(ctx, q, at); err != nil {
		return nil, err
	}
	return out, nil
}

func (ac *accounts) refreshAccessLifetime() time.Duration {
	if ac.opts.RefreshTokenAccess > 0 {
		return ac.opts.RefreshTokenAccess
	}
	return 5 * time.Minute
}

// createLoginToken mints a one-shot m.login.token for the user (for
// /login/get_token or SSO, when they exist).
func (ac *accounts) createLoginToken(ctx context.Context, userID string) (string, time.Duration, error) {
	life := ac.opts.LoginTokenLifetime
	if life <= 0 {
		life = 2 * time.Minute
	}
	tok, hash := newToken(loginTokenPrefix)
	now := time.Now()
	err := storage.InsertLoginToken(ctx, ac.db, hash, userID, now.UnixMilli(), now.Add(life).UnixMilli())
	return tok, life, err
}

// deleteDevices deletes devices of the user (with their tokens and the
// registered per-device cleanups) in one transaction and drops the user's
// cached tokens. Use it for DELETE /devices/{id} and /delete_devices.
func (ac *accounts) deleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	err := ac.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.DeleteDevices(ctx, tx, userID, deviceIDs); err != nil {
			return err
		}
		if err := ac.accountData.deleteDeviceData(ctx, tx, userID, deviceIDs); err != nil {
			return err
		}
		return ac.auditDevicesRemoved(ctx, tx, userID, deviceIDs, "deleted")
	})
	ac.invalidateUserTokens(userID)
	return err
}

// maintain purges expired UIA sessions (releasing their pending
// registration-token uses), login tokens and long-expired access tokens.
// It runs at most every 5 minutes per process, in the background.
func (ac *accounts) maintain() {
	ac.maintainMu.Lock()
	if time.Since(ac.lastMaint) < 5*time.Minute {
		ac.maintainMu.Unlock()
		return
	}
	ac.lastMaint = time.Now()
	ac.maintainMu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		now := time.Now()
		err := ac.db.WithTx(ctx, func(tx *storage.Tx) error {
			sessions, err := storage.PurgeUIASessions(ctx, tx, now.Add(-uiaSessionLifetime).UnixMilli())
			if err != nil {
				return err
			}
			for _, s := range sessions {
				if tok := s.Data[uiaDataRegToken]; tok != "" {
					if err := storage.ReleaseRegistrationToken(ctx, tx, tok); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err == nil {
			err = storage.PurgeExpiredLoginTokens(ctx, ac.db, now.UnixMilli())
		}
		if err == nil {
			// Expired tokens answer soft_logout for a week, then look unknown.
			_, err = storage.PurgeExpiredAccessTokens(ctx, ac.db, now.Add(-7*24*time.Hour).UnixMilli())
		}
		if err != nil {
			logrus.WithError(err).Warn("accounts: maintenance")
		}
	}()
}

// ---------------------------------------------------------------------------
// User IDs.

func (ac *accounts) userID(localpart string) string {
	return "@" + localpart + ":" + ac.opts.ServerName
}

// checkNewLocalpart validates a localpart for a new account.
func (ac *accounts) checkNewLocalpart(localpart string) (httpapi.Response, bool) {
	if !acct.ValidLocalpart(localpart) {
		return httpapi.Errf(http.StatusBadRequest, "M_INVALID_USERNAME", "user ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+', and may not start with '_'"), false
	}
	if len(ac.userID(localpart)) > 255 {
		return httpapi.Errf(http.StatusBadRequest, "M_INVALID_USERNAME", "user ID may not be longer than 255 characters"), false
	}
	return httpapi.Response{}, true
}

// resolveLocalUser turns a login identifier (localpart or full user ID)
// into a local user ID, lowercasing the localpart. ok is false for users of
// other servers or malformed input.
func (ac *accounts) resolveLocalUser(s string) (string, bool) {
	if s == "" || len(s) > 255 {
		return "", false
	}
	local := s
	if strings.HasPrefix(s, "@") {
		l, server, found := strings.Cut(s[1:], ":")
		if !found || !strings.EqualFold(server, ac.opts.ServerName) {
			return "", false
		}
		local = l
	}
	if local == "" {
		return "", false
	}
	return ac.userID(strings.ToLower(local)), true
}

// ErrUserInUse and ErrInvalidUsername are returned by CreateUser.
var (
	ErrUserInUse       = errors.New("user ID already taken")
	ErrInvalidUsername = errors.New("invalid username: use a-z, 0-9 and . _ = - / + (not starting with _)")
)

// CreateUser creates a local account with a password (for `enclave
// create-user` and tests). The localpart is lowercased.
func CreateUser(ctx context.Context, db *storage.DB, serverName, localpart, password string, admin bool) (string, error) {
	localpart = strings.ToLower(localpart)
	userID := "@" + localpart + ":" + serverName
	if !acct.ValidLocalpart(localpart) || len(userID) > 255 {
		return "", ErrInvalidUsername
	}
	if password == "" || len(password) > acct.MaxPasswordBytes {
		return "", fmt.Errorf("password must be 1 to %d bytes", acct.MaxPasswordBytes)
	}
	hash, err := acct.HashPassword(ctx, password)
	if err != nil {
		return "", err
	}
	err = db.WithTx(ctx, func(tx *storage.Tx) error {
		// Checked first: in PostgreSQL a failed insert would abort the transaction.
		if taken, err := storage.AccountExists(ctx, tx, userID); err != nil {
			return err
		} else if taken {
			return ErrUserInUse
		}
		ok, err := storage.CreateAccount(ctx, tx, &storage.Account{UserID: userID, Localpart: localpart, PasswordHash: hash, CreatedTS: time.Now().UnixMilli(), IsAdmin: admin, DisplayName: localpart})
		if err != nil {
			return err
		}
		if !ok {
			return ErrUserInUse
		}
		return auditapi.RecordDetached(ctx, tx, auditapi.Entry{Action: auditapi.ActionRegister, Target: userID, Details: map[string]any{"kind": "cli", "admin": admin}})
	})
	if err != nil {
		return "", err
	}
	return userID, nil
}

// ---------------------------------------------------------------------------
// Endpoints.

func (ac *accounts) getWhoami(r *http.Request, dev *httpapi.Device) httpapi.Response {
	return httpapi.JSON(http.StatusOK, map[string]any{"user_id": dev.UserID, "device_id": dev.DeviceID, "is_guest": dev.IsGuest})
}

func (ac *accounts) getThreepids(r *http.Request, dev *httpapi.Device) httpapi.Response {
	return httpapi.JSON(http.StatusOK, map[string]any{"threepids": []any{}})
}

// POST /logout: revoke this token and delete its device.
func (ac *accounts) postLogout(r *http.Request, dev *httpapi.Device) httpapi.Response {
	ctx := r.Context()
	err := ac.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.DeleteDevices(ctx, tx, dev.UserID, []string{dev.DeviceID}); err != nil {
			return err
		}
		if err := ac.accountData.deleteDeviceData(ctx, tx, dev.UserID, []string{dev.DeviceID}); err != nil {
			return err
		}
		// A token without a device row (should not happen) is revoked too.
		if err := storage.DeleteAccessToken(ctx, tx, dev.AccessTokenID); err != nil {
			return err
		}
		if err := ac.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionLogout, Target: dev.DeviceID}); err != nil {
			return err
		}
		return ac.auditDevicesRemoved(ctx, tx, dev.UserID, []string{dev.DeviceID}, "logout")
	})
	ac.invalidateUserTokens(dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// POST /logout/all: revoke every token and delete every device.
func (ac *accounts) postLogoutAll(r *http.Request, dev *httpapi.Device) httpapi.Response {
	err := ac.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		ids, err := storage.DeleteAllDevices(r.Context(), tx, dev.UserID, "")
		if err != nil {
			return err
		}
		if err := ac.accountData.deleteDeviceData(r.Context(), tx, dev.UserID, ids); err != nil {
			return err
		}
		if err := ac.opts.Audit.Record(r.Context(), tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionLogout, Target: dev.DeviceID, Details: map[string]any{"all": true}}); err != nil {
			return err
		}
		return ac.auditDevicesRemoved(r.Context(), tx, dev.UserID, ids, "logout_all")
	})
	ac.invalidateUserTokens(dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// POST /account/password
func (ac *accounts) postPassword(r *http.Request, dev *httpapi.Device) httpapi.Response {
	body, resp, ok := httpapi.ReadBody(r)
	if !ok {
		return resp
	}
	var req struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.BadJSON("request body has the wrong shape: %v", err)
	}
	if req.NewPassword == nil || *req.NewPassword == "" {
		return httpapi.MissingParam("new_password is required")
	}
	if len(*req.NewPassword) > acct.MaxPasswordBytes {
		return httpapi.Errf(http.StatusBadRequest, "M_WEAK_PASSWORD", "password may not be longer than %d bytes", acct.MaxPasswordBytes)
	}
	if resp, ok := ac.requireUIA(r, body, dev, [][]string{{stagePassword}}); !ok {
		return resp
	}
	hash, err := acct.HashPassword(r.Context(), *req.NewPassword)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	err = ac.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		if err := storage.SetPassword(r.Context(), tx, dev.UserID, hash); err != nil {
			return err
		}
		if err := ac.opts.Audit.Record(r.Context(), tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionPasswordChange, Target: dev.UserID, Details: map[string]any{"logout_devices": logout}}); err != nil {
			return err
		}
		if !logout {
			return nil
		}
		ids, err := storage.DeleteAllDevices(r.Context(), tx, dev.UserID, dev.DeviceID)
		if err != nil {
			return err
		}
		if err := ac.accountData.deleteDeviceData(r.Context(), tx, dev.UserID, ids); err != nil {
			return err
		}
		if err := ac.auditDevicesRemoved(r.Context(), tx, dev.UserID, ids, "password_change"); err != nil {
			return err
		}
		return storage.DeleteAccessTokens(r.Context(), tx, dev.UserID, dev.AccessTokenID)
	})
	if logout {
		ac.invalidateUserTokens(dev.UserID)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// POST /account/deactivate
func (ac *accounts) postDeactivate(r *http.Request, dev *httpapi.Device) httpapi.Response {
	body, resp, ok := httpapi.ReadBody(r)
	if !ok {
		return resp
	}
	var req struct {
		Erase    bool   `json:"erase"`
		IDServer string `json:"id_server"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.BadJSON("request body has the wrong shape: %v", err)
	}
	if resp, ok := ac.requireUIA(r, body, dev, [][]string{{stagePassword}}); !ok {
		return resp
	}
	ctx := r.Context()
	err := ac.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.Deactivate(ctx, tx, dev.UserID, req.Erase); err != nil {
			return err
		}
		return ac.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionDeactivate, Target: dev.UserID, Details: map[string]any{"erase": req.Erase}})
	})
	ac.invalidateUserTokens(dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	ac.leaveAllRooms(ctx, dev.UserID)
	return httpapi.JSON(http.StatusOK, map[string]any{"id_server_unbind_result": "no-support"})
}

// leaveAllRooms leaves (or rejects invites to) every room of a deactivated
// user. Failures are logged: the account is already deactivated.
func (ac *accounts) leaveAllRooms(ctx context.Context, userID string) {
	if ac.rs == nil {
		return
	}
	rooms, err := storage.RoomsByMembership(ctx, ac.db, userID, "join", "invite", "knock")
	if err != nil {
		logrus.WithError(err).WithField("user_id", userID).Error("accounts: listing rooms to leave on deactivation")
		return
	}
	for roomID := range rooms {
		uid := userID
		_, err := ac.rs.SendEvent(ctx, roomserver.SendRequest{
			RoomID:   roomID,
			Sender:   userID,
			Type:     "m.room.member",
			StateKey: &uid,
			Content:  json.RawMessage(`{"membership":"leave"}`),
		})
		if err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"user_id": userID, "room_id": roomID}).Warn("accounts: leaving room on deactivation")
		}
	}
}

// POST /refresh: exchange a refresh token for a new access+refresh pair.
// The old refresh token is invalidated at once; the old access token lives
// until its (short) expiry so requests already in flight still succeed.
func (ac *accounts) postRefresh(r *http.Request) httpapi.Response {
	var req struct {
		RefreshToken *string `json:"refresh_token"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.RefreshToken == nil || *req.RefreshToken == "" {
		return httpapi.MissingParam("refresh_token is required")
	}
	ctx := r.Context()
	old, err := storage.LookupRefreshToken(ctx, ac.db, hashToken(*req.RefreshToken))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && old.Used) {
		return unknownToken(false, "unknown or already used refresh token")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	acc, err := storage.GetAccount(ctx, ac.db, old.UserID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && acc.Deactivated) {
		return unknownToken(false, "unknown or already used refresh token")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	errUsed := errors.New("refresh token used concurrently")
	now := time.Now()
	rt, rhash := newToken(refreshTokenPrefix)
	at, ahash := newToken(accessTokenPrefix)
	life := ac.refreshAccessLifetime()
	err = ac.db.WithTx(ctx, func(tx *storage.Tx) error {
		newID, err := storage.InsertRefreshToken(ctx, tx, &storage.RefreshToken{TokenHash: rhash, UserID: old.UserID, DeviceID: old.DeviceID, CreatedTS: now.UnixMilli()})
		if err != nil {
			return err
		}
		won, err := storage.RotateRefreshToken(ctx, tx, old.ID, newID)
		if err != nil {
			return err
		}
		if !won {
			return errUsed
		}
		_, err = storage.InsertAccessToken(ctx, tx, &storage.AccessToken{TokenHash: ahash, UserID: old.UserID, DeviceID: old.DeviceID,
			CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(life).UnixMilli(), RefreshTokenID: newID})
		return err
	})
	if errors.Is(err, errUsed) {
		return unknownToken(false, "unknown or already used refresh token")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	ac.maintain()
	return httpapi.JSON(http.StatusOK, map[string]any{"access_token": at, "refresh_token": rt, "expires_in_ms": life.Milliseconds()})
}
