package syncapi

import "testing"

func TestFilterMatching(t *testing.T) {
	f, err := ParseFilter([]byte(`{"room":{"timeline":{"types":["m.room.*"],"not_types":["m.room.member"],"not_senders":["@spam:x"],"limit":5}}}`))
	if err != nil {
		t.Fatal(err)
	}
	tl := f.Room.Timeline
	cases := []struct {
		typ, sender string
		want        bool
	}{
		{"m.room.message", "@a:x", true},
		{"m.room.member", "@a:x", false},
		{"m.reaction", "@a:x", false},
		{"m.room.message", "@spam:x", false},
	}
	for _, c := range cases {
		if got := tl.Allows(c.typ, c.sender); got != c.want {
			t.Errorf("%s from %s: %v, want %v", c.typ, c.sender, got, c.want)
		}
	}
	if tl.LimitOr(10) != 5 {
		t.Errorf("limit %d", tl.LimitOr(10))
	}
	if !matchType("m.*.message", "m.room.message") || matchType("m.*.message", "m.room.member") {
		t.Error("inner wildcard")
	}
}
