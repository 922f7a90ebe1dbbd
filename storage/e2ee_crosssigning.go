package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
)

// Cross-signing keys and the signatures uploaded for keys and devices.

// Cross-signing key types, as in the "usage" field.
const (
	KeyTypeMaster      = "master"
	KeyTypeSelfSigning = "self_signing"
	KeyTypeUserSigning = "user_signing"
)

// CrossSigningKey is a row of e2ee_cross_signing_keys.
type CrossSigningKey struct {
	UserID    string
	Type      string
	PublicKey string // unpadded base64 ed25519
	JSON      json.RawMessage
}

// CrossSigningKeysFor returns the users' cross-signing keys by user, then
// type, in one query.
func CrossSigningKeysFor(ctx context.Context, q Querier, users []string) (map[string]map[string]*CrossSigningKey, error) {
	out := map[string]map[string]*CrossSigningKey{}
	for start := 0; start < len(users); start += 500 {
		chunk := users[start:min(start+500, len(users))]
		args := make([]any, len(chunk))
		for i, u := range chunk {
			args[i] = u
		}
		rows, err := q.QueryContext(ctx, `SELECT user_id, key_type, public_key, key_json FROM e2ee_cross_signing_keys WHERE user_id IN `+inPlaceholders(1, len(chunk)), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			k := &CrossSigningKey{}
			var js string
			if err := rows.Scan(&k.UserID, &k.Type, &k.PublicKey, &js); err != nil {
				rows.Close()
				return nil, err
			}
			k.JSON = json.RawMessage(js)
			if out[k.UserID] == nil {
				out[k.UserID] = map[string]*CrossSigningKey{}
			}
			out[k.UserID][k.Type] = k
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// GetCrossSigningKey loads one of a user's cross-signing keys, or ErrNotFound.
func GetCrossSigningKey(ctx context.Context, q Querier, userID, keyType string) (*CrossSigningKey, error) {
	k := &CrossSigningKey{UserID: userID, Type: keyType}
	var js string
	err := q.QueryRowContext(ctx, `SELECT public_key, key_json FROM e2ee_cross_signing_keys WHERE user_id = $1 AND key_type = $2`, userID, keyType).Scan(&k.PublicKey, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	k.JSON = json.RawMessage(js)
	return k, nil
}

// SetCrossSigningKey stores (replaces) one of a user's cross-signing keys.
func SetCrossSigningKey(ctx context.Context, q Querier, k *CrossSigningKey, ts int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO e2ee_cross_signing_keys (user_id, key_type, public_key, key_json, updated_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json, updated_ts = excluded.updated_ts`,
		k.UserID, k.Type, k.PublicKey, string(k.JSON), ts)
	return err
}

// KeySignature is a row of e2ee_signatures: SignerUser's key SignerKey
// ("ed25519:<id>") signed TargetUser's device or cross-signing key TargetKey.
type KeySignature struct {
	TargetUser, TargetKey, SignerUser, SignerKey, Signature string
}

// AddSignature stores (or replaces) a signature.
func AddSignature(ctx context.Context, q Querier, s KeySignature) error {
	_, err := q.ExecContext(ctx, `INSERT INTO e2ee_signatures (target_user, target_key, signer_user, signer_key, signature) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (target_user, target_key, signer_user, signer_key) DO UPDATE SET signature = excluded.signature`,
		s.TargetUser, s.TargetKey, s.SignerUser, s.SignerKey, s.Signature)
	return err
}

// SignaturesFor returns every stored signature on the users' keys and
// devices, by target user then target key, in one query.
func SignaturesFor(ctx context.Context, q Querier, users []string) (map[string]map[string][]KeySignature, error) {
	out := map[string]map[string][]KeySignature{}
	for start := 0; start < len(users); start += 500 {
		chunk := users[start:min(start+500, len(users))]
		args := make([]any, len(chunk))
		for i, u := range chunk {
			args[i] = u
		}
		rows, err := q.QueryContext(ctx, `SELECT target_user, target_key, signer_user, signer_key, signature FROM e2ee_signatures WHERE target_user IN `+inPlaceholders(1, len(chunk)), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var s KeySignature
			if err := rows.Scan(&s.TargetUser, &s.TargetKey, &s.SignerUser, &s.SignerKey, &s.Signature); err != nil {
				rows.Close()
				return nil, err
			}
			if out[s.TargetUser] == nil {
				out[s.TargetUser] = map[string][]KeySignature{}
			}
			out[s.TargetUser][s.TargetKey] = append(out[s.TargetUser][s.TargetKey], s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// KeysQueryResult is the local part of a /keys/query answer (and of the
// federation's user/keys/query).
type KeysQueryResult struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys,omitempty"`
}

// QueryLocalKeys answers a key query for local users: query maps user IDs
// to device IDs (none = all devices). requester is the asking user (""
// for another server): besides the owner's own signatures it sees only
// the signatures it made, and only its own user-signing key. Three
// queries, whatever the number of users.
func QueryLocalKeys(ctx context.Context, q Querier, requester string, query map[string][]string) (*KeysQueryResult, error) {
	res := &KeysQueryResult{DeviceKeys: map[string]map[string]json.RawMessage{}}
	users := make([]string, 0, len(query))
	for u := range query {
		users = append(users, u)
	}
	if len(users) == 0 {
		return res, nil
	}
	devs, err := DeviceKeysForUsers(ctx, q, users)
	if err != nil {
		return nil, err
	}
	xs, err := CrossSigningKeysFor(ctx, q, users)
	if err != nil {
		return nil, err
	}
	sigs, err := SignaturesFor(ctx, q, users)
	if err != nil {
		return nil, err
	}
	visible := func(owner string, s KeySignature) bool {
		return s.SignerUser == owner || (requester != "" && s.SignerUser == requester)
	}
	for _, u := range users {
		want := query[u]
		out := map[string]json.RawMessage{}
		for devID, d := range devs[u] {
			if len(want) > 0 && !containsString(want, devID) {
				continue
			}
			js, err := decorateKey(d.KeyJSON, sigs[u][devID], func(s KeySignature) bool { return s.SignerUser == u }, d.DisplayName, true)
			if err != nil {
				return nil, err
			}
			out[devID] = js
		}
		res.DeviceKeys[u] = out
		for typ, k := range xs[u] {
			switch typ {
			case KeyTypeMaster:
				js, err := decorateKey(k.JSON, sigs[u][k.PublicKey], func(s KeySignature) bool { return visible(u, s) }, "", false)
				if err != nil {
					return nil, err
				}
				if res.MasterKeys == nil {
					res.MasterKeys = map[string]json.RawMessage{}
				}
				res.MasterKeys[u] = js
			case KeyTypeSelfSigning:
				if res.SelfSigningKeys == nil {
					res.SelfSigningKeys = map[string]json.RawMessage{}
				}
				res.SelfSigningKeys[u] = k.JSON
			case KeyTypeUserSigning:
				if u != requester {
					continue
				}
				if res.UserSigningKeys == nil {
					res.UserSigningKeys = map[string]json.RawMessage{}
				}
				res.UserSigningKeys[u] = k.JSON
			}
		}
	}
	return res, nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// decorateKey adds the visible stored signatures to a key object and, for
// devices, unsigned.device_display_name.
func decorateKey(raw json.RawMessage, sigs []KeySignature, visible func(KeySignature) bool, displayName string, device bool) (json.RawMessage, error) {
	var shown []KeySignature
	for _, s := range sigs {
		if visible(s) {
			shown = append(shown, s)
		}
	}
	if len(shown) == 0 && !device {
		return raw, nil
	}
	if len(shown) == 0 && len(raw) > 2 && raw[len(raw)-1] == '}' {
		// Fast path (most devices): stored objects never hold "unsigned",
		// so it can be appended without parsing.
		unsigned := []byte(`{}`)
		if displayName != "" {
			b, _ := json.Marshal(map[string]string{"device_display_name": displayName})
			unsigned = b
		}
		out := make([]byte, 0, len(raw)+len(unsigned)+14)
		out = append(out, raw[:len(raw)-1]...)
		out = append(out, `,"unsigned":`...)
		out = append(out, unsigned...)
		return append(out, '}'), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	if len(shown) > 0 {
		all := map[string]map[string]string{}
		if s, ok := obj["signatures"]; ok {
			_ = json.Unmarshal(s, &all)
		}
		for _, s := range shown {
			if all[s.SignerUser] == nil {
				all[s.SignerUser] = map[string]string{}
			}
			all[s.SignerUser][s.SignerKey] = s.Signature
		}
		b, err := json.Marshal(all)
		if err != nil {
			return nil, err
		}
		obj["signatures"] = b
	}
	if device {
		unsigned := map[string]any{}
		if displayName != "" {
			unsigned["device_display_name"] = displayName
		}
		b, _ := json.Marshal(unsigned)
		obj["unsigned"] = b
	}
	return json.Marshal(obj)
}
