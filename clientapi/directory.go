package clientapi

import (
	"errors"
	"net/http"
	"strings"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// aliasParam validates a room alias path parameter: #localpart:server.
func (a *API) aliasParam(r *http.Request) (string, httpapi.Response, bool) {
	alias := httpapi.Vars(r)["roomAlias"]
	i := strings.IndexByte(alias, ':')
	if !strings.HasPrefix(alias, "#") || i < 2 || i == len(alias)-1 || len(alias) > 255 {
		return "", httpapi.InvalidParam("invalid room alias %q", alias), false
	}
	return alias, httpapi.Response{}, true
}

func (a *API) getAlias(r *http.Request, dev *httpapi.Device) httpapi.Response {
	alias, resp, ok := a.aliasParam(r)
	if !ok {
		return resp
	}
	roomID, _, err := storage.GetAlias(r.Context(), a.db, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("room alias %s not found", alias)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{"room_id": roomID, "servers": []string{a.opts.ServerName}})
}

func (a *API) putAlias(r *http.Request, dev *httpapi.Device) httpapi.Response {
	alias, resp, ok := a.aliasParam(r)
	if !ok {
		return resp
	}
	var body struct {
		RoomID string `json:"room_id"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if !strings.HasSuffix(alias, ":"+a.opts.ServerName) {
		return httpapi.InvalidParam("alias must be on server %s", a.opts.ServerName)
	}
	if !validRoomID.MatchString(body.RoomID) {
		return httpapi.InvalidParam("invalid room_id")
	}
	m, err := a.rs.Membership(r.Context(), body.RoomID, dev.UserID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.NotFound("room %s not found", body.RoomID)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if m != "join" && !dev.IsAdmin {
		return httpapi.Forbidden("you must be in the room to give it an alias")
	}
	ok, err = storage.InsertAlias(r.Context(), a.db, alias, body.RoomID, dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if !ok {
		return httpapi.Errf(http.StatusConflict, "M_UNKNOWN", "room alias %s already exists", alias)
	}
	return httpapi.JSON(200, struct{}{})
}

func (a *API) deleteAlias(r *http.Request, dev *httpapi.Device) httpapi.Response {
	alias, resp, ok := a.aliasParam(r)
	if !ok {
		return resp
	}
	roomID, creator, err := storage.GetAlias(r.Context(), a.db, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("room alias %s not found", alias)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	allowed := creator == dev.UserID || dev.IsAdmin
	if !allowed {
		if st, err := a.rs.CurrentState(r.Context(), roomID); err == nil {
			pl := roomserver.PowerLevels(st)
			allowed = roomserver.PowerLevel(st, dev.UserID) >= pl.EventLevel("m.room.canonical_alias", true)
		}
	}
	if !allowed {
		return httpapi.Forbidden("you may not remove alias %s", alias)
	}
	if err := storage.DeleteAlias(r.Context(), a.db, alias); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, struct{}{})
}

func (a *API) roomAliases(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	if _, resp, ok := a.events.access(r.Context(), dev.UserID, roomID); !ok {
		return resp
	}
	aliases, err := storage.RoomAliases(r.Context(), a.db, roomID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if aliases == nil {
		aliases = []string{}
	}
	return httpapi.JSON(200, map[string]any{"aliases": aliases})
}

func (a *API) getDirectoryVisibility(r *http.Request) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	room, err := storage.GetRoom(r.Context(), a.db, roomID)
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

func (a *API) putDirectoryVisibility(r *http.Request, dev *httpapi.Device) httpapi.Response {
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
	st, err := a.rs.CurrentState(r.Context(), roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.NotFound("room %s not found", roomID)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	pl := roomserver.PowerLevels(st)
	if !dev.IsAdmin && (st.Membership(dev.UserID) != "join" || roomserver.PowerLevel(st, dev.UserID) < pl.EventLevel("m.room.canonical_alias", true)) {
		return httpapi.Forbidden("you may not change this room's directory visibility")
	}
	if err := storage.SetRoomPublic(r.Context(), a.db, roomID, body.Visibility == "public"); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, struct{}{})
}
