package auditapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"enclave/storage"
)

// Break is the first place the chain, an entry or a checkpoint fails
// verification.
type Break struct {
	N      int64  `json:"n"`            // chain index of the offending entry
	ID     int64  `json:"id,omitempty"` // its row ID, when read from the store
	Reason string `json:"reason"`
}

func (b *Break) Error() string {
	if b.ID != 0 {
		return fmt.Sprintf("audit chain broken at entry %d (row id %d): %s", b.N, b.ID, b.Reason)
	}
	return fmt.Sprintf("audit chain broken at entry %d: %s", b.N, b.Reason)
}

// Result is the outcome of a verification.
type Result struct {
	Verified    int64  `json:"verified"`     // entries checked (checkpoints included)
	FirstN      int64  `json:"first_n"`      // first chain index checked
	LastN       int64  `json:"last_n"`       // last chain index checked
	LastHash    string `json:"last_hash"`    // chain hash of LastN
	Checkpoints int64  `json:"checkpoints"`  // signed checkpoints verified
	Unsealed    int64  `json:"unsealed"`     // rows not yet chained (store only)
	HeadChecked bool   `json:"head_checked"` // an exported head was compared
	// AnchorN is the entry of the newest exported head the chain was found
	// to hold (0: none compared).
	AnchorN int64  `json:"anchor_n,omitempty"`
	Break   *Break `json:"break,omitempty"`
}

// OK reports whether nothing failed.
func (r *Result) OK() bool { return r.Break == nil }

func (r *Result) String() string {
	if r.Break != nil {
		return r.Break.Error()
	}
	s := fmt.Sprintf("verified %d entries", r.Verified)
	if r.Verified > 0 {
		s += fmt.Sprintf(" (n %d..%d, %d signed checkpoints", r.FirstN, r.LastN, r.Checkpoints)
		if r.HeadChecked {
			s += ", head matches"
		}
		s += ")"
	}
	if r.Unsealed > 0 {
		s += fmt.Sprintf("; %d newer entries not yet sealed into the chain", r.Unsealed)
	}
	return s
}

// checkpointGrace is how far the entries between two checkpoints may
// spread beyond one checkpoint interval (commit delays, clock steps).
const checkpointGrace = time.Minute

// Verifier checks rows one at a time, in chain order.
type Verifier struct {
	pub   ed25519.PublicKey
	keyID string
	// legacy is a key earlier releases signed checkpoints with, accepted
	// until the first checkpoint signed with the audit key.
	legacyID  string
	legacy    ed25519.PublicKey
	seenAudit bool
	// fromStart requires the first row to be entry 1 on the genesis hash;
	// partial exports start anywhere and trust their first prev_hash.
	fromStart bool
	started   bool
	next      int64
	prev      string
	heads     []*Head
	// interval, when set, fails a stretch of entries without a checkpoint
	// whose timestamps span more than one checkpoint interval.
	interval         time.Duration
	spanFrom, spanTo int64
	spanSet          bool
	res              Result
}

// NewVerifier checks checkpoints against pub (keyID as the server names
// it). With fromStart the chain must begin at entry 1.
func NewVerifier(keyID string, pub ed25519.PublicKey, fromStart bool) *Verifier {
	return &Verifier{pub: pub, keyID: keyID, fromStart: fromStart}
}

// ExpectHead makes the verifier compare the chain with an exported head
// (several may be given: the chain must hold each).
func (v *Verifier) ExpectHead(h *Head) {
	if h != nil {
		v.heads = append(v.heads, h)
	}
}

// AllowLegacy accepts checkpoints signed with an earlier release's key
// (the federation key) until the first one signed with the audit key.
func (v *Verifier) AllowLegacy(keyID string, pub ed25519.PublicKey) {
	v.legacyID, v.legacy = keyID, pub
}

// RequireCheckpoints makes a stretch of entries with no checkpoint that
// spans more than interval (plus a grace) a failure: the sealer never
// leaves one, so checkpoints were dropped or demoted.
func (v *Verifier) RequireCheckpoints(interval time.Duration) { v.interval = interval }

// detached reports whether r was written by the command line, possibly
// while no server ran (sealed, and checkpointed, at the next start).
func detached(r *storage.AuditRow) bool { return strings.HasPrefix(r.ActorUA, cliUserAgent) }

// cliUserAgent starts the user agent of entries the command line writes.
const cliUserAgent = "enclave-cli"

