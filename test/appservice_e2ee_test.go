//go:build goolm

package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/config"
	"enclave/storage"
)

// cryptoBridge is a mautrix appservice in appservice crypto mode, as
// mautrix bridges run it: its puppet's device is created with MSC4190,
// and to-device messages, device lists and key counts come in its
// transactions (MSC2409/MSC3202), with no /sync at all.
type cryptoBridge struct {
	mu        sync.Mutex
	receipts  []*event.Event
	typing    []*event.Event
	toDevice  []*event.Event // org.example.ping only
	lists     []id.UserID    // device_lists.changed, in arrival order
	otk       map[id.DeviceID]int
	decrypted map[id.EventID]string
	failed    map[id.EventID]error
}

func TestAppServiceE2EE(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		ctx := ctxT(t)
		port := freePort(t)
		reg := appservice.CreateRegistration()
		reg.ID, reg.URL, reg.SenderLocalpart, reg.RateLimited = "cryptobridge", fmt.Sprintf("http://127.0.0.1:%d", port), "cryptobot", new(bool)
		reg.Namespaces.UserIDs.Register(regexp.MustCompile(`^@cb_.*:localhost$`), true)
		reg.EphemeralEvents, reg.SoruEphemeralEvents, reg.MSC3202, reg.MSC4190 = true, true, true, true
		y, err := reg.YAML()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "cryptobridge.yaml")
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		srv := Start(t, d, Options{Configure: func(c *config.Config) { c.AppServices.ConfigFiles = []string{path} }})
		as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: "localhost", HomeserverURL: srv.URL,
			HostConfig: appservice.HostConfig{Hostname: "127.0.0.1", Port: uint16(port)}})
		if err != nil {
			t.Fatal(err)
		}
		b := &cryptoBridge{otk: map[id.DeviceID]int{}, decrypted: map[id.EventID]string{}, failed: map[id.EventID]error{}}
		ep := appservice.NewEventProcessor(as)
		ep.ExecMode = appservice.Sync
		ep.On(event.EphemeralEventReceipt, func(_ context.Context, evt *event.Event) {
			b.mu.Lock()
			b.receipts = append(b.receipts, evt)
			b.mu.Unlock()
		})
		ep.On(event.EphemeralEventTyping, func(_ context.Context, evt *event.Event) {
			b.mu.Lock()
			b.typing = append(b.typing, evt)
			b.mu.Unlock()
		})
		ping := event.Type{Type: "org.example.ping", Class: event.ToDeviceEventType}
		ep.On(ping, func(_ context.Context, evt *event.Event) {
			b.mu.Lock()
			b.toDevice = append(b.toDevice, evt)
			b.mu.Unlock()
		})
		ep.OnDeviceList(func(_ context.Context, dl *mautrix.DeviceLists, _ string) {
			b.mu.Lock()
			b.lists = append(b.lists, dl.Changed...)
			b.mu.Unlock()
		})
		ep.OnOTK(func(_ context.Context, c *mautrix.OTKCount) {
			b.mu.Lock()
			b.otk[c.DeviceID] = c.SignedCurve25519
			b.mu.Unlock()
		})

		// The puppet and its device, created without login (MSC4190).
		puppet := as.Intent("@cb_bob:localhost")
		if err := puppet.EnsureRegistered(ctx); err != nil {
			t.Fatal(err)
		}
		pcli := puppet.Client
		if err := pcli.CreateDeviceMSC4190(ctx, "", "partner bridge"); err != nil {
			t.Fatalf("MSC4190 device creation: %v", err)
		}
		pdev := pcli.DeviceID
		if dv, err := storage.GetDevice(ctx, srv.DB, string(puppet.UserID), string(pdev)); err != nil || dv.DisplayName != "partner bridge" {
			t.Fatalf("the puppet's device as stored: %+v %v", dv, err)
		}
		if who, err := pcli.Whoami(ctx); err != nil || who.UserID != puppet.UserID || who.DeviceID != pdev {
			t.Fatalf("whoami as the puppet's device: %+v %v", who, err)
		}
		// Creating it again is an update (200), not a second device.
		res := raw(t, "PUT", srv.URL+"/_matrix/client/v3/devices/"+string(pdev)+"?user_id="+string(puppet.UserID), reg.AppToken, map[string]any{"display_name": "partner bridge"})
		if res.Status != 200 {
			t.Fatalf("PUT of the existing device: %d %s", res.Status, res.Raw)
		}

		log := zerolog.Nop()
		if os.Getenv("ENCLAVE_TEST_CLIENT_LOG") != "" {
			log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Str("device", "bridge").Timestamp().Logger().Level(zerolog.DebugLevel)
		}
		mach := crypto.NewOlmMachine(pcli, &log, crypto.NewMemoryStore(nil), as.StateStore.(crypto.StateStore))
		if err := mach.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if err := mach.ShareKeys(ctx, -1); err != nil {
			t.Fatalf("bridge key upload: %v", err)
		}
		mach.AddAppserviceListener(ep)
		ep.On(event.EventEncrypted, func(ctx context.Context, evt *event.Event) {
			dec, err := mach.DecryptMegolmEvent(ctx, evt)
			if err != nil {
				// The room key may come in a later transaction.
				c := evt.Content.AsEncrypted()
				if mach.WaitForSession(ctx, evt.RoomID, c.SenderKey, c.SessionID, 10*time.Second) {
					dec, err = mach.DecryptMegolmEvent(ctx, evt)
				}
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if err != nil {
				b.failed[evt.ID] = err
				return
			}
			b.decrypted[evt.ID] = body(dec)
		})
		epCtx, stopEP := context.WithCancel(context.Background())
		ep.Start(epCtx)
		var done chan struct{}
		startAS := func() {
			done = make(chan struct{})
			go func() { defer close(done); as.Start() }()
			time.Sleep(100 * time.Millisecond)
		}
		stopAS := func() { as.Stop(); <-done }
		startAS()
		defer func() { stopAS(); stopEP(); ep.Stop() }()

		// An ordinary Element-stack user (mautrix goolm, /sync).
		alice := newE2EEDevice(t, "alice", registerClient(t, srv.URL, "alice", "password-alice-1"), "password-alice-1")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{puppet.UserID},
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
		if err != nil {
			t.Fatal(err)
		}
		roomID := room.RoomID
		if _, err := puppet.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		// As a bridge does on joining: the room's state into its store.
		if _, err := pcli.State(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		alice.waitRoomReady(roomID, alice.userID(), puppet.UserID)

		t.Run("matrix_to_bridge_decrypts", func(t *testing.T) {
			evID := alice.send(roomID, "to the partner network")
			waitFor(t, "the bridge to decrypt alice's message", 30*time.Second, func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				if err := b.failed[evID]; err != nil {
					t.Fatalf("the bridge failed to decrypt: %v", err)
				}
				return b.decrypted[evID] != ""
			})
			b.mu.Lock()
			got := b.decrypted[evID]
			b.mu.Unlock()
			if got != "to the partner network" {
				t.Fatalf("the bridge decrypted %q", got)
			}
		})

		t.Run("bridge_to_matrix_decrypts", func(t *testing.T) {
			if err := mach.ShareGroupSession(ctx, roomID, []id.UserID{alice.userID(), puppet.UserID}); err != nil {
				t.Fatalf("share group session: %v", err)
			}
			enc, err := mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "from the partner network"})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := puppet.SendMessageEvent(ctx, roomID, event.EventEncrypted, enc)
			if err != nil {
				t.Fatal(err)
			}
			if got := alice.waitDecrypted(resp.EventID); got != "from the partner network" {
				t.Fatalf("alice decrypted %q", got)
			}
			stored, err := alice.cli.GetEvent(ctx, roomID, resp.EventID)
			if err != nil || stored.Type != event.EventEncrypted || stored.Sender != puppet.UserID {
				t.Fatalf("the puppet's event as stored: %+v %v", stored, err)
			}
			// The server holds only ciphertext.
			e2eeNoPlaintext(t, srv, "from the partner network", "to the partner network")
		})

		t.Run("ephemeral_once", func(t *testing.T) {
			evID := alice.send(roomID, "read me")
			if err := alice.cli.SendReceipt(ctx, roomID, evID, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := alice.cli.UserTyping(ctx, roomID, true, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			match := func() (receipts, typing int) {
				b.mu.Lock()
				defer b.mu.Unlock()
				for _, e := range b.receipts {
					if e.RoomID != roomID {
						continue
					}
					if r, ok := (*e.Content.AsReceipt())[evID][event.ReceiptTypeRead][alice.userID()]; ok && !r.Timestamp.IsZero() {
						receipts++
					}
				}
				for _, e := range b.typing {
					if e.RoomID == roomID && len(e.Content.AsTyping().UserIDs) == 1 && e.Content.AsTyping().UserIDs[0] == alice.userID() {
						typing++
					}
				}
				return
			}
			waitFor(t, "the receipt and the typing notice at the bridge", 20*time.Second, func() bool { r, ty := match(); return r > 0 && ty > 0 })
			time.Sleep(2500 * time.Millisecond) // a second copy would come by now
			if r, ty := match(); r != 1 || ty != 1 {
				t.Fatalf("bridge got alice's receipt %d times and her typing %d times, want once each", r, ty)
			}
		})

		t.Run("to_device_once", func(t *testing.T) {
			msgs := map[id.UserID]map[id.DeviceID]*event.Content{puppet.UserID: {}}
			for i := range 3 {
				msgs[puppet.UserID][pdev] = &event.Content{Raw: map[string]any{"seq": i}}
				if _, err := alice.cli.SendToDevice(ctx, ping, &mautrix.ReqSendToDevice{Messages: msgs}); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "three to-device messages at the bridge", 20*time.Second, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.toDevice) >= 3 })
			time.Sleep(2500 * time.Millisecond)
			b.mu.Lock()
			got := append([]*event.Event(nil), b.toDevice...)
			b.mu.Unlock()
			if len(got) != 3 {
				t.Fatalf("bridge got %d to-device messages, want 3 (once each)", len(got))
			}
			for i, e := range got {
				if e.Sender != alice.userID() || e.ToUserID != puppet.UserID || e.ToDeviceID != pdev || e.Content.Raw["seq"] != float64(i) {
					t.Fatalf("to-device message %d: sender %s to %s/%s content %v", i, e.Sender, e.ToUserID, e.ToDeviceID, e.Content.Raw)
				}
			}
			// Delivered through the transactions, so not left in the inbox.
			if n, err := storage.PendingToDevice(ctx, srv.DB, string(puppet.UserID), string(pdev)); err != nil || n != 0 {
				t.Fatalf("%d messages left in the bridge device's inbox (%v)", n, err)
			}
		})

		t.Run("to_device_while_bridge_down", func(t *testing.T) {
			b.mu.Lock()
			before := len(b.toDevice)
			b.mu.Unlock()
			stopAS()
			for i := range 5 {
				msgs := map[id.UserID]map[id.DeviceID]*event.Content{puppet.UserID: {pdev: {Raw: map[string]any{"seq": 10 + i}}}}
				if _, err := alice.cli.SendToDevice(ctx, ping, &mautrix.ReqSendToDevice{Messages: msgs}); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(time.Second) // the sender retries against the stopped bridge
			startAS()
			waitFor(t, "five more to-device messages", 30*time.Second, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.toDevice) >= before+5 })
			time.Sleep(2500 * time.Millisecond)
			b.mu.Lock()
			got := append([]*event.Event(nil), b.toDevice[before:]...)
			b.mu.Unlock()
			if len(got) != 5 {
				t.Fatalf("bridge got %d to-device messages after coming back, want 5 (once each)", len(got))
			}
			for i, e := range got {
				if e.Content.Raw["seq"] != float64(10+i) {
					t.Fatalf("message %d after the outage: %v (out of order)", i, e.Content.Raw)
				}
			}
			if n, err := storage.PendingToDevice(ctx, srv.DB, string(puppet.UserID), string(pdev)); err != nil || n != 0 {
				t.Fatalf("%d messages left in the bridge device's inbox (%v)", n, err)
			}
		})

		t.Run("device_lists_and_key_counts", func(t *testing.T) {
			// Alice renames her device: her device list changes for the
			// users sharing a room with her, the bridge's puppet among them.
			if err := alice.cli.SetDeviceInfo(ctx, alice.deviceID(), &mautrix.ReqDeviceInfo{DisplayName: "alice's laptop"}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "alice in the bridge's device_lists.changed", 20*time.Second, func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				for _, u := range b.lists {
					if u == alice.userID() {
						return true
					}
				}
				return false
			})
			// The bridge's one-time key count is the server's.
			counts, err := storage.OneTimeKeyCounts(ctx, srv.DB, string(puppet.UserID), string(pdev))
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the bridge's key count pushed", 20*time.Second, func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				n, ok := b.otk[pdev]
				return ok && n == counts["signed_curve25519"]
			})
		})

		t.Run("device_masquerade_outside_namespace", func(t *testing.T) {
			aliceDev := string(alice.deviceID())
			res := raw(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami?user_id=@alice:localhost&org.matrix.msc3202.device_id="+aliceDev, reg.AppToken, nil)
			if res.Status != 403 {
				t.Fatalf("masquerading as alice's device: %d %s", res.Status, res.Raw)
			}
			// Alice's device as if it were the bridge bot's: not its device.
			res = raw(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami?device_id="+aliceDev, reg.AppToken, nil)
			if res.Status != 400 || res.Body["errcode"] != "M_UNKNOWN_DEVICE" {
				t.Fatalf("the bot naming alice's device: %d %s", res.Status, res.Raw)
			}
			// Creating or deleting a device for alice is refused and
			// changes nothing.
			res = raw(t, "PUT", srv.URL+"/_matrix/client/v3/devices/INTRUDER?user_id=@alice:localhost", reg.AppToken, map[string]any{"display_name": "x"})
			if res.Status != 403 {
				t.Fatalf("creating a device for alice: %d %s", res.Status, res.Raw)
			}
			if _, err := storage.GetDevice(ctx, srv.DB, "@alice:localhost", "INTRUDER"); err != storage.ErrNotFound {
				t.Fatalf("alice has the appservice's device: %v", err)
			}
			res = raw(t, "DELETE", srv.URL+"/_matrix/client/v3/devices/"+aliceDev+"?user_id=@alice:localhost", reg.AppToken, map[string]any{})
			if res.Status != 403 {
				t.Fatalf("deleting alice's device: %d %s", res.Status, res.Raw)
			}
			if _, err := storage.GetDevice(ctx, srv.DB, "@alice:localhost", aliceDev); err != nil {
				t.Fatalf("alice's device after the refused deletion: %v", err)
			}
		})

		t.Run("delete_device_without_uia", func(t *testing.T) {
			extra := "SPARE"
			res := raw(t, "PUT", srv.URL+"/_matrix/client/v3/devices/"+extra+"?user_id="+string(puppet.UserID), reg.AppToken, map[string]any{"display_name": "spare"})
			if res.Status != 201 {
				t.Fatalf("MSC4190 create: %d %s", res.Status, res.Raw)
			}
			res = raw(t, "DELETE", srv.URL+"/_matrix/client/v3/devices/"+extra+"?user_id="+string(puppet.UserID), reg.AppToken, map[string]any{})
			if res.Status != 200 {
				t.Fatalf("MSC4190 delete: %d %s", res.Status, res.Raw)
			}
			if _, err := storage.GetDevice(ctx, srv.DB, string(puppet.UserID), extra); err != storage.ErrNotFound {
				t.Fatalf("deleted device still stored: %v", err)
			}
		})
	})
}
