package auditapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"enclave/auditapi"
	"enclave/storage"
	"enclave/storage/storagetest"
)

func openLog(t *testing.T, db *storage.DB, every int, head string) (*auditapi.Log, ed25519.PrivateKey) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	l, err := auditapi.Open(context.Background(), db, auditapi.Options{Enabled: true, ServerName: "test", KeyID: "ed25519:k",
		Key: key, CheckpointEvery: every, CheckpointInterval: time.Hour, HeadExportPath: head})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, key
}

// Concurrent writers, some of whose transactions roll back, still produce
// one unbroken chain: rolled-back entries never enter it.
func TestConcurrentWritersAndRollbacks(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		head := filepath.Join(t.TempDir(), "head.json")
		l, key := openLog(t, db, 7, head)
		errRollback := errors.New("rollback")
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 10 {
					err := db.WithTx(ctx, func(tx *storage.Tx) error {
						if err := l.Record(ctx, tx, auditapi.Entry{Action: "test.write", Target: fmt.Sprintf("w%d-%d", w, i)}); err != nil {
							return err
						}
						if i%3 == 0 {
							return errRollback
						}
						return nil
					})
					if err != nil && !errors.Is(err, errRollback) {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		rows, err := storage.ListAuditRows(ctx, db, storage.AuditFilter{Action: "test.write"})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 6*6 { // i = 1,2,4,5,7,8 commit
			t.Fatalf("want 36 committed entries, got %d", len(rows))
		}
		for _, r := range rows {
			if strings.HasSuffix(r.Target, "-0") || strings.HasSuffix(r.Target, "-3") || strings.HasSuffix(r.Target, "-6") || strings.HasSuffix(r.Target, "-9") {
				t.Fatalf("rolled-back entry %s is in the log", r.Target)
			}
		}
		h, err := auditapi.ReadHead(head)
		if err != nil {
			t.Fatal(err)
		}
		res, err := auditapi.VerifyStore(ctx, db, "ed25519:k", key.Public().(ed25519.PublicKey), h)
		if err != nil {
			t.Fatal(err)
		}
		// 36 entries plus a checkpoint after every 7.
		if !res.OK() || res.Verified != 36+5 || res.Checkpoints != 5 || !res.HeadChecked || res.Unsealed != 0 {
			t.Fatalf("verify: %s %+v", res, res)
		}
		// A different key does not verify the checkpoints.
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		res, _ = auditapi.VerifyStore(ctx, db, "ed25519:k", other.Public().(ed25519.PublicKey), nil)
		if res.OK() || res.Break.N != 8 || !strings.Contains(res.Break.Reason, "signature") {
			t.Fatalf("wrong key: %s", res)
		}
	})
}

// Disabled audit records nothing; no Log at all still records (the CLI).
func TestDisabledAndDetached(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if err := auditapi.RecordDetached(ctx, db, auditapi.Entry{Action: "test.detached"}); err != nil {
			t.Fatal(err)
		}
		if err := auditapi.RecordDetached(ctx, db, auditapi.Entry{}); err == nil {
			t.Fatal("entry without action accepted")
		}
		l, err := auditapi.Open(ctx, db, auditapi.Options{Enabled: false})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Record(ctx, db, auditapi.Entry{Action: "test.disabled"}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		rows, _ := storage.ListAuditRows(ctx, db, storage.AuditFilter{})
		var actions []string
		for _, r := range rows {
			if r.Kind == auditapi.KindEntry {
				actions = append(actions, r.Action)
			}
		}
		if len(actions) != 1 || actions[0] != "test.detached" {
			t.Fatalf("entries %v", actions)
		}
	})
}

