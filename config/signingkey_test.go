package config

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var keyLineRE = regexp.MustCompile(`^ed25519 (a_[A-Za-z0-9]{4}) ([A-Za-z0-9+/]{43})\n$`)

func assertMode0600(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want 0600", path, fi.Mode().Perm())
	}
}

func TestLoadOrCreateSigningKeyRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "signing.key")

	id, priv, created, err := LoadOrCreateSigningKey(path)
	if err != nil || !created {
		t.Fatalf("create: created=%v err=%v", created, err)
	}
	assertMode0600(t, path)
	data, _ := os.ReadFile(path)
	m := keyLineRE.FindStringSubmatch(string(data))
	if m == nil {
		t.Fatalf("key file %q not in 'ed25519 <version> <unpadded base64>' format", data)
	}
	if id != "ed25519:"+m[1] {
		t.Errorf("key ID %q does not match file version %q", id, m[1])
	}
	seed, err := base64.RawStdEncoding.DecodeString(m[2])
	if err != nil || !bytes.Equal(seed, priv.Seed()) {
		t.Errorf("file seed does not match returned key: %v", err)
	}

	id2, priv2, created, err := LoadOrCreateSigningKey(path)
	if err != nil || created {
		t.Fatalf("reload: created=%v err=%v", created, err)
	}
	if id2 != id || !priv2.Equal(priv) {
		t.Error("reloaded key differs from created key")
	}
	msg := []byte("event")
	if !ed25519.Verify(priv.Public().(ed25519.PublicKey), msg, ed25519.Sign(priv2, msg)) {
		t.Error("reloaded key does not verify against original public key")
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
		t.Error("loading rewrote the key file")
	}
}

func TestLoadOrCreateSigningKeyRejectsCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	if err := os.WriteFile(path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := LoadOrCreateSigningKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v, want an error naming the file", err)
	}
	// A corrupt key must never be silently replaced.
	if data, _ := os.ReadFile(path); string(data) != "garbage\n" {
		t.Error("corrupt key file was overwritten")
	}
}

func TestGenerateSigningKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	id1, priv1, err := GenerateSigningKey(path, false)
	if err != nil {
		t.Fatal(err)
	}
	assertMode0600(t, path)
	first, _ := os.ReadFile(path)

	if _, _, err := GenerateSigningKey(path, false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("overwrite without force: got %v, want fs.ErrExist", err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, first) {
		t.Error("refused overwrite still changed the file")
	}

	// Loosen the mode to check force restores 0600 on the replacement.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	id2, priv2, err := GenerateSigningKey(path, true)
	if err != nil {
		t.Fatal(err)
	}
	assertMode0600(t, path)
	if priv2.Equal(priv1) {
		t.Error("forced regeneration produced the same key")
	}
	id3, priv3, created, err := LoadOrCreateSigningKey(path)
	if err != nil || created || id3 != id2 || !priv3.Equal(priv2) {
		t.Errorf("forced key does not load back: id %q/%q created=%v err=%v", id3, id2, created, err)
	}
	if !regexp.MustCompile(`^ed25519:a_[A-Za-z0-9]{4}$`).MatchString(id1) {
		t.Errorf("key ID %q", id1)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

func TestRandomKeyVersion(t *testing.T) {
	re := regexp.MustCompile(`^a_[A-Za-z0-9]{4}$`)
	seen := map[string]bool{}
	for range 200 {
		v, err := randomKeyVersion()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(v) {
			t.Fatalf("bad key version %q", v)
		}
		seen[v] = true
	}
	if len(seen) < 190 { // 62^4 ≈ 14.8M possibilities; collisions should be rare
		t.Errorf("only %d distinct versions in 200 draws", len(seen))
	}
}

func TestParseSigningKey(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	enc := base64.RawStdEncoding.EncodeToString(seed)
	tests := []struct {
		name, data string
		wantID     string // "" means an error is expected
	}{
		{"canonical", "ed25519 a_AbC1 " + enc + "\n", "ed25519:a_AbC1"},
		{"no trailing newline", "ed25519 a_AbC1 " + enc, "ed25519:a_AbC1"},
		{"padded base64 tolerated", "ed25519 auto " + base64.StdEncoding.EncodeToString(seed) + "\n", "ed25519:auto"},
		{"leading blank lines and extra keys", "\n\ned25519 k1 " + enc + "\ned25519 k2 " + enc + "\n", "ed25519:k1"},
		{"empty", "", ""},
		{"only whitespace", " \n\t\n", ""},
		{"wrong algorithm", "curve25519 a_AbC1 " + enc, ""},
		{"missing seed", "ed25519 a_AbC1", ""},
		{"extra field", "ed25519 a_AbC1 " + enc + " x", ""},
		{"bad version chars", "ed25519 a-b " + enc, ""},
		{"bad base64", "ed25519 a_AbC1 !!!!", ""},
		{"short seed", "ed25519 a_AbC1 " + base64.RawStdEncoding.EncodeToString(seed[:31]), ""},
		{"long seed (64-byte private key)", "ed25519 a_AbC1 " + base64.RawStdEncoding.EncodeToString(append(seed, seed...)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, priv, err := ParseSigningKey([]byte(tt.data))
			if tt.wantID == "" {
				if err == nil {
					t.Fatalf("accepted, want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id != tt.wantID || !bytes.Equal(priv.Seed(), seed) {
				t.Errorf("got %q seed %x", id, priv.Seed())
			}
		})
	}
}
