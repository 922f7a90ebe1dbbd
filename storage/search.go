package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Search tables.
//
//   - event_search: the searchable text of room events (m.room.message
//     body, m.room.name, m.room.topic), written by the room event hook in
//     the event's transaction and removed when the event is redacted.
//     Encrypted events are never indexed: the server never sees their text.
//   - the full-text index over it is dialect specific and so is created by
//     PrepareSearch, not by a migration: a PostgreSQL GIN index on
//     to_tsvector('simple', body), or an SQLite FTS5 table (event_search_fts)
//     whose rows share event_search's IDs.
const searchV1 = `
CREATE TABLE event_search (
	id {{serial}},
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	key TEXT NOT NULL,
	body TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	origin_ts BIGINT NOT NULL
);
CREATE INDEX event_search_room_pos ON event_search(room_id, stream_pos)`

// hasFTS reports whether an SQLite store has its FTS table. Rows written
// before it exists are indexed when PrepareSearch creates it (rebuild).
// db.fts remembers a yes, so the check costs a query only until the table
// exists.
func hasFTS(ctx context.Context, q Querier, db *DB) (bool, error) {
	if db.fts.Load() {
		return true, nil
	}
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'event_search_fts'`).Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		db.fts.Store(true)
	}
	return n > 0, nil
}

// PrepareSearch creates the dialect's full-text index if it is missing
// (rebuilding SQLite's FTS table from event_search when it is new). Call it
// once at start, before events are indexed.
func PrepareSearch(ctx context.Context, db *DB) error {
	switch db.Dialect {
	case Postgres:
		if _, err := db.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS event_search_fts ON event_search USING GIN (to_tsvector('simple', body))`); err != nil {
			return fmt.Errorf("storage: creating search index: %w", err)
		}
	default:
		err := db.WithTx(ctx, func(tx *Tx) error {
			if ok, err := hasFTS(ctx, tx, db); err != nil || ok {
				return err
			}
			if _, err := tx.ExecContext(ctx, `CREATE VIRTUAL TABLE event_search_fts USING fts5(body, content='event_search', content_rowid='id', tokenize='unicode61 remove_diacritics 2')`); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO event_search_fts(event_search_fts) VALUES ('rebuild')`)
			return err
		})
		if err != nil {
			return fmt.Errorf("storage: creating search index: %w", err)
		}
	}
	return nil
}

// SearchEntry is one indexed text of an event.
type SearchEntry struct {
	EventID   string
	RoomID    string
	Sender    string
	Key       string // content.body, content.name or content.topic
	Body      string
	StreamPos int64
	OriginTS  int64
}

// InsertSearchEntry indexes an event's text (a second insert for the same
// event is ignored).
func InsertSearchEntry(ctx context.Context, q Querier, e SearchEntry) error {
	db := q.Store()
	var id int64
	err := q.QueryRowContext(ctx, `INSERT INTO event_search (event_id, room_id, sender, key, body, stream_pos, origin_ts) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (event_id) DO NOTHING RETURNING id`, e.EventID, e.RoomID, e.Sender, e.Key, e.Body, e.StreamPos, e.OriginTS).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // already indexed
	} else if err != nil {
		return err
	}
	if db.Dialect == SQLite {
		if ok, err := hasFTS(ctx, q, db); err != nil || !ok {
			return err
		}
		_, err = q.ExecContext(ctx, `INSERT INTO event_search_fts (rowid, body) VALUES ($1, $2)`, id, e.Body)
	}
	return err
}

// DeleteSearchEntry forgets an event's text (redactions).
func DeleteSearchEntry(ctx context.Context, q Querier, eventID string) error {
	if err := forgetFTS(ctx, q, `SELECT id, body FROM event_search WHERE event_id = $1`, eventID); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `DELETE FROM event_search WHERE event_id = $1`, eventID)
	return err
}

// forgetFTS removes the selected (id, body) rows of event_search from
// SQLite's FTS index: an external-content FTS5 table is told the old
// text to remove. PostgreSQL's index follows the table by itself.
func forgetFTS(ctx context.Context, q Querier, query string, args ...any) error {
	db := q.Store()
	if db.Dialect != SQLite {
		return nil
	}
	if ok, err := hasFTS(ctx, q, db); err != nil || !ok {
		return err
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	type entry struct {
		id   int64
		body string
	}
	var entries []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.id, &e.body); err != nil {
			rows.Close()
			return err
		}
		entries = append(entries, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, e := range entries {
		if _, err := q.ExecContext(ctx, `INSERT INTO event_search_fts (event_search_fts, rowid, body) VALUES ('delete', $1, $2)`, e.id, e.body); err != nil {
			return err
		}
	}
	return nil
}

// SearchTerms splits a search string into the lowercased words the index
// matches on (letters and digits only), so no query syntax of either full
// text engine can be injected. At most 16 words are kept.
func SearchTerms(s string) []string {
	words := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	seen := map[string]bool{}
	var out []string
	for _, w := range words {
		if !seen[w] && len(out) < 16 {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

// SearchQuery selects matching events. Every term must match (as a word
// prefix).
type SearchQuery struct {
	Terms   []string
	RoomIDs []string // the rooms searched; none means no results
	Keys    []string // content.body / content.name / content.topic; none = all
	// Recent orders by stream position (newest first) instead of rank.
	Recent bool
	// Before, when not 0, keeps events with stream_pos < Before (no event
	// has position 0; backfilled history has negative ones).
	Before int64
	Offset int
	Limit  int
}

// SearchHit is a matching event.
type SearchHit struct {
	EventID   string
	RoomID    string
	StreamPos int64
	Rank      float64 // higher is closer
}

// SearchEvents runs a full-text query.
func SearchEvents(ctx context.Context, q Querier, sq SearchQuery) ([]SearchHit, error) {
	db := q.Store()
	if len(sq.Terms) == 0 || len(sq.RoomIDs) == 0 || sq.Limit <= 0 {
		return nil, nil
	}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var sel, from, match string
	if db.Dialect == Postgres {
		parts := make([]string, len(sq.Terms))
		for i, t := range sq.Terms {
			parts[i] = t + ":*"
		}
		p := arg(strings.Join(parts, " & "))
		sel = `s.event_id, s.room_id, s.stream_pos, ts_rank(to_tsvector('simple', s.body), to_tsquery('simple', ` + p + `))`
		from = ` FROM event_search s`
		match = `to_tsvector('simple', s.body) @@ to_tsquery('simple', ` + p + `)`
	} else {
		parts := make([]string, len(sq.Terms))
		for i, t := range sq.Terms {
			parts[i] = `"` + t + `"*`
		}
		p := arg(strings.Join(parts, " "))
		sel = `s.event_id, s.room_id, s.stream_pos, -bm25(event_search_fts)`
		from = ` FROM event_search_fts JOIN event_search s ON s.id = event_search_fts.rowid`
		match = `event_search_fts MATCH ` + p
	}
	where := []string{match}
	ph := make([]string, len(sq.RoomIDs))
	for i, r := range sq.RoomIDs {
		ph[i] = arg(r)
	}
	where = append(where, "s.room_id IN ("+strings.Join(ph, ",")+")")
	if len(sq.Keys) > 0 {
		kp := make([]string, len(sq.Keys))
		for i, k := range sq.Keys {
			kp[i] = arg(k)
		}
		where = append(where, "s.key IN ("+strings.Join(kp, ",")+")")
	}
	if sq.Before != 0 {
		where = append(where, "s.stream_pos < "+arg(sq.Before))
	}
	order := ` ORDER BY 4 DESC, s.stream_pos DESC`
	if sq.Recent {
		order = ` ORDER BY s.stream_pos DESC`
	}
	query := `SELECT ` + sel + from + ` WHERE ` + strings.Join(where, " AND ") + order + ` LIMIT ` + arg(sq.Limit) + ` OFFSET ` + arg(sq.Offset)
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SearchHit
	for rows.Next() {
		var h SearchHit
		if err := rows.Scan(&h.EventID, &h.RoomID, &h.StreamPos, &h.Rank); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// PurgeRoomIndexes removes everything the room event hook derived from a
// room's events — search text, relations and directory stats — for an
// admin purge of the room (see PurgeRoom): plaintext bodies must not
// outlive the events they came from.
func PurgeRoomIndexes(ctx context.Context, q Querier, roomID string) error {
	if err := forgetFTS(ctx, q, `SELECT id, body FROM event_search WHERE room_id = $1`, roomID); err != nil {
		return err
	}
	for _, table := range []string{"event_search", "event_relations", "room_directory_stats"} {
		if _, err := q.ExecContext(ctx, `DELETE FROM `+table+` WHERE room_id = $1`, roomID); err != nil {
			return err
		}
	}
	return nil
}
