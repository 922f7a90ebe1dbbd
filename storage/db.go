package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
)

// Dialect names the SQL flavour behind a DB.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Options are the connection pool settings from config.
type Options struct {
	MaxOpenConns    int
	MaxIdleConns    int
	ConnMaxLifetime time.Duration
}

// DB is the shared store handle. It is safe for concurrent use.
type DB struct {
	sql     *sql.DB
	Dialect Dialect
	// path is the SQLite database file ("" on PostgreSQL).
	path string
	// rebound caches the SQLite form of each query text.
	rebound sync.Map
	// stmts caches prepared statements by query text (SQLite only): the
	// modernc driver parses and plans every unprepared query, which made
	// SQL parsing the largest CPU cost of /sync. pgx caches on its own.
	stmts  sync.Map // string -> *sql.Stmt
	nstmts atomic.Int64
	nlarge atomic.Int64 // large statement shapes tried for the cache
	// Stream orders every synced row; see stream.go.
	Stream *Stream
	// members caches UserRooms (userrooms.go), unread UnreadCounts
	// (notifications.go).
	members memberCache
	unread  unreadCache
	keys    keyCache // ReadSyncState (e2ee_sync.go)
	// ignores caches ignore lists (IgnoredUsers, accountdata.go).
	ignores *ignoreCache
	// erased is the set of erased users (Erased, accounts.go).
	erased erasedSet
	// gapRooms is the set of rooms with timeline holes (GapBelow, gaps.go).
	gapRooms gapRoomSet
	// fts is set once SQLite's event_search_fts is known to exist
	// (hasFTS, search.go).
	fts atomic.Bool
	// Device-list hooks (e2ee_devicelists.go), installed by the assembly.
	hooksMu             sync.Mutex
	deviceListWaker     func(users ...string)
	deviceListListeners []DeviceListListener

	// SQLite's WAL checkpointer (checkpointWAL).
	stopCheckpoints chan struct{}
	checkpoints     sync.WaitGroup
	closeOnce       sync.Once
}

// ErrNotFound is returned by lookups that find no row.
var ErrNotFound = errors.New("storage: not found")

// Open connects to url, which is "sqlite:PATH" or a postgres:// DSN, and
// applies all pending migrations.
func Open(ctx context.Context, url string, opts Options) (*DB, error) {
	db, err := openRaw(url, opts)
	if err != nil {
		return nil, err
	}
	if err := db.sql.PingContext(ctx); err != nil {
		db.sql.Close()
		return nil, fmt.Errorf("storage: connecting: %w", err)
	}
	if err := db.migrate(ctx); err != nil {
		db.sql.Close()
		return nil, err
	}
	if db.Stream, err = loadStream(ctx, db); err != nil {
		db.sql.Close()
		return nil, err
	}
	if db.Dialect == SQLite {
		db.stopCheckpoints = make(chan struct{})
		db.checkpoints.Add(1)
		go db.checkpointWAL()
	}
	return db, nil
}

