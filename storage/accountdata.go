package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strconv"
	"sync"

	"enclave/internal/lru"
)

// Account data: per-user JSON blobs, global (room_id ”) or per room. Each
// write takes a new stream position so /sync sends only what changed.
//
// Rows of type m.push_rules are change markers: push rules live in their
// own table (pushrules.go); /sync and GET render the computed rule set.
const accountDataV1 = `
CREATE TABLE account_data (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL DEFAULT '',
	type TEXT NOT NULL,
	content TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_user_pos ON account_data(user_id, stream_pos)`

// AccountData is one row of account_data.
type AccountData struct {
	RoomID    string // "" for global
	Type      string
	Content   json.RawMessage
	StreamPos int64
}

// PutAccountData stores (replaces) a blob inside tx and returns its stream
// position; the caller publishes it (tx.Publish) to wake the user's syncs.
func PutAccountData(ctx context.Context, tx *Tx, userID, roomID, typ string, content json.RawMessage) (int64, error) {
	pos := tx.NextPos("account_data")
	_, err := tx.ExecContext(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		userID, roomID, typ, string(content), pos)
	if err != nil {
		return 0, err
	}
	if roomID == "" && typ == IgnoredUserListType {
		c := tx.db.ignores
		c.invalidate(userID)
		tx.AfterCommit(func() { c.invalidate(userID) })
	}
	return pos, nil
}

// LockAccountData touches a blob's row inside tx (a no-op write) so that
// concurrent read-modify-write edits of the same blob queue behind each
// other instead of one losing the other's change.
func LockAccountData(ctx context.Context, tx *Tx, userID, roomID, typ string) error {
	_, err := tx.ExecContext(ctx, `UPDATE account_data SET stream_pos = stream_pos WHERE user_id = $1 AND room_id = $2 AND type = $3`, userID, roomID, typ)
	return err
}

// DeletedAccountData is the content of a deleted blob (MSC3391): the row
// stays, with a new stream position, so an incremental /sync tells the
// clients that had it; reads and initial syncs treat it as absent.
const DeletedAccountData = "{}"

// DeleteAccountData deletes a blob inside tx. It reports the stream
// position to publish, or 0 when there was nothing to delete.
func DeleteAccountData(ctx context.Context, tx *Tx, userID, roomID, typ string) (int64, error) {
	c, err := GetAccountData(ctx, tx, userID, roomID, typ)
	if errors.Is(err, ErrNotFound) || (err == nil && len(c) == 0) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return PutAccountData(ctx, tx, userID, roomID, typ, json.RawMessage(DeletedAccountData))
}

// GetAccountData loads one blob, or ErrNotFound (also for a deleted one).
func GetAccountData(ctx context.Context, q Querier, userID, roomID, typ string) (json.RawMessage, error) {
	var c string
	err := q.QueryRowContext(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`, userID, roomID, typ).Scan(&c)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && c == DeletedAccountData) {
		return nil, ErrNotFound
	}
	return json.RawMessage(c), err
}

// AccountDataRange lists the user's blobs written with from < pos <= to
// (from 0: all of them but the deleted ones), oldest first.
func AccountDataRange(ctx context.Context, q Querier, userID string, from, to int64) ([]AccountData, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var a AccountData
		var c string
		if err := rows.Scan(&a.RoomID, &a.Type, &c, &a.StreamPos); err != nil {
			return nil, err
		}
		if from == 0 && c == DeletedAccountData {
			continue
		}
		a.Content = json.RawMessage(c)
		out = append(out, a)
	}
	return out, rows.Err()
}

// IgnoredUserListType is the account data type of a user's ignore list.
const IgnoredUserListType = "m.ignored_user_list"

// ParseIgnoredUsers reads the user IDs of an m.ignored_user_list content.
func ParseIgnoredUsers(content json.RawMessage) map[string]bool {
	var c struct {
		Ignored map[string]json.RawMessage `json:"ignored_users"`
	}
	_ = json.Unmarshal(content, &c)
	out := make(map[string]bool, len(c.Ignored))
	for u := range c.Ignored {
		out[u] = true
	}
	return out
}

// IgnoredUsers returns the users userID ignores. Every /sync and
// /messages asks, so answers are cached per store; PutAccountData keeps
// the cache current (it is the only writer of the ignore list).
func IgnoredUsers(ctx context.Context, db *DB, userID string) (map[string]bool, error) {
	c := db.ignores
	if m, ok := c.cache.Get(userID); ok {
		return m, nil
	}
	gen := c.generation(userID)
	content, err := GetAccountData(ctx, db, userID, "", IgnoredUserListType)
	var m map[string]bool
	switch {
	case errors.Is(err, ErrNotFound):
		m = map[string]bool{}
	case err != nil:
		return nil, err
	default:
		m = ParseIgnoredUsers(content)
	}
	c.store(userID, gen, m)
	return m, nil
}

// IgnoredUsersMany loads the ignore lists of several users in one query
// (the push notifier asks for every member of a room at once).
func IgnoredUsersMany(ctx context.Context, q Querier, users []string) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	err := chunkedIn(users, func(args []any, ph string) error {
		rows, err := q.QueryContext(ctx, `SELECT user_id, content FROM account_data WHERE room_id = '' AND type = '`+IgnoredUserListType+`' AND user_id IN (`+ph+`)`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u, c string
			if err := rows.Scan(&u, &c); err != nil {
				return err
			}
			out[u] = ParseIgnoredUsers(json.RawMessage(c))
		}
		return rows.Err()
	})
	return out, err
}

// chunkedIn calls fn with string arguments in groups of at most 500, with
// the matching "$1,$2,…" placeholder list.
func chunkedIn(vals []string, fn func(args []any, ph string) error) error {
	for start := 0; start < len(vals); start += 500 {
		end := min(start+500, len(vals))
		args := make([]any, 0, end-start)
		ph := make([]byte, 0, (end-start)*4)
		for i, v := range vals[start:end] {
			args = append(args, v)
			if i > 0 {
				ph = append(ph, ',')
			}
			ph = append(ph, '$')
			ph = strconv.AppendInt(ph, int64(i+1), 10)
		}
		if err := fn(args, string(ph)); err != nil {
			return err
		}
	}
	return nil
}

// ignoreCache caches ignore lists; a generation per user stops a read that
// raced a write from caching the old list.
type ignoreCache struct {
	cache *lru.Cache[string, map[string]bool]
	mu    sync.Mutex
	gens  map[string]uint64
}

func newIgnoreCache() *ignoreCache {
	return &ignoreCache{cache: lru.New[string, map[string]bool](50000), gens: map[string]uint64{}}
}

func (c *ignoreCache) generation(userID string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gens[userID]
}

func (c *ignoreCache) invalidate(userID string) {
	c.mu.Lock()
	c.gens[userID]++
	c.mu.Unlock()
	c.cache.Remove(userID)
}

func (c *ignoreCache) store(userID string, gen uint64, m map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gens[userID] == gen {
		c.cache.Put(userID, m)
	}
}
