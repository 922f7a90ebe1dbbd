package test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"enclave/storage"
)

// Threads: threaded receipts and per-thread counts (MSC3771/MSC3773,
// MSC4102), thread subscriptions (MSC4306) and their sliding sync
// extension (MSC4308), poll push rules (MSC3930).

// sendRaw sends an event with the given content and returns its ID.
func sendRaw(t *testing.T, base, token, room, typ string, content map[string]any) string {
	t.Helper()
	u := base + "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/send/" + url.PathEscape(typ) + "/" + strings.ReplaceAll(time.Now().Format("150405.000000000"), ".", "")
	id, _ := mustOK(t, "send "+typ, raw(t, "PUT", u, token, content)).Body["event_id"].(string)
	if id == "" {
		t.Fatal("send: no event_id")
	}
	return id
}

func threadReply(root, body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body, "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}
}

func subURL(base, room, root string) string {
	return base + "/_matrix/client/unstable/io.element.msc4306/rooms/" + url.PathEscape(room) + "/thread/" + url.PathEscape(root) + "/subscription"
}

// syncFilter runs one /sync with an inline filter.
func syncFilter(t *testing.T, base, token, since, filter string) rawResp {
	t.Helper()
	u := base + "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		u += "&since=" + url.QueryEscape(since)
	}
	if filter != "" {
		u += "&filter=" + url.QueryEscape(filter)
	}
	return mustOK(t, "sync", raw(t, "GET", u, token, nil))
}

