package storage

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"sync"
)

// Notifications: one row per (user, event) that the user's push rules said
// to notify about, written after the event commits (by the push notifier).
// A row is unread until a read receipt of the user reaches it: receipts
// clear the unread flag, and the count queries also check receipts, so a
// row written just after a receipt that covers it is never counted.
// thread_id is 'main' or the thread root. Each batch of rows takes a
// stream position, so /sync sends new counts for the rooms concerned.
//
// unread_counts keeps the unread totals per (user, room, thread), so a
// /sync reads a few rows however much unread history a user has: inserts
// add to them, and a read receipt recounts its room from the rows still
// unread. Both writers hold the user's lock (lockUsers), so a receipt and a
// notification batch for one user never interleave.
const notificationsV1 = `
CREATE TABLE notifications (
	id {{serial}},
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	event_pos BIGINT NOT NULL,
	thread_id TEXT NOT NULL DEFAULT 'main',
	highlight BOOLEAN NOT NULL DEFAULT FALSE,
	actions TEXT NOT NULL DEFAULT '[]',
	ts BIGINT NOT NULL,
	unread BOOLEAN NOT NULL DEFAULT TRUE,
	stream_pos BIGINT NOT NULL
);
CREATE UNIQUE INDEX notifications_user_event ON notifications(user_id, event_id);
CREATE INDEX notifications_user_pos ON notifications(user_id, stream_pos);
CREATE INDEX notifications_pos ON notifications(stream_pos);
CREATE INDEX notifications_user_unread ON notifications(user_id, unread, room_id);
CREATE INDEX notifications_user_id ON notifications(user_id, id)`

// Rooms with changed totals are found through unread_counts now.
const notificationsV2 = `
DROP INDEX notifications_user_pos;
DROP INDEX notifications_pos`

// unread_counts is its own ledger component (so named since it first ran
// after "receipts" in alphabetical order); its backfill reads notifications
// and receipts, so it is listed after both in migrations.
const unreadCountsV1 = `
CREATE TABLE unread_counts (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	notifs BIGINT NOT NULL DEFAULT 0,
	highlights BIGINT NOT NULL DEFAULT 0,
	stream_pos BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, room_id, thread_id)
);
UPDATE notifications SET unread = FALSE WHERE id IN (SELECT n.id FROM notifications n WHERE n.unread = TRUE AND ` + readCovered + `);
INSERT INTO unread_counts (user_id, room_id, thread_id, notifs, highlights)
	SELECT user_id, room_id, thread_id, COUNT(*), COUNT(CASE WHEN highlight THEN 1 END)
	FROM notifications WHERE unread = TRUE GROUP BY user_id, room_id, thread_id`

// unreadLockClass namespaces lockUsers' PostgreSQL advisory locks.
const unreadLockClass = "enclave/unread:"