func openRaw(url string, opts Options) (*DB, error) {
	var (
		driver, dsn, file string
		dialect           Dialect
	)
	switch {
	case strings.HasPrefix(url, "sqlite:"):
		path := strings.TrimPrefix(url, "sqlite:")
		path = strings.TrimPrefix(path, "//")
		driver, dialect = "sqlite", SQLite
		file = path
		if i := strings.Index(file, "?"); i >= 0 {
			file = file[:i]
		}
		file = strings.TrimPrefix(file, "file:")
		// WAL lets readers run beside the single writer; IMMEDIATE transactions
		// take the write lock up front so two writers queue on busy_timeout
		// instead of deadlocking on a lock upgrade. synchronous=NORMAL in WAL
		// mode survives a process crash (SIGKILL); power-loss durability is
		// PostgreSQL's job in production. temp_store=MEMORY keeps statement
		// journals (every multi-row write inside a transaction has one) and
		// sorts off the disk. Automatic WAL checkpoints are off: they run in
		// the committing writer, holding the write lock through a copy and
		// an fsync; Open starts a checkpointer beside the writers instead.
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		dsn = path + sep + "_txlock=immediate&_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_pragma=temp_store(MEMORY)&_pragma=wal_autocheckpoint(0)"
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		driver, dsn, dialect = "pgx", url, Postgres
	default:
		return nil, fmt.Errorf("storage: database.url must start with sqlite: or postgres:// (got %q)", url)
	}
	sdb, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("storage: open: %w", err)
	}
	if opts.MaxOpenConns > 0 {
		sdb.SetMaxOpenConns(opts.MaxOpenConns)
	}
	if opts.MaxIdleConns > 0 {
		sdb.SetMaxIdleConns(opts.MaxIdleConns)
	}
	if opts.MaxOpenConns > opts.MaxIdleConns {
		// A message wakes every long-poll at once: with fewer idle than
		// open connections each such burst closes and reopens connections
		// (a PostgreSQL handshake, SQLite's pragmas) and loses their
		// prepared statements, and writes queue behind the reopening.
		sdb.SetMaxIdleConns(opts.MaxOpenConns)
	}
	if opts.ConnMaxLifetime > 0 {
		sdb.SetConnMaxLifetime(opts.ConnMaxLifetime)
	}
	return &DB{sql: sdb, Dialect: dialect, path: file, ignores: newIgnoreCache()}, nil
}

// Close closes the pool.
func (db *DB) Close() error {
	if db.stopCheckpoints != nil {
		db.closeOnce.Do(func() { close(db.stopCheckpoints) })
		db.checkpoints.Wait()
	}
	db.stmts.Range(func(_, v any) bool { _ = v.(*sql.Stmt).Close(); return true })
	return db.sql.Close()
}

// walCheckpointEvery paces the SQLite checkpointer.
const walCheckpointEvery = 200 * time.Millisecond

// checkpointWAL copies committed WAL pages into the database file in
// PASSIVE mode, which never waits for or blocks readers and writers, so
// the WAL stays short without a writer ever paying for the copy.
func (db *DB) checkpointWAL() {
	defer db.checkpoints.Done()
	t := time.NewTicker(walCheckpointEvery)
	defer t.Stop()
	for {
		select {
		case <-db.stopCheckpoints:
			return
		case <-t.C:
			if _, err := db.sql.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil && !errors.Is(err, sql.ErrConnDone) {
				logrus.WithError(err).Debug("storage: WAL checkpoint")
			}
		}
	}
}

// maxCachedStmts bounds the statement cache (each entry is prepared on
// every pool connection that runs it); past the bound queries run
// unprepared. Queries with more than maxCachedParams parameters (generated
// IN lists and multi-row inserts, which come in many shapes) are not
// cached, but for the first maxCachedLarge such shapes: a room's
// notification rows and its members' push rules come in one shape per
// member count, and preparing a 500-parameter insert for every event cost
// more than running it.
const (
	maxCachedLarge  = 64
	maxCachedStmts  = 256
	maxCachedParams = 32
)

// cachedStmt returns the prepared form of a (rebound) query, or nil.
func (db *DB) cachedStmt(query string) *sql.Stmt {
	if db.Dialect != SQLite {
		return nil
	}
	if v, ok := db.stmts.Load(query); ok {
		return v.(*sql.Stmt)
	}
	return nil
}

// stmt returns the prepared form of a (rebound) query, preparing it on
// first use; nil means run it unprepared (PostgreSQL, DDL, cache full, or
// a prepare error, which the unprepared run then reports). It must not be
// called while holding a transaction: preparing takes a pool connection.
func (db *DB) stmt(ctx context.Context, query string) *sql.Stmt {
	if db.Dialect != SQLite {
		return nil
	}
	if st := db.cachedStmt(query); st != nil {
		return st
	}
	if db.nstmts.Load() >= maxCachedStmts || !cacheable(query) {
		return nil
	}
	large := strings.Count(query, "?") > maxCachedParams
	if large && db.nlarge.Add(1) > maxCachedLarge {
		return nil
	}
	st, err := db.sql.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	if v, loaded := db.stmts.LoadOrStore(query, st); loaded {
		_ = st.Close()
		return v.(*sql.Stmt)
	}
	db.nstmts.Add(1)
	return st
}

