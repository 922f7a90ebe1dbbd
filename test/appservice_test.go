package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	enclaveas "enclave/appservice"
	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/server"
	"enclave/storage"
	"enclave/storage/storagetest"
)

// bridge is a mautrix appservice run as a bridge would, collecting the
// events the server pushes to it.
type bridge struct {
	as     *appservice.AppService
	mu     sync.Mutex
	events []*event.Event
	done   chan struct{}
}

func (b *bridge) start() {
	b.done = make(chan struct{})
	go func() { defer close(b.done); b.as.Start() }()
	time.Sleep(100 * time.Millisecond)
}

func (b *bridge) stop() { b.as.Stop(); <-b.done }

// messages returns the m.room.message events received in roomID, in order.
func (b *bridge) messages(roomID id.RoomID) []*event.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*event.Event
	for _, ev := range b.events {
		if ev.RoomID == roomID && ev.Type == event.EventMessage {
			out = append(out, ev)
		}
	}
	return out
}

func (b *bridge) waitMessages(t *testing.T, roomID id.RoomID, n int) []*event.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if got := b.messages(roomID); len(got) >= n {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("bridge got %d messages in %s, want %d", len(b.messages(roomID)), roomID, n)
	return nil
}

// writeRegistration writes a registration as mautrix bridges do and
// returns it with its path.
func writeRegistration(t *testing.T, dir string, port int) (*appservice.Registration, string) {
	reg := appservice.CreateRegistration()
	reg.ID = "testbridge"
	reg.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	reg.SenderLocalpart = "bridgebot"
	reg.RateLimited = new(bool)
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(`^@bridge_.*:localhost$`), true)
	reg.Namespaces.RoomAliases.Register(regexp.MustCompile(`^#bridge_.*:localhost$`), true)
	path := filepath.Join(dir, "bridge-registration.yaml")
	y, err := reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return reg, path
}

