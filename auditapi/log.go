package auditapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/storage"
)

// Options configure a Log (from config.AuditConfig and the audit key).
type Options struct {
	Enabled    bool
	ServerName string
	// KeyID and Key are the audit signing key (never the federation key):
	// every checkpoint and head is signed with it. Required when enabled.
	KeyID string
	Key   ed25519.PrivateKey
	// LegacyKeyID and LegacyKey are the key earlier releases signed with
	// (the federation key): accepted once, at the first start after the
	// upgrade, for the last checkpoint and an old head file.
	LegacyKeyID        string
	LegacyKey          ed25519.PublicKey
	CheckpointEvery    int           // entries between checkpoints
	CheckpointInterval time.Duration // longest time between checkpoints while entries arrive
	HeadExportPath     string        // file the signed head is written to ("" = none)
	AnchorPath         string        // append-only JSONL file every head is appended to ("" = none)
	HeadSyslog         bool          // also send the head to syslog
	SyslogAddress      string        // "udp://HOST:PORT" or "tcp://HOST:PORT"; "" = the local daemon
}

// Log is the process's audit trail over one store: it seals committed
// entries into the chain, writes signed checkpoints and exports the head.
// One Log per store and process. The assembly hands it to the components
// that record (its Record method and hooks); the package-level Record
// still finds it through the store for callers not yet given it.
type Log struct {
	db   *storage.DB
	opts Options

	kickCh chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup

	metrics *logMetrics

	sealMu sync.Mutex // one sealing pass at a time
	syslog headSyslog
	anchor *anchorFile

	mu              sync.Mutex // guards the fields below
	n               int64
	hash            string
	sinceCheckpoint int64
	lastCheckpoint  time.Time
	headDirty       bool
	lastHeadWrite   time.Time
	closed          bool
}

// Open attaches an audit log to db, checks the chain's tail against the
// last exported head (refusing to go on over a log that was truncated or
// rewritten), seals what earlier runs (or other processes) left unsealed,
// checkpoints it and starts the sealer. Close it before closing the store.
func Open(ctx context.Context, db *storage.DB, opts Options) (*Log, error) {
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 1000
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 5 * time.Minute
	}
	if opts.Enabled && opts.Key == nil {
		return nil, errors.New("audit: no audit signing key (audit.signing_key or audit.signing_key_env)")
	}
	l := &Log{db: db, opts: opts, kickCh: make(chan struct{}, 1), done: make(chan struct{}), hash: GenesisHash, lastCheckpoint: time.Now(), metrics: newLogMetrics()}
	if a := opts.SyslogAddress; a != "" {
		l.syslog.network, l.syslog.addr, _ = strings.Cut(a, "://")
	}
	head, cpN, err := storage.AuditHead(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("audit: reading head: %w", err)
	}
	if opts.Key != nil {
		if err := l.checkTail(ctx, head, cpN); err != nil {
			return nil, err
		}
	}
	if head != nil {
		l.n, l.hash = head.N, head.ChainHash
		l.sinceCheckpoint = head.N - cpN
	}
	if opts.AnchorPath != "" {
		if l.anchor, err = openAnchorFile(opts.AnchorPath); err != nil {
			return nil, fmt.Errorf("audit: opening the anchor file audit.anchor_file %s: %w", opts.AnchorPath, err)
		}
	}
	// A checkpoint now covers whatever the last run left after its last
	// one (a crash skips the one Close writes).
	if err := l.Checkpoint(ctx); err != nil {
		l.anchor.close()
		return nil, err
	}
	l.wg.Add(1)
	go l.run()
	return l, nil
}

// Enabled reports whether entries are being recorded.
func (l *Log) Enabled() bool { return l.opts.Enabled }

// PublicKey is the key checkpoints and the head are signed with.
func (l *Log) PublicKey() (keyID string, pub ed25519.PublicKey) {
	if l.opts.Key == nil {
		return l.opts.KeyID, nil
	}
	return l.opts.KeyID, l.opts.Key.Public().(ed25519.PublicKey)
}

// kick asks the sealer to run (non-blocking; kicks coalesce).
func (l *Log) kick() {
	select {
	case l.kickCh <- struct{}{}:
	default:
	}
}

// sealTick is how often the sealer runs without being kicked: it picks up
// rows other processes wrote, time-based checkpoints and head exports.
const sealTick = time.Second

// sealDelay gathers the entries of concurrent transactions into one
// sealing transaction: without it a busy server would run a sealing
// write (and, on PostgreSQL, a WAL flush) for every action. Readers that
// need the chain current (the auditor API, export) seal first themselves.
const sealDelay = 250 * time.Millisecond

func (l *Log) run() {
	defer l.wg.Done()
	t := time.NewTicker(sealTick)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-l.kickCh:
			select {
			case <-l.done:
				return
			case <-time.After(sealDelay):
			}
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := l.seal(ctx, false); err != nil {
			logrus.WithError(err).Error("audit: sealing entries")
		}
		cancel()
	}
}

