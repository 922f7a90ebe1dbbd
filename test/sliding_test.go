package test

import (
	"fmt"
	"net/url"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"enclave/storage"
)

// Simplified sliding sync (MSC4186) over raw HTTP, the way Element X
// drives it.

const slidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

type slidingClient struct {
	t     testing.TB
	base  string
	token string
}

func (c slidingClient) sync(pos string, timeoutMS int, body map[string]any) rawResp {
	c.t.Helper()
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	q.Set("timeout", fmt.Sprint(timeoutMS))
	return raw(c.t, "POST", c.base+slidingPath+"?"+q.Encode(), c.token, body)
}

var slidingTxn atomic.Int64

func slidingSend(t testing.TB, base, token, roomID, text string) string {
	t.Helper()
	r := raw(t, "PUT", fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/sl%d", base, url.PathEscape(roomID), slidingTxn.Add(1)),
		token, map[string]any{"msgtype": "m.text", "body": text})
	if r.Status != 200 {
		t.Fatalf("send %q: %d %s", text, r.Status, r.Raw)
	}
	return r.Body["event_id"].(string)
}

func slidingCreate(t testing.TB, base, token string, body map[string]any) string {
	t.Helper()
	r := raw(t, "POST", base+"/_matrix/client/v3/createRoom", token, body)
	if r.Status != 200 {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	return r.Body["room_id"].(string)
}

func slidingJoin(t testing.TB, base, token, roomID string) {
	t.Helper()
	if r := raw(t, "POST", base+"/_matrix/client/v3/join/"+url.PathEscape(roomID), token, map[string]any{}); r.Status != 200 {
		t.Fatalf("join: %d %s", r.Status, r.Raw)
	}
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func arr(v any) []any          { a, _ := v.([]any); return a }
func num(v any) int64          { f, _ := v.(float64); return int64(f) }

// roomsOf returns the room IDs of a response, sorted.
func roomsOf(r rawResp) []string {
	var out []string
	for id := range obj(r.Body["rooms"]) {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func bodies(evs []any) []string {
	var out []string
	for _, e := range evs {
		if b, ok := obj(obj(e)["content"])["body"].(string); ok {
			out = append(out, b)
		}
	}
	return out
}

func TestSlidingSync(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		base := srv.URL
		alice := Register(t, base, "alice", "pw-alice-1", false)
		bob := Register(t, base, "bob", "pw-bob-1", false)
		bc := slidingClient{t: t, base: base, token: bob.AccessToken}

		// An invite (oldest), then two joined rooms; r1 gets the last message.
		r3 := slidingCreate(t, base, alice.AccessToken, map[string]any{"invite": []string{bob.UserID}, "is_direct": true})
		r1 := slidingCreate(t, base, alice.AccessToken, map[string]any{"name": "Room One", "invite": []string{bob.UserID}})
		r2 := slidingCreate(t, base, alice.AccessToken, map[string]any{"name": "Room Two", "invite": []string{bob.UserID}})
		slidingJoin(t, base, bob.AccessToken, r1)
		slidingJoin(t, base, bob.AccessToken, r2)
		slidingSend(t, base, alice.AccessToken, r2, "m1")
		slidingSend(t, base, alice.AccessToken, r1, "m2")
		slidingSend(t, base, alice.AccessToken, r1, "m3")

		req := map[string]any{
			"lists": map[string]any{"all": map[string]any{
				"ranges":         [][2]int{{0, 9}},
				"timeline_limit": 2,
				"required_state": [][2]string{{"m.room.name", ""}, {"m.room.member", "$LAZY"}, {"m.room.member", "$ME"}},
			}},
			"extensions": map[string]any{"to_device": map[string]any{"enabled": true}, "e2ee": map[string]any{"enabled": true}},
		}
		first := bc.sync("", 0, req)
		if first.Status != 200 {
			t.Fatalf("initial: %d %s", first.Status, first.Raw)
		}
		if c := num(obj(obj(first.Body["lists"])["all"])["count"]); c != 3 {
			t.Fatalf("count = %d, want 3: %s", c, first.Raw)
		}
		rooms := obj(first.Body["rooms"])
		if len(rooms) != 3 {
			t.Fatalf("want 3 rooms, got %v", roomsOf(first))
		}
		one, two, three := obj(rooms[r1]), obj(rooms[r2]), obj(rooms[r3])
		if !(num(one["bump_stamp"]) > num(two["bump_stamp"]) && num(two["bump_stamp"]) > num(three["bump_stamp"])) {
			t.Fatalf("bump stamps not by recency: %v %v %v", one["bump_stamp"], two["bump_stamp"], three["bump_stamp"])
		}
		if one["name"] != "Room One" || one["initial"] != true || num(one["joined_count"]) != 2 || one["limited"] != true || one["prev_batch"] == nil {
			t.Fatalf("room one: %v", one)
		}
		if got := bodies(arr(one["timeline"])); len(arr(one["timeline"])) != 2 || fmt.Sprint(got) != "[m2 m3]" {
			t.Fatalf("room one timeline: %v", one["timeline"])
		}
		state := map[string]bool{}
		for _, e := range arr(one["required_state"]) {
			state[fmt.Sprint(obj(e)["type"], "|", obj(e)["state_key"])] = true
		}
		want := []string{"m.room.name|", "m.room.member|" + alice.UserID, "m.room.member|" + bob.UserID}
		if len(state) != len(want) {
			t.Fatalf("required_state = %v, want %v", state, want)
		}
		for _, w := range want {
			if !state[w] {
				t.Fatalf("required_state = %v lacks %s", state, w)
			}
		}
		if arr(three["invite_state"]) == nil || three["timeline"] != nil || three["is_dm"] != true {
			t.Fatalf("invite room: %v", three)
		}
		if hs := arr(three["heroes"]); len(hs) != 1 || obj(hs[0])["user_id"] != alice.UserID {
			t.Fatalf("invite heroes: %v", three["heroes"])
		}
		e2ee := obj(obj(first.Body["extensions"])["e2ee"])
		if _, ok := obj(e2ee["device_one_time_keys_count"])["signed_curve25519"]; !ok {
			t.Fatalf("e2ee extension lacks key counts: %s", first.Raw)
		}
		pos := first.Body["pos"].(string)

		// Ranges cut the window; count stays the list's size.
		narrow := map[string]any{"conn_id": "narrow", "lists": map[string]any{"top": map[string]any{"ranges": [][2]int{{0, 0}}, "timeline_limit": 1}}}
		if r := bc.sync("", 0, narrow); fmt.Sprint(roomsOf(r)) != fmt.Sprint([]string{r1}) || num(obj(obj(r.Body["lists"])["top"])["count"]) != 3 {
			t.Fatalf("range [0,0]: %s", r.Raw)
		}

		// Incremental: only the room with a new event.
		slidingSend(t, base, alice.AccessToken, r2, "m4")
		inc := bc.sync(pos, 0, req)
		if fmt.Sprint(roomsOf(inc)) != fmt.Sprint([]string{r2}) {
			t.Fatalf("incremental rooms = %v, want [%s]: %s", roomsOf(inc), r2, inc.Raw)
		}
		two = obj(obj(inc.Body["rooms"])[r2])
		if two["initial"] != nil || fmt.Sprint(bodies(arr(two["timeline"]))) != "[m4]" || num(two["num_live"]) != 1 {
			t.Fatalf("incremental room: %v", two)
		}
		pos = inc.Body["pos"].(string)

		// Long-poll wakes on a new message.
		type result struct {
			r  rawResp
			at time.Time
		}
		done := make(chan result, 1)
		go func() {
			r := bc.sync(pos, 20000, req)
			done <- result{r, time.Now()}
		}()
		time.Sleep(300 * time.Millisecond)
		select {
		case res := <-done:
			t.Fatalf("long-poll answered before anything happened: %s", res.r.Raw)
		default:
		}
		sent := time.Now()
		slidingSend(t, base, alice.AccessToken, r1, "m5")
		var lp result
		select {
		case lp = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("long-poll did not wake")
		}
		if lp.at.Sub(sent) > time.Second {
			t.Fatalf("long-poll woke after %v", lp.at.Sub(sent))
		}
		if fmt.Sprint(roomsOf(lp.r)) != fmt.Sprint([]string{r1}) || fmt.Sprint(bodies(arr(obj(obj(lp.r.Body["rooms"])[r1])["timeline"]))) != "[m5]" {
			t.Fatalf("long-poll response: %s", lp.r.Raw)
		}
		pos = lp.r.Body["pos"].(string)

		// A to-device message arrives once.
		msgs := map[string]any{"messages": map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"hello": "bob"}}}}
		if r := raw(t, "PUT", base+"/_matrix/client/v3/sendToDevice/m.test.sliding/td1", alice.AccessToken, msgs); r.Status != 200 {
			t.Fatalf("sendToDevice: %d %s", r.Status, r.Raw)
		}
		td := bc.sync(pos, 5000, req)
		tdExt := obj(obj(td.Body["extensions"])["to_device"])
		evs := arr(tdExt["events"])
		if len(evs) != 1 || obj(evs[0])["type"] != "m.test.sliding" || obj(evs[0])["sender"] != alice.UserID {
			t.Fatalf("to_device: %s", td.Raw)
		}
		next, _ := tdExt["next_batch"].(string)
		if next == "" {
			t.Fatalf("to_device lacks next_batch: %s", td.Raw)
		}
		req["extensions"] = map[string]any{"to_device": map[string]any{"enabled": true, "since": next}, "e2ee": map[string]any{"enabled": true}}
		again := bc.sync(td.Body["pos"].(string), 0, req)
		if again.Status != 200 || len(arr(obj(obj(again.Body["extensions"])["to_device"])["events"])) != 0 {
			t.Fatalf("to-device message delivered twice: %s", again.Raw)
		}

		// Account data, receipts and typing come through their extensions.
		pos = again.Body["pos"].(string)
		if r := raw(t, "PUT", base+"/_matrix/client/v3/user/"+url.PathEscape(bob.UserID)+"/account_data/m.test.sliding", bob.AccessToken, map[string]any{"k": 1}); r.Status != 200 {
			t.Fatalf("account data: %d %s", r.Status, r.Raw)
		}
		m5 := obj(arr(obj(obj(lp.r.Body["rooms"])[r1])["timeline"])[0])["event_id"].(string)
		if r := raw(t, "POST", base+"/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/receipt/m.read/"+url.PathEscape(m5), alice.AccessToken, map[string]any{}); r.Status != 200 {
			t.Fatalf("receipt: %d %s", r.Status, r.Raw)
		}
		if r := raw(t, "PUT", base+"/_matrix/client/v3/rooms/"+url.PathEscape(r1)+"/typing/"+url.PathEscape(alice.UserID), alice.AccessToken, map[string]any{"typing": true, "timeout": 10000}); r.Status != 200 {
			t.Fatalf("typing: %d %s", r.Status, r.Raw)
		}
		req["extensions"] = map[string]any{"account_data": map[string]any{"enabled": true}, "receipts": map[string]any{"enabled": true}, "typing": map[string]any{"enabled": true}}
		ext := obj(bc.sync(pos, 0, req).Body["extensions"])
		global := arr(obj(ext["account_data"])["global"])
		if len(global) != 1 || obj(global[0])["type"] != "m.test.sliding" {
			t.Fatalf("account_data extension: %v", ext)
		}
		if rc := obj(obj(obj(ext["receipts"])["rooms"])[r1]); rc["type"] != "m.receipt" || obj(obj(rc["content"])[m5]) == nil {
			t.Fatalf("receipts extension: %v", ext)
		}
		if ty := obj(obj(obj(ext["typing"])["rooms"])[r1]); fmt.Sprint(obj(ty["content"])["user_ids"]) != fmt.Sprint([]any{alice.UserID}) {
			t.Fatalf("typing extension: %v", ext)
		}

		// A pos of an unknown connection, and a bad range, are refused.
		unknown := map[string]any{"conn_id": "never-started", "lists": req["lists"]}
		bc.sync(pos, 0, unknown).wantErr(t, "unknown connection", 400, "M_UNKNOWN_POS")
		bad := map[string]any{"lists": map[string]any{"x": map[string]any{"ranges": [][2]int{{5, 1}}, "timeline_limit": 1}}}
		bc.sync("", 0, bad).wantErr(t, "bad range", 400, "M_INVALID_PARAM")
		raw(t, "POST", base+slidingPath, "", map[string]any{}).wantErr(t, "no token", 401, "M_MISSING_TOKEN")

		v := raw(t, "GET", base+"/_matrix/client/versions", "", nil)
		if obj(v.Body["unstable_features"])["org.matrix.simplified_msc3575"] != true {
			t.Fatalf("/versions does not advertise simplified sliding sync: %s", v.Raw)
		}
	})
}
