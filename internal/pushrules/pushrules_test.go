package pushrules

import (
	"encoding/json"
	"errors"
	"testing"
)

const alice = "@alice:example.org"

func mustEvent(t *testing.T, v map[string]any) *Event {
	t.Helper()
	if v["room_id"] == nil {
		v["room_id"] = "!room:example.org"
	}
	if v["sender"] == nil {
		v["sender"] = "@bob:example.org"
	}
	b, _ := json.Marshal(v)
	ev, err := NewEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func msg(body string, extra map[string]any) map[string]any {
	c := map[string]any{"msgtype": "m.text", "body": body}
	for k, v := range extra {
		c[k] = v
	}
	return map[string]any{"type": "m.room.message", "content": c}
}

func ctx(members int) *Context {
	return &Context{UserID: alice, DisplayName: "Alice Liddell", MemberCount: members, SenderPowerLevel: 0,
		NotificationLevel: func(string) int64 { return 50 }}
}

func TestDefaultsOrderAndShape(t *testing.T) {
	rs := Defaults(alice)
	wantOverride := []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
		".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits", ".org.matrix.msc3930.rule.poll_response"}
	wantUnderride := []string{".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
		".m.rule.poll_start_one_to_one", ".m.rule.poll_start", ".m.rule.poll_end_one_to_one", ".m.rule.poll_end",
		".org.matrix.msc3930.rule.poll_start_one_to_one", ".org.matrix.msc3930.rule.poll_start",
		".org.matrix.msc3930.rule.poll_end_one_to_one", ".org.matrix.msc3930.rule.poll_end",
		".m.rule.message", ".m.rule.encrypted"}
	check := func(kind string, got []*Rule, want []string) {
		if len(got) != len(want) {
			t.Fatalf("%s: %d rules, want %d", kind, len(got), len(want))
		}
		for i, r := range got {
			if r.RuleID != want[i] || !r.Default {
				t.Fatalf("%s[%d] = %s (default %v), want %s", kind, i, r.RuleID, r.Default, want[i])
			}
		}
	}
	check("override", rs.Override, wantOverride)
	check("underride", rs.Underride, wantUnderride)
	check("content", rs.Content, []string{".m.rule.contains_user_name"})
	check("postcontent", rs.PostContent, []string{".io.element.msc4306.rule.unsubscribed_thread", ".io.element.msc4306.rule.subscribed_thread"})
	if rs.Content[0].Pattern != "alice" {
		t.Fatalf("contains_user_name pattern %q", rs.Content[0].Pattern)
	}
	if rs.Override[0].Enabled {
		t.Fatal("master must be disabled by default")
	}
	// JSON shape: conditions always on override rules, pattern on content.
	b, _ := json.Marshal(rs)
	var out map[string][]map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if c, ok := out["override"][0]["conditions"].([]any); !ok || len(c) != 0 {
		t.Fatalf("master conditions: %v", out["override"][0])
	}
	tomb := out["override"][8]
	conds := tomb["conditions"].([]any)
	if sk := conds[1].(map[string]any); sk["key"] != "state_key" || sk["pattern"] != "" {
		t.Fatalf("tombstone state_key condition: %v", sk)
	}
	if out["content"][0]["pattern"] != "alice" || out["content"][0]["conditions"] != nil {
		t.Fatalf("content rule json: %v", out["content"][0])
	}
	if len(out["room"]) != 0 || len(out["sender"]) != 0 {
		t.Fatal("room and sender must be empty lists")
	}
}

