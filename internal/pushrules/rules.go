package pushrules

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Kind is a push rule kind, in the order rules are checked.
type Kind string

const (
	Override Kind = "override"
	Content  Kind = "content"
	// PostContent (MSC4306) sits between content and room: thread
	// subscription rules must run after keyword mentions and before a
	// room's own "all messages" or "mentions only" rule. Only the server
	// defines rules of this kind.
	PostContent Kind = "postcontent"
	Room        Kind = "room"
	Sender      Kind = "sender"
	Underride   Kind = "underride"
)

// Kinds lists the kinds in evaluation order.
var Kinds = []Kind{Override, Content, PostContent, Room, Sender, Underride}

// ParseKind validates a kind from a URL.
func ParseKind(s string) (Kind, bool) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// Condition is one condition of an override or underride rule.
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Is      string          `json:"is,omitempty"`
	// Subscribed is the argument of MSC4306's thread_subscription
	// condition.
	Subscribed *bool `json:"subscribed,omitempty"`
}

// Rule is one push rule as the client API shows it.
type Rule struct {
	Kind       Kind
	RuleID     string
	Default    bool
	Enabled    bool
	Conditions []Condition // override / underride
	Pattern    string      // content
	Actions    []any
}

// MarshalJSON shows the fields the rule's kind has: conditions for
// override and underride rules (even when empty), pattern for content.
func (r *Rule) MarshalJSON() ([]byte, error) {
	m := map[string]any{
		"rule_id": r.RuleID,
		"default": r.Default,
		"enabled": r.Enabled,
		"actions": nonNilActions(r.Actions),
	}
	switch r.Kind {
	case Override, Underride, PostContent:
		c := r.Conditions
		if c == nil {
			c = []Condition{}
		}
		m["conditions"] = c
	case Content:
		m["pattern"] = r.Pattern
	}
	return json.Marshal(m)
}

func nonNilActions(a []any) []any {
	if a == nil {
		return []any{}
	}
	return a
}

// Ruleset is a user's complete global rule set, each kind in priority order.
type Ruleset struct {
	Override    []*Rule
	Content     []*Rule
	PostContent []*Rule
	Room        []*Rule
	Sender      []*Rule
	Underride   []*Rule
}

// MarshalJSON renders the spec's ruleset object.
func (rs *Ruleset) MarshalJSON() ([]byte, error) {
	f := func(rules []*Rule) []*Rule {
		if rules == nil {
			return []*Rule{}
		}
		return rules
	}
	return json.Marshal(map[string]any{
		"override":    f(rs.Override),
		"content":     f(rs.Content),
		"postcontent": f(rs.PostContent),
		"room":        f(rs.Room),
		"sender":      f(rs.Sender),
		"underride":   f(rs.Underride),
	})
}

// List returns the rules of one kind.
func (rs *Ruleset) List(k Kind) []*Rule {
	switch k {
	case Override:
		return rs.Override
	case Content:
		return rs.Content
	case PostContent:
		return rs.PostContent
	case Room:
		return rs.Room
	case Sender:
		return rs.Sender
	case Underride:
		return rs.Underride
	}
	return nil
}

func (rs *Ruleset) set(k Kind, rules []*Rule) {
	switch k {
	case Override:
		rs.Override = rules
	case Content:
		rs.Content = rules
	case PostContent:
		rs.PostContent = rules
	case Room:
		rs.Room = rules
	case Sender:
		rs.Sender = rules
	case Underride:
		rs.Underride = rules
	}
}

// Find returns the rule of kind k with the given ID, or nil.
func (rs *Ruleset) Find(k Kind, ruleID string) *Rule {
	for _, r := range rs.List(k) {
		if r.RuleID == ruleID {
			return r
		}
	}
	return nil
}

// Stored is one row of a user's stored rules: either a user-defined rule
// (Body holds its conditions, pattern and actions) or a change to a
// server-default rule (ID starting with "."; Body, when set, holds only
// new actions). Rows of a kind come in priority order.
type Stored struct {
	Kind    Kind
	RuleID  string
	Enabled *bool
	Body    json.RawMessage
}

// Body is the stored (and PUT) form of a rule.
type Body struct {
	Actions    []any       `json:"actions"`
	Conditions []Condition `json:"conditions,omitempty"`
	Pattern    *string     `json:"pattern,omitempty"`
}

// IsServerDefault reports whether a rule ID names a server-default rule.
func IsServerDefault(ruleID string) bool { return strings.HasPrefix(ruleID, ".") }

