package rbac

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"enclave/internal/perm"
	"enclave/storage"
)

// AuditAction names what an AuditEntry records.
type AuditAction int

const (
	// AuditRoleChange: the actor set Target's roles (Details "from", "to").
	AuditRoleChange AuditAction = iota
	// AuditAccessDenied: the actor's request on Target (a path) was refused.
	AuditAccessDenied
)

// AuditEntry is an RBAC decision for the audit trail.
type AuditEntry struct {
	Action           AuditAction
	UserID, DeviceID string // the actor ("" user: the command line)
	Target           string
	Details          map[string]any
}

// Recorder writes an AuditEntry with q (the transaction of the change it
// records, or the store). RBAC is given one rather than the audit log so
// that it depends on no component: the assembly maps entries onto the log.
type Recorder func(ctx context.Context, q storage.Querier, e AuditEntry) error

// RBAC resolves users' roles and permissions.
type RBAC struct {
	db          *storage.DB
	audit       Recorder // role changes and refusals are recorded
	roles       Roles
	defaultRole string

	mu    sync.Mutex
	cache map[string]cachedRoles

	blockedMu sync.RWMutex
	blocked   map[string]bool // room ID -> purged
}

type cachedRoles struct {
	roles []string
	perms map[perm.Permission]bool
	at    time.Time
}

// cacheTTL bounds how long a role change made by another process (the
// CLI) takes to apply here; changes in this process apply at once.
const cacheTTL = 10 * time.Second

// New loads the role definitions (built-in plus config's custom roles) and
// the blocked rooms.
func New(ctx context.Context, db *storage.DB, audit Recorder, custom []string, defaultRole string) (*RBAC, error) {
	roles, err := ParseRoles(custom)
	if err != nil {
		return nil, err
	}
	if defaultRole == "" {
		defaultRole = RoleUser
	}
	if _, ok := roles[defaultRole]; !ok {
		return nil, fmt.Errorf("rbac.default_role: unknown role %q", defaultRole)
	}
	z := &RBAC{db: db, audit: audit, roles: roles, defaultRole: defaultRole, cache: map[string]cachedRoles{}, blocked: map[string]bool{}}
	blocks, err := storage.ListRoomBlocks(ctx, db)
	if err != nil {
		return nil, err
	}
	for _, b := range blocks {
		z.blocked[b.RoomID] = b.Purged
	}
	return z, nil
}

// Definitions returns the role definitions.
func (z *RBAC) Definitions() Roles { return z.roles }

// DefaultRole is the role of users without one.
func (z *RBAC) DefaultRole() string { return z.defaultRole }

// EffectiveRoles computes a user's roles from their explicit roles and
// account flags: admin if flagged admin, and when nothing else is
// assigned, guest for guests or the default role.
func EffectiveRoles(explicit []string, isAdmin, isGuest bool, defaultRole string) []string {
	out := append([]string(nil), explicit...)
	if isAdmin && !slices.Contains(out, RoleAdmin) {
		out = append(out, RoleAdmin)
	}
	if len(out) == 0 {
		if isGuest {
			out = []string{RoleGuest}
		} else {
			out = []string{defaultRole}
		}
	}
	sort.Strings(out)
	return out
}

// UserRoles returns a user's effective roles.
func (z *RBAC) UserRoles(ctx context.Context, userID string) ([]string, error) {
	c, err := z.load(ctx, userID)
	if err != nil {
		return nil, err
	}
	return c.roles, nil
}

// Can reports whether the user holds permission p.
func (z *RBAC) Can(ctx context.Context, userID string, p perm.Permission) (bool, error) {
	c, err := z.load(ctx, userID)
	if err != nil {
		return false, err
	}
	return c.perms[p], nil
}

func (z *RBAC) load(ctx context.Context, userID string) (cachedRoles, error) {
	z.mu.Lock()
	c, ok := z.cache[userID]
	z.mu.Unlock()
	if ok && time.Since(c.at) < cacheTTL {
		return c, nil
	}
	acc, err := storage.GetAccount(ctx, z.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		acc = &storage.Account{UserID: userID}
	} else if err != nil {
		return cachedRoles{}, err
	}
	explicit, err := storage.UserRoles(ctx, z.db, userID)
	if err != nil {
		return cachedRoles{}, err
	}
	c = cachedRoles{roles: EffectiveRoles(explicit, acc.IsAdmin, acc.IsGuest, z.defaultRole), perms: map[perm.Permission]bool{}, at: time.Now()}
	for _, r := range c.roles {
		for p := range z.roles[r] {
			c.perms[p] = true
		}
	}
	z.mu.Lock()
	if len(z.cache) > 100000 {
		z.cache = map[string]cachedRoles{}
	}
	z.cache[userID] = c
	z.mu.Unlock()
	return c, nil
}

