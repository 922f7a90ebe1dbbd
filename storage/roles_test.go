package storage_test

import (
	"context"
	"reflect"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func TestUserRoles(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		mustAccount(t, db, "@r:test")
		if roles, err := storage.UserRoles(ctx, db, "@r:test"); err != nil || len(roles) != 0 {
			t.Fatalf("fresh: %v %v", roles, err)
		}
		if err := storage.SetUserRoles(ctx, db, "@r:test", []string{"auditor", "admin", "operator", "auditor"}, "@boss:test", 5); err != nil {
			t.Fatal(err)
		}
		roles, _ := storage.UserRoles(ctx, db, "@r:test")
		if !reflect.DeepEqual(roles, []string{"auditor", "operator"}) {
			t.Fatalf("roles %v", roles)
		}
		acc, _ := storage.GetAccount(ctx, db, "@r:test")
		if !acc.IsAdmin {
			t.Fatal("admin role did not set is_admin")
		}
		if u, _ := storage.UsersWithRole(ctx, db, "admin"); !reflect.DeepEqual(u, []string{"@r:test"}) {
			t.Fatalf("admins %v", u)
		}
		if u, _ := storage.UsersWithRole(ctx, db, "auditor"); !reflect.DeepEqual(u, []string{"@r:test"}) {
			t.Fatalf("auditors %v", u)
		}
		if err := storage.SetUserRoles(ctx, db, "@r:test", []string{"user"}, "", 6); err != nil {
			t.Fatal(err)
		}
		roles, _ = storage.UserRoles(ctx, db, "@r:test")
		acc, _ = storage.GetAccount(ctx, db, "@r:test")
		if !reflect.DeepEqual(roles, []string{"user"}) || acc.IsAdmin {
			t.Fatalf("after replace: %v admin=%v", roles, acc.IsAdmin)
		}
	})
}
