package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The appservice queue: each event a bridge must receive, written in the
// event's own transaction, and the transaction in flight, so a retry after
// a crash resends exactly what was sent before under the same txnId.
const appserviceV1 = `
CREATE TABLE appservice_queue (
	id {{serial}},
	appservice_id TEXT NOT NULL,
	event_json TEXT NOT NULL
);
CREATE INDEX appservice_queue_as ON appservice_queue (appservice_id, id);
CREATE TABLE appservice_txns (
	appservice_id TEXT PRIMARY KEY,
	txn_id TEXT NOT NULL,
	ids TEXT NOT NULL
)`

// appserviceV2 queues more than room events in the same ordered queue
// (kind: ephemeral events, to-device messages, device-list changes and
// key counts, MSC2409/MSC3202), records the devices appservices created
// for their users (MSC4190) and how far each appservice's collection of
// receipts, presence and device-list changes has read the stream.
const appserviceV2 = `
ALTER TABLE appservice_queue ADD COLUMN kind TEXT NOT NULL DEFAULT 'event';
CREATE TABLE appservice_devices (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	appservice_id TEXT NOT NULL,
	otk_sent TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (user_id, device_id)
);
CREATE INDEX appservice_devices_as ON appservice_devices (appservice_id);
CREATE TABLE appservice_stream (
	appservice_id TEXT PRIMARY KEY,
	pos BIGINT NOT NULL
)`

// Kinds of queued rows.
const (
	AppServiceKindEvent       = "event"
	AppServiceKindEphemeral   = "ephemeral"
	AppServiceKindToDevice    = "to_device"
	AppServiceKindDeviceLists = "device_lists"
	AppServiceKindKeyCounts   = "key_counts"
)

// AppServiceQueued is one queued row.
type AppServiceQueued struct {
	ID   int64
	Kind string
	JSON []byte
}

// EnqueueAppServiceEvent queues an event (client format) for an appservice.
func EnqueueAppServiceEvent(ctx context.Context, q Querier, asID string, ev []byte) error {
	return EnqueueAppService(ctx, q, asID, AppServiceKindEvent, ev)
}

// EnqueueAppService queues one row of a kind for an appservice.
func EnqueueAppService(ctx context.Context, q Querier, asID, kind string, js []byte) error {
	_, err := q.ExecContext(ctx, `INSERT INTO appservice_queue (appservice_id, kind, event_json, queued_ts) VALUES ($1, $2, $3, $4)`, asID, kind, string(js), time.Now().UnixMilli())
	return err
}

// AppServiceDevice is a device an appservice created for one of its users.
type AppServiceDevice struct {
	UserID, DeviceID string
	// OTKSent is the key counts last queued for it (JSON), so a change
	// is queued once.
	OTKSent string
}

// AddAppServiceDevice records a device an appservice created (MSC4190).
func AddAppServiceDevice(ctx context.Context, q Querier, asID, userID, deviceID string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO appservice_devices (user_id, device_id, appservice_id) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, device_id) DO UPDATE SET appservice_id = excluded.appservice_id`, userID, deviceID, asID)
	return err
}

// AppServiceDevices lists an appservice's devices that still exist.
func AppServiceDevices(ctx context.Context, q Querier, asID string) ([]AppServiceDevice, error) {
	rows, err := q.QueryContext(ctx, `SELECT a.user_id, a.device_id, a.otk_sent FROM appservice_devices a
		JOIN devices d ON d.user_id = a.user_id AND d.device_id = a.device_id
		WHERE a.appservice_id = $1 ORDER BY a.user_id, a.device_id`, asID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AppServiceDevice
	for rows.Next() {
		var d AppServiceDevice
		if err := rows.Scan(&d.UserID, &d.DeviceID, &d.OTKSent); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// SetAppServiceOTKSent records the key counts queued for a device.
func SetAppServiceOTKSent(ctx context.Context, q Querier, userID, deviceID, counts string) error {
	_, err := q.ExecContext(ctx, `UPDATE appservice_devices SET otk_sent = $1 WHERE user_id = $2 AND device_id = $3`, counts, userID, deviceID)
	return err
}

// AppServiceStreamPos is how far an appservice's collection has read the
// stream; ok is false before the first collection.
func AppServiceStreamPos(ctx context.Context, q Querier, asID string) (pos int64, ok bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT pos FROM appservice_stream WHERE appservice_id = $1`, asID).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return pos, err == nil, err
}

