package test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/config"
	"enclave/storage"
)

// TestRoomsExtra drives the directory, search, relations, upgrade,
// knocking, reporting, VoIP, space and summary endpoints of a real server
// on each store with mautrix, checking both what clients see and what
// the store kept.
func TestRoomsExtra(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		v3 := srv.URL + "/_matrix/client/v3"
		v1 := srv.URL + "/_matrix/client/v1"
		alice := registerClient(t, srv.URL, "alice", "alice-pass")
		bob := registerClient(t, srv.URL, "bob", "bob-pass")
		carol := registerClient(t, srv.URL, "carol", "carol-pass")
		dave := registerClient(t, srv.URL, "dave", "dave-pass")
		for u, name := range map[id.UserID]string{alice.UserID: "Alice Liddell", bob.UserID: "Bob Builder", dave.UserID: "Dave Hidden"} {
			if err := storage.SetAccountDisplayName(ctx, srv.DB, u.String(), name); err != nil {
				t.Fatal(err)
			}
		}
		roomURL := func(room id.RoomID, rest string) string {
			return v3 + "/rooms/" + url.PathEscape(room.String()) + rest
		}
		create := func(cli *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
			t.Helper()
			resp, err := cli.CreateRoom(ctx, req)
			if err != nil {
				t.Fatalf("createRoom %+v: %v", req, err)
			}
			return resp.RoomID
		}
		join := func(cli *mautrix.Client, room id.RoomID) {
			t.Helper()
			if _, err := cli.JoinRoomByID(ctx, room); err != nil {
				t.Fatalf("%s joining %s: %v", cli.UserID, room, err)
			}
		}
		send := func(cli *mautrix.Client, room id.RoomID, typ event.Type, content any) id.EventID {
			t.Helper()
			resp, err := cli.SendMessageEvent(ctx, room, typ, content)
			if err != nil {
				t.Fatalf("send %s: %v", typ, err)
			}
			return resp.EventID
		}
		text := func(cli *mautrix.Client, room id.RoomID, body string) id.EventID {
			t.Helper()
			return send(cli, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": body})
		}

		t.Run("public rooms", func(t *testing.T) {
			lobby := create(alice, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: "Public Lobby", Topic: "all welcome", RoomAliasName: "lobby"})
			join(bob, lobby)
			quiet := create(alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Quiet corner"})
			resp, err := client(t, srv.URL, "", "").PublicRooms(ctx, &mautrix.ReqPublicRooms{}) // no token needed
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Chunk) != 1 || resp.TotalRoomCountEstimate != 1 {
				t.Fatalf("only the published room: %+v", resp)
			}
			c := resp.Chunk[0]
			if c.RoomID != lobby || c.Name != "Public Lobby" || c.Topic != "all welcome" || c.CanonicalAlias != "#lobby:localhost" || c.NumJoinedMembers != 2 ||
				c.WorldReadable || c.GuestCanJoin || c.JoinRule != "public" || c.RoomType != "" {
				t.Fatalf("lobby chunk: %+v", c)
			}
			// Publishing the second room lists it after the bigger one.
			raw(t, "PUT", v3+"/directory/list/room/"+url.PathEscape(quiet.String()), alice.AccessToken, map[string]string{"visibility": "public"})
			page := func(body map[string]any) rawResp {
				t.Helper()
				r := raw(t, "POST", v3+"/publicRooms", bob.AccessToken, body)
				if r.Status != 200 {
					t.Fatalf("POST publicRooms %v: %d %s", body, r.Status, r.Raw)
				}
				return r
			}
			names := func(r rawResp) string {
				var out []string
				for _, c := range r.Body["chunk"].([]any) {
					out = append(out, c.(map[string]any)["name"].(string))
				}
				return strings.Join(out, ",")
			}
			first := page(map[string]any{"limit": 1})
			if names(first) != "Public Lobby" || first.Body["total_room_count_estimate"] != float64(2) || first.Body["next_batch"] == nil || first.Body["prev_batch"] != nil {
				t.Fatalf("first page: %s", first.Raw)
			}
			second := page(map[string]any{"limit": 1, "since": first.Body["next_batch"]})
			if names(second) != "Quiet corner" || second.Body["next_batch"] != nil || second.Body["prev_batch"] == nil {
				t.Fatalf("second page: %s", second.Raw)
			}
			if r := page(map[string]any{"filter": map[string]any{"generic_search_term": "QUIET"}}); names(r) != "Quiet corner" || r.Body["total_room_count_estimate"] != float64(1) {
				t.Fatalf("search: %s", r.Raw)
			}
			if r := page(map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}}); names(r) != "" {
				t.Fatalf("no spaces published: %s", r.Raw)
			}
			// A rename reaches the directory through the event hook.
			if _, err := alice.SendStateEvent(ctx, lobby, event.StateRoomName, "", map[string]string{"name": "Grand Lobby"}); err != nil {
				t.Fatal(err)
			}
			if r := page(map[string]any{"filter": map[string]any{"generic_search_term": "lobby"}}); names(r) != "Grand Lobby" {
				t.Fatalf("after rename: %s", r.Raw)
			}
			st, err := storage.GetRoomStats(ctx, srv.DB, lobby.String())
			if err != nil || st.Name != "Grand Lobby" || st.JoinedMembers != 2 || st.JoinRule != "public" || !st.IsPublic {
				t.Fatalf("stored stats: %+v %v", st, err)
			}
			raw(t, "POST", v3+"/publicRooms", "", map[string]any{}).wantErr(t, "POST without token", 401, "M_MISSING_TOKEN")
			raw(t, "POST", v3+"/publicRooms", bob.AccessToken, map[string]any{"since": "garbage"}).wantErr(t, "bad since", 400, "M_INVALID_PARAM")
			raw(t, "POST", v3+"/publicRooms", bob.AccessToken, map[string]any{"limit": "ten"}).wantErr(t, "string limit", 400, "M_BAD_JSON")
			raw(t, "GET", v3+"/publicRooms?limit=x", "", nil).wantErr(t, "bad GET limit", 400, "M_INVALID_PARAM")
			raw(t, "GET", v3+"/publicRooms?server=elsewhere.example", "", nil).wantErr(t, "remote directory", 400, "M_INVALID_PARAM")
		})

		t.Run("user directory", func(t *testing.T) {
			// Carol is alone in a public room; Dave alone in a private one.
			create(carol, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "carol's place"})
			create(dave, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			search := func(cli *mautrix.Client, term string, limit int) *mautrix.RespSearchUserDirectory {
				t.Helper()
				resp, err := cli.SearchUserDirectory(ctx, term, limit)
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			r := search(alice, "bob", 10)
			// The spec's field is display_name (mautrix reads "displayname" into
			// DisplayName, so the spec field lands in Extra).
			if len(r.Results) != 1 || r.Results[0].UserID != bob.UserID || r.Results[0].Extra["display_name"] != "Bob Builder" || r.Limited {
				t.Fatalf("bob (shares a room): %+v", r)
			}
			if r := search(alice, "builder", 10); len(r.Results) != 1 || r.Results[0].UserID != bob.UserID {
				t.Fatalf("by display name: %+v", r)
			}
			if r := search(alice, "CAROL", 10); len(r.Results) != 1 || r.Results[0].UserID != carol.UserID {
				t.Fatalf("carol (public room): %+v", r)
			}
			if r := search(alice, "dave", 10); len(r.Results) != 0 {
				t.Fatalf("dave shares no room: %+v", r)
			}
			if r := search(alice, ":localhost", 1); len(r.Results) != 1 || !r.Limited {
				t.Fatalf("limited: %+v", r)
			}
			raw(t, "POST", v3+"/user_directory/search", alice.AccessToken, map[string]any{"limit": 3}).wantErr(t, "no search_term", 400, "M_MISSING_PARAM")
			raw(t, "POST", v3+"/user_directory/search", alice.AccessToken, `{"search_term":`).wantErr(t, "not JSON", 400, "M_NOT_JSON")
			raw(t, "POST", v3+"/user_directory/search", "", map[string]any{"search_term": "bob"}).wantErr(t, "no token", 401, "M_MISSING_TOKEN")
		})

		t.Run("search", func(t *testing.T) {
			room := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Foxhole", Invite: []id.UserID{bob.UserID}})
			join(bob, room)
			quick1 := text(alice, room, "the quick brown fox")
			lazy := text(bob, room, "lazy dog sleeps")
			quick2 := text(bob, room, "quick quick quick")
			enc := send(alice, room, event.EventEncrypted, map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "quick", "body": "quick"})
			quick3 := text(alice, room, "quick thinking")
			// A room bob is not in, and one where history before bob's join is hidden.
			other := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			text(alice, other, "quick secret")
			joined := create(alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{Type: event.StateHistoryVisibility,
				StateKey: ptr(""), Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
			text(alice, joined, "quick before bob")
			join(bob, joined)
			quickAfter := text(alice, joined, "quick after bob")

			res, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "QUICK", OrderBy: "recent", Filter: &mautrix.FilterPart{Limit: 2}})
			if err != nil {
				t.Fatal(err)
			}
			got := func(rs []*mautrix.SearchResult) []id.EventID {
				var out []id.EventID
				for _, r := range rs {
					out = append(out, r.Event.ID)
				}
				return out
			}
			if fmt.Sprint(got(res.Results)) != fmt.Sprint([]id.EventID{quickAfter, quick3}) || res.NextBatch == "" || res.Count != 4 {
				t.Fatalf("first page: %v count %d next %q", got(res.Results), res.Count, res.NextBatch)
			}
			res2, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "QUICK", OrderBy: "recent", Filter: &mautrix.FilterPart{Limit: 2}, NextBatch: res.NextBatch})
			if err != nil {
				t.Fatal(err)
			}
			// A full page carries next_batch (clients page until it is
			// gone): the page after it is empty and has none.
			if fmt.Sprint(got(res2.Results)) != fmt.Sprint([]id.EventID{quick2, quick1}) || res2.NextBatch == "" || res2.Count != 4 {
				t.Fatalf("second page: %v count %d next %q", got(res2.Results), res2.Count, res2.NextBatch)
			}
			res3, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "QUICK", OrderBy: "recent", Filter: &mautrix.FilterPart{Limit: 2}, NextBatch: res2.NextBatch})
			if err != nil {
				t.Fatal(err)
			}
			if len(res3.Results) != 0 || res3.NextBatch != "" {
				t.Fatalf("third page: %v next %q", got(res3.Results), res3.NextBatch)
			}
			// Rank order puts the thrice-quick message first; context and groups come along.
			res, err = bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "quick", Filter: &mautrix.FilterPart{Rooms: []id.RoomID{room}},
				EventContext: mautrix.SearchEventContext{BeforeLimit: 1, AfterLimit: 1}, Groupings: mautrix.SearchGroupings{GroupBy: []mautrix.SearchGroup{{Key: "room_id"}}},
				IncludeState: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Results) != 3 || res.Results[0].Event.ID != quick2 || res.Results[0].Rank < res.Results[1].Rank {
				t.Fatalf("rank: %v", got(res.Results))
			}
			if ctxr := res.Results[0].Context; ctxr == nil || len(ctxr.EventsBefore) != 1 || ctxr.EventsBefore[0].ID != lazy || len(ctxr.EventsAfter) != 1 || ctxr.EventsAfter[0].ID != enc {
				t.Fatalf("context: %+v", res.Results[0].Context)
			}
			if g := res.Groups["room_id"][room.String()]; len(g.Results) != 3 || g.Order != 1 {
				t.Fatalf("groups: %+v", res.Groups)
			}
			if len(res.State[room]) == 0 || len(res.Highlights) != 1 || res.Highlights[0] != "quick" {
				t.Fatalf("state/highlights: %d %v", len(res.State[room]), res.Highlights)
			}
			// Profiles in context come from the room state.
			rp := raw(t, "POST", v3+"/search", bob.AccessToken, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
				"search_term": "lazy", "event_context": map[string]any{"include_profile": true, "before_limit": 0, "after_limit": 0}}}})
			if !strings.Contains(string(rp.Raw), `"profile_info":{"`+bob.UserID.String()+`":{"displayname":"Bob Builder"}}`) {
				t.Fatalf("profile_info: %s", rp.Raw)
			}
			// Names are searchable; encrypted events never are.
			if res, _ := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "foxhole", Keys: []string{"content.name"}}); len(res.Results) != 1 || res.Results[0].Event.Type != event.StateRoomName {
				t.Fatalf("room name: %+v", res)
			}
			var n int
			if err := srv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_search WHERE event_id = $1`, enc.String()).Scan(&n); err != nil || n != 0 {
				t.Fatalf("encrypted event indexed: %d %v", n, err)
			}
			// A redaction drops the text from the index.
			if _, err := bob.RedactEvent(ctx, room, lazy); err != nil {
				t.Fatal(err)
			}
			if err := srv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_search WHERE event_id = $1`, lazy.String()).Scan(&n); err != nil || n != 0 {
				t.Fatalf("redacted event still indexed: %d %v", n, err)
			}
			if res, _ := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "lazy"}); len(res.Results) != 0 {
				t.Fatalf("redacted event found: %v", got(res.Results))
			}
			sr := func(b map[string]any) map[string]any {
				return map[string]any{"search_categories": map[string]any{"room_events": b}}
			}
			raw(t, "POST", v3+"/search", bob.AccessToken, sr(map[string]any{"search_term": "quick", "order_by": "loudest"})).wantErr(t, "bad order_by", 400, "M_INVALID_PARAM")
			raw(t, "POST", v3+"/search", bob.AccessToken, sr(map[string]any{"keys": []string{"content.body"}})).wantErr(t, "no search_term", 400, "M_MISSING_PARAM")
			raw(t, "POST", v3+"/search", bob.AccessToken, sr(map[string]any{"search_term": "x", "keys": []string{"content.ciphertext"}})).wantErr(t, "bad key", 400, "M_INVALID_PARAM")
			raw(t, "POST", v3+"/search?next_batch=zzz", bob.AccessToken, sr(map[string]any{"search_term": "quick"})).wantErr(t, "bad next_batch", 400, "M_INVALID_PARAM")
		})

		t.Run("relations and threads", func(t *testing.T) {
			room := create(alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			join(bob, room)
			root := text(alice, room, "thread root")
			reply1 := send(bob, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "first reply",
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
			reply2 := send(bob, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "second reply",
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
			bobEdit := send(bob, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "* hijack", "m.new_content": map[string]any{"msgtype": "m.text", "body": "hijack"},
				"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}})
			edit := send(alice, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "* thread root!", "m.new_content": map[string]any{"msgtype": "m.text", "body": "thread root!"},
				"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}})
			reaction, err := bob.SendReaction(ctx, room, root, "👍")
			if err != nil {
				t.Fatal(err)
			}
			ref := send(alice, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "see above", "m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": root}})
			nested, err := alice.SendReaction(ctx, room, reply1, "🎉")
			if err != nil {
				t.Fatal(err)
			}

			rels := func(cli *mautrix.Client, req *mautrix.ReqGetRelations) *mautrix.RespGetRelations {
				t.Helper()
				resp, err := cli.GetRelations(ctx, room, root, req)
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			evIDs := func(evs []*event.Event) string {
				var out []string
				for _, e := range evs {
					out = append(out, e.ID.String())
				}
				return strings.Join(out, " ")
			}
			if got := evIDs(rels(bob, &mautrix.ReqGetRelations{}).Chunk); got != strings.Join([]string{ref.String(), reaction.EventID.String(), edit.String(), bobEdit.String(), reply2.String(), reply1.String()}, " ") {
				t.Fatalf("all children: %s", got)
			}
			if got := evIDs(rels(bob, &mautrix.ReqGetRelations{RelationType: event.RelThread, EventType: event.EventMessage, Dir: mautrix.DirectionForward}).Chunk); got != reply1.String()+" "+reply2.String() {
				t.Fatalf("thread replies forwards: %s", got)
			}
			if got := evIDs(rels(bob, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation}).Chunk); got != reaction.EventID.String() {
				t.Fatalf("reactions: %s", got)
			}
			p1 := rels(bob, &mautrix.ReqGetRelations{Limit: 2})
			p2 := rels(bob, &mautrix.ReqGetRelations{Limit: 2, From: p1.NextBatch})
			if evIDs(p1.Chunk) != ref.String()+" "+reaction.EventID.String() || evIDs(p2.Chunk) != edit.String()+" "+bobEdit.String() || p2.NextBatch == "" {
				t.Fatalf("pages: %s | %s (%q)", evIDs(p1.Chunk), evIDs(p2.Chunk), p2.NextBatch)
			}
			rec := rels(bob, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation, Recurse: true})
			if evIDs(rec.Chunk) != nested.EventID.String()+" "+reaction.EventID.String() || rec.RecursionDepth != 3 {
				t.Fatalf("recurse: %s depth %d", evIDs(rec.Chunk), rec.RecursionDepth)
			}

			// Bundled aggregations on /event, /messages, /context and /sync.
			checkBundle := func(what string, ev *event.Event, viewer id.UserID) {
				t.Helper()
				rel := ev.Unsigned.Relations
				if rel == nil || rel.Thread == nil || rel.Thread.Count != 2 || rel.Thread.LatestEvent == nil || rel.Thread.LatestEvent.ID != reply2 ||
					!rel.Thread.CurrentUserParticipated {
					t.Fatalf("%s: thread bundle %+v", what, rel)
				}
				if rel.LatestEdit == nil || rel.LatestEdit.ID != edit { // bob's edit of alice's event does not count
					t.Fatalf("%s: edit bundle %+v", what, rel.LatestEdit)
				}
				if rel.References == nil || len(rel.References.Chunk) != 1 || rel.References.Chunk[0].EventID != ref {
					t.Fatalf("%s: reference bundle %+v", what, rel.References)
				}
			}
			ev, err := bob.GetEvent(ctx, room, root)
			if err != nil {
				t.Fatal(err)
			}
			checkBundle("/event", ev, bob.UserID)
			msgs, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, e := range msgs.Chunk {
				if e.ID == root {
					checkBundle("/messages", e, alice.UserID)
					found = true
				}
			}
			if !found {
				t.Fatal("root not in /messages")
			}
			cx, err := alice.Context(ctx, room, root, nil, 2)
			if err != nil {
				t.Fatal(err)
			}
			checkBundle("/context", cx.Event, alice.UserID)
			sync, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{})
			if err != nil {
				t.Fatal(err)
			}
			found = false
			for _, e := range sync.Rooms.Join[room].Timeline.Events {
				if e.ID == root {
					checkBundle("/sync", e, bob.UserID)
					found = true
				}
			}
			if !found {
				t.Fatalf("root not in bob's sync timeline")
			}
			// Carol joins but has not taken part in the thread.
			join(carol, room)
			ev, err = carol.GetEvent(ctx, room, root)
			if err != nil || ev.Unsigned.Relations == nil || ev.Unsigned.Relations.Thread == nil || ev.Unsigned.Relations.Thread.CurrentUserParticipated {
				t.Fatalf("carol's bundle: %+v %v", ev, err)
			}

			threads := func(cli *mautrix.Client, q string) rawResp {
				t.Helper()
				r := raw(t, "GET", v1+"/rooms/"+url.PathEscape(room.String())+"/threads"+q, cli.AccessToken, nil)
				if r.Status != 200 {
					t.Fatalf("threads%s: %d %s", q, r.Status, r.Raw)
				}
				return r
			}
			roots := func(r rawResp) string {
				var out []string
				for _, c := range r.Body["chunk"].([]any) {
					out = append(out, c.(map[string]any)["event_id"].(string))
				}
				return strings.Join(out, " ")
			}
			root2 := text(carol, room, "another root")
			reply3 := send(alice, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "x", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root2}})
			all := threads(bob, "")
			if roots(all) != root2.String()+" "+root.String() {
				t.Fatalf("threads: %s", all.Raw)
			}
			if !strings.Contains(string(all.Raw), `"latest_event"`) {
				t.Fatalf("threads lack bundles: %s", all.Raw)
			}
			if got := roots(threads(bob, "?include=participated")); got != root.String() {
				t.Fatalf("bob participated: %s", got)
			}
			if got := roots(threads(carol, "?include=participated")); got != root2.String() {
				t.Fatalf("carol participated: %s", got)
			}
			pg := threads(bob, "?limit=1")
			if roots(pg) != root2.String() || pg.Body["next_batch"] == nil {
				t.Fatalf("threads page 1: %s", pg.Raw)
			}
			if got := roots(threads(bob, "?limit=1&from="+pg.Body["next_batch"].(string))); got != root.String() {
				t.Fatalf("threads page 2: %s", got)
			}
			// Redacting a reply shrinks the thread, in the store and in the bundle.
			if _, err := bob.RedactEvent(ctx, room, reply2); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := srv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.thread'`, root.String()).Scan(&n); err != nil || n != 1 {
				t.Fatalf("stored thread relations: %d %v", n, err)
			}
			if ev, err := bob.GetEvent(ctx, room, root); err != nil || ev.Unsigned.Relations.Thread.Count != 1 || ev.Unsigned.Relations.Thread.LatestEvent.ID != reply1 {
				t.Fatalf("after redaction: %+v %v", ev, err)
			}
			_ = reply3

			outsider := dave
			relURL := v1 + "/rooms/" + url.PathEscape(room.String()) + "/relations/" + url.PathEscape(root.String())
			raw(t, "GET", relURL, outsider.AccessToken, nil).wantErr(t, "relations by a non-member", 404, "M_NOT_FOUND")
			raw(t, "GET", v1+"/rooms/"+url.PathEscape(room.String())+"/relations/$nope", bob.AccessToken, nil).wantErr(t, "unknown parent", 404, "M_NOT_FOUND")
			raw(t, "GET", relURL+"?dir=sideways", bob.AccessToken, nil).wantErr(t, "bad dir", 400, "M_INVALID_PARAM")
			raw(t, "GET", relURL+"?from=nonsense", bob.AccessToken, nil).wantErr(t, "bad from", 400, "M_INVALID_PARAM")
			raw(t, "GET", v1+"/rooms/"+url.PathEscape(room.String())+"/threads", outsider.AccessToken, nil).wantErr(t, "threads by a non-member", 403, "M_FORBIDDEN")
			raw(t, "GET", v1+"/rooms/"+url.PathEscape(room.String())+"/threads?include=mine", bob.AccessToken, nil).wantErr(t, "bad include", 400, "M_INVALID_PARAM")
		})

		t.Run("upgrade", func(t *testing.T) {
			old := create(alice, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: "Old hall", Topic: "history", RoomAliasName: "hall",
				RoomVersion: "10", InitialState: []*event.Event{{Type: event.StateEncryption, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
			join(bob, old)
			join(carol, old)
			if _, err := alice.BanUser(ctx, old, &mautrix.ReqBanUser{UserID: carol.UserID, Reason: "troll"}); err != nil {
				t.Fatal(err)
			}
			upURL := roomURL(old, "/upgrade")
			raw(t, "POST", upURL, bob.AccessToken, map[string]string{"new_version": "11"}).wantErr(t, "upgrade without power", 403, "M_FORBIDDEN")
			raw(t, "POST", upURL, alice.AccessToken, map[string]string{"new_version": "999"}).wantErr(t, "unknown version", 400, "M_UNSUPPORTED_ROOM_VERSION")
			raw(t, "POST", upURL, alice.AccessToken, map[string]string{}).wantErr(t, "no version", 400, "M_MISSING_PARAM")
			raw(t, "POST", upURL, dave.AccessToken, map[string]string{"new_version": "11"}).wantErr(t, "upgrade by a stranger", 403, "M_FORBIDDEN")
			if st, _ := alice.State(ctx, old); st[event.StateTombstone] != nil {
				t.Fatal("a refused upgrade left a tombstone")
			}

			r := raw(t, "POST", upURL, alice.AccessToken, map[string]string{"new_version": "11"})
			if r.Status != 200 {
				t.Fatalf("upgrade: %d %s", r.Status, r.Raw)
			}
			newRoom := id.RoomID(r.Body["replacement_room"].(string))
			st, err := alice.State(ctx, newRoom)
			if err != nil {
				t.Fatal(err)
			}
			one := func(typ event.Type, key string) map[string]any {
				t.Helper()
				e := st[typ][key]
				if e == nil {
					t.Fatalf("new room lacks %s/%q", typ, key)
				}
				return e.Content.Raw
			}
			if c := one(event.StateCreate, ""); c["room_version"] != "11" || c["predecessor"].(map[string]any)["room_id"] != old.String() {
				t.Fatalf("create: %v", c)
			}
			if one(event.StateRoomName, "")["name"] != "Old hall" || one(event.StateTopic, "")["topic"] != "history" ||
				one(event.StateJoinRules, "")["join_rule"] != "public" || one(event.StateEncryption, "")["algorithm"] != "m.megolm.v1.aes-sha2" ||
				one(event.StateHistoryVisibility, "")["history_visibility"] != "shared" || one(event.StateCanonicalAlias, "")["alias"] != "#hall:localhost" {
				t.Fatalf("copied state: %v", st)
			}
			if m := one(event.StateMember, carol.UserID.String()); m["membership"] != "ban" {
				t.Fatalf("carol's ban: %v", m)
			}
			if pl := one(event.StatePowerLevels, ""); pl["users"].(map[string]any)[alice.UserID.String()] != float64(100) || pl["state_default"] != float64(50) {
				t.Fatalf("power levels: %v", pl)
			}
			if res, err := bob.ResolveAlias(ctx, "#hall:localhost"); err != nil || res.RoomID != newRoom {
				t.Fatalf("alias: %+v %v", res, err)
			}
			oldState, err := alice.State(ctx, old)
			if err != nil {
				t.Fatal(err)
			}
			if ts := oldState[event.StateTombstone][""]; ts == nil || ts.Content.Raw["replacement_room"] != newRoom.String() {
				t.Fatalf("tombstone: %+v", ts)
			}
			if pl := oldState[event.StatePowerLevels][""].Content.Raw; pl["events_default"] != float64(50) || pl["invite"] != float64(50) {
				t.Fatalf("old power levels: %v", pl)
			}
			if len(oldState[event.StateCanonicalAlias][""].Content.Raw) != 0 {
				t.Fatalf("old canonical alias kept: %v", oldState[event.StateCanonicalAlias][""].Content.Raw)
			}
			if _, err := bob.SendText(ctx, old, "still here?"); err == nil {
				t.Fatal("bob could still talk in the old room")
			} else {
				wantMatrixErr(t, "talking in the old room", err, 403, "M_FORBIDDEN")
			}
			dir, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
			if err != nil {
				t.Fatal(err)
			}
			listed := map[id.RoomID]bool{}
			for _, c := range dir.Chunk {
				listed[c.RoomID] = true
			}
			if !listed[newRoom] || listed[old] {
				t.Fatalf("directory after upgrade: %v", listed)
			}
			raw(t, "POST", upURL, alice.AccessToken, map[string]string{"new_version": "11"}).wantErr(t, "second upgrade", 400, "M_UNKNOWN")

			// On to v12, where the creator's power comes from the create event.
			r = raw(t, "POST", roomURL(newRoom, "/upgrade"), alice.AccessToken, map[string]any{"new_version": "12", "additional_creators": []string{bob.UserID.String()}})
			if r.Status != 200 {
				t.Fatalf("upgrade to 12: %d %s", r.Status, r.Raw)
			}
			v12 := id.RoomID(r.Body["replacement_room"].(string))
			var pl map[string]any
			if err := alice.StateEvent(ctx, v12, event.StatePowerLevels, "", &pl); err != nil {
				t.Fatal(err)
			}
			if _, in := pl["users"].(map[string]any)[alice.UserID.String()]; in {
				t.Fatalf("v12 creator in the users map: %v", pl)
			}
			if _, err := alice.SendStateEvent(ctx, v12, event.StateTopic, "", map[string]string{"topic": "creator power"}); err != nil {
				t.Fatalf("v12 creator cannot set the topic: %v", err)
			}
		})

		t.Run("knock and restricted", func(t *testing.T) {
			knockable := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Knock here", RoomAliasName: "knockable", InitialState: []*event.Event{
				{Type: event.StateJoinRules, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
			resp, err := bob.KnockRoom(ctx, "#knockable:localhost", &mautrix.ReqKnockRoom{Reason: "let me in"})
			if err != nil || resp.RoomID != knockable {
				t.Fatalf("knock: %+v %v", resp, err)
			}
			var m map[string]any
			if err := alice.StateEvent(ctx, knockable, event.StateMember, bob.UserID.String(), &m); err != nil || m["membership"] != "knock" || m["reason"] != "let me in" {
				t.Fatalf("knock member event: %v %v", m, err)
			}
			// The knock reaches bob's sync (long-polling until it is visible).
			since, seen := "", false
			for i := 0; i < 10 && !seen; i++ {
				q := "?timeout=1000"
				if since != "" {
					q += "&since=" + url.QueryEscape(since)
				}
				sync := raw(t, "GET", v3+"/sync"+q, bob.AccessToken, nil)
				if sync.Status != 200 {
					t.Fatalf("sync: %d %s", sync.Status, sync.Raw)
				}
				knocks, _ := sync.Body["rooms"].(map[string]any)["knock"].(map[string]any)
				seen = knocks[knockable.String()] != nil
				since, _ = sync.Body["next_batch"].(string)
			}
			if !seen {
				t.Fatal("bob's sync never showed the knock")
			}
			if _, err := alice.InviteUser(ctx, knockable, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatal(err)
			}
			join(bob, knockable)
			inviteOnly := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			_, err = carol.KnockRoom(ctx, inviteOnly.String(), &mautrix.ReqKnockRoom{})
			wantMatrixErr(t, "knock on an invite-only room", err, 403, "M_FORBIDDEN")
			_, err = carol.KnockRoom(ctx, "#nowhere:localhost", &mautrix.ReqKnockRoom{})
			wantMatrixErr(t, "knock on an unknown alias", err, 404, "M_NOT_FOUND")

			// Restricted: membership of the allowed room lets bob in, not carol.
			club := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
			join(bob, club)
			restricted := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10", InitialState: []*event.Event{
				{Type: event.StateJoinRules, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{"join_rule": "restricted",
					"allow": []any{map[string]any{"type": "m.room_membership", "room_id": club.String()}}}}}}})
			join(bob, restricted)
			if err := alice.StateEvent(ctx, restricted, event.StateMember, bob.UserID.String(), &m); err != nil || m["membership"] != "join" ||
				m["join_authorised_via_users_server"] != alice.UserID.String() {
				t.Fatalf("restricted join: %v %v", m, err)
			}
			_, err = carol.JoinRoomByID(ctx, restricted)
			wantMatrixErr(t, "restricted join from outside", err, 403, "M_FORBIDDEN")
		})

		t.Run("reports", func(t *testing.T) {
			room := create(alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			join(bob, room)
			bad := text(alice, room, "something awful")
			r := raw(t, "POST", roomURL(room, "/report/"+url.PathEscape(bad.String())), bob.AccessToken, map[string]any{"reason": "awful", "score": -80})
			if r.Status != 200 {
				t.Fatalf("report event: %d %s", r.Status, r.Raw)
			}
			if err := bob.ReportRoom(ctx, room, "whole room"); err != nil {
				t.Fatal(err)
			}
			if r := raw(t, "POST", v3+"/users/"+url.PathEscape(alice.UserID.String())+"/report", bob.AccessToken, map[string]any{"reason": "user"}); r.Status != 200 {
				t.Fatalf("report user: %d %s", r.Status, r.Raw)
			}
			reps, err := storage.ListReports(ctx, srv.DB, 0, 10, false)
			if err != nil || len(reps) != 3 {
				t.Fatalf("stored reports: %+v %v", reps, err)
			}
			user, rm, ev := reps[0], reps[1], reps[2]
			if ev.Kind != "event" || ev.EventID != bad.String() || ev.TargetUser != alice.UserID.String() || ev.Reporter != bob.UserID.String() || ev.Reason != "awful" || *ev.Score != -80 {
				t.Fatalf("event report: %+v", ev)
			}
			if rm.Kind != "room" || rm.RoomID != room.String() || rm.Reason != "whole room" || user.Kind != "user" || user.TargetUser != alice.UserID.String() {
				t.Fatalf("room/user reports: %+v %+v", rm, user)
			}
			raw(t, "POST", roomURL(room, "/report/"+url.PathEscape(bad.String())), dave.AccessToken, map[string]any{"reason": "x"}).wantErr(t, "report by a non-member", 404, "M_NOT_FOUND")
			raw(t, "POST", roomURL(room, "/report/$nope"), bob.AccessToken, map[string]any{"reason": "x"}).wantErr(t, "report unknown event", 404, "M_NOT_FOUND")
			raw(t, "POST", roomURL(room, "/report/"+url.PathEscape(bad.String())), bob.AccessToken, map[string]any{"score": 50}).wantErr(t, "bad score", 400, "M_INVALID_PARAM")
			raw(t, "POST", roomURL("!nope:localhost", "/report"), bob.AccessToken, map[string]any{}).wantErr(t, "report unknown room", 404, "M_NOT_FOUND")
			raw(t, "POST", v3+"/users/"+url.PathEscape("@ghost:localhost")+"/report", bob.AccessToken, map[string]any{}).wantErr(t, "report unknown user", 404, "M_NOT_FOUND")
			if reps, _ := storage.ListReports(ctx, srv.DB, 0, 10, false); len(reps) != 3 {
				t.Fatalf("refused reports were stored: %d", len(reps))
			}
		})

		t.Run("spaces and summaries", func(t *testing.T) {
			space := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Team space", CreationContent: map[string]any{"type": "m.space"}})
			pub := create(alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Open child", RoomAliasName: "openchild", Topic: "come in"})
			priv := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Closed child"})
			sub := create(alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Sub space", CreationContent: map[string]any{"type": "m.space"}})
			leaf := create(alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Leaf"})
			child := func(parent, c id.RoomID, order string, suggested bool) {
				t.Helper()
				content := map[string]any{"via": []string{"localhost"}, "order": order, "suggested": suggested}
				if _, err := alice.SendStateEvent(ctx, parent, event.StateSpaceChild, c.String(), content); err != nil {
					t.Fatal(err)
				}
			}
			child(space, pub, "b", true)
			child(space, priv, "a", false)
			child(space, sub, "c", false)
			child(space, "!remote:elsewhere.example", "d", true)
			child(sub, leaf, "", false)
			hier := func(cli *mautrix.Client, req *mautrix.ReqHierarchy) []string {
				t.Helper()
				resp, err := cli.Hierarchy(ctx, space, req)
				if err != nil {
					t.Fatalf("hierarchy for %s: %v", cli.UserID, err)
				}
				var out []string
				for _, r := range resp.Rooms {
					out = append(out, r.Name)
				}
				return out
			}
			if got := fmt.Sprint(hier(alice, nil)); got != "[Team space Closed child Open child Sub space Leaf]" {
				t.Fatalf("alice's hierarchy: %s", got)
			}
			resp, err := alice.Hierarchy(ctx, space, &mautrix.ReqHierarchy{Limit: 2})
			if err != nil || len(resp.Rooms) != 2 || resp.NextBatch == "" || len(resp.Rooms[0].ChildrenState) != 4 || resp.Rooms[0].RoomType != "m.space" {
				t.Fatalf("first page: %+v %v", resp, err)
			}
			if got := fmt.Sprint(hier(alice, &mautrix.ReqHierarchy{Limit: 2, From: resp.NextBatch})); got != "[Open child Sub space]" {
				t.Fatalf("second page: %s", got)
			}
			if got := fmt.Sprint(hier(alice, &mautrix.ReqHierarchy{SuggestedOnly: true})); got != "[Team space Open child]" {
				t.Fatalf("suggested only: %s", got)
			}
			if got := fmt.Sprint(hier(alice, &mautrix.ReqHierarchy{MaxDepth: ptr(0)})); got != "[Team space]" {
				t.Fatalf("depth 0: %s", got)
			}
			_, err = bob.Hierarchy(ctx, space, nil)
			wantMatrixErr(t, "hierarchy of a private space", err, 403, "M_FORBIDDEN")
			raw(t, "GET", v1+"/rooms/"+url.PathEscape(space.String())+"/hierarchy?from="+url.QueryEscape(resp.NextBatch)+"&max_depth=1", alice.AccessToken, nil).
				wantErr(t, "max_depth changed while paginating", 400, "M_INVALID_PARAM")
			// Invited, bob sees the space and its public rooms but not the closed one.
			if _, err := alice.InviteUser(ctx, space, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(hier(bob, nil)); got != "[Team space Open child Sub space Leaf]" {
				t.Fatalf("bob's hierarchy: %s", got)
			}

			// Summaries: public rooms for anyone, private ones for members only.
			anon := client(t, srv.URL, "", "")
			sum, err := anon.GetRoomSummary(ctx, "#openchild:localhost")
			if err != nil || sum.RoomID != pub || sum.Name != "Open child" || sum.Topic != "come in" || sum.JoinRule != "public" || sum.NumJoinedMembers != 1 || sum.Membership != "" {
				t.Fatalf("anonymous summary: %+v %v", sum, err)
			}
			summary := func(path, token string) rawResp { return raw(t, "GET", srv.URL+path, token, nil) }
			r := summary("/_matrix/client/v1/room_summary/"+url.PathEscape(pub.String()), bob.AccessToken)
			if r.Status != 200 || r.Body["membership"] != "leave" || r.Body["room_version"] != "10" || r.Body["guest_can_join"] != false || r.Body["world_readable"] != false {
				t.Fatalf("bob's summary: %s", r.Raw)
			}
			for _, p := range []string{"/_matrix/client/unstable/im.nheko.summary/rooms/" + url.PathEscape(priv.String()) + "/summary",
				"/_matrix/client/unstable/im.nheko.summary/summary/" + url.PathEscape(priv.String())} {
				r := summary(p, alice.AccessToken)
				if r.Status != 200 || r.Body["membership"] != "join" || r.Body["join_rule"] != "invite" || r.Body["im.nheko.summary.room_version"] != "10" || r.Body["name"] != "Closed child" {
					t.Fatalf("alice's unstable summary %s: %s", p, r.Raw)
				}
				summary(p, bob.AccessToken).wantErr(t, "summary of a private room", 404, "M_NOT_FOUND")
				summary(p, "").wantErr(t, "anonymous summary of a private room", 404, "M_NOT_FOUND")
			}
			summary("/_matrix/client/v1/room_summary/"+url.PathEscape("#nothing:localhost"), bob.AccessToken).wantErr(t, "unknown alias", 404, "M_NOT_FOUND")
			summary("/_matrix/client/v1/room_summary/"+url.PathEscape(pub.String()), "bogus-token").wantErr(t, "bad token", 401, "M_UNKNOWN_TOKEN")
		})

		t.Run("voip, third parties and probes", func(t *testing.T) {
			turn, err := alice.TurnServer(ctx)
			if err != nil || turn.Username != "" || turn.URIs != nil {
				t.Fatalf("turnServer without TURN: %+v %v", turn, err)
			}
			r := raw(t, "GET", v3+"/voip/turnServer", alice.AccessToken, nil)
			if r.Status != 200 || string(r.Raw) != "{}" {
				t.Fatalf("turnServer body: %d %s", r.Status, r.Raw)
			}
			raw(t, "GET", v3+"/voip/turnServer", "", nil).wantErr(t, "turnServer without token", 401, "M_MISSING_TOKEN")
			if r := raw(t, "GET", v3+"/thirdparty/protocols", alice.AccessToken, nil); r.Status != 200 || string(r.Raw) != "{}" {
				t.Fatalf("protocols: %d %s", r.Status, r.Raw)
			}
			raw(t, "POST", v3+"/account/3pid/add", alice.AccessToken, map[string]any{"sid": "x", "client_secret": "y"}).wantErr(t, "3pid add", 403, "M_FORBIDDEN")
			raw(t, "POST", v3+"/account/3pid/email/requestToken", "", map[string]any{"email": "a@b.c", "client_secret": "y", "send_attempt": 1}).
				wantErr(t, "3pid requestToken", 403, "M_FORBIDDEN")
			raw(t, "POST", v3+"/account/3pid/bind", alice.AccessToken, map[string]any{}).wantErr(t, "3pid bind", 403, "M_FORBIDDEN")
			start := time.Now()
			raw(t, "GET", srv.URL+"/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", alice.AccessToken, nil).wantErr(t, "rtc transports probe", 404, "M_UNRECOGNIZED")
			if time.Since(start) > 2*time.Second {
				t.Fatal("the rtc transports probe was slow")
			}
		})
	})
}

// TestRoomsExtraConfig covers what config switches on: TURN credentials
// and searching every local user.
func TestRoomsExtraConfig(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.TURN.URIs = []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"}
			c.TURN.SharedSecret = "coturn-secret"
			c.TURN.TTL.Duration = time.Hour
			c.UserDirectory.SearchAllUsers = true
		}})
		ctx := ctxT(t)
		alice := registerClient(t, srv.URL, "alice", "alice-pass")
		registerClient(t, srv.URL, "loner", "loner-pass")
		turn, err := alice.TurnServer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		exp, user, ok := strings.Cut(turn.Username, ":")
		expiry, perr := strconv.ParseInt(exp, 10, 64)
		if !ok || perr != nil || user != alice.UserID.String() || math.Abs(float64(expiry-time.Now().Add(time.Hour).Unix())) > 60 {
			t.Fatalf("username %q", turn.Username)
		}
		mac := hmac.New(sha1.New, []byte("coturn-secret"))
		mac.Write([]byte(turn.Username))
		if turn.Password != base64.StdEncoding.EncodeToString(mac.Sum(nil)) || turn.TTL != 3600 || len(turn.URIs) != 2 || turn.URIs[0] != "turn:turn.example.org:3478?transport=udp" {
			t.Fatalf("credentials: %+v", turn)
		}
		res, err := alice.SearchUserDirectory(ctx, "loner", 10)
		if err != nil || len(res.Results) != 1 || res.Results[0].UserID != "@loner:localhost" {
			t.Fatalf("search_all_users: %+v %v", res, err)
		}
	})
}