// Export → offline verification, and what it catches.
func TestExportVerifyOffline(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := auditapi.WithActor(context.Background(), auditapi.Actor{IP: "192.0.2.1", UserAgent: "ua"})
		l, key := openLog(t, db, 4, "")
		for i := range 9 {
			if err := l.Record(ctx, db, auditapi.Entry{Actor: auditapi.Actor{UserID: "@u:test"}, Action: "test.x", Details: map[string]any{"i": i}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		first, _ := storage.AuditRowAt(ctx, db, 1)
		if first.ActorIP != "192.0.2.1" || first.ActorUA != "ua" {
			t.Fatalf("actor from context not recorded: %+v", first)
		}
		var buf bytes.Buffer
		n, err := auditapi.Export(ctx, db, &buf, auditapi.ExportOptions{ServerName: "test", KeyID: "ed25519:k", Key: key})
		if err != nil || n != 11 {
			t.Fatalf("export: %d %v", n, err)
		}
		pub := key.Public().(ed25519.PublicKey)
		res, fromFile, err := auditapi.VerifyExport(bytes.NewReader(buf.Bytes()), pub, nil)
		if err != nil || !res.OK() || fromFile || res.Verified != 11 || res.Checkpoints != 2 {
			t.Fatalf("verify export: %v %s", err, res)
		}
		if res, fromFile, _ = auditapi.VerifyExport(bytes.NewReader(buf.Bytes()), nil, nil); !res.OK() || !fromFile {
			t.Fatalf("verify with key from file: %s", res)
		}
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		check := func(name string, ls []string, pub ed25519.PublicKey, wantN int64) {
			t.Helper()
			res, _, err := auditapi.VerifyExport(strings.NewReader(strings.Join(ls, "\n")+"\n"), pub, nil)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if res.OK() || res.Break.N != wantN {
				t.Fatalf("%s: want a break at %d, got %s", name, wantN, res)
			}
		}
		edited := append([]string(nil), lines...)
		edited[3] = strings.Replace(edited[3], `\"i\":2`, `\"i\":7`, 1)
		if edited[3] == lines[3] {
			t.Fatal("test did not edit the line")
		}
		check("edited", edited, pub, 3)
		check("deleted", append(append([]string(nil), lines[:5]...), lines[6:]...), pub, 5)
		check("truncated", lines[:len(lines)-2], pub, 10)
		swapped := append([]string(nil), lines...)
		swapped[2], swapped[3] = swapped[3], swapped[2]
		check("reordered", swapped, pub, 2)
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		check("wrong key", lines, other.Public().(ed25519.PublicKey), 1)

		// A time-bounded export is its own stretch of the chain.
		mid, _ := storage.AuditRowAt(ctx, db, 6)
		buf.Reset()
		if n, err := auditapi.Export(ctx, db, &buf, auditapi.ExportOptions{SinceTS: mid.TS, ServerName: "test", KeyID: "ed25519:k", Key: key}); err != nil || n == 0 {
			t.Fatalf("partial export: %d %v", n, err)
		}
		if res, _, _ := auditapi.VerifyExport(&buf, pub, nil); !res.OK() || res.LastN != 11 {
			t.Fatalf("partial export verify: %s", res)
		}
		buf.Reset()
		if _, err := auditapi.Export(ctx, db, &buf, auditapi.ExportOptions{Format: auditapi.FormatCEF}); err != nil {
			t.Fatal(err)
		}
		cef := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(cef) != 11 || !strings.HasPrefix(cef[0], "CEF:0|Enclave|Enclave|") || !strings.Contains(cef[0], "src=192.0.2.1") || !strings.Contains(cef[0], `cs3={"i":0}`) {
			t.Fatalf("cef: %q", cef[0])
		}
	})
}

func TestParseTime(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "1700000000000": 1700000000000, "2024-01-02": 1704153600000, "2024-01-02T00:00:01Z": 1704153601000} {
		if got, err := auditapi.ParseTime(in); err != nil || got != want {
			t.Errorf("ParseTime(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := auditapi.ParseTime("yesterday"); err == nil {
		t.Error("nonsense time accepted")
	}
}

// The media and federation callbacks record what they are told.
func TestMediaAndFederationHooks(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		l, _ := openLog(t, db, 1000, "")
		l.MediaHook()(ctx, "@u:test", "MEDIA1", 42, "abcd", "upload")
		l.MediaHook()(ctx, "", "MEDIA1", 42, "abcd", "thumbnail")
		l.FederationRefusalHook()("federation.inbound_refused", "evil.example", "not allowed: PUT /send")
		l.FederationRefusalHook()("federation.outbound_refused", "far.example", "denied")
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		rows, _ := storage.ListAuditRows(ctx, db, storage.AuditFilter{})
		if len(rows) != 4 {
			t.Fatalf("%d rows", len(rows))
		}
		want := []struct{ action, user, server, target, detail string }{
			{auditapi.ActionMediaUpload, "@u:test", "", "MEDIA1", `"sha256":"abcd"`},
			{auditapi.ActionMediaDownload, "", "", "MEDIA1", `"kind":"thumbnail"`},
			{auditapi.ActionFedRefuse, "", "evil.example", "", `"direction":"inbound"`},
			{auditapi.ActionFedRefuse, "", "", "far.example", `"direction":"outbound"`},
		}
		for i, w := range want {
			r := rows[i]
			if r.Action != w.action || r.ActorUser != w.user || r.ActorServer != w.server || r.Target != w.target || !strings.Contains(r.Details, w.detail) {
				t.Errorf("row %d: %+v, want %+v", i, r, w)
			}
		}
	})
}