func TestEvaluateDefaults(t *testing.T) {
	rs := Defaults(alice)
	cases := []struct {
		name              string
		ev                map[string]any
		members           int
		senderPL          int64
		notify, highlight bool
		rule              string
	}{
		{"plain message in group", msg("hello", nil), 5, 0, true, false, ".m.rule.message"},
		{"one to one", msg("hello", nil), 2, 0, true, false, ".m.rule.room_one_to_one"},
		{"notice", map[string]any{"type": "m.room.message", "content": map[string]any{"msgtype": "m.notice", "body": "alice"}}, 5, 0, false, false, ".m.rule.suppress_notices"},
		{"display name", msg("hey Alice Liddell!", nil), 5, 0, true, true, ".m.rule.contains_display_name"},
		{"display name needs word boundary", msg("xAlice Liddellx", nil), 5, 0, true, false, ".m.rule.message"},
		{"user name", msg("ping ALICE please", nil), 5, 0, true, true, ".m.rule.contains_user_name"},
		{"user mention", msg("hi", map[string]any{"m.mentions": map[string]any{"user_ids": []any{alice}}}), 5, 0, true, true, ".m.rule.is_user_mention"},
		{"m.mentions disables legacy name rules", msg("hi alice", map[string]any{"m.mentions": map[string]any{}}), 5, 0, true, false, ".m.rule.message"},
		{"room mention needs power", msg("hi", map[string]any{"m.mentions": map[string]any{"room": true}}), 5, 0, true, false, ".m.rule.message"},
		{"room mention with power", msg("hi", map[string]any{"m.mentions": map[string]any{"room": true}}), 5, 50, true, true, ".m.rule.is_room_mention"},
		{"@room legacy", msg("hey @room!", nil), 5, 100, true, true, ".m.rule.roomnotif"},
		{"edit", msg("* fixed", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}, "m.new_content": map[string]any{"body": "fixed"}}), 5, 0, false, false, ".m.rule.suppress_edits"},
		{"reaction", map[string]any{"type": "m.reaction", "content": map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}}, 2, 0, false, false, ".m.rule.reaction"},
		{"invite for me", map[string]any{"type": "m.room.member", "state_key": alice, "content": map[string]any{"membership": "invite"}}, 5, 0, true, false, ".m.rule.invite_for_me"},
		{"other member event", map[string]any{"type": "m.room.member", "state_key": "@carol:example.org", "content": map[string]any{"membership": "join"}}, 5, 0, false, false, ".m.rule.member_event"},
		{"tombstone", map[string]any{"type": "m.room.tombstone", "state_key": "", "content": map[string]any{"body": "moved"}}, 5, 0, true, true, ".m.rule.tombstone"},
		{"call", map[string]any{"type": "m.call.invite", "content": map[string]any{}}, 5, 0, true, false, ".m.rule.call"},
		{"encrypted one to one", map[string]any{"type": "m.room.encrypted", "content": map[string]any{"ciphertext": "x"}}, 2, 0, true, false, ".m.rule.encrypted_room_one_to_one"},
		{"encrypted group", map[string]any{"type": "m.room.encrypted", "content": map[string]any{"ciphertext": "x"}}, 3, 0, true, false, ".m.rule.encrypted"},
		{"server acl", map[string]any{"type": "m.room.server_acl", "state_key": "", "content": map[string]any{}}, 3, 0, false, false, ".m.rule.room.server_acl"},
		{"topic change matches nothing", map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "x"}}, 3, 0, false, false, ""},
	}
	for _, tc := range cases {
		c := ctx(tc.members)
		c.SenderPowerLevel = tc.senderPL
		res := rs.Evaluate(mustEvent(t, tc.ev), c)
		got := ""
		if res.Rule != nil {
			got = res.Rule.RuleID
		}
		if got != tc.rule || res.Notify != tc.notify || res.Highlight != tc.highlight {
			t.Errorf("%s: rule %q notify %v highlight %v; want %q %v %v", tc.name, got, res.Notify, res.Highlight, tc.rule, tc.notify, tc.highlight)
		}
	}
}

