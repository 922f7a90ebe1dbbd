package pushrules

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"

	"enclave/internal/lru"
)

// Event is an event prepared once for matching against many users' rules.
type Event struct {
	obj         map[string]any
	RoomID      string
	Sender      string
	hasMentions bool
}

// NewEvent parses an event's JSON (client or federation form).
func NewEvent(raw []byte) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	ev := &Event{obj: obj}
	ev.RoomID, _ = obj["room_id"].(string)
	ev.Sender, _ = obj["sender"].(string)
	if c, ok := obj["content"].(map[string]any); ok {
		_, ev.hasMentions = c["m.mentions"]
	}
	return ev, nil
}

// Context is what a rule may ask about the user and the room.
type Context struct {
	UserID      string
	DisplayName string // the user's display name in the room
	MemberCount int    // joined members
	// SenderPowerLevel and NotificationLevel answer
	// sender_notification_permission; NotificationLevel(key) is the level
	// the room's power levels require for that notification type.
	SenderPowerLevel  int64
	NotificationLevel func(key string) int64
	// ThreadSubscribed answers MSC4306's thread_subscription condition:
	// nil when the event is in no thread, else whether the user is
	// subscribed to its thread.
	ThreadSubscribed *bool
}

// Result is the outcome of evaluating a rule set on an event.
type Result struct {
	Rule      *Rule // the rule that matched, nil if none
	Notify    bool
	Highlight bool
	Actions   []any // the matched rule's actions, historical ones removed
}

// Evaluate finds the first enabled rule of rs that matches ev and returns
// what it asks for.
func (rs *Ruleset) Evaluate(ev *Event, c *Context) Result {
	for _, k := range Kinds {
		for _, r := range rs.List(k) {
			if r.Enabled && r.matches(ev, c) {
				return resultOf(r)
			}
		}
	}
	return Result{}
}

func resultOf(r *Rule) Result {
	res := Result{Rule: r, Actions: []any{}}
	for _, a := range r.Actions {
		switch v := a.(type) {
		case string:
			if v == "notify" {
				res.Notify = true
				res.Actions = append(res.Actions, v)
			}
			// dont_notify and coalesce are historical: ignored.
		case map[string]any:
			res.Actions = append(res.Actions, v)
			if v["set_tweak"] == "highlight" {
				hv, present := v["value"]
				b, isBool := hv.(bool)
				res.Highlight = !present || (isBool && b)
			}
		}
	}
	if !res.Notify {
		res.Highlight = false
	}
	return res
}

func (r *Rule) matches(ev *Event, c *Context) bool {
	if legacyMentionRules[r.RuleID] && r.Default && ev.hasMentions {
		return false
	}
	switch r.Kind {
	case Override, Underride, PostContent:
		for i := range r.Conditions {
			if !r.Conditions[i].matches(ev, c) {
				return false
			}
		}
		return true
	case Content:
		body, ok := ev.lookup("content.body")
		s, isStr := body.(string)
		return ok && isStr && globMatch(r.Pattern, s, true)
	case Room:
		return ev.RoomID == r.RuleID
	case Sender:
		return ev.Sender == r.RuleID
	}
	return false
}

func (cd *Condition) matches(ev *Event, c *Context) bool {
	switch cd.Kind {
	case "event_match":
		if cd.Pattern == nil {
			return false
		}
		v, ok := ev.lookup(cd.Key)
		s, isStr := v.(string)
		if !ok || !isStr {
			return false
		}
		return globMatch(*cd.Pattern, s, cd.Key == "content.body")
	case "event_property_is":
		v, ok := ev.lookup(cd.Key)
		return ok && scalarEqual(v, cd.Value)
	case "event_property_contains":
		v, ok := ev.lookup(cd.Key)
		arr, isArr := v.([]any)
		if !ok || !isArr {
			return false
		}
		for _, x := range arr {
			if scalarEqual(x, cd.Value) {
				return true
			}
		}
		return false
	case "contains_display_name":
		if c.DisplayName == "" {
			return false
		}
		body, ok := ev.lookup("content.body")
		s, isStr := body.(string)
		return ok && isStr && literalWordMatch(c.DisplayName, s)
	case "room_member_count":
		op, n, ok := parseIs(cd.Is)
		if !ok {
			return false
		}
		m := int64(c.MemberCount)
		switch op {
		case "==":
			return m == n
		case "<":
			return m < n
		case ">":
			return m > n
		case "<=":
			return m <= n
		case ">=":
			return m >= n
		}
		return false
	case "sender_notification_permission":
		need := int64(50)
		if c.NotificationLevel != nil {
			need = c.NotificationLevel(cd.Key)
		}
		return c.SenderPowerLevel >= need
	case ThreadSubscriptionCondition:
		return cd.Subscribed != nil && c.ThreadSubscribed != nil && *c.ThreadSubscribed == *cd.Subscribed
	}
	return false // unrecognised conditions never match
}

