package clientapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"

	"enclave/roomserver"
	"enclave/storage"
)

// Space hierarchies (GET /_matrix/client/v1/rooms/{roomId}/hierarchy): a
// depth-first walk of a space's m.space.child rooms that the user could
// join or peek. Only rooms this server holds are listed: remote children
// would need federation and are skipped.

func init() { routeGroups = append(routeGroups, (*API).hierarchyRoutes) }

func (a *API) hierarchyRoutes() {
	a.authed("GET", "/_matrix/client/v1/rooms/{roomId}/hierarchy", "rooms", a.hierarchy)
}

const (
	hierarchyDefaultLimit = 50
	hierarchyMaxLimit     = 100
	hierarchyMaxDepth     = 10
	// hierarchyMaxRooms bounds one walk.
	hierarchyMaxRooms = 1000
)

type spaceChild struct {
	roomID    string
	order     string
	ts        int64
	suggested bool
	stripped  map[string]any
}

// spaceChildren returns a space's valid children in the spec's order:
// by `order` (when valid), then origin_server_ts, then room ID.
func spaceChildren(st roomserver.StateMap) []spaceChild {
	var out []spaceChild
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
		out = append(out, spaceChild{
			roomID: k.StateKey, order: order, ts: int64(ev.OriginServerTS()), suggested: c.Suggested,
			stripped: map[string]any{"type": k.Type, "state_key": k.StateKey, "content": json.RawMessage(ev.Content()),
				"sender": string(ev.SenderID()), "origin_server_ts": int64(ev.OriginServerTS())},
		})
	}
	sort.Slice(out, func(i, j int) bool {
		oi, oj := out[i].order, out[j].order
		if (oi != "") != (oj != "") {
			return oi != ""
		}
		if oi != oj {
			return oi < oj
		}
		if out[i].ts != out[j].ts {
			return out[i].ts < out[j].ts
		}
		return out[i].roomID < out[j].roomID
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

func (a *API) hierarchy(r *http.Request, dev *Device) Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	q := r.URL.Query()
	suggestedOnly, _, resp, ok := parseBoolParam(r, "suggested_only")
	if !ok {
		return resp
	}
	limit := hierarchyDefaultLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return InvalidParam("limit must be an integer greater than zero")
		}
		limit = min(n, hierarchyMaxLimit)
	}
	maxDepth := hierarchyMaxDepth
	if s := q.Get("max_depth"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return InvalidParam("max_depth must be a non-negative integer")
		}
		maxDepth = min(n, hierarchyMaxDepth)
	}
	offset := 0
	if s := q.Get("from"); s != "" {
		var off, depth int
		var sugg bool
		if _, err := fmt.Sscanf(s, "h%d_%d_%t", &off, &depth, &sugg); err != nil || off < 0 {
			return InvalidParam("unknown pagination token")
		}
		if depth != maxDepth || sugg != suggestedOnly {
			return InvalidParam("suggested_only and max_depth cannot change on paginated requests")
		}
		offset = off
	}
	st, err := a.rs.CurrentState(r.Context(), roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return Forbidden("you are not allowed to view this room")
	} else if err != nil {
		return InternalError(r, err)
	}
	if !a.canPreview(r.Context(), dev.UserID, st) {
		return Forbidden("you are not allowed to view this room")
	}
	// Walk depth first, the way clients render the tree.
	type item struct {
		roomID string
		depth  int
	}
	var rooms []map[string]any
	seen := map[string]bool{}
	stack := []item{{roomID, 0}}
	for len(stack) > 0 && len(rooms) < hierarchyMaxRooms {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[it.roomID] {
			continue
		}
		seen[it.roomID] = true
		rst := st
		if it.roomID != roomID {
			if rst, err = a.rs.CurrentState(r.Context(), it.roomID); errors.Is(err, roomserver.ErrRoomNotFound) {
				continue
			} else if err != nil {
				return InternalError(r, err)
			}
			if !a.canPreview(r.Context(), dev.UserID, rst) {
				continue
			}
		}
		stats, err := a.roomStats(r.Context(), it.roomID)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			return InternalError(r, err)
		}
		entry := storage.PublicRoomChunk(stats)
		children := []map[string]any{}
		if stats.RoomType == "m.space" {
			kids := spaceChildren(rst)
			var push []item
			for _, c := range kids {
				if suggestedOnly && !c.suggested {
					continue
				}
				children = append(children, c.stripped)
				if it.depth < maxDepth {
					push = append(push, item{c.roomID, it.depth + 1})
				}
			}
			for i := len(push) - 1; i >= 0; i-- {
				stack = append(stack, push[i])
			}
		}
		entry["children_state"] = children
		rooms = append(rooms, entry)
	}
	body := map[string]any{"rooms": []map[string]any{}}
	if offset < len(rooms) {
		end := min(offset+limit, len(rooms))
		body["rooms"] = rooms[offset:end]
		if end < len(rooms) {
			body["next_batch"] = fmt.Sprintf("h%d_%d_%t", end, maxDepth, suggestedOnly)
		}
	}
	return JSON(200, body)
}
