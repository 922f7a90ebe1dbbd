//go:build goolm

package test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// TestE2EEMautrix drives the server with mautrix-go's own crypto (goolm, no
// cgo) on both stores: two users exchange encrypted messages, a second
// device joins and decrypts what follows, a deleted device is no longer
// encrypted to, cross-signing makes a device verified, and a key backup
// lets a new device read history.
func TestE2EEMautrix(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := context.Background()
		const pw = "correct horse battery"
		ra := Register(t, srv.URL, "alice", pw, false)
		rb := Register(t, srv.URL, "bob", pw, false)
		a1 := newE2EEDevice(t, "A1", sessionClient(t, srv.URL, ra), pw)
		b1 := newE2EEDevice(t, "B1", sessionClient(t, srv.URL, rb), pw)
		roomID := newE2EERoom(t, a1, []*e2eeDevice{b1}, b1)

		// 1. Both directions decrypt.
		ev1 := a1.send(roomID, "hello bob")
		if got := b1.waitDecrypted(ev1); got != "hello bob" {
			t.Fatalf("B1 decrypted %q", got)
		}
		ev2 := b1.send(roomID, "hello alice")
		if got := a1.waitDecrypted(ev2); got != "hello alice" {
			t.Fatalf("A1 decrypted %q", got)
		}
		e2eeNoPlaintext(t, srv, "hello bob", "hello alice")

		// 2. A second device of Alice decrypts what is sent after it appears:
		// Bob learns of it through device_lists.changed, Alice's first device
		// through its own user's entry.
		a2 := newE2EEDevice(t, "A2", loginClient(t, srv.URL, "alice", pw), pw)
		a2.waitRoomReady(roomID, a1.userID(), b1.userID())
		waitFor(t, "B1 to learn of A2", 20e9, func() bool { return b1.knowsDevice(a2.userID(), a2.deviceID()) })
		waitFor(t, "A1 to learn of A2", 20e9, func() bool { return a1.knowsDevice(a2.userID(), a2.deviceID()) })
		ev3 := b1.send(roomID, "bob after A2")
		if got := a2.waitDecrypted(ev3); got != "bob after A2" {
			t.Fatalf("A2 decrypted %q", got)
		}
		a1.waitDecrypted(ev3)
		ev4 := a1.send(roomID, "alice after A2")
		if got := a2.waitDecrypted(ev4); got != "alice after A2" {
			t.Fatalf("A2 decrypted %q", got)
		}
		b1.waitDecrypted(ev4)
		if _, err := e2eeDecrypt(a2, a2.cli, roomID, ev1); !errors.Is(err, crypto.ErrNoSessionFound) {
			t.Fatalf("A2 on a message sent before it existed: want no session, got %v", err)
		}

		// 3. Bob's second device is deleted: Alice's next message is not
		// encrypted to it.
		b2 := newE2EEDevice(t, "B2", loginClient(t, srv.URL, "bob", pw), pw)
		b2.waitRoomReady(roomID, a1.userID(), b1.userID())
		waitFor(t, "A1 to learn of B2", 20e9, func() bool { return a1.knowsDevice(b2.userID(), b2.deviceID()) })
		ev5 := a1.send(roomID, "to both bobs")
		b1.waitDecrypted(ev5)
		if got := b2.waitDecrypted(ev5); got != "to both bobs" {
			t.Fatalf("B2 decrypted %q", got)
		}
		e2eeDeleteDevice(t, b1, b2.deviceID())
		waitFor(t, "A1 to drop B2 after device_lists", 20e9, func() bool { return !a1.knowsDevice(b2.userID(), b2.deviceID()) })
		ev6 := a1.send(roomID, "after B2 is gone")
		if got := b1.waitDecrypted(ev6); got != "after B2 is gone" {
			t.Fatalf("B1 decrypted %q", got)
		}
		// B2's token is gone, so fetch the ciphertext as B1 and try B2's keys.
		if _, err := e2eeDecrypt(b2, b1.cli, roomID, ev6); !errors.Is(err, crypto.ErrNoSessionFound) {
			t.Fatalf("the deleted device B2 on a message sent after its deletion: want no session, got %v", err)
		}
		if got, err := e2eeDecrypt(b2, b1.cli, roomID, ev5); err != nil || got != "to both bobs" {
			t.Fatalf("B2 on a message sent before its deletion: %q %v", got, err)
		}
		ogs, err := a1.mach.CryptoStore.GetOutboundGroupSession(ctx, roomID)
		if err != nil || ogs == nil {
			t.Fatalf("A1 outbound session: %v", err)
		}
		if _, ok := ogs.Users[crypto.UserDevice{UserID: b2.userID(), DeviceID: b2.deviceID()}]; ok {
			t.Fatalf("A1's new Megolm session was shared with the deleted device")
		}
		if _, ok := ogs.Users[crypto.UserDevice{UserID: b1.userID(), DeviceID: b1.deviceID()}]; !ok {
			t.Fatalf("A1's new Megolm session was not shared with B1")
		}
		q, err := a1.cli.QueryKeys(ctxT(t), &mautrix.ReqQueryKeys{DeviceKeys: map[id.UserID]mautrix.DeviceIDList{b1.userID(): {}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.DeviceKeys[b1.userID()][b2.deviceID()]; ok {
			t.Fatalf("/keys/query still lists the deleted device")
		}
		if n, err := storage.PendingToDevice(ctx, srv.DB, b2.userID().String(), b2.deviceID().String()); err != nil || n != 0 {
			t.Fatalf("deleted device still has %d queued to-device messages (%v)", n, err)
		}

		// 4. Cross-signing: the first upload needs no UIA; Bob signs Alice's
		// master key and then sees her cross-signed device as verified.
		calls := 0
		aKeys, err := a1.mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatal(err)
		}
		if err := a1.mach.PublishCrossSigningKeys(ctxT(t), aKeys, a1.passwordUIA(&calls)); err != nil {
			t.Fatalf("publish cross-signing keys: %v", err)
		}
		if calls != 0 {
			t.Fatalf("the first cross-signing upload asked for UIA")
		}
		if err := a1.mach.SignOwnDevice(ctxT(t), a1.mach.OwnIdentity()); err != nil {
			t.Fatalf("sign own device: %v", err)
		}
		if err := a1.mach.SignOwnMasterKey(ctxT(t)); err != nil {
			t.Fatalf("sign own master key: %v", err)
		}
		bKeys, err := b1.mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatal(err)
		}
		if err := b1.mach.PublishCrossSigningKeys(ctxT(t), bKeys, b1.passwordUIA(&calls)); err != nil {
			t.Fatalf("bob publish: %v", err)
		}
		waitFor(t, "B1 to see Alice's cross-signed device", 20e9, func() bool {
			dev, err := b1.mach.CryptoStore.GetDevice(ctx, a1.userID(), a1.deviceID())
			if err != nil || dev == nil {
				return false
			}
			trust, _ := b1.mach.ResolveTrustContext(ctx, dev)
			return trust == id.TrustStateCrossSignedTOFU
		})
		aPub, err := b1.mach.GetCrossSigningPublicKeys(ctx, a1.userID())
		if err != nil || aPub == nil || aPub.MasterKey != aKeys.MasterKey.PublicKey() {
			t.Fatalf("Bob's view of Alice's master key: %+v %v", aPub, err)
		}
		if err := b1.mach.SignUser(ctxT(t), a1.userID(), aPub.MasterKey); err != nil {
			t.Fatalf("bob signs alice: %v", err)
		}
		// A fresh fetch from the server (not Bob's local cache) must carry
		// the signatures that make Alice's device verified.
		if _, err := b1.mach.FetchKeys(ctxT(t), []id.UserID{a1.userID()}, true); err != nil {
			t.Fatal(err)
		}
		devA1, _ := b1.mach.CryptoStore.GetDevice(ctx, a1.userID(), a1.deviceID())
		if trust, err := b1.mach.ResolveTrustContext(ctx, devA1); trust != id.TrustStateCrossSignedVerified {
			t.Fatalf("Alice's cross-signed device is %s to Bob, want verified (%v)", trust, err)
		}
		devA2, _ := b1.mach.CryptoStore.GetDevice(ctx, a2.userID(), a2.deviceID())
		if devA2 == nil || b1.mach.IsDeviceTrusted(ctx, devA2) {
			t.Fatalf("Alice's unsigned device A2 is trusted")
		}
		// Replacing existing keys needs UIA: mautrix first gets a 401 with a
		// session, then repeats with m.login.password.
		aKeys2, _ := a1.mach.GenerateCrossSigningKeys()
		if err := a1.mach.PublishCrossSigningKeys(ctxT(t), aKeys2, a1.passwordUIA(&calls)); err != nil {
			t.Fatalf("replace cross-signing keys: %v", err)
		}
		if calls != 1 {
			t.Fatalf("replacing cross-signing keys asked for UIA %d times, want 1", calls)
		}
		waitFor(t, "B1 to see Alice's new master key via device_lists", 20e9, func() bool {
			k, err := b1.mach.CryptoStore.GetCrossSigningKeys(ctx, a1.userID())
			return err == nil && k[id.XSUsageMaster].Key == aKeys2.MasterKey.PublicKey()
		})

		// 5. Key backup: Alice backs up her room keys; a new device restores
		// them and decrypts history it never received keys for.
		bk, err := backup.NewMegolmBackupKey()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a1.cli.GetKeyBackupLatestVersion(ctxT(t)); err == nil {
			t.Fatalf("GET room_keys/version answered before any backup existed")
		} else {
			wantMatrixErr(t, "no backup yet", err, 404, "M_NOT_FOUND")
		}
		ver, err := a1.cli.CreateKeyBackupVersion(ctxT(t), &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
			AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(bk.PublicKey().Bytes()))},
		})
		if err != nil {
			t.Fatalf("create backup: %v", err)
		}
		n := e2eeUploadBackup(t, a1, ver.Version, bk)
		if n < 2 {
			t.Fatalf("Alice had only %d sessions to back up", n)
		}
		info, err := a1.cli.GetKeyBackupLatestVersion(ctxT(t))
		if err != nil || info.Count != n || info.Version != ver.Version {
			t.Fatalf("backup info %+v (%v), want %d keys", info, err, n)
		}
		a3 := newE2EEDevice(t, "A3", loginClient(t, srv.URL, "alice", pw), pw)
		a3.waitRoomReady(roomID, a1.userID(), b1.userID())
		if _, err := e2eeDecrypt(a3, a3.cli, roomID, ev2); !errors.Is(err, crypto.ErrNoSessionFound) {
			t.Fatalf("A3 on history before restoring the backup: want no session, got %v", err)
		}
		if v, err := a3.mach.DownloadAndStoreLatestKeyBackup(ctxT(t), bk); err != nil || v != ver.Version {
			t.Fatalf("restore backup: %q %v", v, err)
		}
		for ev, want := range map[id.EventID]string{ev1: "hello bob", ev2: "hello alice", ev3: "bob after A2", ev6: "after B2 is gone"} {
			got, err := e2eeDecrypt(a3, a3.cli, roomID, ev)
			if err != nil || got != want {
				t.Fatalf("A3 after restore: %s decrypted to %q (%v), want %q", ev, got, err, want)
			}
		}
	})
}

