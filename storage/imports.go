package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Imports of another platform's history (the importer package):
//
//   - imports: one row per export file imported (import_id is derived from
//     the file's SHA-256, so re-running the same file resumes it), with the
//     chain-of-custody facts: hash, size, operator, times, final counts.
//   - import_items: every source record already turned into something
//     here (a user, a room, an event, a media object), keyed by its source
//     identity. The row is written in the transaction that stores what it
//     produced, so a crash leaves either both or neither: a re-run skips
//     exactly what is there and imports exactly what is missing.
const importsV1 = `
CREATE TABLE imports (
	import_id TEXT PRIMARY KEY,
	platform TEXT NOT NULL,
	workspace TEXT NOT NULL,
	file_name TEXT NOT NULL,
	file_sha256 TEXT NOT NULL,
	file_size BIGINT NOT NULL,
	operator TEXT NOT NULL,
	started_ts BIGINT NOT NULL,
	finished_ts BIGINT NOT NULL DEFAULT 0,
	report TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE import_items (
	source_key TEXT PRIMARY KEY,
	import_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	value TEXT NOT NULL,
	created_ts BIGINT NOT NULL
);
CREATE INDEX import_items_import ON import_items (import_id, kind)`

// Import is a row of imports.
type Import struct {
	ImportID   string
	Platform   string
	Workspace  string
	FileName   string
	FileSHA256 string
	FileSize   int64
	Operator   string
	StartedTS  int64
	FinishedTS int64 // 0 while unfinished
	Report     string
}

// ImportItem is a row of import_items: Value is the user ID, room ID,
// event ID or mxc URI the source record became.
type ImportItem struct {
	SourceKey string
	ImportID  string
	Kind      string
	Value     string
	CreatedTS int64
}

// StartImport records an import run; an existing row (a resumed run) is
// kept, and returned.
func StartImport(ctx context.Context, q Querier, im *Import) (*Import, error) {
	if _, err := q.ExecContext(ctx, `INSERT INTO imports (import_id, platform, workspace, file_name, file_sha256, file_size, operator, started_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
		im.ImportID, im.Platform, im.Workspace, im.FileName, im.FileSHA256, im.FileSize, im.Operator, im.StartedTS); err != nil {
		return nil, err
	}
	return GetImport(ctx, q, im.ImportID)
}

// GetImport loads an import, or ErrNotFound.
func GetImport(ctx context.Context, q Querier, id string) (*Import, error) {
	var im Import
	err := q.QueryRowContext(ctx, `SELECT import_id, platform, workspace, file_name, file_sha256, file_size, operator, started_ts, finished_ts, report
		FROM imports WHERE import_id = $1`, id).Scan(&im.ImportID, &im.Platform, &im.Workspace, &im.FileName, &im.FileSHA256, &im.FileSize,
		&im.Operator, &im.StartedTS, &im.FinishedTS, &im.Report)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &im, err
}

// FinishImport marks an import finished with its report (JSON).
func FinishImport(ctx context.Context, q Querier, id string, ts int64, report string) error {
	_, err := q.ExecContext(ctx, `UPDATE imports SET finished_ts = $1, report = $2 WHERE import_id = $3`, ts, report, id)
	return err
}

// PutImportItem records what a source record became. It reports false
// (changing nothing) when the record was imported before.
func PutImportItem(ctx context.Context, q Querier, it ImportItem) (bool, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO import_items (source_key, import_id, kind, value, created_ts) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		it.SourceKey, it.ImportID, it.Kind, it.Value, it.CreatedTS)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// GetImportItem returns what a source record became ("" and ErrNotFound
// if it was never imported).
func GetImportItem(ctx context.Context, q Querier, key string) (string, error) {
	var v string
	err := q.QueryRowContext(ctx, `SELECT value FROM import_items WHERE source_key = $1`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return v, err
}

// ImportItemsIn returns, of keys, those already imported, with their values.
func ImportItemsIn(ctx context.Context, q Querier, keys []string) (map[string]string, error) {
	out := make(map[string]string)
	for len(keys) > 0 {
		n := min(len(keys), 400)
		chunk := keys[:n]
		keys = keys[n:]
		ph := make([]string, len(chunk))
		args := make([]any, len(chunk))
		for i, k := range chunk {
			ph[i] = fmt.Sprintf("$%d", i+1)
			args[i] = k
		}
		rows, err := q.QueryContext(ctx, `SELECT source_key, value FROM import_items WHERE source_key IN (`+strings.Join(ph, ", ")+`)`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return nil, err
			}
			out[k] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ImportItems calls fn for each item one import produced, in key order
// (kind "" means every kind), paging so memory stays bounded.
func ImportItems(ctx context.Context, q Querier, importID, kind string, fn func(ImportItem) error) error {
	after := ""
	for {
		rows, err := q.QueryContext(ctx, `SELECT source_key, import_id, kind, value, created_ts FROM import_items
			WHERE import_id = $1 AND ($2 = '' OR kind = $2) AND source_key > $3 ORDER BY source_key LIMIT 1000`, importID, kind, after)
		if err != nil {
			return err
		}
		var page []ImportItem
		for rows.Next() {
			var it ImportItem
			if err := rows.Scan(&it.SourceKey, &it.ImportID, &it.Kind, &it.Value, &it.CreatedTS); err != nil {
				rows.Close()
				return err
			}
			page = append(page, it)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, it := range page {
			if err := fn(it); err != nil {
				return err
			}
		}
		if len(page) < 1000 {
			return nil
		}
		after = page[len(page)-1].SourceKey
	}
}

// CountImportItems counts one import's items by kind.
func CountImportItems(ctx context.Context, q Querier, importID string) (map[string]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT kind, COUNT(*) FROM import_items WHERE import_id = $1 GROUP BY kind`, importID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			return nil, err
		}
		out[k] = n
	}
	return out, rows.Err()
}

// AccountByLocalpart finds an account by localpart (case-insensitively),
// for matching another platform's usernames to existing users.
func AccountByLocalpart(ctx context.Context, q Querier, localpart string) (*Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountCols+` FROM accounts WHERE LOWER(localpart) = LOWER($1)`, localpart))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return a, err
}
