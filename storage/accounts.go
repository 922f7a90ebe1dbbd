package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Account tables: written by the client API (login, registration, devices,
// UIA) and read on every authenticated request.
//
//   - accounts: local users. password_hash is an argon2id PHC string ("" for
//     accounts that cannot log in with a password). displayname and
//     avatar_url hold the user's global profile (NULL = unset).
//   - devices: a user's logged-in sessions, keyed by (user_id, device_id).
//   - access_tokens / refresh_tokens / login_tokens: only the hex SHA-256 of
//     each token is stored, never the token itself.
//   - registration_tokens: tokens for the m.login.registration_token stage.
//     pending counts registrations that passed the stage but have not yet
//     finished; completed counts finished ones. A token is usable while
//     pending + completed < uses_allowed (NULL = unlimited) and expiry_time
//     (ms, NULL = never) is in the future.
//   - uia_sessions: User-Interactive Auth sessions, kept in the store so a
//     session survives restarts and works across processes.
const accountsV1 = `
CREATE TABLE accounts (
	user_id TEXT PRIMARY KEY,
	localpart TEXT NOT NULL,
	password_hash TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	is_admin BOOLEAN NOT NULL DEFAULT FALSE,
	is_guest BOOLEAN NOT NULL DEFAULT FALSE,
	deactivated BOOLEAN NOT NULL DEFAULT FALSE,
	displayname TEXT,
	avatar_url TEXT
);
CREATE UNIQUE INDEX accounts_localpart ON accounts(localpart);
CREATE TABLE devices (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	display_name TEXT,
	created_ts BIGINT NOT NULL,
	last_seen_ts BIGINT NOT NULL DEFAULT 0,
	last_seen_ip TEXT NOT NULL DEFAULT '',
	last_seen_ua TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (user_id, device_id)
);
CREATE TABLE access_tokens (
	id {{serial}},
	token_hash TEXT NOT NULL UNIQUE,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL DEFAULT 0,
	refresh_token_id BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX access_tokens_device ON access_tokens(user_id, device_id);
CREATE TABLE refresh_tokens (
	id {{serial}},
	token_hash TEXT NOT NULL UNIQUE,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	used BOOLEAN NOT NULL DEFAULT FALSE,
	next_id BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_device ON refresh_tokens(user_id, device_id);
CREATE INDEX refresh_tokens_next ON refresh_tokens(next_id);
CREATE TABLE login_tokens (
	token_hash TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE TABLE registration_tokens (
	token TEXT PRIMARY KEY,
	uses_allowed BIGINT,
	pending BIGINT NOT NULL DEFAULT 0,
	completed BIGINT NOT NULL DEFAULT 0,
	expiry_time BIGINT
);
CREATE TABLE uia_sessions (
	session_id TEXT PRIMARY KEY,
	created_ts BIGINT NOT NULL,
	user_id TEXT NOT NULL DEFAULT '',
	op TEXT NOT NULL DEFAULT '',
	completed TEXT NOT NULL DEFAULT '[]',
	params TEXT NOT NULL DEFAULT '{}',
	data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX uia_sessions_created ON uia_sessions(created_ts)`

// ---------------------------------------------------------------------------
// Accounts

// Account is a row of accounts.
type Account struct {
	UserID       string
	Localpart    string
	PasswordHash string // argon2id PHC string; "" = no password login
	CreatedTS    int64
	IsAdmin      bool
	IsGuest      bool
	Deactivated  bool
	DisplayName  string // "" = unset
	AvatarURL    string // "" = unset
	Erased       bool   // deactivated with erase (GDPR): see Deactivate
	ShadowBanned bool   // sends appear to succeed and reach no one (admin shadow ban)
}

const accountCols = `user_id, localpart, password_hash, created_ts, is_admin, is_guest, deactivated, displayname, avatar_url, erased, shadow_banned`

// accountsV2 marks erased accounts (Synapse's "erase" on deactivation).
const accountsV2 = `ALTER TABLE accounts ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE`

// accountsV3 marks shadow-banned accounts (Synapse's shadow_ban admin API).
const accountsV3 = `ALTER TABLE accounts ADD COLUMN shadow_banned BOOLEAN NOT NULL DEFAULT FALSE`

func scanAccount(sc interface{ Scan(...any) error }) (*Account, error) {
	var a Account
	var dn, av sql.NullString
	if err := sc.Scan(&a.UserID, &a.Localpart, &a.PasswordHash, &a.CreatedTS, &a.IsAdmin, &a.IsGuest, &a.Deactivated, &dn, &av, &a.Erased, &a.ShadowBanned); err != nil {
		return nil, err
	}
	a.DisplayName, a.AvatarURL = dn.String, av.String
	return &a, nil
}

// CreateAccount inserts an account. It returns false (and changes nothing)
// if the user ID or localpart is taken.
func CreateAccount(ctx context.Context, q Querier, a *Account) (bool, error) {
	// ON CONFLICT, not a caught error: a failed statement would abort a
	// PostgreSQL transaction.
	res, err := q.ExecContext(ctx, `INSERT INTO accounts (`+accountCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING`,
		a.UserID, a.Localpart, a.PasswordHash, a.CreatedTS, a.IsAdmin, a.IsGuest, a.Deactivated, NullString(a.DisplayName), NullString(a.AvatarURL), a.Erased, a.ShadowBanned)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// GetAccount loads an account (deactivated ones included), or ErrNotFound.
func GetAccount(ctx context.Context, q Querier, userID string) (*Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountCols+` FROM accounts WHERE user_id = $1`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return a, err
}

// AccountExists reports whether the user ID is registered (deactivated
// accounts count: their IDs are never reused).
func AccountExists(ctx context.Context, q Querier, userID string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts WHERE user_id = $1`, userID).Scan(&n)
	return n > 0, err
}

// SetPassword replaces the account's password hash.
func SetPassword(ctx context.Context, q Querier, userID, hash string) error {
	_, err := q.ExecContext(ctx, `UPDATE accounts SET password_hash = $1 WHERE user_id = $2`, hash, userID)
	return err
}

// SetAdmin grants or revokes server admin.
func SetAdmin(ctx context.Context, q Querier, userID string, admin bool) error {
	_, err := q.ExecContext(ctx, `UPDATE accounts SET is_admin = $1 WHERE user_id = $2`, admin, userID)
	return err
}

// SetAccountDisplayName sets the global display name ("" clears it).
func SetAccountDisplayName(ctx context.Context, q Querier, userID, name string) error {
	_, err := q.ExecContext(ctx, `UPDATE accounts SET displayname = $1 WHERE user_id = $2`, NullString(name), userID)
	return err
}

// SetAccountAvatarURL sets the global avatar URL ("" clears it).
func SetAccountAvatarURL(ctx context.Context, q Querier, userID, url string) error {
	_, err := q.ExecContext(ctx, `UPDATE accounts SET avatar_url = $1 WHERE user_id = $2`, NullString(url), userID)
	return err
}

// Deactivate marks the account deactivated and deletes all its devices and
// tokens (running the device cleanups). With erase, its profile is cleared
// too. Run it in a transaction. The password hash is kept so that a login
// with the right password can be told M_USER_DEACTIVATED.
func Deactivate(ctx context.Context, q Querier, userID string, erase bool) error {
	query := `UPDATE accounts SET deactivated = TRUE WHERE user_id = $1`
	if erase {
		query = `UPDATE accounts SET deactivated = TRUE, displayname = NULL, avatar_url = NULL, erased = TRUE WHERE user_id = $1`
		onCommit(q, func(db *DB) { db.erased.add(userID) })
	}
	if _, err := q.ExecContext(ctx, query, userID); err != nil {
		return err
	}
	if _, err := DeleteAllDevices(ctx, q, userID, ""); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `DELETE FROM login_tokens WHERE user_id = $1`, userID)
	return err
}

