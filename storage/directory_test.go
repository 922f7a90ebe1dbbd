package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// extraRoom builds rooms and their current state straight in the store,
// the way the room server leaves them, for the directory/search/relations
// table tests.
type extraRoom struct {
	t    *testing.T
	db   *storage.DB
	id   string
	next *int64
}

func newExtraRoom(t *testing.T, db *storage.DB, id string, pos *int64) *extraRoom {
	t.Helper()
	if err := storage.InsertRoom(context.Background(), db, &storage.Room{RoomID: id, Version: "10", Creator: "@alice:test", CreatedTS: *pos}); err != nil {
		t.Fatal(err)
	}
	return &extraRoom{t: t, db: db, id: id, next: pos}
}

// event stores an event (a state event when sk is non-nil, which also
// becomes current state) and returns its ID.
func (r *extraRoom) event(typ string, sk *string, sender, content string) string {
	r.t.Helper()
	ctx := context.Background()
	*r.next++
	pos := *r.next
	id := fmt.Sprintf("$e%d", pos)
	membership := ""
	if typ == "m.room.member" {
		var c struct{ Membership string }
		_ = json.Unmarshal([]byte(content), &c)
		membership = c.Membership
	}
	js := fmt.Sprintf(`{"type":%q,"sender":%q,"content":%s}`, typ, sender, content)
	ok, err := storage.InsertEvent(ctx, r.db, &storage.Event{StreamPos: pos, EventID: id, RoomID: r.id, RoomVersion: "10", Type: typ, StateKey: sk,
		Sender: sender, Depth: pos, OriginTS: pos, ReceivedTS: pos, JSON: []byte(js), Membership: membership})
	if err != nil || !ok {
		r.t.Fatalf("insert %s: %v %v", typ, ok, err)
	}
	if sk != nil {
		if err := storage.SetCurrentState(ctx, r.db, storage.CurrentStateRow{RoomID: r.id, Type: typ, StateKey: *sk, EventID: id, Membership: membership, StreamPos: pos}); err != nil {
			r.t.Fatal(err)
		}
	}
	return id
}

func (r *extraRoom) state(typ, sk, sender, content string) string {
	return r.event(typ, &sk, sender, content)
}

func (r *extraRoom) join(user string) { r.state("m.room.member", user, user, `{"membership":"join"}`) }

func (r *extraRoom) refresh() {
	r.t.Helper()
	if err := storage.RefreshRoomStats(context.Background(), r.db, r.id); err != nil {
		r.t.Fatal(err)
	}
}

func TestRoomStatsAndPublicRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var pos int64
		lobby := newExtraRoom(t, db, "!lobby:test", &pos)
		lobby.state("m.room.create", "", "@alice:test", `{"room_version":"10"}`)
		lobby.join("@alice:test")
		lobby.join("@bob:test")
		lobby.state("m.room.name", "", "@alice:test", `{"name":"The Lobby"}`)
		lobby.state("m.room.topic", "", "@alice:test", `{"topic":"100% off_topic"}`)
		lobby.state("m.room.join_rules", "", "@alice:test", `{"join_rule":"public"}`)
		lobby.state("m.room.history_visibility", "", "@alice:test", `{"history_visibility":"world_readable"}`)
		lobby.state("m.room.guest_access", "", "@alice:test", `{"guest_access":"can_join"}`)
		lobby.state("m.room.avatar", "", "@alice:test", `{"url":"mxc://test/a"}`)
		lobby.state("m.room.canonical_alias", "", "@alice:test", `{"alias":"#lobby:test"}`)
		lobby.state("m.room.encryption", "", "@alice:test", `{"algorithm":"m.megolm.v1.aes-sha2"}`)

		space := newExtraRoom(t, db, "!space:test", &pos)
		space.state("m.room.create", "", "@alice:test", `{"room_version":"10","type":"m.space"}`)
		space.join("@alice:test")
		space.state("m.room.name", "", "@alice:test", `{"name":"Engineering"}`)

		private := newExtraRoom(t, db, "!private:test", &pos)
		private.state("m.room.create", "", "@alice:test", `{"room_version":"10"}`)
		private.state("m.room.name", "", "@alice:test", `{"name":"Secret lobby"}`)

		missing, err := storage.RoomsMissingStats(ctx, db)
		if err != nil || len(missing) != 3 {
			t.Fatalf("missing before refresh: %v %v", missing, err)
		}
		for _, r := range []*extraRoom{lobby, space, private} {
			r.refresh()
		}
		if missing, err := storage.RoomsMissingStats(ctx, db); err != nil || len(missing) != 0 {
			t.Fatalf("missing after refresh: %v %v", missing, err)
		}
		st, err := storage.GetRoomStats(ctx, db, "!lobby:test")
		if err != nil {
			t.Fatal(err)
		}
		want := storage.RoomStats{RoomID: "!lobby:test", Name: "The Lobby", Topic: "100% off_topic", CanonicalAlias: "#lobby:test", AvatarURL: "mxc://test/a",
			JoinRule: "public", HistoryVisibility: "world_readable", GuestAccess: "can_join", Encryption: "m.megolm.v1.aes-sha2", JoinedMembers: 2, RoomVersion: "10"}
		if *st != want {
			t.Fatalf("stats\n got %+v\nwant %+v", *st, want)
		}
		if _, err := storage.GetRoomStats(ctx, db, "!nope:test"); err != storage.ErrNotFound {
			t.Fatalf("unknown room: %v", err)
		}

		// A leave only changes the count; a rename changes the name.
		lobby.state("m.room.member", "@bob:test", "@bob:test", `{"membership":"leave"}`)
		if err := storage.RefreshJoinedCount(ctx, db, "!lobby:test"); err != nil {
			t.Fatal(err)
		}
		lobby.state("m.room.name", "", "@alice:test", `{"name":"Main Lobby"}`)
		lobby.refresh()
		if st, _ := storage.GetRoomStats(ctx, db, "!lobby:test"); st.JoinedMembers != 1 || st.Name != "Main Lobby" {
			t.Fatalf("after leave+rename: %+v", st)
		}
		// RefreshJoinedCount on a room without a row creates it.
		other := newExtraRoom(t, db, "!other:test", &pos)
		other.join("@carol:test")
		if err := storage.RefreshJoinedCount(ctx, db, "!other:test"); err != nil {
			t.Fatal(err)
		}
		if st, err := storage.GetRoomStats(ctx, db, "!other:test"); err != nil || st.JoinedMembers != 1 {
			t.Fatalf("count fallback: %+v %v", st, err)
		}

		// Only published rooms are listed, largest first.
		list := func(q storage.PublicRoomsQuery) ([]string, int) {
			t.Helper()
			if q.Limit == 0 {
				q.Limit = 10
			}
			rooms, total, err := storage.PublicRooms(ctx, db, q)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range rooms {
				ids = append(ids, r.RoomID)
				if !r.IsPublic {
					t.Fatalf("unpublished room listed: %+v", r)
				}
			}
			return ids, total
		}
		if ids, total := list(storage.PublicRoomsQuery{}); len(ids) != 0 || total != 0 {
			t.Fatalf("nothing published yet: %v %d", ids, total)
		}
		for _, id := range []string{"!lobby:test", "!space:test"} {
			if err := storage.SetRoomPublic(ctx, db, id, true); err != nil {
				t.Fatal(err)
			}
		}
		space.join("@bob:test")
		space.join("@carol:test")
		space.refresh()
		if ids, total := list(storage.PublicRoomsQuery{}); fmt.Sprint(ids) != "[!space:test !lobby:test]" || total != 2 {
			t.Fatalf("directory: %v %d", ids, total)
		}
		if ids, total := list(storage.PublicRoomsQuery{Limit: 1, Offset: 1}); fmt.Sprint(ids) != "[!lobby:test]" || total != 2 {
			t.Fatalf("second page: %v %d", ids, total)
		}
		// The term matches name, topic and alias case-insensitively; LIKE
		// wildcards in it are literal; the private "Secret lobby" never shows.
		for term, want := range map[string]string{"LOBBY": "[!lobby:test]", "engin": "[!space:test]", "100%": "[!lobby:test]",
			"off_t": "[!lobby:test]", "#lobby:": "[!lobby:test]", "%": "[!lobby:test]", "_": "[!lobby:test]", "secret": "[]", "zzz": "[]"} {
			if ids, _ := list(storage.PublicRoomsQuery{Term: term}); fmt.Sprint(ids) != want {
				t.Fatalf("term %q: %v, want %s", term, ids, want)
			}
		}
		if ids, _ := list(storage.PublicRoomsQuery{RoomTypes: []string{"m.space"}}); fmt.Sprint(ids) != "[!space:test]" {
			t.Fatalf("spaces: %v", ids)
		}
		if ids, _ := list(storage.PublicRoomsQuery{RoomTypes: []string{""}}); fmt.Sprint(ids) != "[!lobby:test]" {
			t.Fatalf("untyped rooms: %v", ids)
		}

		// Aliases move with an upgrade.
		if ok, err := storage.InsertAlias(ctx, db, "#lobby:test", "!lobby:test", "@alice:test"); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if err := storage.MoveAliases(ctx, db, "!lobby:test", "!other:test"); err != nil {
			t.Fatal(err)
		}
		if room, _, err := storage.GetAlias(ctx, db, "#lobby:test"); err != nil || room != "!other:test" {
			t.Fatalf("moved alias: %q %v", room, err)
		}
	})
}

