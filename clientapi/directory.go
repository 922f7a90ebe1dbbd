package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// directory serves finding rooms and users: room aliases, the public room
// list and its visibility flag, and the user directory.
type directory struct {
	opts   Options
	db     *storage.DB
	rs     roomserver.API
	events *events // room access for alias listings
	// appservices reserves exclusive alias namespaces (nil: none).
	appservices AppServices
	// fed looks up other servers' aliases (nil with federation off).
	fed Federation
	// searchAllUsers is set by the assembly before serving: the user
	// directory covers every local user, not only those sharing a room.
	searchAllUsers bool
}

// aliasParam validates a room alias path parameter: #localpart:server.
func (dir *directory) aliasParam(r *http.Request) (string, httpapi.Response, bool) {
	alias := httpapi.Vars(r)["roomAlias"]
	i := strings.IndexByte(alias, ':')
	if !strings.HasPrefix(alias, "#") || i < 2 || i == len(alias)-1 || len(alias) > 255 {
		return "", httpapi.InvalidParam("invalid room alias %q", alias), false
	}
	return alias, httpapi.Response{}, true
}

func (dir *directory) getAlias(r *http.Request, dev *httpapi.Device) httpapi.Response {
	alias, resp, ok := dir.aliasParam(r)
	if !ok {
		return resp
	}
	if dir.fed != nil && !strings.HasSuffix(alias, ":"+dir.opts.ServerName) {
		// Another server's alias: only that server can say (/query/directory).
		roomID, servers, err := dir.fed.LookupAlias(r.Context(), alias)
		if err != nil {
			return httpapi.NotFound("room alias %s not found: %v", alias, err)
		}
		if servers == nil {
			servers = []string{}
		}
		return httpapi.JSON(200, map[string]any{"room_id": roomID, "servers": servers})
	}
	roomID, err := resolveLocalAlias(r.Context(), dir.db, dir.appservices, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("room alias %s not found", alias)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{"room_id": roomID, "servers": []string{dir.opts.ServerName}})
}

func (dir *directory) putAlias(r *http.Request, dev *httpapi.Device) httpapi.Response {
	alias, resp, ok := dir.aliasParam(r)
	if !ok {
		return resp
	}
	var body struct {
		RoomID string `json:"room_id"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if !strings.HasSuffix(alias, ":"+dir.opts.ServerName) {
		return httpapi.InvalidParam("alias must be on server %s", dir.opts.ServerName)
	}
	if resp, ok := aliasReserved(dir.appservices, dev, alias); !ok {
		return resp
	}
	if !validRoomID.MatchString(body.RoomID) {
		return httpapi.InvalidParam("invalid room_id")
	}
	m, err := dir.rs.Membership(r.Context(), body.RoomID, dev.UserID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.NotFound("room %s not found", body.RoomID)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if m != "join" && !dev.IsAdmin {
		return httpapi.Forbidden("you must be in the room to give it an alias")
	}
	ok, err = storage.InsertAlias(r.Context(), dir.db, alias, body.RoomID, dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if !ok {
		return httpapi.Errf(http.StatusConflict, "M_UNKNOWN", "room alias %s already exists", alias)
	}
	return httpapi.JSON(200, struct{}{})
}

func (dir *directory) deleteAlias(r *http.Request, dev *httpapi.Device) httpapi.Response {
	alias, resp, ok := dir.aliasParam(r)
	if !ok {
		return resp
	}
	roomID, creator, err := storage.GetAlias(r.Context(), dir.db, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("room alias %s not found", alias)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	allowed := creator == dev.UserID || dev.IsAdmin
	if !allowed {
		if st, err := dir.rs.CurrentState(r.Context(), roomID); err == nil {
			pl := roomserver.PowerLevels(st)
			allowed = roomserver.PowerLevel(st, dev.UserID) >= pl.EventLevel("m.room.canonical_alias", true)
		}
	}
	if !allowed {
		return httpapi.Forbidden("you may not remove alias %s", alias)
	}
	if err := storage.DeleteAlias(r.Context(), dir.db, alias); err != nil {
		return httpapi.InternalError(r, err)
	}
	dir.dropCanonicalAlias(r, dev.UserID, roomID, alias)
	return httpapi.JSON(200, struct{}{})
}

// dropCanonicalAlias takes a deleted alias out of the room's
// m.room.canonical_alias (alias and alt_aliases), so the room does not
// advertise an alias that names nothing. It is sent as the deleter; when
// they may not send it (an alias creator without power) the alias is still
// deleted and the state is left as it was, as the spec's deletion does
// not depend on it.
func (dir *directory) dropCanonicalAlias(r *http.Request, sender, roomID, alias string) {
	st, err := dir.rs.CurrentState(r.Context(), roomID)
	if err != nil {
		return
	}
	ev := st.Get("m.room.canonical_alias", "")
	if ev == nil {
		return
	}
	var c map[string]any
	if json.Unmarshal(ev.Content(), &c) != nil {
		return
	}
	changed := false
	if c["alias"] == alias {
		delete(c, "alias")
		changed = true
	}
	if alts, ok := c["alt_aliases"].([]any); ok {
		kept := []any{}
		for _, a := range alts {
			if a != alias {
				kept = append(kept, a)
			}
		}
		if len(kept) != len(alts) {
			changed = true
			if len(kept) == 0 {
				delete(c, "alt_aliases")
			} else {
				c["alt_aliases"] = kept
			}
		}
	}
	if !changed {
		return
	}
	content, _ := json.Marshal(c)
	empty := ""
	if ev, err := dir.rs.SendEvent(r.Context(), roomserver.SendRequest{RoomID: roomID, Sender: sender, Type: "m.room.canonical_alias", StateKey: &empty, Content: content}); err == nil {
		_ = dir.db.Stream.Wait(r.Context(), ev.StreamPos)
	}
}

func (dir *directory) roomAliases(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	if _, resp, ok := dir.events.access(r.Context(), dev.UserID, roomID); !ok {
		return resp
	}
	aliases, err := storage.RoomAliases(r.Context(), dir.db, roomID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if aliases == nil {
		aliases = []string{}
	}
	return httpapi.JSON(200, map[string]any{"aliases": aliases})
}

func (dir *directory) getDirectoryVisibility(r *http.Request) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	room, err := storage.GetRoom(r.Context(), dir.db, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("room %s not found", roomID)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	vis := "private"
	if room.IsPublic {
		vis = "public"
	}
	return httpapi.JSON(200, map[string]string{"visibility": vis})
}

func (dir *directory) putDirectoryVisibility(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	var body struct {
		Visibility string `json:"visibility"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if body.Visibility != "public" && body.Visibility != "private" {
		return httpapi.InvalidParam("visibility must be public or private")
	}
	st, err := dir.rs.CurrentState(r.Context(), roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.NotFound("room %s not found", roomID)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	pl := roomserver.PowerLevels(st)
	if !dev.IsAdmin && (st.Membership(dev.UserID) != "join" || roomserver.PowerLevel(st, dev.UserID) < pl.EventLevel("m.room.canonical_alias", true)) {
		return httpapi.Forbidden("you may not change this room's directory visibility")
	}
	if err := storage.SetRoomPublic(r.Context(), dir.db, roomID, body.Visibility == "public"); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, struct{}{})
}
