package test

import (
	"fmt"
	"testing"

	"enclave/storage"
)

// TestDehydratedDevices: MSC3814 as matrix-js-sdk's and matrix-rust-sdk's
// DehydratedDeviceManager use it. The dehydrated device is a real device
// for /keys/query and to-device delivery, has no access token, pages its
// inbox through /events without losing messages, and is replaced (old
// device, keys and inbox gone) by the next upload.
func TestDehydratedDevices(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		const pfx = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		cs := e2eeCS(srv.URL)

		raw(t, "GET", srv.URL+pfx, alice.AccessToken, nil).wantErr(t, "no dehydrated device yet", 404, "M_NOT_FOUND")
		raw(t, "DELETE", srv.URL+pfx, alice.AccessToken, nil).wantErr(t, "delete with none", 404, "M_NOT_FOUND")

		put := func(deviceID string, otks int) *e2eeRaw {
			t.Helper()
			dd := newE2EERaw(alice)
			dd.deviceID = deviceID
			keys := map[string]any{}
			for i := 0; i < otks; i++ {
				keys[fmt.Sprintf("signed_curve25519:%s%d", deviceID, i)] = dd.otk(false)
			}
			body := map[string]any{
				"device_id":                   deviceID,
				"device_data":                 map[string]any{"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "pickle-of-" + deviceID},
				"initial_device_display_name": "Dehydrated device",
				"device_keys":                 dd.deviceKeys(),
				"one_time_keys":               keys,
				"fallback_keys":               map[string]any{"signed_curve25519:fb" + deviceID: dd.otk(true)},
			}
			res := mustOK(t, "put dehydrated "+deviceID, raw(t, "PUT", srv.URL+pfx, alice.AccessToken, body))
			if res.Body["device_id"] != deviceID {
				t.Fatalf("put answered %s", res.Raw)
			}
			return dd
		}
		put("DEHYD1", 3)

		got := mustOK(t, "get", raw(t, "GET", srv.URL+pfx, alice.AccessToken, nil))
		if got.Body["device_id"] != "DEHYD1" || got.Body["device_data"].(map[string]any)["device_pickle"] != "pickle-of-DEHYD1" {
			t.Fatalf("get: %s", got.Raw)
		}
		// Bob sees the device and its keys, and can claim one of its keys.
		q := mustOK(t, "keys/query", raw(t, "POST", cs+"/keys/query", bob.AccessToken, map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}}))
		devs, _ := q.Body["device_keys"].(map[string]any)[alice.UserID].(map[string]any)
		if k, _ := devs["DEHYD1"].(map[string]any); k == nil || k["device_id"] != "DEHYD1" {
			t.Fatalf("keys/query misses the dehydrated device: %s", q.Raw)
		}
		cl := mustOK(t, "claim", raw(t, "POST", cs+"/keys/claim", bob.AccessToken, map[string]any{"one_time_keys": map[string]any{alice.UserID: map[string]string{"DEHYD1": "signed_curve25519"}}}))
		if k, _ := cl.Body["one_time_keys"].(map[string]any)[alice.UserID].(map[string]any)["DEHYD1"].(map[string]any); len(k) != 1 {
			t.Fatalf("claim: %s", cl.Raw)
		}
		// It has no access token: no session of alice's is it.
		if n := countTokens(t, srv, alice.UserID, "DEHYD1"); n != 0 {
			t.Fatalf("dehydrated device has %d access tokens", n)
		}

		// 150 to-device messages for it: two pages and an empty last one,
		// in order, and still there after being read.
		const total = 150
		for i := 0; i < total; i++ {
			mustOK(t, "sendToDevice", raw(t, "PUT", fmt.Sprintf("%s/sendToDevice/m.room.encrypted/txn%d", cs, i), bob.AccessToken,
				map[string]any{"messages": map[string]any{alice.UserID: map[string]any{"DEHYD1": map[string]any{"n": i}}}}))
		}
		events := func(deviceID, next string) rawResp {
			body := map[string]any{}
			if next != "" {
				body["next_batch"] = next
			}
			return raw(t, "POST", srv.URL+pfx+"/"+deviceID+"/events", alice.AccessToken, body)
		}
		read := func() (int, int) {
			t.Helper()
			n, pages, next := 0, 0, ""
			for {
				res := mustOK(t, "events", events("DEHYD1", next))
				evs, _ := res.Body["events"].([]any)
				next, _ = res.Body["next_batch"].(string)
				if next == "" {
					t.Fatalf("events without next_batch: %s", res.Raw)
				}
				if len(evs) == 0 {
					return n, pages
				}
				pages++
				for _, e := range evs {
					ev := e.(map[string]any)
					if ev["sender"] != bob.UserID || ev["type"] != "m.room.encrypted" || ev["content"].(map[string]any)["n"] != float64(n) {
						t.Fatalf("event %d: %v", n, ev)
					}
					n++
				}
			}
		}
		if n, pages := read(); n != total || pages != 2 {
			t.Fatalf("read %d events in %d pages, want %d in 2", n, pages, total)
		}
		if n, _ := read(); n != total {
			t.Fatalf("a second rehydration attempt read %d events, want %d (MSC3814 keeps them)", n, total)
		}
		events("ALICEDEV", "").wantErr(t, "events of a device that is not the dehydrated one", 403, "M_FORBIDDEN")
		events("DEHYD1", "garbage").wantErr(t, "bad next_batch", 400, "M_INVALID_PARAM")

		// A device ID alice already uses is refused.
		dd := newE2EERaw(alice)
		clash := raw(t, "PUT", srv.URL+pfx, alice.AccessToken, map[string]any{"device_id": alice.DeviceID, "device_data": map[string]any{"algorithm": "x"}, "device_keys": dd.deviceKeys()})
		clash.wantErr(t, "dehydrated device with a logged-in device's ID", 400, "M_INVALID_PARAM")

		// Replacing it deletes the old device, its keys and its inbox.
		put("DEHYD2", 1)
		if _, err := storage.GetDevice(ctx, srv.DB, alice.UserID, "DEHYD1"); err != storage.ErrNotFound {
			t.Fatalf("old dehydrated device still stored: %v", err)
		}
		if k, err := storage.GetDeviceKeys(ctx, srv.DB, alice.UserID, "DEHYD1"); err != storage.ErrNotFound || k != nil {
			t.Fatalf("old dehydrated device's keys still stored: %v %v", k, err)
		}
		if n, err := storage.PendingToDevice(ctx, srv.DB, alice.UserID, "DEHYD1"); err != nil || n != 0 {
			t.Fatalf("old dehydrated device's inbox: %d %v", n, err)
		}
		events("DEHYD1", "").wantErr(t, "events of the replaced device", 403, "M_FORBIDDEN")
		q = mustOK(t, "keys/query", raw(t, "POST", cs+"/keys/query", bob.AccessToken, map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}}))
		devs, _ = q.Body["device_keys"].(map[string]any)[alice.UserID].(map[string]any)
		if devs["DEHYD1"] != nil || devs["DEHYD2"] == nil {
			t.Fatalf("keys/query after replacement: %s", q.Raw)
		}
		got = mustOK(t, "get", raw(t, "GET", srv.URL+pfx, alice.AccessToken, nil))
		if got.Body["device_id"] != "DEHYD2" || got.Body["device_data"].(map[string]any)["device_pickle"] != "pickle-of-DEHYD2" {
			t.Fatalf("get after replacement: %s", got.Raw)
		}
		// Logging in with its device ID does not give it a token.
		raw(t, "POST", cs+"/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
			"password": "alice-pw", "device_id": "DEHYD2"}).wantErr(t, "login as the dehydrated device", 400, "M_INVALID_PARAM")
		if n := countTokens(t, srv, alice.UserID, "DEHYD2"); n != 0 {
			t.Fatalf("dehydrated device has %d access tokens after a login attempt", n)
		}
		// Another user does not see alice's.
		raw(t, "GET", srv.URL+pfx, bob.AccessToken, nil).wantErr(t, "bob's dehydrated device", 404, "M_NOT_FOUND")

		del := mustOK(t, "delete", raw(t, "DELETE", srv.URL+pfx, alice.AccessToken, nil))
		if del.Body["device_id"] != "DEHYD2" {
			t.Fatalf("delete: %s", del.Raw)
		}
		if _, err := storage.GetDevice(ctx, srv.DB, alice.UserID, "DEHYD2"); err != storage.ErrNotFound {
			t.Fatalf("deleted dehydrated device still stored: %v", err)
		}
		raw(t, "GET", srv.URL+pfx, alice.AccessToken, nil).wantErr(t, "after delete", 404, "M_NOT_FOUND")
		raw(t, "DELETE", srv.URL+pfx, alice.AccessToken, nil).wantErr(t, "second delete", 404, "M_NOT_FOUND")
	})
}

// countTokens counts the access tokens of one device, read from the store.
func countTokens(t *testing.T, srv *Server, userID, deviceID string) int {
	t.Helper()
	n, err := storage.CountDeviceTokens(ctxT(t), srv.DB, userID, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