// ForUser builds userID's rule set: the spec defaults, with the user's
// overrides applied, and the user's own rules placed above the defaults of
// their kind (but below .m.rule.master, which always comes first).
func ForUser(userID string, stored []Stored) *Ruleset {
	rs := Defaults(userID)
	own := map[Kind][]*Rule{}
	for _, s := range stored {
		if IsServerDefault(s.RuleID) {
			r := rs.Find(s.Kind, s.RuleID)
			if r == nil {
				continue
			}
			if s.Enabled != nil {
				r.Enabled = *s.Enabled
			}
			if len(s.Body) > 0 {
				var b Body
				if json.Unmarshal(s.Body, &b) == nil && b.Actions != nil {
					r.Actions = b.Actions
				}
			}
			continue
		}
		var b Body
		if err := json.Unmarshal(s.Body, &b); err != nil {
			continue
		}
		r := &Rule{Kind: s.Kind, RuleID: s.RuleID, Enabled: true, Actions: b.Actions}
		if s.Enabled != nil {
			r.Enabled = *s.Enabled
		}
		switch s.Kind {
		case Override, Underride, PostContent:
			r.Conditions = b.Conditions
		case Content:
			if b.Pattern != nil {
				r.Pattern = *b.Pattern
			}
		}
		own[s.Kind] = append(own[s.Kind], r)
	}
	for _, k := range Kinds {
		defs := rs.List(k)
		var out []*Rule
		if k == Override && len(defs) > 0 && defs[0].RuleID == ".m.rule.master" {
			out = append(out, defs[0])
			defs = defs[1:]
		}
		out = append(out, own[k]...)
		out = append(out, defs...)
		rs.set(k, out)
	}
	return rs
}

// ErrInvalid is wrapped by validation failures.
var ErrInvalid = errors.New("invalid push rule")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ValidateActions checks a rule's actions: "notify", the historical
// "dont_notify" / "coalesce", or {"set_tweak": name, "value": ...}.
func ValidateActions(actions []any) error {
	if actions == nil {
		return invalid("actions are required")
	}
	for _, a := range actions {
		switch v := a.(type) {
		case string:
			if v != "notify" && v != "dont_notify" && v != "coalesce" {
				return invalid("unknown action %q", v)
			}
		case map[string]any:
			tw, ok := v["set_tweak"].(string)
			if !ok || tw == "" {
				return invalid("action objects must have a set_tweak name")
			}
		default:
			return invalid("actions must be strings or objects")
		}
	}
	return nil
}

// ValidateBody checks a client's PUT body for a rule of kind k and returns
// the form to store. Unknown condition kinds are kept (they never match).
func ValidateBody(k Kind, raw []byte) (json.RawMessage, error) {
	if k == PostContent {
		return nil, invalid("clients may not create postcontent rules (MSC4306)")
	}
	var b Body
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, invalid("body has the wrong shape: %v", err)
	}
	if err := ValidateActions(b.Actions); err != nil {
		return nil, err
	}
	out := Body{Actions: b.Actions}
	switch k {
	case Override, Underride:
		for _, c := range b.Conditions {
			if err := validateCondition(c); err != nil {
				return nil, err
			}
		}
		out.Conditions = b.Conditions
		if out.Conditions == nil {
			out.Conditions = []Condition{}
		}
	case Content:
		if b.Pattern == nil {
			return nil, fmt.Errorf("%w: content rules need a pattern", ErrMissingPattern)
		}
		out.Pattern = b.Pattern
	}
	return json.Marshal(out)
}

// ErrMissingPattern is returned for content rules without a pattern.
var ErrMissingPattern = errors.New("missing pattern")

func validateCondition(c Condition) error {
	switch c.Kind {
	case "":
		return invalid("condition without kind")
	case "event_match":
		if c.Key == "" || c.Pattern == nil {
			return invalid("event_match needs key and pattern")
		}
	case "event_property_is", "event_property_contains":
		if c.Key == "" || len(c.Value) == 0 {
			return invalid("%s needs key and value", c.Kind)
		}
		if !scalarJSON(c.Value) {
			return invalid("%s value must be a string, integer, boolean or null", c.Kind)
		}
	case "room_member_count":
		if _, _, ok := parseIs(c.Is); !ok {
			return invalid("room_member_count needs a valid is")
		}
	case "sender_notification_permission":
		if c.Key == "" {
			return invalid("sender_notification_permission needs a key")
		}
	}
	return nil
}

func scalarJSON(v json.RawMessage) bool {
	var x any
	if json.Unmarshal(v, &x) != nil {
		return false
	}
	switch x.(type) {
	case string, bool, nil, float64:
		return true
	}
	return false
}