// cacheable reports whether a query is DML worth preparing (not DDL or
// one-off maintenance).
func cacheable(query string) bool {
	q := strings.TrimSpace(query)
	if len(q) < 6 {
		return false
	}
	switch strings.ToUpper(q[:6]) {
	case "SELECT", "INSERT", "UPDATE", "DELETE":
		return true
	}
	return false
}

// Stats exposes pool statistics for metrics.
func (db *DB) Stats() sql.DBStats { return db.sql.Stats() }

// Ping checks the store is reachable (readiness).
func (db *DB) Ping(ctx context.Context) error { return db.sql.PingContext(ctx) }

var placeholder = regexp.MustCompile(`\$(\d+)`)

// q turns a PostgreSQL-style query into this dialect's form.
func (db *DB) q(query string) string {
	if db.Dialect != SQLite {
		return query
	}
	if v, ok := db.rebound.Load(query); ok {
		return v.(string)
	}
	out := rebindSQLite(query)
	db.rebound.Store(query, out)
	return out
}

// rebindSQLite rewrites $N placeholders for SQLite. When they run $1, $2,
// … $N in order, each once (most queries, and every generated multi-row
// insert or IN list), they become bare "?": SQLite keeps numbered
// parameters in a list it scans once per parameter at every bind, which
// made binding a 2,000-argument insert quadratic (a fifth of the server's
// CPU in a busy room). Otherwise they become ?N.
func rebindSQLite(query string) string {
	locs := placeholder.FindAllStringSubmatchIndex(query, -1)
	sequential := true
	for i, l := range locs {
		if query[l[2]:l[3]] != strconv.Itoa(i+1) {
			sequential = false
			break
		}
	}
	if !sequential {
		return placeholder.ReplaceAllString(query, "?$1")
	}
	var b strings.Builder
	b.Grow(len(query))
	last := 0
	for _, l := range locs {
		b.WriteString(query[last:l[0]])
		b.WriteByte('?')
		last = l[1]
	}
	b.WriteString(query[last:])
	return b.String()
}

// Querier is satisfied by *DB and *Tx so that table code runs inside or
// outside a transaction. Store and Txn say which one it is, so that code
// which must know (read caches, after-commit work) asks instead of
// type-switching.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	// Store is the store the query runs against.
	Store() *DB
	// Txn is the transaction the query runs in, nil outside one.
	Txn() *Tx
}

// Store returns db itself.
func (db *DB) Store() *DB { return db }

// Txn is nil: a query through the store runs outside a transaction.
func (db *DB) Txn() *Tx { return nil }

// Store returns the store the transaction belongs to.
func (t *Tx) Store() *DB { return t.db }

// Txn returns t itself.
func (t *Tx) Txn() *Tx { return t }

func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query = db.q(query)
	if st := db.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return db.sql.ExecContext(ctx, query, args...)
}

func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query = db.q(query)
	if st := db.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return db.sql.QueryContext(ctx, query, args...)
}

func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	query = db.q(query)
	if st := db.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return db.sql.QueryRowContext(ctx, query, args...)
}

// Tx is a transaction with the same placeholder rewriting as DB.
type Tx struct {
	tx *sql.Tx
	db *DB
	// afterCommit callbacks run once the transaction has committed, in order.
	afterCommit []func()
	// reserved stream positions, released when the transaction ends.
	reserved []int64
	// unprepared queries this transaction ran: prepared for next time once
	// it has ended (preparing inside it would take a second connection).
	unprepared []string
}

// stmt returns the cached prepared form of a (rebound) query bound to
// this transaction, or nil (and notes the query for preparing later).
func (t *Tx) stmt(ctx context.Context, query string) *sql.Stmt {
	if t.db.Dialect != SQLite {
		return nil
	}
	if st := t.db.cachedStmt(query); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	t.unprepared = append(t.unprepared, query)
	return nil
}

