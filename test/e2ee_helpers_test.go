package test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// e2eeDevice is one logged-in device running mautrix-go's crypto (goolm)
// with in-memory stores and its own /sync loop, as a real client would.
type e2eeDevice struct {
	t        testing.TB
	name     string
	password string
	cli      *mautrix.Client
	helper   *cryptohelper.CryptoHelper
	mach     *crypto.OlmMachine
	stop     context.CancelFunc
	done     chan struct{}

	mu        sync.Mutex
	decrypted map[id.EventID]string // event -> plaintext body
	failed    map[id.EventID]error
}

// newE2EEDevice starts crypto and syncing for a session of localpart.
func newE2EEDevice(t testing.TB, name string, cli *mautrix.Client, password string) *e2eeDevice {
	t.Helper()
	d := &e2eeDevice{t: t, name: name, password: password, cli: cli, done: make(chan struct{}),
		decrypted: map[id.EventID]string{}, failed: map[id.EventID]error{}}
	if os.Getenv("ENCLAVE_TEST_CLIENT_LOG") != "" {
		cli.Log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Str("device", name).Timestamp().Logger().Level(zerolog.DebugLevel)
	}
	cli.StateStore = mautrix.NewMemoryStateStore()
	cli.Store = mautrix.NewMemorySyncStore()
	syncer := mautrix.NewDefaultSyncer()
	cli.Syncer = syncer
	pickle := make([]byte, 32)
	_, _ = rand.Read(pickle)
	helper, err := cryptohelper.NewCryptoHelper(cli, pickle, crypto.NewMemoryStore(nil))
	if err != nil {
		t.Fatalf("%s: crypto helper: %v", name, err)
	}
	helper.DecryptErrorCallback = func(evt *event.Event, err error) {
		d.mu.Lock()
		d.failed[evt.ID] = err
		d.mu.Unlock()
	}
	// Store state before the crypto helper's handlers see events.
	syncer.OnEvent(cli.StateStoreSyncHandler)
	if err := helper.Init(ctxT(t)); err != nil {
		t.Fatalf("%s: crypto init: %v", name, err)
	}
	cli.Crypto = helper
	d.helper, d.mach = helper, helper.Machine()
	syncer.OnEventType(event.EventMessage, func(ctx context.Context, evt *event.Event) {
		if evt.Mautrix.EventSource&event.SourceDecrypted == 0 {
			return
		}
		d.mu.Lock()
		d.decrypted[evt.ID] = body(evt)
		d.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	go func() {
		defer close(d.done)
		_ = cli.SyncWithContext(ctx)
	}()
	t.Cleanup(d.close)
	return d
}

func (d *e2eeDevice) close() {
	d.stop()
	<-d.done
}

func (d *e2eeDevice) userID() id.UserID     { return d.cli.UserID }
func (d *e2eeDevice) deviceID() id.DeviceID { return d.cli.DeviceID }

// e2eeWait polls cond until it holds or the deadline passes.
func e2eeWait(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDecrypted waits until the device has decrypted the event and
// returns its plaintext body.
func (d *e2eeDevice) waitDecrypted(evID id.EventID) string {
	d.t.Helper()
	var got string
	e2eeWait(d.t, fmt.Sprintf("%s to decrypt %s", d.name, evID), 20*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.failed[evID]; err != nil {
			d.t.Fatalf("%s failed to decrypt %s: %v", d.name, evID, err)
		}
		s, ok := d.decrypted[evID]
		got = s
		return ok
	})
	return got
}

// knowsDevice reports whether the device's crypto store lists the device
// of user (learned through /keys/query after a device-list change).
func (d *e2eeDevice) knowsDevice(user id.UserID, dev id.DeviceID) bool {
	devs, err := d.mach.CryptoStore.GetDevices(context.Background(), user)
	if err != nil {
		return false
	}
	_, ok := devs[dev]
	return ok
}

// waitRoomReady waits until the device's state store knows the room is
// encrypted and has these joined members.
func (d *e2eeDevice) waitRoomReady(roomID id.RoomID, members ...id.UserID) {
	d.t.Helper()
	e2eeWait(d.t, fmt.Sprintf("%s to see %s encrypted with %v", d.name, roomID, members), 20*time.Second, func() bool {
		ctx := context.Background()
		if enc, _ := d.cli.StateStore.IsEncrypted(ctx, roomID); !enc {
			return false
		}
		for _, m := range members {
			if !d.cli.StateStore.IsMembership(ctx, roomID, m, event.MembershipJoin) {
				return false
			}
		}
		return true
	})
}

// send sends a text message (encrypted by mautrix when the room is).
func (d *e2eeDevice) send(roomID id.RoomID, text string) id.EventID {
	d.t.Helper()
	resp, err := d.cli.SendMessageEvent(ctxT(d.t), roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: text})
	if err != nil {
		d.t.Fatalf("%s: send: %v", d.name, err)
	}
	return resp.EventID
}

// passwordUIA answers a UIA challenge with the device's password.
func (d *e2eeDevice) passwordUIA(called *int) mautrix.UIACallback {
	return func(resp *mautrix.RespUserInteractive) any {
		*called++
		return &mautrix.ReqUIAuthLogin{
			BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: resp.Session},
			User:         d.cli.UserID.String(),
			Password:     d.password,
		}
	}
}

// newE2EERoom has creator create an encrypted private room, invite and
// join the others, and waits until every device sees it ready.
func newE2EERoom(t testing.TB, creator *e2eeDevice, others []*e2eeDevice, all ...*e2eeDevice) id.RoomID {
	t.Helper()
	var invites []id.UserID
	members := []id.UserID{creator.userID()}
	for _, o := range others {
		invites = append(invites, o.userID())
		members = append(members, o.userID())
	}
	resp, err := creator.cli.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Invite: invites,
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	for _, o := range others {
		if _, err := o.cli.JoinRoomByID(ctxT(t), resp.RoomID); err != nil {
			t.Fatalf("%s join: %v", o.name, err)
		}
	}
	for _, d := range append([]*e2eeDevice{creator}, all...) {
		d.waitRoomReady(resp.RoomID, members...)
	}
	return resp.RoomID
}

// --- raw key material for protocol tests (no client crypto library) ---

var e2eeB64 = base64.RawStdEncoding

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