// The first start after an upgrade accepts the last checkpoint signed with
// the federation key (earlier releases) once and goes on with the audit
// key; verification accepts the old key only when asked, and only before
// the first audit-key checkpoint. Another key is refused at start.
func TestUpgradeFromFederationKey(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		fedPub, fed, _ := ed25519.GenerateKey(rand.Reader)
		auditPub, audit, _ := ed25519.GenerateKey(rand.Reader)
		head := filepath.Join(t.TempDir(), "head.json")
		opts := auditapi.Options{Enabled: true, ServerName: "test", KeyID: "ed25519:fed", Key: fed, CheckpointEvery: 3, CheckpointInterval: time.Hour, HeadExportPath: head}
		l, err := auditapi.Open(ctx, db, opts)
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			if err := l.Record(ctx, db, auditapi.Entry{Action: "test.old"}); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
		opts.KeyID, opts.Key, opts.LegacyKeyID, opts.LegacyKey = "ed25519:audit", audit, "ed25519:fed", fedPub
		opts.AnchorPath = filepath.Join(t.TempDir(), "anchor.jsonl")
		if l, err = auditapi.Open(ctx, db, opts); err != nil {
			t.Fatalf("first start after the upgrade: %v", err)
		}
		if err := l.Record(ctx, db, auditapi.Entry{Action: "test.new"}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		keys := auditapi.Keys{KeyID: "ed25519:audit", Pub: auditPub}
		an, err := auditapi.ReadAnchor(opts.AnchorPath, "test", keys, false)
		if err != nil || an.Head == nil {
			t.Fatalf("anchor: %v %+v", err, an)
		}
		if res, _ := auditapi.VerifyStoreWith(ctx, db, auditapi.VerifyOptions{Keys: keys, Heads: []*auditapi.Head{an.Head}}); res.OK() {
			t.Fatal("federation-key checkpoints accepted without --legacy-pubkey")
		}
		keys.Legacy = fedPub
		if res, _ := auditapi.VerifyStoreWith(ctx, db, auditapi.VerifyOptions{Keys: keys, Heads: []*auditapi.Head{an.Head}, AllowLegacy: true}); !res.OK() || res.AnchorN != an.Head.N {
			t.Fatalf("upgraded log: %s", res)
		}
		// Once the audit key has signed, the legacy key no longer passes.
		if l, err = auditapi.Open(ctx, db, opts); err != nil {
			t.Fatalf("second start: %v", err)
		}
		l.Close()
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		opts.KeyID, opts.Key = "ed25519:other", other
		if _, err := auditapi.Open(ctx, db, opts); !errors.Is(err, auditapi.ErrChainMismatch) {
			t.Fatalf("start with another audit key: %v", err)
		}
	})
}

// ReadAnchor takes the JSONL anchor, a head file and a syslog file, skips
// other servers' heads, and refuses forged or rolled-back heads.
func TestReadAnchor(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	sign := func(server string, n int64) string {
		h := &auditapi.Head{ServerName: server, KeyID: "ed25519:a", N: n, ChainHash: strings.Repeat("a", 64), TS: n}
		h.Signature = auditapi.SignHeadForTest(h, key)
		b, _ := json.Marshal(h)
		return string(b)
	}
	dir := t.TempDir()
	write := func(name string, lines ...string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keys := auditapi.Keys{KeyID: "ed25519:a", Pub: pub}
	for name, p := range map[string]string{
		"jsonl":  write("a.jsonl", sign("s", 3), sign("s", 7), sign("other", 1)),
		"syslog": write("syslog", "Dec  7 host sshd[1]: noise", "Dec  7 host enclave-audit[9]: audit head "+sign("s", 3), "Dec  7 host enclave-audit[9]: audit head "+sign("s", 7)),
	} {
		a, err := auditapi.ReadAnchor(p, "s", keys, false)
		if err != nil || a.Head == nil || a.Head.N != 7 || a.Heads != 2 {
			t.Errorf("%s: %v %+v", name, err, a)
		}
	}
	if _, err := auditapi.ReadAnchor(write("back.jsonl", sign("s", 7), sign("s", 3)), "s", keys, false); err == nil || !strings.Contains(err.Error(), "older than the last exported one") {
		t.Errorf("rolled-back anchor: %v", err)
	}
	forged := strings.Replace(sign("s", 9), `"n":9`, `"n":10`, 1)
	if _, err := auditapi.ReadAnchor(write("forged.jsonl", sign("s", 7), forged), "s", keys, false); err == nil || !strings.Contains(err.Error(), "forged") {
		t.Errorf("forged head: %v", err)
	}
}
