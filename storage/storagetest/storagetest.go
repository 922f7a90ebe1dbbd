package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"enclave/storage"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// AdminURL is the PostgreSQL server used to create throw-away databases.
// ENCLAVE_TEST_POSTGRES overrides it.
func AdminURL() string {
	if v := os.Getenv("ENCLAVE_TEST_POSTGRES"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Dialects lists the stores every test runs against.
var Dialects = []storage.Dialect{storage.SQLite, storage.Postgres}

// NewURL returns a database URL for a fresh, empty database of the dialect,
// removed when the test ends. PostgreSQL being unreachable fails the test:
// a silently skipped store would hide half the suite.
func NewURL(t testing.TB, d storage.Dialect) string {
	t.Helper()
	if d == storage.SQLite {
		return "sqlite:" + filepath.Join(t.TempDir(), "enclave.db")
	}
	admin, err := sql.Open("pgx", AdminURL())
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "enclave_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatalf("postgres at %s is needed for tests (set ENCLAVE_TEST_POSTGRES): %v", AdminURL(), err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	})
	return replaceDBName(AdminURL(), name)
}

func replaceDBName(url, name string) string {
	rest := url
	query := ""
	if i := strings.Index(url, "?"); i >= 0 {
		rest, query = url[:i], url[i:]
	}
	if i := strings.LastIndex(rest, "/"); i > len("postgres://") {
		rest = rest[:i]
	}
	return fmt.Sprintf("%s/%s%s", rest, name, query)
}

// Open returns a migrated store of dialect d, closed at test end.
func Open(t testing.TB, d storage.Dialect) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), NewURL(t, d), storage.Options{MaxOpenConns: 10})
	if err != nil {
		t.Fatalf("open %s: %v", d, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Each runs fn as a subtest against a fresh store of every dialect.
func Each(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	for _, d := range Dialects {
		t.Run(string(d), func(t *testing.T) {
			fn(t, Open(t, d))
		})
	}
}