// joinedRoom is rooms.join[room] of a sync response.
func joinedRoom(r rawResp, room string) map[string]any {
	rooms, _ := r.Body["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	jr, _ := join[room].(map[string]any)
	return jr
}

// counts reads (notification, highlight) of a count object.
func counts(v any) (int, int) {
	m, _ := v.(map[string]any)
	n, _ := m["notification_count"].(float64)
	h, _ := m["highlight_count"].(float64)
	return int(n), int(h)
}

// disableThreadRules turns the MSC4306 rules off for a user, as
// MSC4306-unaware clients (and Complement's receipt tests) do.
func disableThreadRules(t *testing.T, base, token string) {
	for _, id := range []string{".io.element.msc4306.rule.subscribed_thread", ".io.element.msc4306.rule.unsubscribed_thread"} {
		mustOK(t, "disable "+id, raw(t, "PUT", base+"/_matrix/client/v3/pushrules/global/postcontent/"+id+"/enabled", token, map[string]any{"enabled": false}))
	}
}

// TestThreadSubscriptions (MSC4306): PUT/GET/DELETE of a subscription,
// automatic ones tied to a cause event in the thread, manual ones winning,
// and an automatic subscription refused (409) when the user unsubscribed
// after its cause event. Each answer is read back from the store.
func TestThreadSubscriptions(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		tok := alice.AccessToken
		newRoom := func() string {
			return mustOK(t, "createRoom", raw(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", tok, map[string]any{})).Body["room_id"].(string)
		}
		stored := func(room, root string) *storage.ThreadSubscription {
			s, err := storage.GetThreadSubscription(ctx, srv.DB, alice.UserID, room, root)
			if err != nil {
				t.Fatalf("stored subscription: %v", err)
			}
			return s
		}
		msg := map[string]any{"msgtype": "m.text", "body": "reply in a thread!"}

		t.Run("subscribe and unsubscribe", func(t *testing.T) {
			room := newRoom()
			root := sendRaw(t, srv.URL, tok, room, "m.room.message", msg)
			raw(t, "GET", subURL(srv.URL, room, root), tok, nil).wantErr(t, "before subscribing", 404, "M_NOT_FOUND")
			if r := mustOK(t, "put", raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{})); string(r.Raw) != "{}" {
				t.Fatalf("PUT answered %s", r.Raw)
			}
			if r := mustOK(t, "get", raw(t, "GET", subURL(srv.URL, room, root), tok, nil)); r.Body["automatic"] != false {
				t.Fatalf("GET %s", r.Raw)
			}
			if s := stored(room, root); !s.Subscribed || s.Automatic {
				t.Fatalf("stored %+v", s)
			}
			mustOK(t, "delete", raw(t, "DELETE", subURL(srv.URL, room, root), tok, nil))
			raw(t, "GET", subURL(srv.URL, room, root), tok, nil).wantErr(t, "after unsubscribing", 404, "M_NOT_FOUND")
			if s := stored(room, root); s.Subscribed || s.UnsubscribedPos == 0 {
				t.Fatalf("stored after DELETE %+v", s)
			}
			// Idempotent: unsubscribing again (or never subscribed) is 200.
			mustOK(t, "delete again", raw(t, "DELETE", subURL(srv.URL, room, root), tok, nil))
		})

		t.Run("automatic subscriptions", func(t *testing.T) {
			room := newRoom()
			root := sendRaw(t, srv.URL, tok, room, "m.room.message", msg)
			other := sendRaw(t, srv.URL, tok, room, "m.room.message", msg)
			otherReply := sendRaw(t, srv.URL, tok, room, "m.room.message", threadReply(other, "elsewhere"))
			reply := sendRaw(t, srv.URL, tok, room, "m.room.message", threadReply(root, "a reply"))
			raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{"automatic": root}).wantErr(t, "root as cause", 400, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
			raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{"automatic": otherReply}).wantErr(t, "other thread's reply as cause", 400, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
			raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{"automatic": "$nope:example.org"}).wantErr(t, "unknown cause", 400, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
			if _, err := storage.GetThreadSubscription(ctx, srv.DB, alice.UserID, room, root); err != storage.ErrNotFound {
				t.Fatalf("refused PUTs stored a row: %v", err)
			}
			mustOK(t, "auto", raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{"automatic": reply}))
			if r := mustOK(t, "get", raw(t, "GET", subURL(srv.URL, room, root), tok, nil)); r.Body["automatic"] != true {
				t.Fatalf("GET %s", r.Raw)
			}
			// A manual subscription overrides the automatic one, and a later
			// automatic one does not downgrade it.
			mustOK(t, "manual", raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{}))
			mustOK(t, "auto again", raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{"automatic": reply}))
			if s := stored(room, root); !s.Subscribed || s.Automatic {
				t.Fatalf("stored %+v", s)
			}
		})

		t.Run("ordering conflict", func(t *testing.T) {
			room := newRoom()
			root := sendRaw(t, srv.URL, tok, room, "m.room.message", msg)
			r1 := sendRaw(t, srv.URL, tok, room, "m.room.message", threadReply(root, "1"))
			mustOK(t, "auto 1", raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{"automatic": r1}))
			r2 := sendRaw(t, srv.URL, tok, room, "m.room.message", threadReply(root, "2"))
			mustOK(t, "unsubscribe", raw(t, "DELETE", subURL(srv.URL, room, root), tok, nil))
			r3 := sendRaw(t, srv.URL, tok, room, "m.room.message", threadReply(root, "3"))
			for _, cause := range []string{r1, r2} {
				raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{"automatic": cause}).wantErr(t, "stale cause", 409, "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION")
				raw(t, "GET", subURL(srv.URL, room, root), tok, nil).wantErr(t, "still unsubscribed", 404, "M_NOT_FOUND")
			}
			mustOK(t, "auto 3", raw(t, "PUT", subURL(srv.URL, room, root), tok, map[string]any{"automatic": r3}))
			if s := stored(room, root); !s.Subscribed || !s.Automatic {
				t.Fatalf("stored %+v", s)
			}
		})

		t.Run("unknown threads and outsiders", func(t *testing.T) {
			room := newRoom()
			root := sendRaw(t, srv.URL, tok, room, "m.room.message", msg)
			raw(t, "PUT", subURL(srv.URL, room, "$notathread:example.org"), tok, map[string]any{}).wantErr(t, "PUT unknown", 404, "M_NOT_FOUND")
			raw(t, "GET", subURL(srv.URL, room, "$notathread:example.org"), tok, nil).wantErr(t, "GET unknown", 404, "M_NOT_FOUND")
			raw(t, "DELETE", subURL(srv.URL, room, "$notathread:example.org"), tok, nil).wantErr(t, "DELETE unknown", 404, "M_NOT_FOUND")
			// An event of another room is no thread of this one.
			room2 := newRoom()
			raw(t, "PUT", subURL(srv.URL, room2, root), tok, map[string]any{}).wantErr(t, "root of another room", 404, "M_NOT_FOUND")
			bob := Register(t, srv.URL, "bob", "bob-pw", false)
			raw(t, "PUT", subURL(srv.URL, room, root), bob.AccessToken, map[string]any{}).wantErr(t, "non-member", 404, "M_NOT_FOUND")
			if _, err := storage.GetThreadSubscription(ctx, srv.DB, bob.UserID, room, root); err != storage.ErrNotFound {
				t.Fatalf("outsider's subscription stored: %v", err)
			}
		})

		if r := mustOK(t, "versions", raw(t, "GET", srv.URL+"/_matrix/client/versions", "", nil)); r.Body["unstable_features"].(map[string]any)["org.matrix.msc4306"] != true {
			t.Fatalf("org.matrix.msc4306 not advertised: %s", r.Raw)
		}
	})
}