// Invalidate forgets a user's cached roles (after their roles or admin
// flag changed).
func (z *RBAC) Invalidate(userID string) {
	z.mu.Lock()
	delete(z.cache, userID)
	z.mu.Unlock()
}

// ErrUnknownRole is returned for roles that are not defined.
var ErrUnknownRole = errors.New("unknown role")

// SetRoles replaces a user's roles inside tx and records the change in the
// audit trail (same transaction). by is who made the change ("" for the
// command line). It returns the roles before and after.
func (z *RBAC) SetRoles(ctx context.Context, tx *storage.Tx, userID string, roles []string, by string) (before, after []string, err error) {
	return SetRoles(ctx, z.audit, tx, z.roles, z.defaultRole, userID, roles, by, func() { z.Invalidate(userID) })
}

// ValidRoles checks that every role is defined and returns the list
// trimmed and without repeats (ErrUnknownRole otherwise).
func ValidRoles(defs Roles, roles []string) ([]string, error) {
	clean := []string{}
	for _, r := range roles {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if _, ok := defs[r]; !ok {
			return nil, fmt.Errorf("%w %q (defined: %s)", ErrUnknownRole, r, strings.Join(defs.Names(), ", "))
		}
		if !slices.Contains(clean, r) {
			clean = append(clean, r)
		}
	}
	return clean, nil
}

// SetRoles is RBAC.SetRoles for callers without a running server (the
// CLI, whose recorder writes the entry detached); onCommit runs after the
// transaction commits.
func SetRoles(ctx context.Context, audit Recorder, tx *storage.Tx, defs Roles, defaultRole, userID string, roles []string, by string, onCommit func()) (before, after []string, err error) {
	clean, err := ValidRoles(defs, roles)
	if err != nil {
		return nil, nil, err
	}
	acc, err := storage.GetAccount(ctx, tx, userID)
	if err != nil {
		return nil, nil, err
	}
	explicit, err := storage.UserRoles(ctx, tx, userID)
	if err != nil {
		return nil, nil, err
	}
	before = EffectiveRoles(explicit, acc.IsAdmin, acc.IsGuest, defaultRole)
	if err := storage.SetUserRoles(ctx, tx, userID, clean, by, time.Now().UnixMilli()); err != nil {
		return nil, nil, err
	}
	stored := slices.DeleteFunc(slices.Clone(clean), func(r string) bool { return r == storage.AdminRole })
	after = EffectiveRoles(stored, slices.Contains(clean, RoleAdmin), acc.IsGuest, defaultRole)
	err = audit(ctx, tx, AuditEntry{
		Action: AuditRoleChange, UserID: by, Target: userID,
		Details: map[string]any{"from": before, "to": after},
	})
	if err != nil {
		return nil, nil, err
	}
	if onCommit != nil {
		tx.AfterCommit(onCommit)
	}
	return before, after, nil
}

// WatchfulAdded returns the roles of roles that userID does not hold yet
// and that grant a watchful permission (perm.Watchful). Through the admin
// API such a grant waits for a second admin; the host's command line
// applies it at once.
func (z *RBAC) WatchfulAdded(ctx context.Context, q storage.Querier, userID string, roles []string) ([]string, error) {
	acc, err := storage.GetAccount(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	explicit, err := storage.UserRoles(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	held := EffectiveRoles(explicit, acc.IsAdmin, acc.IsGuest, z.defaultRole)
	var out []string
	for _, r := range roles {
		r = strings.TrimSpace(r)
		if slices.Contains(held, r) || slices.Contains(out, r) {
			continue
		}
		for _, p := range perm.Watchful {
			if z.roles[r][p] {
				out = append(out, r)
				break
			}
		}
	}
	return out, nil
}

// RoomBlocked reports whether the administrator blocked (or purged) a room.
func (z *RBAC) RoomBlocked(roomID string) (blocked, purged bool) {
	z.blockedMu.RLock()
	defer z.blockedMu.RUnlock()
	p, ok := z.blocked[roomID]
	return ok, p
}

// SetRoomBlocked updates the in-memory block list after the admin API
// changed room_blocks (call after commit).
func (z *RBAC) SetRoomBlocked(roomID string, blocked, purged bool) {
	z.blockedMu.Lock()
	defer z.blockedMu.Unlock()
	if blocked || purged {
		z.blocked[roomID] = z.blocked[roomID] || purged
	} else if !z.blocked[roomID] {
		delete(z.blocked, roomID)
	}
}
