package storage

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
)

// Notifications: one row per (user, event) that the user's push rules said
// to notify about, written after the event commits (by the push notifier).
// A row is unread until a read receipt of the user reaches it: receipts
// clear the unread flag, and the count queries also check receipts, so a
// row written just after a receipt that covers it is never counted.
// thread_id is 'main' or the thread root. Each batch of rows takes a
// stream position, so /sync sends new counts for the rooms concerned.
func init() {
	RegisterMigrations("notifications", Migration{Version: 1, SQL: `
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
CREATE INDEX notifications_user_id ON notifications(user_id, id)`})
	RegisterStreamTable("notifications", "stream_pos")
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
// stream position, which it returns (0 when ns is empty). Rows already
// covered by a receipt are stored as read.
func InsertNotifications(ctx context.Context, tx *Tx, ns []Notification) (int64, error) {
	if len(ns) == 0 {
		return 0, nil
	}
	pos := tx.NextPos()
	const cols = 9
	for start := 0; start < len(ns); start += 200 {
		end := min(start+200, len(ns))
		var sb strings.Builder
		sb.WriteString(`INSERT INTO notifications (user_id, room_id, event_id, event_pos, thread_id, highlight, actions, ts, stream_pos) VALUES `)
		args := make([]any, 0, (end-start)*cols)
		for i, n := range ns[start:end] {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteByte('(')
			for c := 0; c < cols; c++ {
				if c > 0 {
					sb.WriteByte(',')
				}
				sb.WriteString("$" + strconv.Itoa(i*cols+c+1))
			}
			sb.WriteByte(')')
			actions := n.Actions
			if len(actions) == 0 {
				actions = json.RawMessage("[]")
			}
			thread := n.ThreadID
			if thread == "" {
				thread = "main"
			}
			args = append(args, n.UserID, n.RoomID, n.EventID, n.EventPos, thread, n.Highlight, string(actions), n.TS, pos)
		}
		sb.WriteString(` ON CONFLICT (user_id, event_id) DO NOTHING`)
		if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
			return 0, err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE notifications SET unread = FALSE WHERE stream_pos = $1 AND unread = TRUE AND id IN
		(SELECT n.id FROM notifications n WHERE n.stream_pos = $1 AND `+readCovered+`)`, pos); err != nil {
		return 0, err
	}
	return pos, nil
}

// markNotificationsRead clears the unread flag of the user's rows in the
// room up to eventPos: of one thread for a threaded receipt, of all
// threads for an unthreaded one.
func markNotificationsRead(ctx context.Context, q Querier, userID, roomID, threadID string, eventPos int64) error {
	query := `UPDATE notifications SET unread = FALSE WHERE user_id = $1 AND unread = TRUE AND room_id = $2 AND event_pos <= $3`
	args := []any{userID, roomID, eventPos}
	if threadID != "" {
		query += ` AND thread_id = $4`
		args = append(args, threadID)
	}
	_, err := q.ExecContext(ctx, query, args...)
	return err
}

// Counts are a room's (or thread's) unread notification counts.
type Counts struct {
	Notifications int
	Highlights    int
}

// UnreadCounts returns the user's unread counts per room and thread, for
// the given rooms (nil: all rooms). Only unread rows are read.
func UnreadCounts(ctx context.Context, q Querier, userID string, rooms []string) (map[string]map[string]Counts, error) {
	out := map[string]map[string]Counts{}
	run := func(extra string, args []any) error {
		rows, err := q.QueryContext(ctx, `SELECT n.room_id, n.thread_id, COUNT(*), COUNT(CASE WHEN n.highlight THEN 1 END)
			FROM notifications n WHERE n.user_id = $1 AND n.unread = TRUE`+extra+` AND NOT `+readCovered+`
			GROUP BY n.room_id, n.thread_id`, append([]any{userID}, args...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var room, thread string
			var c Counts
			if err := rows.Scan(&room, &thread, &c.Notifications, &c.Highlights); err != nil {
				return err
			}
			if out[room] == nil {
				out[room] = map[string]Counts{}
			}
			out[room][thread] = c
		}
		return rows.Err()
	}
	if rooms == nil || len(rooms) > 500 {
		return out, run("", nil)
	}
	if len(rooms) == 0 {
		return out, nil
	}
	ph := make([]string, len(rooms))
	args := make([]any, len(rooms))
	for i, r := range rooms {
		ph[i] = "$" + strconv.Itoa(i+2)
		args[i] = r
	}
	return out, run(` AND n.room_id IN (`+strings.Join(ph, ",")+`)`, args)
}

// NotificationRoomsRange lists rooms where the user got notification rows
// with from < pos <= to: their counts changed.
func NotificationRoomsRange(ctx context.Context, q Querier, userID string, from, to int64) ([]string, error) {
	return queryStrings(ctx, q, `SELECT DISTINCT room_id FROM notifications WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3`, userID, from, to)
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
