package sealing

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the size of every key here: AES-256.
const KeySize = 32

// ErrOpen is returned when a sealed value does not open: wrong key,
// tampering, truncation or a value bound to another object.
var ErrOpen = errors.New("sealing: message authentication failed")

// KEK is a key-encryption key. Source says where it came from (for error
// messages that name the key without printing it).
type KEK struct {
	aead   cipher.AEAD
	id     string
	Source string
}

// NewKEK builds a KEK from 32 key bytes.
func NewKEK(key []byte, source string) (*KEK, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("sealing: key-encryption key must be %d bytes, got %d", KeySize, len(key))
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("enclave media kek id v1"))
	return &KEK{aead: aead, id: hex.EncodeToString(m.Sum(nil)[:8]), Source: source}, nil
}

// ID is a short public fingerprint of the key (an HMAC of a constant under
// it), so operators and errors can tell keys apart without revealing them.
func (k *KEK) ID() string { return k.id }

const wrapVersion = 1

// Wrap seals a data key under the KEK, bound to objectID so a wrapped key
// moved onto another object's row does not open there.
func (k *KEK) Wrap(dataKey []byte, objectID string) ([]byte, error) {
	if len(dataKey) != KeySize {
		return nil, fmt.Errorf("sealing: data key must be %d bytes", KeySize)
	}
	out := make([]byte, 1, 1+k.aead.NonceSize()+KeySize+k.aead.Overhead())
	out[0] = wrapVersion
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, dataKey, wrapAAD(objectID)), nil
}

// Unwrap opens a data key wrapped by Wrap with the same objectID.
func (k *KEK) Unwrap(wrapped []byte, objectID string) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(wrapped) != 1+ns+KeySize+k.aead.Overhead() || wrapped[0] != wrapVersion {
		return nil, ErrOpen
	}
	dk, err := k.aead.Open(nil, wrapped[1:1+ns], wrapped[1+ns:], wrapAAD(objectID))
	if err != nil {
		return nil, ErrOpen
	}
	return dk, nil
}

func wrapAAD(objectID string) []byte {
	return append([]byte("enclave/media/wrap/v1\x00"), objectID...)
}

// NewDataKey returns a fresh random data key.
func NewDataKey() []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		panic("sealing: no randomness: " + err.Error())
	}
	return k
}

// Seal seals a small value (metadata) under a data key, bound to aad.
func Seal(key, plaintext, aad []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plaintext, aad), nil
}

// Open opens a value sealed by Seal.
func Open(key, sealed, aad []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrOpen
	}
	pt, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("sealing: key must be %d bytes", KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// ParseKey decodes a KEK as operators supply it: base64 (standard or URL,
// padded or not) or hex text of 32 bytes, surrounding whitespace ignored,
// or exactly 32 raw bytes.
func ParseKey(b []byte) ([]byte, error) {
	t := bytes.TrimSpace(b)
	s := string(t)
	if len(s) == 2*KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == KeySize {
			return k, nil
		}
	}
	if len(b) == KeySize {
		return append([]byte(nil), b...), nil
	}
	return nil, fmt.Errorf("not a %d-byte key (expected base64 or hex text of %d random bytes, e.g. from `head -c 32 /dev/urandom | base64`)", KeySize, KeySize)
}

// LoadKeyFile reads and parses a key file.
func LoadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes a new random key to path (mode 0600, base64 text)
// and returns it. It never overwrites: an existing file is fs.ErrExist.
func WriteKeyFile(path string) ([]byte, error) {
	key := NewDataKey()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	syncDir(filepath.Dir(path))
	return key, nil
}

// syncDir makes a just-created or renamed directory entry durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// SyncDir is syncDir for callers that rename files into place.
func SyncDir(dir string) { syncDir(dir) }

// IsNotExist reports whether err means a missing file.
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
