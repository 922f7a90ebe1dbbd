package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Device identity keys, one-time keys and fallback keys.

// DeviceKeys is a row of e2ee_device_keys.
type DeviceKeys struct {
	UserID   string
	DeviceID string
	KeyJSON  json.RawMessage
	Ed25519  string
}

// GetDeviceKeys loads one device's keys, or ErrNotFound.
func GetDeviceKeys(ctx context.Context, q Querier, userID, deviceID string) (*DeviceKeys, error) {
	d := DeviceKeys{UserID: userID, DeviceID: deviceID}
	var js string
	err := q.QueryRowContext(ctx, `SELECT key_json, ed25519 FROM e2ee_device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&js, &d.Ed25519)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	d.KeyJSON = json.RawMessage(js)
	return &d, nil
}

// SetDeviceKeys stores a device's keys. It reports whether anything
// changed, so identical re-uploads do not disturb other users' device lists.
func SetDeviceKeys(ctx context.Context, q Querier, userID, deviceID string, keyJSON []byte, ed25519 string, ts int64) (bool, error) {
	old, err := GetDeviceKeys(ctx, q, userID, deviceID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	if old != nil && string(old.KeyJSON) == string(keyJSON) {
		return false, nil
	}
	_, err = q.ExecContext(ctx, `INSERT INTO e2ee_device_keys (user_id, device_id, key_json, ed25519, updated_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, ed25519 = excluded.ed25519, updated_ts = excluded.updated_ts`,
		userID, deviceID, string(keyJSON), ed25519, ts)
	return err == nil, err
}

// UserDeviceKeys is a device's stored keys with its display name.
type UserDeviceKeys struct {
	DeviceKeys
	DisplayName string
}

// DeviceKeysForUsers returns the stored keys of every existing device of
// the given users, by user then device ID, in one query.
func DeviceKeysForUsers(ctx context.Context, q Querier, users []string) (map[string]map[string]*UserDeviceKeys, error) {
	out := map[string]map[string]*UserDeviceKeys{}
	for start := 0; start < len(users); start += 500 {
		chunk := users[start:min(start+500, len(users))]
		args := make([]any, len(chunk))
		for i, u := range chunk {
			args[i] = u
		}
		rows, err := q.QueryContext(ctx, `SELECT k.user_id, k.device_id, k.key_json, k.ed25519, d.display_name FROM e2ee_device_keys k
			JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id IN `+inPlaceholders(1, len(chunk)), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			d := &UserDeviceKeys{}
			var js string
			var dn sql.NullString
			if err := rows.Scan(&d.UserID, &d.DeviceID, &js, &d.Ed25519, &dn); err != nil {
				rows.Close()
				return nil, err
			}
			d.KeyJSON, d.DisplayName = json.RawMessage(js), dn.String
			if out[d.UserID] == nil {
				out[d.UserID] = map[string]*UserDeviceKeys{}
			}
			out[d.UserID][d.DeviceID] = d
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// OneTimeKey is an uploaded one-time or fallback key.
type OneTimeKey struct {
	KeyID     string // "<algorithm>:<id>"
	Algorithm string
	JSON      json.RawMessage // a string (curve25519) or a signed key object
}

// KeyConflictError is an upload of a different key under an ID the
// device already uses.
type KeyConflictError struct{ KeyID string }

func (e *KeyConflictError) Error() string {
	return fmt.Sprintf("one-time key %s already exists with different content", e.KeyID)
}

// AddOneTimeKeys stores one-time keys. A key ID already stored with the
// same key (signatures aside) is ignored; with a different key it fails
// with *KeyConflictError. Run it in a transaction so a conflict stores none.
func AddOneTimeKeys(ctx context.Context, q Querier, userID, deviceID string, keys []OneTimeKey) error {
	defer keysWritten(q, userID) // after the writes (at once outside a transaction)
	now := time.Now().UnixMilli()
	for start := 0; start < len(keys); start += 100 {
		chunk := keys[start:min(start+100, len(keys))]
		args := make([]any, 0, 6*len(chunk))
		vals := make([]string, 0, len(chunk))
		for i, k := range chunk {
			n := 6 * i
			vals = append(vals, fmt.Sprintf("($%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6))
			args = append(args, userID, deviceID, k.KeyID, k.Algorithm, string(k.JSON), now)
		}
		inserted, err := queryStrings(ctx, q, `INSERT INTO e2ee_one_time_keys (user_id, device_id, key_id, algorithm, key_json, uploaded_ts) VALUES `+
			strings.Join(vals, ", ")+` ON CONFLICT (user_id, device_id, key_id) DO NOTHING RETURNING key_id`, args...)
		if err != nil {
			return err
		}
		if len(inserted) == len(chunk) {
			continue
		}
		done := make(map[string]bool, len(inserted))
		for _, id := range inserted {
			done[id] = true
		}
		for _, k := range chunk {
			if done[k.KeyID] {
				continue
			}
			var old string
			err := q.QueryRowContext(ctx, `SELECT key_json FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3`, userID, deviceID, k.KeyID).Scan(&old)
			if errors.Is(err, sql.ErrNoRows) {
				continue // claimed meanwhile: the client re-sent a key it had uploaded
			}
			if err != nil {
				return err
			}
			if !SameKey([]byte(old), k.JSON) {
				return &KeyConflictError{KeyID: k.KeyID}
			}
		}
	}
	return nil
}

// SameKey reports whether two key objects (or bare key strings) carry the
// same key, ignoring signatures: a client that re-signs a key it had
// already uploaded is not changing it.
func SameKey(a, b []byte) bool {
	strip := func(raw []byte) string {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return "s:" + s
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return "x:" + string(raw)
		}
		delete(m, "signatures")
		delete(m, "unsigned")
		out, _ := json.Marshal(m)
		return "o:" + string(out)
	}
	return strip(a) == strip(b)
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm.
func OneTimeKeyCounts(ctx context.Context, q Querier, userID, deviceID string) (map[string]int, error) {
	rows, err := q.QueryContext(ctx, `SELECT algorithm, COUNT(*) FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// SyncKeyCounts is what every /sync reports about the device's own keys:
// one-time key counts by algorithm and the algorithms of unused fallback
// keys, in one indexed query.
func SyncKeyCounts(ctx context.Context, q Querier, userID, deviceID string) (counts map[string]int, unusedFallback []string, err error) {
	rows, err := q.QueryContext(ctx, `SELECT 0, algorithm, COUNT(*) FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL SELECT 1, algorithm, 0 FROM e2ee_fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = FALSE`, userID, deviceID)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	counts = map[string]int{}
	unusedFallback = []string{}
	for rows.Next() {
		var kind, n int
		var alg string
		if err := rows.Scan(&kind, &alg, &n); err != nil {
			return nil, nil, err
		}
		if kind == 0 {
			counts[alg] = n
		} else {
			unusedFallback = append(unusedFallback, alg)
		}
	}
	return counts, unusedFallback, rows.Err()
}

// SetFallbackKey stores the device's fallback key for an algorithm,
// replacing the previous one. Re-uploading the same key keeps its used flag.
func SetFallbackKey(ctx context.Context, q Querier, userID, deviceID string, k OneTimeKey) error {
	var oldID, oldJSON string
	err := q.QueryRowContext(ctx, `SELECT key_id, key_json FROM e2ee_fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
		userID, deviceID, k.Algorithm).Scan(&oldID, &oldJSON)
	if err == nil && oldID == k.KeyID && SameKey([]byte(oldJSON), k.JSON) {
		return nil
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	defer keysWritten(q, userID)
	_, err = q.ExecContext(ctx, `INSERT INTO e2ee_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, FALSE)
		ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE`,
		userID, deviceID, k.Algorithm, k.KeyID, string(k.JSON))
	return err
}

// ClaimedKey is a key handed out by ClaimKey.
type ClaimedKey struct {
	KeyID    string
	JSON     json.RawMessage
	Fallback bool
}

// ClaimKey hands out the device's oldest one-time key for the algorithm,
// deleting it, or else the device's fallback key (marking it used). It
// returns nil when the device has neither. Each one-time key goes to
// exactly one caller even when claims run concurrently: SQLite runs one
// writer at a time, and PostgreSQL claimers skip rows another is taking.
func ClaimKey(ctx context.Context, q Querier, userID, deviceID, algorithm string) (*ClaimedKey, error) {
	defer keysWritten(q, userID)
	pick := `SELECT key_id FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY uploaded_ts, key_id LIMIT 1`
	if q.Store().Dialect == Postgres {
		pick += ` FOR UPDATE SKIP LOCKED`
	}
	var keyID, js string
	err := q.QueryRowContext(ctx, `DELETE FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = (`+pick+`) RETURNING key_id, key_json`,
		userID, deviceID, algorithm).Scan(&keyID, &js)
	if err == nil {
		return &ClaimedKey{KeyID: keyID, JSON: json.RawMessage(js)}, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	err = q.QueryRowContext(ctx, `UPDATE e2ee_fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 RETURNING key_id, key_json`,
		userID, deviceID, algorithm).Scan(&keyID, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &ClaimedKey{KeyID: keyID, JSON: json.RawMessage(js), Fallback: true}, nil
}

// ClaimLocalKeys claims one key per requested device of local users (user
// -> device -> algorithm) in one transaction: a one-time key if any is
// left, else the fallback key. The client API's /keys/claim and federation's /user/keys/claim share it.
func ClaimLocalKeys(ctx context.Context, db *DB, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]map[string]json.RawMessage{}
	if len(want) == 0 {
		return out, nil
	}
	users := make([]string, 0, len(want))
	for u := range want {
		users = append(users, u)
	}
	sort.Strings(users) // a stable lock order across concurrent claims
	err := db.WithTx(ctx, func(tx *Tx) error {
		clear(out)
		for _, u := range users {
			devs := make([]string, 0, len(want[u]))
			for d := range want[u] {
				devs = append(devs, d)
			}
			sort.Strings(devs)
			for _, d := range devs {
				k, err := ClaimKey(ctx, tx, u, d, want[u][d])
				if err != nil {
					return err
				}
				if k == nil {
					continue
				}
				if out[u] == nil {
					out[u] = map[string]map[string]json.RawMessage{}
				}
				out[u][d] = map[string]json.RawMessage{k.KeyID: k.JSON}
			}
		}
		return nil
	})
	return out, err
}
