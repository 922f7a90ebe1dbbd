package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Admin API tables:
//
//   - room_blocks: rooms the administrator blocked (nobody may join or use
//     them) or purged (their events are gone; the ID must not be reused).
//   - legal_holds: rooms or users whose history must not be purged, by
//     the admin API or by retention, until the hold is lifted.
//   - server_notice_rooms: the room each user receives server notices in.
const adminV1 = `
CREATE TABLE room_blocks (
	room_id TEXT PRIMARY KEY,
	blocked_by TEXT NOT NULL DEFAULT '',
	blocked_ts BIGINT NOT NULL,
	purged BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE legal_holds (
	scope TEXT NOT NULL,
	target TEXT NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	created_by TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (scope, target)
);
CREATE TABLE server_notice_rooms (
	user_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL
)`

// ---------------------------------------------------------------------------
// Accounts, as the admin API lists them.

// AccountFilter selects accounts for GET /_synapse/admin/v2/users. Nil
// pointers do not filter.
type AccountFilter struct {
	From        int
	Limit       int
	UserID      string // user ID contains (case-insensitive)
	Name        string // localpart or display name contains (case-insensitive); wins over UserID
	Guests      *bool  // false excludes guests
	Admins      *bool  // true: only admins; false: no admins
	Deactivated bool   // include deactivated accounts
	OrderBy     string // name, is_guest, admin, deactivated, displayname, avatar_url, creation_ts, last_seen_ts
	Backwards   bool
}

// AdminAccount is one account with what the admin API shows of it.
type AdminAccount struct {
	Account
	LastSeenTS int64 // 0 = never
}

var accountOrder = map[string]string{
	"name": "a.user_id", "is_guest": "a.is_guest", "admin": "a.is_admin", "deactivated": "a.deactivated",
	"displayname": "a.displayname", "avatar_url": "a.avatar_url", "creation_ts": "a.created_ts", "last_seen_ts": "last_seen",
}

