package syncapi

import "testing"

func TestRequiredStateMatches(t *testing.T) {
	me := "@me:x"
	lazy := map[string]bool{"@sender:x": true}
	cases := []struct {
		rules    [][2]string
		typ, key string
		want     bool
	}{
		{[][2]string{{"m.room.name", ""}}, "m.room.name", "", true},
		{[][2]string{{"m.room.name", ""}}, "m.room.topic", "", false},
		{[][2]string{{"*", "*"}}, "m.room.topic", "", true},
		{[][2]string{{"m.room.member", "*"}}, "m.room.member", "@other:x", true},
		{[][2]string{{"*", ""}}, "m.room.member", "@other:x", false},
		{[][2]string{{"m.room.member", "$ME"}}, "m.room.member", me, true},
		{[][2]string{{"m.room.member", "$ME"}}, "m.room.member", "@other:x", false},
		{[][2]string{{"m.room.member", "$LAZY"}}, "m.room.member", "@sender:x", true},
		{[][2]string{{"m.room.member", "$LAZY"}}, "m.room.member", "@other:x", false},
		{nil, "m.room.name", "", false},
	}
	for _, c := range cases {
		if got := requiredStateMatches(c.rules, c.typ, c.key, me, lazy); got != c.want {
			t.Errorf("%v on (%s,%q) = %v, want %v", c.rules, c.typ, c.key, got, c.want)
		}
	}
}

func TestConfigKeyIgnoresRuleOrder(t *testing.T) {
	a := configKey(&SlidingRoomConfig{TimelineLimit: 1, RequiredState: [][2]string{{"a", ""}, {"b", "*"}}})
	b := configKey(&SlidingRoomConfig{TimelineLimit: 1, RequiredState: [][2]string{{"b", "*"}, {"a", ""}}})
	c := configKey(&SlidingRoomConfig{TimelineLimit: 2, RequiredState: [][2]string{{"a", ""}, {"b", "*"}}})
	if a != b || a == c {
		t.Fatalf("configKey: %q %q %q", a, b, c)
	}
}
