package clientapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// Space hierarchies (GET /_matrix/client/v1/rooms/{roomId}/hierarchy): a
// depth-first walk of a space's m.space.child rooms that the user could
// join or peek. Only rooms this server holds are listed: remote children
// would need federation and are skipped.

const (
	hierarchyDefaultLimit = 50
	hierarchyMaxLimit     = 100
	hierarchyMaxDepth     = 10
	// hierarchyMaxRooms bounds one walk.
	hierarchyMaxRooms = 1000
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
			if rst, err = rm.rs.CurrentState(r.Context(), it.roomID); errors.Is(err, roomserver.ErrRoomNotFound) {
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
					push = append(push, item{c.RoomID, it.depth + 1})
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
