package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"enclave/internal/httpapi"
	"enclave/storage"
	"enclave/syncapi"
)

// getNotifications pages through the events the user was notified about,
// newest first. Tokens are notification row IDs.
func (eg *events) getNotifications(r *http.Request, dev *httpapi.Device) httpapi.Response {
	q := r.URL.Query()
	var before int64
	if s := q.Get("from"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return httpapi.InvalidParam("invalid from token")
		}
		before = n
	}
	limit, resp, ok := parseLimit(r, 20, 100)
	if !ok {
		return resp
	}
	only := q.Get("only")
	if only != "" && only != "highlight" {
		return httpapi.InvalidParam("only must be highlight")
	}
	ns, err := storage.ListNotifications(r.Context(), eg.db, dev.UserID, before, limit, only == "highlight")
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.EventID
	}
	evs, err := storage.GetEvents(r.Context(), eg.db, ids)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	byID := make(map[string]*storage.Event, len(evs))
	for _, e := range evs {
		byID[e.EventID] = e
	}
	out := make([]map[string]any, 0, len(ns))
	for _, n := range ns {
		e := byID[n.EventID]
		if e == nil {
			continue
		}
		pdu, err := eg.rs.PDU(e)
		if err != nil {
			continue
		}
		var actions []any
		_ = json.Unmarshal(n.Actions, &actions)
		if actions == nil {
			actions = []any{}
		}
		out = append(out, map[string]any{
			"actions": actions,
			"event":   syncapi.FormatEvent(e, pdu, viewer(dev), true),
			"read":    n.Read,
			"room_id": n.RoomID,
			"ts":      n.TS,
		})
	}
	body := map[string]any{"notifications": out}
	if len(ns) == limit && len(ns) > 0 {
		body["next_token"] = strconv.FormatInt(ns[len(ns)-1].ID, 10)
	}
	return httpapi.JSON(200, body)
}
