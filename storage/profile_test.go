package storage_test

import (
	"context"
	"errors"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// setMember writes a current-state membership row (what the room server
// maintains) for tests of membership-scoped queries.
func setMember(t *testing.T, db *storage.DB, roomID, userID, membership string) {
	t.Helper()
	err := storage.SetCurrentState(context.Background(), db, storage.CurrentStateRow{RoomID: roomID, Type: "m.room.member", StateKey: userID,
		EventID: "$" + roomID + userID + membership, Membership: membership, StreamPos: 1})
	if err != nil {
		t.Fatal(err)
	}
}

func TestProfileReadAndSharedRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		mustAccount(t, db, "@alice:test")
		if _, err := storage.GetProfile(ctx, db, "@nobody:test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown user: %v", err)
		}
		p, err := storage.GetProfile(ctx, db, "@alice:test")
		if err != nil || p.DisplayName != "" || p.AvatarURL != "" {
			t.Fatalf("fresh profile %+v %v", p, err)
		}
		if err := storage.SetAccountDisplayName(ctx, db, "@alice:test", "Alice"); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetAccountAvatarURL(ctx, db, "@alice:test", "mxc://test/a"); err != nil {
			t.Fatal(err)
		}
		if p, _ = storage.GetProfile(ctx, db, "@alice:test"); p.DisplayName != "Alice" || p.AvatarURL != "mxc://test/a" {
			t.Fatalf("profile %+v", p)
		}

		setMember(t, db, "!r1:test", "@alice:test", "join")
		setMember(t, db, "!r1:test", "@bob:test", "invite")
		setMember(t, db, "!r2:test", "@carol:test", "join")
		setMember(t, db, "!r1:test", "@dave:test", "leave")
		for _, tc := range []struct {
			a, b string
			want bool
		}{
			{"@alice:test", "@bob:test", true},
			{"@bob:test", "@alice:test", true},
			{"@alice:test", "@carol:test", false},
			{"@alice:test", "@dave:test", false},
			{"@alice:test", "@nobody:test", false},
		} {
			got, err := storage.SharesRoom(ctx, db, tc.a, tc.b)
			if err != nil || got != tc.want {
				t.Errorf("SharesRoom(%s, %s) = %v %v", tc.a, tc.b, got, err)
			}
		}
	})
}