// parseIs reads room_member_count's "is": an integer with an optional
// ==, <, >, <= or >= prefix.
func parseIs(s string) (string, int64, bool) {
	op := "=="
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(s, p) {
			op, s = p, s[len(p):]
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return op, n, true
}

// splitPath splits a dot-separated property path, where "\." is a literal
// dot and "\\" a literal backslash.
func splitPath(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		ch := key[i]
		switch {
		case ch == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case ch == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(ch)
		}
	}
	return append(parts, cur.String())
}

var pathCache = lru.New[string, []string](1024)

func (ev *Event) lookup(key string) (any, bool) {
	parts, ok := pathCache.Get(key)
	if !ok {
		parts = splitPath(key)
		pathCache.Put(key, parts)
	}
	var cur any = ev.obj
	for _, p := range parts {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// scalarEqual compares an event value with a condition's JSON value:
// strings, integers, booleans and null, exactly and without casting.
func scalarEqual(v any, want json.RawMessage) bool {
	dec := json.NewDecoder(bytes.NewReader(want))
	dec.UseNumber()
	var w any
	if dec.Decode(&w) != nil {
		return false
	}
	switch wv := w.(type) {
	case nil:
		return v == nil
	case string:
		s, ok := v.(string)
		return ok && s == wv
	case bool:
		b, ok := v.(bool)
		return ok && b == wv
	case json.Number:
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		a, err1 := strconv.ParseInt(string(n), 10, 64)
		b, err2 := strconv.ParseInt(string(wv), 10, 64)
		const lim = 1<<53 - 1
		return err1 == nil && err2 == nil && a == b && math.Abs(float64(a)) <= lim
	}
	return false
}

// Glob matching. Patterns compile to cached regular expressions.

var globCache = lru.New[string, *regexp.Regexp](4096)

const wordChar = `A-Za-z0-9_`

func compile(key string, build func() string) *regexp.Regexp {
	if re, ok := globCache.Get(key); ok {
		return re
	}
	re, err := regexp.Compile(build())
	if err != nil {
		re = regexp.MustCompile(`$^`) // never matches
	}
	globCache.Put(key, re)
	return re
}

func globToRegexp(glob string) string {
	var b strings.Builder
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	return b.String()
}

// globMatch matches case-insensitively: the whole value, or (words) any
// substring of it that starts and ends at a word boundary.
func globMatch(glob, value string, words bool) bool {
	if words {
		if !strings.ContainsAny(glob, "*?") && !mayContainFold(value, glob) {
			return false
		}
		re := compile("w\x00"+glob, func() string {
			return `(?is)(?:^|[^` + wordChar + `])` + globToRegexp(glob) + `(?:[^` + wordChar + `]|$)`
		})
		return re.MatchString(value)
	}
	re := compile("f\x00"+glob, func() string { return `(?is)^` + globToRegexp(glob) + `$` })
	return re.MatchString(value)
}

// literalWordMatch finds s (taken literally) in value at word boundaries.
func literalWordMatch(s, value string) bool {
	if !mayContainFold(value, s) {
		return false
	}
	re := compile("l\x00"+s, func() string {
		return `(?is)(?:^|[^` + wordChar + `])` + regexp.QuoteMeta(s) + `(?:[^` + wordChar + `]|$)`
	})
	return re.MatchString(value)
}

// mayContainFold is false when value surely does not contain lit, case
// folded: both ASCII and no ASCII case-insensitive occurrence. A cheap
// test before the regular expressions, which every member's mention rules
// run on every message (non-ASCII text can fold onto ASCII letters, as the
// Kelvin sign onto k, so it goes to the regular expression).
func mayContainFold(value, lit string) bool {
	if !isASCII(value) || !isASCII(lit) {
		return true
	}
	n := len(lit)
	for i := 0; i+n <= len(value); i++ {
		j := 0
		for j < n && lowerASCII(value[i+j]) == lowerASCII(lit[j]) {
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
