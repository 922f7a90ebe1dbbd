package test

import (
	"net/url"
	"sort"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// TestFederationHierarchyRemoteChildren: a space on A whose children live
// on B, where A is in none of them. A's client /hierarchy asks B's
// federation /hierarchy and lists B's public rooms, the sub-space and its
// children; B's answer carries room_type, allowed_room_ids and, as
// inaccessible, B's invite-only room, which is never listed. The
// restricted room is listed for alice (in its allowed room) and not for
// carol; suggested_only and max_depth apply to the remote part too. A
// holds none of B's rooms afterwards.
func TestFederationHierarchyRemoteChildren(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d, d)
			c.StartAll()
			a, b := c.Nodes[0], c.Nodes[1]
			alice, carol, bob := fedUser(t, a, "alice"), fedUser(t, a, "carol"), fedUser(t, b, "bob")
			mk := func(cli *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
				t.Helper()
				r, err := cli.CreateRoom(ctxT(t), req)
				if err != nil {
					t.Fatal(err)
				}
				return r.RoomID
			}
			space := func(cli *mautrix.Client, name string) id.RoomID {
				return mk(cli, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name, CreationContent: map[string]any{"type": "m.space"}})
			}
			child := func(cli *mautrix.Client, parent, kid id.RoomID, via string, suggested bool) {
				t.Helper()
				if _, err := cli.SendStateEvent(ctxT(t), parent, event.StateSpaceChild, kid.String(), map[string]any{"via": []string{via}, "suggested": suggested}); err != nil {
					t.Fatal(err)
				}
			}
			x := mk(bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "X"})
			r1 := mk(bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "R1"})
			r2 := mk(bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "R2", RoomVersion: "10", InitialState: restrictedState("restricted", allowRoom(x, b.ServerName))})
			r3 := mk(bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "R3"})
			r4 := mk(bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "R4"})
			r5 := mk(bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "R5"})
			ss := space(bob, "SS")
			child(bob, ss, r3, b.ServerName, true)
			child(bob, ss, r4, b.ServerName, true)
			child(bob, ss, r5, b.ServerName, false)
			fedJoin(t, alice, x, b)

			s := space(alice, "S")
			l := mk(alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "L"})
			child(alice, s, l, a.ServerName, false)
			child(alice, s, r1, b.ServerName, false)
			child(alice, s, r2, b.ServerName, false)
			child(alice, s, ss, b.ServerName, true)
			fedJoin(t, carol, s, a)

			names := map[string]string{s.String(): "S", l.String(): "L", r1.String(): "R1", r2.String(): "R2", r3.String(): "R3", r4.String(): "R4", r5.String(): "R5", ss.String(): "SS"}
			walk := func(cli *mautrix.Client, query string) (string, map[string]map[string]any) {
				t.Helper()
				r := raw(t, "GET", cli.HomeserverURL.String()+"/_matrix/client/v1/rooms/"+url.PathEscape(s.String())+"/hierarchy"+query, cli.AccessToken, nil)
				if r.Status != 200 {
					t.Fatalf("hierarchy%s: %d %s", query, r.Status, r.Raw)
				}
				rooms, _ := r.Body["rooms"].([]any)
				var got []string
				byName := map[string]map[string]any{}
				for _, e := range rooms {
					m := e.(map[string]any)
					n := names[m["room_id"].(string)]
					got = append(got, n)
					byName[n] = m
				}
				sort.Strings(got)
				return strings.Join(got, ","), byName
			}
			got, entries := walk(alice, "")
			if want := "L,R1,R2,R4,R5,S,SS"; got != want {
				t.Fatalf("alice's hierarchy: %s, want %s", got, want)
			}
			if entries["SS"]["room_type"] != "m.space" || entries["R1"]["name"] != "R1" || entries["R4"]["join_rule"] != "public" {
				t.Fatalf("remote entries: SS %v, R1 %v, R4 %v", entries["SS"], entries["R1"], entries["R4"])
			}
			if ids, _ := entries["R2"]["allowed_room_ids"].([]any); len(ids) != 1 || ids[0] != x.String() {
				t.Fatalf("R2's allowed_room_ids: %v", entries["R2"]["allowed_room_ids"])
			}
			if cs, _ := entries["SS"]["children_state"].([]any); len(cs) != 3 {
				t.Fatalf("SS's children_state: %v, want its 3 children", cs)
			}
			if got, _ := walk(carol, ""); got != "L,R1,R4,R5,S,SS" {
				t.Fatalf("carol's hierarchy (not in R2's allowed room): %s", got)
			}
			if got, _ := walk(alice, "?suggested_only=true"); got != "R4,S,SS" {
				t.Fatalf("suggested_only: %s, want R4,S,SS", got)
			}
			if got, _ := walk(alice, "?max_depth=1"); got != "L,R1,R2,S,SS" {
				t.Fatalf("max_depth=1: %s, want L,R1,R2,S,SS", got)
			}
			for _, room := range []id.RoomID{r1, r2, r4, ss} {
				if c := fedMemberContent(t, alice, room, alice.UserID.String()); c != nil {
					t.Fatalf("A holds alice's membership of %s (%v): the walk must not join", names[room.String()], c)
				}
			}
		})
	}
}
