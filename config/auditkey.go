package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The audit signing key is separate from the server (federation) key: the
// federation key must sit where the server can use it for every request
// and is usually beside the database, while the audit key only signs
// checkpoints and heads, so it can live where a database administrator or
// a copy of the data directory does not reach it. Verification needs only
// its public half.

// AnchorNone as audit.anchor_file disables the anchor file.
const AnchorNone = "none"

// AuditKeyPath is the audit key file: audit.signing_key, or DATA.audit.key
// beside the data directory.
func (c *Config) AuditKeyPath() string {
	if c.Audit.SigningKey != "" {
		return c.resolve(c.Audit.SigningKey)
	}
	return filepath.Clean(c.DataDir) + ".audit.key"
}

// AuditAnchorPath is the append-only head export (audit.anchor_file, or
// DATA.audit-anchor.jsonl beside the data directory); "" when disabled.
func (c *Config) AuditAnchorPath() string {
	switch c.Audit.AnchorFile {
	case AnchorNone:
		return ""
	case "":
		return filepath.Clean(c.DataDir) + ".audit-anchor.jsonl"
	}
	return c.resolve(c.Audit.AnchorFile)
}

// InsideDataDir reports whether path lies in the data directory.
func (c *Config) InsideDataDir(path string) bool {
	rel, err := filepath.Rel(filepath.Clean(c.DataDir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// AuditKey is the loaded audit signing key and where it came from.
type AuditKey struct {
	KeyID   string
	Key     ed25519.PrivateKey
	Source  string // "env NAME" or the file path
	Path    string // the file, "" for an environment variable
	Created bool   // generated now
}

// AuditKeyID names an audit key after its public key, so that the same key
// has the same ID whether it comes from a file or the environment.
func AuditKeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	v := strings.NewReplacer("-", "", "_", "").Replace(base64.RawURLEncoding.EncodeToString(sum[:]))
	return keyAlgorithm + ":audit_" + v[:8]
}

// LoadAuditKey loads the audit signing key from audit.signing_key_env or
// the key file. With create, a missing file is generated (for the default
// path, falling back to DATA/audit.key when the directory beside the data
// directory is not writable).
func LoadAuditKey(c *Config, create bool) (*AuditKey, error) {
	if name := c.Audit.SigningKeyEnv; name != "" {
		v, ok := os.LookupEnv(name)
		if !ok || strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("audit.signing_key_env: environment variable %s is not set", name)
		}
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(v), "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("audit.signing_key_env: %s must hold the unpadded base64 of a 32-byte ed25519 seed", name)
		}
		key := ed25519.NewKeyFromSeed(seed)
		return &AuditKey{KeyID: AuditKeyID(key.Public().(ed25519.PublicKey)), Key: key, Source: "env " + name}, nil
	}
	path := c.AuditKeyPath()
	k, err := readAuditKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	// The default beside the data directory may not be writable (a
	// container volume, say): then the key lives inside it, warned about.
	inside := filepath.Join(c.DataDir, "audit.key")
	if c.Audit.SigningKey == "" {
		if k, ierr := readAuditKey(inside); ierr == nil {
			return k, nil
		}
	}
	if !create {
		return nil, err
	}
	k, err = generateAuditKey(path)
	if err != nil && c.Audit.SigningKey == "" && errors.Is(err, fs.ErrPermission) {
		k, err = generateAuditKey(inside)
	}
	return k, err
}

func readAuditKey(path string) (*AuditKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	_, key, err := ParseSigningKey(data)
	if err != nil {
		return nil, fmt.Errorf("audit signing key %s: %w", path, err)
	}
	return &AuditKey{KeyID: AuditKeyID(key.Public().(ed25519.PublicKey)), Key: key, Source: path, Path: path}, nil
}

// generateAuditKey writes a new key to path (mode 0600, never replacing a
// file) and its public half to path.pub for verifiers.
func generateAuditKey(path string) (*AuditKey, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	id := AuditKeyID(pub)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	line := fmt.Sprintf("%s %s %s\n", keyAlgorithm, strings.TrimPrefix(id, keyAlgorithm+":"), base64.RawStdEncoding.EncodeToString(key.Seed()))
	if err := writeFileExclusive(path, []byte(line)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readAuditKey(path)
		}
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	_ = os.WriteFile(path+".pub", []byte(id+" "+base64.RawStdEncoding.EncodeToString(pub)+"\n"), 0o644)
	return &AuditKey{KeyID: id, Key: key, Source: path, Path: path, Created: true}, nil
}

// ParsePublicKey reads an ed25519 public key given as unpadded base64
// (optionally after a key ID, as in KEY.pub files).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if f := strings.Fields(s); len(f) > 0 {
		s = f[len(f)-1]
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawURLEncoding.DecodeString(s)
	}
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("not a 32-byte ed25519 public key in base64")
	}
	return ed25519.PublicKey(b), nil
}

// AuditPublicKey is the key verification checks against: audit.public_key
// (the key, or a file holding it), else the public half of the signing
// key. It never creates a key.
func AuditPublicKey(c *Config) (keyID string, pub ed25519.PublicKey, err error) {
	if v := c.Audit.PublicKey; v != "" {
		if pub, err := ParsePublicKey(v); err == nil {
			return AuditKeyID(pub), pub, nil
		}
		b, err := os.ReadFile(c.resolve(v))
		if err != nil {
			return "", nil, fmt.Errorf("audit.public_key: %w", err)
		}
		if pub, err = ParsePublicKey(string(b)); err != nil {
			return "", nil, fmt.Errorf("audit.public_key %s: %w", v, err)
		}
		return AuditKeyID(pub), pub, nil
	}
	k, err := LoadAuditKey(c, false)
	if err != nil {
		return "", nil, err
	}
	return k.KeyID, k.Key.Public().(ed25519.PublicKey), nil
}