// ---------------------------------------------------------------------------
// Devices

// Device is a row of devices.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string // "" = unset
	CreatedTS   int64
	LastSeenTS  int64
	LastSeenIP  string
	LastSeenUA  string
}

// cleanupDevices deletes every component's per-device rows (device keys,
// to-device inbox, pushers, …) when devices are deleted, inside the same
// Querier (normally a transaction) as the device deletion. A table keyed by
// device gets its cleanup called here.
func cleanupDevices(ctx context.Context, q Querier, userID string, deviceIDs []string) error {
	if err := cleanupE2EEDevices(ctx, q, userID, deviceIDs); err != nil {
		return err
	}
	if err := cleanupDehydrated(ctx, q, userID, deviceIDs); err != nil {
		return err
	}
	return cleanupPushers(ctx, q, userID, deviceIDs)
}

const deviceCols = `user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_ua`

func scanDevice(sc interface{ Scan(...any) error }) (*Device, error) {
	var d Device
	var dn sql.NullString
	if err := sc.Scan(&d.UserID, &d.DeviceID, &dn, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP, &d.LastSeenUA); err != nil {
		return nil, err
	}
	d.DisplayName = dn.String
	return &d, nil
}

// CreateDevice inserts a device if the user has none with that ID. It
// reports whether it created one; an existing device is left unchanged
// (logging in again with a known device_id keeps its display name).
func CreateDevice(ctx context.Context, q Querier, d *Device) (bool, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (user_id, device_id) DO NOTHING`,
		d.UserID, d.DeviceID, NullString(d.DisplayName), d.CreatedTS, d.LastSeenTS, d.LastSeenIP, d.LastSeenUA)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// UpsertDevice is CreateDevice for callers that do not care whether the
// device already existed.
func UpsertDevice(ctx context.Context, q Querier, d *Device) error {
	_, err := CreateDevice(ctx, q, d)
	return err
}

// GetDevice loads one device, or ErrNotFound.
func GetDevice(ctx context.Context, q Querier, userID, deviceID string) (*Device, error) {
	d, err := scanDevice(q.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return d, err
}

// ListDevices lists the user's devices ordered by ID.
func ListDevices(ctx context.Context, q Querier, userID string) ([]*Device, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ListDeviceIDs lists the IDs of the user's devices.
func ListDeviceIDs(ctx context.Context, q Querier, userID string) ([]string, error) {
	return queryStrings(ctx, q, `SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
}

