package test

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// TestRoomV12PrivilegedCreators (MSC4289, MSC4291, MSC4311): in room
// version 12 the creators (the create event's sender and
// additional_creators) have unlimited power and are never in power levels.
// Putting one there, at creation or later, is malformed (400 M_BAD_JSON,
// not 403); the tombstone needs 150 by default; additional_creators must
// be valid user IDs; a trusted private chat's invitees become creators; a
// second create event is 400; the invitee's stripped state carries the
// whole create event. Each is checked against the stored state.
func TestRoomV12PrivilegedCreators(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := registerClient(t, srv.URL, "alice", "alice-pass")
		bob := registerClient(t, srv.URL, "bob", "bob-pass")
		carol := registerClient(t, srv.URL, "carol", "carol-pass")
		v3 := srv.URL + "/_matrix/client/v3"
		state := func(room, typ string) map[string]any {
			t.Helper()
			r := raw(t, "GET", v3+"/rooms/"+url.PathEscape(room)+"/state/"+typ+"/", alice.AccessToken, nil)
			if r.Status != 200 {
				t.Fatalf("GET %s in %s: %d %s", typ, room, r.Status, r.Raw)
			}
			return r.Body
		}
		create := func(body map[string]any) rawResp {
			t.Helper()
			body["room_version"] = "12"
			return raw(t, "POST", v3+"/createRoom", alice.AccessToken, body)
		}

		// Defaults: no creator in users, tombstone at 150.
		r := create(map[string]any{"preset": "public_chat"})
		if r.Status != 200 {
			t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
		}
		room := r.Body["room_id"].(string)
		pl := state(room, "m.room.power_levels")
		if users, _ := pl["users"].(map[string]any); len(users) != 0 {
			t.Fatalf("v12 power levels users %v, want empty", users)
		}
		if ev, _ := pl["events"].(map[string]any); ev["m.room.tombstone"] != float64(150) {
			t.Fatalf("tombstone level %v, want 150", ev["m.room.tombstone"])
		}

		// A creator in power levels later: 400 M_BAD_JSON, state unchanged.
		put := raw(t, "PUT", v3+"/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", alice.AccessToken,
			map[string]any{"users": map[string]any{alice.UserID.String(): 100}})
		put.wantErr(t, "creator into power levels", 400, "M_BAD_JSON")
		if users, _ := state(room, "m.room.power_levels")["users"].(map[string]any); len(users) != 0 {
			t.Fatalf("refused power levels stored: %v", users)
		}
		// MSC4291: a second create event is 400.
		raw(t, "PUT", v3+"/rooms/"+url.PathEscape(room)+"/state/m.room.create/", alice.AccessToken, map[string]any{"room_version": "12"}).
			wantErr(t, "sending a create event", 400, "M_BAD_JSON")
		if c := state(room, "m.room.create"); c["room_version"] != "12" {
			t.Fatalf("create event content now %v", c)
		}

		// An admin above any ordinary level still cannot kick the creator,
		// and levels beyond canonical JSON's integers are refused.
		if _, err := carol.JoinRoom(ctxT(t), room, nil); err != nil {
			t.Fatal(err)
		}
		if r := raw(t, "PUT", v3+"/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", alice.AccessToken,
			map[string]any{"users": map[string]any{carol.UserID.String(): int64(1<<53 - 1)}}); r.Status != 200 {
			t.Fatalf("carol at 2^53-1: %d %s", r.Status, r.Raw)
		}
		raw(t, "POST", v3+"/rooms/"+url.PathEscape(room)+"/kick", carol.AccessToken, map[string]any{"user_id": alice.UserID.String()}).
			wantErr(t, "a 2^53-1 admin kicking the creator", 403, "M_FORBIDDEN")
		if r := raw(t, "PUT", v3+"/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", alice.AccessToken,
			map[string]any{"users": map[string]any{carol.UserID.String(): int64(1 << 53)}}); r.Status != 400 {
			t.Fatalf("carol at 2^53: %d %s, want 400", r.Status, r.Raw)
		}
		if users, _ := state(room, "m.room.power_levels")["users"].(map[string]any); users[carol.UserID.String()] != float64(1<<53-1) {
			t.Fatalf("carol's stored level %v", users[carol.UserID.String()])
		}
		if m := raw(t, "GET", v3+"/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(alice.UserID.String()), alice.AccessToken, nil); m.Body["membership"] != "join" {
			t.Fatalf("alice's membership: %s", m.Raw)
		}

		// power_level_content_override naming the creator: 400, no room.
		create(map[string]any{"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID.String(): 100}}}).
			wantErr(t, "override with the creator", 400, "M_BAD_JSON")
		// ...naming someone else is fine and stored.
		r = create(map[string]any{"invite": []string{bob.UserID.String()},
			"power_level_content_override": map[string]any{"users": map[string]any{bob.UserID.String(): 100}}})
		if r.Status != 200 {
			t.Fatalf("override with bob: %d %s", r.Status, r.Raw)
		}
		if users, _ := state(r.Body["room_id"].(string), "m.room.power_levels")["users"].(map[string]any); len(users) != 1 || users[bob.UserID.String()] != float64(100) {
			t.Fatalf("override users stored as %v", users)
		}

		// additional_creators validation.
		for name, bad := range map[string]any{
			"not an array":   "not-an-array",
			"not strings":    []any{"@foo:example.com", 42},
			"not user IDs":   []any{"@foo:example.com", "not-a-user-id"},
			"invalid domain": []any{"@invalid:dom$ain$.com"},
		} {
			create(map[string]any{"creation_content": map[string]any{"additional_creators": bad}}).
				wantErr(t, "additional_creators "+name, 400, "M_BAD_JSON")
		}
		r = create(map[string]any{"preset": "public_chat", "creation_content": map[string]any{"additional_creators": []any{bob.UserID.String()}}})
		if r.Status != 200 {
			t.Fatalf("valid additional_creators: %d %s", r.Status, r.Raw)
		}
		shared := r.Body["room_id"].(string)
		if ac, _ := state(shared, "m.room.create")["additional_creators"].([]any); len(ac) != 1 || ac[0] != bob.UserID.String() {
			t.Fatalf("stored additional_creators %v", ac)
		}
		if _, err := bob.JoinRoom(ctxT(t), shared, nil); err != nil {
			t.Fatal(err)
		}
		// An additional creator cannot be kicked, nor put in power levels.
		raw(t, "POST", v3+"/rooms/"+url.PathEscape(shared)+"/kick", alice.AccessToken, map[string]any{"user_id": bob.UserID.String()}).
			wantErr(t, "kicking a creator", 403, "M_FORBIDDEN")
		raw(t, "PUT", v3+"/rooms/"+url.PathEscape(shared)+"/state/m.room.power_levels/", alice.AccessToken,
			map[string]any{"users": map[string]any{bob.UserID.String(): 100}}).wantErr(t, "additional creator into power levels", 400, "M_BAD_JSON")
		if m := raw(t, "GET", v3+"/rooms/"+url.PathEscape(shared)+"/state/m.room.member/"+url.PathEscape(bob.UserID.String()), alice.AccessToken, nil); m.Body["membership"] != "join" {
			t.Fatalf("bob's membership after the refused kick: %s", m.Raw)
		}

		// trusted_private_chat: invitees join additional_creators, next to
		// those given, and are not in power levels.
		r = create(map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob.UserID.String()},
			"creation_content": map[string]any{"additional_creators": []any{carol.UserID.String()}}})
		if r.Status != 200 {
			t.Fatalf("trusted_private_chat: %d %s", r.Status, r.Raw)
		}
		dm := r.Body["room_id"].(string)
		ac, _ := state(dm, "m.room.create")["additional_creators"].([]any)
		got := map[any]bool{}
		for _, u := range ac {
			got[u] = true
		}
		if len(ac) != 2 || !got[bob.UserID.String()] || !got[carol.UserID.String()] {
			t.Fatalf("trusted_private_chat additional_creators %v, want bob and carol", ac)
		}
		if users, _ := state(dm, "m.room.power_levels")["users"].(map[string]any); len(users) != 0 {
			t.Fatalf("trusted_private_chat power levels users %v", users)
		}

		// MSC4311: bob's invite carries the whole create event.
		sync, err := bob.SyncRequest(ctxT(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		inv, ok := sync.Rooms.Invite[id.RoomID(dm)]
		if !ok {
			t.Fatalf("bob has no invite to %s", dm)
		}
		found := false
		for _, ev := range inv.State.Events {
			if ev.Type.Type == "m.room.create" {
				found = true
				if ev.Timestamp == 0 || ev.ID == "" || ev.RoomID.String() != dm {
					t.Fatalf("stripped create event lacks the full event: id %q ts %d room %q", ev.ID, ev.Timestamp, ev.RoomID)
				}
			}
		}
		if !found {
			t.Fatal("no create event in bob's invite_state")
		}
	})
}

