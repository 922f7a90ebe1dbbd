package main

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"

	"enclave/internal/rbac"
	"enclave/internal/server"
	"enclave/storage"
)

const userUsage = `usage:
  enclave user role [--data DIR] USER                  show the user's roles
  enclave user role [--data DIR] USER ROLE [ROLE ...]  set the user's roles (comma or space separated)
  enclave user role [--data DIR] --add ROLE USER       grant a role
  enclave user role [--data DIR] --remove ROLE USER    take a role away`

func cmdUser(args []string) error {
	if len(args) == 0 || args[0] != "role" {
		return errors.New(userUsage)
	}
	fl := flag.NewFlagSet("user role", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	add := fl.String("add", "", "role to grant")
	remove := fl.String("remove", "", "role to take away")
	pos, err := parseMixed(fl, args[1:])
	if err != nil {
		return err
	}
	if len(pos) == 0 || (*add != "" || *remove != "") && len(pos) != 1 {
		return errors.New(userUsage)
	}
	cfg, _, _, db, err := openForAudit(*dataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	defs, err := rbac.ParseRoles(cfg.RBAC.Roles)
	if err != nil {
		return err
	}
	userID := pos[0]
	if !strings.HasPrefix(userID, "@") {
		userID = "@" + strings.ToLower(userID) + ":" + cfg.ServerName
	}
	ctx := cliContext()
	acc, err := storage.GetAccount(ctx, db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("no such user %s", userID)
	} else if err != nil {
		return err
	}
	explicit, err := storage.UserRoles(ctx, db, userID)
	if err != nil {
		return err
	}
	current := rbac.EffectiveRoles(explicit, acc.IsAdmin, acc.IsGuest, cfg.RBAC.DefaultRole)
	var want []string
	switch {
	case *add != "":
		want = append(slices.Clone(explicit), *add)
		if acc.IsAdmin {
			want = append(want, rbac.RoleAdmin)
		}
	case *remove != "":
		want = slices.DeleteFunc(slices.Clone(explicit), func(r string) bool { return r == *remove })
		if acc.IsAdmin && *remove != rbac.RoleAdmin {
			want = append(want, rbac.RoleAdmin)
		}
	case len(pos) == 1:
		fmt.Printf("%s: %s\n", userID, strings.Join(current, ", "))
		return nil
	default:
		for _, p := range pos[1:] {
			want = append(want, strings.Split(p, ",")...)
		}
	}
	var after []string
	err = db.WithTx(ctx, func(tx *storage.Tx) error {
		_, after, err = rbac.SetRoles(ctx, server.RBACAudit(nil), tx, defs, cfg.RBAC.DefaultRole, userID, want, "", nil)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s (was %s)\n", userID, strings.Join(after, ", "), strings.Join(current, ", "))
	fmt.Println("a running server applies the change within 10 seconds")
	return nil
}
