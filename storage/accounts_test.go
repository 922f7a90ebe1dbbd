package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func mustAccount(t *testing.T, db *storage.DB, userID string) {
	t.Helper()
	ok, err := storage.CreateAccount(context.Background(), db, &storage.Account{UserID: userID, Localpart: userID[1 : len(userID)-len(":test")], PasswordHash: "h", CreatedTS: 1})
	if err != nil || !ok {
		t.Fatalf("create %s: %v %v", userID, ok, err)
	}
}

func TestAccountsCRUD(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		a := &storage.Account{UserID: "@alice:test", Localpart: "alice", PasswordHash: "$argon2id$x", CreatedTS: 42, IsAdmin: true, DisplayName: "Alice"}
		ok, err := storage.CreateAccount(ctx, db, a)
		if err != nil || !ok {
			t.Fatalf("create: %v %v", ok, err)
		}
		ok, err = storage.CreateAccount(ctx, db, a)
		if err != nil || ok {
			t.Fatalf("duplicate create: %v %v", ok, err)
		}
		got, err := storage.GetAccount(ctx, db, "@alice:test")
		if err != nil {
			t.Fatal(err)
		}
		if got.Localpart != "alice" || got.PasswordHash != "$argon2id$x" || got.CreatedTS != 42 || !got.IsAdmin || got.IsGuest || got.Deactivated || got.DisplayName != "Alice" || got.AvatarURL != "" {
			t.Fatalf("got %+v", got)
		}
		if _, err := storage.GetAccount(ctx, db, "@bob:test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing account: %v", err)
		}
		if ex, err := storage.AccountExists(ctx, db, "@alice:test"); err != nil || !ex {
			t.Fatalf("exists: %v %v", ex, err)
		}
		if ex, err := storage.AccountExists(ctx, db, "@bob:test"); err != nil || ex {
			t.Fatalf("not exists: %v %v", ex, err)
		}
		if err := storage.SetPassword(ctx, db, "@alice:test", "new"); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetAdmin(ctx, db, "@alice:test", false); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetAccountDisplayName(ctx, db, "@alice:test", ""); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetAccountAvatarURL(ctx, db, "@alice:test", "mxc://test/a"); err != nil {
			t.Fatal(err)
		}
		got, _ = storage.GetAccount(ctx, db, "@alice:test")
		if got.PasswordHash != "new" || got.IsAdmin || got.DisplayName != "" || got.AvatarURL != "mxc://test/a" {
			t.Fatalf("after updates %+v", got)
		}
	})
}

