package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"enclave/internal/httpapi"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"
)

// TURN credentials (GET /voip/turnServer) in the TURN REST API scheme
// that coturn's use-auth-secret checks: username "<expiry>:<user ID>",
// password base64(HMAC-SHA1(shared secret, username)). Without TURN
// configured the answer is an empty object, as Synapse gives and Element
// expects, so clients fall back to their own STUN/TURN settings.

func (a *API) turnServer(r *http.Request, dev *httpapi.Device) httpapi.Response {
	t := a.opts.TURN
	if len(t.URIs) == 0 || t.SharedSecret == "" {
		return httpapi.JSON(200, struct{}{})
	}
	ttl := t.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	username := strconv.FormatInt(time.Now().Add(ttl).Unix(), 10) + ":" + dev.UserID
	mac := hmac.New(sha1.New, []byte(t.SharedSecret))
	mac.Write([]byte(username))
	return httpapi.JSON(200, map[string]any{
		"username": username,
		"password": base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		"uris":     t.URIs,
		"ttl":      int64(ttl / time.Second),
	})
}
