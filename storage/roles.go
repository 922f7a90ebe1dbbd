package storage

import (
	"context"
	"sort"
)

// Server roles (RBAC): user_roles holds the roles granted explicitly to a
// user. "admin" is not stored here: it is accounts.is_admin, so that the
// Synapse-compatible admin flag and the role can never disagree. A user
// with no rows gets the configured default role (guests get "guest").
const rolesV1 = `
CREATE TABLE user_roles (
	user_id TEXT NOT NULL,
	role TEXT NOT NULL,
	granted_by TEXT NOT NULL DEFAULT '',
	granted_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, role)
)`

// AdminRole is the role that mirrors accounts.is_admin.
const AdminRole = "admin"

// UserRoles returns the roles explicitly granted to a user (sorted, never
// including AdminRole).
func UserRoles(ctx context.Context, q Querier, userID string) ([]string, error) {
	return queryStrings(ctx, q, `SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role`, userID)
}

// SetUserRoles replaces the user's roles with roles: AdminRole sets
// accounts.is_admin, the others become user_roles rows. Run it in a
// transaction (with its audit record).
func SetUserRoles(ctx context.Context, q Querier, userID string, roles []string, by string, ts int64) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM user_roles WHERE user_id = $1`, userID); err != nil {
		return err
	}
	admin := false
	seen := map[string]bool{}
	for _, r := range roles {
		if r == AdminRole {
			admin = true
			continue
		}
		if seen[r] {
			continue
		}
		seen[r] = true
		if _, err := q.ExecContext(ctx, `INSERT INTO user_roles (user_id, role, granted_by, granted_ts) VALUES ($1, $2, $3, $4)`, userID, r, by, ts); err != nil {
			return err
		}
	}
	return SetAdmin(ctx, q, userID, admin)
}

// UsersWithRole lists users holding role (AdminRole reads is_admin).
func UsersWithRole(ctx context.Context, q Querier, role string) ([]string, error) {
	if role == AdminRole {
		return queryStrings(ctx, q, `SELECT user_id FROM accounts WHERE is_admin = TRUE ORDER BY user_id`)
	}
	out, err := queryStrings(ctx, q, `SELECT user_id FROM user_roles WHERE role = $1 ORDER BY user_id`, role)
	sort.Strings(out)
	return out, err
}