func TestAppService(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		ctx := ctxT(t)
		port := freePort(t)
		reg, path := writeRegistration(t, t.TempDir(), port)
		srv := Start(t, d, Options{Configure: func(c *config.Config) { c.AppServices.ConfigFiles = []string{path} }})
		as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: "localhost", HomeserverURL: srv.URL,
			HostConfig: appservice.HostConfig{Hostname: "127.0.0.1", Port: uint16(port)}})
		if err != nil {
			t.Fatal(err)
		}
		b := &bridge{as: as}
		go func() {
			for ev := range as.Events {
				b.mu.Lock()
				b.events = append(b.events, ev)
				b.mu.Unlock()
			}
		}()
		b.start()
		defer b.stop()

		// Registration loaded: the as_token is the sender's.
		who, err := as.BotClient().Whoami(ctx)
		if err != nil || who.UserID != "@bridgebot:localhost" || who.DeviceID != "" {
			t.Fatalf("whoami as the bridge: %+v %v", who, err)
		}
		if resp, err := as.BotClient().AppservicePing(ctx, reg.ID, "ping-1"); err != nil {
			t.Fatalf("ping: %v", err)
		} else if resp.DurationMS < 0 {
			t.Fatalf("ping: %+v", resp)
		}

		// A puppet registered and masquerading.
		puppet := as.Intent("@bridge_alice:localhost")
		if err := puppet.EnsureRegistered(ctx); err != nil {
			t.Fatalf("registering the puppet: %v", err)
		}
		pw, err := puppet.Whoami(ctx)
		if err != nil || pw.UserID != "@bridge_alice:localhost" {
			t.Fatalf("whoami as the puppet: %+v %v", pw, err)
		}
		alice := registerClient(t, srv.URL, "alice", "password-alice-1")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{puppet.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := puppet.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("puppet join: %v", err)
		}
		sent, err := puppet.SendText(ctx, room.RoomID, "from the partner network")
		if err != nil {
			t.Fatalf("puppet send: %v", err)
		}
		ev, err := alice.GetEvent(ctx, room.RoomID, sent.EventID)
		if err != nil || ev.Sender != puppet.UserID {
			t.Fatalf("puppet's message as alice reads it: %+v %v", ev, err)
		}
		// The masqueraded send is audited with the appservice named.
		var audited bool
		for _, r := range auditRows(t, srv) {
			if r.Target == string(sent.EventID) {
				audited = r.ActorUser == string(puppet.UserID) && details(t, r)["appservice"] == reg.ID
			}
		}
		if !audited {
			t.Fatal("the puppet's message is not audited with the appservice id")
		}
		// The token's first use from this address is audited, once.
		var uses int
		for _, r := range auditRows(t, srv) {
			if r.Action == auditapi.ActionAppServiceAddress && r.Target == reg.ID && details(t, r)["ip"] == "127.0.0.1" {
				uses++
			}
		}
		if uses != 1 {
			t.Fatalf("%d audit entries for the as_token's use from 127.0.0.1, want 1", uses)
		}

		t.Run("messages_in_order", func(t *testing.T) {
			var want []id.EventID
			for i := range 5 {
				r, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("m%d", i))
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, r.EventID)
			}
			got := b.waitMessages(t, room.RoomID, 6)
			sameIDs(t, "bridge's messages", ids(got[1:6]), want)
		})

		t.Run("timestamp_massaging", func(t *testing.T) {
			const ts = int64(1_600_000_000_000)
			r, err := puppet.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "old"}, mautrix.ReqSendEvent{Timestamp: ts})
			if err != nil {
				t.Fatal(err)
			}
			ev, err := alice.GetEvent(ctx, room.RoomID, r.EventID)
			if err != nil || ev.Timestamp != ts {
				t.Fatalf("massaged event: ts %d, want %d (%v)", ev.Timestamp, ts, err)
			}
			// An ordinary user's ts is ignored.
			res := raw(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/send/m.room.message/tsx?ts=1000", alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "now"})
			if res.Status != 200 {
				t.Fatalf("send with ts as alice: %d %s", res.Status, res.Raw)
			}
			ev, _ = alice.GetEvent(ctx, room.RoomID, id.EventID(res.Body["event_id"].(string)))
			if ev.Timestamp == 1000 {
				t.Fatal("an ordinary user set origin_server_ts")
			}
		})

		t.Run("bridge_down_200", func(t *testing.T) {
			before := len(b.waitMessages(t, room.RoomID, 8))
			b.stop()
			var want []id.EventID
			for i := range 200 {
				r, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("offline %d", i))
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, r.EventID)
			}
			time.Sleep(time.Second)
			b.start()
			b.waitMessages(t, room.RoomID, before+200)
			time.Sleep(2 * time.Second) // nothing more may come
			got := b.messages(room.RoomID)
			if len(got) != before+200 {
				t.Fatalf("bridge got %d messages, want %d: some were sent twice", len(got), before+200)
			}
			sameIDs(t, "messages sent while the bridge was down", ids(got[before:]), want)
		})

		t.Run("reload", func(t *testing.T) {
			path2 := filepath.Join(t.TempDir(), "second.yaml")
			if err := os.WriteFile(path2, []byte("id: second\nurl: null\nas_token: second-as-token\nhs_token: second-hs-token\nsender_localpart: secondbot\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			bad := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(bad, []byte("id: bad\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := srv.AppServices.Reload(ctx, []string{path, bad}); err == nil || !strings.Contains(err.Error(), "as_token") {
				t.Fatalf("reload with a bad file: %v", err)
			}
			if err := srv.AppServices.Reload(ctx, []string{path, path2}); err != nil {
				t.Fatal(err)
			}
			res := raw(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami", "second-as-token", nil)
			if res.Status != 200 || res.Body["user_id"] != "@secondbot:localhost" {
				t.Fatalf("whoami with the reloaded appservice's token: %d %s", res.Status, res.Raw)
			}
			// The first bridge still receives, once each.
			before := len(b.messages(room.RoomID))
			r, err := alice.SendText(ctx, room.RoomID, "after reload")
			if err != nil {
				t.Fatal(err)
			}
			got := b.waitMessages(t, room.RoomID, before+1)
			if got[len(got)-1].ID != r.EventID {
				t.Fatalf("last message at the bridge %s, want %s", got[len(got)-1].ID, r.EventID)
			}
			// Dropped again: its token no longer works.
			if err := srv.AppServices.Reload(ctx, []string{path}); err != nil {
				t.Fatal(err)
			}
			raw(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami", "second-as-token", nil).wantErr(t, "removed appservice's token", 401, "M_UNKNOWN_TOKEN")
		})

		t.Run("refusals", func(t *testing.T) {
			// A wrong as_token is an unknown token.
			raw(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami", "not-the-as-token", nil).wantErr(t, "wrong as_token", 401, "M_UNKNOWN_TOKEN")
			// A wrong hs_token is refused by the bridge, so the server's
			// own must be the registration's (it delivered above).
			raw(t, "PUT", reg.URL+"/_matrix/app/v1/transactions/x", "not-the-hs-token", map[string]any{"events": []any{}}).wantErr(t, "wrong hs_token", 401, "M_UNKNOWN_TOKEN")
			// Masquerading outside the namespace.
			raw(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami?user_id=@alice:localhost", reg.AppToken, nil).wantErr(t, "masquerade as alice", 403, "M_EXCLUSIVE")
			// An ordinary user cannot register in the exclusive namespace;
			// the appservice sees no such user.
			raw(t, "POST", srv.URL+"/_matrix/client/v3/register", "", map[string]any{"username": "bridge_bob", "password": "password-bob-1", "auth": map[string]any{"type": "m.login.dummy"}}).
				wantErr(t, "register bridge_bob", 400, "M_EXCLUSIVE")
			raw(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami?user_id=@bridge_bob:localhost", reg.AppToken, nil).wantErr(t, "bridge_bob read back", 403, "M_FORBIDDEN")
			// Nor create an alias there.
			raw(t, "PUT", srv.URL+"/_matrix/client/v3/directory/room/%23bridge_x:localhost", alice.AccessToken, map[string]any{"room_id": room.RoomID}).wantErr(t, "alias in the namespace", 400, "M_EXCLUSIVE")
			raw(t, "GET", srv.URL+"/_matrix/client/v3/directory/room/%23bridge_x:localhost", alice.AccessToken, nil).wantErr(t, "alias read back", 404, "M_NOT_FOUND")
			// The appservice itself may.
			if res := raw(t, "PUT", srv.URL+"/_matrix/client/v3/directory/room/%23bridge_x:localhost?user_id=@bridge_alice:localhost", reg.AppToken, map[string]any{"room_id": room.RoomID}); res.Status != 200 {
				t.Fatalf("alias by the appservice: %d %s", res.Status, res.Raw)
			}
		})
	})
}

func TestAppServiceRegistrationInvalid(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, yaml, field string }{
		{"no_as_token", "id: x\nurl: null\nhs_token: h\nsender_localpart: bot\n", "as_token"},
		{"bad_regex", "id: x\nurl: http://127.0.0.1:1\nas_token: a\nhs_token: h\nsender_localpart: bot\nnamespaces:\n  users:\n  - regex: '@(['\n    exclusive: true\n", "namespaces.users[0].regex"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".yaml")
			if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := TestConfig(t, storage.SQLite, Options{Configure: func(cfg *config.Config) { cfg.AppServices.ConfigFiles = []string{path} }})
			srv, err := server.New(context.Background(), cfg)
			if err == nil {
				_ = srv.Shutdown(context.Background())
				t.Fatal("the server started with a malformed registration")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %q does not name %s and %s", err, path, c.field)
			}
		})
	}
}

// TestAppServiceSIGKILL: enclave appservice register prints a registration
// the server accepts. The bridge is down while 200 events are sent, and
// the server is killed with SIGKILL half-way and restarted on the same
// store (the registration given by ENCLAVE_APP_SERVICES_CONFIG_FILES):
// once the bridge is up it receives all 200, once each, in order.
func TestAppServiceSIGKILL(t *testing.T) {
	bin := enclaveBinary(t)
	t.Run("register_command", func(t *testing.T) {
		out, err := exec.Command(bin, "appservice", "register", "--id", "x", "--sender", "xbot", "--url", "http://127.0.0.1:9", "--users", `@x_.*:localhost`).Output()
		if err != nil {
			t.Fatal(err)
		}
		r, err := enclaveas.Parse(out)
		if err != nil || r.ID != "x" || len(r.ASToken) != 64 || r.PushURL() != "http://127.0.0.1:9" || !r.ExclusiveUser("@x_1:localhost") {
			t.Fatalf("registration printed: %v\n%s", err, out)
		}
		if _, err := exec.Command(bin, "appservice", "register", "--id", "x").Output(); err == nil {
			t.Fatal("a registration without a sender was printed")
		}
	})
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		ctx := ctxT(t)
		dir := t.TempDir()
		dbURL := storagetest.NewURL(t, d)
		if d == storage.SQLite {
			dbURL = "sqlite:" + filepath.Join(dir, "enclave.db")
		}
		port := freePort(t)
		reg, path := writeRegistration(t, t.TempDir(), port)
		env := "ENCLAVE_APP_SERVICES_CONFIG_FILES=" + path
		p := startBinary(t, bin, dir, dbURL, env)
		as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: "localhost", HomeserverURL: p.URL,
			HostConfig: appservice.HostConfig{Hostname: "127.0.0.1", Port: uint16(port)}})
		if err != nil {
			t.Fatal(err)
		}
		b := &bridge{as: as}
		go func() {
			for ev := range as.Events {
				b.mu.Lock()
				b.events = append(b.events, ev)
				b.mu.Unlock()
			}
		}()
		puppet := as.Intent("@bridge_carol:localhost")
		if err := puppet.EnsureRegistered(ctx); err != nil {
			t.Fatal(err)
		}
		alice := sessionClient(t, p.URL, Register(t, p.URL, "alice", "pw", false))
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{puppet.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := puppet.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		var want []id.EventID
		send := func(cli *mautrix.Client, from, to int) {
			for i := from; i < to; i++ {
				r, err := cli.SendText(ctx, room.RoomID, fmt.Sprintf("m%d", i))
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, r.EventID)
			}
		}
		send(alice, 0, 100)
		time.Sleep(500 * time.Millisecond) // a transaction is in flight, failing
		p.kill()
		p = startBinary(t, bin, dir, dbURL, env)
		send(rebase(t, alice, p.URL), 100, 200)
		b.start()
		defer b.stop()
		b.waitMessages(t, room.RoomID, 200)
		time.Sleep(2 * time.Second) // nothing more may come
		got := b.messages(room.RoomID)
		if len(got) != 200 {
			t.Fatalf("bridge got %d messages, want 200", len(got))
		}
		sameIDs(t, "messages across the kill", ids(got), want)
	})
}