// SetAppServiceStreamPos records how far the collection has read.
func SetAppServiceStreamPos(ctx context.Context, q Querier, asID string, pos int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO appservice_stream (appservice_id, pos) VALUES ($1, $2)
		ON CONFLICT (appservice_id) DO UPDATE SET pos = excluded.pos`, asID, pos)
	return err
}

// PublicReceiptsRange lists the receipts of every room with
// from < pos <= to, private ones left out.
func PublicReceiptsRange(ctx context.Context, q Querier, from, to int64) ([]Receipt, error) {
	return queryAll(ctx, q, scanReceipt, `SELECT `+receiptCols+`
		FROM receipts r WHERE r.stream_pos > $1 AND r.stream_pos <= $2 AND r.receipt_type <> 'm.read.private' ORDER BY r.stream_pos`, from, to)
}

// AllPresenceRange lists every presence change with from < pos <= to.
func AllPresenceRange(ctx context.Context, q Querier, from, to int64) ([]*Presence, error) {
	return PresenceChangesRange(ctx, q, from, to, 0)
}

// TakeToDeviceInbox removes up to limit of a device's to-device messages
// inside tx and returns them, for a caller that queues them in the same
// transaction (an appservice's device hears through its transactions,
// not /sync).
func TakeToDeviceInbox(ctx context.Context, tx *Tx, userID, deviceID string, limit int) ([]ToDeviceEvent, error) {
	rows, err := readInbox(ctx, tx, userID, deviceID, 1<<62, limit)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	out := make([]ToDeviceEvent, len(rows))
	var maxPos int64
	for i, r := range rows {
		out[i] = r.ev
		if _, err := tx.ExecContext(ctx, `DELETE FROM e2ee_to_device WHERE id = $1`, r.id); err != nil {
			return nil, err
		}
		maxPos = max(maxPos, r.pos)
	}
	return out, raiseStreamMark(ctx, tx, maxPos)
}

// NextAppServiceEvents returns the oldest queued events of an appservice.
func NextAppServiceEvents(ctx context.Context, q Querier, asID string, limit int) ([]AppServiceQueued, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, kind, event_json FROM appservice_queue WHERE appservice_id = $1 ORDER BY id LIMIT $2`, asID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AppServiceQueued
	for rows.Next() {
		var e AppServiceQueued
		var js string
		if err := rows.Scan(&e.ID, &e.Kind, &js); err != nil {
			return nil, err
		}
		e.JSON = []byte(js)
		out = append(out, e)
	}
	return out, rows.Err()
}

// PendingAppServiceTxn returns the transaction in flight, if any, with its
// events in order.
func PendingAppServiceTxn(ctx context.Context, q Querier, asID string) (txnID string, evs []AppServiceQueued, err error) {
	var idsJSON string
	err = q.QueryRowContext(ctx, `SELECT txn_id, ids FROM appservice_txns WHERE appservice_id = $1`, asID).Scan(&txnID, &idsJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, nil
	} else if err != nil {
		return "", nil, err
	}
	var ids []int64
	if err := json.Unmarshal([]byte(idsJSON), &ids); err != nil {
		return "", nil, fmt.Errorf("appservice txn %s: %w", txnID, err)
	}
	if len(ids) == 0 {
		return txnID, nil, nil
	}
	ph := make([]string, len(ids))
	args := []any{asID}
	for i, id := range ids {
		ph[i] = fmt.Sprintf("$%d", i+2)
		args = append(args, id)
	}
	rows, err := q.QueryContext(ctx, `SELECT id, kind, event_json FROM appservice_queue WHERE appservice_id = $1 AND id IN (`+strings.Join(ph, ",")+`) ORDER BY id`, args...)
	if err != nil {
		return "", nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var e AppServiceQueued
		var js string
		if err := rows.Scan(&e.ID, &e.Kind, &js); err != nil {
			return "", nil, err
		}
		e.JSON = []byte(js)
		evs = append(evs, e)
	}
	return txnID, evs, rows.Err()
}

