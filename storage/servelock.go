package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// ErrStoreInUse is returned by LockForServing when another process already
// serves the store. Enclave keeps in-memory state beside the store (stream
// positions, read caches, long-poll wake-ups), so a second process on the
// same store would drift from the first silently; until scale-out exists
// it must refuse to start instead.
var ErrStoreInUse = errors.New("storage: another Enclave process is serving this database")

// serveLockKey is the PostgreSQL advisory lock key that marks a database
// as served ("enclave!" in ASCII, so it is recognisable in pg_locks).
const serveLockKey int64 = 0x656e636c61766521

// serveLockWait is how long a start waits for a held PostgreSQL serving
// lock before refusing (see LockForServing).
const serveLockWait = 3 * time.Second

// LockForServing takes the store's serving lock and returns its release.
// On PostgreSQL it is a session advisory lock held on a connection set
// apart from the pool (advisory locks are per database, so several stores
// can share one cluster); on SQLite it is an exclusive flock on a lock file
// beside the database. Both are dropped by the operating system or the
// database if the process dies, so a crash never needs a manual unlock.
// Command-line tools that open the store briefly do not take it.
func (db *DB) LockForServing(ctx context.Context) (release func(), err error) {
	if db.Dialect == SQLite {
		return lockFile(db.path + ".lock")
	}
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("storage: serving lock: %w", err)
	}
	// A process killed a moment ago still holds the lock until its
	// backend notices the closed connection and exits: an immediate
	// restart (a supervisor's) waits that out rather than refusing.
	var got bool
	for deadline := time.Now().Add(serveLockWait); ; {
		if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, serveLockKey).Scan(&got); err != nil {
			conn.Close()
			return nil, fmt.Errorf("storage: serving lock: %w", err)
		}
		if got || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			conn.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !got {
		conn.Close()
		return nil, fmt.Errorf("%w (PostgreSQL advisory lock %d is held; stop the other process first)", ErrStoreInUse, serveLockKey)
	}
	return func() {
		_, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, serveLockKey)
		_ = conn.Close()
	}, nil
}

// lockFile takes an exclusive, non-blocking flock on path. The lock
// belongs to the open file, so a second open in the same process is
// refused as well — which is what the tests exercise.
func lockFile(path string) (func(), error) {
	if path == ".lock" || strings.HasPrefix(path, ":memory:") {
		return func() {}, nil // an in-memory store is private to its process
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage: serving lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s is locked; stop the other process first)", ErrStoreInUse, path)
		}
		return nil, fmt.Errorf("storage: serving lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
