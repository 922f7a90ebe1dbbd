package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"enclave/internal/httpapi"
	"enclave/internal/pushrules"
	pushnotify "enclave/internal/pushrules/notifier"
	"enclave/storage"
	"enclave/syncapi"
)

func (ad *accountData) getAllPushRules(r *http.Request, dev *httpapi.Device) httpapi.Response {
	rs, err := pushnotify.UserRuleset(r.Context(), ad.db, dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{"global": rs})
}

func (ad *accountData) getGlobalPushRules(r *http.Request, dev *httpapi.Device) httpapi.Response {
	rs, err := pushnotify.UserRuleset(r.Context(), ad.db, dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, rs)
}

// ruleTarget checks scope and kind of a push rule path.
func ruleTarget(r *http.Request) (pushrules.Kind, string, httpapi.Response, bool) {
	v := httpapi.Vars(r)
	if v["scope"] != "global" {
		return "", "", httpapi.InvalidParam("unknown push rule scope %q: only global is supported", v["scope"]), false
	}
	k, ok := pushrules.ParseKind(v["kind"])
	if !ok {
		return "", "", httpapi.InvalidParam("unknown push rule kind %q", v["kind"]), false
	}
	return k, v["ruleId"], httpapi.Response{}, true
}

// findRule resolves a path to an existing rule of the user's rule set.
func (ad *accountData) findRule(r *http.Request, dev *httpapi.Device) (*pushrules.Rule, httpapi.Response, bool) {
	k, id, resp, ok := ruleTarget(r)
	if !ok {
		return nil, resp, false
	}
	rs, err := pushnotify.UserRuleset(r.Context(), ad.db, dev.UserID)
	if err != nil {
		return nil, httpapi.InternalError(r, err), false
	}
	rule := rs.Find(k, id)
	if rule == nil {
		return nil, httpapi.NotFound("push rule not found"), false
	}
	return rule, httpapi.Response{}, true
}

func (ad *accountData) getPushRule(r *http.Request, dev *httpapi.Device) httpapi.Response {
	rule, resp, ok := ad.findRule(r, dev)
	if !ok {
		return resp
	}
	return httpapi.JSON(200, rule)
}

func (ad *accountData) getPushRuleEnabled(r *http.Request, dev *httpapi.Device) httpapi.Response {
	rule, resp, ok := ad.findRule(r, dev)
	if !ok {
		return resp
	}
	return httpapi.JSON(200, map[string]bool{"enabled": rule.Enabled})
}

func (ad *accountData) getPushRuleActions(r *http.Request, dev *httpapi.Device) httpapi.Response {
	rule, resp, ok := ad.findRule(r, dev)
	if !ok {
		return resp
	}
	actions := rule.Actions
	if actions == nil {
		actions = []any{}
	}
	return httpapi.JSON(200, map[string]any{"actions": actions})
}

// changeRules runs fn in a transaction and records a push rules change,
// so /sync sends the new m.push_rules to the user's clients.
func (ad *accountData) changeRules(ctx context.Context, userID string, fn func(tx *storage.Tx) error) error {
	return ad.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		pos, err := storage.PutAccountData(ctx, tx, userID, "", syncapi.PushRulesType, json.RawMessage("{}"))
		if err != nil {
			return err
		}
		tx.Publish(pos, func() { ad.sync.NotifyUsers(userID) })
		return nil
	})
}

