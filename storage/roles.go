package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
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

// Two-person rule for the roles that watch the others (RBAC): a grant of a
// role holding read_audit, export_audit or lift_legal_hold made through the
// admin API waits in role_grant_requests until a second admin approves it.
const rolesV2 = `
CREATE TABLE role_grant_requests (
	id TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	roles TEXT NOT NULL,
	requested_by TEXT NOT NULL,
	requested_ts BIGINT NOT NULL
)`

// RoleGrantRequest is a pending change of a user's roles.
type RoleGrantRequest struct {
	ID          string   `json:"id"`
	UserID      string   `json:"user_id"`
	Roles       []string `json:"roles"` // the user's full role list once approved
	RequestedBy string   `json:"requested_by"`
	RequestedTS int64    `json:"requested_ts"`
}

// InsertRoleGrantRequest stores a pending grant.
func InsertRoleGrantRequest(ctx context.Context, q Querier, g RoleGrantRequest) error {
	roles, err := json.Marshal(g.Roles)
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO role_grant_requests (id, user_id, roles, requested_by, requested_ts) VALUES ($1, $2, $3, $4, $5)`,
		g.ID, g.UserID, string(roles), g.RequestedBy, g.RequestedTS)
	return err
}

// TakeRoleGrantRequest removes and returns the pending grant id
// (ErrNotFound if there is none), so that it is applied at most once.
func TakeRoleGrantRequest(ctx context.Context, q Querier, id string) (*RoleGrantRequest, error) {
	var g RoleGrantRequest
	var roles string
	err := q.QueryRowContext(ctx, `DELETE FROM role_grant_requests WHERE id = $1 RETURNING id, user_id, roles, requested_by, requested_ts`, id).
		Scan(&g.ID, &g.UserID, &roles, &g.RequestedBy, &g.RequestedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &g, json.Unmarshal([]byte(roles), &g.Roles)
}

// ListRoleGrantRequests returns the pending grants, oldest first.
func ListRoleGrantRequests(ctx context.Context, q Querier) ([]RoleGrantRequest, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, user_id, roles, requested_by, requested_ts FROM role_grant_requests ORDER BY requested_ts, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []RoleGrantRequest{}
	for rows.Next() {
		var g RoleGrantRequest
		var roles string
		if err := rows.Scan(&g.ID, &g.UserID, &roles, &g.RequestedBy, &g.RequestedTS); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(roles), &g.Roles); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}