// TestFederationFullCreateEventInInviteState (MSC4311): a v12 room's
// invite of a user on another server carries the whole signed create
// event in invite_room_state; the invitee's /sync shows it with the
// create event's origin_server_ts as the inviting server stored it.
func TestFederationFullCreateEventInInviteState(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice, bob := fedUser(t, a, "alice"), fedUser(t, b, "bob")
	r := raw(t, "POST", a.URL+"/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"room_version": "12", "preset": "private_chat", "invite": []string{bob.UserID.String()}})
	if r.Status != 200 {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	room := r.Body["room_id"].(string)
	st := raw(t, "GET", a.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state", alice.AccessToken, nil)
	var evs []map[string]any
	if err := json.Unmarshal(st.Raw, &evs); err != nil {
		t.Fatal(err)
	}
	var wantTS float64
	for _, e := range evs {
		if e["type"] == "m.room.create" {
			wantTS, _ = e["origin_server_ts"].(float64)
		}
	}
	if wantTS == 0 {
		t.Fatalf("no create event in A's state: %s", st.Raw)
	}
	var got map[string]any
	waitFor(t, "bob's invite", 20*time.Second, func() bool {
		s := raw(t, "GET", b.URL+"/_matrix/client/v3/sync?timeout=0", bob.AccessToken, nil)
		var body struct {
			Rooms struct {
				Invite map[string]struct {
					InviteState struct {
						Events []map[string]any `json:"events"`
					} `json:"invite_state"`
				} `json:"invite"`
			} `json:"rooms"`
		}
		_ = json.Unmarshal(s.Raw, &body)
		for _, e := range body.Rooms.Invite[room].InviteState.Events {
			if e["type"] == "m.room.create" {
				got = e
				return true
			}
		}
		return false
	})
	if got["origin_server_ts"] != wantTS || got["sender"] != alice.UserID.String() {
		t.Fatalf("bob's stripped create event %v, want origin_server_ts %v from %s", got, wantTS, alice.UserID)
	}
}
