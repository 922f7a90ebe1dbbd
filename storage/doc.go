// Package storage is Enclave's single SQL store. Every component keeps its
// tables here, behind one *DB that speaks two dialects: SQLite (modernc.org/sqlite,
// pure Go, the embedded default) and PostgreSQL (pgx, production).
//
// Queries are written once with PostgreSQL-style $N placeholders; DB rewrites
// them for SQLite. Schema is created by versioned migrations (migrate.go).
//
// Each consumer's tables live in files named for them (accounts.go,
// e2ee_*.go, federation.go, audit.go, …); migrations run in the one
// explicit order of migrate.go. Code outside this package never writes SQL
// (the media repository's own queries excepted, see mediaapi) and never
// type-switches a Querier: Querier.Store and Querier.Txn say what it is.
//
// Imports: internal/lru and the two SQL drivers; no component. Called by:
// every component, for its own tables; rooms' events and state are written
// only through the room server.
package storage
