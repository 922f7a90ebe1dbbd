package test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"enclave/storage"
)

// Issue 11 §6: identifiers are bounded as the spec says (user IDs, room
// IDs, aliases and event IDs at most 255 bytes; events at most 64 KiB),
// and transaction IDs and the other IDs in paths as well. /createRoom took
// a room_alias_name making an alias over 255 bytes (which PUT
// /directory/room refuses) and 100 kB transaction IDs were stored. Bad
// input is refused with 400 M_INVALID_PARAM (413 M_TOO_LARGE for an
// oversized event) and changes nothing.
func TestIdentifierLimits(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		base := cs(srv.URL)
		ctx := context.Background()
		count := func(table string) int {
			t.Helper()
			var n int
			if err := srv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		snapshot := func() [5]int {
			return [5]int{count("rooms"), count("events"), count("room_aliases"), count("transaction_ids"), count("e2ee_to_device")}
		}
		const suffix = ":localhost"

		// An alias of 256 bytes through /createRoom, as through PUT /directory/room.
		before := snapshot()
		long := strings.Repeat("a", 256-len("#")-len(suffix))
		raw(t, "POST", base+"/createRoom", alice.AccessToken, map[string]any{"room_alias_name": long}).
			wantErr(t, "createRoom with a 256-byte alias", 400, "M_INVALID_PARAM")
		raw(t, "POST", base+"/createRoom", alice.AccessToken, map[string]any{"room_alias_name": strings.Repeat("a", 100_000)}).
			wantErr(t, "createRoom with a 100 kB alias", 400, "M_INVALID_PARAM")
		raw(t, "POST", base+"/createRoom", alice.AccessToken, map[string]any{"invite": []string{"@" + strings.Repeat("b", 300) + suffix}}).
			wantErr(t, "createRoom inviting a 311-byte user ID", 400, "M_INVALID_PARAM")
		if after := snapshot(); after != before {
			t.Fatalf("refused createRoom changed the store: %v -> %v", before, after)
		}
		room := mustOK(t, "createRoom with a 255-byte alias", raw(t, "POST", base+"/createRoom", alice.AccessToken,
			map[string]any{"room_alias_name": long[1:], "invite": []string{bob.UserID}})).Body["room_id"].(string)
		raw(t, "PUT", base+"/directory/room/"+url.PathEscape("#b"+long+suffix), alice.AccessToken, map[string]any{"room_id": room}).
			wantErr(t, "PUT /directory/room with a 256-byte alias", 400, "M_INVALID_PARAM")

		// Transaction IDs and event types in paths.
		rp := base + "/rooms/" + url.PathEscape(room)
		msg := map[string]any{"msgtype": "m.text", "body": "hi"}
		huge := strings.Repeat("t", 100_000)
		before = snapshot()
		for _, c := range []struct{ what, method, path string }{
			{"send with a 100 kB txnId", "PUT", rp + "/send/m.room.message/" + huge},
			{"send with a 256-byte txnId", "PUT", rp + "/send/m.room.message/" + huge[:256]},
			{"send with a 256-byte event type", "PUT", rp + "/send/" + strings.Repeat("m", 256) + "/txn1"},
			{"redact with a 100 kB txnId", "PUT", rp + "/redact/$nonexistent/" + huge},
			{"redact with a 256-byte event ID", "PUT", rp + "/redact/$" + huge[:255] + "/txn2"},
			{"to-device with a 100 kB txnId", "PUT", base + "/sendToDevice/m.test/" + huge},
			{"state with a 256-byte event type", "PUT", rp + "/state/" + strings.Repeat("m", 256) + "/key"},
			{"join with a 256-byte room ID", "POST", base + "/rooms/!" + huge[:255] + suffix + "/join"},
		} {
			body := any(msg)
			if strings.Contains(c.path, "sendToDevice") {
				body = map[string]any{"messages": map[string]any{bob.UserID: map[string]any{"*": map[string]any{"x": 1}}}}
			}
			raw(t, c.method, c.path, alice.AccessToken, body).wantErr(t, c.what, 400, "M_INVALID_PARAM")
		}
		// Over the 64 KiB event limit: the content, or a state key.
		raw(t, "PUT", rp+"/send/m.room.message/big", alice.AccessToken, map[string]any{"msgtype": "m.text", "body": strings.Repeat("x", 70_000)}).
			wantErr(t, "a 70 kB message", 413, "M_TOO_LARGE")
		raw(t, "PUT", rp+"/state/m.room.topic/"+strings.Repeat("k", 70_000), alice.AccessToken, map[string]any{"topic": "t"}).
			wantErr(t, "a 70 kB state key", 413, "M_TOO_LARGE")
		if after := snapshot(); after != before {
			t.Fatalf("refused requests changed the store: %v -> %v", before, after)
		}
		// At the limit, accepted.
		mustOK(t, "send with a 255-byte txnId", raw(t, "PUT", rp+"/send/m.room.message/"+huge[:255], alice.AccessToken, msg))
		mustOK(t, "to-device with a 255-byte txnId", raw(t, "PUT", base+"/sendToDevice/m.test/"+huge[:255], alice.AccessToken,
			map[string]any{"messages": map[string]any{bob.UserID: map[string]any{"*": map[string]any{"x": 1}}}}))
	})
}