// StartAppServiceTxn records the transaction about to be sent.
func StartAppServiceTxn(ctx context.Context, q Querier, asID, txnID string, evs []AppServiceQueued) error {
	ids := make([]int64, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	b, _ := json.Marshal(ids)
	_, err := q.ExecContext(ctx, `INSERT INTO appservice_txns (appservice_id, txn_id, ids) VALUES ($1, $2, $3)`, asID, txnID, string(b))
	return err
}

// NextAppServiceTxn drops the acknowledged transaction done (its events
// and its record; none at first) and records the next one, of the oldest
// queued events up to limit, in one transaction: acknowledged events are
// never sent again, and the next transaction is resent as it is after a
// crash. Its txnId is its last event's queue id, unique for ever. txnID
// is "" when nothing is queued.
func NextAppServiceTxn(ctx context.Context, db *DB, asID string, done []AppServiceQueued, limit int) (txnID string, evs []AppServiceQueued, err error) {
	err = db.WithTx(ctx, func(tx *Tx) error {
		txnID, evs = "", nil
		if len(done) > 0 {
			ph := make([]string, len(done))
			args := []any{asID}
			for i, e := range done {
				ph[i] = fmt.Sprintf("$%d", i+2)
				args = append(args, e.ID)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM appservice_queue WHERE appservice_id = $1 AND id IN (`+strings.Join(ph, ",")+`)`, args...); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM appservice_txns WHERE appservice_id = $1`, asID); err != nil {
			return err
		}
		next, err := NextAppServiceEvents(ctx, tx, asID, limit)
		if err != nil || len(next) == 0 {
			return err
		}
		id := strconv.FormatInt(next[len(next)-1].ID, 10)
		if err := StartAppServiceTxn(ctx, tx, asID, id, next); err != nil {
			return err
		}
		txnID, evs = id, next
		return nil
	})
	return txnID, evs, err
}

// The operator's controls: when each event was queued (so a queue can be
// bounded by age), and the rooms each appservice publishes in its
// networks' room directories (PUT /directory/list/appservice/...).
const appserviceControlsV1 = `
ALTER TABLE appservice_queue ADD COLUMN queued_ts BIGINT NOT NULL DEFAULT 0;
CREATE TABLE appservice_room_list (
	appservice_id TEXT NOT NULL,
	network_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	PRIMARY KEY (appservice_id, network_id, room_id)
)`

// SetAppServiceRoomListed publishes (or withdraws) a room in an
// appservice's network directory.
func SetAppServiceRoomListed(ctx context.Context, q Querier, asID, networkID, roomID string, listed bool) error {
	if !listed {
		_, err := q.ExecContext(ctx, `DELETE FROM appservice_room_list WHERE appservice_id = $1 AND network_id = $2 AND room_id = $3`, asID, networkID, roomID)
		return err
	}
	_, err := q.ExecContext(ctx, `INSERT INTO appservice_room_list (appservice_id, network_id, room_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, asID, networkID, roomID)
	return err
}

// AppServiceQueueStat is one appservice's queue as operators see it.
type AppServiceQueueStat struct {
	Depth    int
	OldestTS int64 // when the oldest queued event was queued (0: none or unknown)
}

// AppServiceQueueStats reports every queue, by appservice id (those of
// appservices no longer registered included).
func AppServiceQueueStats(ctx context.Context, q Querier) (map[string]AppServiceQueueStat, error) {
	rows, err := q.QueryContext(ctx, `SELECT appservice_id, COUNT(*), COALESCE(MIN(NULLIF(queued_ts, 0)), 0) FROM appservice_queue GROUP BY appservice_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]AppServiceQueueStat{}
	for rows.Next() {
		var id string
		var st AppServiceQueueStat
		if err := rows.Scan(&id, &st.Depth, &st.OldestTS); err != nil {
			return nil, err
		}
		out[id] = st
	}
	return out, rows.Err()
}

// PruneAppServiceQueue drops an appservice's queued events queued before
// olderThan (ms; 0: no age limit; rows queued before their time was kept
// are not aged) and, oldest first, those beyond the
// newest maxEvents (0: no cap). A transaction in flight that lost an
// event is dropped too: the next one is made afresh, under a new txnId,
// from what is left. It returns how many events were dropped.
func PruneAppServiceQueue(ctx context.Context, db *DB, asID string, maxEvents int, olderThan int64) (int64, error) {
	var dropped int64
	err := db.WithTx(ctx, func(tx *Tx) error {
		dropped = 0
		if olderThan > 0 {
			res, err := tx.ExecContext(ctx, `DELETE FROM appservice_queue WHERE appservice_id = $1 AND queued_ts > 0 AND queued_ts < $2`, asID, olderThan)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			dropped += n
		}
		if maxEvents > 0 {
			// The id of the oldest event kept: everything below it goes.
			var keepFrom int64
			err := tx.QueryRowContext(ctx, `SELECT id FROM appservice_queue WHERE appservice_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2`, asID, maxEvents-1).Scan(&keepFrom)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if err == nil {
				res, err := tx.ExecContext(ctx, `DELETE FROM appservice_queue WHERE appservice_id = $1 AND id < $2`, asID, keepFrom)
				if err != nil {
					return err
				}
				n, _ := res.RowsAffected()
				dropped += n
			}
		}
		if dropped == 0 {
			return nil
		}
		var idsJSON string
		err := tx.QueryRowContext(ctx, `SELECT ids FROM appservice_txns WHERE appservice_id = $1`, asID).Scan(&idsJSON)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		} else if err != nil {
			return err
		}
		var ids []int64
		_ = json.Unmarshal([]byte(idsJSON), &ids)
		var have int
		for _, id := range ids {
			var one int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM appservice_queue WHERE appservice_id = $1 AND id = $2`, asID, id).Scan(&one); err != nil {
				return err
			}
			have += one
		}
		if have != len(ids) {
			_, err = tx.ExecContext(ctx, `DELETE FROM appservice_txns WHERE appservice_id = $1`, asID)
		}
		return err
	})
	return dropped, err
}

// AppServiceMember is a local user's current join or invite.
type AppServiceMember struct {
	RoomID, UserID, Membership string
}

// LocalJoinsAndInvites lists the current joins and invites of users of
// serverName, for the operators' view of the rooms each appservice sees.
func LocalJoinsAndInvites(ctx context.Context, q Querier, serverName string) ([]AppServiceMember, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, state_key, membership FROM current_state WHERE type = 'm.room.member' AND membership IN ('join', 'invite') AND state_key LIKE $1 ORDER BY room_id, state_key`, "%:"+serverName)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AppServiceMember
	for rows.Next() {
		var m AppServiceMember
		if err := rows.Scan(&m.RoomID, &m.UserID, &m.Membership); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}