// SetDeviceDisplayName renames a device ("" clears the name); false if the
// device does not exist.
func SetDeviceDisplayName(ctx context.Context, q Querier, userID, deviceID, name string) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`, NullString(name), userID, deviceID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// UpdateDeviceLastSeen records when and from where a device was last used.
// An empty ip or ua keeps the stored value.
func UpdateDeviceLastSeen(ctx context.Context, q Querier, userID, deviceID string, ts int64, ip, ua string) error {
	_, err := q.ExecContext(ctx, `UPDATE devices SET last_seen_ts = $1,
		last_seen_ip = CASE WHEN $2 = '' THEN last_seen_ip ELSE $2 END,
		last_seen_ua = CASE WHEN $3 = '' THEN last_seen_ua ELSE $3 END
		WHERE user_id = $4 AND device_id = $5`, ts, ip, ua, userID, deviceID)
	return err
}

// DeleteDeviceTokens revokes every access and refresh token of a device,
// keeping the device (login with an existing device_id).
func DeleteDeviceTokens(ctx context.Context, q Querier, userID, deviceID string) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	return err
}

// DeleteDevices deletes the given devices of the user with their access and
// refresh tokens, and runs the registered device cleanups. Unknown IDs are
// ignored. Run it in a transaction.
func DeleteDevices(ctx context.Context, q Querier, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	for start := 0; start < len(deviceIDs); start += 500 {
		chunk := deviceIDs[start:min(start+500, len(deviceIDs))]
		args := []any{userID}
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args = append(args, id)
			ph[i] = fmt.Sprintf("$%d", i+2)
		}
		in := `(` + strings.Join(ph, ",") + `)`
		for _, table := range []string{"access_tokens", "refresh_tokens", "devices"} {
			if _, err := q.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = $1 AND device_id IN `+in, args...); err != nil {
				return err
			}
		}
	}
	return cleanupDevices(ctx, q, userID, deviceIDs)
}

