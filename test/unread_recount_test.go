package test

import (
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// TestUnreadCountsRecount: after many random messages (some naming a
// member, which the default rules make a highlight), edits (silent by
// .m.rule.suppress_edits, unless they name the member: the display-name
// override rule comes first) and read receipts from random members on recent
// events, every member's notification and highlight counts in /sync equal
// a straight recount from the test's own log of what was sent and read.
// UNREAD_RECOUNT_N sets the number of operations (default 300; the issue's
// 10,000 with UNREAD_RECOUNT_N=10000).
func TestUnreadCountsRecount(t *testing.T) {
	n := 300
	if v, err := strconv.Atoi(os.Getenv("UNREAD_RECOUNT_N")); err == nil && v > 0 {
		n = v
	}
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		names := []string{"alice", "bob", "carol", "dave", "erin"}
		clis := make([]*mautrix.Client, len(names))
		for i, name := range names {
			clis[i] = registerClient(t, srv.URL, name, name+"-pass-1")
		}
		room, err := clis[0].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range clis[1:] {
			if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		// Everyone reads up to the setup; counting starts here.
		start := sendText(t, clis[0], room.RoomID, "start")
		for _, c := range clis {
			if err := c.SendReceipt(ctx, room.RoomID, start, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
		}
		seed := time.Now().UnixNano()
		t.Logf("seed %d, %d operations", seed, n)
		rng := rand.New(rand.NewSource(seed))
		type sent struct {
			id      id.EventID
			sender  int
			edit    bool
			mention int // member named in the body, -1 for none
		}
		var log []sent
		read := make([]int, len(names)) // index in log of each member's furthest receipt, -1 for none
		for i := range read {
			read[i] = -1
		}
		for op := 0; op < n; op++ {
			who := rng.Intn(len(names))
			switch r := rng.Intn(10); {
			case r < 6 || len(log) == 0: // a message, a third naming someone
				m := -1
				body := "message " + strconv.Itoa(op)
				if rng.Intn(3) == 0 {
					m = rng.Intn(len(names))
					body += " for " + names[m]
				}
				log = append(log, sent{id: sendText(t, clis[who], room.RoomID, body), sender: who, mention: m})
			case r < 8: // an edit of one of the sender's recent messages (or a new one)
				target := id.EventID("")
				for j := len(log) - 1; j >= 0 && j >= len(log)-20; j-- {
					if log[j].sender == who && !log[j].edit {
						target = log[j].id
						break
					}
				}
				if target == "" {
					log = append(log, sent{id: sendText(t, clis[who], room.RoomID, "fresh "+strconv.Itoa(op)), sender: who, mention: -1})
					continue
				}
				// The edit names someone: .m.rule.contains_display_name
				// (an override rule before .m.rule.suppress_edits) makes
				// it a highlight for them, and silent for the others.
				m := rng.Intn(len(names))
				content := map[string]any{
					"msgtype": "m.text", "body": "* edited for " + names[m],
					"m.new_content": map[string]any{"msgtype": "m.text", "body": "edited"},
					"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": target},
				}
				resp, err := clis[who].SendMessageEvent(ctx, room.RoomID, event.EventMessage, content)
				if err != nil {
					t.Fatal(err)
				}
				log = append(log, sent{id: resp.EventID, sender: who, edit: true, mention: m})
			default: // a read receipt on one of the last few events
				j := len(log) - 1 - rng.Intn(min(len(log), 8))
				if err := clis[who].SendReceipt(ctx, room.RoomID, log[j].id, event.ReceiptTypeRead, nil); err != nil {
					t.Fatal(err)
				}
				read[who] = max(read[who], j)
			}
		}
		// The notifier stores counts after the events commit, in order: once
		// bob's notifications list a last message of alice's, every event
		// before it has been counted.
		end := sendText(t, clis[0], room.RoomID, "end")
		log = append(log, sent{id: end, sender: 0, mention: -1})
		waitNotified(t, srv.URL, clis[1].AccessToken, end)
		for u, name := range names {
			wantN, wantH := 0, 0
			for j := read[u] + 1; j < len(log); j++ {
				e := log[j]
				if e.sender == u || e.edit && e.mention != u {
					continue
				}
				wantN++
				if e.mention == u {
					wantH++
				}
			}
			body := syncQuery(t, srv.URL, clis[u].AccessToken, nil).Body
			un := dig(body, "rooms", "join", string(room.RoomID), "unread_notifications")
			gotN, gotH := countOf(dig(un, "notification_count")), countOf(dig(un, "highlight_count"))
			if gotN != wantN || gotH != wantH {
				t.Errorf("%s: notification_count %v highlight_count %v, recount %d and %d", name, gotN, gotH, wantN, wantH)
			}
		}
	})
}

// countOf reads a JSON count, absent as 0.
func countOf(v any) int {
	if f, ok := v.(float64); ok {
		return int(f)
	}
	return 0
}

// waitNotified polls /notifications until its newest row is eventID.
func waitNotified(t testing.TB, base, token string, eventID id.EventID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := raw(t, "GET", base+"/_matrix/client/v3/notifications?limit=1", token, nil)
		if l := digList(r.Body, "notifications"); len(l) > 0 && dig(l[0], "event", "event_id") == string(eventID) {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%s not notified: %s", eventID, r.Raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
