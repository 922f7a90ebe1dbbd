package test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/server"
	"enclave/storage"
)

// Issue 11 §1: an attacker with write access to the database edits,
// deletes, swaps, truncates, wipes or consistently rewrites the audit log
// (recomputing the unkeyed hashes, dropping checkpoints), or re-signs it
// with the federation key from the data directory. Each attack must be
// caught by `enclave audit verify` given the exported head (the anchor),
// and those that touch the tail by the server at start, which then
// refuses to sign a head over the forged chain.
func TestAuditAttacks(t *testing.T) {
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dataDir := t.TempDir()
		opts := Options{DataDir: dataDir, Configure: func(c *config.Config) { c.Audit.CheckpointEvery = 5 }}
		srv := Start(t, d, opts)
		opts.DBURL = srv.DBURL
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		room := mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", alice.AccessToken, map[string]any{})).Body["room_id"].(string)
		for i := range 12 {
			mustOK(t, "send", raw(t, "PUT", cs(srv.URL)+"/rooms/"+url.PathEscape(room)+"/send/m.room.message/m"+fmt.Sprint(i), alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "hi"}))
			if i == 3 {
				if err := srv.Audit.Flush(context.Background()); err != nil { // an earlier head in the anchor
					t.Fatal(err)
				}
			}
		}
		auditKeyID, _ := srv.Audit.PublicKey()
		fedKey := srv.Key
		srv.Stop()
		if _, _, err := config.EnsureDataDir(dataDir); err != nil { // as serve's first start leaves it
			t.Fatal(err)
		}
		anchor := dataDir + ".audit-anchor.jsonl" // the default audit.anchor_file
		if _, err := os.Stat(anchor); err != nil {
			t.Fatalf("no anchor written by default: %v", err)
		}

		ctx := context.Background()
		db, err := storage.Open(ctx, opts.DBURL, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		orig := allAuditRows(t, db)
		last := orig[len(orig)-1]
		if last.Kind != auditapi.KindCheckpoint {
			t.Fatalf("the log does not end with the checkpoint Close writes: %+v", last)
		}
		restore := func() {
			t.Helper()
			writeAuditRows(t, db, orig)
		}
		verify := func(args ...string) (string, error) {
			t.Helper()
			cmd := exec.Command(bin, append([]string{"audit", "verify", "--data", dataDir}, args...)...)
			cmd.Env = append(os.Environ(), "ENCLAVE_DATABASE_URL="+opts.DBURL, "ENCLAVE_LOG_LEVEL=error")
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		startErr := func() error {
			t.Helper()
			s, err := server.New(ctx, TestConfig(t, d, opts))
			if err == nil {
				_ = s.Shutdown(ctx)
			}
			return err
		}

		// Untouched: anchored, by the default anchor and by an explicit one.
		for _, args := range [][]string{nil, {"--anchor", anchor}} {
			if out, err := verify(args...); err != nil || !strings.Contains(out, "anchored: the chain holds the exported head of entry "+fmt.Sprint(last.N)) {
				t.Fatalf("untouched log %v: %v\n%s", args, err, out)
			}
		}
		// Without an anchor it is no proof: non-zero unless accepted.
		noAnchor := []string{"ENCLAVE_AUDIT_ANCHOR_FILE=none"}
		if out, err := verifyEnv(bin, dataDir, opts.DBURL, noAnchor); err == nil || !strings.Contains(out, "truncation and rewrite cannot be ruled out") {
			t.Fatalf("unanchored verify passed: %v\n%s", err, out)
		}
		if out, err := verifyEnv(bin, dataDir, opts.DBURL, noAnchor, "--allow-unanchored"); err != nil || !strings.Contains(out, "UNANCHORED") {
			t.Fatalf("--allow-unanchored: %v\n%s", err, out)
		}
		restore() // drops the entries the verifications recorded

		const victim = 9
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.ExecContext(ctx, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		resign := func(rows []*storage.AuditRow, key ed25519.PrivateKey, keyID string) {
			for _, r := range rows {
				if r.Kind == auditapi.KindCheckpoint {
					r.KeyID = keyID
				}
			}
			rechain(rows)
			for _, r := range rows {
				if r.Kind == auditapi.KindCheckpoint {
					r.Signature = base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, []byte("enclave-audit-checkpoint-v1\x00"+r.ChainHash)))
				}
			}
		}
		attacks := []struct {
			name   string
			do     func()
			reason string // in verify's output
			atTail bool   // the server refuses to start
		}{
			{"edit", func() { exec(`UPDATE audit_log SET details = $1 WHERE n = $2`, `{"forged":true}`, victim) }, "was edited", false},
			{"delete", func() { exec(`DELETE FROM audit_log WHERE n = $1`, victim) }, "are missing", false},
			{"swap", func() {
				exec(`UPDATE audit_log SET n = -1 WHERE n = $1`, victim)
				exec(`UPDATE audit_log SET n = $1 WHERE n = $2`, victim, victim+1)
				exec(`UPDATE audit_log SET n = $1 WHERE n = -1`, victim+1)
			}, "broken at entry 9", false},
			{"tail truncation", func() { exec(`DELETE FROM audit_log WHERE n > $1`, last.N-4) }, "shorter than the exported head", true},
			{"full wipe", func() { exec(`DELETE FROM audit_log`) }, "shorter than the exported head", true},
			{"consistent rewrite", func() {
				// Forge one entry, drop every checkpoint, recompute the chain.
				var rows []*storage.AuditRow
				for _, r := range cloneRows(orig) {
					if r.Kind == auditapi.KindCheckpoint {
						continue
					}
					if r.N == victim {
						r.Details = `{"forged":true}`
					}
					rows = append(rows, r)
				}
				rechain(rows)
				writeAuditRows(t, db, rows)
			}, "exported head", true},
			{"re-sign with the federation key", func() {
				rows := cloneRows(orig)
				rows[victim-1].Details = `{"forged":true}`
				resign(rows, fedKey, auditKeyID)
				writeAuditRows(t, db, rows)
			}, "audit key", true},
			{"re-sign the last checkpoint with the federation key", func() {
				rows := cloneRows(orig)
				resign(rows, fedKey, auditKeyID)
				writeAuditRows(t, db, rows)
			}, "audit key", true},
		}
		for _, a := range attacks {
			a.do()
			out, err := verify("--anchor", anchor)
			if err == nil || !strings.Contains(out, a.reason) {
				t.Errorf("%s: verify with the anchor: want a failure naming %q, got %v\n%s", a.name, a.reason, err, out)
			} else {
				t.Logf("%s: %s", a.name, strings.TrimSpace(out))
			}
			if a.atTail {
				err := startErr()
				if err == nil || !errors.Is(err, auditapi.ErrChainMismatch) || !strings.Contains(err.Error(), "Operator action needed") {
					t.Errorf("%s: the server started over the forged log: %v", a.name, err)
				} else {
					t.Logf("%s at start: %v", a.name, err)
				}
			}
			restore()
		}

		// The federation key cannot stand in for the audit key even with
		// the anchor out of reach: checkpoints re-signed with it fail
		// unanchored verification too.
		rows := cloneRows(orig)
		resign(rows, fedKey, auditKeyID)
		writeAuditRows(t, db, rows)
		if out, err := verifyEnv(bin, dataDir, opts.DBURL, noAnchor, "--allow-unanchored"); err == nil || !strings.Contains(out, "audit key") {
			t.Errorf("re-signed log passed unanchored verification: %v\n%s", err, out)
		}
		// A rewrite without checkpoints over more than one checkpoint
		// interval fails even unanchored.
		rows = nil
		for i, r := range cloneRows(orig) {
			if r.Kind == auditapi.KindCheckpoint {
				continue
			}
			r.TS = orig[0].TS + int64(i)*int64(time.Minute/time.Millisecond)
			rows = append(rows, r)
		}
		rechain(rows)
		writeAuditRows(t, db, rows)
		if out, err := verifyEnv(bin, dataDir, opts.DBURL, noAnchor, "--allow-unanchored"); err == nil || !strings.Contains(out, "no checkpoint over") {
			t.Errorf("checkpoint-free rewrite passed unanchored verification: %v\n%s", err, out)
		}
		// An on-host head file rolled back behind the anchor.
		restore()
		old := filepath.Join(t.TempDir(), "old-head.json")
		oldHead := firstHead(t, anchor)
		if err := os.WriteFile(old, []byte(oldHead), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := verify("--anchor", anchor, "--head", old); err == nil || !strings.Contains(out, "older than the last exported one") {
			t.Errorf("rolled-back head file: %v\n%s", err, out)
		}

		// Restored, the log verifies and the server starts over it again.
		restore()
		if out, err := verify("--anchor", anchor); err != nil {
			t.Fatalf("restored log: %v\n%s", err, out)
		}
		if err := startErr(); err != nil {
			t.Fatalf("restored log: start: %v", err)
		}
	})
}

