package clientapi

import (
	"errors"
	"net/http"
	"strconv"

	"enclave/internal/httpapi"
	"enclave/storage"
)

// The published room directory: GET and POST /publicRooms list rooms
// published with PUT /directory/list/room or createRoom's visibility,
// largest first, from the directory stats kept by the room event hook.

const (
	publicRoomsMaxLimit = 500
)

// publicRoomsReq is the union of GET's query and POST's body.
type publicRoomsReq = storage.PublicRoomsRequest

func (dir *directory) getPublicRooms(r *http.Request) httpapi.Response {
	q := r.URL.Query()
	var req publicRoomsReq
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
	return dir.publicRooms(r, q.Get("server"), req)
}

func (dir *directory) postPublicRooms(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req publicRoomsReq
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	return dir.publicRooms(r, r.URL.Query().Get("server"), req)
}

func (dir *directory) publicRooms(r *http.Request, server string, req publicRoomsReq) httpapi.Response {
	if server != "" && server != dir.opts.ServerName {
		return httpapi.InvalidParam("only this server's room directory is available")
	}
	body, err := storage.PublicRoomsPage(r.Context(), dir.db, req, publicRoomsMaxLimit)
	if errors.Is(err, storage.ErrBadSince) {
		return httpapi.InvalidParam("unknown since token")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, body)
}
