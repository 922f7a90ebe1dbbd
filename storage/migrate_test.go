package storage_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// ledgerBeforeOrderedMigrations is what schema_migrations held on a store
// migrated by the builds that ordered steps by component name (up to
// 5b4039d). Those keys must keep meaning the same steps.
var ledgerBeforeOrderedMigrations = []storage.MigrationKey{
	{"account_data", 1}, {"accounts", 1}, {"admin", 1}, {"audit", 1}, {"directory", 1},
	{"e2ee", 1}, {"fed_e2ee", 1}, {"fed_openid", 1}, {"federation", 1}, {"federation", 2},
	{"filters", 1}, {"media", 1}, {"notifications", 1}, {"notifications", 2}, {"presence", 1},
	{"pushrules", 1}, {"receipts", 1}, {"relations", 1}, {"reports", 1}, {"roles", 1},
	{"rooms", 1}, {"search", 1}, {"unread_counts", 1},
}

type ledgerRow struct {
	storage.MigrationKey
	AppliedTS int64
}

func readLedger(t *testing.T, db *sql.DB) []ledgerRow {
	t.Helper()
	rows, err := db.Query(`SELECT component, version, applied_ts FROM schema_migrations ORDER BY component, version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []ledgerRow
	for rows.Next() {
		var r ledgerRow
		if err := rows.Scan(&r.Component, &r.Version, &r.AppliedTS); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedKeys(ks []storage.MigrationKey) []storage.MigrationKey {
	out := append([]storage.MigrationKey(nil), ks...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Component != out[j].Component {
			return out[i].Component < out[j].Component
		}
		return out[i].Version < out[j].Version
	})
	return out
}

func equalKeys(a, b []storage.MigrationKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The step list is well formed: each step once, and each component's
// versions 1, 2, … in list order.
func TestMigrationListWellFormed(t *testing.T) {
	next := map[string]int{}
	for _, k := range storage.MigrationKeys() {
		if k.Version != next[k.Component]+1 {
			t.Fatalf("%s/%d follows %s/%d", k.Component, k.Version, k.Component, next[k.Component])
		}
		next[k.Component] = k.Version
	}
	// Every step an earlier build could have recorded is still listed.
	all := map[storage.MigrationKey]bool{}
	for _, k := range storage.MigrationKeys() {
		all[k] = true
	}
	for _, k := range ledgerBeforeOrderedMigrations {
		if !all[k] {
			t.Fatalf("ledger key %v no longer listed", k)
		}
	}
}

// A store migrated by the build before the ordered list (its schema and
// ledger as that build left them, in testdata) opens without any of its
// steps re-running: its ledger rows and schema objects are unchanged, and
// only the steps added to the list since (listed after the fixture's) run.
func TestMigrationsKeepOldLedger(t *testing.T) {
	dump, err := os.ReadFile("testdata/ledger_before_ordered_migrations.sql")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "old.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, stmt := range strings.Split(string(dump), ";\n") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := raw.Exec(stmt); err != nil {
			t.Fatalf("loading the old store: %v\n%s", err, stmt)
		}
	}
	schema := func() string {
		rows, err := raw.Query(`SELECT type, name, COALESCE(sql, '') FROM sqlite_master ORDER BY type, name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var typ, name, s string
			if err := rows.Scan(&typ, &name, &s); err != nil {
				t.Fatal(err)
			}
			b.WriteString(typ + " " + name + ": " + s + "\n")
		}
		return b.String()
	}
	before, schemaBefore := readLedger(t, raw), schema()
	var keys []storage.MigrationKey
	for _, r := range before {
		keys = append(keys, r.MigrationKey)
	}
	if !equalKeys(keys, sortedKeys(ledgerBeforeOrderedMigrations)) {
		t.Fatalf("fixture ledger %v", keys)
	}

	db, err := storage.Open(context.Background(), "sqlite:"+path, storage.Options{})
	if err != nil {
		t.Fatalf("opening a store migrated by the old build: %v", err)
	}
	db.Close()
	after := readLedger(t, raw)
	old := map[storage.MigrationKey]ledgerRow{}
	for _, r := range before {
		old[r.MigrationKey] = r
	}
	var added []storage.MigrationKey
	for _, r := range after {
		if o, ok := old[r.MigrationKey]; !ok {
			added = append(added, r.MigrationKey)
		} else if o != r {
			t.Fatalf("ledger row changed: %v -> %v", o, r)
		}
	}
	if len(after)-len(added) != len(before) {
		t.Fatalf("ledger lost rows: %v -> %v", before, after)
	}
	// The steps that ran are exactly those listed after the fixture's.
	var newer []storage.MigrationKey
	for _, k := range storage.MigrationKeys() {
		if _, ok := old[k]; !ok {
			newer = append(newer, k)
		}
	}
	if !equalKeys(sortedKeys(added), sortedKeys(newer)) {
		t.Fatalf("steps run on the old store: %v, want the newer ones %v", added, newer)
	}
	now := schema()
	for _, line := range strings.Split(strings.TrimSpace(schemaBefore), "\n") {
		if !strings.Contains(now, line+"\n") {
			t.Fatalf("schema object changed or dropped: %s\nnow:\n%s", line, now)
		}
	}
}

// On both dialects a new store records exactly the listed steps, and
// opening it again runs none of them twice.
func TestMigrationsLedgerOnReopen(t *testing.T) {
	for _, d := range storagetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			url := storagetest.NewURL(t, d)
			db, err := storage.Open(ctx, url, storage.Options{})
			if err != nil {
				t.Fatal(err)
			}
			read := func() []ledgerRow {
				var out []ledgerRow
				rows, err := db.QueryContext(ctx, `SELECT component, version, applied_ts FROM schema_migrations ORDER BY component, version`)
				if err != nil {
					t.Fatal(err)
				}
				defer rows.Close()
				for rows.Next() {
					var r ledgerRow
					if err := rows.Scan(&r.Component, &r.Version, &r.AppliedTS); err != nil {
						t.Fatal(err)
					}
					out = append(out, r)
				}
				return out
			}
			first := read()
			var keys []storage.MigrationKey
			for _, r := range first {
				keys = append(keys, r.MigrationKey)
			}
			if !equalKeys(keys, sortedKeys(storage.MigrationKeys())) {
				t.Fatalf("ledger %v, want %v", keys, sortedKeys(storage.MigrationKeys()))
			}
			db.Close()
			if db, err = storage.Open(ctx, url, storage.Options{}); err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer db.Close()
			second := read()
			if len(second) != len(first) {
				t.Fatalf("reopen changed the ledger: %v -> %v", first, second)
			}
			for i := range first {
				if first[i] != second[i] {
					t.Fatalf("reopen re-ran %v", second[i])
				}
			}
		})
	}
}
