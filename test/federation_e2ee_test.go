//go:build goolm

package test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// TestFederationE2EE: Alice on A (SQLite) and Bob on B (PostgreSQL) share
// an encrypted room and decrypt each other's messages with mautrix-go's
// goolm crypto — their servers query and claim keys across federation and
// carry the Olm to-device messages. Bob's new device reaches Alice as a
// device-list change (m.device_list_update) and is encrypted to. Keys
// queries for unknown users come back empty, and a to-device EDU whose
// sender is not of the origin server is dropped.
func TestFederationE2EE(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	const pw = "correct horse battery"
	ra := Register(t, a.URL, "alice", pw, false)
	rb := Register(t, b.URL, "bob", pw, false)
	a1 := newE2EEDevice(t, "A1", sessionClient(t, a.URL, ra), pw)
	b1 := newE2EEDevice(t, "B1", sessionClient(t, b.URL, rb), pw)
	roomID := fedE2EERoom(t, a.ServerName, a1, b1)

	// 1. Both directions decrypt (remote /keys/query, /keys/claim and
	// m.direct_to_device carry the Olm session and the room keys).
	ev1 := a1.send(roomID, "hello bob over federation")
	if got := b1.waitDecrypted(ev1); got != "hello bob over federation" {
		t.Fatalf("B1 decrypted %q", got)
	}
	ev2 := b1.send(roomID, "hello alice over federation")
	if got := a1.waitDecrypted(ev2); got != "hello alice over federation" {
		t.Fatalf("A1 decrypted %q", got)
	}
	for _, n := range c.Nodes {
		e2eeNoPlaintext(t, n.Server, "hello bob over federation", "hello alice over federation")
	}

	// 2. A new device of Bob: Alice's server hears of it by EDU and
	// reports Bob in device_lists.changed; her client then encrypts to it.
	watcher := loginClient(t, a.URL, "alice", pw) // raw syncs; no crypto
	since := e2eeSync(t, a.URL, watcher.AccessToken, "", 0).NextBatch
	b2 := newE2EEDevice(t, "B2", loginClient(t, b.URL, "bob", pw), pw)
	b2.waitRoomReady(roomID, a1.userID(), b1.userID())
	deadline := time.Now().Add(30 * time.Second)
	for seen := false; !seen; {
		if time.Now().After(deadline) {
			t.Fatal("A never reported bob in device_lists.changed after his new device")
		}
		s := e2eeSync(t, a.URL, watcher.AccessToken, since, 2000)
		since, seen = s.NextBatch, e2eeContains(s.changed(), rb.UserID)
	}
	waitFor(t, "A1 to learn of B2", 30*time.Second, func() bool { return a1.knowsDevice(b2.userID(), b2.deviceID()) })
	ev3 := a1.send(roomID, "to both of bob's devices")
	if got := b2.waitDecrypted(ev3); got != "to both of bob's devices" {
		t.Fatalf("B2 decrypted %q", got)
	}
	b1.waitDecrypted(ev3)
	ev4 := b2.send(roomID, "from bob's second device")
	if got := a1.waitDecrypted(ev4); got != "from bob's second device" {
		t.Fatalf("A1 decrypted %q", got)
	}

	// 3. Keys of users a server does not have: an empty answer, no failure;
	// a server federation may not reach: a failure.
	ghost := UserID("ghost", b.ServerName)
	r := raw(t, "POST", e2eeCS(a.URL)+"/keys/query", ra.AccessToken, map[string]any{
		"device_keys": map[string][]string{ghost: {}, rb.UserID: {}, "@x:127.0.0.99:1": {}},
	})
	if r.Status != 200 {
		t.Fatalf("keys/query: %d %s", r.Status, r.Raw)
	}
	var q struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
		Failures   map[string]json.RawMessage            `json:"failures"`
	}
	if err := json.Unmarshal(r.Raw, &q); err != nil {
		t.Fatal(err)
	}
	if len(q.DeviceKeys[ghost]) != 0 || len(q.DeviceKeys[rb.UserID]) != 2 {
		t.Fatalf("keys/query device_keys: %s", r.Raw)
	}
	if _, failed := q.Failures["127.0.0.99:1"]; !failed || q.Failures[b.ServerName] != nil {
		t.Fatalf("keys/query failures: %s", r.Raw)
	}
	// Over federation directly: B answers only for its own users.
	code, body := fedSignedRequest(t, c, spec.ServerName(a.ServerName), gomatrixserverlib.KeyID(a.KeyID), a.Key, spec.ServerName(b.ServerName),
		"POST", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": map[string][]string{ra.UserID: {}, ghost: {}, rb.UserID: {}}})
	var fq struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
	}
	if code != 200 || json.Unmarshal(body, &fq) != nil {
		t.Fatalf("federation keys/query: %d %s", code, body)
	}
	if _, leaked := fq.DeviceKeys[ra.UserID]; leaked || len(fq.DeviceKeys[ghost]) != 0 || len(fq.DeviceKeys[rb.UserID]) != 2 {
		t.Fatalf("federation keys/query answered %s", body)
	}
	code, body = fedSignedRequest(t, c, spec.ServerName(a.ServerName), gomatrixserverlib.KeyID(a.KeyID), a.Key, spec.ServerName(b.ServerName),
		"GET", "/_matrix/federation/v1/user/devices/"+ra.UserID, nil)
	if code != 404 {
		t.Fatalf("user/devices for a user of another server: %d %s", code, body)
	}
	code, body = fedSignedRequest(t, c, spec.ServerName(a.ServerName), gomatrixserverlib.KeyID(a.KeyID), a.Key, spec.ServerName(b.ServerName),
		"GET", "/_matrix/federation/v1/user/devices/"+rb.UserID, nil)
	var devs struct {
		UserID   string `json:"user_id"`
		StreamID int64  `json:"stream_id"`
		Devices  []struct {
			DeviceID string          `json:"device_id"`
			Keys     json.RawMessage `json:"keys"`
		} `json:"devices"`
	}
	if code != 200 || json.Unmarshal(body, &devs) != nil || devs.UserID != rb.UserID || len(devs.Devices) != 2 || devs.StreamID < 1 {
		t.Fatalf("user/devices: %d %s", code, body)
	}

	// 4. A to-device EDU from A claiming a sender on B is dropped; a
	// genuine one is delivered once, however often it arrives. The target
	// is a device of Bob's that never syncs, so nothing consumes its inbox.
	inbox := loginClient(t, b.URL, "bob", pw)
	pending := func() int {
		n, err := storage.PendingToDevice(context.Background(), b.DB, rb.UserID, inbox.DeviceID.String())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := pending()
	forged := map[string]any{"sender": UserID("mallory", b.ServerName), "type": "m.dummy", "message_id": "forged1",
		"messages": map[string]any{rb.UserID: map[string]any{"*": map[string]any{"x": 1}}}}
	genuine := map[string]any{"sender": ra.UserID, "type": "m.dummy", "message_id": "genuine1",
		"messages": map[string]any{rb.UserID: map[string]any{inbox.DeviceID.String(): map[string]any{"x": 2}}}}
	for i, content := range []map[string]any{forged, genuine, genuine} { // the repeat is deduplicated
		txn := map[string]any{"origin": a.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{},
			"edus": []any{map[string]any{"edu_type": "m.direct_to_device", "content": content}}}
		code, body := fedSignedRequest(t, c, spec.ServerName(a.ServerName), gomatrixserverlib.KeyID(a.KeyID), a.Key, spec.ServerName(b.ServerName),
			"PUT", fmt.Sprintf("/_matrix/federation/v1/send/e2eetest%d", i), txn)
		if code != 200 {
			t.Fatalf("send: %d %s", code, body)
		}
	}
	if got := pending(); got != before+1 {
		t.Fatalf("B queued %d to-device messages for bob's idle device, want %d (only the genuine one, once)", got, before+1)
	}
}