func (ad *accountData) putPushRule(r *http.Request, dev *httpapi.Device) httpapi.Response {
	k, id, resp, ok := ruleTarget(r)
	if !ok {
		return resp
	}
	if pushrules.IsServerDefault(id) {
		return httpapi.InvalidParam("rule IDs starting with '.' are reserved for server-default rules")
	}
	if id == "" || strings.ContainsAny(id, "/\\") {
		return httpapi.InvalidParam("rule IDs may not contain slashes or backslashes")
	}
	body, resp, ok := httpapi.ReadJSONObject(r)
	if !ok {
		return resp
	}
	stored, err := pushrules.ValidateBody(k, body)
	if errors.Is(err, pushrules.ErrMissingPattern) {
		return httpapi.MissingParam("%v", err)
	} else if err != nil {
		return httpapi.InvalidParam("%v", err)
	}
	q := r.URL.Query()
	before, after := q.Get("before"), q.Get("after")
	if pushrules.IsServerDefault(before) || pushrules.IsServerDefault(after) {
		return httpapi.Errf(400, "M_UNKNOWN", "rules cannot be placed relative to server-default rules")
	}
	err = ad.changeRules(r.Context(), dev.UserID, func(tx *storage.Tx) error {
		return storage.PutUserPushRule(r.Context(), tx, dev.UserID, string(k), id, stored, before, after)
	})
	if errors.Is(err, storage.ErrRuleNotFound) {
		return httpapi.Errf(400, "M_UNKNOWN", "before/after rule not found: %v", err)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}

func (ad *accountData) deletePushRule(r *http.Request, dev *httpapi.Device) httpapi.Response {
	k, id, resp, ok := ruleTarget(r)
	if !ok {
		return resp
	}
	if pushrules.IsServerDefault(id) {
		return httpapi.InvalidParam("server-default rules cannot be deleted (disable them instead)")
	}
	found := false
	err := ad.changeRules(r.Context(), dev.UserID, func(tx *storage.Tx) error {
		var err error
		if found, err = storage.DeletePushRule(r.Context(), tx, dev.UserID, string(k), id); err != nil {
			return err
		}
		if !found {
			return storage.ErrNotFound // roll back the change marker
		}
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("push rule not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}

func (ad *accountData) putPushRuleEnabled(r *http.Request, dev *httpapi.Device) httpapi.Response {
	rule, resp, ok := ad.findRule(r, dev)
	if !ok {
		return resp
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if body.Enabled == nil {
		return httpapi.MissingParam("enabled is required")
	}
	err := ad.changeRules(r.Context(), dev.UserID, func(tx *storage.Tx) error {
		return storage.SetPushRuleEnabled(r.Context(), tx, dev.UserID, string(rule.Kind), rule.RuleID, *body.Enabled)
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}

func (ad *accountData) putPushRuleActions(r *http.Request, dev *httpapi.Device) httpapi.Response {
	rule, resp, ok := ad.findRule(r, dev)
	if !ok {
		return resp
	}
	var body struct {
		Actions []any `json:"actions"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if err := pushrules.ValidateActions(body.Actions); err != nil {
		return httpapi.InvalidParam("%v", err)
	}
	// A user rule keeps its conditions or pattern; a default rule's row
	// records only the new actions.
	nb := pushrules.Body{Actions: body.Actions}
	if !rule.Default {
		switch rule.Kind {
		case pushrules.Override, pushrules.Underride:
			nb.Conditions = rule.Conditions
			if nb.Conditions == nil {
				nb.Conditions = []pushrules.Condition{}
			}
		case pushrules.Content:
			p := rule.Pattern
			nb.Pattern = &p
		}
	}
	stored, _ := json.Marshal(nb)
	err := ad.changeRules(r.Context(), dev.UserID, func(tx *storage.Tx) error {
		return storage.SetPushRuleActions(r.Context(), tx, dev.UserID, string(rule.Kind), rule.RuleID, stored)
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}

// Pushers are stored and listed; this server never contacts push
// gateways, so no push is delivered.

const (
	maxPushKeyBytes = 512
	maxAppIDChars   = 64
)

func (ad *accountData) getPushers(r *http.Request, dev *httpapi.Device) httpapi.Response {
	ps, err := storage.Pushers(r.Context(), ad.db, dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if ps == nil {
		ps = []*storage.Pusher{}
	}
	return httpapi.JSON(200, map[string]any{"pushers": ps})
}

func (ad *accountData) setPusher(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var body struct {
		PushKey           string          `json:"pushkey"`
		Kind              json.RawMessage `json:"kind"`
		AppID             string          `json:"app_id"`
		AppDisplayName    string          `json:"app_display_name"`
		DeviceDisplayName string          `json:"device_display_name"`
		ProfileTag        string          `json:"profile_tag"`
		Lang              string          `json:"lang"`
		Data              json.RawMessage `json:"data"`
		Append            bool            `json:"append"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if body.PushKey == "" || body.AppID == "" {
		return httpapi.MissingParam("pushkey and app_id are required")
	}
	if len(body.PushKey) > maxPushKeyBytes || len([]rune(body.AppID)) > maxAppIDChars {
		return httpapi.InvalidParam("pushkey is limited to %d bytes and app_id to %d characters", maxPushKeyBytes, maxAppIDChars)
	}
	if len(body.Kind) == 0 {
		return httpapi.MissingParam("kind is required (null deletes the pusher)")
	}
	var kind *string
	if err := json.Unmarshal(body.Kind, &kind); err != nil {
		return httpapi.BadJSON("kind must be a string or null")
	}
	if kind == nil {
		if err := storage.DeletePusher(r.Context(), ad.db, dev.UserID, body.AppID, body.PushKey); err != nil {
			return httpapi.InternalError(r, err)
		}
		return httpapi.JSON(200, map[string]any{})
	}
	var missing []string
	for name, v := range map[string]string{"app_display_name": body.AppDisplayName, "device_display_name": body.DeviceDisplayName, "lang": body.Lang} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(body.Data) == 0 || string(body.Data) == "null" {
		missing = append(missing, "data")
	}
	if len(missing) > 0 {
		return httpapi.MissingParam("missing parameters: %s", strings.Join(missing, ", "))
	}
	var data struct {
		URL    *string `json:"url"`
		Format *string `json:"format"`
	}
	if err := json.Unmarshal(body.Data, &data); err != nil {
		return httpapi.BadJSON("data must be an object")
	}
	switch *kind {
	case "http":
		if data.URL == nil {
			return httpapi.MissingParam("data.url is required for http pushers")
		}
		u, err := url.Parse(*data.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.Path != "/_matrix/push/v1/notify" {
			return httpapi.InvalidParam("data.url must be an https URL with the path /_matrix/push/v1/notify")
		}
		if data.Format != nil && *data.Format != "event_id_only" {
			return httpapi.InvalidParam("data.format must be event_id_only")
		}
	case "email":
	default:
		return httpapi.InvalidParam("kind must be http, email or null")
	}
	p := &storage.Pusher{UserID: dev.UserID, AppID: body.AppID, PushKey: body.PushKey, Kind: *kind, AppDisplayName: body.AppDisplayName,
		DeviceDisplayName: body.DeviceDisplayName, ProfileTag: body.ProfileTag, Lang: body.Lang, Data: body.Data, DeviceID: dev.DeviceID,
		CreatedTS: time.Now().UnixMilli()}
	if err := storage.PutPusher(r.Context(), ad.db, p, body.Append); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}

// copyRoomPushRules gives userID, for newRoom, the rules they set for
// oldRoom (the room's own rule and any rule whose conditions name the
// room), as the spec's room upgrade asks: a muted room stays muted in its
// replacement. A rule already set for newRoom is kept as it is.
func (ad *accountData) copyRoomPushRules(ctx context.Context, userID, oldRoom, newRoom string) error {
	rows, err := storage.PushRules(ctx, ad.db, userID)
	if err != nil {
		return err
	}
	type copied struct {
		kind, id string
		body     json.RawMessage
		disabled bool
	}
	have := map[string]bool{}
	for _, r := range rows {
		have[r.Kind+"\x00"+r.RuleID] = true
	}
	var out []copied
	for _, r := range rows {
		if pushrules.IsServerDefault(r.RuleID) || r.Body == nil {
			continue
		}
		var body map[string]any
		if json.Unmarshal(r.Body, &body) != nil {
			continue
		}
		named := r.Kind == "room" && r.RuleID == oldRoom
		conds, _ := body["conditions"].([]any)
		for _, c := range conds {
			if cm, ok := c.(map[string]any); ok && cm["pattern"] == oldRoom {
				cm["pattern"] = newRoom
				named = true
			}
		}
		newID := strings.ReplaceAll(r.RuleID, oldRoom, newRoom)
		if !named || newID == r.RuleID || have[r.Kind+"\x00"+newID] {
			continue
		}
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		out = append(out, copied{kind: r.Kind, id: newID, body: b, disabled: r.Enabled != nil && !*r.Enabled})
	}
	if len(out) == 0 {
		return nil
	}
	return ad.changeRules(ctx, userID, func(tx *storage.Tx) error {
		for _, c := range out {
			if err := storage.PutUserPushRule(ctx, tx, userID, c.kind, c.id, c.body, "", ""); err != nil {
				return err
			}
			if c.disabled {
				if err := storage.SetPushRuleEnabled(ctx, tx, userID, c.kind, c.id, false); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