// TestAppServiceFederatedJoin is the Complement scenario
// TestJoinFederatedRoomFromApplicationServiceBridgeUser with two Enclaves:
// a puppet of B's bridge joins a room on A over federation and speaks in
// it, and what A's user says there reaches the bridge.
func TestAppServiceFederatedJoin(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	a, b := c.Nodes[0], c.Nodes[1]
	port := freePort(t)
	reg := appservice.CreateRegistration()
	reg.ID, reg.URL, reg.SenderLocalpart = "fedbridge", fmt.Sprintf("http://127.0.0.1:%d", port), "fedbot"
	reg.EphemeralEvents = true
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(`^@bridge_.*:`+regexp.QuoteMeta(b.ServerName)+`$`), true)
	y, err := reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "reg.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	b.Configure = func(cfg *config.Config) { cfg.AppServices.ConfigFiles = []string{path} }
	c.StartAll()
	ctx := ctxT(t)

	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: b.ServerName, HomeserverURL: b.URL,
		HostConfig: appservice.HostConfig{Hostname: "127.0.0.1", Port: uint16(port)}})
	if err != nil {
		t.Fatal(err)
	}
	br := &bridge{as: as}
	go func() {
		for ev := range as.Events {
			br.mu.Lock()
			br.events = append(br.events, ev)
			br.mu.Unlock()
		}
	}()
	br.start()
	defer br.stop()

	alice := sessionClient(t, a.URL, Register(t, a.URL, "alice", "pw", false))
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	puppet := as.Intent(id.UserID("@bridge_dan:" + b.ServerName))
	if err := puppet.EnsureRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := puppet.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err != nil {
		t.Fatalf("puppet joining over federation: %v", err)
	}
	if _, err := puppet.SendText(ctx, room.RoomID, "from the bridge"); err != nil {
		t.Fatal(err)
	}
	waitForBody(t, alice, room.RoomID, "from the bridge", 30*time.Second)
	sent, err := alice.SendText(ctx, room.RoomID, "to the bridge")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		found := false
		for _, ev := range br.messages(room.RoomID) {
			found = found || ev.ID == sent.EventID
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's message did not reach the bridge: %d messages", len(br.messages(room.RoomID)))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The remote user's typing and read receipt reach the bridge too
	// (federation EDUs into B, then B's transactions), once each.
	if _, err := alice.UserTyping(ctx, room.RoomID, true, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := alice.SendReceipt(ctx, room.RoomID, sent.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	count := func() (typing, receipts int) {
		br.mu.Lock()
		defer br.mu.Unlock()
		for _, ev := range br.events {
			switch {
			case ev.RoomID != room.RoomID:
			case ev.Type == event.EphemeralEventTyping:
				if u := ev.Content.AsTyping().UserIDs; len(u) == 1 && u[0] == alice.UserID {
					typing++
				}
			case ev.Type == event.EphemeralEventReceipt:
				if _, ok := (*ev.Content.AsReceipt())[sent.EventID][event.ReceiptTypeRead][alice.UserID]; ok {
					receipts++
				}
			}
		}
		return
	}
	waitFor(t, "the remote typing and receipt at the bridge", 30*time.Second, func() bool { ty, r := count(); return ty > 0 && r > 0 })
	time.Sleep(2500 * time.Millisecond)
	if ty, r := count(); ty != 1 || r != 1 {
		t.Fatalf("bridge got alice's typing %d times and her receipt %d times, want once each", ty, r)
	}
}
