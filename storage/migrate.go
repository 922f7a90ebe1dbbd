package storage

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// migration is one schema step. SQL is written for both dialects, with
// these tokens rewritten per dialect:
//
//	{{serial}}  auto-incrementing BIGINT primary key
//	{{blob}}    binary column (BYTEA / BLOB)
//
// The ledger (schema_migrations) records an applied step by its component
// and version, so those two names must never change once released: they are
// how a store migrated by an earlier build recognises its steps.
type migration struct {
	Component string
	Version   int
	SQL       string
}

// migrations is every schema step of every component, in the order they
// run. A step may rely on any step above it; new steps go at the end. The
// SQL of each lives beside the code that uses its tables.
var migrations = []migration{
	{Component: "accounts", Version: 1, SQL: accountsV1},
	{Component: "roles", Version: 1, SQL: rolesV1},
	{Component: "admin", Version: 1, SQL: adminV1},
	{Component: "filters", Version: 1, SQL: filtersV1},
	{Component: "account_data", Version: 1, SQL: accountDataV1},
	{Component: "presence", Version: 1, SQL: presenceV1},
	{Component: "rooms", Version: 1, SQL: roomsV1},
	{Component: "directory", Version: 1, SQL: directoryV1},
	{Component: "relations", Version: 1, SQL: relationsV1},
	{Component: "search", Version: 1, SQL: searchV1},
	{Component: "receipts", Version: 1, SQL: receiptsV1},
	{Component: "notifications", Version: 1, SQL: notificationsV1},
	{Component: "notifications", Version: 2, SQL: notificationsV2},
	{Component: "unread_counts", Version: 1, SQL: unreadCountsV1}, // reads notifications and receipts
	{Component: "pushrules", Version: 1, SQL: pushrulesV1},
	{Component: "e2ee", Version: 1, SQL: e2eeV1},
	{Component: "fed_e2ee", Version: 1, SQL: fedE2EEV1},
	{Component: "fed_openid", Version: 1, SQL: fedOpenIDV1},
	{Component: "federation", Version: 1, SQL: federationV1},
	{Component: "federation", Version: 2, SQL: federationV2},
	{Component: "media", Version: 1, SQL: mediaV1},
	{Component: "reports", Version: 1, SQL: reportsV1},
	{Component: "audit", Version: 1, SQL: auditV1},
	{Component: "roles", Version: 2, SQL: rolesV2},
	{Component: "accounts", Version: 2, SQL: accountsV2},
	{Component: "e2ee", Version: 2, SQL: e2eeV2},
	{Component: "appservice", Version: 1, SQL: appserviceV1},
	{Component: "room_gaps", Version: 1, SQL: roomGapsV1},
	{Component: "delayed_events", Version: 1, SQL: delayedEventsV1},
	{Component: "audit_siem", Version: 1, SQL: auditSIEMV1},
	{Component: "thread_subscriptions", Version: 1, SQL: threadSubscriptionsV1},
	{Component: "accounts", Version: 3, SQL: accountsV3},
	{Component: "imports", Version: 1, SQL: importsV1},
	{Component: "appservice", Version: 2, SQL: appserviceV2},
	{Component: "dehydrated_devices", Version: 1, SQL: dehydratedV1},
	{Component: "appservice_controls", Version: 1, SQL: appserviceControlsV1},
	{Component: "partial_state", Version: 1, SQL: partialStateV1},
}

func (db *DB) rewriteDDL(s string) string {
	if db.Dialect == Postgres {
		return strings.NewReplacer("{{serial}}", "BIGSERIAL PRIMARY KEY", "{{blob}}", "BYTEA").Replace(s)
	}
	return strings.NewReplacer("{{serial}}", "INTEGER PRIMARY KEY AUTOINCREMENT", "{{blob}}", "BLOB").Replace(s)
}

// migrate applies, in list order, every step of migrations not yet
// recorded in schema_migrations. Each step runs in its own transaction with
// its ledger row, so a crash mid-way never half-applies one.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL,
		version BIGINT NOT NULL,
		applied_ts BIGINT NOT NULL,
		PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("storage: creating schema_migrations: %w", err)
	}
	for _, m := range migrations {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE component = $1 AND version = $2`, m.Component, m.Version).Scan(&n); err != nil {
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
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_ts) VALUES ($1, $2, $3)`, m.Component, m.Version, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return fmt.Errorf("storage: migration %s/%d: %w", m.Component, m.Version, err)
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
