//go:build goolm

package test

import (
	"context"
	"crypto/rand"
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

// waitDecrypted waits until the device has decrypted the event and
// returns its plaintext body.
func (d *e2eeDevice) waitDecrypted(evID id.EventID) string {
	d.t.Helper()
	var got string
	waitFor(d.t, fmt.Sprintf("%s to decrypt %s", d.name, evID), 20*time.Second, func() bool {
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
	waitFor(d.t, fmt.Sprintf("%s to see %s encrypted with %v", d.name, roomID, members), 20*time.Second, func() bool {
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