// NextPos reserves a stream position for a row of table (a registered
// stream table) written in this transaction.
func (t *Tx) NextPos(table string) int64 {
	p := t.db.Stream.Reserve(table)
	t.reserved = append(t.reserved, p)
	return p
}

// NextPosAfterGap is NextPos with k positions set aside below it
// (Stream.ReserveAfterGap); it returns the lowest of them and the row's.
func (t *Tx) NextPosAfterGap(table string, k int64) (lo, p int64) {
	lo, p = t.db.Stream.ReserveAfterGap(table, k)
	t.reserved = append(t.reserved, p)
	return lo, p
}

// Derived marks the transaction as holding only rows derived from others
// already committed (and rebuilt or losable on a crash), so on PostgreSQL
// its commit does not wait for the WAL flush. Call it first.
func (t *Tx) Derived(ctx context.Context) error {
	if t.db.Dialect != Postgres {
		return nil
	}
	_, err := t.tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`)
	return err
}

// Publish runs fn after commit, once pos is visible to readers.
func (t *Tx) Publish(pos int64, fn func()) {
	t.AfterCommit(func() { t.db.Stream.Publish(pos, fn) })
}

func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query = t.db.q(query)
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query = t.db.q(query)
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	query = t.db.q(query)
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}

// AfterCommit registers fn to run after a successful commit (e.g. waking
// /sync once the rows it will read are visible).
func (t *Tx) AfterCommit(fn func()) { t.afterCommit = append(t.afterCommit, fn) }

// DB returns the store this transaction belongs to.
func (t *Tx) DB() *DB { return t.db }

// WithTx runs fn in a transaction, committing if it returns nil and rolling
// back otherwise. Callbacks registered with AfterCommit run after commit.
func (db *DB) WithTx(ctx context.Context, fn func(tx *Tx) error) error {
	stx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("storage: begin: %w", err)
	}
	tx := &Tx{tx: stx, db: db}
	release := func() {
		for _, p := range tx.reserved {
			db.Stream.Release(p)
		}
		for _, q := range tx.unprepared {
			db.stmt(context.Background(), q)
		}
	}
	if err := fn(tx); err != nil {
		_ = stx.Rollback()
		release()
		return err
	}
	if err := stx.Commit(); err != nil {
		release()
		return fmt.Errorf("storage: commit: %w", err)
	}
	for _, p := range tx.reserved {
		db.Stream.Committed(p)
	}
	if m, ok := ctx.Value(writesKey{}).(*writeMark); ok {
		m.note(tx.reserved)
	}
	// Callbacks first register their Publish waits; releasing afterwards
	// lets the stream fire them the moment the positions become visible.
	for _, f := range tx.afterCommit {
		f()
	}
	release()
	return nil
}

// IsUniqueViolation reports whether err is a unique-constraint failure in
// either dialect, so callers can map it to "already exists".
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || strings.Contains(s, "SQLSTATE 23505") || strings.Contains(s, "duplicate key value")
}

// NullString converts "" to SQL NULL.
func NullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// writesKey carries a *writeMark in a context (TrackWrites).
type writesKey struct{}

// writeMark is the highest stream position committed under a context.
type writeMark struct {
	mu  sync.Mutex
	max int64
}

func (m *writeMark) note(positions []int64) {
	m.mu.Lock()
	for _, p := range positions {
		m.max = max(m.max, p)
	}
	m.mu.Unlock()
}

// TrackWrites returns a context under which every transaction that
// commits (WithTx) notes the stream positions it took, and a function
// returning the highest so far (0: none). A request handler waits for it
// (Stream.Wait) before answering, so that whatever the client reads next
// (/sync above all) sees its write, even while another writer's lower
// position is still uncommitted: read your writes for every write, not
// only those that remember to wait.
func TrackWrites(ctx context.Context) (context.Context, func() int64) {
	m := &writeMark{}
	return context.WithValue(ctx, writesKey{}, m), func() int64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.max
	}
}

// queryAll runs a query and scans each row with scan: the loop every
// list read would otherwise repeat.
func queryAll[T any](ctx context.Context, q Querier, scan func(sc interface{ Scan(...any) error }) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