// lockUsers serialises, until tx ends, the writers of these users' unread
// state (notification batches and read receipts). PostgreSQL takes one
// transaction-scoped advisory lock per user in a fixed order, so two
// batches cannot deadlock; SQLite transactions already run one at a time.
func lockUsers(ctx context.Context, tx *Tx, users []string) error {
	if tx.db.Dialect != Postgres || len(users) == 0 {
		return nil
	}
	keys := make([]int64, 0, len(users))
	seen := make(map[int64]bool, len(users))
	for _, u := range users {
		h := fnv.New64a()
		h.Write([]byte(unreadLockClass + u))
		k := int64(h.Sum64())
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	// OFFSET 0 keeps the sorted subquery from being flattened, so the locks
	// are taken in key order.
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(k) FROM (SELECT k FROM unnest($1::bigint[]) AS k ORDER BY k OFFSET 0) s`, keys)
	return err
}

// Notification is one row of notifications.
type Notification struct {
	ID        int64
	UserID    string
	RoomID    string
	EventID   string
	EventPos  int64
	ThreadID  string
	Highlight bool
	Actions   json.RawMessage
	TS        int64
	Read      bool // only set by ListNotifications
	StreamPos int64
}

// readCovered is true when one of the user's read receipts reaches the
// notification n (unthreaded, or of n's thread).
const readCovered = `EXISTS (SELECT 1 FROM receipts r WHERE r.room_id = n.room_id AND r.user_id = n.user_id
	AND r.receipt_type IN ('m.read', 'm.read.private') AND (r.thread_id = '' OR r.thread_id = n.thread_id) AND r.event_pos >= n.event_pos)`

// InsertNotifications stores a batch of rows inside tx under one new
// stream position, which it returns (0 when ns is empty), and adds the
// unread ones to the totals. Rows already covered by a receipt are stored
// as read; rows already stored are skipped, so a batch never counts twice.
func InsertNotifications(ctx context.Context, tx *Tx, ns []Notification) (int64, error) {
	if len(ns) == 0 {
		return 0, nil
	}
	users := make([]string, len(ns))
	rooms := map[string]bool{}
	for i, n := range ns {
		users[i] = n.UserID
		rooms[n.RoomID] = true
	}
	if err := lockUsers(ctx, tx, users); err != nil {
		return 0, err
	}
	read, err := readMarks(ctx, tx, rooms)
	if err != nil {
		return 0, err
	}
	pos := tx.NextPos("notifications")
	totals := map[[3]string]Counts{} // (user, room, thread)
	// A row twice in the batch is stored (and counted) once.
	seen := make(map[[2]string]bool, len(ns))
	uniq := ns[:0:0]
	for _, n := range ns {
		if k := [2]string{n.UserID, n.EventID}; !seen[k] {
			seen[k] = true
			uniq = append(uniq, n)
		}
	}
	const cols = 10
	for start := 0; start < len(uniq); start += 200 {
		chunk := uniq[start:min(start+200, len(uniq))]
		args := make([]any, 0, len(chunk)*cols)
		unread := make([]bool, len(chunk))
		for i, n := range chunk {
			actions := n.Actions
			if len(actions) == 0 {
				actions = json.RawMessage("[]")
			}
			thread := n.ThreadID
			if thread == "" {
				thread = "main"
			}
			chunk[i].ThreadID = thread
			unread[i] = read[[3]string{n.RoomID, n.UserID, ""}] < n.EventPos && read[[3]string{n.RoomID, n.UserID, thread}] < n.EventPos
			args = append(args, n.UserID, n.RoomID, n.EventID, n.EventPos, thread, n.Highlight, string(actions), n.TS, pos, unread[i])
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO notifications (user_id, room_id, event_id, event_pos, thread_id, highlight, actions, ts, stream_pos, unread)
			VALUES `+valuesRows(len(chunk), cols)+` ON CONFLICT (user_id, event_id) DO NOTHING`, args...)
		if err != nil {
			return 0, err
		}
		stored := func(int) bool { return true }
		if n, err := res.RowsAffected(); err != nil || int(n) != len(chunk) {
			// Some rows were there already (an event seen twice): the
			// ones stored now are those at this batch's position.
			now, err := storedAt(ctx, tx, chunk, pos)
			if err != nil {
				return 0, err
			}
			stored = func(i int) bool { return now[[2]string{chunk[i].UserID, chunk[i].EventID}] }
		}
		for i, n := range chunk {
			if !unread[i] || !stored(i) {
				continue
			}
			k := [3]string{n.UserID, n.RoomID, n.ThreadID}
			c := totals[k]
			c.Notifications++
			if n.Highlight {
				c.Highlights++
			}
			totals[k] = c
		}
	}
	if len(totals) == 0 {
		return pos, nil
	}
	args := make([]any, 0, len(totals)*6)
	for k, c := range totals {
		args = append(args, k[0], k[1], k[2], c.Notifications, c.Highlights, pos)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO unread_counts (user_id, room_id, thread_id, notifs, highlights, stream_pos) VALUES `+valuesRows(len(totals), 6)+`
		ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET notifs = unread_counts.notifs + excluded.notifs,
			highlights = unread_counts.highlights + excluded.highlights, stream_pos = excluded.stream_pos`, args...)
	if err == nil {
		onCommit(tx, func(db *DB) { db.unread.add(totals, pos) })
	}
	return pos, err
}

// storedAt returns which rows of chunk are stored at stream position pos
// (by this batch, not before it).
func storedAt(ctx context.Context, tx *Tx, chunk []Notification, pos int64) (map[[2]string]bool, error) {
	users, events := map[string]bool{}, map[string]bool{}
	for _, n := range chunk {
		users[n.UserID], events[n.EventID] = true, true
	}
	args := []any{pos}
	for u := range users {
		args = append(args, u)
	}
	for e := range events {
		args = append(args, e)
	}
	rows, err := tx.QueryContext(ctx, `SELECT user_id, event_id FROM notifications WHERE stream_pos = $1 AND user_id IN `+inPlaceholders(2, len(users))+
		` AND event_id IN `+inPlaceholders(2+len(users), len(events)), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[[2]string]bool{}
	for rows.Next() {
		var k [2]string
		if err := rows.Scan(&k[0], &k[1]); err != nil {
			return nil, err
		}
		out[k] = true
	}
	return out, rows.Err()
}

// readMarks returns the read receipts (public or private) in rooms: the
// furthest event position per (room, user, thread), thread "" for
// unthreaded receipts.
func readMarks(ctx context.Context, q Querier, rooms map[string]bool) (map[[3]string]int64, error) {
	args := make([]any, 0, len(rooms))
	for r := range rooms {
		args = append(args, r)
	}
	rows, err := q.QueryContext(ctx, `SELECT room_id, user_id, thread_id, MAX(event_pos) FROM receipts
		WHERE receipt_type IN ('m.read', 'm.read.private') AND room_id IN `+inPlaceholders(1, len(args))+`
		GROUP BY room_id, user_id, thread_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[[3]string]int64{}
	for rows.Next() {
		var k [3]string
		var p int64
		if err := rows.Scan(&k[0], &k[1], &k[2], &p); err != nil {
			return nil, err
		}
		out[k] = p
	}
	return out, rows.Err()
}