// DeleteDevice deletes one device and its tokens (see DeleteDevices).
func DeleteDevice(ctx context.Context, q Querier, userID, deviceID string) error {
	return DeleteDevices(ctx, q, userID, []string{deviceID})
}

// DeleteAllDevices deletes every device of the user except exceptDeviceID
// ("" = none spared), with their tokens, and returns the deleted IDs. Tokens
// whose device row is missing are revoked too. Run it in a transaction.
func DeleteAllDevices(ctx context.Context, q Querier, userID, exceptDeviceID string) ([]string, error) {
	ids, err := queryStrings(ctx, q, `SELECT device_id FROM devices WHERE user_id = $1 AND device_id <> $2
		UNION SELECT device_id FROM access_tokens WHERE user_id = $1 AND device_id <> $2`, userID, exceptDeviceID)
	if err != nil {
		return nil, err
	}
	if err := DeleteDevices(ctx, q, userID, ids); err != nil {
		return nil, err
	}
	return ids, nil
}

// ---------------------------------------------------------------------------
// Access tokens

// AccessToken is a row of access_tokens.
type AccessToken struct {
	ID             int64
	TokenHash      string // hex SHA-256 of the token
	UserID         string
	DeviceID       string
	CreatedTS      int64
	ExpiresTS      int64 // ms; 0 = never
	RefreshTokenID int64 // 0 = issued without a refresh token
}

// InsertAccessToken stores a token and returns its ID.
func InsertAccessToken(ctx context.Context, q Querier, t *AccessToken) (int64, error) {
	id, err := insertReturningID(ctx, q, "id", `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_id)
		VALUES ($1, $2, $3, $4, $5, $6)`, t.TokenHash, t.UserID, t.DeviceID, t.CreatedTS, t.ExpiresTS, t.RefreshTokenID)
	if err == nil {
		t.ID = id
	}
	return id, err
}

// AccessTokenInfo is what authenticating a request needs: the token and its
// owner's account flags.
type AccessTokenInfo struct {
	ID             int64
	UserID         string
	DeviceID       string
	ExpiresTS      int64 // ms; 0 = never
	RefreshTokenID int64
	IsAdmin        bool
	IsGuest        bool
	Deactivated    bool
	ShadowBanned   bool
}

