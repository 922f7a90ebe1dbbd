package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

// AppServiceQueued is one queued event.
type AppServiceQueued struct {
	ID   int64
	JSON []byte
}

// EnqueueAppServiceEvent queues an event (client format) for an appservice.
func EnqueueAppServiceEvent(ctx context.Context, q Querier, asID string, ev []byte) error {
	_, err := q.ExecContext(ctx, `INSERT INTO appservice_queue (appservice_id, event_json) VALUES ($1, $2)`, asID, string(ev))
	return err
}

// NextAppServiceEvents returns the oldest queued events of an appservice.
func NextAppServiceEvents(ctx context.Context, q Querier, asID string, limit int) ([]AppServiceQueued, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, event_json FROM appservice_queue WHERE appservice_id = $1 ORDER BY id LIMIT $2`, asID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AppServiceQueued
	for rows.Next() {
		var e AppServiceQueued
		var js string
		if err := rows.Scan(&e.ID, &js); err != nil {
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
	rows, err := q.QueryContext(ctx, `SELECT id, event_json FROM appservice_queue WHERE appservice_id = $1 AND id IN (`+strings.Join(ph, ",")+`) ORDER BY id`, args...)
	if err != nil {
		return "", nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var e AppServiceQueued
		var js string
		if err := rows.Scan(&e.ID, &js); err != nil {
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

// CompleteAppServiceTxn drops a transaction the appservice acknowledged
// and its events, in one transaction: they are never sent again.
func CompleteAppServiceTxn(ctx context.Context, db *DB, asID string, evs []AppServiceQueued) error {
	return db.WithTx(ctx, func(tx *Tx) error {
		for _, e := range evs {
			if _, err := tx.ExecContext(ctx, `DELETE FROM appservice_queue WHERE appservice_id = $1 AND id = $2`, asID, e.ID); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM appservice_txns WHERE appservice_id = $1`, asID)
		return err
	})
}
