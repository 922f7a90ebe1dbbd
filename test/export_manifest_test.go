package test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"enclave/auditapi"
	"enclave/storage"
)

// TestExportManifest: a discovery export of a room carries a manifest
// signed with the audit key (the body's SHA-256, the exporter, the audit
// chain's head after the export's own entry); `enclave audit
// verify-export` (the real binary) accepts it offline with the audit
// public key, and fails, naming what, on a flipped byte in the export, a
// manifest altered to match, and one re-signed with another key.
func TestExportManifest(t *testing.T) {
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		admin := Register(t, srv.URL, "admin", "admin-password", true)
		_, _, room := siemActivity(t, srv, "", 3)
		keyID, pub := srv.Audit.PublicKey()
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "audit.pub")
		if err := os.WriteFile(keyFile, []byte(keyID+" "+base64.RawStdEncoding.EncodeToString(pub)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		verify := func(args ...string) (string, error) {
			out, err := exec.Command(bin, append([]string{"audit", "verify-export"}, args...)...).CombinedOutput()
			return string(out), err
		}
		mustVerify := func(what string, args ...string) {
			t.Helper()
			if out, err := verify(args...); err != nil || !strings.Contains(out, "export verified") {
				t.Fatalf("%s: %v\n%s", what, err, out)
			}
		}
		mustFail := func(what, reason string, args ...string) {
			t.Helper()
			out, err := verify(args...)
			if err == nil || !strings.Contains(out, reason) {
				t.Fatalf("%s: want a failure naming %q, got %v\n%s", what, reason, err, out)
			}
		}
		get := func(query string) (*http.Response, []byte) {
			req, _ := http.NewRequest("GET", srv.URL+"/_enclave/admin/v1/rooms/"+room+"/export"+query, nil)
			req.Header.Set("Authorization", "Bearer "+admin.AccessToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("export%s: %d %s", query, resp.StatusCode, b)
			}
			return resp, b
		}

		// The zip: export.jsonl and manifest.json.
		_, zb := get("?format=zip")
		zipFile := filepath.Join(dir, "export.zip")
		if err := os.WriteFile(zipFile, zb, 0o600); err != nil {
			t.Fatal(err)
		}
		zr, err := zip.NewReader(bytes.NewReader(zb), int64(len(zb)))
		if err != nil {
			t.Fatal(err)
		}
		member := func(name string) []byte {
			f, err := zr.Open(name)
			if err != nil {
				t.Fatalf("zip member %s: %v", name, err)
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			return b
		}
		body, mj := member("export.jsonl"), member("manifest.json")
		var m auditapi.ExportManifest
		if err := json.Unmarshal(mj, &m); err != nil {
			t.Fatal(err)
		}
		var events int
		_ = srv.DB.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM events WHERE room_id = $1`, room).Scan(&events)
		if lines := strings.Split(strings.TrimSpace(string(body)), "\n"); len(lines) != events+1 || !strings.Contains(lines[0], room) {
			t.Fatalf("export has %d lines for %d events", len(lines), events)
		}
		if m.RoomID != room || m.ExportedBy != admin.UserID || m.ServerName != "localhost" || m.KeyID != keyID || m.Size != int64(len(body)) {
			t.Fatalf("manifest %+v", m)
		}
		// The audit trail holds the export with the same hash, and the
		// manifest's chain position is a real one that covers it.
		rows := sealedRows(t, srv)
		var entry *storage.AuditRow
		for _, r := range rows {
			if r.Action == auditapi.ActionRoomExport && gjsonString(r.Details, "sha256") == m.SHA256 {
				entry = r
			}
		}
		if entry == nil || entry.ActorUser != admin.UserID || entry.RoomID != room {
			t.Fatalf("no admin.room_export entry with sha256 %s: %+v", m.SHA256, entry)
		}
		at, err := storage.AuditRowAt(context.Background(), srv.DB, m.AuditN)
		if err != nil || m.AuditN < entry.N || at.ChainHash != m.AuditChainHash {
			t.Fatalf("manifest audit position %d %s; export entry %d; stored %+v %v", m.AuditN, m.AuditChainHash, entry.N, at, err)
		}

		mustVerify("zip with --key base64", zipFile, "--key", base64.RawStdEncoding.EncodeToString(pub))
		exportFile, manifestFile := filepath.Join(dir, "export.jsonl"), filepath.Join(dir, "manifest.json")
		_ = os.WriteFile(exportFile, body, 0o600)
		_ = os.WriteFile(manifestFile, mj, 0o600)
		mustVerify("detached files with --key FILE", exportFile, manifestFile, "--key", keyFile)
		mustVerify("key from --data", exportFile, manifestFile, "--data", srv.DataDir)
		mustFail("no pinned key", "audit public key", exportFile, manifestFile)

		// The plain JSONL export carries the manifest in a header.
		resp, plain := get("")
		hm, err := base64.StdEncoding.DecodeString(resp.Header.Get("Enclave-Export-Manifest"))
		if err != nil {
			t.Fatal(err)
		}
		plainFile, plainManifest := filepath.Join(dir, "plain.jsonl"), filepath.Join(dir, "plain-manifest.json")
		_ = os.WriteFile(plainFile, plain, 0o600)
		_ = os.WriteFile(plainManifest, hm, 0o600)
		mustVerify("plain export and header manifest", plainFile, plainManifest, "--key", keyFile)

		// One flipped byte in the export.
		flipped := append([]byte(nil), body...)
		flipped[len(flipped)/2] ^= 0x01
		flippedFile := filepath.Join(dir, "flipped.jsonl")
		_ = os.WriteFile(flippedFile, flipped, 0o600)
		mustFail("flipped byte", "export SHA-256", flippedFile, manifestFile, "--key", keyFile)
		// A truncated export.
		_ = os.WriteFile(flippedFile, body[:len(body)-1], 0o600)
		mustFail("truncated", "export size", flippedFile, manifestFile, "--key", keyFile)

		// The manifest altered to match the flipped export, not re-signed.
		altered := m
		_ = os.WriteFile(flippedFile, flipped, 0o600)
		altered.SHA256 = sha256Hex(flipped)
		writeManifest(t, manifestFile, &altered)
		mustFail("altered manifest", "signature does not verify", flippedFile, manifestFile, "--key", keyFile)

		// Re-signed with another key (which it then names): the pinned
		// server key refuses it.
		_, forgerKey, _ := ed25519.GenerateKey(rand.Reader)
		altered.Sign(keyID, forgerKey)
		writeManifest(t, manifestFile, &altered)
		mustFail("forged manifest", "signature does not verify", flippedFile, manifestFile, "--key", keyFile)
		mustFail("forged manifest, key from --data", "signature does not verify", flippedFile, manifestFile, "--data", srv.DataDir)
	})
}

func writeManifest(t testing.TB, path string, m *auditapi.ExportManifest) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
