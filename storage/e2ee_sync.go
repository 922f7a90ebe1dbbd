package storage

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
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
//
// The key counts and an empty inbox are kept in memory (keyCache): while
// no key of the user was written and no to-device row took a position
// since the inbox was last found empty, the answer is known without a
// query.
func ReadSyncState(ctx context.Context, db *DB, userID, deviceID string, since, to int64, limit int, lists bool, wake func()) (*SyncState, error) {
	// Device lists change with device-list rows and with joins and leaves.
	lists = lists && since < to && (db.Stream.Moved("e2ee_device_list_changes", since) || db.Stream.Moved("e2ee_member_changes", since))
	var gen uint64
	var known *deviceKeys
	db.keys.locked(func(c *keyCache) {
		gen = c.gens[userID]
		if d := c.devices[[2]string{userID, deviceID}]; d != nil && !db.Stream.Moved("e2ee_to_device", d.emptyTo) {
			known = d
		}
	})
	if known != nil {
		st := &SyncState{Counts: maps.Clone(known.counts), UnusedFallback: slices.Clone(known.fallback)}
		if lists {
			var err error
			if st.Changed, st.Left, err = DeviceListUpdates(ctx, db, userID, since, to); err != nil {
				return nil, err
			}
		}
		return st, nil
	}
	query := `SELECT 0, algorithm, '', '', COUNT(*), 0 FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL SELECT 1, algorithm, '', '', 0, 0 FROM e2ee_fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = FALSE
		UNION ALL SELECT 2, sender, type, content, id, pos FROM (SELECT sender, type, content, id, pos FROM e2ee_to_device
			WHERE user_id = $1 AND device_id = $2 AND pos <= $3 ORDER BY pos, id LIMIT $4) inbox`
	args := []any{userID, deviceID, to, limit + 1}
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
	if len(inbox) == 0 {
		db.keys.remember(userID, deviceID, gen, &deviceKeys{counts: maps.Clone(st.Counts), fallback: slices.Clone(st.UnusedFallback), emptyTo: to})
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

// keyCache keeps, per device that syncs, its one-time key counts and
// unused fallback key types, with the position up to which its inbox was
// found empty. A write of any key of a user (upload, claim, device
// deletion) drops the user's entries after commit; a read keeps its
// answer only if no such write happened while it ran.
type keyCache struct {
	mu      sync.Mutex
	devices map[[2]string]*deviceKeys
	gens    map[string]uint64
}

type deviceKeys struct {
	counts   map[string]int
	fallback []string
	emptyTo  int64
}

func (c *keyCache) locked(fn func(*keyCache)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.devices == nil {
		c.devices, c.gens = map[[2]string]*deviceKeys{}, map[string]uint64{}
	}
	fn(c)
}

func (c *keyCache) remember(userID, deviceID string, gen uint64, d *deviceKeys) {
	c.locked(func(c *keyCache) {
		if c.gens[userID] == gen {
			c.devices[[2]string{userID, deviceID}] = d
		}
	})
}

// keysWritten drops userID's entries once q's transaction commits (at
// once outside a transaction: call it after the write).
func keysWritten(q Querier, userID string) {
	onCommit(q, func(db *DB) {
		db.keys.locked(func(c *keyCache) {
			c.gens[userID]++
			for k := range c.devices {
				if k[0] == userID {
					delete(c.devices, k)
				}
			}
		})
	})
}

func sortInbox(rows []inboxRow) {
	sort.Slice(rows, func(i, j int) bool {
		return rows[i].pos < rows[j].pos || (rows[i].pos == rows[j].pos && rows[i].id < rows[j].id)
	})
}
