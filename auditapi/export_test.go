package auditapi

import (
	"crypto/ed25519"
	"encoding/base64"
)

// SignHeadForTest signs h with key as the server does.
func SignHeadForTest(h *Head, key ed25519.PrivateKey) string {
	return base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, headMessage(h)))
}
