package invitefilter

import "testing"

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		config, inviter string
		want            Verdict
	}{
		{``, "@bob:hs2", Allow},
		{`{}`, "@bob:hs2", Allow},
		{`{"blocked_users":null,"allowed_users":null}`, "@bob:hs2", Allow},
		{`{"blocked_users":["@bob:hs2"]}`, "@bob:hs2", Block},
		{`{"blocked_users":["@bob:hs2"]}`, "@eve:hs2", Allow},
		{`{"ignored_users":["@bob:hs2"]}`, "@bob:hs2", Ignore},
		{`{"blocked_servers":["hs2"]}`, "@eve:hs2", Block},
		{`{"blocked_servers":["hs*"]}`, "@eve:hs1", Block},
		{`{"blocked_users":["@user-?*"]}`, "@user-1:hs1", Block},
		{`{"blocked_users":["@user-?*"]}`, "@user-", Allow},
		{`{"blocked_users":["@a*b"]}`, "@axxbyc", Allow},
		{`{"blocked_users":["@a*b*"]}`, "@axxbyb:hs", Block},
		{`{"allowed_users":["@bob:hs2"],"blocked_servers":["hs2"]}`, "@bob:hs2", Allow},
		{`{"blocked_users":["@eve:hs2"],"allowed_servers":["hs2"]}`, "@eve:hs2", Block},
		{`{"blocked_users":["@eve:hs2"],"allowed_servers":["hs2"]}`, "@bob:hs2", Allow},
		{`{"ignored_users":["@bob:hs2"],"allowed_users":["@bob:hs2"]}`, "@bob:hs2", Allow},
		{`{"ignored_servers":["hs2"],"blocked_users":["@bob:hs2"]}`, "@bob:hs2", Block},
	} {
		if got := Decide([]byte(tc.config), tc.inviter); got != tc.want {
			t.Errorf("%s for %s: got %d, want %d", tc.config, tc.inviter, got, tc.want)
		}
	}
}
