package test

// Hand-built E2EE devices: keys signed by the test itself, no client
// crypto library (so other tests can use them without the goolm tag).

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
)

// e2eeRaw is a device whose keys a test builds and signs by hand.
type e2eeRaw struct {
	userID, deviceID, token string
	pub                     ed25519.PublicKey
	priv                    ed25519.PrivateKey
}

func newE2EERaw(r RegisterResult) *e2eeRaw {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return &e2eeRaw{userID: r.UserID, deviceID: r.DeviceID, token: r.AccessToken, pub: pub, priv: priv}
}

// e2eeSign signs obj (without signatures/unsigned) with priv under
// userID/keyID and returns it with the signature added. encoding/json
// sorts keys and writes no spaces: canonical JSON for ASCII content.
func e2eeSign(obj map[string]any, userID, keyID string, priv ed25519.PrivateKey) map[string]any {
	c := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			c[k] = v
		}
	}
	b, _ := json.Marshal(c)
	// Copy the signatures: the caller's object is left untouched.
	sigs := map[string]any{}
	if old, ok := obj["signatures"].(map[string]any); ok {
		for u, m := range old {
			cp := map[string]any{}
			if mm, ok := m.(map[string]any); ok {
				for k, v := range mm {
					cp[k] = v
				}
			}
			sigs[u] = cp
		}
	}
	us, _ := sigs[userID].(map[string]any)
	if us == nil {
		us = map[string]any{}
	}
	us[keyID] = e2eeB64.EncodeToString(ed25519.Sign(priv, b))
	sigs[userID] = us
	out := map[string]any{}
	for k, v := range obj {
		out[k] = v
	}
	out["signatures"] = sigs
	return out
}

func (d *e2eeRaw) deviceKeys() map[string]any {
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	return e2eeSign(map[string]any{
		"user_id":    d.userID,
		"device_id":  d.deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]string{
			"curve25519:" + d.deviceID: e2eeB64.EncodeToString(curve),
			"ed25519:" + d.deviceID:    e2eeB64.EncodeToString(d.pub),
		},
	}, d.userID, "ed25519:"+d.deviceID, d.priv)
}

// otk returns a signed curve25519 key object with a random key.
func (d *e2eeRaw) otk(fallback bool) map[string]any {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	obj := map[string]any{"key": e2eeB64.EncodeToString(k)}
	if fallback {
		obj["fallback"] = true
	}
	return e2eeSign(obj, d.userID, "ed25519:"+d.deviceID, d.priv)
}

// e2eeSyncResp is the E2EE part of a /sync response.
type e2eeSyncResp struct {
	NextBatch string `json:"next_batch"`
	ToDevice  *struct {
		Events []struct {
			Sender  string         `json:"sender"`
			Type    string         `json:"type"`
			Content map[string]any `json:"content"`
		} `json:"events"`
	} `json:"to_device"`
	DeviceLists *struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCounts map[string]int `json:"device_one_time_keys_count"`
	Fallback  *[]string      `json:"device_unused_fallback_key_types"`
}

func (s *e2eeSyncResp) changed() []string {
	if s.DeviceLists == nil {
		return nil
	}
	return s.DeviceLists.Changed
}

func (s *e2eeSyncResp) left() []string {
	if s.DeviceLists == nil {
		return nil
	}
	return s.DeviceLists.Left
}

func (s *e2eeSyncResp) toDeviceCount() int {
	if s.ToDevice == nil {
		return 0
	}
	return len(s.ToDevice.Events)
}

// e2eeSync runs one /sync (since "" = initial) with the given timeout.
func e2eeSync(t testing.TB, baseURL, token, since string, timeoutMs int) *e2eeSyncResp {
	t.Helper()
	u := baseURL + "/_matrix/client/v3/sync?timeout=" + fmt.Sprint(timeoutMs)
	if since != "" {
		u += "&since=" + since
	}
	r := raw(t, "GET", u, token, nil)
	if r.Status != 200 {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
	var out e2eeSyncResp
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// e2eeCS is the client-server API base of a server.
func e2eeCS(baseURL string) string { return baseURL + "/_matrix/client/v3" }

func e2eeContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// e2eeUpload uploads device keys (and optional one-time/fallback keys).
func e2eeUpload(t testing.TB, baseURL string, d *e2eeRaw, body map[string]any) rawResp {
	t.Helper()
	return raw(t, "POST", e2eeCS(baseURL)+"/keys/upload", d.token, body)
}

var e2eeB64 = base64.RawStdEncoding
