package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// The room directory and space hierarchies for other servers:
// GET/POST /_matrix/federation/v1/publicRooms list this server's published
// rooms (as the client API's /publicRooms does), and
// GET /_matrix/federation/v1/hierarchy/{roomId} describes a local space
// and its direct children the requesting server could peek or join.

const fedPublicRoomsMaxLimit = 500

type fedPublicRoomsReq = storage.PublicRoomsRequest

func (f *queries) getPublicRooms(r *http.Request, _ spec.ServerName, _ []byte) httpapi.Response {
	q := r.URL.Query()
	var req fedPublicRoomsReq
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return httpapi.InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	req.IncludeAllNetworks = q.Get("include_all_networks") == "true"
	req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	return f.publicRooms(r, req)
}

func (f *queries) postPublicRooms(r *http.Request, _ spec.ServerName, body []byte) httpapi.Response {
	var req fedPublicRoomsReq
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return httpapi.BadJSON("request body has the wrong shape: %v", err)
		}
	}
	return f.publicRooms(r, req)
}

func (f *queries) publicRooms(r *http.Request, req fedPublicRoomsReq) httpapi.Response {
	body, err := storage.PublicRoomsPage(r.Context(), f.db, req, fedPublicRoomsMaxLimit)
	if errors.Is(err, storage.ErrBadSince) {
		return httpapi.InvalidParam("unknown since token")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, body)
}

// hierarchy is GET /_matrix/federation/v1/hierarchy/{roomId}.
func (f *queries) hierarchy(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
	ctx := r.Context()
	roomID := mux.Vars(r)["roomId"]
	suggestedOnly := r.URL.Query().Get("suggested_only") == "true"
	st, err := f.rs.CurrentState(ctx, roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) || (err == nil && st.Get(spec.MRoomCreate, "") == nil) {
		return httpapi.NotFound("room not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if !f.serverMayPreview(ctx, st, origin) {
		return httpapi.NotFound("room not found")
	}
	room, err := f.hierarchyEntry(ctx, roomID, st)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	children := []map[string]any{}
	inaccessible := []string{}
	childState := []map[string]any{}
	if room["room_type"] == "m.space" {
		for _, c := range roomserver.SpaceChildren(st) {
			if suggestedOnly && !c.Suggested {
				continue
			}
			childState = append(childState, c.Stripped)
			cst, err := f.rs.CurrentState(ctx, c.RoomID)
			if errors.Is(err, roomserver.ErrRoomNotFound) || (err == nil && cst.Get(spec.MRoomCreate, "") == nil) {
				continue // not ours to describe
			} else if err != nil {
				return httpapi.InternalError(r, err)
			}
			if !f.serverMayPreview(ctx, cst, origin) {
				inaccessible = append(inaccessible, c.RoomID)
				continue
			}
			entry, err := f.hierarchyEntry(ctx, c.RoomID, cst)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			} else if err != nil {
				return httpapi.InternalError(r, err)
			}
			children = append(children, entry)
		}
	}
	room["children_state"] = childState
	return httpapi.JSON(http.StatusOK, map[string]any{"room": room, "children": children, "inaccessible_children": inaccessible})
}

// hierarchyEntry is a room's PublicRoomsChunk plus allowed_room_ids.
func (f *queries) hierarchyEntry(ctx context.Context, roomID string, st roomserver.StateMap) (map[string]any, error) {
	stats, err := storage.GetRoomStats(ctx, f.db, roomID)
	if err != nil {
		return nil, err
	}
	c := storage.PublicRoomChunk(stats)
	if _, allow := joinRule(st); len(allow) > 0 {
		c["allowed_room_ids"] = allow
	}
	return c, nil
}

// joinRule returns a room's join rule and, for restricted rules, the
// rooms whose members may join (read as the auth rules read it).
func joinRule(st roomserver.StateMap) (string, []string) {
	return roomserver.JoinRule(st)
}

// serverMayPreview decides whether origin could peek at or join a room:
// world-readable history, a public or knockable join rule, a member of
// its own in the room, or (restricted rooms) a member in an allowed room.
// The room's server ACL applies first.
func (f *queries) serverMayPreview(ctx context.Context, st roomserver.StateMap, origin spec.ServerName) bool {
	if !aclAllows(st, origin) {
		return false
	}
	if hv := st.Get(spec.MRoomHistoryVisibility, ""); hv != nil {
		if v, _ := hv.HistoryVisibility(); v == gomatrixserverlib.HistoryVisibilityWorldReadable {
			return true
		}
	}
	rule, allow := joinRule(st)
	switch rule {
	case spec.Public, spec.Knock, spec.KnockRestricted:
		return true
	}
	for k, e := range st {
		if k.Type != spec.MRoomMember || userServer(k.StateKey) != origin {
			continue
		}
		if m, _ := e.Membership(); m == spec.Join || m == spec.Invite {
			return true
		}
	}
	for _, room := range allow {
		members, err := storage.RoomMembers(ctx, f.db, room, spec.Join)
		if err != nil {
			continue
		}
		for _, m := range members {
			if userServer(m) == origin {
				return true
			}
		}
	}
	return false
}

// profileTimeout bounds a remote profile lookup made for a client.
const profileTimeout = 10 * time.Second

// LookupProfile asks a remote user's server for their profile (GET
// /_matrix/federation/v1/query/profile). Unknown users are
// storage.ErrNotFound.
func (f *Federation) LookupProfile(ctx context.Context, userID string) (*storage.Profile, error) {
	dest := userServer(userID)
	if dest == "" || dest == f.serverName {
		return nil, storage.ErrNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, profileTimeout)
	defer cancel()
	var p struct {
		DisplayName *string `json:"displayname"`
		AvatarURL   *string `json:"avatar_url"`
	}
	err := f.fedJSON(ctx, dest, http.MethodGet, "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape(userID), nil, &p, 64<<10)
	var re *RemoteError
	if errors.As(err, &re) && re.Code == http.StatusNotFound {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := &storage.Profile{}
	if p.DisplayName != nil {
		out.DisplayName = *p.DisplayName
	}
	if p.AvatarURL != nil {
		out.AvatarURL = *p.AvatarURL
	}
	return out, nil
}