func verifyEnv(bin, dataDir, dbURL string, env []string, args ...string) (string, error) {
	cmd := exec.Command(bin, append([]string{"audit", "verify", "--data", dataDir}, args...)...)
	cmd.Env = append(append(os.Environ(), "ENCLAVE_DATABASE_URL="+dbURL, "ENCLAVE_LOG_LEVEL=error"), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// firstHead returns the first head line of an anchor file.
func firstHead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		t.Fatalf("anchor %s has %d heads", path, len(lines))
	}
	return lines[0]
}

func allAuditRows(t *testing.T, db *storage.DB) []*storage.AuditRow {
	t.Helper()
	rows, err := storage.ListAuditRows(context.Background(), db, storage.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 20 {
		t.Fatalf("only %d audit rows", len(rows))
	}
	return rows
}

func cloneRows(rows []*storage.AuditRow) []*storage.AuditRow {
	out := make([]*storage.AuditRow, len(rows))
	for i, r := range rows {
		c := *r
		out[i] = &c
	}
	return out
}

// rechain renumbers rows densely from 1 and recomputes every hash, as an
// attacker with the (unkeyed) hash functions can.
func rechain(rows []*storage.AuditRow) {
	prev := auditapi.GenesisHash
	for i, r := range rows {
		r.N = int64(i + 1)
		r.EntryHash = auditapi.EntryHash(r)
		r.PrevHash = prev
		r.ChainHash = auditapi.ChainHash(r.N, prev, r.EntryHash)
		prev = r.ChainHash
	}
}

// writeAuditRows replaces the whole audit log with rows.
func writeAuditRows(t *testing.T, db *storage.DB, rows []*storage.AuditRow) {
	t.Helper()
	ctx := context.Background()
	err := db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_log`); err != nil {
			return err
		}
		for _, r := range rows {
			if err := storage.InsertAuditRow(ctx, tx, r, true); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The audit key is not the federation key, lives outside the data
// directory by default, is warned about inside it, and every key
// operation — generated at start, `generate-keys`, `keys rotate` — is in
// the audit log.
func TestAuditKeySeparation(t *testing.T) {
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dataDir := t.TempDir()
		srv := Start(t, d, Options{DataDir: dataDir})
		keyID, pub := srv.Audit.PublicKey()
		if keyID == srv.KeyID || pub.Equal(srv.Key.Public()) {
			t.Fatal("the audit log is signed with the federation key")
		}
		if _, err := os.Stat(dataDir + ".audit.key"); err != nil {
			t.Fatalf("audit key not beside the data directory: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "audit.key")); err == nil {
			t.Fatal("audit key inside the data directory by default")
		}
		dbURL := srv.DBURL
		srv.Stop()
		if _, _, err := config.EnsureDataDir(dataDir); err != nil {
			t.Fatal(err)
		}

		for _, args := range [][]string{
			{"generate-keys", "--data", dataDir, "--force"},
			{"keys", "rotate", "--data", dataDir},
		} {
			if out, err := mediaRunEnclave(bin, dbURL, nil, args...); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
		}
		// Inside the data directory: warned about at start.
		hook := logtest.NewGlobal()
		defer hook.Reset()
		inside := filepath.Join(dataDir, "inside-audit.key")
		keyFile, err := os.ReadFile(dataDir + ".audit.key")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(inside, keyFile, 0o600); err != nil {
			t.Fatal(err)
		}
		srv = Start(t, d, Options{DataDir: dataDir, DBURL: dbURL, Configure: func(c *config.Config) { c.Audit.SigningKey = inside }})
		warned := false
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "audit signing key lies inside the data directory") {
				warned = true
			}
		}
		if !warned {
			t.Error("no warning for an audit key inside the data directory")
		}
		if err := srv.Audit.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range auditRows(t, srv) {
			if strings.HasPrefix(r.Action, "keys.server_") || strings.HasPrefix(r.Action, "keys.audit_") || strings.HasPrefix(r.Action, "keys.media_") {
				got = append(got, r.Action+"/"+r.Outcome+"/"+details(t, r)["op"].(string))
			}
		}
		want := []string{"keys.server_signing_key/success/generated", "keys.audit_signing_key/success/generated",
			"keys.server_signing_key/success/replaced", "keys.media_kek_rotate/success/rotated"}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("key operations in the audit log:\n got %v\nwant %v", got, want)
		}
	})
}

// Each signed head also reaches a SIEM's syslog collector
// (audit.syslog_address), and what the collector kept anchors
// `enclave audit verify` with only the public key at hand.
func TestAuditSyslogAnchor(t *testing.T) {
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		var mu sync.Mutex
		var received []string
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				mu.Lock()
				received = append(received, string(buf[:n]))
				mu.Unlock()
			}
		}()
		dataDir := t.TempDir()
		srv := Start(t, d, Options{DataDir: dataDir, Configure: func(c *config.Config) {
			c.Audit.HeadSyslog = true
			c.Audit.SyslogAddress = "udp://" + pc.LocalAddr().String()
			c.Audit.AnchorFile = config.AnchorNone // the SIEM is the only anchor
		}})
		Register(t, srv.URL, "alice", "alice-pw", false)
		_, pub := srv.Audit.PublicKey()
		dbURL := srv.DBURL
		srv.Stop()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			got := strings.Join(received, "\n")
			mu.Unlock()
			if strings.Contains(got, "server.stop") || time.Now().After(deadline) || strings.Count(got, "audit head {") >= 2 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		mu.Lock()
		siem := filepath.Join(t.TempDir(), "siem.log")
		err = os.WriteFile(siem, []byte(strings.Join(received, "\n")+"\n"), 0o600)
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := config.EnsureDataDir(dataDir); err != nil {
			t.Fatal(err)
		}
		// The private key is out of reach: only the public key verifies.
		if err := os.Rename(dataDir+".audit.key", dataDir+".moved-away"); err != nil {
			t.Fatal(err)
		}
		env := []string{"ENCLAVE_AUDIT_ANCHOR_FILE=none", "ENCLAVE_AUDIT_PUBLIC_KEY=" + base64.RawStdEncoding.EncodeToString(pub)}
		out, err := verifyEnv(bin, dataDir, dbURL, env, "--anchor", siem)
		if err != nil || !strings.Contains(out, "anchored: the chain holds the exported head") {
			b, _ := os.ReadFile(siem)
			t.Fatalf("verify against the SIEM's copy: %v\n%s\nsiem:\n%s", err, out, b)
		}
		// The collector's copy catches a truncation the store alone hides.
		db, err := storage.Open(context.Background(), dbURL, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(context.Background(), `DELETE FROM audit_log WHERE n > 3`); err != nil {
			t.Fatal(err)
		}
		if out, err := verifyEnv(bin, dataDir, dbURL, env, "--anchor", siem); err == nil || !strings.Contains(out, "shorter than the exported head") {
			t.Fatalf("truncation against the SIEM's copy: %v\n%s", err, out)
		}
	})
}
