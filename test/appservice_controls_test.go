package test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"enclave/auditapi"
	"enclave/config"
	"enclave/storage"
)

// TestAppServiceQueueBound: a bridge that stays down keeps at most
// app_services.queue_max_events queued; the oldest are dropped, the drop
// is audited, and the bridge gets the newest once it is back. A removed
// appservice's queue stays visible to operators.
func TestAppServiceQueueBound(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		ctx := ctxT(t)
		port := freePort(t)
		reg, path := writeRegistration(t, t.TempDir(), port)
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.AppServices.ConfigFiles = []string{path}
			c.AppServices.QueueMaxEvents = 5
		}})
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
		// The bridge is not listening: everything stays queued.
		puppet := as.Intent("@bridge_alice:localhost")
		if err := puppet.EnsureRegistered(ctx); err != nil {
			t.Fatal(err)
		}
		alice := registerClient(t, srv.URL, "alice", "password-alice-1")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{puppet.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := puppet.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		var sent []id.EventID
		for i := range 10 {
			r, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("while down %d", i))
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, r.EventID)
		}
		depth := func() int {
			st, err := storage.AppServiceQueueStats(ctx, srv.DB)
			if err != nil {
				t.Fatal(err)
			}
			return st[reg.ID].Depth
		}
		before := depth()
		if before < 12 { // the invite, the join and the ten messages at least
			t.Fatalf("queue depth %d before pruning", before)
		}
		if err := srv.AppServices.PruneQueues(ctx); err != nil {
			t.Fatal(err)
		}
		if n := depth(); n != 5 {
			t.Fatalf("queue depth %d after pruning, want 5", n)
		}
		var audited bool
		for _, r := range auditRows(t, srv) {
			if r.Action == auditapi.ActionAppServiceQueueDropped && r.Target == reg.ID {
				dt := details(t, r)
				audited = dt["dropped"] == float64(before-5) && dt["registered"] == true && dt["queue_max_events"] == float64(5) && r.Outcome == auditapi.OutcomeFailure
			}
		}
		if !audited {
			t.Fatal("the drop is not audited with its count")
		}
		// Back: the five newest, once each, in order.
		b.start()
		defer b.stop()
		b.waitMessages(t, room.RoomID, 5)
		time.Sleep(time.Second)
		got := b.messages(room.RoomID)
		sameIDs(t, "messages after the drop", ids(got), sent[5:])
		waitFor(t, "an empty queue", 10*time.Second, func() bool { return depth() == 0 })

		// Removed while events are queued: the queue is shown, by id.
		b.stop()
		if _, err := alice.SendText(ctx, room.RoomID, "queued then removed"); err != nil {
			t.Fatal(err)
		}
		if err := srv.AppServices.Reload(ctx, nil); err != nil {
			t.Fatal(err)
		}
		admin := Register(t, srv.URL, "boss", "boss-pw", true)
		view := mustOK(t, "admin view", raw(t, "GET", srv.URL+"/_enclave/admin/v1/appservices", admin.AccessToken, nil))
		rq, _ := view.Body["removed_queues"].([]any)
		if l, _ := view.Body["appservices"].([]any); len(l) != 0 || len(rq) != 1 || rq[0].(map[string]any)["id"] != reg.ID || rq[0].(map[string]any)["queue_depth"] != float64(1) {
			t.Fatalf("admin view after removal: %s", view.Raw)
		}
		b.start() // stopped by the deferred stop
	})
}

// TestAppServiceLegalHold: a bridge's puppets follow retention and legal
// hold like any user: a puppet under hold keeps its room's events past
// the room's lifetime, another puppet's are purged.
func TestAppServiceLegalHold(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		path := filepath.Join(t.TempDir(), "hold.yaml")
		if err := os.WriteFile(path, []byte("id: holdbridge\nurl: null\nas_token: hold-as-token\nhs_token: hold-hs-token\nsender_localpart: holdbot\nnamespaces:\n  users:\n  - regex: '@hold_.*:localhost'\n    exclusive: true\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		const lifetime = 2 * time.Second
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.AppServices.ConfigFiles = []string{path}
			c.Retention.DefaultMaxLifetime.Duration = lifetime
		}})
		admin := Register(t, srv.URL, "admin", "admin-pw", true)
		const asTok = "hold-as-token"
		for _, u := range []string{"hold_p", "hold_q"} {
			mustOK(t, "register "+u, raw(t, "POST", cs(srv.URL)+"/register", asTok, map[string]any{"type": "m.login.application_service", "username": u, "inhibit_login": true}))
		}
		as := func(u string) string { return "?user_id=" + url.QueryEscape("@"+u+":localhost") }
		create := func(u string) string {
			return mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom"+as(u), asTok, map[string]any{})).Body["room_id"].(string)
		}
		txn := 0
		send := func(u, room, body string) string {
			t.Helper()
			txn++
			return mustOK(t, "send", raw(t, "PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/t%d%s", cs(srv.URL), url.PathEscape(room), txn, as(u)),
				asTok, map[string]any{"msgtype": "m.text", "body": body})).Body["event_id"].(string)
		}
		held, free := create("hold_p"), create("hold_q")
		oldHeld := []string{send("hold_p", held, "old 1"), send("hold_p", held, "old 2")}
		send("hold_q", free, "old 1")
		send("hold_q", free, "old 2")
		mustOK(t, "hold", raw(t, "PUT", srv.URL+"/_enclave/admin/v1/legal_holds/user/@hold_p:localhost", admin.AccessToken, map[string]any{"reason": "partner inquiry"}))
		time.Sleep(lifetime + 500*time.Millisecond)
		latestFree := send("hold_q", free, "latest")
		send("hold_p", held, "latest")
		beforeHeld := len(storedTimeline(t, srv.DB, held))

		run := mustOK(t, "run", raw(t, "POST", srv.URL+"/_enclave/admin/v1/retention/run", admin.AccessToken, map[string]any{}))
		purged, _ := run.Body["purged"].(map[string]any)
		if purged[free] != float64(2) || purged[held] != nil {
			t.Fatalf("purged %v: want 2 in the free puppet's room %s and none in the held one %s", purged, free, held)
		}
		if got := storedTimeline(t, srv.DB, free); len(got) != 1 || got[0] != latestFree {
			t.Fatalf("the free puppet's room after the purge: %v", got)
		}
		tl := storedTimeline(t, srv.DB, held)
		if len(tl) != beforeHeld || tl[0] != oldHeld[0] {
			t.Fatalf("the held puppet's room after the purge: %d events, had %d", len(tl), beforeHeld)
		}
	})
}
