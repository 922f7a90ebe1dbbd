package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Profiles live in the accounts table (displayname, avatar_url); these are
// the profile module's reads. Writes use SetAccountDisplayName and
// SetAccountAvatarURL.

// Profile is a local user's global profile ("" = unset).
type Profile struct {
	DisplayName string
	AvatarURL   string
}

// GetProfile loads a local user's profile, or ErrNotFound for users that
// do not exist (deactivated users keep whatever was not erased).
func GetProfile(ctx context.Context, q Querier, userID string) (*Profile, error) {
	var dn, av sql.NullString
	err := q.QueryRowContext(ctx, `SELECT displayname, avatar_url FROM accounts WHERE user_id = $1`, userID).Scan(&dn, &av)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &Profile{DisplayName: dn.String, AvatarURL: av.String}, nil
}

// PublicProfile is a profile as served over federation: nil fields are
// unset (NULL), "" fields were set to empty.
type PublicProfile struct {
	DisplayName *string
	AvatarURL   *string
}

// GetActiveProfile loads the profile of a local user that exists and is not
// deactivated, or ErrNotFound.
func GetActiveProfile(ctx context.Context, q Querier, userID string) (*PublicProfile, error) {
	var p PublicProfile
	err := q.QueryRowContext(ctx, `SELECT displayname, avatar_url FROM accounts WHERE user_id = $1 AND deactivated = FALSE`, userID).Scan(&p.DisplayName, &p.AvatarURL)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// SharesRoom reports whether two users are both joined to (or invited to)
// some room: the test for seeing each other's profile and presence.
func SharesRoom(ctx context.Context, q Querier, a, b string) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM current_state x JOIN current_state y ON y.room_id = x.room_id
		WHERE x.state_key = $1 AND x.type = 'm.room.member' AND x.membership IN ('join', 'invite')
		AND y.state_key = $2 AND y.type = 'm.room.member' AND y.membership IN ('join', 'invite') LIMIT 1`, a, b).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}