// TestThreadSubscriptionPushRules: the postcontent rules are served,
// cannot be added to, and the notifier applies them: a reply in a thread
// bob has not subscribed to does not notify him (a mention does), one in
// a thread he follows does; disabled, replies count as messages again.
func TestThreadSubscriptionPushRules(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		room := mustOK(t, "createRoom", raw(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat"})).Body["room_id"].(string)
		mustOK(t, "join", raw(t, "POST", srv.URL+"/_matrix/client/v3/join/"+url.PathEscape(room), bob.AccessToken, map[string]any{}))

		pr := srv.URL + "/_matrix/client/v3/pushrules/global/"
		rule := mustOK(t, "get rule", raw(t, "GET", pr+"postcontent/.io.element.msc4306.rule.unsubscribed_thread", bob.AccessToken, nil))
		if string(rule.Raw) != `{"actions":[],"conditions":[{"kind":"io.element.msc4306.thread_subscription","subscribed":false}],"default":true,"enabled":true,"rule_id":".io.element.msc4306.rule.unsubscribed_thread"}` {
			t.Fatalf("unsubscribed_thread: %s", rule.Raw)
		}
		all := mustOK(t, "get all", raw(t, "GET", srv.URL+"/_matrix/client/v3/pushrules/", bob.AccessToken, nil))
		if pc, _ := all.Body["global"].(map[string]any)["postcontent"].([]any); len(pc) != 2 {
			t.Fatalf("postcontent in /pushrules/: %s", all.Raw)
		}
		raw(t, "PUT", pr+"postcontent/mine", bob.AccessToken, map[string]any{"actions": []any{}, "conditions": []any{}}).wantErr(t, "custom postcontent rule", 400, "M_INVALID_PARAM")
		if rows, _ := storage.PushRules(ctx, srv.DB, bob.UserID); len(rows) != 0 {
			t.Fatalf("refused rule stored: %+v", rows)
		}

		threads := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
		root := sendRaw(t, srv.URL, alice.AccessToken, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "root"})
		followed := sendRaw(t, srv.URL, alice.AccessToken, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "root 2"})
		mustOK(t, "receipt", raw(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(followed), bob.AccessToken, map[string]any{}))
		mustOK(t, "subscribe", raw(t, "PUT", subURL(srv.URL, room, followed), bob.AccessToken, map[string]any{}))
		sendRaw(t, srv.URL, alice.AccessToken, room, "m.room.message", threadReply(root, "silent"))
		mention := sendRaw(t, srv.URL, alice.AccessToken, room, "m.room.message", threadReply(root, "hey bob!"))
		sendRaw(t, srv.URL, alice.AccessToken, room, "m.room.message", threadReply(followed, "followed 1"))
		last := sendRaw(t, srv.URL, alice.AccessToken, room, "m.room.message", threadReply(followed, "followed 2"))
		var jr map[string]any
		waitFor(t, "thread counts", 10*time.Second, func() bool {
			jr = joinedRoom(syncFilter(t, srv.URL, bob.AccessToken, "", threads), room)
			tn, _ := jr["unread_thread_notifications"].(map[string]any)
			n, _ := counts(tn[followed])
			return n == 2
		})
		tn, _ := jr["unread_thread_notifications"].(map[string]any)
		if n, h := counts(tn[root]); n != 1 || h != 1 {
			t.Fatalf("unsubscribed thread counts %d/%d (want only the mention): %v", n, h, tn)
		}
		if n, h := counts(jr["unread_notifications"]); n != 0 || h != 0 {
			t.Fatalf("main timeline counts %d/%d", n, h)
		}
		ns, err := storage.ListNotifications(ctx, srv.DB, bob.UserID, 0, 10, false)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, n := range ns {
			if n.ThreadID != "main" {
				ids[n.EventID] = true
			}
		}
		if len(ids) != 3 || !ids[mention] || !ids[last] {
			t.Fatalf("stored notifications %+v", ns)
		}

		// Disabled (as MSC4306-unaware setups do), a reply in an
		// unfollowed thread notifies as a message again.
		disableThreadRules(t, srv.URL, bob.AccessToken)
		if r := mustOK(t, "rule", raw(t, "GET", pr+"postcontent/.io.element.msc4306.rule.unsubscribed_thread/enabled", bob.AccessToken, nil)); r.Body["enabled"] != false {
			t.Fatalf("enabled: %s", r.Raw)
		}
		sendRaw(t, srv.URL, alice.AccessToken, room, "m.room.message", threadReply(root, "counted now"))
		waitFor(t, "thread count after disabling", 10*time.Second, func() bool {
			tn, _ := joinedRoom(syncFilter(t, srv.URL, bob.AccessToken, "", threads), room)["unread_thread_notifications"].(map[string]any)
			n, _ := counts(tn[root])
			return n == 2
		})
	})
}

