package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Federation tables.
//
//   - federation_server_keys: the key ring's cache of other servers' public
//     signing keys, one row per (server, key ID).
//   - federation_key_responses: the last verified /key/v2/server response of
//     each server as received, so this server can act as a notary and
//     co-sign it (a notary must return the origin's own signed JSON).
//   - federation_own_keys: every signing key this server has used. When the
//     key file is replaced (generate-keys --force) the old key stays here,
//     expired, and is published under old_verify_keys so past events still
//     verify.
//   - federation_inbound_txns: responses to /send transactions already
//     processed, keyed by (origin, txn ID), so a retried transaction is
//     answered without being processed twice.
//   - federation_queue_pdus / federation_queue_edus: the outbound queue, one
//     row per (destination, item). txn_id is set while a row is part of a
//     transaction in flight, so a retry (even after a restart) resends the
//     same transaction under the same ID.
const federationV1 = `
CREATE TABLE federation_server_keys (
	server_name TEXT NOT NULL,
	key_id TEXT NOT NULL,
	public_key TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	expired_ts BIGINT NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
CREATE TABLE federation_key_responses (
	server_name TEXT PRIMARY KEY,
	response TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	fetched_ts BIGINT NOT NULL
);
CREATE TABLE federation_own_keys (
	key_id TEXT PRIMARY KEY,
	public_key TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expired_ts BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE federation_inbound_txns (
	origin TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	response TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns(created_ts);
CREATE TABLE federation_queue_pdus (
	id {{serial}},
	destination TEXT NOT NULL,
	json TEXT NOT NULL,
	txn_id TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL
);
CREATE INDEX federation_queue_pdus_dest ON federation_queue_pdus(destination, id);
CREATE TABLE federation_queue_edus (
	id {{serial}},
	destination TEXT NOT NULL,
	edu_type TEXT NOT NULL,
	coalesce_key TEXT NOT NULL DEFAULT '',
	json TEXT NOT NULL,
	txn_id TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL
);
CREATE INDEX federation_queue_edus_dest ON federation_queue_edus(destination, id);
CREATE INDEX federation_queue_edus_coalesce ON federation_queue_edus(destination, edu_type, coalesce_key)`

// federation_catchup: rooms whose events a destination missed
// because the policy refused it at the time (nothing is queued for a
// refused server). When it is allowed again it is sent the room's
// latest local event and pulls the gap with /get_missing_events.
const federationV2 = `
CREATE TABLE federation_catchup (
	destination TEXT NOT NULL,
	room_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (destination, room_id)
)`

// ServerKey is one cached public signing key of a remote server.
// ExpiredTS is 0 for a current key; ValidUntilTS is 0 for an expired one.
type ServerKey struct {
	ServerName   string
	KeyID        string
	PublicKey    string // unpadded base64
	ValidUntilTS int64
	ExpiredTS    int64
}

// UpsertServerKeys stores or replaces cached keys.
func UpsertServerKeys(ctx context.Context, q Querier, keys []ServerKey) error {
	for _, k := range keys {
		if _, err := q.ExecContext(ctx, `INSERT INTO federation_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
				valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts`,
			k.ServerName, k.KeyID, k.PublicKey, k.ValidUntilTS, k.ExpiredTS); err != nil {
			return fmt.Errorf("storage: upsert server key: %w", err)
		}
	}
	return nil
}

