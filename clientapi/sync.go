package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"enclave/internal/httpapi"
	"enclave/internal/lru"
	"enclave/storage"
	"enclave/syncapi"
)

// syncing serves /sync, sliding sync and the /sync filters, over the
// sync stream; it sets presence on the way in through social.
type syncing struct {
	opts   Options
	db     *storage.DB
	sync   *syncapi.Syncer
	social *social // set_presence
	// filters keeps parsed /sync filters: clients name the same filter on
	// every /sync, and a stored filter never changes, so the store lookup
	// and the parse are done once. Entries are shared read-only.
	filters *lru.Cache[string, *syncapi.Filter]
}

// maxSyncTimeout bounds how long a long-poll may wait.
const maxSyncTimeout = 5 * time.Minute

func (sy *syncing) syncHandler(r *http.Request, dev *httpapi.Device) httpapi.Response {
	q := r.URL.Query()
	p := syncapi.Params{UserID: dev.UserID, DeviceID: dev.DeviceID}
	if s := q.Get("since"); s != "" {
		tok, err := syncapi.ParseToken(s)
		if err != nil || tok.Pos < 0 {
			return httpapi.InvalidParam("invalid since token")
		}
		p.Since = &tok
	}
	if s := q.Get("timeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			return httpapi.InvalidParam("timeout must be a non-negative integer")
		}
		p.Timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		p.FullState = true
	default:
		return httpapi.InvalidParam("full_state must be true or false")
	}
	// MSC4222 (spec v1.16): state_after instead of state. The unstable
	// flag answers under the unstable field name, as clients built
	// against the MSC look for it there.
	for _, f := range []struct {
		name string
		mode syncapi.StateAfterMode
	}{{"use_state_after", syncapi.StateAfterStable}, {"org.matrix.msc4222.use_state_after", syncapi.StateAfterUnstable}} {
		switch q.Get(f.name) {
		case "", "false":
		case "true":
			if p.StateAfter == syncapi.StateAfterOff {
				p.StateAfter = f.mode
			}
		default:
			return httpapi.InvalidParam("%s must be true or false", f.name)
		}
	}
	switch q.Get("set_presence") {
	case "", "online", "offline", "unavailable":
	default:
		return httpapi.InvalidParam("set_presence must be online, offline or unavailable")
	}
	sy.social.syncPresence(r.Context(), dev.UserID, q.Get("set_presence"))
	if f := q.Get("filter"); f != "" {
		filter, resp, ok := sy.syncFilter(r, dev.UserID, f)
		if !ok {
			return resp
		}
		p.Filter = filter
	}
	resp, err := sy.sync.Sync(r.Context(), p)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return httpapi.Errf(499, "M_UNKNOWN", "client went away")
		}
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, resp)
}

// maxCachedInlineFilter bounds the inline filters worth caching (the key
// is the filter itself).
const maxCachedInlineFilter = 2048

// syncFilter resolves /sync's filter parameter: a stored filter ID or
// inline JSON.
func (sy *syncing) syncFilter(r *http.Request, userID, f string) (*syncapi.Filter, httpapi.Response, bool) {
	cache := sy.filters
	inline := strings.HasPrefix(strings.TrimSpace(f), "{")
	key := userID + "\x00" + f
	if filter, ok := cache.Get(key); ok {
		return filter, httpapi.Response{}, true
	}
	raw := []byte(f)
	if !inline {
		var err error
		raw, err = storage.GetFilter(r.Context(), sy.db, userID, f)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, httpapi.NotFound("filter %s not found", f), false
		} else if err != nil {
			return nil, httpapi.InternalError(r, err), false
		}
	}
	filter, err := syncapi.ParseFilter(raw)
	if err != nil {
		return nil, httpapi.BadJSON("invalid filter: %v", err), false
	}
	if !inline || len(f) <= maxCachedInlineFilter {
		cache.Put(key, filter)
	}
	return filter, httpapi.Response{}, true
}

func (sy *syncing) ownUser(r *http.Request, dev *httpapi.Device) (httpapi.Response, bool) {
	if httpapi.Vars(r)["userId"] != dev.UserID {
		return httpapi.Forbidden("you may only manage your own filters"), false
	}
	return httpapi.Response{}, true
}

func (sy *syncing) postFilter(r *http.Request, dev *httpapi.Device) httpapi.Response {
	if resp, ok := sy.ownUser(r, dev); !ok {
		return resp
	}
	body, resp, ok := httpapi.ReadJSONObject(r)
	if !ok {
		return resp
	}
	f, err := syncapi.ParseFilter(body)
	if err != nil {
		return httpapi.BadJSON("invalid filter: %v", err)
	}
	if bad := badFilterID(f); bad != "" {
		return httpapi.InvalidParam("%s", bad)
	}
	var compact json.RawMessage = body
	id, err := storage.InsertFilter(r.Context(), sy.db, dev.UserID, compact)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]string{"filter_id": id})
}

func (sy *syncing) getFilter(r *http.Request, dev *httpapi.Device) httpapi.Response {
	if resp, ok := sy.ownUser(r, dev); !ok {
		return resp
	}
	f, err := storage.GetFilter(r.Context(), sy.db, dev.UserID, httpapi.Vars(r)["filterId"])
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("filter not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.Response{Code: 200, Body: f}
}

// badFilterID names the first room or user ID in a filter that is not one
// (the spec's 400 M_INVALID_PARAM), or returns "".
func badFilterID(f *syncapi.Filter) string {
	rooms := func(list *[]string, not []string) string {
		if list != nil {
			not = append(append([]string(nil), *list...), not...)
		}
		for _, id := range not {
			if !validRoomID.MatchString(id) {
				return fmt.Sprintf("%q is not a room ID", id)
			}
		}
		return ""
	}
	users := func(ef syncapi.EventFilter) string {
		all := ef.NotSenders
		if ef.Senders != nil {
			all = append(append([]string(nil), *ef.Senders...), all...)
		}
		for _, id := range all {
			if local, server, ok := strings.Cut(strings.TrimPrefix(id, "@"), ":"); !ok || !strings.HasPrefix(id, "@") || local == "" || server == "" {
				return fmt.Sprintf("%q is not a user ID", id)
			}
		}
		return ""
	}
	rm := f.Room
	for _, bad := range []string{
		rooms(rm.Rooms, rm.NotRooms),
		users(f.AccountData), users(f.Presence),
		rooms(rm.Timeline.Rooms, rm.Timeline.NotRooms), users(rm.Timeline.EventFilter),
		rooms(rm.State.Rooms, rm.State.NotRooms), users(rm.State.EventFilter),
		rooms(rm.Ephemeral.Rooms, rm.Ephemeral.NotRooms), users(rm.Ephemeral.EventFilter),
		rooms(rm.AccountData.Rooms, rm.AccountData.NotRooms), users(rm.AccountData.EventFilter),
	} {
		if bad != "" {
			return bad
		}
	}
	return ""
}