// TestThreadedReceipts is Complement's scenario (MSC4306 rules disabled,
// as it does): threaded and unthreaded receipts move the main and thread
// counts, exactly as tests/csapi/thread_notifications_test.go expects.
func TestThreadedReceipts(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		disableThreadRules(t, srv.URL, alice.AccessToken)
		disableThreadRules(t, srv.URL, bob.AccessToken)
		room := mustOK(t, "createRoom", raw(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat"})).Body["room_id"].(string)
		mustOK(t, "join", raw(t, "POST", srv.URL+"/_matrix/client/v3/join/"+url.PathEscape(room), bob.AccessToken, map[string]any{}))
		at := alice.AccessToken
		text := func(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }
		a := sendRaw(t, srv.URL, at, room, "m.room.message", text("Hello world!"))
		b := sendRaw(t, srv.URL, at, room, "m.room.message", threadReply(a, "Start thread!"))
		sendRaw(t, srv.URL, at, room, "m.room.message", threadReply(a, "Thread response "+bob.UserID+"!"))
		dEv := sendRaw(t, srv.URL, at, room, "m.room.message", text("Hello "+bob.UserID+"!"))
		sendRaw(t, srv.URL, at, room, "m.room.message", threadReply(a, "End thread"))
		f := sendRaw(t, srv.URL, at, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "Reference!",
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": a}})
		g := sendRaw(t, srv.URL, at, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": f, "key": "test"}})
		_ = g
		threads := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
		// want: unthreaded (n, h), then with the filter main (n, h) and
		// thread A's (n, h); thread -1 means no thread counts at all.
		check := func(step string, n, h, mn, mh, tnn, tnh int) {
			t.Helper()
			var jr map[string]any
			ok := false
			deadline := time.Now().Add(10 * time.Second)
			for !ok && time.Now().Before(deadline) {
				jr = joinedRoom(syncFilter(t, srv.URL, bob.AccessToken, "", ""), room)
				gn, gh := counts(jr["unread_notifications"])
				_, has := jr["unread_thread_notifications"]
				ok = gn == n && gh == h && !has
				if ok {
					jr = joinedRoom(syncFilter(t, srv.URL, bob.AccessToken, "", threads), room)
					gn, gh = counts(jr["unread_notifications"])
					tn, _ := jr["unread_thread_notifications"].(map[string]any)
					tn0, th := counts(tn[a])
					if tnn < 0 {
						ok = gn == mn && gh == mh && len(tn) == 0
					} else {
						ok = gn == mn && gh == mh && tn0 == tnn && th == tnh
					}
				}
				if !ok {
					time.Sleep(50 * time.Millisecond)
				}
			}
			if !ok {
				b, _ := json.Marshal(jr)
				t.Fatalf("%s: counts %s", step, b)
			}
		}
		receipt := func(ev string, body map[string]any) {
			mustOK(t, "receipt", raw(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(ev), bob.AccessToken, body))
		}
		check("initial", 6, 2, 3, 1, 3, 1)
		receipt(a, map[string]any{"thread_id": "main"})
		check("main receipt on A", 5, 2, 2, 1, 3, 1)
		receipt(b, map[string]any{"thread_id": a})
		check("thread receipt on B", 4, 2, 2, 1, 2, 1)
		receipt(dEv, map[string]any{})
		check("unthreaded receipt on D", 2, 0, 1, 0, 1, 0)
		receipt(g, map[string]any{"thread_id": a})
		check("thread receipt on G", 1, 0, 1, 0, -1, 0)

		rs, err := storage.UserReceipts(ctx, srv.DB, bob.UserID, room)
		if err != nil || len(rs) != 3 {
			t.Fatalf("stored receipts %+v %v", rs, err)
		}
		byThread := map[string]string{}
		for _, r := range rs {
			byThread[r.ThreadID] = r.EventID
		}
		if byThread["main"] != a || byThread[a] != g || byThread[""] != dEv {
			t.Fatalf("stored receipts by thread %v", byThread)
		}
	})
}

// TestThreadReceiptsInSyncMSC4102: both an unthreaded and a threaded
// receipt (other events) reach /sync; a threaded receipt for the event the
// unthreaded one names is dropped when stored, so it never wins in a later
// sync (nor travels alone over federation).
func TestThreadReceiptsInSyncMSC4102(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		tok := alice.AccessToken
		room := mustOK(t, "createRoom", raw(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", tok, map[string]any{"preset": "public_chat"})).Body["room_id"].(string)
		a := sendRaw(t, srv.URL, tok, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "Hello world!"})
		b := sendRaw(t, srv.URL, tok, room, "m.room.message", threadReply(a, "Start thread!"))
		c := sendRaw(t, srv.URL, tok, room, "m.room.message", threadReply(a, "more"))
		rpath := srv.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/receipt/m.read/"
		receiptsOf := func(r rawResp) map[string]map[string]any {
			out := map[string]map[string]any{}
			eph, _ := joinedRoom(r, room)["ephemeral"].(map[string]any)
			evs, _ := eph["events"].([]any)
			for _, e := range evs {
				ev, _ := e.(map[string]any)
				if ev["type"] != "m.receipt" {
					continue
				}
				content, _ := ev["content"].(map[string]any)
				for eventID, v := range content {
					read, _ := v.(map[string]any)["m.read"].(map[string]any)
					if info, ok := read[alice.UserID].(map[string]any); ok {
						out[eventID] = info
					}
				}
			}
			return out
		}
		// Both kinds, for different events, both arrive.
		mustOK(t, "unthreaded", raw(t, "POST", rpath+url.PathEscape(b), tok, map[string]any{}))
		mustOK(t, "threaded", raw(t, "POST", rpath+url.PathEscape(c), tok, map[string]any{"thread_id": a}))
		first := syncRaw(t, srv.URL, tok, "")
		got := receiptsOf(first)
		if _, threaded := got[b]["thread_id"]; got[b] == nil || threaded || got[c]["thread_id"] != a {
			t.Fatalf("receipts in sync: %v", got)
		}
		// The clash: a threaded receipt for b, which the unthreaded one names.
		since := first.Body["next_batch"].(string)
		mustOK(t, "clashing threaded", raw(t, "POST", rpath+url.PathEscape(b), tok, map[string]any{"thread_id": "main"}))
		marker := sendRaw(t, srv.URL, tok, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "Marker"})
		inc := syncRaw(t, srv.URL, tok, since)
		if info, ok := receiptsOf(inc)[b]; ok {
			t.Fatalf("the clashing threaded receipt was served: %v", info)
		}
		tl, _ := joinedRoom(inc, room)["timeline"].(map[string]any)
		if evs, _ := tl["events"].([]any); len(evs) == 0 || evs[len(evs)-1].(map[string]any)["event_id"] != marker {
			t.Fatalf("marker not in the incremental sync: %s", inc.Raw)
		}
		rs, err := storage.UserReceipts(ctx, srv.DB, alice.UserID, room)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.ThreadID == "main" {
				t.Fatalf("clashing receipt stored: %+v", rs)
			}
		}
		if len(rs) != 2 {
			t.Fatalf("stored receipts %+v", rs)
		}
	})
}