// e2eeDecrypt fetches an event with fetcher and decrypts it with the
// device's own keys (no waiting, no key requests).
func e2eeDecrypt(d *e2eeDevice, fetcher *mautrix.Client, roomID id.RoomID, evID id.EventID) (string, error) {
	ev, err := fetcher.GetEvent(ctxT(d.t), roomID, evID)
	if err != nil {
		d.t.Fatalf("fetching %s: %v", evID, err)
	}
	if err := ev.Content.ParseRaw(ev.Type); err != nil {
		return "", err
	}
	out, err := d.mach.DecryptMegolmEvent(context.Background(), ev)
	if err != nil {
		return "", err
	}
	return body(out), nil
}

// e2eeDeleteDevice deletes a device with DELETE /devices/{id}, answering the
// 401 challenge with the password, as Element does.
func e2eeDeleteDevice(t testing.TB, by *e2eeDevice, devID id.DeviceID) {
	t.Helper()
	url := by.cli.BuildClientURL("v3", "devices", devID)
	r := raw(t, "DELETE", url, by.cli.AccessToken, map[string]any{})
	var uia mautrix.RespUserInteractive
	if r.Status != 401 || json.Unmarshal(r.Raw, &uia) != nil || uia.Session == "" || !uia.HasSingleStageFlow(mautrix.AuthTypePassword) {
		t.Fatalf("delete without auth: want 401 with a password UIA session, got %d %s", r.Status, r.Raw)
	}
	calls := 0
	auth := by.passwordUIA(&calls)(&uia)
	if err := by.cli.DeleteDevice(ctxT(t), devID, &mautrix.ReqDeleteDevice[any]{Auth: auth}); err != nil {
		t.Fatalf("delete with password: %v", err)
	}
}