// Seal chains every committed entry now, so readers see them at once.
func (l *Log) Seal(ctx context.Context) error { return l.seal(ctx, false) }

// seal chains committed rows in batches, appending checkpoints as due.
// force writes the head export even if one was written recently.
func (l *Log) seal(ctx context.Context, force bool) error { return l.sealCheckpoint(ctx, force, false) }

// Flush seals every entry committed before the call and writes the head
// export now. An entry committed at a stream position above one still in
// flight in another transaction is not yet visible to the sealer: Flush
// first waits (at most flushWait) for every position handed out so far,
// so a reader that flushes (the auditor API, exports, tests) sees what
// was recorded before it asked.
func (l *Log) Flush(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, flushWait)
	err := l.db.Stream.Wait(wctx, l.db.Stream.Last())
	cancel()
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return l.seal(ctx, true)
}

// flushWait bounds how long Flush waits for other transactions to end
// (a long one only delays its own entries to the next pass).
const flushWait = 5 * time.Second

// Checkpoint seals what is committed and appends a checkpoint now (if
// anything was appended since the last one).
func (l *Log) Checkpoint(ctx context.Context) error { return l.sealCheckpoint(ctx, true, true) }

// Close stops the sealer after a last pass that seals everything, writes
// a final checkpoint and exports the head.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.done)
	l.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := l.Checkpoint(ctx)
	l.syslog.close()
	l.anchor.close()
	return err
}

const sealBatch = 500

// foreignGrace is how long an entry above the stream's watermark waits
// before it is chained anyway (see sealCheckpoint).
const foreignGrace = 3 * time.Second