// slidingThreadSubs runs one sliding sync with only the MSC4308 extension
// and returns the new pos and the extension's object (nil if absent).
func slidingThreadSubs(t *testing.T, base, token, pos string, ext map[string]any) (string, map[string]any) {
	t.Helper()
	body := map[string]any{"extensions": map[string]any{"io.element.msc4308.thread_subscriptions": ext}}
	if pos != "" {
		body["pos"] = pos
	}
	r := mustOK(t, "sliding sync", raw(t, "POST", base+"/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0", token, body))
	exts, _ := r.Body["extensions"].(map[string]any)
	x, _ := exts["io.element.msc4308.thread_subscriptions"].(map[string]any)
	return r.Body["pos"].(string), x
}

// TestMSC4308ThreadSubscriptionsSlidingSync: the extension sends the
// subscriptions changed since pos (initial: all), at most limit with a
// prev_batch to page back through the companion endpoint, and removals in
// "unsubscribed".
func TestMSC4308ThreadSubscriptionsSlidingSync(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		tok := alice.AccessToken
		room := mustOK(t, "createRoom", raw(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", tok, map[string]any{})).Body["room_id"].(string)
		on := map[string]any{"enabled": true, "limit": 2}
		pos, x := slidingThreadSubs(t, srv.URL, tok, "", on)
		if _, ok := x["subscribed"]; ok {
			t.Fatalf("subscriptions before any: %v", x)
		}
		var roots []string
		for i := 0; i < 3; i++ {
			roots = append(roots, sendRaw(t, srv.URL, tok, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "root"}))
		}
		mustOK(t, "subscribe 0", raw(t, "PUT", subURL(srv.URL, room, roots[0]), tok, map[string]any{}))

		// Incremental: the one change since pos.
		pos2, x := slidingThreadSubs(t, srv.URL, tok, pos, on)
		subs, _ := x["subscribed"].(map[string]any)
		entry, _ := subs[room].(map[string]any)[roots[0]].(map[string]any)
		if entry["automatic"] != false {
			t.Fatalf("incremental: %v", x)
		}
		if _, ok := entry["bump_stamp"].(float64); !ok {
			t.Fatalf("no bump_stamp: %v", x)
		}
		if _, ok := x["prev_batch"]; ok {
			t.Fatalf("prev_batch with everything sent: %v", x)
		}
		// Nothing new: no extension.
		if _, x := slidingThreadSubs(t, srv.URL, tok, pos2, on); x != nil {
			t.Fatalf("unchanged: %v", x)
		}

		// Three more changes, limit 2: the newest two and a prev_batch.
		reply := sendRaw(t, srv.URL, tok, room, "m.room.message", threadReply(roots[1], "r"))
		mustOK(t, "subscribe 1", raw(t, "PUT", subURL(srv.URL, room, roots[1]), tok, map[string]any{"automatic": reply}))
		mustOK(t, "subscribe 2", raw(t, "PUT", subURL(srv.URL, room, roots[2]), tok, map[string]any{}))
		mustOK(t, "unsubscribe 0", raw(t, "DELETE", subURL(srv.URL, room, roots[0]), tok, nil))
		_, x = slidingThreadSubs(t, srv.URL, tok, pos2, on)
		subs, _ = x["subscribed"].(map[string]any)
		unsubs, _ := x["unsubscribed"].(map[string]any)
		if len(subs[room].(map[string]any)) != 1 || subs[room].(map[string]any)[roots[2]] == nil {
			t.Fatalf("limited subscribed: %v", x)
		}
		if u, _ := unsubs[room].(map[string]any)[roots[0]].(map[string]any); u == nil || u["bump_stamp"] == nil {
			t.Fatalf("limited unsubscribed: %v", x)
		}
		prev, _ := x["prev_batch"].(string)
		if prev == "" {
			t.Fatalf("no prev_batch: %v", x)
		}
		// The companion endpoint pages back from prev_batch to pos2: the
		// automatic subscription to roots[1], then nothing more.
		list := srv.URL + "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions"
		page := mustOK(t, "page", raw(t, "GET", list+"?dir=b&from="+url.QueryEscape(prev)+"&to="+url.QueryEscape(pos2)+"&limit=10", tok, nil))
		psubs, _ := page.Body["subscribed"].(map[string]any)
		if e, _ := psubs[room].(map[string]any)[roots[1]].(map[string]any); e["automatic"] != true || len(psubs[room].(map[string]any)) != 1 {
			t.Fatalf("page: %s", page.Raw)
		}
		if _, ok := page.Body["end"]; ok {
			t.Fatalf("end on the last page: %s", page.Raw)
		}
		// Without from/to: everything, newest first, one per page.
		p1 := mustOK(t, "page 1", raw(t, "GET", list+"?dir=b&limit=1", tok, nil))
		end, _ := p1.Body["end"].(string)
		if u, _ := p1.Body["unsubscribed"].(map[string]any); u == nil || end == "" {
			t.Fatalf("first page: %s", p1.Raw)
		}
		seen := 1
		for end != "" && seen < 10 {
			p := mustOK(t, "next page", raw(t, "GET", list+"?dir=b&limit=1&from="+url.QueryEscape(end), tok, nil))
			end, _ = p.Body["end"].(string)
			if _, ok := p.Body["subscribed"]; ok {
				seen++
			}
		}
		if seen != 3 {
			t.Fatalf("paged %d changes, want 3 (one per thread)", seen)
		}
		raw(t, "GET", list+"?dir=f", tok, nil).wantErr(t, "dir=f", 400, "M_INVALID_PARAM")
		raw(t, "GET", list+"?dir=b&limit=0", tok, nil).wantErr(t, "limit 0", 400, "M_INVALID_PARAM")
		raw(t, "GET", list+"?dir=b&from=xyz", tok, nil).wantErr(t, "bad from", 400, "M_INVALID_PARAM")
		// The initial sync sees the current state of all three threads.
		_, x = slidingThreadSubs(t, srv.URL, tok, "", map[string]any{"enabled": true})
		subs, _ = x["subscribed"].(map[string]any)
		unsubs, _ = x["unsubscribed"].(map[string]any)
		if len(subs[room].(map[string]any)) != 2 || len(unsubs[room].(map[string]any)) != 1 {
			t.Fatalf("initial: %v", x)
		}
	})
}

