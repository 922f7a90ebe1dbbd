package auditapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"

	"github.com/sirupsen/logrus"

	"enclave/storage"
)

// ErrChainMismatch is wrapped by Open's error when the store's chain does
// not verify against its last checkpoint or the last exported head.
var ErrChainMismatch = errors.New("the audit log does not match its last exported head")

// checkTail runs before anything new is sealed or signed: it verifies the
// chain from the last checkpoint (or the last exported head, if older) to
// its end, and that it still holds the last exported head. Signing a head
// over a chain that fails would launder a truncation or a rewrite into a
// head that verifies, so Open fails instead and an operator must act.
func (l *Log) checkTail(ctx context.Context, head *storage.AuditRow, cpN int64) error {
	keys := Keys{KeyID: l.opts.KeyID, Pub: l.opts.Key.Public().(ed25519.PublicKey), LegacyID: l.opts.LegacyKeyID, Legacy: l.opts.LegacyKey}
	exp, src, legacyOK, err := l.lastExported(keys)
	if err != nil {
		return fmt.Errorf("refusing to start: %w: %w; operator action needed: keep the file as evidence, run `enclave audit verify`, and restore the file or move it aside to start a new anchor", ErrChainMismatch, err)
	}
	storeN := int64(0)
	if head != nil {
		storeN = head.N
	}
	if exp == nil && storeN > 0 {
		logrus.WithField("n", storeN).Warn("audit: no exported head to check the audit log against (audit.anchor_file, audit.head_export_path): truncation or rewrite before now cannot be ruled out; anchoring starts now")
	}
	refuse := func(why string) error {
		return fmt.Errorf("refusing to start and sign a new head: %w: %s (last exported head: entry %d, chain hash %s, in %s). "+
			"The log was truncated or rewritten after that head was exported. Operator action needed: keep the database and %s as evidence, "+
			"run `enclave audit verify --data DIR --anchor %s` to find the break, then restore the database from a backup that matches the head; "+
			"only if the loss is understood and recorded, move %s aside to start a new anchor",
			ErrChainMismatch, why, expN(exp), expHash(exp), src, src, src, src)
	}
	if exp != nil && exp.N > storeN {
		if storeN == 0 {
			return refuse("the store holds no sealed audit entries (the log was wiped)")
		}
		return refuse(fmt.Sprintf("the store's chain ends at entry %d, before the exported head's", storeN))
	}
	if head == nil {
		return nil
	}
	from := cpN
	if exp != nil && (from == 0 || exp.N < from) {
		from = exp.N
	}
	from = max(from, 1)
	v := NewVerifier(keys.KeyID, keys.Pub, from == 1)
	if legacyOK {
		v.AllowLegacy(keys.LegacyID, keys.Legacy)
	}
	if exp != nil {
		v.ExpectHead(exp)
	}
	errStop := errors.New("stop")
	if err := storage.EachAuditRow(ctx, l.db, from, 0, func(r *storage.AuditRow) error {
		if v.Add(r) != nil {
			return errStop
		}
		return nil
	}); err != nil && err != errStop {
		return fmt.Errorf("audit: reading the log's tail: %w", err)
	}
	res := v.Finish()
	if res.OK() {
		return nil
	}
	if exp == nil {
		return fmt.Errorf("refusing to start and sign a new head: %w: the tail since the last checkpoint does not verify: %s. "+
			"Operator action needed: keep the database as evidence, run `enclave audit verify`, and restore the database from a backup",
			ErrChainMismatch, res.Break)
	}
	return refuse(res.Break.Error())
}

func expN(h *Head) int64 {
	if h == nil {
		return 0
	}
	return h.N
}

func expHash(h *Head) string {
	if h == nil {
		return ""
	}
	return h.ChainHash
}

// lastExported finds the newest head exported for this server: the
// anchor file's last head, else the on-host head file's (which, unlike the
// anchor, may still be signed with the legacy key: legacyOK).
func (l *Log) lastExported(keys Keys) (h *Head, src string, legacyOK bool, err error) {
	if p := l.opts.AnchorPath; p != "" {
		a, err := ReadAnchor(p, l.opts.ServerName, keys, false)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, p, false, err
		}
		if a != nil && a.Head != nil {
			return a.Head, p, false, nil
		}
	}
	if p := l.opts.HeadExportPath; p != "" {
		a, err := ReadAnchor(p, l.opts.ServerName, keys, true)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, p, true, err
		}
		if a != nil && a.Head != nil {
			return a.Head, p, true, nil
		}
	}
	return nil, "", true, nil
}
