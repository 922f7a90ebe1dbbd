package roomserver

import (
	"encoding/json"
	"sort"
)

// SpaceChild is one valid m.space.child entry of a space.
type SpaceChild struct {
	RoomID    string
	Order     string
	TS        int64
	Suggested bool
	// Via is the servers the child can be reached through.
	Via []string
	// Stripped is the child event as /hierarchy's children_state shows it.
	Stripped map[string]any
}

// SpaceChildren returns a space's valid children (those with a non-empty
// via) in the spec's order: by `order` when valid (≤ 50 printable ASCII),
// then origin_server_ts, then room ID. The client and federation
// /hierarchy endpoints both walk spaces with it.
func SpaceChildren(st StateMap) []SpaceChild {
	var out []SpaceChild
	for k, ev := range st {
		if k.Type != "m.space.child" || k.StateKey == "" {
			continue
		}
		var c struct {
			Via       []string `json:"via"`
			Order     any      `json:"order"`
			Suggested bool     `json:"suggested"`
		}
		if json.Unmarshal(ev.Content(), &c) != nil || len(c.Via) == 0 {
			continue // no via: the child was removed
		}
		order, _ := c.Order.(string)
		if len(order) > 50 || !printableASCII(order) {
			order = ""
		}
		out = append(out, SpaceChild{
			RoomID: k.StateKey, Order: order, TS: int64(ev.OriginServerTS()), Suggested: c.Suggested, Via: c.Via,
			Stripped: map[string]any{"type": k.Type, "state_key": k.StateKey, "content": json.RawMessage(ev.Content()),
				"sender": string(ev.SenderID()), "origin_server_ts": int64(ev.OriginServerTS())},
		})
	}
	sort.Slice(out, func(i, j int) bool {
		oi, oj := out[i].Order, out[j].Order
		if (oi != "") != (oj != "") {
			return oi != ""
		}
		if oi != oj {
			return oi < oj
		}
		if out[i].TS != out[j].TS {
			return out[i].TS < out[j].TS
		}
		return out[i].RoomID < out[j].RoomID
	})
	return out
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