// TestPollsLocalPushRules (MSC3930): the poll rules are served with the
// exact conditions and actions, one-to-one rules first, and a poll start
// in a DM notifies the other member.
func TestPollsLocalPushRules(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		pr := srv.URL + "/_matrix/client/v3/pushrules/global/"
		want := map[string]string{
			"override/.org.matrix.msc3930.rule.poll_response":          `{"actions":[],"conditions":[{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.response"}],"default":true,"enabled":true,"rule_id":".org.matrix.msc3930.rule.poll_response"}`,
			"underride/.org.matrix.msc3930.rule.poll_start_one_to_one": `{"actions":["notify",{"set_tweak":"sound","value":"default"}],"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.start"}],"default":true,"enabled":true,"rule_id":".org.matrix.msc3930.rule.poll_start_one_to_one"}`,
			"underride/.org.matrix.msc3930.rule.poll_start":            `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.start"}],"default":true,"enabled":true,"rule_id":".org.matrix.msc3930.rule.poll_start"}`,
			"underride/.org.matrix.msc3930.rule.poll_end_one_to_one":   `{"actions":["notify",{"set_tweak":"sound","value":"default"}],"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.end"}],"default":true,"enabled":true,"rule_id":".org.matrix.msc3930.rule.poll_end_one_to_one"}`,
			"underride/.org.matrix.msc3930.rule.poll_end":              `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.end"}],"default":true,"enabled":true,"rule_id":".org.matrix.msc3930.rule.poll_end"}`,
			"underride/.m.rule.poll_start_one_to_one":                  `{"actions":["notify",{"set_tweak":"sound","value":"default"}],"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.poll.start"}],"default":true,"enabled":true,"rule_id":".m.rule.poll_start_one_to_one"}`,
			"underride/.m.rule.poll_start":                             `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"type","pattern":"m.poll.start"}],"default":true,"enabled":true,"rule_id":".m.rule.poll_start"}`,
			"underride/.m.rule.poll_end_one_to_one":                    `{"actions":["notify",{"set_tweak":"sound","value":"default"}],"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.poll.end"}],"default":true,"enabled":true,"rule_id":".m.rule.poll_end_one_to_one"}`,
			"underride/.m.rule.poll_end":                               `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"type","pattern":"m.poll.end"}],"default":true,"enabled":true,"rule_id":".m.rule.poll_end"}`,
		}
		for path, w := range want {
			if r := mustOK(t, path, raw(t, "GET", pr+path, alice.AccessToken, nil)); string(r.Raw) != w {
				t.Errorf("%s:\n got %s\nwant %s", path, r.Raw, w)
			}
		}
		all := mustOK(t, "all rules", raw(t, "GET", srv.URL+"/_matrix/client/v3/pushrules/", alice.AccessToken, nil))
		under, _ := all.Body["global"].(map[string]any)["underride"].([]any)
		index := map[string]int{}
		for i, r := range under {
			index[r.(map[string]any)["rule_id"].(string)] = i
		}
		for _, p := range []string{".m.rule.", ".org.matrix.msc3930.rule."} {
			for _, k := range []string{"poll_start", "poll_end"} {
				one, okOne := index[p+k+"_one_to_one"]
				any, okAny := index[p+k]
				if !okOne || !okAny || one > any || any > index[".m.rule.message"] {
					t.Fatalf("underride order: %v", index)
				}
			}
		}

		// A poll start in a DM notifies bob once, with a sound.
		ac := sessionClient(t, srv.URL, alice)
		resp, err := ac.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		room := string(resp.RoomID)
		mustOK(t, "invite", raw(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", alice.AccessToken, map[string]any{"user_id": bob.UserID}))
		mustOK(t, "join", raw(t, "POST", srv.URL+"/_matrix/client/v3/join/"+url.PathEscape(room), bob.AccessToken, map[string]any{}))
		poll := sendRaw(t, srv.URL, alice.AccessToken, room, "org.matrix.msc3381.poll.start", map[string]any{
			"org.matrix.msc3381.poll.start": map[string]any{"question": map[string]any{"org.matrix.msc1767.text": "Lunch?"}, "kind": "org.matrix.msc3381.poll.disclosed",
				"max_selections": 1, "answers": []any{map[string]any{"id": "y", "org.matrix.msc1767.text": "yes"}, map[string]any{"id": "n", "org.matrix.msc1767.text": "no"}}},
			"org.matrix.msc1767.text": "Lunch? 1. yes 2. no"})
		sendRaw(t, srv.URL, bob.AccessToken, room, "org.matrix.msc3381.poll.response", map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": poll}, "org.matrix.msc3381.poll.response": map[string]any{"answers": []any{"y"}}})
		waitFor(t, "bob's poll notification", 10*time.Second, func() bool {
			n, _ := counts(joinedRoom(syncRaw(t, srv.URL, bob.AccessToken, ""), room)["unread_notifications"])
			return n == 1
		})
		// The newest is the poll (before it only the invite, read by the
		// join).
		ns, err := storage.ListNotifications(ctx, srv.DB, bob.UserID, 0, 10, false)
		if err != nil || len(ns) != 2 || ns[0].EventID != poll || ns[0].Read || !ns[1].Read || !strings.Contains(string(ns[0].Actions), `"sound"`) {
			t.Fatalf("bob's notifications %+v %v", ns, err)
		}
		// Alice's vote-free view: bob's response notified no one.
		if ns, _ := storage.ListNotifications(ctx, srv.DB, alice.UserID, 0, 10, false); len(ns) != 0 {
			t.Fatalf("a poll response notified: %+v", ns)
		}
	})
}
