package test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"enclave/storage"
)

// TestAdminEraseUser: deactivating with {"erase": true} erases as Synapse
// defines it — the profile and the user's media go, the account reads
// erased: true, and the user's events stay readable for those who were in
// the room when they were sent but are redacted for anyone who joins
// later. A user under legal hold is not erased, and nothing changes.
func TestAdminEraseUser(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		s1 := srv.URL + "/_synapse/admin/v1/"
		s2 := srv.URL + "/_synapse/admin/v2/"
		admin := Register(t, srv.URL, "root", "root-pw", true)
		aliceReg := Register(t, srv.URL, "alice", "alice-pw", false)
		alice := sessionClient(t, srv.URL, aliceReg)
		bob := sessionClient(t, srv.URL, Register(t, srv.URL, "bob", "bob-pw", false))
		carol := sessionClient(t, srv.URL, Register(t, srv.URL, "carol", "carol-pw", false))

		if err := alice.SetDisplayName(ctx, "Alice Secret"); err != nil {
			t.Fatal(err)
		}
		up, err := alice.UploadBytes(ctx, bytes.Repeat([]byte("private file "), 50), "text/plain")
		if err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		sent, err := alice.SendText(ctx, room.RoomID, "the secret message")
		if err != nil {
			t.Fatal(err)
		}

		mustOK(t, "erase", raw(t, "POST", s1+"deactivate/"+aliceReg.UserID, admin.AccessToken, map[string]any{"erase": true}))
		u := mustOK(t, "user", raw(t, "GET", s2+"users/"+aliceReg.UserID, admin.AccessToken, nil))
		if u.Body["erased"] != true || u.Body["deactivated"] != true || u.Body["displayname"] != nil {
			t.Fatalf("erased account: %s", u.Raw)
		}
		if r := raw(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+up.ContentURI.Homeserver+"/"+up.ContentURI.FileID, bob.AccessToken, nil); r.Status != http.StatusNotFound {
			t.Fatalf("erased user's media still served: %d", r.Status)
		}

		body := func(cli *mautrix.Client) (string, bool) {
			t.Helper()
			for _, ev := range pageAll(t, cli, room.RoomID, "", "", mautrix.DirectionBackward, 50) {
				if ev.ID == sent.EventID {
					s, _ := ev.Content.Raw["body"].(string)
					return s, true
				}
			}
			return "", false
		}
		if got, ok := body(bob); !ok || got != "the secret message" {
			t.Fatalf("bob, in the room when it was sent, reads %q (found %v)", got, ok)
		}
		if _, err := carol.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if got, ok := body(carol); !ok || got != "" {
			t.Fatalf("carol, who joined after the erasure, reads %q (found %v): want it redacted", got, ok)
		}
		// Also through /sync and /context.
		if res, err := carol.Context(ctx, room.RoomID, sent.EventID, nil, 1); err != nil {
			t.Fatal(err)
		} else if s, _ := res.Event.Content.Raw["body"].(string); s != "" {
			t.Fatalf("carol's /context shows %q", s)
		}

		// Under legal hold: refused, and nothing changes.
		daveReg := Register(t, srv.URL, "dave", "dave-pw", false)
		mustOK(t, "hold", raw(t, "PUT", srv.URL+"/_enclave/admin/v1/legal_holds/user/"+daveReg.UserID, admin.AccessToken, map[string]any{"reason": "inquiry"}))
		resp := raw(t, "POST", s1+"deactivate/"+daveReg.UserID, admin.AccessToken, map[string]any{"erase": true})
		resp.wantErr(t, "erase under hold", 403, "M_FORBIDDEN")
		if msg, _ := resp.Body["error"].(string); !strings.Contains(msg, "legal hold") {
			t.Fatalf("refusal does not say legal hold: %s", resp.Raw)
		}
		if _, err := sessionClient(t, srv.URL, daveReg).Whoami(ctx); err != nil {
			t.Fatalf("dave's session after a refused erase: %v", err)
		}
		if d := mustOK(t, "dave", raw(t, "GET", s2+"users/"+daveReg.UserID, admin.AccessToken, nil)); d.Body["deactivated"] != false || d.Body["erased"] != false {
			t.Fatalf("dave after a refused erase: %s", d.Raw)
		}

		rows := auditRows(t, srv)
		findAudit(t, rows, "account.deactivate", func(r *storage.AuditRow) bool {
			return r.Target == aliceReg.UserID && strings.Contains(r.Details, `"erased_media":1`)
		})
	})
}