func TestAccountsDevicesAndTokens(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		mustAccount(t, db, "@alice:test")
		mustAccount(t, db, "@bob:test")

		for _, id := range []string{"AAAA", "BBBB", "CCCC"} {
			created, err := storage.CreateDevice(ctx, db, &storage.Device{UserID: "@alice:test", DeviceID: id, DisplayName: "dev " + id, CreatedTS: 5})
			if err != nil || !created {
				t.Fatalf("create device %s: %v %v", id, created, err)
			}
		}
		// Per-device rows of other components, which the device cleanups
		// must delete with their device (and only with it).
		for _, id := range []string{"AAAA", "BBBB", "CCCC"} {
			if err := db.WithTx(ctx, func(tx *storage.Tx) error {
				if _, err := storage.SetDeviceKeys(ctx, tx, "@alice:test", id, []byte(`{"device_id":"`+id+`"}`), "ed"+id, 1); err != nil {
					return err
				}
				return storage.PutPusher(ctx, tx, &storage.Pusher{UserID: "@alice:test", AppID: "app", PushKey: "key" + id, Kind: "http", Data: json.RawMessage(`{}`), DeviceID: id}, true)
			}); err != nil {
				t.Fatal(err)
			}
		}
		// cleaned reports which of alice's devices have lost their keys and
		// pushers.
		cleaned := func() []string {
			var out []string
			pushers, err := storage.Pushers(ctx, db, "@alice:test")
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"AAAA", "BBBB", "CCCC"} {
				_, kerr := storage.GetDeviceKeys(ctx, db, "@alice:test", id)
				hasPusher := false
				for _, p := range pushers {
					hasPusher = hasPusher || p.DeviceID == id
				}
				switch {
				case errors.Is(kerr, storage.ErrNotFound) && !hasPusher:
					out = append(out, id)
				case kerr != nil && !errors.Is(kerr, storage.ErrNotFound):
					t.Fatal(kerr)
				case kerr != nil || !hasPusher:
					t.Fatalf("device %s half cleaned (keys: %v, pusher: %v)", id, kerr, hasPusher)
				}
			}
			return out
		}
		created, err := storage.CreateDevice(ctx, db, &storage.Device{UserID: "@alice:test", DeviceID: "AAAA", DisplayName: "other", CreatedTS: 6})
		if err != nil || created {
			t.Fatalf("re-create device: %v %v", created, err)
		}
		if err := storage.UpsertDevice(ctx, db, &storage.Device{UserID: "@bob:test", DeviceID: "AAAA", CreatedTS: 7}); err != nil {
			t.Fatal(err)
		}
		d, err := storage.GetDevice(ctx, db, "@alice:test", "AAAA")
		if err != nil || d.DisplayName != "dev AAAA" || d.CreatedTS != 5 {
			t.Fatalf("get device: %+v %v", d, err)
		}
		if _, err := storage.GetDevice(ctx, db, "@alice:test", "ZZZZ"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing device: %v", err)
		}
		if err := storage.UpdateDeviceLastSeen(ctx, db, "@alice:test", "AAAA", 99, "10.0.0.1", "curl"); err != nil {
			t.Fatal(err)
		}
		if err := storage.UpdateDeviceLastSeen(ctx, db, "@alice:test", "AAAA", 100, "", ""); err != nil {
			t.Fatal(err)
		}
		if ok, err := storage.SetDeviceDisplayName(ctx, db, "@alice:test", "BBBB", "renamed"); err != nil || !ok {
			t.Fatalf("rename: %v %v", ok, err)
		}
		if ok, err := storage.SetDeviceDisplayName(ctx, db, "@alice:test", "ZZZZ", "x"); err != nil || ok {
			t.Fatalf("rename missing: %v %v", ok, err)
		}
		devs, err := storage.ListDevices(ctx, db, "@alice:test")
		if err != nil || len(devs) != 3 {
			t.Fatalf("list: %v %v", devs, err)
		}
		if devs[0].LastSeenTS != 100 || devs[0].LastSeenIP != "10.0.0.1" || devs[0].LastSeenUA != "curl" || devs[1].DisplayName != "renamed" {
			t.Fatalf("list contents: %+v %+v", devs[0], devs[1])
		}

		// Tokens.
		tokA := &storage.AccessToken{TokenHash: "hashA", UserID: "@alice:test", DeviceID: "AAAA", CreatedTS: 1}
		tokB := &storage.AccessToken{TokenHash: "hashB", UserID: "@alice:test", DeviceID: "BBBB", CreatedTS: 1, ExpiresTS: 1000}
		tokC := &storage.AccessToken{TokenHash: "hashC", UserID: "@alice:test", DeviceID: "CCCC", CreatedTS: 1}
		tokBob := &storage.AccessToken{TokenHash: "hashBob", UserID: "@bob:test", DeviceID: "AAAA", CreatedTS: 1}
		for _, tk := range []*storage.AccessToken{tokA, tokB, tokC, tokBob} {
			if _, err := storage.InsertAccessToken(ctx, db, tk); err != nil || tk.ID == 0 {
				t.Fatalf("insert token: %v", err)
			}
		}
		if _, err := storage.InsertAccessToken(ctx, db, &storage.AccessToken{TokenHash: "hashA", UserID: "@bob:test", DeviceID: "X"}); !storage.IsUniqueViolation(err) {
			t.Fatalf("duplicate token hash: %v", err)
		}
		info, err := storage.LookupAccessToken(ctx, db, "hashB")
		if err != nil || info.ID != tokB.ID || info.UserID != "@alice:test" || info.DeviceID != "BBBB" || info.ExpiresTS != 1000 || info.IsAdmin || info.Deactivated {
			t.Fatalf("lookup: %+v %v", info, err)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("lookup unknown: %v", err)
		}
		if n, err := storage.PurgeExpiredAccessTokens(ctx, db, 1001); err != nil || n != 1 {
			t.Fatalf("purge: %d %v", n, err)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "hashB"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("purged token: %v", err)
		}
		if err := storage.DeleteAccessToken(ctx, db, tokC.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "hashC"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted token: %v", err)
		}

		// Deleting a device takes its tokens and runs the cleanups.
		rt := &storage.RefreshToken{TokenHash: "rA", UserID: "@alice:test", DeviceID: "AAAA", CreatedTS: 1}
		if _, err := storage.InsertRefreshToken(ctx, db, rt); err != nil {
			t.Fatal(err)
		}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.DeleteDevice(ctx, tx, "@alice:test", "AAAA") }); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "hashA"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("token of deleted device: %v", err)
		}
		if _, err := storage.LookupRefreshToken(ctx, db, "rA"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("refresh token of deleted device: %v", err)
		}
		if _, err := storage.GetDevice(ctx, db, "@alice:test", "AAAA"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted device: %v", err)
		}
		if got := cleaned(); len(got) != 1 || got[0] != "AAAA" {
			t.Fatalf("cleanups after DeleteDevice: %v", got)
		}
		if _, err := storage.GetDevice(ctx, db, "@bob:test", "AAAA"); err != nil {
			t.Fatalf("bob's device with the same ID must stay: %v", err)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "hashBob"); err != nil {
			t.Fatalf("bob's token must stay: %v", err)
		}

		// DeleteAllDevices with an exception.
		if _, err := storage.InsertAccessToken(ctx, db, &storage.AccessToken{TokenHash: "hashC2", UserID: "@alice:test", DeviceID: "CCCC"}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		if err := db.WithTx(ctx, func(tx *storage.Tx) error {
			var err error
			ids, err = storage.DeleteAllDevices(ctx, tx, "@alice:test", "CCCC")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(ids) != 1 || ids[0] != "BBBB" {
			t.Fatalf("deleted %v", ids)
		}
		left, _ := storage.ListDeviceIDs(ctx, db, "@alice:test")
		if len(left) != 1 || left[0] != "CCCC" {
			t.Fatalf("left %v", left)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "hashC2"); err != nil {
			t.Fatalf("spared device's token: %v", err)
		}
		if got := cleaned(); len(got) != 2 || got[0] != "AAAA" || got[1] != "BBBB" {
			t.Fatalf("cleanups after DeleteAllDevices: %v", got)
		}

		// DeleteDeviceTokens keeps the device.
		if err := storage.DeleteDeviceTokens(ctx, db, "@alice:test", "CCCC"); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "hashC2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("device tokens: %v", err)
		}
		if _, err := storage.GetDevice(ctx, db, "@alice:test", "CCCC"); err != nil {
			t.Fatal(err)
		}

		// DeleteAccessTokens spares one token.
		t1 := &storage.AccessToken{TokenHash: "t1", UserID: "@alice:test", DeviceID: "CCCC"}
		t2 := &storage.AccessToken{TokenHash: "t2", UserID: "@alice:test", DeviceID: "CCCC"}
		storage.InsertAccessToken(ctx, db, t1)
		storage.InsertAccessToken(ctx, db, t2)
		if err := storage.DeleteAccessTokens(ctx, db, "@alice:test", t1.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "t1"); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "t2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatal(err)
		}

		// Deactivation.
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.Deactivate(ctx, tx, "@alice:test", true) }); err != nil {
			t.Fatal(err)
		}
		a, _ := storage.GetAccount(ctx, db, "@alice:test")
		if !a.Deactivated || a.PasswordHash == "" {
			t.Fatalf("deactivated account %+v", a)
		}
		if ids, _ := storage.ListDeviceIDs(ctx, db, "@alice:test"); len(ids) != 0 {
			t.Fatalf("devices after deactivation %v", ids)
		}
		if _, err := storage.LookupAccessToken(ctx, db, "t1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatal(err)
		}
	})
}

