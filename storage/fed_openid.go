package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
)

// OpenID tokens (POST /user/{userId}/openid/request_token): short-lived
// tokens a user hands to a third party, which checks them with the
// federation's GET /openid/userinfo. Only a SHA-256 of each token is
// stored, so the table never holds a usable token.
const fedOpenIDV1 = `
CREATE TABLE openid_tokens (
	token_hash TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expires ON openid_tokens(expires_ts)`

// CreateOpenIDToken stores a token (by hash) for userID until expiresTS,
// dropping tokens that expired before now.
func CreateOpenIDToken(ctx context.Context, q Querier, tokenHash, userID string, expiresTS, now int64) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM openid_tokens WHERE expires_ts < $1`, now); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`, tokenHash, userID, expiresTS)
	return err
}

// OpenIDTokenUser returns the user of an unexpired token, or ErrNotFound.
func OpenIDTokenUser(ctx context.Context, q Querier, tokenHash string, now int64) (string, error) {
	var user string
	err := q.QueryRowContext(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`, tokenHash, now).Scan(&user)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return user, err
}

// HashOpenIDToken is the form a token is stored and looked up in: its
// SHA-256, hex encoded.
func HashOpenIDToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
