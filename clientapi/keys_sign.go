package clientapi

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

// Signed JSON (spec: "Signing JSON"): a signature covers the canonical JSON
// of the object without "signatures" and "unsigned".

// decodeKey decodes an unpadded (or padded) base64 ed25519 public key.
func decodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, err
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, errors.New("not an ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

// signedBytes returns the canonical JSON an object's signatures cover.
func signedBytes(obj map[string]json.RawMessage) ([]byte, error) {
	c := make(map[string]json.RawMessage, len(obj))
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			c[k] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(b)
}

// objectSignatures returns the object's signatures (user -> key ID -> sig).
func objectSignatures(obj map[string]json.RawMessage) map[string]map[string]string {
	var sigs map[string]map[string]string
	if raw, ok := obj["signatures"]; ok {
		_ = json.Unmarshal(raw, &sigs)
	}
	return sigs
}

// verifySigned checks that obj carries a valid signature by userID's key
// keyID ("ed25519:<id>") with public key pub.
func verifySigned(obj map[string]json.RawMessage, userID, keyID, pub string) bool {
	sig := objectSignatures(obj)[userID][keyID]
	if sig == "" {
		return false
	}
	pk, err := decodeKey(pub)
	if err != nil {
		return false
	}
	sb, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(sig, "="))
	if err != nil || len(sb) != ed25519.SignatureSize {
		return false
	}
	msg, err := signedBytes(obj)
	if err != nil {
		return false
	}
	return ed25519.Verify(pk, msg, sb)
}

// sameSignedContent reports whether two objects are equal apart from
// their signatures and unsigned data.
func sameSignedContent(a, b map[string]json.RawMessage) bool {
	x, err1 := signedBytes(a)
	y, err2 := signedBytes(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