// e2eeUploadBackup backs up every inbound Megolm session of the device,
// encrypted to the backup key, and returns how many.
func e2eeUploadBackup(t testing.TB, d *e2eeDevice, version id.KeyBackupVersion, bk *backup.MegolmBackupKey) int {
	t.Helper()
	sessions, err := d.mach.CryptoStore.GetAllGroupSessions(context.Background()).AsList()
	if err != nil {
		t.Fatal(err)
	}
	req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}}
	for _, s := range sessions {
		idx := s.Internal.FirstKnownIndex()
		key, err := s.Internal.Export(idx)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := backup.EncryptSessionData(bk, backup.MegolmSessionData{
			Algorithm:          id.AlgorithmMegolmV1,
			ForwardingKeyChain: s.ForwardingChains,
			SenderClaimedKeys:  backup.SenderClaimedKeys{Ed25519: s.SigningKey},
			SenderKey:          s.SenderKey,
			SessionKey:         string(key),
		})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(enc)
		rk := req.Rooms[s.RoomID]
		if rk.Sessions == nil {
			rk.Sessions = map[id.SessionID]mautrix.ReqKeyBackupData{}
		}
		rk.Sessions[s.ID()] = mautrix.ReqKeyBackupData{FirstMessageIndex: int(idx), ForwardedCount: len(s.ForwardingChains), IsVerified: true, SessionData: raw}
		req.Rooms[s.RoomID] = rk
	}
	resp, err := d.cli.PutKeysInBackup(ctxT(t), version, req)
	if err != nil {
		t.Fatalf("upload backup: %v", err)
	}
	if resp.Count != len(sessions) {
		t.Fatalf("backup count %d after uploading %d sessions", resp.Count, len(sessions))
	}
	return len(sessions)
}

// e2eeNoPlaintext checks that no stored event or queued message holds
// any of the strings: the server only ever sees ciphertext.
func e2eeNoPlaintext(t testing.TB, srv *Server, texts ...string) {
	t.Helper()
	for _, s := range texts {
		var n int
		err := srv.DB.QueryRowContext(context.Background(), `SELECT (SELECT COUNT(*) FROM events WHERE json LIKE $1) + (SELECT COUNT(*) FROM e2ee_to_device WHERE content LIKE $1)`, "%"+s+"%").Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("plaintext %q is stored on the server (%d rows)", s, n)
		}
	}
}

// e2eeRoomRaw creates a private room as creator, invites and joins the others.
func e2eeRoomRaw(t testing.TB, baseURL string, creator RegisterResult, others ...RegisterResult) string {
	t.Helper()
	var invite []string
	for _, o := range others {
		invite = append(invite, o.UserID)
	}
	r := raw(t, "POST", e2eeCS(baseURL)+"/createRoom", creator.AccessToken, map[string]any{"preset": "private_chat", "invite": invite})
	if r.Status != 200 {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	roomID := r.Body["room_id"].(string)
	for _, o := range others {
		if j := raw(t, "POST", e2eeCS(baseURL)+"/join/"+roomID, o.AccessToken, map[string]any{}); j.Status != 200 {
			t.Fatalf("join: %d %s", j.Status, j.Raw)
		}
	}
	return roomID
}

// e2eeLogin logs localpart in again: a new device.
func e2eeLogin(t testing.TB, baseURL, localpart, pw string) RegisterResult {
	t.Helper()
	r := raw(t, "POST", e2eeCS(baseURL)+"/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": localpart}, "password": pw})
	if r.Status != 200 {
		t.Fatalf("login %s: %d %s", localpart, r.Status, r.Raw)
	}
	return RegisterResult{UserID: r.Body["user_id"].(string), AccessToken: r.Body["access_token"].(string), DeviceID: r.Body["device_id"].(string)}
}

