package config

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Signing key files use the one-line format common to Matrix servers,
//
//	ed25519 <key_version> <unpadded base64 of the 32-byte seed>
//
// so keys can be migrated between implementations.

const keyAlgorithm = "ed25519"

// LoadOrCreateSigningKey reads the server signing key at path, creating the
// file (mode 0600, parent dirs 0700) with a new key if it does not exist.
// keyID is "ed25519:<key_version>" as used in signatures and key queries.
func LoadOrCreateSigningKey(path string) (keyID string, priv ed25519.PrivateKey, created bool, err error) {
	keyID, priv, err = readSigningKey(path)
	if err == nil {
		return keyID, priv, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", nil, false, err
	}
	keyID, priv, err = GenerateSigningKey(path, false)
	if errors.Is(err, fs.ErrExist) {
		// Lost a race with another process creating it; use theirs.
		keyID, priv, err = readSigningKey(path)
		return keyID, priv, false, err
	}
	if err != nil {
		return "", nil, false, err
	}
	return keyID, priv, true, nil
}

// GenerateSigningKey writes a new random signing key to path. Without force
// it refuses to replace an existing file (the error wraps fs.ErrExist),
// because replacing a server's key breaks verification of its past events
// by servers that have not cached the old key. With force the file is
// replaced atomically.
func GenerateSigningKey(path string, force bool) (keyID string, priv ed25519.PrivateKey, err error) {
	version, err := randomKeyVersion()
	if err != nil {
		return "", nil, err
	}
	_, priv, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, fmt.Errorf("config: generate signing key: %w", err)
	}
	line := fmt.Sprintf("%s %s %s\n", keyAlgorithm, version,
		base64.RawStdEncoding.EncodeToString(priv.Seed()))

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", nil, fmt.Errorf("config: signing key dir: %w", err)
	}
	if force {
		err = writeFileAtomic(path, []byte(line))
	} else {
		err = writeFileExclusive(path, []byte(line))
	}
	if err != nil {
		return "", nil, fmt.Errorf("config: write signing key: %w", err)
	}
	return keyAlgorithm + ":" + version, priv, nil
}

func readSigningKey(path string) (string, ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("config: read signing key: %w", err)
	}
	keyID, priv, err := ParseSigningKey(data)
	if err != nil {
		return "", nil, fmt.Errorf("config: signing key %s: %w", path, err)
	}
	return keyID, priv, nil
}

// ParseSigningKey parses signing key file contents. It uses the first
// non-blank line and ignores the rest, so files holding several keys (as
// some servers write) still load.
func ParseSigningKey(data []byte) (keyID string, priv ed25519.PrivateKey, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 3 || fields[0] != keyAlgorithm {
			return "", nil, errors.New(`want one line "ed25519 <version> <base64 seed>"`)
		}
		if !validKeyVersion(fields[1]) {
			return "", nil, fmt.Errorf("invalid key version %q", fields[1])
		}
		// Unpadded is the format, but tolerate padding added by other tools.
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
		if err != nil {
			return "", nil, fmt.Errorf("invalid base64 seed: %w", err)
		}
		if len(seed) != ed25519.SeedSize {
			return "", nil, fmt.Errorf("seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
		}
		return keyAlgorithm + ":" + fields[1], ed25519.NewKeyFromSeed(seed), nil
	}
	if err := sc.Err(); err != nil {
		return "", nil, err
	}
	return "", nil, errors.New("empty key file")
}

// validKeyVersion enforces the Matrix key ID character set [a-zA-Z0-9_].
func validKeyVersion(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !isAlnum(r) && r != '_' {
			return false
		}
	}
	return true
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

const alphanumerics = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// randomKeyVersion returns "a_" plus 4 random alphanumerics. Rejection
// sampling keeps the choice uniform (256 is not a multiple of 62).
func randomKeyVersion() (string, error) {
	const n = 4
	limit := byte(256 - 256%len(alphanumerics))
	out := make([]byte, 0, n)
	buf := make([]byte, 16)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("config: random key version: %w", err)
		}
		for _, b := range buf {
			if b < limit && len(out) < n {
				out = append(out, alphanumerics[int(b)%len(alphanumerics)])
			}
		}
	}
	return "a_" + string(out), nil
}

// writeFileExclusive creates path with mode 0600, failing if it exists.
func writeFileExclusive(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// writeFileAtomic replaces path via a temp file and rename, so a crash never
// leaves a truncated key behind.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
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
	return os.Rename(tmp.Name(), path)
}
