package roomserver

import (
	"encoding/json"
	"sort"
	"strings"
)

// JoinRule reads m.room.join_rules: the rule ("invite" when there is
// none) and, for restricted and knock_restricted, the rooms of its allow
// list. As the auth rules read it, entries of another type or shape are
// ignored and an allow that is not a list allows no one.
func JoinRule(st StateMap) (rule string, allow []string) {
	rule = "invite"
	ev := st.Get("m.room.join_rules", "")
	if ev == nil {
		return rule, nil
	}
	var c struct {
		JoinRule string          `json:"join_rule"`
		Allow    json.RawMessage `json:"allow"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil {
		return rule, nil
	}
	if c.JoinRule != "" {
		rule = c.JoinRule
	}
	if rule != "restricted" && rule != "knock_restricted" {
		return rule, nil
	}
	var entries []json.RawMessage
	if json.Unmarshal(c.Allow, &entries) != nil {
		return rule, nil
	}
	for _, e := range entries {
		var a struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		}
		if json.Unmarshal(e, &a) == nil && a.Type == "m.room_membership" && strings.HasPrefix(a.RoomID, "!") {
			allow = append(allow, a.RoomID)
		}
	}
	return rule, allow
}

// JoinAuthorisers lists server's joined members who may invite, and so
// may be named in a restricted join's join_authorised_via_users_server:
// the power levels' invite level decides, and in room versions with
// privileged creators the creators always may. Most powerful first.
func JoinAuthorisers(st StateMap, server string) []string {
	pl := PowerLevels(st)
	suffix := ":" + server
	var out []string
	for k, ev := range st {
		if k.Type != "m.room.member" || !strings.HasSuffix(k.StateKey, suffix) {
			continue
		}
		if m, _ := ev.Membership(); m == "join" && PowerLevel(st, k.StateKey) >= pl.Invite {
			out = append(out, k.StateKey)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		pi, pj := PowerLevel(st, out[i]), PowerLevel(st, out[j])
		if pi != pj {
			return pi > pj
		}
		return out[i] < out[j]
	})
	return out
}
