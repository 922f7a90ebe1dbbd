package pushrules

import (
	"encoding/json"
	"strings"
)

// Actions used by the default rules.
func notify() any { return "notify" }
func sound(v string) any {
	return map[string]any{"set_tweak": "sound", "value": v}
}
func highlight() any { return map[string]any{"set_tweak": "highlight"} }

func match(key, pattern string) Condition {
	p := pattern
	return Condition{Kind: "event_match", Key: key, Pattern: &p}
}

func propertyIs(key string, value any) Condition {
	b, _ := json.Marshal(value)
	return Condition{Kind: "event_property_is", Key: key, Value: b}
}

func propertyContains(key string, value any) Condition {
	b, _ := json.Marshal(value)
	return Condition{Kind: "event_property_contains", Key: key, Value: b}
}

func memberCount(is string) Condition { return Condition{Kind: "room_member_count", Is: is} }

func senderPermission(key string) Condition {
	return Condition{Kind: "sender_notification_permission", Key: key}
}

func rule(k Kind, id string, enabled bool, conds []Condition, actions ...any) *Rule {
	if actions == nil {
		actions = []any{}
	}
	return &Rule{Kind: k, RuleID: id, Default: true, Enabled: enabled, Conditions: conds, Actions: actions}
}

// Defaults returns the spec's predefined ("server-default") rules for
// userID, in the spec's order (Client-Server API, "Predefined Rules").
func Defaults(userID string) *Ruleset {
	localpart := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	return &Ruleset{
		Override: []*Rule{
			rule(Override, ".m.rule.master", false, []Condition{}),
			rule(Override, ".m.rule.suppress_notices", true, []Condition{match("content.msgtype", "m.notice")}),
			rule(Override, ".m.rule.invite_for_me", true, []Condition{
				match("type", "m.room.member"),
				match("content.membership", "invite"),
				match("state_key", userID),
			}, notify(), sound("default")),
			rule(Override, ".m.rule.member_event", true, []Condition{match("type", "m.room.member")}),
			rule(Override, ".m.rule.is_user_mention", true, []Condition{
				propertyContains(`content.m\.mentions.user_ids`, userID),
			}, notify(), sound("default"), highlight()),
			rule(Override, ".m.rule.contains_display_name", true, []Condition{{Kind: "contains_display_name"}},
				notify(), sound("default"), highlight()),
			rule(Override, ".m.rule.is_room_mention", true, []Condition{
				propertyIs(`content.m\.mentions.room`, true),
				senderPermission("room"),
			}, notify(), highlight()),
			rule(Override, ".m.rule.roomnotif", true, []Condition{
				match("content.body", "@room"),
				senderPermission("room"),
			}, notify(), highlight()),
			rule(Override, ".m.rule.tombstone", true, []Condition{
				match("type", "m.room.tombstone"),
				match("state_key", ""),
			}, notify(), highlight()),
			rule(Override, ".m.rule.reaction", true, []Condition{match("type", "m.reaction")}),
			rule(Override, ".m.rule.room.server_acl", true, []Condition{
				match("type", "m.room.server_acl"),
				match("state_key", ""),
			}),
			rule(Override, ".m.rule.suppress_edits", true, []Condition{
				propertyIs(`content.m\.relates_to.rel_type`, "m.replace"),
			}),
		},
		Content: []*Rule{
			{Kind: Content, RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true, Pattern: localpart,
				Actions: []any{notify(), sound("default"), highlight()}},
		},
		Room:   []*Rule{},
		Sender: []*Rule{},
		Underride: []*Rule{
			rule(Underride, ".m.rule.call", true, []Condition{match("type", "m.call.invite")}, notify(), sound("ring")),
			rule(Underride, ".m.rule.encrypted_room_one_to_one", true, []Condition{
				memberCount("2"),
				match("type", "m.room.encrypted"),
			}, notify(), sound("default")),
			rule(Underride, ".m.rule.room_one_to_one", true, []Condition{
				memberCount("2"),
				match("type", "m.room.message"),
			}, notify(), sound("default")),
			rule(Underride, ".m.rule.message", true, []Condition{match("type", "m.room.message")}, notify()),
			rule(Underride, ".m.rule.encrypted", true, []Condition{match("type", "m.room.encrypted")}, notify()),
		},
	}
}

// legacyMentionRules are deprecated since v1.7 and only apply to events
// without an m.mentions property.
var legacyMentionRules = map[string]bool{
	".m.rule.contains_display_name": true,
	".m.rule.roomnotif":             true,
	".m.rule.contains_user_name":    true,
}
