package storage

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
)

const filtersV1 = `
CREATE TABLE filters (
	filter_id {{serial}},
	user_id TEXT NOT NULL,
	filter TEXT NOT NULL
)`

// InsertFilter stores a user's sync filter and returns its ID.
func InsertFilter(ctx context.Context, q Querier, userID string, filter []byte) (string, error) {
	id, err := insertReturningID(ctx, q, "filter_id", `INSERT INTO filters (user_id, filter) VALUES ($1, $2)`, userID, string(filter))
	return strconv.FormatInt(id, 10), err
}

// GetFilter loads a user's filter, or ErrNotFound (also for other users' IDs).
func GetFilter(ctx context.Context, q Querier, userID, filterID string) ([]byte, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil {
		return nil, ErrNotFound
	}
	var f string
	err = q.QueryRowContext(ctx, `SELECT filter FROM filters WHERE filter_id = $1 AND user_id = $2`, id, userID).Scan(&f)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(f), err
}
