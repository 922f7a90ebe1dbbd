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

// threadSubscription is MSC4306's condition (unstable name): the event is
// in a thread the user is (or is not) subscribed to.
func threadSubscription(subscribed bool) Condition {
	return Condition{Kind: ThreadSubscriptionCondition, Subscribed: &subscribed}
}

// ThreadSubscriptionCondition is the unstable kind of MSC4306's condition.
const ThreadSubscriptionCondition = "io.element.msc4306.thread_subscription"

// pollRules are MSC3930's underride rules for one pair of poll event types
// (start, end) under one rule ID prefix: each mirrors the m.room.message
// rule it sits beside, one-to-one rooms first.
func pollRules(prefix, start, end string) []*Rule {
	return []*Rule{
		rule(Underride, prefix+"poll_start_one_to_one", true, []Condition{memberCount("2"), match("type", start)}, notify(), sound("default")),
		rule(Underride, prefix+"poll_start", true, []Condition{match("type", start)}, notify()),
		rule(Underride, prefix+"poll_end_one_to_one", true, []Condition{memberCount("2"), match("type", end)}, notify(), sound("default")),
		rule(Underride, prefix+"poll_end", true, []Condition{match("type", end)}, notify()),
	}
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
			// MSC3930: poll responses (votes) never notify. Only the
			// unstable event type exists: the stable m.poll.response
			// matches no notifying rule anyway.
			rule(Override, ".org.matrix.msc3930.rule.poll_response", true, []Condition{match("type", "org.matrix.msc3381.poll.response")}),
		},
		Content: []*Rule{
			{Kind: Content, RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true, Pattern: localpart,
				Actions: []any{notify(), sound("default"), highlight()}},
		},
		// MSC4306 (unstable rule IDs, as Element and the MSC's tests
		// look them up): events in threads the user has not subscribed
		// to stay silent unless an override or content rule (a mention,
		// a keyword) notified first; subscribed threads always notify.
		PostContent: []*Rule{
			rule(PostContent, ".io.element.msc4306.rule.unsubscribed_thread", true, []Condition{threadSubscription(false)}),
			rule(PostContent, ".io.element.msc4306.rule.subscribed_thread", true, []Condition{threadSubscription(true)},
				notify(), sound("default")),
		},
		Room:      []*Rule{},
		Sender:    []*Rule{},
		Underride: underride(),
	}
}

func underride() []*Rule {
	out := []*Rule{
		rule(Underride, ".m.rule.call", true, []Condition{match("type", "m.call.invite")}, notify(), sound("ring")),
		rule(Underride, ".m.rule.encrypted_room_one_to_one", true, []Condition{
			memberCount("2"),
			match("type", "m.room.encrypted"),
		}, notify(), sound("default")),
		rule(Underride, ".m.rule.room_one_to_one", true, []Condition{
			memberCount("2"),
			match("type", "m.room.message"),
		}, notify(), sound("default")),
	}
	// MSC3930 polls: the stable rules for m.poll.* and the unstable ones
	// for org.matrix.msc3381.poll.*, which Element still sends.
	out = append(out, pollRules(".m.rule.", "m.poll.start", "m.poll.end")...)
	out = append(out, pollRules(".org.matrix.msc3930.rule.", "org.matrix.msc3381.poll.start", "org.matrix.msc3381.poll.end")...)
	return append(out,
		rule(Underride, ".m.rule.message", true, []Condition{match("type", "m.room.message")}, notify()),
		rule(Underride, ".m.rule.encrypted", true, []Condition{match("type", "m.room.encrypted")}, notify()),
	)
}

// legacyMentionRules are deprecated since v1.7 and only apply to events
// without an m.mentions property.
var legacyMentionRules = map[string]bool{
	".m.rule.contains_display_name": true,
	".m.rule.roomnotif":             true,
	".m.rule.contains_user_name":    true,
}