// markNotificationsRead clears the unread flag of the user's rows in the
// room up to eventPos (of one thread for a threaded receipt, of all threads
// for an unthreaded one) and recounts the room's unread totals at the
// receipt's stream position. The caller holds the user's lock (lockUsers).
func markNotificationsRead(ctx context.Context, tx *Tx, userID, roomID, threadID string, eventPos, streamPos int64) error {
	query := `UPDATE notifications SET unread = FALSE WHERE user_id = $1 AND unread = TRUE AND room_id = $2 AND event_pos <= $3`
	args := []any{userID, roomID, eventPos}
	if threadID != "" {
		query += ` AND thread_id = $4`
		args = append(args, threadID)
	}
	if _, err := tx.ExecContext(ctx, query, args...); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM unread_counts WHERE user_id = $1 AND room_id = $2`, userID, roomID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO unread_counts (user_id, room_id, thread_id, notifs, highlights, stream_pos)
		SELECT user_id, room_id, thread_id, COUNT(*), COUNT(CASE WHEN highlight THEN 1 END), $3
		FROM notifications WHERE user_id = $1 AND unread = TRUE AND room_id = $2 GROUP BY user_id, room_id, thread_id`, userID, roomID, streamPos)
	if err == nil {
		onCommit(tx, func(db *DB) { db.unread.forget(userID) })
	}
	return err
}

// ClearUnreadBefore marks the user's notifications in the room below
// eventPos read, as a read receipt there would, and returns the stream
// position of the new totals. Called at a join: a room's counts start at
// the join, so the invite that brought the user in is not counted.
func ClearUnreadBefore(ctx context.Context, tx *Tx, userID, roomID string, eventPos int64) (int64, error) {
	if err := lockUsers(ctx, tx, []string{userID}); err != nil {
		return 0, err
	}
	pos := tx.NextPos("notifications")
	return pos, markNotificationsRead(ctx, tx, userID, roomID, "", eventPos-1, pos)
}

// Counts are a room's (or thread's) unread notification counts.
type Counts struct {
	Notifications int
	Highlights    int
}

