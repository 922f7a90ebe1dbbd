package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"enclave/storage"
	"enclave/syncapi"
)

func (a *API) syncRoutes() {
	a.v3("GET", "/sync", "sync", a.syncHandler)
	a.v3("POST", "/user/{userId}/filter", "filter", a.postFilter)
	a.v3("GET", "/user/{userId}/filter/{filterId}", "filter", a.getFilter)
}

// maxSyncTimeout bounds how long a long-poll may wait.
const maxSyncTimeout = 5 * time.Minute

func (a *API) syncHandler(r *http.Request, dev *Device) Response {
	q := r.URL.Query()
	p := syncapi.Params{UserID: dev.UserID, DeviceID: dev.DeviceID}
	if s := q.Get("since"); s != "" {
		tok, err := syncapi.ParseToken(s)
		if err != nil || tok.Pos < 0 {
			return InvalidParam("invalid since token")
		}
		p.Since = &tok
	}
	if s := q.Get("timeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			return InvalidParam("timeout must be a non-negative integer")
		}
		p.Timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		p.FullState = true
	default:
		return InvalidParam("full_state must be true or false")
	}
	switch q.Get("set_presence") {
	case "", "online", "offline", "unavailable":
	default:
		return InvalidParam("set_presence must be online, offline or unavailable")
	}
	a.syncPresence(r.Context(), dev.UserID, q.Get("set_presence"))
	if f := q.Get("filter"); f != "" {
		filter, resp, ok := a.syncFilter(r, dev.UserID, f)
		if !ok {
			return resp
		}
		p.Filter = filter
	}
	resp, err := a.sync.Sync(r.Context(), p)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return Errf(499, "M_UNKNOWN", "client went away")
		}
		return InternalError(r, err)
	}
	return JSON(200, resp)
}

// maxCachedInlineFilter bounds the inline filters worth caching (the key
// is the filter itself).
const maxCachedInlineFilter = 2048

// syncFilter resolves /sync's filter parameter: a stored filter ID or
// inline JSON.
func (a *API) syncFilter(r *http.Request, userID, f string) (*syncapi.Filter, Response, bool) {
	cache := a.syncFilters
	inline := strings.HasPrefix(strings.TrimSpace(f), "{")
	key := userID + "\x00" + f
	if filter, ok := cache.Get(key); ok {
		return filter, Response{}, true
	}
	raw := []byte(f)
	if !inline {
		var err error
		raw, err = storage.GetFilter(r.Context(), a.db, userID, f)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, NotFound("filter %s not found", f), false
		} else if err != nil {
			return nil, InternalError(r, err), false
		}
	}
	filter, err := syncapi.ParseFilter(raw)
	if err != nil {
		return nil, BadJSON("invalid filter: %v", err), false
	}
	if !inline || len(f) <= maxCachedInlineFilter {
		cache.Put(key, filter)
	}
	return filter, Response{}, true
}

func (a *API) ownUser(r *http.Request, dev *Device) (Response, bool) {
	if vars(r)["userId"] != dev.UserID {
		return Forbidden("you may only manage your own filters"), false
	}
	return Response{}, true
}

func (a *API) postFilter(r *http.Request, dev *Device) Response {
	if resp, ok := a.ownUser(r, dev); !ok {
		return resp
	}
	body, resp, ok := readJSONObject(r)
	if !ok {
		return resp
	}
	if _, err := syncapi.ParseFilter(body); err != nil {
		return BadJSON("invalid filter: %v", err)
	}
	var compact json.RawMessage = body
	id, err := storage.InsertFilter(r.Context(), a.db, dev.UserID, compact)
	if err != nil {
		return InternalError(r, err)
	}
	return JSON(200, map[string]string{"filter_id": id})
}

func (a *API) getFilter(r *http.Request, dev *Device) Response {
	if resp, ok := a.ownUser(r, dev); !ok {
		return resp
	}
	f, err := storage.GetFilter(r.Context(), a.db, dev.UserID, vars(r)["filterId"])
	if errors.Is(err, storage.ErrNotFound) {
		return NotFound("filter not found")
	} else if err != nil {
		return InternalError(r, err)
	}
	return Response{Code: 200, Body: f}
}