// sealCheckpoint is seal that, with final, ends on a checkpoint whatever
// the count and time since the last one (Close, and Open after a crash).
func (l *Log) sealCheckpoint(ctx context.Context, force, final bool) error {
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	for {
		// Rows at or below the watermark are committed in position order.
		// Rows above it are either this process's, committing out of
		// order (left for a moment, so the chain follows positions), or
		// another process's (the command line's: `enclave user role` on a
		// running server), whose positions this stream never reaches on
		// an idle server: those are chained once foreignGrace old. After
		// the last writer (Close) or before the first (Open) everything
		// committed is chained.
		wm := l.db.Stream.Current()
		if final {
			wm = math.MaxInt64
		}
		rows, err := storage.UnsealedAuditRows(ctx, l.db, wm, time.Now().Add(-foreignGrace).UnixMilli(), sealBatch)
		if err != nil {
			return fmt.Errorf("audit: reading unsealed entries: %w", err)
		}
		l.mu.Lock()
		n, hash, since, lastCP := l.n, l.hash, l.sinceCheckpoint, l.lastCheckpoint
		l.mu.Unlock()
		cpDue := func() bool {
			return since > 0 && (final || since >= int64(l.opts.CheckpointEvery) || time.Since(lastCP) >= l.opts.CheckpointInterval)
		}
		if len(rows) == 0 {
			l.metrics.lag.Set(0)
			if !cpDue() {
				break
			}
		} else {
			l.metrics.lag.Set(max(0, time.Since(time.UnixMilli(rows[0].TS)).Seconds()))
		}
		checkpointed, checkpoints := false, 0
		err = l.db.WithTx(ctx, func(tx *storage.Tx) error {
			checkpoints = 0
			// Links go out in one statement per run of rows between checkpoints.
			var links []storage.AuditSeal
			flush := func() error {
				c, err := storage.SealAuditRows(ctx, tx, links)
				if err == nil && c != int64(len(links)) {
					err = fmt.Errorf("%d of %d entries were sealed concurrently (is another server process using this store?)", int64(len(links))-c, len(links))
				}
				links = links[:0]
				return err
			}
			for _, r := range rows {
				n++
				ch := ChainHash(n, hash, r.EntryHash)
				links = append(links, storage.AuditSeal{ID: r.ID, N: n, PrevHash: hash, ChainHash: ch})
				hash = ch
				since++
				if since >= int64(l.opts.CheckpointEvery) {
					if err := flush(); err != nil {
						return err
					}
					var err error
					if n, hash, err = l.writeCheckpoint(ctx, tx, n, hash, since); err != nil {
						return err
					}
					since, lastCP, checkpointed = 0, time.Now(), true
					checkpoints++
				}
			}
			if err := flush(); err != nil {
				return err
			}
			if cpDue() {
				var err error
				if n, hash, err = l.writeCheckpoint(ctx, tx, n, hash, since); err != nil {
					return err
				}
				since, lastCP, checkpointed = 0, time.Now(), true
				checkpoints++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("audit: sealing: %w", err)
		}
		l.metrics.sealed.Add(float64(len(rows)))
		l.metrics.checkpoints.Add(float64(checkpoints))
		l.mu.Lock()
		l.n, l.hash, l.sinceCheckpoint, l.lastCheckpoint = n, hash, since, lastCP
		l.headDirty = true
		l.mu.Unlock()
		if checkpointed {
			force = true
		}
		if len(rows) < sealBatch {
			break
		}
	}
	return l.exportHead(force)
}

// writeCheckpoint appends a signed checkpoint after entry n (chain hash
// hash) and returns the new head.
func (l *Log) writeCheckpoint(ctx context.Context, tx *storage.Tx, n int64, hash string, entries int64) (int64, string, error) {
	details, _ := json.Marshal(map[string]any{"covers_n": n, "covers_hash": hash, "entries": entries})
	r := &storage.AuditRow{
		TS:          time.Now().UnixMilli(),
		Kind:        KindCheckpoint,
		ActorServer: l.opts.ServerName,
		Action:      ActionCheckpoint,
		Outcome:     OutcomeSuccess,
		Details:     string(details),
		KeyID:       l.opts.KeyID,
	}
	r.EntryHash = EntryHash(r)
	r.N = n + 1
	r.PrevHash = hash
	r.ChainHash = ChainHash(r.N, hash, r.EntryHash)
	if l.opts.Key != nil {
		r.Signature = base64.RawStdEncoding.EncodeToString(ed25519.Sign(l.opts.Key, checkpointMessage(r.ChainHash)))
	}
	if err := storage.InsertAuditRow(ctx, tx, r, true); err != nil {
		return 0, "", err
	}
	return r.N, r.ChainHash, nil
}

// Head is the signed summary of the chain's end that is exported off the
// database, so that truncating the log's tail is detectable.
type Head struct {
	ServerName string `json:"server_name"`
	KeyID      string `json:"key_id"`
	PublicKey  string `json:"public_key,omitempty"`
	N          int64  `json:"n"`
	ChainHash  string `json:"chain_hash"`
	TS         int64  `json:"ts"`
	Signature  string `json:"signature,omitempty"`
}

func headMessage(h *Head) []byte {
	return []byte("enclave-audit-head-v1\x00" + h.ServerName + "\x00" + strconv.FormatInt(h.N, 10) + "\x00" + h.ChainHash + "\x00" + strconv.FormatInt(h.TS, 10))
}

// CurrentHead returns the signed head as sealed so far.
func (l *Log) CurrentHead() *Head {
	l.mu.Lock()
	h := &Head{ServerName: l.opts.ServerName, KeyID: l.opts.KeyID, N: l.n, ChainHash: l.hash, TS: time.Now().UnixMilli()}
	l.mu.Unlock()
	if l.opts.Key != nil {
		h.PublicKey = base64.RawStdEncoding.EncodeToString(l.opts.Key.Public().(ed25519.PublicKey))
		h.Signature = base64.RawStdEncoding.EncodeToString(ed25519.Sign(l.opts.Key, headMessage(h)))
	}
	return h
}

// VerifyHead checks a head's signature.
func VerifyHead(h *Head, pub ed25519.PublicKey) error {
	sig, err := base64.RawStdEncoding.DecodeString(h.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("head signature is malformed")
	}
	if !ed25519.Verify(pub, headMessage(h), sig) {
		return errors.New("head signature does not verify")
	}
	return nil
}

// headWriteEvery bounds how often the head file is rewritten: the tail
// written in the last second before a truncation may go unnoticed.
const headWriteEvery = time.Second

func (l *Log) exportHead(force bool) error {
	if l.opts.HeadExportPath == "" && !l.opts.HeadSyslog && l.anchor == nil {
		return nil
	}
	l.mu.Lock()
	due := l.headDirty && (force || time.Since(l.lastHeadWrite) >= headWriteEvery)
	l.mu.Unlock()
	if !due {
		return nil
	}
	h := l.CurrentHead()
	// The on-host file first, then the anchor: a crash in between leaves the
	// anchor behind the file, never ahead of it.
	if l.opts.HeadExportPath != "" {
		b, _ := json.MarshalIndent(h, "", "  ")
		if err := writeAtomic(l.opts.HeadExportPath, append(b, '\n')); err != nil {
			return fmt.Errorf("audit: exporting head to %s: %w", l.opts.HeadExportPath, err)
		}
	}
	if l.anchor != nil {
		if err := l.anchor.append(h); err != nil {
			return fmt.Errorf("audit: appending the head to the anchor %s: %w", l.anchor.path, err)
		}
	}
	if l.opts.HeadSyslog {
		l.syslog.send(h)
	}
	l.mu.Lock()
	l.headDirty = false
	l.lastHeadWrite = time.Now()
	l.mu.Unlock()
	return nil
}

// ReadHead reads an exported head file.
func ReadHead(path string) (*Head, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var h Head
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("audit head %s: %w", path, err)
	}
	return &h, nil
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".head-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// SigningKey is the key exports are signed with (nil if none).
func (l *Log) SigningKey() ed25519.PrivateKey { return l.opts.Key }
