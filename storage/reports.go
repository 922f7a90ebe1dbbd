package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Reports table.
//
//   - content_reports: what users reported to the server's admins (an
//     event, a room or a user), written by the client API's report
//     endpoints and read by admin tooling. kind is event, room or user;
//     score is the event report's -100..0 rating (NULL if not given).
const reportsV1 = `
CREATE TABLE content_reports (
	id {{serial}},
	kind TEXT NOT NULL,
	reporter TEXT NOT NULL,
	room_id TEXT NOT NULL DEFAULT '',
	event_id TEXT NOT NULL DEFAULT '',
	target_user TEXT NOT NULL DEFAULT '',
	reason TEXT NOT NULL DEFAULT '',
	score BIGINT,
	created_ts BIGINT NOT NULL,
	resolved BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX content_reports_created ON content_reports(created_ts)`

// Report kinds.
const (
	ReportEvent = "event"
	ReportRoom  = "room"
	ReportUser  = "user"
)

// Report is a row of content_reports.
type Report struct {
	ID         int64
	Kind       string
	Reporter   string
	RoomID     string
	EventID    string
	TargetUser string
	Reason     string
	Score      *int64
	CreatedTS  int64
	Resolved   bool
}

// InsertReport stores a report and returns its ID.
func InsertReport(ctx context.Context, q Querier, r *Report) (int64, error) {
	var score sql.NullInt64
	if r.Score != nil {
		score = sql.NullInt64{Int64: *r.Score, Valid: true}
	}
	return insertReturningID(ctx, q, "id", `INSERT INTO content_reports (kind, reporter, room_id, event_id, target_user, reason, score, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, r.Kind, r.Reporter, r.RoomID, r.EventID, r.TargetUser, r.Reason, score, r.CreatedTS)
}

const reportCols = `id, kind, reporter, room_id, event_id, target_user, reason, score, created_ts, resolved`

func scanReport(sc interface{ Scan(...any) error }) (*Report, error) {
	var r Report
	var score sql.NullInt64
	if err := sc.Scan(&r.ID, &r.Kind, &r.Reporter, &r.RoomID, &r.EventID, &r.TargetUser, &r.Reason, &score, &r.CreatedTS, &r.Resolved); err != nil {
		return nil, err
	}
	if score.Valid {
		v := score.Int64
		r.Score = &v
	}
	return &r, nil
}

// GetReport loads one report, or ErrNotFound.
func GetReport(ctx context.Context, q Querier, id int64) (*Report, error) {
	r, err := scanReport(q.QueryRowContext(ctx, `SELECT `+reportCols+` FROM content_reports WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return r, err
}

// ListReports returns reports newest first with ID below beforeID (0 = from
// the newest), at most limit; unresolvedOnly hides resolved ones.
func ListReports(ctx context.Context, q Querier, beforeID int64, limit int, unresolvedOnly bool) ([]*Report, error) {
	where := "TRUE"
	args := []any{}
	if beforeID > 0 {
		args = append(args, beforeID)
		where += " AND id < $1"
	}
	if unresolvedOnly {
		where += " AND resolved = FALSE"
	}
	args = append(args, limit)
	lim := "$1"
	if len(args) == 2 {
		lim = "$2"
	}
	rows, err := q.QueryContext(ctx, `SELECT `+reportCols+` FROM content_reports WHERE `+where+` ORDER BY id DESC LIMIT `+lim, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Report
	for rows.Next() {
		r, err := scanReport(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ResolveReport marks a report handled; false if there is no such report.
func ResolveReport(ctx context.Context, q Querier, id int64) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE content_reports SET resolved = TRUE WHERE id = $1`, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// EventReportFilter selects event reports for the admin API (Synapse's
// GET /_synapse/admin/v1/event_reports): offset paging, newest first unless
// Forward, optionally one reporter or one room.
type EventReportFilter struct {
	From, Limit int
	Forward     bool
	UserID      string
	RoomID      string
}

// ListEventReports returns the event reports the filter selects and how
// many there are in all.
func ListEventReports(ctx context.Context, q Querier, f EventReportFilter) ([]*Report, int, error) {
	where, args := "kind = $1", []any{ReportEvent}
	if f.UserID != "" {
		args = append(args, f.UserID)
		where += fmt.Sprintf(" AND reporter = $%d", len(args))
	}
	if f.RoomID != "" {
		args = append(args, f.RoomID)
		where += fmt.Sprintf(" AND room_id = $%d", len(args))
	}
	var total int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM content_reports WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	dir := "DESC"
	if f.Forward {
		dir = "ASC"
	}
	args = append(args, f.Limit, f.From)
	rows, err := q.QueryContext(ctx, fmt.Sprintf(`SELECT `+reportCols+` FROM content_reports WHERE `+where+` ORDER BY id `+dir+` LIMIT $%d OFFSET $%d`, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := []*Report{}
	for rows.Next() {
		r, err := scanReport(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, r)
	}
	return out, total, rows.Err()
}

// DeleteReport removes a report; false if there was none.
func DeleteReport(ctx context.Context, q Querier, id int64) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM content_reports WHERE id = $1`, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}