// LookupAccessToken finds a token by its hash, or ErrNotFound. Expiry is
// not checked: the caller tells expired tokens (soft logout) from unknown.
func LookupAccessToken(ctx context.Context, q Querier, tokenHash string) (*AccessTokenInfo, error) {
	var t AccessTokenInfo
	err := q.QueryRowContext(ctx, `SELECT t.id, t.user_id, t.device_id, t.expires_ts, t.refresh_token_id, a.is_admin, a.is_guest, a.deactivated, a.shadow_banned
		FROM access_tokens t JOIN accounts a ON a.user_id = t.user_id WHERE t.token_hash = $1`, tokenHash).
		Scan(&t.ID, &t.UserID, &t.DeviceID, &t.ExpiresTS, &t.RefreshTokenID, &t.IsAdmin, &t.IsGuest, &t.Deactivated, &t.ShadowBanned)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// DeleteAccessToken revokes one token by ID.
func DeleteAccessToken(ctx context.Context, q Querier, id int64) error {
	_, err := q.ExecContext(ctx, `DELETE FROM access_tokens WHERE id = $1`, id)
	return err
}

// DeleteAccessTokens revokes all of the user's access tokens except the one
// with ID exceptID (0 = none spared). Devices and refresh tokens stay.
func DeleteAccessTokens(ctx context.Context, q Querier, userID string, exceptID int64) error {
	_, err := q.ExecContext(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND id <> $2`, userID, exceptID)
	return err
}

// PurgeExpiredAccessTokens deletes access tokens that expired before the
// given time (ms). Keep a grace period: an expired token still answers
// soft_logout, a purged one looks unknown.
func PurgeExpiredAccessTokens(ctx context.Context, q Querier, before int64) (int64, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM access_tokens WHERE expires_ts > 0 AND expires_ts < $1`, before)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// ---------------------------------------------------------------------------
// Refresh tokens

// RefreshToken is a row of refresh_tokens.
type RefreshToken struct {
	ID        int64
	TokenHash string
	UserID    string
	DeviceID  string
	CreatedTS int64
	Used      bool
	NextID    int64 // the token it was exchanged for
}

// InsertRefreshToken stores a refresh token and returns its ID.
func InsertRefreshToken(ctx context.Context, q Querier, t *RefreshToken) (int64, error) {
	id, err := insertReturningID(ctx, q, "id", `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, used, next_id)
		VALUES ($1, $2, $3, $4, FALSE, 0)`, t.TokenHash, t.UserID, t.DeviceID, t.CreatedTS)
	if err == nil {
		t.ID = id
	}
	return id, err
}

// LookupRefreshToken finds a refresh token by hash, or ErrNotFound.
func LookupRefreshToken(ctx context.Context, q Querier, tokenHash string) (*RefreshToken, error) {
	var t RefreshToken
	err := q.QueryRowContext(ctx, `SELECT id, token_hash, user_id, device_id, created_ts, used, next_id FROM refresh_tokens WHERE token_hash = $1`, tokenHash).
		Scan(&t.ID, &t.TokenHash, &t.UserID, &t.DeviceID, &t.CreatedTS, &t.Used, &t.NextID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// RotateRefreshToken marks refresh token oldID used, pointing at its
// successor newID. It reports false if the token was already used or is
// gone, so of two concurrent refreshes with one token only one wins. The
// token oldID replaced earlier is deleted; one used generation is kept.
func RotateRefreshToken(ctx context.Context, q Querier, oldID, newID int64) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE refresh_tokens SET used = TRUE, next_id = $1 WHERE id = $2 AND used = FALSE`, newID, oldID)
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return false, err
	}
	_, err = q.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE next_id = $1 AND used = TRUE`, oldID)
	return err == nil, err
}

// ---------------------------------------------------------------------------
// Login tokens (m.login.token)

// InsertLoginToken stores a one-shot login token for the user.
func InsertLoginToken(ctx context.Context, q Querier, tokenHash, userID string, createdTS, expiresTS int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO login_tokens (token_hash, user_id, created_ts, expires_ts) VALUES ($1, $2, $3, $4)`,
		tokenHash, userID, createdTS, expiresTS)
	return err
}

// ConsumeLoginToken deletes the token and returns its user if it had not
// expired at now (ms); otherwise ErrNotFound. Each token works once, even
// under concurrent use.
func ConsumeLoginToken(ctx context.Context, q Querier, tokenHash string, now int64) (string, error) {
	var userID string
	var exp int64
	err := q.QueryRowContext(ctx, `DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts`, tokenHash).Scan(&userID, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", err
	}
	if exp <= now {
		return "", ErrNotFound
	}
	return userID, nil
}

// PurgeExpiredLoginTokens deletes login tokens expired before now (ms).
func PurgeExpiredLoginTokens(ctx context.Context, q Querier, now int64) error {
	_, err := q.ExecContext(ctx, `DELETE FROM login_tokens WHERE expires_ts <= $1`, now)
	return err
}

// ---------------------------------------------------------------------------
// Registration tokens

// RegistrationToken is a row of registration_tokens, shaped like the
// Synapse admin API's token objects.
type RegistrationToken struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"` // nil = unlimited
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"` // ms; nil = never
}

func scanRegistrationToken(sc interface{ Scan(...any) error }) (*RegistrationToken, error) {
	var t RegistrationToken
	var uses, exp sql.NullInt64
	if err := sc.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &exp); err != nil {
		return nil, err
	}
	if uses.Valid {
		t.UsesAllowed = &uses.Int64
	}
	if exp.Valid {
		t.ExpiryTime = &exp.Int64
	}
	return &t, nil
}

func nullInt(p *int64) sql.NullInt64 {
	if p == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: *p, Valid: true}
}

