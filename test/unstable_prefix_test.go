package test

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"enclave/storage"
)

// xsKeyObj is a cross-signing key object of usage for userID, signed by
// signer (nil: unsigned).
func xsKeyObj(userID, usage string, pub ed25519.PublicKey, signerPub ed25519.PublicKey, signer ed25519.PrivateKey) map[string]any {
	p := e2eeB64.EncodeToString(pub)
	obj := map[string]any{"user_id": userID, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + p: p}}
	if signer != nil {
		sp := e2eeB64.EncodeToString(signerPub)
		obj = e2eeSign(obj, userID, "ed25519:"+sp, signer)
	}
	return obj
}

// TestCrossSigningUnstablePrefix: matrix-js-sdk's legacy crypto (Cinny
// 4.2 on js-sdk 34) posts /_matrix/client/unstable/keys/device_signing/
// upload, and the Rust SDK's history starts the signature and backup
// endpoints there: they answer as under v3, with the same permission. A
// failed upload stores none of its keys, so the client's retry is again a
// first upload (no UIA) rather than a half set-up account.
func TestCrossSigningUnstablePrefix(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := newE2EERaw(Register(t, srv.URL, "alice", "alice-pass-1", false))
		un := srv.URL + "/_matrix/client/unstable"
		mPub, mPriv, _ := ed25519.GenerateKey(rand.Reader)
		sPub, sPriv, _ := ed25519.GenerateKey(rand.Reader)
		uPub, _, _ := ed25519.GenerateKey(rand.Reader)
		_, wrong, _ := ed25519.GenerateKey(rand.Reader)

		// A self-signing key not signed by the master key: refused whole.
		bad := map[string]any{
			"master_key":       xsKeyObj(alice.userID, "master", mPub, nil, nil),
			"self_signing_key": xsKeyObj(alice.userID, "self_signing", sPub, mPub, wrong),
		}
		raw(t, "POST", un+"/keys/device_signing/upload", alice.token, bad).wantErr(t, "badly signed upload", 400, "M_INVALID_SIGNATURE")
		q := raw(t, "POST", srv.URL+"/_matrix/client/v3/keys/query", alice.token, map[string]any{"device_keys": map[string]any{alice.userID: []string{}}})
		if q.Status != 200 || dig(q.Body, "master_keys", alice.userID) != nil {
			t.Fatalf("a refused upload left a master key: %s", q.Raw)
		}

		// The retry needs no UIA: nothing was stored.
		good := map[string]any{
			"master_key":       xsKeyObj(alice.userID, "master", mPub, nil, nil),
			"self_signing_key": xsKeyObj(alice.userID, "self_signing", sPub, mPub, mPriv),
			"user_signing_key": xsKeyObj(alice.userID, "user_signing", uPub, mPub, mPriv),
		}
		if r := raw(t, "POST", un+"/keys/device_signing/upload", alice.token, good); r.Status != 200 {
			t.Fatalf("unstable device_signing/upload: %d %s", r.Status, r.Raw)
		}
		q = raw(t, "POST", srv.URL+"/_matrix/client/v3/keys/query", alice.token, map[string]any{"device_keys": map[string]any{alice.userID: []string{}}})
		for _, k := range []string{"master_keys", "self_signing_keys", "user_signing_keys"} {
			if dig(q.Body, k, alice.userID) == nil {
				t.Fatalf("%s missing after the upload: %s", k, q.Raw)
			}
		}

		// The device's keys, signed by the self-signing key, through the
		// unstable signatures endpoint.
		if r := raw(t, "POST", srv.URL+"/_matrix/client/v3/keys/upload", alice.token, map[string]any{"device_keys": alice.deviceKeys()}); r.Status != 200 {
			t.Fatalf("keys/upload: %d %s", r.Status, r.Raw)
		}
		// Sign what is stored (deviceKeys draws a new curve key each call).
		q = raw(t, "POST", srv.URL+"/_matrix/client/v3/keys/query", alice.token, map[string]any{"device_keys": map[string]any{alice.userID: []string{alice.deviceID}}})
		stored, ok := dig(q.Body, "device_keys", alice.userID, alice.deviceID).(map[string]any)
		if !ok {
			t.Fatalf("device keys not stored: %s", q.Raw)
		}
		delete(stored, "unsigned")
		signed := e2eeSign(stored, alice.userID, "ed25519:"+e2eeB64.EncodeToString(sPub), sPriv)
		r := raw(t, "POST", un+"/keys/signatures/upload", alice.token, map[string]any{alice.userID: map[string]any{alice.deviceID: signed}})
		if r.Status != 200 {
			t.Fatalf("unstable signatures/upload: %d %s", r.Status, r.Raw)
		}
		if f, _ := r.Body["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("signature refused: %s", r.Raw)
		}

		// Key backup under /unstable.
		r = raw(t, "POST", un+"/room_keys/version", alice.token, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}})
		if r.Status != 200 || r.Body["version"] == nil {
			t.Fatalf("unstable room_keys/version: %d %s", r.Status, r.Raw)
		}
		if g := raw(t, "GET", un+"/room_keys/version", alice.token, nil); g.Status != 200 || g.Body["version"] != r.Body["version"] {
			t.Fatalf("unstable GET room_keys/version: %d %s", g.Status, g.Raw)
		}
		// No token: refused as under v3.
		raw(t, "POST", un+"/keys/device_signing/upload", "", good).wantErr(t, "no token", 401, "M_MISSING_TOKEN")
	})
}
