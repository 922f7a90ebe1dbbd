package clientapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// Space hierarchies (GET /_matrix/client/v1/rooms/{roomId}/hierarchy): a
// depth-first walk of a space's m.space.child rooms that the user could
// join or peek. Children this server is not in are asked of the servers
// in their m.space.child via (GET /_matrix/federation/v1/hierarchy), and
// shown when the answer says the user could join or peek them.

const (
	hierarchyDefaultLimit = 50
	hierarchyMaxLimit     = 100
	hierarchyMaxDepth     = 10
	// hierarchyMaxRooms bounds one walk.
	hierarchyMaxRooms = 1000
	// hierarchyRemoteTimeout bounds asking other servers about one room.
	hierarchyRemoteTimeout = 10 * time.Second
)

func (rm *rooms) hierarchy(r *http.Request, dev *httpapi.Device) httpapi.Response {
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
			return httpapi.InvalidParam("limit must be an integer greater than zero")
		}
		limit = min(n, hierarchyMaxLimit)
	}
	maxDepth := hierarchyMaxDepth
	if s := q.Get("max_depth"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return httpapi.InvalidParam("max_depth must be a non-negative integer")
		}
		maxDepth = min(n, hierarchyMaxDepth)
	}
	offset := 0
	if s := q.Get("from"); s != "" {
		var off, depth int
		var sugg bool
		if _, err := fmt.Sscanf(s, "h%d_%d_%t", &off, &depth, &sugg); err != nil || off < 0 {
			return httpapi.InvalidParam("unknown pagination token")
		}
		if depth != maxDepth || sugg != suggestedOnly {
			return httpapi.InvalidParam("suggested_only and max_depth cannot change on paginated requests")
		}
		offset = off
	}
	st, err := rm.rs.CurrentState(r.Context(), roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.Forbidden("you are not allowed to view this room")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if !rm.canPreview(r.Context(), dev.UserID, st) {
		return httpapi.Forbidden("you are not allowed to view this room")
	}
	// Walk depth first, the way clients render the tree.
	type item struct {
		roomID string
		depth  int
		via    []string
	}
	var rooms []map[string]any
	seen := map[string]bool{}
	rh := &remoteHierarchy{rm: rm, r: r, userID: dev.UserID, suggestedOnly: suggestedOnly, known: map[string]map[string]any{}, denied: map[string]bool{}}
	stack := []item{{roomID, 0, nil}}
	for len(stack) > 0 && len(rooms) < hierarchyMaxRooms {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[it.roomID] {
			continue
		}
		seen[it.roomID] = true
		rst := st
		if it.roomID != roomID {
			rst, err = rm.rs.CurrentState(r.Context(), it.roomID)
			if errors.Is(err, roomserver.ErrRoomNotFound) || (err == nil && rst.Get("m.room.create", "") == nil) {
				entry := rh.room(it.roomID, it.via)
				if entry == nil {
					continue
				}
				rooms = append(rooms, entry)
				if it.depth < maxDepth {
					kids := remoteChildren(entry)
					for i := len(kids) - 1; i >= 0; i-- {
						stack = append(stack, item{kids[i].roomID, it.depth + 1, kids[i].via})
					}
				}
				continue
			} else if err != nil {
				return httpapi.InternalError(r, err)
			}
			if !rm.canPreview(r.Context(), dev.UserID, rst) {
				continue
			}
		}
		stats, err := rm.roomStats(r.Context(), it.roomID)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			return httpapi.InternalError(r, err)
		}
		entry := storage.PublicRoomChunk(stats)
		children := []map[string]any{}
		if stats.RoomType == "m.space" {
			kids := roomserver.SpaceChildren(rst)
			var push []item
			for _, c := range kids {
				if suggestedOnly && !c.Suggested {
					continue
				}
				children = append(children, c.Stripped)
				if it.depth < maxDepth {
					push = append(push, item{c.RoomID, it.depth + 1, c.Via})
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
	return httpapi.JSON(200, body)
}

// remoteHierarchy is one walk's view of the rooms it asked other servers
// about: the rooms their answers described (a space's children come with
// it) and those they said the requesting server may not see.
type remoteHierarchy struct {
	rm            *rooms
	r             *http.Request
	userID        string
	suggestedOnly bool
	known         map[string]map[string]any
	denied        map[string]bool
}

// room is the /hierarchy entry of a room this server is not in, or nil
// when no server answers, or the user could neither join nor peek it.
// A space is always asked for (its answer lists its children); a plain
// room already described in its parent's answer is not.
func (h *remoteHierarchy) room(roomID string, via []string) map[string]any {
	entry := h.known[roomID]
	if (entry == nil || entry["room_type"] == "m.space") && !h.denied[roomID] && h.rm.fed != nil {
		ctx, cancel := context.WithTimeout(h.r.Context(), hierarchyRemoteTimeout)
		room, children, inaccessible, err := h.rm.fed.RemoteHierarchy(ctx, roomID, via, h.suggestedOnly)
		cancel()
		if err == nil {
			entry = room
			for _, c := range children {
				if id, _ := c["room_id"].(string); id != "" {
					h.known[id] = c
				}
			}
			for _, id := range inaccessible {
				h.denied[id] = true
			}
		}
	}
	if entry == nil || h.denied[roomID] || !h.mayPreview(entry) {
		return nil
	}
	out := map[string]any{}
	for k, v := range entry {
		out[k] = v
	}
	states, _ := entry["children_state"].([]any)
	kept := []any{}
	for _, cs := range states {
		m, _ := cs.(map[string]any)
		content, _ := m["content"].(map[string]any)
		if m == nil || (h.suggestedOnly && content["suggested"] != true) {
			continue
		}
		kept = append(kept, m)
	}
	out["children_state"] = kept
	return out
}

// mayPreview applies the user's side of the potential-joiner rules to a
// room another server described: that server checked ours; whether this
// user is in one of a restricted room's allowed rooms, or is invited, is
// for this server to say.
func (h *remoteHierarchy) mayPreview(entry map[string]any) bool {
	if entry["world_readable"] == true {
		return true
	}
	rule, _ := entry["join_rule"].(string)
	switch rule {
	case "public", "knock", "knock_restricted":
		return true
	}
	ctx := h.r.Context()
	id, _ := entry["room_id"].(string)
	if m, err := h.rm.rs.Membership(ctx, id, h.userID); err == nil && (m == "join" || m == "invite") {
		return true
	}
	if rule == "restricted" {
		allowed, _ := entry["allowed_room_ids"].([]any)
		for _, a := range allowed {
			if room, ok := a.(string); ok {
				if m, err := h.rm.rs.Membership(ctx, room, h.userID); err == nil && m == "join" {
					return true
				}
			}
		}
	}
	return false
}

type remoteChild struct {
	roomID string
	via    []string
}

// remoteChildren reads the children a remote entry's children_state names.
func remoteChildren(entry map[string]any) []remoteChild {
	states, _ := entry["children_state"].([]any)
	var out []remoteChild
	for _, cs := range states {
		m, _ := cs.(map[string]any)
		id, _ := m["state_key"].(string)
		content, _ := m["content"].(map[string]any)
		vias, _ := content["via"].([]any)
		var via []string
		for _, v := range vias {
			if s, ok := v.(string); ok && s != "" {
				via = append(via, s)
			}
		}
		if id != "" && len(via) > 0 {
			out = append(out, remoteChild{id, via})
		}
	}
	return out
}
