package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Audit trail: one append-only table, audit_log, written by package
// auditapi. A row is inserted inside the transaction of the action it
// records (entry_hash, computed from its content, is set at once), and
// "sealed" shortly after commit by the one sealer of the process, which
// gives it its chain index n and chain hash:
//
//	chain_hash(n) = SHA-256(n, chain_hash(n-1), entry_hash)
//
// Sealing after commit, in commit order, is what lets writers append
// without serialising on the chain head: a row whose transaction rolls back
// never reaches the sealer, so the chain never links to a missing row.
//
//   - pos: the stream position reserved by the writing transaction. The
//     sealer only seals rows at or below the stream's visible position, so
//     every lower row has committed (or never will). 0 for rows written by
//     other processes (the CLI), sealed on the server's next pass.
//   - n: chain index (1, 2, …, dense), NULL until sealed.
//   - kind: "entry", or "checkpoint" for the signed checkpoints the sealer
//     appends (signature over chain_hash by the server key key_id).
//
// No code path updates a sealed row or deletes any row. Indexes are kept
// few (and off n, which sealing sets) to keep the per-entry cost small.
const auditV1 = `
CREATE TABLE audit_log (
	id {{serial}},
	pos BIGINT NOT NULL DEFAULT 0,
	n BIGINT UNIQUE,
	ts BIGINT NOT NULL,
	kind TEXT NOT NULL,
	actor_user TEXT NOT NULL DEFAULT '',
	actor_device TEXT NOT NULL DEFAULT '',
	actor_ip TEXT NOT NULL DEFAULT '',
	actor_ua TEXT NOT NULL DEFAULT '',
	actor_server TEXT NOT NULL DEFAULT '',
	action TEXT NOT NULL,
	target TEXT NOT NULL DEFAULT '',
	room_id TEXT NOT NULL DEFAULT '',
	outcome TEXT NOT NULL DEFAULT '',
	details TEXT NOT NULL DEFAULT '{}',
	entry_hash TEXT NOT NULL,
	prev_hash TEXT NOT NULL DEFAULT '',
	chain_hash TEXT NOT NULL DEFAULT '',
	key_id TEXT NOT NULL DEFAULT '',
	signature TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_unsealed ON audit_log(pos, id) WHERE n IS NULL;
CREATE INDEX audit_log_ts ON audit_log(ts);
CREATE INDEX audit_log_actor ON audit_log(actor_user);
CREATE INDEX audit_log_room ON audit_log(room_id)`

// AuditRow is a row of audit_log.
type AuditRow struct {
	ID          int64
	Pos         int64
	N           int64 // 0 = not yet sealed
	TS          int64 // ms
	Kind        string
	ActorUser   string
	ActorDevice string
	ActorIP     string
	ActorUA     string
	ActorServer string
	Action      string
	Target      string
	RoomID      string
	Outcome     string
	Details     string // JSON object text, as hashed
	EntryHash   string
	PrevHash    string
	ChainHash   string
	KeyID       string
	Signature   string
}

const auditCols = `id, pos, n, ts, kind, actor_user, actor_device, actor_ip, actor_ua, actor_server, action, target, room_id, outcome, details, entry_hash, prev_hash, chain_hash, key_id, signature`

func scanAuditRow(sc interface{ Scan(...any) error }) (*AuditRow, error) {
	var r AuditRow
	var n sql.NullInt64
	if err := sc.Scan(&r.ID, &r.Pos, &n, &r.TS, &r.Kind, &r.ActorUser, &r.ActorDevice, &r.ActorIP, &r.ActorUA, &r.ActorServer,
		&r.Action, &r.Target, &r.RoomID, &r.Outcome, &r.Details, &r.EntryHash, &r.PrevHash, &r.ChainHash, &r.KeyID, &r.Signature); err != nil {
		return nil, err
	}
	r.N = n.Int64
	return &r, nil
}

