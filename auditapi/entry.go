package auditapi

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"enclave/storage"
)

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// Row kinds.
const (
	KindEntry      = "entry"
	KindCheckpoint = "checkpoint"
)

// Actor is who did something: a local user (with device, IP and user
// agent when known) or a remote server.
type Actor struct {
	UserID    string `json:"user_id,omitempty"`
	DeviceID  string `json:"device_id,omitempty"`
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	Server    string `json:"server,omitempty"`
	// AppService is the appservice that acted (as UserID, masquerading).
	AppService string `json:"appservice,omitempty"`
}

// Entry is one action to record. Details holds metadata only: never
// message plaintext, passwords, tokens or keys.
type Entry struct {
	Actor   Actor
	Action  string
	Target  string
	RoomID  string
	Outcome string // "" means OutcomeSuccess
	Details map[string]any
}

type actorKey struct{}

// WithActor returns ctx carrying the actor of the request being served;
// Record takes IP, user agent and device from it when an entry leaves them
// empty (and is about the same user, names no user, or the requester is
// not authenticated).
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor attached by WithActor.
func ActorFrom(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(Actor)
	return a, ok
}

// Field limits: values come from clients.
const (
	maxIPLen     = 64
	maxUALen     = 512
	maxFieldLen  = 1024
	maxDetailLen = 16 << 10
)

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// row builds the unsealed row for e at time now.
func row(ctx context.Context, e Entry, now time.Time) (*storage.AuditRow, error) {
	a := e.Actor
	// The request's address belongs to this entry when the entry is about
	// the requester, or the requester is not authenticated (login).
	if ca, ok := ActorFrom(ctx); ok && (a.UserID == "" || ca.UserID == "" || a.UserID == ca.UserID) {
		if a.UserID == "" {
			a.UserID = ca.UserID
		}
		if a.DeviceID == "" {
			a.DeviceID = ca.DeviceID
		}
		if a.IP == "" {
			a.IP = ca.IP
		}
		if a.UserAgent == "" {
			a.UserAgent = ca.UserAgent
		}
		if a.Server == "" {
			a.Server = ca.Server
		}
		if a.AppService == "" {
			a.AppService = ca.AppService
		}
	}
	// An appservice acting (as its sender or a masqueraded user) is named
	// in the details: the actor columns say only which user.
	if a.AppService != "" {
		d := make(map[string]any, len(e.Details)+1)
		maps.Copy(d, e.Details)
		d["appservice"] = a.AppService
		e.Details = d
	}
	if e.Action == "" {
		return nil, fmt.Errorf("audit: entry without action")
	}
	outcome := e.Outcome
	if outcome == "" {
		outcome = OutcomeSuccess
	}
	details := "{}"
	if len(e.Details) > 0 {
		b, err := json.Marshal(e.Details)
		if err != nil {
			return nil, fmt.Errorf("audit: details of %s: %w", e.Action, err)
		}
		if len(b) > maxDetailLen {
			b, _ = json.Marshal(map[string]any{"truncated": true, "size": len(b)})
		}
		details = string(b)
	}
	r := &storage.AuditRow{
		TS:          now.UnixMilli(),
		Kind:        KindEntry,
		ActorUser:   clip(a.UserID, maxFieldLen),
		ActorDevice: clip(a.DeviceID, maxFieldLen),
		ActorIP:     clip(a.IP, maxIPLen),
		ActorUA:     clip(a.UserAgent, maxUALen),
		ActorServer: clip(a.Server, maxFieldLen),
		Action:      clip(e.Action, maxFieldLen),
		Target:      clip(e.Target, maxFieldLen),
		RoomID:      clip(e.RoomID, maxFieldLen),
		Outcome:     clip(outcome, maxFieldLen),
		Details:     details,
	}
	r.EntryHash = EntryHash(r)
	return r, nil
}

// RecordDetached appends e with no Log open in this process (a
// command-line tool beside a stopped or running server): the entry is
// written now and chained by the server's next sealing pass.
func RecordDetached(ctx context.Context, q storage.Querier, e Entry) error {
	var l *Log
	return l.Record(ctx, q, e)
}

// Record appends e to the audit log through q. With a *storage.Tx it is
// part of that transaction (the normal case); with a *storage.DB it is
// written in a transaction of its own (for actions that change nothing,
// such as failed logins). Audit disabled in config makes it a no-op, and
// the sealer is woken once the entry commits. Components are given the
// process's Log by the assembly; a nil Log behaves as RecordDetached.
func (l *Log) Record(ctx context.Context, q storage.Querier, e Entry) error {
	db, tx := q.Store(), q.Txn()
	if l != nil && !l.opts.Enabled {
		return nil
	}
	r, err := row(ctx, e, time.Now())
	if err != nil {
		return err
	}
	if tx == nil && db != nil {
		return db.WithTx(ctx, func(tx *storage.Tx) error { return insert(ctx, tx, l, r) })
	}
	if tx == nil {
		if err := storage.InsertAuditRow(ctx, q, r, false); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		return nil
	}
	return insert(ctx, tx, l, r)
}

func insert(ctx context.Context, tx *storage.Tx, l *Log, r *storage.AuditRow) error {
	r.Pos = tx.NextPos("audit_log")
	if err := storage.InsertAuditRow(ctx, tx, r, false); err != nil {
		return fmt.Errorf("audit: writing %s entry: %w", r.Action, err)
	}
	if l != nil {
		tx.Publish(r.Pos, l.kick)
	}
	return nil
}

// GenesisHash is the previous hash of the first entry.
var GenesisHash = strings.Repeat("0", 64)

// EntryHash is the hex SHA-256 of a row's canonical encoding: a version
// tag, then each field as an 8-byte big-endian length and its bytes, in
// the order ts (decimal ms), kind, actor user, device, IP, user agent,
// server, action, target, room, outcome, details (the stored JSON text)
// and key ID. Chain fields (n, hashes, signature) are not part of it.
func EntryHash(r *storage.AuditRow) string {
	h := sha256.New()
	h.Write([]byte("enclave-audit-entry-v1"))
	var l [8]byte
	for _, f := range []string{strconv.FormatInt(r.TS, 10), r.Kind, r.ActorUser, r.ActorDevice, r.ActorIP, r.ActorUA, r.ActorServer,
		r.Action, r.Target, r.RoomID, r.Outcome, r.Details, r.KeyID} {
		binary.BigEndian.PutUint64(l[:], uint64(len(f)))
		h.Write(l[:])
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ChainHash links entry n (whose entry hash is entryHash) to the chain
// hash of entry n-1: hex SHA-256 of "enclave-audit-chain-v1", n, prev and
// entryHash separated by NUL bytes.
func ChainHash(n int64, prev, entryHash string) string {
	sum := sha256.Sum256([]byte("enclave-audit-chain-v1\x00" + strconv.FormatInt(n, 10) + "\x00" + prev + "\x00" + entryHash))
	return hex.EncodeToString(sum[:])
}

// checkpointMessage is what a checkpoint's signature covers.
func checkpointMessage(chainHash string) []byte {
	return []byte("enclave-audit-checkpoint-v1\x00" + chainHash)
}