// CreateRegistrationToken inserts a token; false if it already exists.
func CreateRegistrationToken(ctx context.Context, q Querier, t *RegistrationToken) (bool, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time) VALUES ($1, $2, 0, 0, $3) ON CONFLICT DO NOTHING`,
		t.Token, nullInt(t.UsesAllowed), nullInt(t.ExpiryTime))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// GetRegistrationToken loads a token, or ErrNotFound.
func GetRegistrationToken(ctx context.Context, q Querier, token string) (*RegistrationToken, error) {
	t, err := scanRegistrationToken(q.QueryRowContext(ctx, `SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens WHERE token = $1`, token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return t, err
}

// ListRegistrationTokens lists all tokens ordered by token.
func ListRegistrationTokens(ctx context.Context, q Querier) ([]*RegistrationToken, error) {
	rows, err := q.QueryContext(ctx, `SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens ORDER BY token`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*RegistrationToken
	for rows.Next() {
		t, err := scanRegistrationToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// UpdateRegistrationToken sets a token's uses_allowed and expiry_time (nil
// = NULL); false if the token does not exist. Counters are untouched.
func UpdateRegistrationToken(ctx context.Context, q Querier, token string, usesAllowed, expiryTime *int64) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE registration_tokens SET uses_allowed = $1, expiry_time = $2 WHERE token = $3`,
		nullInt(usesAllowed), nullInt(expiryTime), token)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// DeleteRegistrationToken deletes a token; false if it did not exist.
func DeleteRegistrationToken(ctx context.Context, q Querier, token string) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// RegistrationTokenValid reports whether the token exists, has not expired
// at now (ms) and has uses left.
func RegistrationTokenValid(ctx context.Context, q Querier, token string, now int64) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM registration_tokens WHERE token = $1
		AND (uses_allowed IS NULL OR pending + completed < uses_allowed) AND (expiry_time IS NULL OR expiry_time > $2)`, token, now).Scan(&n)
	return n > 0, err
}

// ReserveRegistrationToken atomically takes one use of a valid token as
// pending (the UIA stage passed). It reports false if the token is unknown,
// expired or used up. Follow with CompleteRegistrationToken when the
// account is created, or ReleaseRegistrationToken when it will not be.
func ReserveRegistrationToken(ctx context.Context, q Querier, token string, now int64) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1
		AND (uses_allowed IS NULL OR pending + completed < uses_allowed) AND (expiry_time IS NULL OR expiry_time > $2)`, token, now)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// CompleteRegistrationToken turns one pending use into a completed one.
func CompleteRegistrationToken(ctx context.Context, q Querier, token string) error {
	_, err := q.ExecContext(ctx, `UPDATE registration_tokens SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END,
		completed = completed + 1 WHERE token = $1`, token)
	return err
}

// ReleaseRegistrationToken gives back a pending use (abandoned registration).
func ReleaseRegistrationToken(ctx context.Context, q Querier, token string) error {
	_, err := q.ExecContext(ctx, `UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0`, token)
	return err
}

// ---------------------------------------------------------------------------
// User-Interactive Auth sessions

// UIASession is a row of uia_sessions.
type UIASession struct {
	ID        string
	CreatedTS int64
	UserID    string // the authenticated user it belongs to; "" for registration
	Op        string // the request it authorises (method and path)
	Completed []string
	Params    json.RawMessage   // the "params" object shown to the client
	Data      map[string]string // server-side state kept between requests
}

func scanUIASession(sc interface{ Scan(...any) error }) (*UIASession, error) {
	var s UIASession
	var completed, params, data string
	if err := sc.Scan(&s.ID, &s.CreatedTS, &s.UserID, &s.Op, &completed, &params, &data); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(completed), &s.Completed); err != nil {
		return nil, fmt.Errorf("uia session %s: completed: %w", s.ID, err)
	}
	s.Params = json.RawMessage(params)
	if err := json.Unmarshal([]byte(data), &s.Data); err != nil {
		return nil, fmt.Errorf("uia session %s: data: %w", s.ID, err)
	}
	if s.Completed == nil {
		s.Completed = []string{}
	}
	if s.Data == nil {
		s.Data = map[string]string{}
	}
	return &s, nil
}

func (s *UIASession) encode() (completed, params, data string) {
	c := s.Completed
	if c == nil {
		c = []string{}
	}
	cb, _ := json.Marshal(c)
	p := string(s.Params)
	if p == "" {
		p = "{}"
	}
	d := s.Data
	if d == nil {
		d = map[string]string{}
	}
	db, _ := json.Marshal(d)
	return string(cb), p, string(db)
}

