package auditapi

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ExportManifest is the signed, detached description of a discovery
// export (GET /_enclave/admin/v1/rooms/{roomId}/export): the SHA-256 and
// size of the export body, who exported what and when, and where the
// audit chain stood once the export's own audit entry was chained. It is
// signed with the audit key, so `enclave audit verify-export` proves
// offline, with only the audit public key, that a file is the export the
// server produced and when, in the chain, it was made.
type ExportManifest struct {
	Format     string `json:"format"` // "enclave-export-manifest"
	Version    int    `json:"version"`
	ServerName string `json:"server_name"`
	Kind       string `json:"kind"` // "room"
	RoomID     string `json:"room_id,omitempty"`
	ExportedBy string `json:"exported_by"`
	ExportedTS int64  `json:"exported_ts"`
	SHA256     string `json:"sha256"` // hex, of the export body's bytes
	Size       int64  `json:"size"`
	// AuditN and AuditChainHash are the chain's head after the export's
	// audit entry (which carries sha256 too) was sealed into it.
	AuditN         int64  `json:"audit_n"`
	AuditChainHash string `json:"audit_chain_hash"`
	KeyID          string `json:"key_id"`
	PublicKey      string `json:"public_key,omitempty"`
	Signature      string `json:"signature"`
}

// ManifestFormat names an export manifest.
const ManifestFormat = "enclave-export-manifest"

func (m *ExportManifest) message() []byte {
	parts := []string{"enclave-export-manifest-v1", strconv.Itoa(m.Version), m.ServerName, m.Kind, m.RoomID, m.ExportedBy,
		strconv.FormatInt(m.ExportedTS, 10), m.SHA256, strconv.FormatInt(m.Size, 10),
		strconv.FormatInt(m.AuditN, 10), m.AuditChainHash, m.KeyID}
	return []byte(strings.Join(parts, "\x00"))
}

// SignManifest fills in the chain head (after sealing what is committed,
// the export's own entry included), the audit key and the signature. With
// no audit key the manifest stays unsigned (and fails verification).
func (l *Log) SignManifest(ctx context.Context, m *ExportManifest) error {
	// The export's entry committed with a stream position at or below
	// Last; Flush waits until every lower one is visible and seals.
	if err := l.Flush(ctx); err != nil {
		return err
	}
	h := l.CurrentHead()
	m.Format, m.Version, m.ServerName = ManifestFormat, 1, l.opts.ServerName
	m.AuditN, m.AuditChainHash = h.N, h.ChainHash
	if l.opts.Key != nil {
		m.Sign(l.opts.KeyID, l.opts.Key)
	}
	return nil
}

// Sign signs the manifest with key (named keyID) and records its public
// half.
func (m *ExportManifest) Sign(keyID string, key ed25519.PrivateKey) {
	m.KeyID = keyID
	m.PublicKey = base64.RawStdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	m.Signature = base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, m.message()))
}

// VerifyManifest checks a manifest's signature with the server's audit
// public key pub (never the key the manifest carries: a forger would put
// their own there).
func VerifyManifest(m *ExportManifest, pub ed25519.PublicKey) error {
	if m.Format != ManifestFormat {
		return fmt.Errorf("not an Enclave export manifest (format %q)", m.Format)
	}
	if m.Version != 1 {
		return fmt.Errorf("unsupported manifest version %d", m.Version)
	}
	sig, err := base64.RawStdEncoding.DecodeString(m.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("manifest signature is missing or malformed")
	}
	if !ed25519.Verify(pub, m.message(), sig) {
		return errors.New("manifest signature does not verify with the server's audit public key (forged or altered manifest, or the wrong key)")
	}
	return nil
}

// CheckExport verifies the manifest with pub and that body is the export
// it describes (size and SHA-256), naming the first thing that fails.
func CheckExport(body io.Reader, m *ExportManifest, pub ed25519.PublicKey) error {
	if err := VerifyManifest(m, pub); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return fmt.Errorf("reading the export: %w", err)
	}
	if n != m.Size {
		return fmt.Errorf("export size %d bytes differs from the manifest's %d: the export is truncated or extended", n, m.Size)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != m.SHA256 {
		return fmt.Errorf("export SHA-256 %s differs from the manifest's %s: the export was altered", sum, m.SHA256)
	}
	return nil
}