// fedE2EERoom has creator create an encrypted room on its server that the
// other device joins over federation (public, so no invite is needed),
// and waits until both devices see it ready.
func fedE2EERoom(t *testing.T, via string, creator, joiner *e2eeDevice) id.RoomID {
	t.Helper()
	resp, err := creator.cli.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{
		Preset: "public_chat",
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	if _, err := joiner.cli.JoinRoom(ctxT(t), resp.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{via}}); err != nil {
		t.Fatalf("%s join over federation: %v", joiner.name, err)
	}
	for _, d := range []*e2eeDevice{creator, joiner} {
		d.waitRoomReady(resp.RoomID, creator.userID(), joiner.userID())
	}
	return resp.RoomID
}

// TestFederationInviteDeviceLists: once B's user accepts an invite into
// an encrypted room on A, each side's sync reports the other's device
// list as changed, and a new device of A's user, added while B is down,
// reaches B's user after B restarts.
func TestFederationInviteDeviceLists(t *testing.T) {
	c := NewFedCluster(t, storage.Postgres, storage.SQLite)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	aliceSync, err := alice.SyncRequest(ctxT(t), 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	fedWaitInvited(t, bob, room, 10*time.Second)
	bobSync, err := bob.SyncRequest(ctxT(t), 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	fedJoin(t, bob, room, a)
	fedDeviceListChanged(t, alice, aliceSync.NextBatch, []id.UserID{bob.UserID}, 20*time.Second)
	bobSince := fedDeviceListChanged(t, bob, bobSync.NextBatch, []id.UserID{alice.UserID}, 20*time.Second)

	b.Stop()
	alice2 := loginClient(t, a.URL, "alice", "pw")
	newE2EEDevice(t, "alice2", alice2, "pw")
	time.Sleep(time.Second)
	b.Start()
	bob = fedRebase(t, bob, b)
	fedDeviceListChanged(t, bob, bobSince, []id.UserID{alice.UserID}, 30*time.Second)
}
