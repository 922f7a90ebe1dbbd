package storage

import (
	"context"
	"database/sql"
	"errors"
	"sort"
)

// The device-list stream: which users' devices or cross-signing keys
// changed, and which users became or stopped being room-mates. /sync and
// /keys/changes turn it into device_lists.changed / left; federation will
// turn it into m.device_list_update and m.signing_key_update EDUs.

// DeviceListChange is a row of e2ee_device_list_changes.
type DeviceListChange struct {
	Pos       int64
	UserID    string
	DeviceID  string // "" for a user-level change (cross-signing keys)
	Deleted   bool
	VisibleTo string // "" = everyone who shares a room with UserID
}

// SetDeviceListWaker installs the function that wakes users' /sync
// long-polls when a device-list change they should hear of is stored (the
// assembly sets the sync component's).
func (db *DB) SetDeviceListWaker(fn func(users ...string)) {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	db.deviceListWaker = fn
}

// DeviceListListener hears every committed device-list change (federation
// sends EDUs from it).
type DeviceListListener func(changes []DeviceListChange)

// OnDeviceListChange registers fn to run after each committed batch of
// device-list changes of db, once their stream position is visible.
func (db *DB) OnDeviceListChange(fn DeviceListListener) {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	db.deviceListListeners = append(append([]DeviceListListener(nil), db.deviceListListeners...), fn)
}

// deviceListHooks returns the installed waker (nil if none) and listeners.
func (db *DB) deviceListHooks() (func(users ...string), []DeviceListListener) {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	return db.deviceListWaker, db.deviceListListeners
}