// InsertAuditRow appends an unsealed row (r.N is ignored unless sealed is
// true, which the sealer uses for checkpoints it writes already chained).
func InsertAuditRow(ctx context.Context, q Querier, r *AuditRow, sealed bool) error {
	var n sql.NullInt64
	if sealed {
		n = sql.NullInt64{Int64: r.N, Valid: true}
	}
	_, err := q.ExecContext(ctx, `INSERT INTO audit_log (pos, n, ts, kind, actor_user, actor_device, actor_ip, actor_ua, actor_server,
		action, target, room_id, outcome, details, entry_hash, prev_hash, chain_hash, key_id, signature)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
		r.Pos, n, r.TS, r.Kind, r.ActorUser, r.ActorDevice, r.ActorIP, r.ActorUA, r.ActorServer,
		r.Action, r.Target, r.RoomID, r.Outcome, r.Details, r.EntryHash, r.PrevHash, r.ChainHash, r.KeyID, r.Signature)
	return err
}

// UnsealedAudit is what the sealer needs of a row waiting to be chained.
type UnsealedAudit struct {
	ID        int64
	EntryHash string
	TS        int64 // when it was recorded (ms): the sealer's lag
}

// UnsealedAuditRows lists up to limit unsealed rows with pos <= maxPos, or
// recorded before staleBefore (ms) whatever their pos, in the order they
// are to be chained. (The partial index holds only unsealed rows.)
func UnsealedAuditRows(ctx context.Context, q Querier, maxPos, staleBefore int64, limit int) ([]UnsealedAudit, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, entry_hash, ts FROM audit_log WHERE n IS NULL AND (pos <= $1 OR ts < $2) ORDER BY pos, id LIMIT $3`, maxPos, staleBefore, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UnsealedAudit
	for rows.Next() {
		var u UnsealedAudit
		if err := rows.Scan(&u.ID, &u.EntryHash, &u.TS); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// SealAuditRow chains one unsealed row. It reports false if the row was
// already sealed (by another sealer), which the caller must treat as a
// conflict and abort.
func SealAuditRow(ctx context.Context, q Querier, id, n int64, prevHash, chainHash string) (bool, error) {
	c, err := SealAuditRows(ctx, q, []AuditSeal{{ID: id, N: n, PrevHash: prevHash, ChainHash: chainHash}})
	return c == 1, err
}

// AuditSeal is the chain link SealAuditRows gives one row.
type AuditSeal struct {
	ID, N               int64
	PrevHash, ChainHash string
}

// SealAuditRows chains unsealed rows in one statement per 200 and returns
// how many it sealed; fewer than asked means another sealer got there
// first, which the caller must treat as a conflict and abort.
func SealAuditRows(ctx context.Context, q Querier, seals []AuditSeal) (int64, error) {
	var total int64
	for start := 0; start < len(seals); start += 200 {
		chunk := seals[start:min(start+200, len(seals))]
		var sb strings.Builder
		args := make([]any, 0, 4*len(chunk))
		for i, s := range chunk {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, "(CAST($%d AS BIGINT), CAST($%d AS BIGINT), CAST($%d AS TEXT), CAST($%d AS TEXT))", 4*i+1, 4*i+2, 4*i+3, 4*i+4)
			args = append(args, s.ID, s.N, s.PrevHash, s.ChainHash)
		}
		res, err := q.ExecContext(ctx, `UPDATE audit_log SET n = v.column2, prev_hash = v.column3, chain_hash = v.column4
			FROM (VALUES `+sb.String()+`) AS v WHERE audit_log.id = v.column1 AND audit_log.n IS NULL`, args...)
		if err != nil {
			return total, err
		}
		c, err := res.RowsAffected()
		total += c
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// AuditHead returns the last sealed row (nil if none) and the latest
// checkpoint's n (0 if none).
func AuditHead(ctx context.Context, q Querier) (*AuditRow, int64, error) {
	head, err := scanAuditRow(q.QueryRowContext(ctx, `SELECT `+auditCols+` FROM audit_log WHERE n IS NOT NULL ORDER BY n DESC LIMIT 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var cp sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(n) FROM audit_log WHERE kind = 'checkpoint'`).Scan(&cp); err != nil {
		return nil, 0, err
	}
	return head, cp.Int64, nil
}

// AuditRowAt loads the sealed row with chain index n, or ErrNotFound.
func AuditRowAt(ctx context.Context, q Querier, n int64) (*AuditRow, error) {
	r, err := scanAuditRow(q.QueryRowContext(ctx, `SELECT `+auditCols+` FROM audit_log WHERE n = $1`, n))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return r, err
}

// AuditFilter selects sealed rows for listing and export. Zero values do
// not filter.
type AuditFilter struct {
	FromN   int64 // n >= FromN
	ToN     int64 // n <= ToN
	SinceTS int64 // ts >= SinceTS (ms)
	UntilTS int64 // ts <= UntilTS (ms)
	Actor   string
	RoomID  string
	Action  string // exact, or a prefix when it ends in '*'
	Limit   int
}

// ListAuditRows returns sealed rows matching f in ascending n order.
func ListAuditRows(ctx context.Context, q Querier, f AuditFilter) ([]*AuditRow, error) {
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	conds = append(conds, "n IS NOT NULL")
	if f.FromN > 0 {
		add("n >= $%d", f.FromN)
	}
	if f.ToN > 0 {
		add("n <= $%d", f.ToN)
	}
	if f.SinceTS > 0 {
		add("ts >= $%d", f.SinceTS)
	}
	if f.UntilTS > 0 {
		add("ts <= $%d", f.UntilTS)
	}
	if f.Actor != "" {
		add("actor_user = $%d", f.Actor)
	}
	if f.RoomID != "" {
		add("room_id = $%d", f.RoomID)
	}
	if f.Action != "" {
		if p, ok := strings.CutSuffix(f.Action, "*"); ok {
			add("action LIKE $%d", escapeLike(p)+"%")
			conds[len(conds)-1] += ` ESCAPE '\'`
		} else {
			add("action = $%d", f.Action)
		}
	}
	query := `SELECT ` + auditCols + ` FROM audit_log WHERE ` + strings.Join(conds, " AND ") + ` ORDER BY n`
	if f.Limit > 0 {
		args = append(args, f.Limit)
		query += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*AuditRow
	for rows.Next() {
		r, err := scanAuditRow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// AuditNRange returns the chain indexes of the first row with ts >= since
// and the last with ts <= until (0 bounds are open), so that an export of
// a time range is one unbroken stretch of the chain. ok is false when no
// sealed row falls in the range.
func AuditNRange(ctx context.Context, q Querier, sinceTS, untilTS int64) (first, last int64, ok bool, err error) {
	var lo, hi sql.NullInt64
	cond, args := "n IS NOT NULL", []any{}
	if sinceTS > 0 {
		args = append(args, sinceTS)
		cond += fmt.Sprintf(" AND ts >= $%d", len(args))
	}
	if untilTS > 0 {
		args = append(args, untilTS)
		cond += fmt.Sprintf(" AND ts <= $%d", len(args))
	}
	if err = q.QueryRowContext(ctx, `SELECT MIN(n), MAX(n) FROM audit_log WHERE `+cond, args...).Scan(&lo, &hi); err != nil {
		return 0, 0, false, err
	}
	return lo.Int64, hi.Int64, lo.Valid && hi.Valid, nil
}

// CountUnsealedAudit counts rows not yet chained.
func CountUnsealedAudit(ctx context.Context, q Querier) (int64, error) {
	var c int64
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_log WHERE n IS NULL`).Scan(&c)
	return c, err
}

// EachAuditRow calls fn for every sealed row with n >= fromN (and <= toN
// when toN > 0) in ascending n order, reading in pages so that a long log
// never sits in memory.
func EachAuditRow(ctx context.Context, q Querier, fromN, toN int64, fn func(*AuditRow) error) error {
	const page = 2000
	next := fromN
	for {
		rows, err := ListAuditRows(ctx, q, AuditFilter{FromN: max(next, 1), ToN: toN, Limit: page})
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
			next = r.N + 1
		}
		if len(rows) < page {
			return nil
		}
	}
}

// SIEM streaming (auditapi/siem) keeps, per sink, the chain index of the
// last row it delivered: the rows themselves wait in audit_log, so a slow
// or unreachable collector never loses one, and a restart resumes there.
const auditSIEMV1 = `
CREATE TABLE audit_siem_cursor (
	sink TEXT PRIMARY KEY,
	n BIGINT NOT NULL,
	updated_ts BIGINT NOT NULL
)`

// AuditSIEMCursor returns the chain index the sink last delivered (0 if
// it never delivered any).
func AuditSIEMCursor(ctx context.Context, q Querier, sink string) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT n FROM audit_siem_cursor WHERE sink = $1`, sink).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

// SetAuditSIEMCursor records that the sink delivered every row up to n.
// It never moves a cursor backwards.
func SetAuditSIEMCursor(ctx context.Context, q Querier, sink string, n, nowMS int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO audit_siem_cursor (sink, n, updated_ts) VALUES ($1, $2, $3)
		ON CONFLICT (sink) DO UPDATE SET n = excluded.n, updated_ts = excluded.updated_ts WHERE audit_siem_cursor.n < excluded.n`, sink, n, nowMS)
	return err
}

// AuditSealedMax is the highest chain index sealed so far (0: none).
func AuditSealedMax(ctx context.Context, q Querier) (int64, error) {
	var n sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT MAX(n) FROM audit_log`).Scan(&n)
	return n.Int64, err
}