func TestAccountsLookupFlags(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		storage.CreateAccount(ctx, db, &storage.Account{UserID: "@adm:test", Localpart: "adm", IsAdmin: true, IsGuest: true, Deactivated: true})
		storage.InsertAccessToken(ctx, db, &storage.AccessToken{TokenHash: "h", UserID: "@adm:test", DeviceID: "D", RefreshTokenID: 7})
		info, err := storage.LookupAccessToken(ctx, db, "h")
		if err != nil || !info.IsAdmin || !info.IsGuest || !info.Deactivated || info.RefreshTokenID != 7 {
			t.Fatalf("%+v %v", info, err)
		}
	})
}

func TestAccountsRefreshRotation(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		r1 := &storage.RefreshToken{TokenHash: "r1", UserID: "@a:test", DeviceID: "D", CreatedTS: 1}
		if _, err := storage.InsertRefreshToken(ctx, db, r1); err != nil {
			t.Fatal(err)
		}
		r2 := &storage.RefreshToken{TokenHash: "r2", UserID: "@a:test", DeviceID: "D", CreatedTS: 2}
		storage.InsertRefreshToken(ctx, db, r2)
		ok, err := storage.RotateRefreshToken(ctx, db, r1.ID, r2.ID)
		if err != nil || !ok {
			t.Fatalf("rotate: %v %v", ok, err)
		}
		ok, err = storage.RotateRefreshToken(ctx, db, r1.ID, 999)
		if err != nil || ok {
			t.Fatalf("second rotate must fail: %v %v", ok, err)
		}
		got, err := storage.LookupRefreshToken(ctx, db, "r1")
		if err != nil || !got.Used || got.NextID != r2.ID || got.UserID != "@a:test" {
			t.Fatalf("r1 after rotate: %+v %v", got, err)
		}
		r3 := &storage.RefreshToken{TokenHash: "r3", UserID: "@a:test", DeviceID: "D", CreatedTS: 3}
		storage.InsertRefreshToken(ctx, db, r3)
		if ok, err := storage.RotateRefreshToken(ctx, db, r2.ID, r3.ID); err != nil || !ok {
			t.Fatalf("rotate 2: %v %v", ok, err)
		}
		// r1 (two generations back) is gone; r2 is kept as used.
		if _, err := storage.LookupRefreshToken(ctx, db, "r1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("r1 should be deleted: %v", err)
		}
		if got, err := storage.LookupRefreshToken(ctx, db, "r2"); err != nil || !got.Used {
			t.Fatalf("r2: %+v %v", got, err)
		}

		// Concurrent rotations of one token: exactly one wins.
		r4 := &storage.RefreshToken{TokenHash: "r4", UserID: "@a:test", DeviceID: "D"}
		storage.InsertRefreshToken(ctx, db, r4)
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_ = db.WithTx(ctx, func(tx *storage.Tx) error {
					ok, err := storage.RotateRefreshToken(ctx, tx, r4.ID, int64(1000+i))
					if err != nil {
						return err
					}
					if ok {
						mu.Lock()
						wins++
						mu.Unlock()
					}
					return nil
				})
			}(i)
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("wins = %d", wins)
		}
	})
}