// Add checks the next row; after a break it returns the first break again.
func (v *Verifier) Add(r *storage.AuditRow) *Break {
	if v.res.Break != nil {
		return v.res.Break
	}
	fail := func(format string, args ...any) *Break {
		v.res.Break = &Break{N: r.N, ID: r.ID, Reason: fmt.Sprintf(format, args...)}
		return v.res.Break
	}
	if !v.started {
		v.started = true
		v.res.FirstN = r.N
		switch {
		case v.fromStart && r.N != 1:
			return fail("the log starts at entry %d: entries 1..%d are missing", r.N, r.N-1)
		case v.fromStart || r.N == 1:
			v.prev = GenesisHash
		default:
			v.prev = r.PrevHash
		}
		v.next = r.N
	}
	if r.N != v.next {
		if r.N > v.next {
			// Name the first missing entry, not the one after the gap.
			v.res.Break = &Break{N: v.next, Reason: fmt.Sprintf("entries %d..%d are missing (deleted, or their chain index was changed); entry %d (row id %d) follows entry %d", v.next, r.N-1, r.N, r.ID, v.next-1)}
			return v.res.Break
		}
		return fail("expected entry %d next: entry %d appears again or out of order", v.next, r.N)
	}
	if got := EntryHash(r); got != r.EntryHash {
		return fail("content does not match its entry hash (the row was edited)")
	}
	if r.PrevHash != v.prev {
		return fail("previous-hash link does not match entry %d's chain hash (an entry was removed, inserted or reordered before it)", r.N-1)
	}
	if want := ChainHash(r.N, r.PrevHash, r.EntryHash); want != r.ChainHash {
		return fail("chain hash does not match (the row was edited or moved)")
	}
	if r.Kind == KindCheckpoint {
		if v.pub == nil {
			return fail("checkpoint cannot be verified: no public key given")
		}
		pub := v.pub
		switch {
		case v.keyID == "" || r.KeyID == v.keyID:
			v.seenAudit = true
		case v.legacy != nil && (v.legacyID == "" || r.KeyID == v.legacyID) && !v.seenAudit:
			pub = v.legacy
		default:
			return fail("checkpoint signed with key %q, but the audit key is %q (re-signed with another key, e.g. the federation key)", r.KeyID, v.keyID)
		}
		sig, err := base64.RawStdEncoding.DecodeString(r.Signature)
		if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, checkpointMessage(r.ChainHash), sig) {
			return fail("checkpoint signature does not verify with the audit key")
		}
		v.res.Checkpoints++
		v.spanSet = false
	} else if r.Kind != KindEntry {
		return fail("unknown row kind %q", r.Kind)
	} else if r.Action == ActionServerStart {
		// Logs of earlier releases have no checkpoint at start after a crash.
		v.spanSet = false
	} else if v.interval > 0 && !detached(r) {
		if !v.spanSet {
			v.spanFrom, v.spanTo, v.spanSet = r.TS, r.TS, true
		}
		v.spanFrom, v.spanTo = min(v.spanFrom, r.TS), max(v.spanTo, r.TS)
		if span := time.Duration(v.spanTo-v.spanFrom) * time.Millisecond; span > v.interval+checkpointGrace {
			return fail("no checkpoint over %s of entries, more than one checkpoint interval (%s): checkpoints were dropped or demoted", span.Round(time.Second), v.interval)
		}
	}
	for _, h := range v.heads {
		if r.N == h.N {
			v.res.HeadChecked = true
			if r.ChainHash != h.ChainHash {
				return fail("chain hash differs from the exported head's (the log was rewritten)")
			}
			v.res.AnchorN = max(v.res.AnchorN, h.N)
		}
	}
	v.prev = r.ChainHash
	v.next = r.N + 1
	v.res.Verified++
	v.res.LastN = r.N
	v.res.LastHash = r.ChainHash
	return nil
}

// Finish ends verification and returns the result (with truncation against
// the expected heads checked).
func (v *Verifier) Finish() *Result {
	for _, h := range v.heads {
		if v.res.Break == nil && h.N > v.res.LastN {
			v.res.Break = &Break{N: v.res.LastN + 1, Reason: fmt.Sprintf("the log ends at entry %d but the exported head records entry %d (hash %s): the chain is shorter than the exported head (tail truncated or log wiped)", v.res.LastN, h.N, h.ChainHash)}
		}
	}
	if v.res.Break == nil && len(v.heads) > 0 {
		v.res.HeadChecked = true
	}
	r := v.res
	return &r
}

// VerifyOptions select what VerifyStoreWith checks against.
type VerifyOptions struct {
	Keys Keys
	// Heads are exported heads (on-host file, anchors): each must verify
	// with the audit key and be held by the chain. The caller reads them.
	Heads []*Head
	// CheckpointInterval, when set, fails stretches without checkpoints
	// longer than it (see Verifier.RequireCheckpoints).
	CheckpointInterval time.Duration
	// AllowLegacy accepts checkpoints signed with Keys.Legacy before the
	// first one signed with the audit key (logs of earlier releases).
	AllowLegacy bool
}

// VerifyStore walks the whole chain in the store. head, when given (the
// exported head file), must be signed by pub and match the chain; a log
// that ends before it was truncated.
func VerifyStore(ctx context.Context, db storage.Querier, keyID string, pub ed25519.PublicKey, head *Head) (*Result, error) {
	o := VerifyOptions{Keys: Keys{KeyID: keyID, Pub: pub}}
	if head != nil {
		o.Heads = []*Head{head}
	}
	return VerifyStoreWith(ctx, db, o)
}

// VerifyStoreWith walks the whole chain in the store against o.
func VerifyStoreWith(ctx context.Context, db storage.Querier, o VerifyOptions) (*Result, error) {
	v := NewVerifier(o.Keys.KeyID, o.Keys.Pub, true)
	if o.AllowLegacy {
		v.AllowLegacy(o.Keys.LegacyID, o.Keys.Legacy)
	}
	v.RequireCheckpoints(o.CheckpointInterval)
	for _, h := range o.Heads {
		if o.Keys.Pub != nil {
			if err := o.Keys.verifyHead(h, o.AllowLegacy); err != nil {
				return &Result{Break: &Break{N: h.N, Reason: "exported head: " + err.Error()}}, nil
			}
		}
		v.ExpectHead(h)
	}
	errStop := fmt.Errorf("stop")
	err := storage.EachAuditRow(ctx, db, 1, 0, func(r *storage.AuditRow) error {
		if v.Add(r) != nil {
			return errStop
		}
		return nil
	})
	if err != nil && err != errStop {
		return nil, err
	}
	res := v.Finish()
	unsealed, err := storage.CountUnsealedAudit(ctx, db)
	if err != nil {
		return nil, err
	}
	res.Unsealed = unsealed
	return res, nil
}
