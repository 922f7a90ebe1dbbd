package storage

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"
)

// SyncState is what one /sync reports about the device's end-to-end
// encryption: key counts, to-device messages and device-list changes.
type SyncState struct {
	Counts         map[string]int
	UnusedFallback []string
	ToDevice       []ToDeviceEvent
	Changed, Left  []string
}

// ReadSyncState reads a device's E2EE state for a sync over (since, to] in
// one query: one-time key counts, unused fallback keys, the head of its
// to-device inbox and, with lists, the device-list rows. /sync runs it on
// every poll; further queries only happen when there is something to
// acknowledge, to move past the per-response limit, or a join or leave to
// resolve. See TakeToDevice and DeviceListUpdates for the semantics.
func ReadSyncState(ctx context.Context, db *DB, userID, deviceID string, since, to int64, limit int, lists bool, wake func()) (*SyncState, error) {
	query := `SELECT 0, algorithm, '', '', COUNT(*), 0 FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL SELECT 1, algorithm, '', '', 0, 0 FROM e2ee_fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = FALSE
		UNION ALL SELECT 2, sender, type, content, id, pos FROM (SELECT sender, type, content, id, pos FROM e2ee_to_device
			WHERE user_id = $1 AND device_id = $2 AND pos <= $3 ORDER BY pos, id LIMIT $4) inbox`
	args := []any{userID, deviceID, to, limit + 1}
	// Device lists change with device-list rows and with joins and leaves.
	lists = lists && since < to && (db.Stream.Moved("e2ee_device_list_changes", since) || db.Stream.Moved("e2ee_member_changes", since))
	if lists {
		query += ` UNION ALL ` + deviceListQuery("$1", "$5", "$3", "3, ", ", 0, 0")
		args = append(args, since)
	}
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	st := &SyncState{Counts: map[string]int{}, UnusedFallback: []string{}}
	var inbox []inboxRow
	var lrows []listRow
	for rows.Next() {
		var kind int
		var a, b, c string
		var n1, n2 int64
		if err := rows.Scan(&kind, &a, &b, &c, &n1, &n2); err != nil {
			rows.Close()
			return nil, err
		}
		switch kind {
		case 0:
			st.Counts[a] = int(n1)
		case 1:
			st.UnusedFallback = append(st.UnusedFallback, a)
		case 2:
			inbox = append(inbox, inboxRow{id: n1, pos: n2, ev: ToDeviceEvent{Sender: a, Type: b, Content: json.RawMessage(c)}})
		case 3:
			lrows = append(lrows, listRow{kind: a, user: b, room: c})
		default:
			rows.Close()
			return nil, &unexpectedKind{kind}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// UNION ALL keeps no order: the inbox must be in delivery order.
	sortInbox(inbox)
	if st.ToDevice, err = takeInbox(ctx, db, userID, deviceID, since, to, limit, inbox, wake); err != nil {
		return nil, err
	}
	if lists {
		if st.Changed, st.Left, err = resolveDeviceLists(ctx, db, userID, lrows); err != nil {
			return nil, err
		}
	}
	return st, nil
}

type unexpectedKind struct{ kind int }

func (e *unexpectedKind) Error() string {
	return "storage: unexpected sync row kind " + strconv.Itoa(e.kind)
}

func sortInbox(rows []inboxRow) {
	sort.Slice(rows, func(i, j int) bool {
		return rows[i].pos < rows[j].pos || (rows[i].pos == rows[j].pos && rows[i].id < rows[j].id)
	})
}