func TestAccountsLoginTokens(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if err := storage.InsertLoginToken(ctx, db, "lt", "@a:test", 1, 100); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertLoginToken(ctx, db, "old", "@a:test", 1, 50); err != nil {
			t.Fatal(err)
		}
		if u, err := storage.ConsumeLoginToken(ctx, db, "lt", 60); err != nil || u != "@a:test" {
			t.Fatalf("consume: %q %v", u, err)
		}
		if _, err := storage.ConsumeLoginToken(ctx, db, "lt", 60); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("reuse: %v", err)
		}
		if _, err := storage.ConsumeLoginToken(ctx, db, "old", 60); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired: %v", err)
		}
		storage.InsertLoginToken(ctx, db, "x", "@a:test", 1, 10)
		if err := storage.PurgeExpiredLoginTokens(ctx, db, 20); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAccountsRegistrationTokens(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		two := int64(2)
		exp := int64(1000)
		if ok, err := storage.CreateRegistrationToken(ctx, db, &storage.RegistrationToken{Token: "limited", UsesAllowed: &two}); err != nil || !ok {
			t.Fatalf("create: %v %v", ok, err)
		}
		if ok, err := storage.CreateRegistrationToken(ctx, db, &storage.RegistrationToken{Token: "limited"}); err != nil || ok {
			t.Fatalf("duplicate: %v %v", ok, err)
		}
		storage.CreateRegistrationToken(ctx, db, &storage.RegistrationToken{Token: "expiring", ExpiryTime: &exp})
		storage.CreateRegistrationToken(ctx, db, &storage.RegistrationToken{Token: "free"})

		valid := func(tok string, now int64) bool {
			v, err := storage.RegistrationTokenValid(ctx, db, tok, now)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		if !valid("limited", 0) || !valid("expiring", 999) || valid("expiring", 1000) || !valid("free", 1<<50) || valid("nope", 0) {
			t.Fatal("validity")
		}
		reserve := func(tok string, now int64) bool {
			ok, err := storage.ReserveRegistrationToken(ctx, db, tok, now)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		first, second, third := reserve("limited", 0), reserve("limited", 0), reserve("limited", 0)
		if !first || !second || third {
			t.Fatal("reserving a 2-use token thrice")
		}
		if valid("limited", 0) {
			t.Fatal("fully pending token must be invalid")
		}
		if err := storage.ReleaseRegistrationToken(ctx, db, "limited"); err != nil {
			t.Fatal(err)
		}
		if err := storage.CompleteRegistrationToken(ctx, db, "limited"); err != nil {
			t.Fatal(err)
		}
		got, err := storage.GetRegistrationToken(ctx, db, "limited")
		if err != nil || got.Pending != 0 || got.Completed != 1 || got.UsesAllowed == nil || *got.UsesAllowed != 2 || got.ExpiryTime != nil {
			t.Fatalf("after release/complete: %+v %v", got, err)
		}
		if reserve("expiring", 2000) {
			t.Fatal("expired token reserved")
		}

		// Concurrent reservations never exceed uses_allowed.
		five := int64(5)
		storage.CreateRegistrationToken(ctx, db, &storage.RegistrationToken{Token: "race", UsesAllowed: &five})
		var wg sync.WaitGroup
		var mu sync.Mutex
		n := 0
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var ok bool
				err := db.WithTx(ctx, func(tx *storage.Tx) error {
					var err error
					ok, err = storage.ReserveRegistrationToken(ctx, tx, "race", 0)
					return err
				})
				if err == nil && ok {
					mu.Lock()
					n++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if n != 5 {
			t.Fatalf("reserved %d of 5", n)
		}

		if ok, err := storage.UpdateRegistrationToken(ctx, db, "free", &two, &exp); err != nil || !ok {
			t.Fatalf("update: %v %v", ok, err)
		}
		if ok, err := storage.UpdateRegistrationToken(ctx, db, "nope", nil, nil); err != nil || ok {
			t.Fatalf("update missing: %v %v", ok, err)
		}
		got, _ = storage.GetRegistrationToken(ctx, db, "free")
		if *got.UsesAllowed != 2 || *got.ExpiryTime != 1000 {
			t.Fatalf("updated %+v", got)
		}
		list, err := storage.ListRegistrationTokens(ctx, db)
		if err != nil || len(list) != 4 {
			t.Fatalf("list: %v %v", list, err)
		}
		names := []string{}
		for _, l := range list {
			names = append(names, l.Token)
		}
		if !sort.StringsAreSorted(names) {
			t.Fatalf("unsorted %v", names)
		}
		if ok, err := storage.DeleteRegistrationToken(ctx, db, "free"); err != nil || !ok {
			t.Fatalf("delete: %v %v", ok, err)
		}
		if _, err := storage.GetRegistrationToken(ctx, db, "free"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted: %v", err)
		}
	})
}

func TestAccountsUIASessions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := &storage.UIASession{ID: "sess1", CreatedTS: 10, UserID: "@a:test", Op: "POST /account/password"}
		if err := storage.CreateUIASession(ctx, db, s); err != nil {
			t.Fatal(err)
		}
		got, err := storage.GetUIASession(ctx, db, "sess1")
		if err != nil || got.UserID != "@a:test" || got.Op != "POST /account/password" || len(got.Completed) != 0 || string(got.Params) != "{}" || len(got.Data) != 0 {
			t.Fatalf("get: %+v %v", got, err)
		}
		got.Completed = append(got.Completed, "m.login.password")
		got.Data["registration_token"] = "tok"
		got.Params = []byte(`{"m.login.terms":{}}`)
		if err := storage.UpdateUIASession(ctx, db, got); err != nil {
			t.Fatal(err)
		}
		got, _ = storage.GetUIASession(ctx, db, "sess1")
		if len(got.Completed) != 1 || got.Completed[0] != "m.login.password" || got.Data["registration_token"] != "tok" || string(got.Params) != `{"m.login.terms":{}}` {
			t.Fatalf("updated: %+v", got)
		}
		if _, err := storage.GetUIASession(ctx, db, "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing: %v", err)
		}
		storage.CreateUIASession(ctx, db, &storage.UIASession{ID: "sess2", CreatedTS: 100})
		var purged []*storage.UIASession
		if err := db.WithTx(ctx, func(tx *storage.Tx) error {
			var err error
			purged, err = storage.PurgeUIASessions(ctx, tx, 50)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(purged) != 1 || purged[0].ID != "sess1" || purged[0].Data["registration_token"] != "tok" {
			t.Fatalf("purged %+v", purged)
		}
		if ok, err := storage.DeleteUIASession(ctx, db, "sess2"); err != nil || !ok {
			t.Fatalf("delete: %v %v", ok, err)
		}
		if ok, err := storage.DeleteUIASession(ctx, db, "sess2"); err != nil || ok {
			t.Fatalf("delete twice: %v %v", ok, err)
		}
	})
}
