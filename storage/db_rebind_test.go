package storage

import "testing"

// TestRebindSQLite: in-order placeholders become bare "?" (bound without
// SQLite's per-parameter name scan); repeated or out-of-order ones stay ?N.
func TestRebindSQLite(t *testing.T) {
	for in, want := range map[string]string{
		`SELECT a FROM t WHERE b = $1 AND c = $2`:         `SELECT a FROM t WHERE b = ? AND c = ?`,
		`INSERT INTO t VALUES ($1,$2),($3,$4)`:            `INSERT INTO t VALUES (?,?),(?,?)`,
		`SELECT a FROM t WHERE b = $1 OR c = $1`:          `SELECT a FROM t WHERE b = ?1 OR c = ?1`,
		`SELECT a FROM t WHERE b = $2 AND c = $1`:         `SELECT a FROM t WHERE b = ?2 AND c = ?1`,
		`SELECT a FROM t WHERE b = $1 AND c = $3`:         `SELECT a FROM t WHERE b = ?1 AND c = ?3`,
		`SELECT json_extract(a, '$.x') FROM t WHERE b=$1`: `SELECT json_extract(a, '$.x') FROM t WHERE b=?`,
		`SELECT 1`: `SELECT 1`,
	} {
		if got := rebindSQLite(in); got != want {
			t.Errorf("rebindSQLite(%q) = %q, want %q", in, got, want)
		}
	}
}