// TestE2EEProtocol checks the E2EE endpoints' rules on the wire, on both
// stores: key upload validation, one-time keys claimed once under 50
// concurrent claims then the fallback key, to-device delivery exactly once
// with the per-response limit, device-list tracking in /sync and
// /keys/changes, device management with UIA, cross-signing and signature
// validation, and key backup.
func TestE2EEProtocol(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		url := srv.URL
		cs := e2eeCS(url)
		const pw = "protocol password"

		t.Run("upload", func(t *testing.T) {
			u := newE2EERaw(Register(t, url, "uploader", pw, false))
			bad := u.deviceKeys()
			bad["user_id"] = "@someone:localhost"
			e2eeUpload(t, url, u, map[string]any{"device_keys": bad}).wantErr(t, "foreign user_id", 400, "M_INVALID_PARAM")
			bad = u.deviceKeys()
			bad["device_id"] = "OTHERDEVICE"
			e2eeUpload(t, url, u, map[string]any{"device_keys": bad}).wantErr(t, "foreign device_id", 400, "M_INVALID_PARAM")
			q := raw(t, "POST", cs+"/keys/query", u.token, map[string]any{"device_keys": map[string]any{u.userID: []string{}}})
			if devs := q.Body["device_keys"].(map[string]any)[u.userID].(map[string]any); len(devs) != 0 {
				t.Fatalf("rejected uploads stored keys: %v", devs)
			}
			otks := map[string]any{}
			for i := range 5 {
				otks[fmt.Sprintf("signed_curve25519:K%d", i)] = u.otk(false)
			}
			r := e2eeUpload(t, url, u, map[string]any{"device_keys": u.deviceKeys(), "one_time_keys": otks,
				"fallback_keys": map[string]any{"signed_curve25519:FB1": u.otk(true)}})
			if r.Status != 200 || r.Body["one_time_key_counts"].(map[string]any)["signed_curve25519"].(float64) != 5 {
				t.Fatalf("upload: %d %s", r.Status, r.Raw)
			}
			// The same keys again (a retry) are fine; a different key under a
			// used ID is rejected and nothing of that request is stored.
			if r := e2eeUpload(t, url, u, map[string]any{"one_time_keys": otks}); r.Status != 200 {
				t.Fatalf("identical re-upload: %d %s", r.Status, r.Raw)
			}
			e2eeUpload(t, url, u, map[string]any{"one_time_keys": map[string]any{
				"signed_curve25519:K1":  u.otk(false),
				"signed_curve25519:NEW": u.otk(false),
			}}).wantErr(t, "different key under a used ID", 400, "M_INVALID_PARAM")
			r = e2eeUpload(t, url, u, map[string]any{})
			if n := r.Body["one_time_key_counts"].(map[string]any)["signed_curve25519"].(float64); n != 5 {
				t.Fatalf("after a rejected upload the count is %v, want 5", n)
			}
			s := e2eeSync(t, url, u.token, "", 0)
			if s.OTKCounts["signed_curve25519"] != 5 || s.Fallback == nil || len(*s.Fallback) != 1 || (*s.Fallback)[0] != "signed_curve25519" {
				t.Fatalf("sync key counts %v fallback %v", s.OTKCounts, s.Fallback)
			}
			if s.DeviceLists != nil {
				t.Fatalf("initial sync carries device_lists: %+v", s.DeviceLists)
			}
			q = raw(t, "POST", cs+"/keys/query", u.token, map[string]any{"device_keys": map[string]any{u.userID: []string{}}})
			dev := q.Body["device_keys"].(map[string]any)[u.userID].(map[string]any)[u.deviceID].(map[string]any)
			if dev["keys"].(map[string]any)["ed25519:"+u.deviceID] != e2eeB64.EncodeToString(u.pub) {
				t.Fatalf("query returned %v", dev)
			}
			if _, ok := dev["unsigned"]; !ok {
				t.Fatalf("query result has no unsigned section: %v", dev)
			}
			// Users of other servers go to federation; without it they are
			// reported as failures, not errors.
			q = raw(t, "POST", cs+"/keys/query", u.token, map[string]any{"device_keys": map[string]any{"@x:remote.example": []string{}}})
			if q.Status != 200 || q.Body["failures"].(map[string]any)["remote.example"] == nil {
				t.Fatalf("remote query: %d %s", q.Status, q.Raw)
			}
			c := raw(t, "POST", cs+"/keys/claim", u.token, map[string]any{"one_time_keys": map[string]any{"@x:remote.example": map[string]string{"D": "signed_curve25519"}}})
			if c.Status != 200 || c.Body["failures"].(map[string]any)["remote.example"] == nil {
				t.Fatalf("remote claim: %d %s", c.Status, c.Raw)
			}
			raw(t, "POST", cs+"/keys/query", u.token, map[string]any{"device_keys": map[string]any{"not-a-user": []string{}}}).wantErr(t, "bad user ID", 400, "M_INVALID_PARAM")
			raw(t, "POST", cs+"/keys/query", u.token, map[string]any{}).wantErr(t, "no device_keys", 400, "M_MISSING_PARAM")
		})

		t.Run("claim", func(t *testing.T) {
			owner := newE2EERaw(Register(t, url, "claimee", pw, false))
			claimer := Register(t, url, "claimer", pw, false)
			otks := map[string]any{}
			pubs := map[string]string{}
			for i := range 10 {
				k := owner.otk(false)
				id := fmt.Sprintf("signed_curve25519:AAAA%02d", i)
				otks[id] = k
				pubs[id] = k["key"].(string)
			}
			fb := owner.otk(true)
			if r := e2eeUpload(t, url, owner, map[string]any{"device_keys": owner.deviceKeys(), "one_time_keys": otks,
				"fallback_keys": map[string]any{"signed_curve25519:FALLBACK": fb}}); r.Status != 200 {
				t.Fatalf("upload: %d %s", r.Status, r.Raw)
			}
			var mu sync.Mutex
			got := map[string]int{}
			var wg sync.WaitGroup
			for range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := raw(t, "POST", cs+"/keys/claim", claimer.AccessToken, map[string]any{
						"one_time_keys": map[string]any{owner.userID: map[string]string{owner.deviceID: "signed_curve25519", "NOSUCHDEVICE": "signed_curve25519"}}})
					if r.Status != 200 {
						t.Errorf("claim: %d %s", r.Status, r.Raw)
						return
					}
					keys := r.Body["one_time_keys"].(map[string]any)[owner.userID].(map[string]any)
					if _, ok := keys["NOSUCHDEVICE"]; ok {
						t.Errorf("a key was claimed for an unknown device")
					}
					dk := keys[owner.deviceID].(map[string]any)
					if len(dk) != 1 {
						t.Errorf("claim returned %d keys for one device", len(dk))
					}
					for id, k := range dk {
						key := k.(map[string]any)["key"].(string)
						mu.Lock()
						got[id+"="+key]++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			for id, pub := range pubs {
				if n := got[id+"="+pub]; n != 1 {
					t.Fatalf("one-time key %s handed out %d times, want exactly once", id, n)
				}
			}
			if n := got["signed_curve25519:FALLBACK="+fb["key"].(string)]; n != 40 {
				t.Fatalf("fallback key handed out %d times, want 40 (claims: %v)", n, got)
			}
			if len(got) != 11 {
				t.Fatalf("unexpected keys handed out: %v", got)
			}
			s := e2eeSync(t, url, owner.token, "", 0)
			if s.OTKCounts["signed_curve25519"] != 0 || s.Fallback == nil || len(*s.Fallback) != 0 {
				t.Fatalf("after the claims: counts %v, unused fallback %v (want 0 and none)", s.OTKCounts, s.Fallback)
			}
			// A new fallback key is unused again.
			e2eeUpload(t, url, owner, map[string]any{"fallback_keys": map[string]any{"signed_curve25519:FALLBACK2": owner.otk(true)}})
			if s := e2eeSync(t, url, owner.token, "", 0); len(*s.Fallback) != 1 {
				t.Fatalf("new fallback key not reported unused: %v", *s.Fallback)
			}
		})

		t.Run("todevice", func(t *testing.T) {
			sender := Register(t, url, "tdsender", pw, false)
			r1 := Register(t, url, "tdrecv", pw, false)
			r2 := e2eeLogin(t, url, "tdrecv", pw)
			send := func(txn string, to map[string]any) {
				t.Helper()
				r := raw(t, "PUT", cs+"/sendToDevice/m.test.msg/"+txn, sender.AccessToken, map[string]any{"messages": to})
				if r.Status != 200 {
					t.Fatalf("sendToDevice: %d %s", r.Status, r.Raw)
				}
			}
			t1 := e2eeSync(t, url, r1.AccessToken, "", 0).NextBatch
			t2 := e2eeSync(t, url, r2.AccessToken, "", 0).NextBatch
			msg := map[string]any{r1.UserID: map[string]any{r1.DeviceID: map[string]any{"n": 1}, "GHOSTDEVICE": map[string]any{"n": -1}}}
			send("txn1", msg)
			send("txn1", msg) // a retry: no duplicate
			s := e2eeSync(t, url, r1.AccessToken, t1, 0)
			if s.toDeviceCount() != 1 || s.ToDevice.Events[0].Sender != sender.UserID || s.ToDevice.Events[0].Type != "m.test.msg" || s.ToDevice.Events[0].Content["n"] != float64(1) {
				t.Fatalf("first delivery: %+v", s.ToDevice)
			}
			// The response was "lost": the same since-token gets it again;
			// the next token acknowledges it.
			again := e2eeSync(t, url, r1.AccessToken, t1, 0)
			if again.toDeviceCount() != 1 {
				t.Fatalf("retry with the old token got %d messages, want the unacknowledged 1", again.toDeviceCount())
			}
			t1 = again.NextBatch
			if s := e2eeSync(t, url, r1.AccessToken, t1, 0); s.toDeviceCount() != 0 {
				t.Fatalf("acknowledged message delivered again")
			}
			if n, _ := storage.PendingToDevice(context.Background(), srv.DB, r1.UserID, r1.DeviceID); n != 0 {
				t.Fatalf("acknowledged message still queued (%d)", n)
			}
			// Wildcard reaches every device; the other device saw nothing before.
			send("txn2", map[string]any{r1.UserID: map[string]any{"*": map[string]any{"n": 2}}})
			for _, c := range []struct {
				tok, since string
			}{{r1.AccessToken, t1}, {r2.AccessToken, t2}} {
				s := e2eeSync(t, url, c.tok, c.since, 0)
				if s.toDeviceCount() != 1 || s.ToDevice.Events[0].Content["n"] != float64(2) {
					t.Fatalf("wildcard delivery: %+v", s.ToDevice)
				}
				if c.tok == r1.AccessToken {
					t1 = s.NextBatch
				}
			}
			// 150 messages: 100 in one response, the rest in the next, in order.
			for i := range 150 {
				send(fmt.Sprintf("bulk%d", i), map[string]any{r1.UserID: map[string]any{r1.DeviceID: map[string]any{"n": 1000 + i}}})
			}
			var seq []float64
			for range 3 {
				s := e2eeSync(t, url, r1.AccessToken, t1, 0)
				if s.toDeviceCount() > 100 {
					t.Fatalf("%d to-device messages in one response", s.toDeviceCount())
				}
				for _, e := range s.ToDevice.Events {
					seq = append(seq, e.Content["n"].(float64))
				}
				t1 = s.NextBatch
			}
			if len(seq) != 150 {
				t.Fatalf("got %d of 150 messages", len(seq))
			}
			for i, n := range seq {
				if n != float64(1000+i) {
					t.Fatalf("message %d is %v: out of order or duplicated", i, n)
				}
			}
			// A long-poll wakes for a new message.
			done := make(chan *e2eeSyncResp, 1)
			go func() { done <- e2eeSync(t, url, r1.AccessToken, t1, 10000) }()
			time.Sleep(200 * time.Millisecond)
			start := time.Now()
			send("wake", map[string]any{r1.UserID: map[string]any{r1.DeviceID: map[string]any{"n": 3}}})
			if s := <-done; s.toDeviceCount() != 1 || time.Since(start) > 5*time.Second {
				t.Fatalf("long-poll: %d messages after %v", s.toDeviceCount(), time.Since(start))
			}
			raw(t, "PUT", cs+"/sendToDevice/m.test.msg/x", sender.AccessToken, map[string]any{}).wantErr(t, "no messages", 400, "M_MISSING_PARAM")
		})

		t.Run("devicelists", func(t *testing.T) {
			ru := Register(t, url, "dlu", pw, false)
			rv := Register(t, url, "dlv", pw, false)
			rw := Register(t, url, "dlw", pw, false)
			roomID := e2eeRoomRaw(t, url, ru, rv)
			since := e2eeSync(t, url, ru.AccessToken, "", 0).NextBatch
			// V (room-mate) gets a new device with keys; W (stranger) too.
			v2 := newE2EERaw(e2eeLogin(t, url, "dlv", pw))
			e2eeUpload(t, url, v2, map[string]any{"device_keys": v2.deviceKeys()})
			w := newE2EERaw(rw)
			e2eeUpload(t, url, w, map[string]any{"device_keys": w.deviceKeys()})
			s := e2eeSync(t, url, ru.AccessToken, since, 0)
			if !e2eeContains(s.changed(), rv.UserID) || e2eeContains(s.changed(), rw.UserID) {
				t.Fatalf("changed = %v, want %s and not %s", s.changed(), rv.UserID, rw.UserID)
			}
			ch := raw(t, "GET", cs+"/keys/changes?from="+since+"&to="+s.NextBatch, ru.AccessToken, nil)
			if ch.Status != 200 || fmt.Sprint(ch.Body["changed"]) != fmt.Sprint([]any{rv.UserID}) {
				t.Fatalf("/keys/changes: %d %s", ch.Status, ch.Raw)
			}
			since = s.NextBatch
			// W joins a room U is in: a new room-mate counts as changed.
			raw(t, "POST", cs+"/rooms/"+roomID+"/invite", ru.AccessToken, map[string]any{"user_id": rw.UserID})
			raw(t, "POST", cs+"/join/"+roomID, rw.AccessToken, map[string]any{})
			s = e2eeSync(t, url, ru.AccessToken, since, 0)
			if !e2eeContains(s.changed(), rw.UserID) {
				t.Fatalf("after W joined, changed = %v", s.changed())
			}
			since = s.NextBatch
			// V leaves the only shared room: left.
			raw(t, "POST", cs+"/rooms/"+roomID+"/leave", rv.AccessToken, map[string]any{})
			s = e2eeSync(t, url, ru.AccessToken, since, 0)
			if !e2eeContains(s.left(), rv.UserID) || e2eeContains(s.changed(), rv.UserID) {
				t.Fatalf("after V left: changed %v left %v", s.changed(), s.left())
			}
			since = s.NextBatch
			// V's changes are no longer U's business.
			v3 := newE2EERaw(e2eeLogin(t, url, "dlv", pw))
			e2eeUpload(t, url, v3, map[string]any{"device_keys": v3.deviceKeys()})
			// U's own new device is reported to U; a long-poll wakes for it.
			done := make(chan *e2eeSyncResp, 1)
			go func() { done <- e2eeSync(t, url, ru.AccessToken, since, 10000) }()
			time.Sleep(200 * time.Millisecond)
			u2 := newE2EERaw(e2eeLogin(t, url, "dlu", pw))
			start := time.Now()
			e2eeUpload(t, url, u2, map[string]any{"device_keys": u2.deviceKeys()})
			s = <-done
			if !e2eeContains(s.changed(), ru.UserID) || e2eeContains(s.changed(), rv.UserID) || time.Since(start) > 5*time.Second {
				t.Fatalf("own new device: changed %v after %v", s.changed(), time.Since(start))
			}
			since = s.NextBatch
			// Deleting a device with keys tells room-mates (W shares the room).
			wSince := e2eeSync(t, url, rw.AccessToken, "", 0).NextBatch
			r := raw(t, "POST", cs+"/delete_devices", ru.AccessToken, map[string]any{"devices": []string{u2.deviceID}})
			sess, _ := r.Body["session"].(string)
			if r.Status != 401 || sess == "" {
				t.Fatalf("delete_devices without auth: %d %s", r.Status, r.Raw)
			}
			r = raw(t, "POST", cs+"/delete_devices", ru.AccessToken, map[string]any{"devices": []string{u2.deviceID},
				"auth": map[string]any{"type": "m.login.password", "session": sess, "password": pw, "identifier": map[string]string{"type": "m.id.user", "user": ru.UserID}}})
			if r.Status != 200 {
				t.Fatalf("delete_devices: %d %s", r.Status, r.Raw)
			}
			if s := e2eeSync(t, url, rw.AccessToken, wSince, 0); !e2eeContains(s.changed(), ru.UserID) {
				t.Fatalf("room-mate not told of the deleted device: %v", s.changed())
			}
			raw(t, "GET", cs+"/keys/changes?from=x&to=y", ru.AccessToken, nil).wantErr(t, "bad tokens", 400, "M_INVALID_PARAM")
		})

		t.Run("devices", func(t *testing.T) {
			r := Register(t, url, "devuser", pw, false)
			other := e2eeLogin(t, url, "devuser", pw)
			waitFor(t, "last_seen_ip", 5e9, func() bool {
				g := raw(t, "GET", cs+"/devices/"+r.DeviceID, r.AccessToken, nil)
				return g.Status == 200 && g.Body["last_seen_ip"] == "127.0.0.1" && g.Body["last_seen_ts"].(float64) > 0
			})
			l := raw(t, "GET", cs+"/devices", r.AccessToken, nil)
			if devs := l.Body["devices"].([]any); l.Status != 200 || len(devs) != 2 {
				t.Fatalf("GET /devices: %d %s", l.Status, l.Raw)
			}
			if p := raw(t, "PUT", cs+"/devices/"+other.DeviceID, r.AccessToken, map[string]any{"display_name": "phone"}); p.Status != 200 {
				t.Fatalf("rename: %d %s", p.Status, p.Raw)
			}
			if g := raw(t, "GET", cs+"/devices/"+other.DeviceID, r.AccessToken, nil); g.Body["display_name"] != "phone" {
				t.Fatalf("renamed device: %s", g.Raw)
			}
			raw(t, "GET", cs+"/devices/NOPE", r.AccessToken, nil).wantErr(t, "unknown device", 404, "M_NOT_FOUND")
			raw(t, "PUT", cs+"/devices/NOPE", r.AccessToken, map[string]any{"display_name": "x"}).wantErr(t, "rename unknown", 404, "M_NOT_FOUND")
			raw(t, "DELETE", cs+"/devices/NOPE", r.AccessToken, map[string]any{}).wantErr(t, "delete unknown", 404, "M_NOT_FOUND")
			// Another user cannot see or touch this user's devices.
			stranger := Register(t, url, "devstranger", pw, false)
			raw(t, "GET", cs+"/devices/"+other.DeviceID, stranger.AccessToken, nil).wantErr(t, "foreign device", 404, "M_NOT_FOUND")
			ch := raw(t, "DELETE", cs+"/devices/"+other.DeviceID, r.AccessToken, map[string]any{})
			sess, _ := ch.Body["session"].(string)
			if ch.Status != 401 || sess == "" {
				t.Fatalf("delete without auth: %d %s", ch.Status, ch.Raw)
			}
			bad := raw(t, "DELETE", cs+"/devices/"+other.DeviceID, r.AccessToken, map[string]any{"auth": map[string]any{"type": "m.login.password", "session": sess, "password": "wrong", "user": r.UserID}})
			if bad.Status != 401 || bad.errcode() != "M_FORBIDDEN" {
				t.Fatalf("wrong password: %d %s", bad.Status, bad.Raw)
			}
			if ok := raw(t, "DELETE", cs+"/devices/"+other.DeviceID, r.AccessToken, map[string]any{"auth": map[string]any{"type": "m.login.password", "session": sess, "password": pw, "user": r.UserID}}); ok.Status != 200 {
				t.Fatalf("delete: %d %s", ok.Status, ok.Raw)
			}
			raw(t, "GET", cs+"/account/whoami", other.AccessToken, nil).wantErr(t, "deleted device's token", 401, "M_UNKNOWN_TOKEN")
			raw(t, "GET", cs+"/devices/"+other.DeviceID, r.AccessToken, nil).wantErr(t, "deleted device", 404, "M_NOT_FOUND")
			// Element probes for dehydrated devices (MSC3814): none yet.
			start := time.Now()
			raw(t, "GET", url+"/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", r.AccessToken, nil).wantErr(t, "dehydrated device", 404, "M_NOT_FOUND")
			if time.Since(start) > time.Second {
				t.Fatalf("dehydrated device probe took %v", time.Since(start))
			}
		})

		t.Run("crosssigning", func(t *testing.T) {
			x := newE2EERaw(Register(t, url, "xsuser", pw, false))
			y := newE2EERaw(Register(t, url, "xsother", pw, false))
			z := Register(t, url, "xsthird", pw, false)
			for _, d := range []*e2eeRaw{x, y} {
				e2eeUpload(t, url, d, map[string]any{"device_keys": d.deviceKeys()})
			}
			type kp struct {
				pub  string
				priv ed25519.PrivateKey
			}
			newKP := func() kp {
				p, s, _ := ed25519.GenerateKey(rand.Reader)
				return kp{e2eeB64.EncodeToString(p), s}
			}
			xsKey := func(user, usage string, k kp) map[string]any {
				return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + k.pub: k.pub}}
			}
			xm, xss, xus := newKP(), newKP(), newKP()
			master := xsKey(x.userID, "master", xm)
			self := e2eeSign(xsKey(x.userID, "self_signing", xss), x.userID, "ed25519:"+xm.pub, xm.priv)
			user := e2eeSign(xsKey(x.userID, "user_signing", xus), x.userID, "ed25519:"+xm.pub, xm.priv)
			up := func(tok string, body map[string]any) rawResp {
				return raw(t, "POST", cs+"/keys/device_signing/upload", tok, body)
			}
			up(x.token, map[string]any{"self_signing_key": self}).wantErr(t, "no master", 400, "M_MISSING_PARAM")
			forged := e2eeSign(xsKey(x.userID, "self_signing", xss), x.userID, "ed25519:"+xm.pub, xss.priv)
			up(x.token, map[string]any{"master_key": master, "self_signing_key": forged}).wantErr(t, "bad signature", 400, "M_INVALID_SIGNATURE")
			// The first upload needs no UIA; the same keys again neither.
			full := map[string]any{"master_key": master, "self_signing_key": self, "user_signing_key": user}
			if r := up(x.token, full); r.Status != 200 {
				t.Fatalf("first upload: %d %s", r.Status, r.Raw)
			}
			if r := up(x.token, full); r.Status != 200 {
				t.Fatalf("identical re-upload: %d %s", r.Status, r.Raw)
			}
			// Replacing them does.
			xm2 := newKP()
			repl := map[string]any{"master_key": xsKey(x.userID, "master", xm2)}
			r := up(x.token, repl)
			sess, _ := r.Body["session"].(string)
			if r.Status != 401 || sess == "" {
				t.Fatalf("replacement without auth: %d %s", r.Status, r.Raw)
			}
			q := raw(t, "POST", cs+"/keys/query", z.AccessToken, map[string]any{"device_keys": map[string]any{x.userID: []string{}}})
			if mk := q.Body["master_keys"].(map[string]any)[x.userID].(map[string]any)["keys"].(map[string]any); mk["ed25519:"+xm.pub] != xm.pub {
				t.Fatalf("an unauthenticated replacement changed the master key: %v", mk)
			}
			if _, ok := q.Body["user_signing_keys"]; ok {
				t.Fatalf("another user sees the user-signing key: %s", q.Raw)
			}
			// Sign our device with the self-signing key; a bad signature fails.
			var stored map[string]any
			qx := raw(t, "POST", cs+"/keys/query", x.token, map[string]any{"device_keys": map[string]any{x.userID: []string{}}})
			stored = qx.Body["device_keys"].(map[string]any)[x.userID].(map[string]any)[x.deviceID].(map[string]any)
			delete(stored, "unsigned")
			signedDev := e2eeSign(stored, x.userID, "ed25519:"+xss.pub, xss.priv)
			badDev := e2eeSign(stored, x.userID, "ed25519:"+xss.pub, xus.priv)
			s := raw(t, "POST", cs+"/keys/signatures/upload", x.token, map[string]any{x.userID: map[string]any{x.deviceID: badDev}})
			if f := s.Body["failures"].(map[string]any)[x.userID].(map[string]any)[x.deviceID].(map[string]any); f["errcode"] != "M_INVALID_SIGNATURE" {
				t.Fatalf("bad device signature: %s", s.Raw)
			}
			s = raw(t, "POST", cs+"/keys/signatures/upload", x.token, map[string]any{x.userID: map[string]any{x.deviceID: signedDev}})
			if f := s.Body["failures"].(map[string]any); s.Status != 200 || len(f) != 0 {
				t.Fatalf("device signature: %d %s", s.Status, s.Raw)
			}
			q = raw(t, "POST", cs+"/keys/query", z.AccessToken, map[string]any{"device_keys": map[string]any{x.userID: []string{}}})
			dev := q.Body["device_keys"].(map[string]any)[x.userID].(map[string]any)[x.deviceID].(map[string]any)
			if dev["signatures"].(map[string]any)[x.userID].(map[string]any)["ed25519:"+xss.pub] == nil {
				t.Fatalf("self-signing signature not shown to others: %v", dev["signatures"])
			}
			// Y sets up cross-signing and signs X's master key: only Y sees it.
			ym, yus := newKP(), newKP()
			if r := up(y.token, map[string]any{"master_key": xsKey(y.userID, "master", ym),
				"user_signing_key": e2eeSign(xsKey(y.userID, "user_signing", yus), y.userID, "ed25519:"+ym.pub, ym.priv)}); r.Status != 200 {
				t.Fatalf("Y upload: %d %s", r.Status, r.Raw)
			}
			ySince := e2eeSync(t, url, y.token, "", 0).NextBatch
			signedMaster := e2eeSign(master, y.userID, "ed25519:"+yus.pub, yus.priv)
			s = raw(t, "POST", cs+"/keys/signatures/upload", y.token, map[string]any{x.userID: map[string]any{xm.pub: signedMaster}})
			if f := s.Body["failures"].(map[string]any); len(f) != 0 {
				t.Fatalf("user-signing signature: %s", s.Raw)
			}
			if s := e2eeSync(t, url, y.token, ySince, 0); !e2eeContains(s.changed(), x.userID) {
				t.Fatalf("signer not told of its signature on %s: %v", x.userID, s.changed())
			}
			for _, c := range []struct {
				tok  string
				want bool
			}{{y.token, true}, {z.AccessToken, false}} {
				q := raw(t, "POST", cs+"/keys/query", c.tok, map[string]any{"device_keys": map[string]any{x.userID: []string{}}})
				sigs := q.Body["master_keys"].(map[string]any)[x.userID].(map[string]any)["signatures"]
				has := false
				if m, ok := sigs.(map[string]any); ok {
					_, has = m[y.userID]
				}
				if has != c.want {
					t.Fatalf("Y's signature on X's master key visible=%v to the signer=%v, want %v", has, c.tok == y.token, c.want)
				}
			}
			// Now with the password: the replacement goes through.
			repl["auth"] = map[string]any{"type": "m.login.password", "session": sess, "password": pw, "identifier": map[string]string{"type": "m.id.user", "user": x.userID}}
			if r := up(x.token, repl); r.Status != 200 {
				t.Fatalf("replacement with password: %d %s", r.Status, r.Raw)
			}
			q = raw(t, "POST", cs+"/keys/query", z.AccessToken, map[string]any{"device_keys": map[string]any{x.userID: []string{}}})
			if mk := q.Body["master_keys"].(map[string]any)[x.userID].(map[string]any)["keys"].(map[string]any); mk["ed25519:"+xm2.pub] != xm2.pub {
				t.Fatalf("master key not replaced: %v", mk)
			}
		})

		t.Run("backup", func(t *testing.T) {
			r := Register(t, url, "backupuser", pw, false)
			tok := r.AccessToken
			raw(t, "GET", cs+"/room_keys/version", tok, nil).wantErr(t, "no backup", 404, "M_NOT_FOUND")
			raw(t, "GET", cs+"/room_keys/version/1", tok, nil).wantErr(t, "no backup 1", 404, "M_NOT_FOUND")
			key := func(idx, fwd int, verified bool, data string) map[string]any {
				return map[string]any{"first_message_index": idx, "forwarded_count": fwd, "is_verified": verified, "session_data": map[string]any{"ciphertext": data}}
			}
			raw(t, "PUT", cs+"/room_keys/keys/!r:localhost/s1?version=1", tok, key(0, 0, false, "a")).wantErr(t, "keys without backup", 404, "M_NOT_FOUND")
			c := raw(t, "POST", cs+"/room_keys/version", tok, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}})
			if c.Status != 200 || c.Body["version"] != "1" {
				t.Fatalf("create: %d %s", c.Status, c.Raw)
			}
			put := func(path string, body any) rawResp {
				t.Helper()
				p := raw(t, "PUT", cs+"/room_keys/keys"+path+"?version=1", tok, body)
				if p.Status != 200 {
					t.Fatalf("PUT %s: %d %s", path, p.Status, p.Raw)
				}
				return p
			}
			p := put("/!r:localhost/s1", key(5, 1, false, "first"))
			if p.Body["count"] != float64(1) {
				t.Fatalf("count: %s", p.Raw)
			}
			etag := p.Body["etag"]
			// Worse keys (higher index; same index more forwarded; unverified
			// against verified) do not replace; a better one does.
			if p := put("/!r:localhost/s1", key(7, 0, false, "worse")); p.Body["etag"] != etag {
				t.Fatalf("a worse key changed the etag")
			}
			if p := put("/!r:localhost/s1", key(5, 2, false, "worse2")); p.Body["etag"] != etag {
				t.Fatalf("a more-forwarded key changed the etag")
			}
			p = put("/!r:localhost", map[string]any{"sessions": map[string]any{"s1": key(9, 9, true, "verified"), "s2": key(0, 0, false, "other")}})
			if p.Body["etag"] == etag || p.Body["count"] != float64(2) {
				t.Fatalf("better key: %s", p.Raw)
			}
			put("", map[string]any{"rooms": map[string]any{"!r2:localhost": map[string]any{"sessions": map[string]any{"s3": key(0, 0, false, "r2")}}}})
			g := raw(t, "GET", cs+"/room_keys/keys/!r:localhost/s1?version=1", tok, nil)
			if g.Body["is_verified"] != true || g.Body["session_data"].(map[string]any)["ciphertext"] != "verified" {
				t.Fatalf("stored key: %s", g.Raw)
			}
			if g := raw(t, "GET", cs+"/room_keys/keys/!r:localhost?version=1", tok, nil); len(g.Body["sessions"].(map[string]any)) != 2 {
				t.Fatalf("room keys: %s", g.Raw)
			}
			if g := raw(t, "GET", cs+"/room_keys/keys?version=1", tok, nil); len(g.Body["rooms"].(map[string]any)) != 2 {
				t.Fatalf("all keys: %s", g.Raw)
			}
			raw(t, "GET", cs+"/room_keys/keys/!r:localhost/nope?version=1", tok, nil).wantErr(t, "missing session", 404, "M_NOT_FOUND")
			v := raw(t, "GET", cs+"/room_keys/version", tok, nil)
			if v.Body["count"] != float64(3) || v.Body["version"] != "1" || v.Body["algorithm"] != "m.megolm_backup.v1.curve25519-aes-sha2" {
				t.Fatalf("version info: %s", v.Raw)
			}
			raw(t, "PUT", cs+"/room_keys/version/1", tok, map[string]any{"algorithm": "other", "auth_data": map[string]any{}}).wantErr(t, "algorithm change", 400, "M_INVALID_PARAM")
			if u := raw(t, "PUT", cs+"/room_keys/version/1", tok, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "def"}}); u.Status != 200 {
				t.Fatalf("update: %s", u.Raw)
			}
			// A newer version makes the old one the wrong one to write to.
			raw(t, "POST", cs+"/room_keys/version", tok, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "v2"}})
			w := raw(t, "PUT", cs+"/room_keys/keys/!r:localhost/s9?version=1", tok, key(0, 0, false, "x"))
			w.wantErr(t, "old version", 403, "M_WRONG_ROOM_KEYS_VERSION")
			if w.Body["current_version"] != "2" {
				t.Fatalf("wrong-version error: %s", w.Raw)
			}
			// Other users see none of it.
			other := Register(t, url, "backupother", pw, false)
			raw(t, "GET", cs+"/room_keys/keys?version=1", other.AccessToken, nil).wantErr(t, "foreign backup", 404, "M_NOT_FOUND")
			if d := raw(t, "DELETE", cs+"/room_keys/keys/!r:localhost/s2?version=1", tok, nil); d.Body["count"] != float64(2) {
				t.Fatalf("delete session: %s", d.Raw)
			}
			if d := raw(t, "DELETE", cs+"/room_keys/version/2", tok, nil); d.Status != 200 {
				t.Fatalf("delete version: %s", d.Raw)
			}
			raw(t, "GET", cs+"/room_keys/version/2", tok, nil).wantErr(t, "deleted version", 404, "M_NOT_FOUND")
			if v := raw(t, "GET", cs+"/room_keys/version", tok, nil); v.Body["version"] != "1" {
				t.Fatalf("latest after deleting 2: %s", v.Raw)
			}
			if c := raw(t, "POST", cs+"/room_keys/version", tok, map[string]any{"algorithm": "a", "auth_data": map[string]any{}}); c.Body["version"] != "3" {
				t.Fatalf("versions are reused: %s", c.Raw)
			}
		})
	})
}

// TestE2EENode runs test/node/e2ee.mjs — Element's crypto stack,
// matrix-js-sdk with its Rust crypto — against the server on each store.
// `make test` installs its packages (npm ci); run directly, the test
// installs them itself.
func TestE2EENode(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in test/node: %v\n%s", err, out)
		}
	}
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "node", "e2ee.mjs", srv.URL, SharedSecret)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), " passed, 0 failed") {
			t.Fatalf("matrix-js-sdk interop: %v\n%s", err, out)
		}
	})
}