func TestMasterAndUserRules(t *testing.T) {
	on, off := true, false
	pattern := "c?ke*"
	body := func(b Body) json.RawMessage { j, _ := json.Marshal(b); return j }
	stored := []Stored{
		{Kind: Override, RuleID: ".m.rule.master", Enabled: &on},
		{Kind: Sender, RuleID: "@spam:example.org", Enabled: &on, Body: body(Body{Actions: []any{}})},
		{Kind: Content, RuleID: "cake", Enabled: &on, Body: body(Body{Actions: []any{"notify", map[string]any{"set_tweak": "highlight", "value": false}}, Pattern: &pattern})},
		{Kind: Underride, RuleID: ".m.rule.message", Body: body(Body{Actions: []any{"dont_notify"}})},
		{Kind: Room, RuleID: "!quiet:example.org", Enabled: &off, Body: body(Body{Actions: []any{}})},
	}
	rs := ForUser(alice, stored)
	if rs.Override[0].RuleID != ".m.rule.master" || !rs.Override[0].Enabled {
		t.Fatal("master override not applied")
	}
	if res := rs.Evaluate(mustEvent(t, msg("hello", nil)), ctx(5)); res.Notify || res.Rule.RuleID != ".m.rule.master" {
		t.Fatalf("master enabled should silence everything: %+v", res)
	}
	rs.Override[0].Enabled = false
	if res := rs.Evaluate(mustEvent(t, map[string]any{"type": "m.room.message", "sender": "@spam:example.org", "content": map[string]any{"body": "buy"}}), ctx(5)); res.Notify || res.Rule.RuleID != "@spam:example.org" {
		t.Fatalf("sender rule: %+v", res)
	}
	// Content rule before sender/underride; highlight false explicitly.
	if res := rs.Evaluate(mustEvent(t, msg("I like CAKES a lot", nil)), ctx(5)); !res.Notify || res.Highlight || res.Rule.RuleID != "cake" {
		t.Fatalf("content rule: %+v", res)
	}
	// .m.rule.message's actions were changed to the historical dont_notify.
	if res := rs.Evaluate(mustEvent(t, msg("plain", nil)), ctx(5)); res.Notify || res.Rule.RuleID != ".m.rule.message" || len(res.Actions) != 0 {
		t.Fatalf("changed default actions: %+v", res)
	}
	// Disabled room rule never matches.
	if res := rs.Evaluate(mustEvent(t, map[string]any{"type": "m.room.message", "room_id": "!quiet:example.org", "content": map[string]any{"body": "x"}}), ctx(5)); res.Rule.RuleID == "!quiet:example.org" {
		t.Fatal("disabled rule matched")
	}
	// User rules of a kind come before the defaults of that kind.
	if rs.Content[0].RuleID != "cake" || rs.Content[1].RuleID != ".m.rule.contains_user_name" {
		t.Fatalf("content order: %s, %s", rs.Content[0].RuleID, rs.Content[1].RuleID)
	}
}

func TestConditions(t *testing.T) {
	p := func(s string) *string { return &s }
	ev := mustEvent(t, map[string]any{"type": "m.room.message", "content": map[string]any{
		"body": "An example event.", "m.federate": true, "count": 3, "nothing": nil, "flag": "true",
		"list": []any{"a", 1, true, nil, map[string]any{}}, "dotted.key": "v", "nested": map[string]any{"x": "y"},
	}})
	c := ctx(10)
	cases := []struct {
		cond Condition
		want bool
	}{
		{Condition{Kind: "event_match", Key: "content.body", Pattern: p("ex*ple")}, true},
		{Condition{Kind: "event_match", Key: "content.body", Pattern: p("exam")}, false},
		{Condition{Kind: "event_match", Key: "type", Pattern: p("m.room.*")}, true},
		{Condition{Kind: "event_match", Key: "type", Pattern: p("M.ROOM.MESSAG?")}, true},
		{Condition{Kind: "event_match", Key: "type", Pattern: p("m.room")}, false},
		{Condition{Kind: "event_match", Key: "content.missing", Pattern: p("*")}, false},
		{Condition{Kind: "event_match", Key: "content.m\\.federate", Pattern: p("*")}, false}, // not a string
		{Condition{Kind: "event_match", Key: `content.dotted\.key`, Pattern: p("v")}, true},
		{Condition{Kind: "event_match", Key: "content.nested.x", Pattern: p("y")}, true},
		{Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)}, true},
		{Condition{Kind: "event_property_is", Key: "content.flag", Value: json.RawMessage(`true`)}, false},
		{Condition{Kind: "event_property_is", Key: "content.count", Value: json.RawMessage(`3`)}, true},
		{Condition{Kind: "event_property_is", Key: "content.count", Value: json.RawMessage(`"3"`)}, false},
		{Condition{Kind: "event_property_is", Key: "content.nothing", Value: json.RawMessage(`null`)}, true},
		{Condition{Kind: "event_property_is", Key: "content.missing", Value: json.RawMessage(`null`)}, false},
		{Condition{Kind: "event_property_contains", Key: "content.list", Value: json.RawMessage(`"a"`)}, true},
		{Condition{Kind: "event_property_contains", Key: "content.list", Value: json.RawMessage(`1`)}, true},
		{Condition{Kind: "event_property_contains", Key: "content.list", Value: json.RawMessage(`null`)}, true},
		{Condition{Kind: "event_property_contains", Key: "content.list", Value: json.RawMessage(`"b"`)}, false},
		{Condition{Kind: "event_property_contains", Key: "content.body", Value: json.RawMessage(`"An"`)}, false},
		{Condition{Kind: "room_member_count", Is: "10"}, true},
		{Condition{Kind: "room_member_count", Is: "<10"}, false},
		{Condition{Kind: "room_member_count", Is: "<=10"}, true},
		{Condition{Kind: "room_member_count", Is: ">9"}, true},
		{Condition{Kind: "room_member_count", Is: ">=11"}, false},
		{Condition{Kind: "room_member_count", Is: "==x"}, false},
		{Condition{Kind: "sender_notification_permission", Key: "room"}, false},
		{Condition{Kind: "something_new"}, false},
	}
	for i, tc := range cases {
		if got := tc.cond.matches(ev, c); got != tc.want {
			t.Errorf("case %d %+v: got %v want %v", i, tc.cond, got, tc.want)
		}
	}
	c.SenderPowerLevel = 50
	if !(&Condition{Kind: "sender_notification_permission", Key: "room"}).matches(ev, c) {
		t.Fatal("sender with power 50 may notify the room")
	}
}