const uiaCols = `session_id, created_ts, user_id, op, completed, params, data`

// CreateUIASession stores a new session.
func CreateUIASession(ctx context.Context, q Querier, s *UIASession) error {
	c, p, d := s.encode()
	_, err := q.ExecContext(ctx, `INSERT INTO uia_sessions (`+uiaCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		s.ID, s.CreatedTS, s.UserID, s.Op, c, p, d)
	return err
}

// GetUIASession loads a session, or ErrNotFound.
func GetUIASession(ctx context.Context, q Querier, id string) (*UIASession, error) {
	s, err := scanUIASession(q.QueryRowContext(ctx, `SELECT `+uiaCols+` FROM uia_sessions WHERE session_id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return s, err
}

// UpdateUIASession saves a session's completed stages, params and data.
func UpdateUIASession(ctx context.Context, q Querier, s *UIASession) error {
	c, p, d := s.encode()
	_, err := q.ExecContext(ctx, `UPDATE uia_sessions SET completed = $1, params = $2, data = $3 WHERE session_id = $4`, c, p, d, s.ID)
	return err
}

// DeleteUIASession deletes a session. It reports whether it existed, so a
// completed session can be consumed exactly once.
func DeleteUIASession(ctx context.Context, q Querier, id string) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// PurgeUIASessions deletes sessions created before the given time (ms) and
// returns them, so the caller can undo what they held (pending
// registration-token uses). Run it in a transaction with that undo.
func PurgeUIASessions(ctx context.Context, q Querier, before int64) ([]*UIASession, error) {
	rows, err := q.QueryContext(ctx, `DELETE FROM uia_sessions WHERE created_ts < $1 RETURNING `+uiaCols, before)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*UIASession
	for rows.Next() {
		s, err := scanUIASession(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// erasedSet is the set of erased local users, read on every event served
// to a client (Erased): loaded once, then kept by Deactivate after commit.
type erasedSet struct {
	mu     sync.RWMutex
	loaded bool
	users  map[string]bool
}

func (e *erasedSet) add(userID string) {
	e.mu.Lock()
	if e.users == nil {
		e.users = map[string]bool{}
	}
	e.users[userID] = true
	e.mu.Unlock()
}

func (e *erasedSet) remove(userID string) {
	e.mu.Lock()
	delete(e.users, userID)
	e.mu.Unlock()
}

// Erased reports whether userID was deactivated with erase: their events
// are served redacted to users who were not in the room when they were
// sent. It costs a map lookup once loaded.
func Erased(ctx context.Context, db *DB, userID string) (bool, error) {
	e := &db.erased
	e.mu.RLock()
	loaded, erased := e.loaded, e.users[userID]
	e.mu.RUnlock()
	if loaded {
		return erased, nil
	}
	users, err := queryStrings(ctx, db, `SELECT user_id FROM accounts WHERE erased = TRUE`)
	if err != nil {
		return false, err
	}
	e.mu.Lock()
	if !e.loaded {
		if e.users == nil {
			e.users = map[string]bool{}
		}
		for _, u := range users {
			e.users[u] = true
		}
		e.loaded = true
	}
	erased = e.users[userID]
	e.mu.Unlock()
	return erased, nil
}

// SetShadowBanned sets or clears the account's shadow ban. The caller
// drops the user's cached tokens after commit (the flag rides on them).
func SetShadowBanned(ctx context.Context, q Querier, userID string, banned bool) error {
	res, err := q.ExecContext(ctx, `UPDATE accounts SET shadow_banned = $1 WHERE user_id = $2`, banned, userID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// SetAccessTokenExpiry sets when a token stops working (ms; 0: never).
func SetAccessTokenExpiry(ctx context.Context, q Querier, tokenHash string, expiresTS int64) error {
	_, err := q.ExecContext(ctx, `UPDATE access_tokens SET expires_ts = $1 WHERE token_hash = $2`, expiresTS, tokenHash)
	return err
}