func TestSearchUsers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, a := range []storage.Account{
			{UserID: "@alice:test", Localpart: "alice", DisplayName: "Alice"},
			{UserID: "@bob:test", Localpart: "bob", DisplayName: "Bobby Tables"},
			{UserID: "@carol:test", Localpart: "carol"},
			{UserID: "@dave:test", Localpart: "dave", DisplayName: "Dave Bob"},
			{UserID: "@eve:test", Localpart: "eve", DisplayName: "Eve"},
			{UserID: "@robert:test", Localpart: "robert", DisplayName: "Bob"},
		} {
			a.CreatedTS = 1
			if ok, err := storage.CreateAccount(ctx, db, &a); err != nil || !ok {
				t.Fatal(ok, err)
			}
		}
		if err := storage.Deactivate(ctx, db, "@dave:test", false); err != nil {
			t.Fatal(err)
		}
		var pos int64
		shared := newExtraRoom(t, db, "!shared:test", &pos)
		shared.join("@alice:test")
		shared.join("@bob:test")
		shared.join("@dave:test")
		shared.join("@remote:elsewhere")
		shared.refresh()
		public := newExtraRoom(t, db, "!public:test", &pos)
		public.state("m.room.join_rules", "", "@carol:test", `{"join_rule":"public"}`)
		public.join("@carol:test")
		public.join("@robert:test")
		public.refresh()
		secret := newExtraRoom(t, db, "!secret:test", &pos)
		secret.join("@eve:test")
		secret.refresh()

		search := func(searcher, term string, all bool, limit int) string {
			t.Helper()
			us, err := storage.SearchUsers(ctx, db, searcher, term, all, limit)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, u := range us {
				out = append(out, u.UserID+"="+u.DisplayName)
			}
			return fmt.Sprint(out)
		}
		// Bob by display-name prefix first, then "Bobby Tables" (a
		// prefix too, ordered by ID); Dave is deactivated.
		if got := search("@alice:test", "bob", false, 10); got != "[@bob:test=Bobby Tables @robert:test=Bob]" {
			t.Fatalf("bob: %s", got)
		}
		if got := search("@alice:test", "CAROL", false, 10); got != "[@carol:test=]" {
			t.Fatalf("carol (public room): %s", got)
		}
		if got := search("@alice:test", "remote", false, 10); got != "[@remote:elsewhere=]" {
			t.Fatalf("remote member: %s", got)
		}
		if got := search("@alice:test", "eve", false, 10); got != "[]" {
			t.Fatalf("eve shares no room: %s", got)
		}
		if got := search("@alice:test", "eve", true, 10); got != "[@eve:test=Eve]" {
			t.Fatalf("eve with search_all_users: %s", got)
		}
		if got := search("@alice:test", "dave", true, 10); got != "[]" {
			t.Fatalf("deactivated dave: %s", got)
		}
		if got := search("@alice:test", "%", true, 10); got != "[]" {
			t.Fatalf("wildcard matched: %s", got)
		}
		// The searcher is never among the results.
		if got := search("@alice:test", ":test", false, 2); got != "[@bob:test=Bobby Tables @robert:test=Bob]" {
			t.Fatalf("limit: %s", got)
		}
		if got := search("@alice:test", "alice", true, 10); got != "[]" {
			t.Fatalf("alice finds herself: %s", got)
		}
	})
}