func TestGlobWordBoundaries(t *testing.T) {
	cases := []struct {
		glob, value string
		want        bool
	}{
		{"ex*ple", "exple", true},
		{"ex*ple", "An exciting triple-whammy", true},
		{"alice", "alice's cat", true},
		{"alice", "malice", false},
		{"alice", "alice_x", false},
		{"@room", "@room", true},
		{"@room", "hi @room.", true},
		{"a.b", "axb", false}, // dots are literal
	}
	for _, tc := range cases {
		if got := globMatch(tc.glob, tc.value, true); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v", tc.glob, tc.value, got)
		}
	}
	if !literalWordMatch("A.B (x)", "hello a.b (x)") || literalWordMatch("A.B", "hello axb") {
		t.Fatal("display names are matched literally")
	}
	if got := splitPath(`content.m\.relates_to.rel\\type`); len(got) != 3 || got[1] != "m.relates_to" || got[2] != `rel\type` {
		t.Fatalf("splitPath: %q", got)
	}
}

func TestValidate(t *testing.T) {
	if _, err := ValidateBody(Content, []byte(`{"actions":["notify"]}`)); err == nil {
		t.Fatal("content rule without pattern accepted")
	}
	if _, err := ValidateBody(Override, []byte(`{"actions":["explode"]}`)); err == nil {
		t.Fatal("unknown action accepted")
	}
	if _, err := ValidateBody(Override, []byte(`{"conditions":[]}`)); err == nil {
		t.Fatal("missing actions accepted")
	}
	if _, err := ValidateBody(Override, []byte(`{"actions":[],"conditions":[{"kind":"event_match","key":"type"}]}`)); err == nil {
		t.Fatal("event_match without pattern accepted")
	}
	if _, err := ValidateBody(Override, []byte(`{"actions":[],"conditions":[{"kind":"event_property_is","key":"x","value":{"a":1}}]}`)); err == nil {
		t.Fatal("compound value accepted")
	}
	b, err := ValidateBody(Override, []byte(`{"actions":["notify",{"set_tweak":"sound","value":"x"}],"conditions":[{"kind":"future_kind"}],"pattern":"ignored"}`))
	if err != nil {
		t.Fatal(err)
	}
	var got Body
	_ = json.Unmarshal(b, &got)
	if got.Pattern != nil || len(got.Conditions) != 1 || len(got.Actions) != 2 {
		t.Fatalf("stored body %s", b)
	}
}

// Poll starts and ends notify as messages do (with a sound in one-to-one
// rooms); votes never notify (MSC3930).
func TestPollRules(t *testing.T) {
	rs := Defaults(alice)
	for _, c := range []struct {
		typ     string
		members int
		rule    string
		notify  bool
		sound   bool
	}{
		{"m.poll.start", 2, ".m.rule.poll_start_one_to_one", true, true},
		{"m.poll.start", 5, ".m.rule.poll_start", true, false},
		{"m.poll.end", 2, ".m.rule.poll_end_one_to_one", true, true},
		{"org.matrix.msc3381.poll.start", 2, ".org.matrix.msc3930.rule.poll_start_one_to_one", true, true},
		{"org.matrix.msc3381.poll.end", 9, ".org.matrix.msc3930.rule.poll_end", true, false},
		{"org.matrix.msc3381.poll.response", 2, ".org.matrix.msc3930.rule.poll_response", false, false},
	} {
		raw, _ := json.Marshal(map[string]any{"type": c.typ, "sender": "@bob:example.org", "room_id": "!r:example.org", "content": map[string]any{}})
		ev, err := NewEvent(raw)
		if err != nil {
			t.Fatal(err)
		}
		res := rs.Evaluate(ev, ctx(c.members))
		if res.Rule == nil || res.Rule.RuleID != c.rule || res.Notify != c.notify {
			t.Fatalf("%s in %d members: rule %v notify %v, want %s %v", c.typ, c.members, res.Rule, res.Notify, c.rule, c.notify)
		}
		hasSound := false
		for _, a := range res.Actions {
			if m, ok := a.(map[string]any); ok && m["set_tweak"] == "sound" {
				hasSound = true
			}
		}
		if hasSound != c.sound {
			t.Fatalf("%s: sound %v, want %v", c.typ, hasSound, c.sound)
		}
	}
}