// ListAdminAccounts returns one page of accounts matching f and how many
// match in total.
func ListAdminAccounts(ctx context.Context, q Querier, f AccountFilter) ([]*AdminAccount, int, error) {
	var conds []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	contains := func(s string) string { return "%" + escapeLike(strings.ToLower(s)) + "%" }
	switch {
	case f.Name != "":
		p := arg(contains(f.Name))
		conds = append(conds, `(LOWER(a.localpart) LIKE `+p+` ESCAPE '\' OR LOWER(COALESCE(a.displayname, '')) LIKE `+p+` ESCAPE '\')`)
	case f.UserID != "":
		conds = append(conds, `LOWER(a.user_id) LIKE `+arg(contains(f.UserID))+` ESCAPE '\'`)
	}
	if f.Guests != nil && !*f.Guests {
		conds = append(conds, "a.is_guest = FALSE")
	}
	if f.Admins != nil {
		conds = append(conds, "a.is_admin = "+arg(*f.Admins))
	}
	if !f.Deactivated {
		conds = append(conds, "a.deactivated = FALSE")
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	var total int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts a`+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	col, ok := accountOrder[f.OrderBy]
	if !ok {
		col = "a.user_id"
	}
	dir := "ASC"
	if f.Backwards {
		dir = "DESC"
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	query := `SELECT a.user_id, a.localpart, a.password_hash, a.created_ts, a.is_admin, a.is_guest, a.deactivated, a.displayname, a.avatar_url, a.erased, a.shadow_banned,
		COALESCE((SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = a.user_id), 0) AS last_seen
		FROM accounts a` + where + ` ORDER BY ` + col + ` ` + dir + `, a.user_id ASC LIMIT ` + arg(limit) + ` OFFSET ` + arg(max(f.From, 0))
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []*AdminAccount
	for rows.Next() {
		var a AdminAccount
		var dn, av sql.NullString
		if err := rows.Scan(&a.UserID, &a.Localpart, &a.PasswordHash, &a.CreatedTS, &a.IsAdmin, &a.IsGuest, &a.Deactivated, &dn, &av, &a.Erased, &a.ShadowBanned, &a.LastSeenTS); err != nil {
			return nil, 0, err
		}
		a.DisplayName, a.AvatarURL = dn.String, av.String
		out = append(out, &a)
	}
	return out, total, rows.Err()
}

// ReactivateAccount clears the deactivated flag (admin API).
func ReactivateAccount(ctx context.Context, q Querier, userID string) error {
	// As Synapse does, a reactivated user is no longer erased.
	_, err := q.ExecContext(ctx, `UPDATE accounts SET deactivated = FALSE, erased = FALSE WHERE user_id = $1`, userID)
	if err == nil {
		onCommit(q, func(db *DB) { db.erased.remove(userID) })
	}
	return err
}

// ---------------------------------------------------------------------------
// Rooms, as the admin API lists them.

// AdminRoom is a room with the counts and state the admin API reports.
type AdminRoom struct {
	Room
	JoinedMembers      int
	JoinedLocalMembers int
	StateEvents        int
	// State holds the content of the room's summary state events
	// (m.room.name, topic, avatar, canonical_alias, join_rules,
	// guest_access, history_visibility, encryption, create), by type.
	State map[string]map[string]any
}

var summaryTypes = []string{"m.room.name", "m.room.topic", "m.room.avatar", "m.room.canonical_alias", "m.room.join_rules",
	"m.room.guest_access", "m.room.history_visibility", "m.room.encryption", "m.room.create"}

// ListAdminRooms loads every room (or only roomID when set) with its
// summary; serverName tells local members from remote ones.
func ListAdminRooms(ctx context.Context, q Querier, serverName, roomID string) ([]*AdminRoom, error) {
	filter, args := "", []any{}
	if roomID != "" {
		filter, args = " WHERE room_id = $1", []any{roomID}
	}
	rows, err := q.QueryContext(ctx, `SELECT room_id, room_version, creator, created_ts, is_public FROM rooms`+filter+` ORDER BY room_id`, args...)
	if err != nil {
		return nil, err
	}
	byID := map[string]*AdminRoom{}
	var out []*AdminRoom
	for rows.Next() {
		r := &AdminRoom{State: map[string]map[string]any{}}
		if err := rows.Scan(&r.RoomID, &r.Version, &r.Creator, &r.CreatedTS, &r.IsPublic); err != nil {
			rows.Close()
			return nil, err
		}
		byID[r.RoomID] = r
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, nil
	}
	csFilter := ""
	if roomID != "" {
		csFilter = " AND cs.room_id = $1"
	}
	// Member and state counts.
	rows, err = q.QueryContext(ctx, `SELECT cs.room_id, cs.type, cs.state_key, cs.membership FROM current_state cs WHERE 1=1`+csFilter, args...)
	if err != nil {
		return nil, err
	}
	suffix := ":" + serverName
	for rows.Next() {
		var rid, typ, sk, m string
		if err := rows.Scan(&rid, &typ, &sk, &m); err != nil {
			rows.Close()
			return nil, err
		}
		r := byID[rid]
		if r == nil {
			continue
		}
		r.StateEvents++
		if typ == "m.room.member" && m == "join" {
			r.JoinedMembers++
			if strings.HasSuffix(sk, suffix) {
				r.JoinedLocalMembers++
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Summary state contents.
	ph := make([]string, len(summaryTypes))
	targs := append([]any(nil), args...)
	for i, t := range summaryTypes {
		targs = append(targs, t)
		ph[i] = fmt.Sprintf("$%d", len(targs))
	}
	rows, err = q.QueryContext(ctx, `SELECT cs.room_id, cs.type, e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id
		WHERE cs.state_key = ''`+csFilter+` AND cs.type IN (`+strings.Join(ph, ",")+`)`, targs...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var rid, typ, js string
		if err := rows.Scan(&rid, &typ, &js); err != nil {
			return nil, err
		}
		r := byID[rid]
		if r == nil {
			continue
		}
		var ev struct {
			Content map[string]any `json:"content"`
		}
		if json.Unmarshal([]byte(js), &ev) == nil && ev.Content != nil {
			r.State[typ] = ev.Content
		}
	}
	return out, rows.Err()
}

// ---------------------------------------------------------------------------
// Blocked and purged rooms.

// RoomBlock is a row of room_blocks.
type RoomBlock struct {
	RoomID    string
	BlockedBy string
	BlockedTS int64
	Purged    bool
}

// BlockRoom blocks (or with purged, marks purged) a room; idempotent.
func BlockRoom(ctx context.Context, q Querier, b RoomBlock) error {
	_, err := q.ExecContext(ctx, `INSERT INTO room_blocks (room_id, blocked_by, blocked_ts, purged) VALUES ($1, $2, $3, $4)
		ON CONFLICT (room_id) DO UPDATE SET purged = (room_blocks.purged OR excluded.purged)`, b.RoomID, b.BlockedBy, b.BlockedTS, b.Purged)
	return err
}

// UnblockRoom lifts a block; purged rooms stay refused. It reports whether
// a block was lifted.
func UnblockRoom(ctx context.Context, q Querier, roomID string) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM room_blocks WHERE room_id = $1 AND purged = FALSE`, roomID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// GetRoomBlock returns the room's block, or ErrNotFound.
func GetRoomBlock(ctx context.Context, q Querier, roomID string) (*RoomBlock, error) {
	var b RoomBlock
	err := q.QueryRowContext(ctx, `SELECT room_id, blocked_by, blocked_ts, purged FROM room_blocks WHERE room_id = $1`, roomID).Scan(&b.RoomID, &b.BlockedBy, &b.BlockedTS, &b.Purged)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &b, err
}

// ListRoomBlocks returns every block.
func ListRoomBlocks(ctx context.Context, q Querier) ([]RoomBlock, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, blocked_by, blocked_ts, purged FROM room_blocks ORDER BY room_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RoomBlock
	for rows.Next() {
		var b RoomBlock
		if err := rows.Scan(&b.RoomID, &b.BlockedBy, &b.BlockedTS, &b.Purged); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// PurgeRoom deletes a room's events, state and aliases from the room
// tables. It returns the number of events deleted. Run it in a transaction
// (with BlockRoom(..., Purged: true) and the audit record).
func PurgeRoom(ctx context.Context, q Querier, roomID string) (int64, error) {
	onCommit(q, func(db *DB) {
		db.members.locked(func(c *memberCache) { c.reset() })
		db.unread.reset()
	})
	// Derived indexes first: the full-text index reads the rows it forgets.
	if err := PurgeRoomIndexes(ctx, q, roomID); err != nil {
		return 0, err
	}
	res, err := q.ExecContext(ctx, `DELETE FROM events WHERE room_id = $1`, roomID)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	// Every other component's per-room rows (receipts, account data,
	// notifications, typing…) go too, found by their room_id column so a new
	// table cannot be forgotten. The audit trail, legal holds and the block
	// itself are kept: they are the record of the purge.
	tables, err := roomTables(ctx, q)
	if err != nil {
		return 0, err
	}
	for _, table := range tables {
		if _, err := q.ExecContext(ctx, `DELETE FROM `+table+` WHERE room_id = $1`, roomID); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// purgeKeeps are tables with a room_id column that a purge must not touch.
var purgeKeeps = map[string]bool{"events": true, "audit_log": true, "legal_holds": true, "room_blocks": true}

// roomTables lists the ordinary tables that have a room_id column.
func roomTables(ctx context.Context, q Querier) ([]string, error) {
	query := `SELECT table_name FROM information_schema.columns WHERE column_name = 'room_id' AND table_schema = current_schema()`
	if q.Store().Dialect == SQLite {
		query = `SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table' AND p.name = 'room_id' AND m.sql NOT LIKE 'CREATE VIRTUAL%'`
	}
	names, err := queryStrings(ctx, q, query)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if !purgeKeeps[n] && !strings.HasPrefix(n, "audit") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	// rooms last: other tables may reference it.
	for i, n := range out {
		if n == "rooms" {
			out = append(append(out[:i:i], out[i+1:]...), "rooms")
			break
		}
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// Legal holds.

// Legal hold scopes.
const (
	HoldRoom = "room"
	HoldUser = "user"
)

// LegalHold is a row of legal_holds.
type LegalHold struct {
	Scope     string `json:"scope"`
	Target    string `json:"target"`
	Reason    string `json:"reason"`
	CreatedBy string `json:"created_by"`
	CreatedTS int64  `json:"created_ts"`
}

// PutLegalHold places (or updates the reason of) a hold.
func PutLegalHold(ctx context.Context, q Querier, h LegalHold) error {
	_, err := q.ExecContext(ctx, `INSERT INTO legal_holds (scope, target, reason, created_by, created_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (scope, target) DO UPDATE SET reason = excluded.reason`, h.Scope, h.Target, h.Reason, h.CreatedBy, h.CreatedTS)
	return err
}

// DeleteLegalHold lifts a hold; false if there was none.
func DeleteLegalHold(ctx context.Context, q Querier, scope, target string) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM legal_holds WHERE scope = $1 AND target = $2`, scope, target)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// ListLegalHolds returns every hold.
func ListLegalHolds(ctx context.Context, q Querier) ([]LegalHold, error) {
	rows, err := q.QueryContext(ctx, `SELECT scope, target, reason, created_by, created_ts FROM legal_holds ORDER BY scope, target`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []LegalHold{}
	for rows.Next() {
		var h LegalHold
		if err := rows.Scan(&h.Scope, &h.Target, &h.Reason, &h.CreatedBy, &h.CreatedTS); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// UserUnderHold reports whether the user is under legal hold: erasing
// them would hide held history.
func UserUnderHold(ctx context.Context, q Querier, userID string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM legal_holds WHERE scope = 'user' AND target = $1`, userID).Scan(&n)
	return n > 0, err
}

// RoomUnderHold reports whether the room, or any user ever a member of it,
// is under legal hold: purging it would destroy held history.
func RoomUnderHold(ctx context.Context, q Querier, roomID string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM legal_holds h WHERE (h.scope = 'room' AND h.target = $1)
		OR (h.scope = 'user' AND EXISTS (SELECT 1 FROM current_state cs WHERE cs.room_id = $1 AND cs.type = 'm.room.member' AND cs.state_key = h.target))`, roomID).Scan(&n)
	return n > 0, err
}

// ---------------------------------------------------------------------------
// Server notices.

// ServerNoticeRoom returns the user's server-notice room ("" if none).
func ServerNoticeRoom(ctx context.Context, q Querier, userID string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT room_id FROM server_notice_rooms WHERE user_id = $1`, userID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// SetServerNoticeRoom records the user's server-notice room.
func SetServerNoticeRoom(ctx context.Context, q Querier, userID, roomID string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO server_notice_rooms (user_id, room_id) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id`, userID, roomID)
	return err
}

// ---------------------------------------------------------------------------
// Retention (MSC1763).

// RetentionPolicy is a room's m.room.retention state.
type RetentionPolicy struct {
	RoomID      string
	MaxLifetime int64 // ms
}

// RetentionPolicies lists rooms whose m.room.retention sets max_lifetime.
func RetentionPolicies(ctx context.Context, q Querier) ([]RetentionPolicy, error) {
	rows, err := q.QueryContext(ctx, `SELECT cs.room_id, e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id
		WHERE cs.type = 'm.room.retention' AND cs.state_key = ''`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RetentionPolicy
	for rows.Next() {
		var rid, js string
		if err := rows.Scan(&rid, &js); err != nil {
			return nil, err
		}
		var ev struct {
			Content struct {
				MaxLifetime *int64 `json:"max_lifetime"`
			} `json:"content"`
		}
		if json.Unmarshal([]byte(js), &ev) == nil && ev.Content.MaxLifetime != nil && *ev.Content.MaxLifetime > 0 {
			out = append(out, RetentionPolicy{RoomID: rid, MaxLifetime: *ev.Content.MaxLifetime})
		}
	}
	return out, rows.Err()
}

// PurgeExpiredEvents deletes the room's timeline events (never state)
// sent before beforeTS, except the room's forward extremities, and
// returns how many went.
func PurgeExpiredEvents(ctx context.Context, q Querier, roomID string, beforeTS int64) (int64, error) {
	return PurgeEventsBefore(ctx, q, roomID, beforeTS, 0, "")
}

// PurgeEventsBefore is PurgeExpiredEvents that, with beforePos set, cuts at
// that stream position instead of a time (the admin purge_history up to an
// event: events sent in the same millisecond are told apart) and, with
// keepServer set, keeps the events sent by that server's users (the admin
// purge_history without delete_local_events).
func PurgeEventsBefore(ctx context.Context, q Querier, roomID string, beforeTS, beforePos int64, keepServer string) (int64, error) {
	room, err := GetRoom(ctx, q, roomID)
	if err != nil {
		return 0, err
	}
	cut := `origin_ts < $2`
	args := []any{roomID, beforeTS}
	if beforePos != 0 {
		cut, args[1] = `stream_pos < $2`, beforePos
	}
	keep := ""
	for _, id := range room.ForwardExtremities {
		args = append(args, id)
		keep += fmt.Sprintf(",$%d", len(args))
	}
	query := `DELETE FROM events WHERE room_id = $1 AND state_key IS NULL AND ` + cut
	if keep != "" {
		query += ` AND event_id NOT IN (` + keep[1:] + `)`
	}
	if keepServer != "" {
		args = append(args, "%:"+keepServer)
		query += fmt.Sprintf(` AND sender NOT LIKE $%d`, len(args))
	}
	res, err := q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	// A hole below an expired event is history past retention: it is not
	// to be fetched again.
	if _, err := q.ExecContext(ctx, `DELETE FROM room_gaps WHERE room_id = $1 AND event_id NOT IN (SELECT event_id FROM events WHERE room_id = $1)`, roomID); err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// RoomSize is a room's estimated footprint in the store.
type RoomSize struct {
	RoomID string
	Bytes  int64
}

// RoomSizes estimates every room's size from its events' JSON, largest
// first (the admin API's database statistics).
func RoomSizes(ctx context.Context, q Querier) ([]RoomSize, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, SUM(LENGTH(json)) AS n FROM events GROUP BY room_id ORDER BY n DESC, room_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RoomSize
	for rows.Next() {
		var r RoomSize
		if err := rows.Scan(&r.RoomID, &r.Bytes); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// AvatarURLs lists the mxc URIs in use as user avatars and room avatars
// (what the admin media deletion keeps with keep_profiles).
func AvatarURLs(ctx context.Context, q Querier) ([]string, error) {
	out, err := queryStrings(ctx, q, `SELECT avatar_url FROM accounts WHERE avatar_url IS NOT NULL AND avatar_url <> ''`)
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id WHERE c.type = 'm.room.avatar'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		var ev struct {
			Content struct {
				URL string `json:"url"`
			} `json:"content"`
		}
		if json.Unmarshal([]byte(raw), &ev) == nil && ev.Content.URL != "" {
			out = append(out, ev.Content.URL)
		}
	}
	return out, rows.Err()
}
