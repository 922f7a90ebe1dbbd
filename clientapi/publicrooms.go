package clientapi

import (
	"net/http"
	"strconv"
	"strings"

	"enclave/storage"
)

// The published room directory: GET and POST /publicRooms list rooms
// published with PUT /directory/list/room or createRoom's visibility,
// largest first, from the directory stats kept by the room event hook.

func init() { routeGroups = append(routeGroups, (*API).publicRoomsRoutes) }

func (a *API) publicRoomsRoutes() {
	// GET needs no access token (the spec lists no security for it);
	// filtering with POST does.
	for _, v := range []string{"v3", "r0"} {
		a.open("GET", "/_matrix/client/"+v+"/publicRooms", "directory", a.getPublicRooms)
	}
	a.v3("POST", "/publicRooms", "directory", a.postPublicRooms)
}

const (
	publicRoomsMaxLimit = 500
)

// publicRoomsReq is the union of GET's query and POST's body.
type publicRoomsReq struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

func (a *API) getPublicRooms(r *http.Request) Response {
	q := r.URL.Query()
	var req publicRoomsReq
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	req.IncludeAllNetworks = q.Get("include_all_networks") == "true"
	req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	return a.publicRooms(r, q.Get("server"), req)
}

func (a *API) postPublicRooms(r *http.Request, dev *Device) Response {
	var req publicRoomsReq
	if resp, ok := decodeJSON(r, &req); !ok {
		return resp
	}
	return a.publicRooms(r, r.URL.Query().Get("server"), req)
}

// publicRoomsToken encodes an offset into the directory's order.
func publicRoomsToken(offset int) string { return "p" + strconv.Itoa(offset) }

func (a *API) publicRooms(r *http.Request, server string, req publicRoomsReq) Response {
	if server != "" && server != a.opts.ServerName {
		return InvalidParam("only this server's room directory is available")
	}
	limit := publicRoomsMaxLimit
	if req.Limit != nil && *req.Limit > 0 {
		limit = min(*req.Limit, publicRoomsMaxLimit)
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "p"))
		if !strings.HasPrefix(req.Since, "p") || err != nil || n < 0 {
			return InvalidParam("unknown since token")
		}
		offset = n
	}
	body := map[string]any{"chunk": []any{}, "total_room_count_estimate": 0}
	// No application-service networks exist here: a specific one is empty.
	if req.ThirdPartyInstanceID != "" && !req.IncludeAllNetworks {
		return JSON(200, body)
	}
	pq := storage.PublicRoomsQuery{Term: strings.TrimSpace(req.Filter.GenericSearchTerm), Offset: offset, Limit: limit + 1}
	if req.Filter.RoomTypes != nil {
		pq.RoomTypes = []string{}
		for _, t := range req.Filter.RoomTypes {
			if t == nil {
				pq.RoomTypes = append(pq.RoomTypes, "")
			} else {
				pq.RoomTypes = append(pq.RoomTypes, *t)
			}
		}
	}
	rooms, total, err := storage.PublicRooms(r.Context(), a.db, pq)
	if err != nil {
		return InternalError(r, err)
	}
	if len(rooms) > limit {
		rooms = rooms[:limit]
		body["next_batch"] = publicRoomsToken(offset + limit)
	}
	if offset > 0 {
		body["prev_batch"] = publicRoomsToken(max(0, offset-limit))
	}
	chunk := make([]map[string]any, 0, len(rooms))
	for _, st := range rooms {
		chunk = append(chunk, publicRoomChunk(st))
	}
	body["chunk"] = chunk
	body["total_room_count_estimate"] = total
	return JSON(200, body)
}

// publicRoomChunk renders a room as the spec's PublicRoomsChunk (shared by
// the directory, room summaries and space hierarchies).
func publicRoomChunk(st *storage.RoomStats) map[string]any {
	c := map[string]any{
		"room_id":            st.RoomID,
		"num_joined_members": st.JoinedMembers,
		"world_readable":     st.HistoryVisibility == "world_readable",
		"guest_can_join":     st.GuestAccess == "can_join",
		"join_rule":          st.JoinRule,
	}
	if st.JoinRule == "" {
		c["join_rule"] = "invite"
	}
	for k, v := range map[string]string{"name": st.Name, "topic": st.Topic, "canonical_alias": st.CanonicalAlias, "avatar_url": st.AvatarURL, "room_type": st.RoomType} {
		if v != "" {
			c[k] = v
		}
	}
	return c
}