// MSC4306: a thread message notifies only when subscribed, unless a
// mention (override/content) notified first; the rules are postcontent,
// which clients cannot create.
func TestThreadSubscriptionRules(t *testing.T) {
	rs := Defaults(alice)
	threadMsg := func(body string) *Event {
		raw, _ := json.Marshal(map[string]any{"type": "m.room.message", "sender": "@bob:example.org", "room_id": "!r:example.org",
			"content": map[string]any{"msgtype": "m.text", "body": body, "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": "$root"}}})
		ev, err := NewEvent(raw)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	yes, no := true, false
	c := ctx(5)
	c.ThreadSubscribed = &no
	if res := rs.Evaluate(threadMsg("hello"), c); res.Notify || res.Rule.RuleID != ".io.element.msc4306.rule.unsubscribed_thread" {
		t.Fatalf("unsubscribed thread: %+v", res)
	}
	if res := rs.Evaluate(threadMsg("hello alice"), c); !res.Notify || !res.Highlight || res.Rule.RuleID != ".m.rule.contains_user_name" {
		t.Fatalf("mention in unsubscribed thread: %+v", res)
	}
	c.ThreadSubscribed = &yes
	if res := rs.Evaluate(threadMsg("hello"), c); !res.Notify || res.Rule.RuleID != ".io.element.msc4306.rule.subscribed_thread" {
		t.Fatalf("subscribed thread: %+v", res)
	}
	c.ThreadSubscribed = nil
	if res := rs.Evaluate(threadMsg("hello"), c); !res.Notify || res.Rule.RuleID != ".m.rule.message" {
		t.Fatalf("no thread: %+v", res)
	}
	// Disabled, the rules step aside (how MSC4306-unaware tests run).
	off := false
	rs = ForUser(alice, []Stored{{Kind: PostContent, RuleID: ".io.element.msc4306.rule.unsubscribed_thread", Enabled: &off}})
	c.ThreadSubscribed = &no
	if res := rs.Evaluate(threadMsg("hello"), c); !res.Notify || res.Rule.RuleID != ".m.rule.message" {
		t.Fatalf("disabled unsubscribed_thread: %+v", res)
	}
	if _, err := ValidateBody(PostContent, []byte(`{"actions":[],"conditions":[]}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("postcontent PUT: %v", err)
	}
	b, _ := json.Marshal(Defaults(alice).PostContent[1])
	if string(b) != `{"actions":["notify",{"set_tweak":"sound","value":"default"}],"conditions":[{"kind":"io.element.msc4306.thread_subscription","subscribed":true}],"default":true,"enabled":true,"rule_id":".io.element.msc4306.rule.subscribed_thread"}` {
		t.Fatalf("subscribed_thread JSON %s", b)
	}
}

// TestMayContainFold: the pre-test never says no where the regular
// expression would match (ASCII folding, non-ASCII text left to it).
func TestMayContainFold(t *testing.T) {
	for _, c := range []struct {
		value, lit string
		want       bool
	}{
		{"hello Alice!", "alice", true},
		{"hello ALICE", "Alice", true},
		{"hello bob", "alice", false},
		{"", "alice", false},
		{"ali", "alice", false},
		{"\u212Aate", "kate", true}, // Kelvin sign folds onto k
		{"kate", "K\u00e4te", true},
	} {
		if got := mayContainFold(c.value, c.lit); got != c.want {
			t.Errorf("mayContainFold(%q, %q) = %v, want %v", c.value, c.lit, got, c.want)
		}
	}
	if !literalWordMatch("Alice", "hi alice.") || literalWordMatch("Alice", "hi malice") || !literalWordMatch("kate", "\u212Aate here") {
		t.Fatal("literalWordMatch with the pre-test")
	}
	if !globMatch("alice", "ping ALICE", true) || globMatch("alice", "ping bob", true) || !globMatch("al*e", "ping alice", true) {
		t.Fatal("globMatch with the pre-test")
	}
}