// RecordDeviceListChange appends changes of one user's device list at a new
// stream position of tx and wakes, once visible, the /sync of everyone who
// should hear of it: the user, and the users sharing a room with them (or
// only visibleTo when set). deviceIDs empty records a user-level change.
func RecordDeviceListChange(ctx context.Context, tx *Tx, userID string, deviceIDs []string, deleted bool, visibleTo string) (int64, error) {
	pos := tx.NextPos("e2ee_device_list_changes")
	if len(deviceIDs) == 0 {
		deviceIDs = []string{""}
	}
	changes := make([]DeviceListChange, 0, len(deviceIDs))
	for _, d := range deviceIDs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO e2ee_device_list_changes (pos, user_id, device_id, deleted, visible_to) VALUES ($1, $2, $3, $4, $5)`,
			pos, userID, d, deleted, visibleTo); err != nil {
			return 0, err
		}
		changes = append(changes, DeviceListChange{Pos: pos, UserID: userID, DeviceID: d, Deleted: deleted, VisibleTo: visibleTo})
	}
	var wake []string
	if visibleTo != "" {
		wake = []string{visibleTo}
	} else {
		var err error
		if wake, err = UsersSharingRoomWith(ctx, tx, userID); err != nil {
			return 0, err
		}
		wake = append(wake, userID)
	}
	db := tx.db
	tx.Publish(pos, func() {
		waker, listeners := db.deviceListHooks()
		if waker != nil {
			waker(wake...)
		}
		for _, l := range listeners {
			l(changes)
		}
	})
	return pos, nil
}

// DeviceListChangesRange lists the stored device-list changes with
// from < pos <= to, oldest first (federation's EDU source).
func DeviceListChangesRange(ctx context.Context, q Querier, from, to int64, limit int) ([]DeviceListChange, error) {
	rows, err := q.QueryContext(ctx, `SELECT pos, user_id, device_id, deleted, visible_to FROM e2ee_device_list_changes WHERE pos > $1 AND pos <= $2 ORDER BY pos, id LIMIT $3`, from, to, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DeviceListChange
	for rows.Next() {
		var c DeviceListChange
		if err := rows.Scan(&c.Pos, &c.UserID, &c.DeviceID, &c.Deleted, &c.VisibleTo); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// sharedJoin joins a user's joined rooms (a) to their joined members (b).
const sharedJoin = `current_state a JOIN current_state b ON b.room_id = a.room_id
	WHERE a.state_key = $1 AND a.type = 'm.room.member' AND a.membership = 'join'
	AND b.type = 'm.room.member' AND b.membership = 'join'`

// UsersSharingRoomWith lists the users (other than userID) joined to a
// room that userID is joined to.
func UsersSharingRoomWith(ctx context.Context, q Querier, userID string) ([]string, error) {
	return queryStrings(ctx, q, `SELECT DISTINCT b.state_key FROM `+sharedJoin+` AND b.state_key <> $1`, userID)
}

// UsersSharingOtherRoomWith is UsersSharingRoomWith leaving out one room:
// who already hears of userID's devices through another room than the
// one userID is joining.
func UsersSharingOtherRoomWith(ctx context.Context, q Querier, userID, exceptRoom string) ([]string, error) {
	return queryStrings(ctx, q, `SELECT DISTINCT b.state_key FROM `+sharedJoin+` AND b.state_key <> $1 AND a.room_id <> $2`, userID, exceptRoom)
}

// SharesRoomWithServer reports whether a user of server (its users' IDs
// end in ":"+server) is joined to a room userID is joined to: one row at
// most, however large the rooms.
func SharesRoomWithServer(ctx context.Context, q Querier, userID, server string) (bool, error) {
	suffix := ":" + server
	got, err := queryStrings(ctx, q, `SELECT b.state_key FROM `+sharedJoin+` AND b.state_key <> $1
		AND substr(b.state_key, length(b.state_key) - length($2) + 1) = $2 LIMIT 1`, userID, suffix)
	return len(got) > 0, err
}

// SharingRoomWith returns which of users share a joined room with userID.
func SharingRoomWith(ctx context.Context, q Querier, userID string, users []string) (map[string]bool, error) {
	out := map[string]bool{}
	for start := 0; start < len(users); start += 500 {
		chunk := users[start:min(start+500, len(users))]
		args := []any{userID}
		for _, u := range chunk {
			args = append(args, u)
		}
		got, err := queryStrings(ctx, q, `SELECT DISTINCT b.state_key FROM `+sharedJoin+` AND b.state_key IN `+inPlaceholders(2, len(chunk)), args...)
		if err != nil {
			return nil, err
		}
		for _, u := range got {
			out[u] = true
		}
	}
	return out, nil
}

// RecordMembershipTransition is the room-server hook's half of the stream:
// for a membership event at pos it stores a row when the user's joined
// state in the room flips (joins and leaves, not profile changes).
func RecordMembershipTransition(ctx context.Context, tx *Tx, pos int64, roomID, userID, membership string) error {
	var prev string
	err := tx.QueryRowContext(ctx, `SELECT membership FROM events WHERE state_key = $1 AND type = 'm.room.member' AND room_id = $2 AND stream_pos < $3
		AND soft_failed = FALSE AND rejected = FALSE ORDER BY stream_pos DESC LIMIT 1`, userID, roomID, pos).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	joined := membership == "join"
	if joined == (prev == "join") {
		return nil
	}
	tx.db.Stream.Note("e2ee_member_changes", pos)
	_, err = tx.ExecContext(ctx, `INSERT INTO e2ee_member_changes (pos, room_id, user_id, joined) VALUES ($1, $2, $3, $4)`, pos, roomID, userID, joined)
	return err
}

// DeviceListUpdates computes device_lists for a sync (or /keys/changes) of
// userID over (from, to]:
//
//   - changed: users sharing a room with userID (and userID itself) whose
//     devices or cross-signing keys changed, users whose keys userID
//     signed (changes visible to userID only), users who joined a room
//     userID is in, and the members of rooms userID joined;
//   - left: users who no longer share any room with userID after a leave
//     (theirs or userID's) in range.
//
// The common case (nothing in range) is one indexed query.
func DeviceListUpdates(ctx context.Context, q Querier, userID string, from, to int64) (changed, left []string, err error) {
	if to <= from {
		return nil, nil, nil
	}
	rows, err := q.QueryContext(ctx, deviceListQuery("$1", "$2", "$3", "", ""), userID, from, to)
	if err != nil {
		return nil, nil, err
	}
	var rs []listRow
	for rows.Next() {
		var r listRow
		if err := rows.Scan(&r.kind, &r.user, &r.room); err != nil {
			rows.Close()
			return nil, nil, err
		}
		rs = append(rs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	return resolveDeviceLists(ctx, q, userID, rs)
}

// listRow is a raw row of deviceListQuery: kind "k" (keys of user
// changed), "j" (user joined room) or "l" (user left room).
type listRow struct{ kind, user, room string }

// deviceListQuery selects (kind, user, room) for the viewer (placeholder
// user) over (from, to], one branch per table, with extra constant
// columns appended to each branch (for the combined sync query).
func deviceListQuery(user, from, to, prefix, suffix string) string {
	return `SELECT DISTINCT ` + prefix + `'k', c.user_id, ''` + suffix + ` FROM e2ee_device_list_changes c
		WHERE c.pos > ` + from + ` AND c.pos <= ` + to + ` AND (c.visible_to = ` + user + ` OR (c.visible_to = ''
		AND (c.user_id = ` + user + ` OR EXISTS (SELECT 1 FROM current_state a JOIN current_state b ON b.room_id = a.room_id
			WHERE a.state_key = ` + user + ` AND a.type = 'm.room.member' AND a.membership = 'join'
			AND b.state_key = c.user_id AND b.type = 'm.room.member' AND b.membership = 'join'))))
		UNION ALL
		SELECT ` + prefix + `CASE WHEN m.joined THEN 'j' ELSE 'l' END, m.user_id, m.room_id` + suffix + ` FROM e2ee_member_changes m
		WHERE m.pos > ` + from + ` AND m.pos <= ` + to + ` AND (m.user_id = ` + user + ` OR m.room_id IN
			(SELECT room_id FROM current_state WHERE state_key = ` + user + ` AND type = 'm.room.member' AND membership = 'join'))`
}

// resolveDeviceLists turns raw rows into changed and left (see
// DeviceListUpdates). Only own joins/leaves and possible leavers cost
// further queries.
func resolveDeviceLists(ctx context.Context, q Querier, userID string, rs []listRow) (changed, left []string, err error) {
	if len(rs) == 0 {
		return nil, nil, nil
	}
	ch := map[string]bool{}
	candidates := map[string]bool{} // might have stopped sharing
	for _, r := range rs {
		switch {
		case r.kind == "k":
			ch[r.user] = true
		case r.user != userID && r.kind == "j":
			ch[r.user] = true
		case r.user != userID && r.kind == "l":
			candidates[r.user] = true
		default: // our own join or leave: every member of that room
			members, err := RoomMembers(ctx, q, r.room, "join")
			if err != nil {
				return nil, nil, err
			}
			for _, m := range members {
				if m == userID {
					continue
				}
				if r.kind == "j" {
					ch[m] = true
				} else {
					candidates[m] = true
				}
			}
		}
	}
	if len(candidates) > 0 {
		list := make([]string, 0, len(candidates))
		for u := range candidates {
			list = append(list, u)
		}
		sharing, err := SharingRoomWith(ctx, q, userID, list)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range list {
			if !sharing[u] {
				left = append(left, u)
				delete(ch, u)
			}
		}
	}
	for u := range ch {
		changed = append(changed, u)
	}
	sort.Strings(changed)
	sort.Strings(left)
	return changed, left, nil
}
