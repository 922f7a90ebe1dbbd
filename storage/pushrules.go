package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// Push rules and pushers.
//
//   - push_rules: a user's own rules and their changes to server-default
//     rules (rule IDs starting with "."), which are not stored otherwise.
//     body is the rule's JSON (actions, conditions, pattern); NULL for a
//     default rule whose actions are unchanged. enabled NULL = unchanged.
//     position orders a kind's user rules (lowest first = most important).
//   - pushers: where a user asked for pushes. Stored and listed only: this
//     server never contacts push gateways.
const pushrulesV1 = `
CREATE TABLE push_rules (
	user_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	rule_id TEXT NOT NULL,
	position BIGINT NOT NULL DEFAULT 0,
	body TEXT,
	enabled BOOLEAN,
	PRIMARY KEY (user_id, kind, rule_id)
);
CREATE TABLE pushers (
	user_id TEXT NOT NULL,
	app_id TEXT NOT NULL,
	pushkey TEXT NOT NULL,
	kind TEXT NOT NULL,
	app_display_name TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag TEXT NOT NULL DEFAULT '',
	lang TEXT NOT NULL,
	data TEXT NOT NULL,
	device_id TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers(user_id, device_id)`

// cleanupPushers is a device cleanup (see cleanupDevices): a device's
// pushers go with it (logout, device deletion).
func cleanupPushers(ctx context.Context, q Querier, userID string, deviceIDs []string) error {
	for _, d := range deviceIDs {
		if _, err := q.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND device_id = $2`, userID, d); err != nil {
			return err
		}
	}
	return nil
}

// PushRuleRow is one row of push_rules.
type PushRuleRow struct {
	Kind     string
	RuleID   string
	Position int64
	Body     json.RawMessage // nil = unchanged default actions
	Enabled  *bool
}

// PushRules lists a user's rows, each kind's in priority order.
func PushRules(ctx context.Context, q Querier, userID string) ([]PushRuleRow, error) {
	m, err := PushRulesMany(ctx, q, []string{userID})
	return m[userID], err
}

// PushRulesMany loads the rows of several users in one query per 500.
func PushRulesMany(ctx context.Context, q Querier, users []string) (map[string][]PushRuleRow, error) {
	out := map[string][]PushRuleRow{}
	err := chunkedIn(users, func(args []any, ph string) error {
		rows, err := q.QueryContext(ctx, `SELECT user_id, kind, rule_id, position, body, enabled FROM push_rules WHERE user_id IN (`+ph+`)
			ORDER BY user_id, kind, position, rule_id`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u string
			var r PushRuleRow
			var body sql.NullString
			var en sql.NullBool
			if err := rows.Scan(&u, &r.Kind, &r.RuleID, &r.Position, &body, &en); err != nil {
				return err
			}
			if body.Valid {
				r.Body = json.RawMessage(body.String)
			}
			if en.Valid {
				b := en.Bool
				r.Enabled = &b
			}
			out[u] = append(out[u], r)
		}
		return rows.Err()
	})
	return out, err
}

func nullBody(b json.RawMessage) sql.NullString {
	return sql.NullString{String: string(b), Valid: b != nil}
}

// ErrRuleNotFound is returned for before/after rules that do not exist.
var ErrRuleNotFound = errors.New("push rule not found")

// PutUserPushRule creates or replaces a user-defined rule inside tx.
// A new rule goes first among the kind's user rules unless before or
// after (user-defined rule IDs of the same kind) place it; an existing
// rule keeps its place (and its enabled state) unless they are given.
func PutUserPushRule(ctx context.Context, tx *Tx, userID, kind, ruleID string, body json.RawMessage, before, after string) error {
	rows, err := PushRules(ctx, tx, userID)
	if err != nil {
		return err
	}
	var order []string
	exists := false
	for _, r := range rows {
		if r.Kind != kind || (len(r.RuleID) > 0 && r.RuleID[0] == '.') {
			continue
		}
		if r.RuleID == ruleID {
			exists = true
			continue
		}
		order = append(order, r.RuleID)
	}
	idx := func(id string) int {
		for i, o := range order {
			if o == id {
				return i
			}
		}
		return -1
	}
	at := -1
	switch {
	case before != "":
		if at = idx(before); at < 0 {
			return fmt.Errorf("%w: %s", ErrRuleNotFound, before)
		}
	case after != "":
		i := idx(after)
		if i < 0 {
			return fmt.Errorf("%w: %s", ErrRuleNotFound, after)
		}
		at = i + 1
	case !exists:
		at = 0
	}
	if exists {
		if _, err := tx.ExecContext(ctx, `UPDATE push_rules SET body = $1 WHERE user_id = $2 AND kind = $3 AND rule_id = $4`, string(body), userID, kind, ruleID); err != nil {
			return err
		}
	} else {
		if _, err := tx.ExecContext(ctx, `INSERT INTO push_rules (user_id, kind, rule_id, position, body, enabled) VALUES ($1, $2, $3, 0, $4, TRUE)`,
			userID, kind, ruleID, string(body)); err != nil {
			return err
		}
	}
	if at < 0 {
		return nil // an existing rule keeping its place
	}
	order = append(order[:at], append([]string{ruleID}, order[at:]...)...)
	for i, id := range order {
		if _, err := tx.ExecContext(ctx, `UPDATE push_rules SET position = $1 WHERE user_id = $2 AND kind = $3 AND rule_id = $4`, i, userID, kind, id); err != nil {
			return err
		}
	}
	return nil
}

// SetPushRuleEnabled records enabled for a rule (a default rule's row is
// created on first change).
func SetPushRuleEnabled(ctx context.Context, q Querier, userID, kind, ruleID string, enabled bool) error {
	_, err := q.ExecContext(ctx, `INSERT INTO push_rules (user_id, kind, rule_id, position, body, enabled) VALUES ($1, $2, $3, 0, NULL, $4)
		ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET enabled = excluded.enabled`, userID, kind, ruleID, enabled)
	return err
}

// SetPushRuleActions replaces a rule's actions: a user rule's body is
// rewritten with them; a default rule's row stores {"actions": ...}.
func SetPushRuleActions(ctx context.Context, q Querier, userID, kind, ruleID string, body json.RawMessage) error {
	_, err := q.ExecContext(ctx, `INSERT INTO push_rules (user_id, kind, rule_id, position, body, enabled) VALUES ($1, $2, $3, 0, $4, NULL)
		ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET body = excluded.body`, userID, kind, ruleID, nullBody(body))
	return err
}

// DeletePushRule removes a user rule; false if there was none.
func DeletePushRule(ctx context.Context, q Querier, userID, kind, ruleID string) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3`, userID, kind, ruleID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// Pusher is one row of pushers.
type Pusher struct {
	UserID            string          `json:"-"`
	AppID             string          `json:"app_id"`
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
	DeviceID          string          `json:"-"`
	CreatedTS         int64           `json:"-"`
}

// PutPusher creates or replaces a pusher; without appendMode the same
// app_id and pushkey registered by other users are removed.
func PutPusher(ctx context.Context, q Querier, p *Pusher, appendMode bool) error {
	if !appendMode {
		if _, err := q.ExecContext(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`, p.AppID, p.PushKey, p.UserID); err != nil {
			return err
		}
	}
	_, err := q.ExecContext(ctx, `INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, device_id, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind, app_display_name = excluded.app_display_name,
			device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
			device_id = excluded.device_id`,
		p.UserID, p.AppID, p.PushKey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data), p.DeviceID, p.CreatedTS)
	return err
}

// DeletePusher removes the user's pusher with this app_id and pushkey.
func DeletePusher(ctx context.Context, q Querier, userID, appID, pushKey string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushKey)
	return err
}

// Pushers lists a user's pushers.
func Pushers(ctx context.Context, q Querier, userID string) ([]*Pusher, error) {
	rows, err := q.QueryContext(ctx, `SELECT app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, device_id, created_ts
		FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Pusher
	for rows.Next() {
		p := &Pusher{UserID: userID}
		var data string
		if err := rows.Scan(&p.AppID, &p.PushKey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data, &p.DeviceID, &p.CreatedTS); err != nil {
			return nil, err
		}
		p.Data = json.RawMessage(data)
		out = append(out, p)
	}
	return out, rows.Err()
}
