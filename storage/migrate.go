package storage

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Migration is one versioned schema step of a component. SQL is written for
// both dialects, with these tokens rewritten per dialect:
//
//	{{serial}}  auto-incrementing BIGINT primary key
//	{{blob}}    binary column (BYTEA / BLOB)
type Migration struct {
	Version int
	SQL     string
}

var (
	registryMu sync.Mutex
	registry   = map[string][]Migration{}
)

// RegisterMigrations adds a component's schema steps. Components call it from
// init so every table lives beside the code that uses it, while one store and
// one migration ledger (schema_migrations) hold them all.
func RegisterMigrations(component string, ms ...Migration) {
	registryMu.Lock()
	defer registryMu.Unlock()
	registry[component] = append(registry[component], ms...)
}

func (db *DB) rewriteDDL(s string) string {
	if db.Dialect == Postgres {
		return strings.NewReplacer("{{serial}}", "BIGSERIAL PRIMARY KEY", "{{blob}}", "BYTEA").Replace(s)
	}
	return strings.NewReplacer("{{serial}}", "INTEGER PRIMARY KEY AUTOINCREMENT", "{{blob}}", "BLOB").Replace(s)
}

// migrate applies, in component-name then version order, every registered
// step not yet recorded in schema_migrations. Each step runs in its own
// transaction with its ledger row, so a crash mid-way never half-applies one.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL,
		version BIGINT NOT NULL,
		applied_ts BIGINT NOT NULL,
		PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("storage: creating schema_migrations: %w", err)
	}
	registryMu.Lock()
	comps := make([]string, 0, len(registry))
	for c := range registry {
		comps = append(comps, c)
	}
	sort.Strings(comps)
	plan := map[string][]Migration{}
	for _, c := range comps {
		ms := append([]Migration(nil), registry[c]...)
		sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
		plan[c] = ms
	}
	registryMu.Unlock()

	for _, c := range comps {
		for _, m := range plan[c] {
			var n int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE component = $1 AND version = $2`, c, m.Version).Scan(&n); err != nil {
				return fmt.Errorf("storage: reading schema_migrations: %w", err)
			}
			if n > 0 {
				continue
			}
			err := db.WithTx(ctx, func(tx *Tx) error {
				for _, stmt := range splitStatements(db.rewriteDDL(m.SQL)) {
					if _, err := tx.ExecContext(ctx, stmt); err != nil {
						return fmt.Errorf("%w\n%s", err, stmt)
					}
				}
				_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_ts) VALUES ($1, $2, $3)`, c, m.Version, time.Now().UnixMilli())
				return err
			})
			if err != nil {
				return fmt.Errorf("storage: migration %s/%d: %w", c, m.Version, err)
			}
		}
	}
	return nil
}

func splitStatements(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ";") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}