// GetServerKey returns one cached key, or ErrNotFound.
func GetServerKey(ctx context.Context, q Querier, serverName, keyID string) (*ServerKey, error) {
	k := &ServerKey{ServerName: serverName, KeyID: keyID}
	err := q.QueryRowContext(ctx, `SELECT public_key, valid_until_ts, expired_ts FROM federation_server_keys
		WHERE server_name = $1 AND key_id = $2`, serverName, keyID).Scan(&k.PublicKey, &k.ValidUntilTS, &k.ExpiredTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return k, nil
}

// SaveKeyResponse records a server's verified key response as received.
func SaveKeyResponse(ctx context.Context, q Querier, serverName string, response []byte, validUntilTS, fetchedTS int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO federation_key_responses (server_name, response, valid_until_ts, fetched_ts)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (server_name) DO UPDATE SET response = excluded.response,
			valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts`,
		serverName, string(response), validUntilTS, fetchedTS)
	return err
}

// GetKeyResponse returns a server's last key response, or ErrNotFound.
func GetKeyResponse(ctx context.Context, q Querier, serverName string) (response []byte, validUntilTS int64, err error) {
	var s string
	err = q.QueryRowContext(ctx, `SELECT response, valid_until_ts FROM federation_key_responses WHERE server_name = $1`, serverName).Scan(&s, &validUntilTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	return []byte(s), validUntilTS, nil
}

// OwnKey is a signing key this server has used.
type OwnKey struct {
	KeyID     string
	PublicKey string // unpadded base64
	CreatedTS int64
	ExpiredTS int64 // 0 while the key is current
}

// RecordOwnKey makes keyID the current signing key: it is inserted if new
// (or un-expired if it was retired and is back), and every other key still
// marked current is expired at now.
func RecordOwnKey(ctx context.Context, db *DB, keyID, publicKey string, now int64) error {
	return db.WithTx(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO federation_own_keys (key_id, public_key, created_ts, expired_ts)
			VALUES ($1, $2, $3, 0)
			ON CONFLICT (key_id) DO UPDATE SET public_key = excluded.public_key, expired_ts = 0`, keyID, publicKey, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE federation_own_keys SET expired_ts = $1 WHERE key_id <> $2 AND expired_ts = 0`, now, keyID)
		return err
	})
}

// OwnKeys lists every signing key this server has used.
func OwnKeys(ctx context.Context, q Querier) ([]OwnKey, error) {
	rows, err := q.QueryContext(ctx, `SELECT key_id, public_key, created_ts, expired_ts FROM federation_own_keys ORDER BY created_ts, key_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OwnKey
	for rows.Next() {
		var k OwnKey
		if err := rows.Scan(&k.KeyID, &k.PublicKey, &k.CreatedTS, &k.ExpiredTS); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// GetInboundTxn returns the stored response to an already processed
// transaction, or ErrNotFound.
func GetInboundTxn(ctx context.Context, q Querier, origin, txnID string) ([]byte, error) {
	var s string
	err := q.QueryRowContext(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`, origin, txnID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return []byte(s), nil
}

// PutInboundTxn records the response to a processed transaction. A
// concurrent duplicate is ignored: the first response stands.
func PutInboundTxn(ctx context.Context, q Querier, origin, txnID string, response []byte, now int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, response, created_ts)
		VALUES ($1, $2, $3, $4) ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(response), now)
	return err
}

// PruneInboundTxns forgets transactions recorded before the cutoff; senders
// retry for far less time than that.
func PruneInboundTxns(ctx context.Context, q Querier, before int64) (int64, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM federation_inbound_txns WHERE created_ts < $1`, before)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// EnqueuePDU queues a PDU's JSON for each destination.
func EnqueuePDU(ctx context.Context, q Querier, destinations []string, eventJSON []byte, now int64) error {
	for _, d := range destinations {
		if _, err := q.ExecContext(ctx, `INSERT INTO federation_queue_pdus (destination, json, created_ts) VALUES ($1, $2, $3)`,
			d, string(eventJSON), now); err != nil {
			return fmt.Errorf("storage: enqueue pdu: %w", err)
		}
	}
	return nil
}

// EnqueueEDU queues an EDU's JSON for each destination. With a non-empty
// coalesceKey, queued EDUs of the same type and key that are not yet part
// of a transaction are replaced: only the latest typing or presence state
// is worth sending over a slow link.
func EnqueueEDU(ctx context.Context, q Querier, destinations []string, eduType, coalesceKey string, eduJSON []byte, now int64) error {
	for _, d := range destinations {
		if coalesceKey != "" {
			if _, err := q.ExecContext(ctx, `DELETE FROM federation_queue_edus
				WHERE destination = $1 AND edu_type = $2 AND coalesce_key = $3 AND txn_id = ''`, d, eduType, coalesceKey); err != nil {
				return fmt.Errorf("storage: coalesce edu: %w", err)
			}
		}
		if _, err := q.ExecContext(ctx, `INSERT INTO federation_queue_edus (destination, edu_type, coalesce_key, json, created_ts)
			VALUES ($1, $2, $3, $4, $5)`, d, eduType, coalesceKey, string(eduJSON), now); err != nil {
			return fmt.Errorf("storage: enqueue edu: %w", err)
		}
	}
	return nil
}

// QueuedDestinations lists destinations with queued items.
func QueuedDestinations(ctx context.Context, q Querier) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT destination FROM federation_queue_pdus
		UNION SELECT destination FROM federation_queue_edus`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// QueueDepth counts a destination's queued PDUs and EDUs.
func QueueDepth(ctx context.Context, q Querier, destination string) (pdus, edus int, err error) {
	if err = q.QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_queue_pdus WHERE destination = $1`, destination).Scan(&pdus); err != nil {
		return
	}
	err = q.QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_queue_edus WHERE destination = $1`, destination).Scan(&edus)
	return
}

// QueuedItem is one queued PDU or EDU.
type QueuedItem struct {
	ID   int64
	JSON []byte
}

// QueueBatch is one outbound transaction's contents.
type QueueBatch struct {
	TxnID string
	PDUs  []QueuedItem // in queue order
	EDUs  []QueuedItem
}

// ClaimBatch returns the destination's next transaction. A transaction
// already in flight (claimed but not yet acknowledged, e.g. before a
// restart) is returned again unchanged so it is retried under the same ID;
// otherwise up to maxPDUs and maxEDUs of the oldest queued rows are
// claimed under newTxnID. An empty batch means the queue is empty.
func ClaimBatch(ctx context.Context, db *DB, destination, newTxnID string, maxPDUs, maxEDUs int) (*QueueBatch, error) {
	var b *QueueBatch
	err := db.WithTx(ctx, func(tx *Tx) error {
		b = &QueueBatch{}
		var inflight string
		err := tx.QueryRowContext(ctx, `SELECT txn_id FROM (
			SELECT txn_id FROM federation_queue_pdus WHERE destination = $1 AND txn_id <> ''
			UNION SELECT txn_id FROM federation_queue_edus WHERE destination = $1 AND txn_id <> '') t
			ORDER BY txn_id LIMIT 1`, destination).Scan(&inflight)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		}
		if inflight != "" {
			b.TxnID = inflight
			if b.PDUs, err = queuedRows(ctx, tx, `SELECT id, json FROM federation_queue_pdus WHERE destination = $1 AND txn_id = $2 ORDER BY id`, destination, inflight); err != nil {
				return err
			}
			b.EDUs, err = queuedRows(ctx, tx, `SELECT id, json FROM federation_queue_edus WHERE destination = $1 AND txn_id = $2 ORDER BY id`, destination, inflight)
			return err
		}
		b.TxnID = newTxnID
		if b.PDUs, err = queuedRows(ctx, tx, `SELECT id, json FROM federation_queue_pdus WHERE destination = $1 ORDER BY id LIMIT $2`, destination, maxPDUs); err != nil {
			return err
		}
		if b.EDUs, err = queuedRows(ctx, tx, `SELECT id, json FROM federation_queue_edus WHERE destination = $1 ORDER BY id LIMIT $2`, destination, maxEDUs); err != nil {
			return err
		}
		if err := claimRows(ctx, tx, "federation_queue_pdus", newTxnID, b.PDUs); err != nil {
			return err
		}
		return claimRows(ctx, tx, "federation_queue_edus", newTxnID, b.EDUs)
	})
	if err != nil {
		return nil, fmt.Errorf("storage: claim batch: %w", err)
	}
	return b, nil
}

func queuedRows(ctx context.Context, q Querier, query string, args ...any) ([]QueuedItem, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []QueuedItem
	for rows.Next() {
		var it QueuedItem
		var s string
		if err := rows.Scan(&it.ID, &s); err != nil {
			return nil, err
		}
		it.JSON = []byte(s)
		out = append(out, it)
	}
	return out, rows.Err()
}

func claimRows(ctx context.Context, q Querier, table, txnID string, items []QueuedItem) error {
	if len(items) == 0 {
		return nil
	}
	args := []any{txnID}
	ph := make([]string, len(items))
	for i, it := range items {
		args = append(args, it.ID)
		ph[i] = fmt.Sprintf("$%d", i+2)
	}
	_, err := q.ExecContext(ctx, `UPDATE `+table+` SET txn_id = $1 WHERE id IN (`+strings.Join(ph, ", ")+`)`, args...)
	return err
}

// DeleteBatch removes an acknowledged transaction's rows.
func DeleteBatch(ctx context.Context, db *DB, destination, txnID string) error {
	return db.WithTx(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM federation_queue_pdus WHERE destination = $1 AND txn_id = $2`, destination, txnID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM federation_queue_edus WHERE destination = $1 AND txn_id = $2`, destination, txnID)
		return err
	})
}

// MarkCatchUp records that destinations missed an event of roomID (they
// were refused by the policy when it was sent).
func MarkCatchUp(ctx context.Context, q Querier, destinations []string, roomID string, now int64) error {
	for _, d := range destinations {
		if _, err := q.ExecContext(ctx, `INSERT INTO federation_catchup (destination, room_id, created_ts)
			VALUES ($1, $2, $3) ON CONFLICT (destination, room_id) DO NOTHING`, d, roomID, now); err != nil {
			return fmt.Errorf("storage: mark catch-up: %w", err)
		}
	}
	return nil
}

// CatchUp is one (destination, room) a destination has to catch up on.
type CatchUp struct {
	Destination string
	RoomID      string
}

// CatchUps lists every pending catch-up.
func CatchUps(ctx context.Context, q Querier) ([]CatchUp, error) {
	rows, err := q.QueryContext(ctx, `SELECT destination, room_id FROM federation_catchup ORDER BY destination, created_ts`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []CatchUp
	for rows.Next() {
		var c CatchUp
		if err := rows.Scan(&c.Destination, &c.RoomID); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ClearCatchUp forgets a pending catch-up.
func ClearCatchUp(ctx context.Context, q Querier, destination, roomID string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM federation_catchup WHERE destination = $1 AND room_id = $2`, destination, roomID)
	return err
}

// LatestLocalEvent returns the JSON of the newest timeline event in roomID
// sent by a user of serverName (not soft-failed, rejected or redacted: a
// redacted copy no longer matches its content hash), or ErrNotFound.
func LatestLocalEvent(ctx context.Context, q Querier, roomID, serverName string) ([]byte, error) {
	suffix := ":" + serverName // server names are ASCII: bytes are characters
	var s string
	err := q.QueryRowContext(ctx, `SELECT json FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL AND stream_pos > 0
		AND outlier = FALSE AND soft_failed = FALSE AND rejected = FALSE AND redacted = FALSE
		AND length(sender) > $3 AND substr(sender, length(sender) - $3 + 1) = $2
		ORDER BY stream_pos DESC LIMIT 1`, roomID, suffix, len(suffix)).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return []byte(s), nil
}

// JoinedRemoteServers lists the servers other than own with a user joined
// to a room here (the destinations this server sends to), sorted.
func JoinedRemoteServers(ctx context.Context, q Querier, own string) ([]string, error) {
	users, err := queryStrings(ctx, q, `SELECT DISTINCT state_key FROM current_state WHERE type = 'm.room.member' AND membership = 'join'`)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, u := range users {
		_, server, ok := strings.Cut(u, ":")
		if !ok || server == own || seen[server] {
			continue
		}
		seen[server] = true
		out = append(out, server)
	}
	slices.Sort(out)
	return out, nil
}

// RoomsWithServer lists the rooms where a user of server is joined, with
// each room's latest stream position.
func RoomsWithServer(ctx context.Context, q Querier, server string) ([]RoomPos, error) {
	rows, err := q.QueryContext(ctx, `SELECT r.room_id, r.last_pos FROM rooms r WHERE EXISTS (SELECT 1 FROM current_state c
		WHERE c.room_id = r.room_id AND c.type = 'm.room.member' AND c.membership = 'join' AND c.state_key LIKE $1) ORDER BY r.room_id`, "%:"+server)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RoomPos
	for rows.Next() {
		var r RoomPos
		if err := rows.Scan(&r.RoomID, &r.Pos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// RoomPos is a room and a stream position in it.
type RoomPos struct {
	RoomID string
	Pos    int64
}