// UnreadCounts returns the user's unread totals per room and thread for
// the given rooms (nil: every room), plus, whatever rooms says, those of
// rooms whose totals changed after position since (-1: none asked). Read
// through the store (q a *DB), it is answered from memory after the
// user's first call (see unreadCache).
func UnreadCounts(ctx context.Context, q Querier, userID string, rooms []string, since int64) (map[string]map[string]Counts, error) {
	var rows map[[2]string]unreadRow
	if db := q.Store(); q.Txn() == nil {
		var gen, epoch uint64
		db.unread.locked(func(c *unreadCache) { rows, gen, epoch = c.users[userID], c.gens[userID], c.epoch })
		if rows == nil {
			loaded, err := queryUnread(ctx, q, userID)
			if err != nil {
				return nil, err
			}
			db.unread.locked(func(c *unreadCache) {
				if c.users[userID] == nil && c.gens[userID] == gen && c.epoch == epoch {
					c.users[userID] = loaded
				}
			})
			rows = loaded
		} else {
			db.unread.locked(func(*unreadCache) { rows = maps.Clone(rows) })
		}
	} else {
		var err error
		if rows, err = queryUnread(ctx, q, userID); err != nil {
			return nil, err
		}
	}
	allRooms := rooms == nil || len(rooms) > 500
	want := make(map[string]bool, len(rooms))
	if !allRooms {
		for _, r := range rooms {
			want[r] = true
		}
	}
	out := map[string]map[string]Counts{}
	for k, r := range rows {
		room, thread := k[0], k[1]
		if !(since >= 0 && r.pos > since) && !want[room] && !(allRooms && (r.Notifications > 0 || r.Highlights > 0)) {
			continue
		}
		if out[room] == nil {
			out[room] = map[string]Counts{}
		}
		out[room][thread] = r.Counts
	}
	return out, nil
}

// unreadRow is a row of unread_counts.
type unreadRow struct {
	Counts
	pos int64
}

func queryUnread(ctx context.Context, q Querier, userID string) (map[[2]string]unreadRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, thread_id, notifs, highlights, stream_pos FROM unread_counts WHERE user_id = $1`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[[2]string]unreadRow{}
	for rows.Next() {
		var k [2]string
		var r unreadRow
		if err := rows.Scan(&k[0], &k[1], &r.Notifications, &r.Highlights, &r.pos); err != nil {
			return nil, err
		}
		out[k] = r
	}
	return out, rows.Err()
}

// unreadCache keeps the unread_counts rows of users who sync, as
// memberCache keeps memberships: notification batches add to a loaded
// user's rows after commit (before the batch's position is visible), a
// read receipt drops them to be read again, a purge drops all; a load is
// kept only if no write for the user happened while it ran.
type unreadCache struct {
	mu    sync.Mutex
	users map[string]map[[2]string]unreadRow // user -> (room, thread)
	gens  map[string]uint64
	epoch uint64
}

func (c *unreadCache) locked(fn func(*unreadCache)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.users == nil {
		c.users, c.gens = map[string]map[[2]string]unreadRow{}, map[string]uint64{}
	}
	fn(c)
}

func (c *unreadCache) add(totals map[[3]string]Counts, pos int64) {
	c.locked(func(c *unreadCache) {
		for k, n := range totals {
			c.gens[k[0]]++
			rows := c.users[k[0]]
			if rows == nil {
				continue
			}
			r := rows[[2]string{k[1], k[2]}]
			r.Notifications += n.Notifications
			r.Highlights += n.Highlights
			r.pos = pos
			rows[[2]string{k[1], k[2]}] = r
		}
	})
}

func (c *unreadCache) forget(userID string) {
	c.locked(func(c *unreadCache) {
		c.gens[userID]++
		delete(c.users, userID)
	})
}

func (c *unreadCache) reset() {
	c.locked(func(c *unreadCache) {
		clear(c.users)
		c.epoch++
	})
}

// ListNotifications pages through the user's notifications, newest first:
// rows with id < before (0: from the newest), at most limit, only
// highlights if asked. Read tells whether a receipt has reached the row.
func ListNotifications(ctx context.Context, q Querier, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error) {
	query := `SELECT n.id, n.room_id, n.event_id, n.event_pos, n.thread_id, n.highlight, n.actions, n.ts, n.stream_pos,
		CASE WHEN n.unread = TRUE AND NOT ` + readCovered + ` THEN 0 ELSE 1 END
		FROM notifications n WHERE n.user_id = $1`
	args := []any{userID}
	if before > 0 {
		args = append(args, before)
		query += ` AND n.id < $2`
	}
	if onlyHighlight {
		query += ` AND n.highlight = TRUE`
	}
	args = append(args, limit)
	query += ` ORDER BY n.id DESC LIMIT $` + strconv.Itoa(len(args))
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		n := Notification{UserID: userID}
		var actions string
		var read int
		if err := rows.Scan(&n.ID, &n.RoomID, &n.EventID, &n.EventPos, &n.ThreadID, &n.Highlight, &actions, &n.TS, &n.StreamPos, &read); err != nil {
			return nil, err
		}
		n.Actions = json.RawMessage(actions)
		n.Read = read == 1
		out = append(out, n)
	}
	return out, rows.Err()
}
