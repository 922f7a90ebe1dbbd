package adminapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"enclave/auditapi"
	"enclave/federationapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// Synapse's federation admin API (synapse-admin's Federation page): the
// destinations of the outbound queue, the rooms shared with each, and a
// reset that retries a backing-off destination at once.

// Destinations is what the admin API needs of the federation outbound
// queue (federationapi.Destinations implements it).
type Destinations interface {
	List(ctx context.Context) ([]federationapi.Destination, error)
	Get(ctx context.Context, name string) (federationapi.Destination, bool, error)
	Rooms(ctx context.Context, name string) ([]storage.RoomPos, error)
	Reset(name string) bool
}

type federationAdmin struct {
	db    *storage.DB
	dests func() Destinations
	audit *auditapi.Log
}

func (fa *federationAdmin) queue() (Destinations, httpapi.Response, bool) {
	var d Destinations
	if fa.dests != nil {
		d = fa.dests()
	}
	if d == nil {
		return nil, httpapi.NotFound("federation is disabled on this server"), false
	}
	return d, httpapi.Response{}, true
}

// destinationJSON is Synapse's shape. Retry state is kept in memory, so
// after a restart a destination starts with none. last_successful_stream_ordering
// is null: Enclave does not track per-destination stream positions.
func destinationJSON(d federationapi.Destination) map[string]any {
	return map[string]any{
		"destination": d.Name, "retry_last_ts": d.RetryLastTS, "retry_interval": d.RetryIntervalMS,
		"failure_ts": nullInt(d.FailureTS), "last_successful_stream_ordering": nil,
		"enclave_last_success_ts": nullInt(d.LastSuccessTS), "enclave_queued_pdus": d.QueuedPDUs, "enclave_queued_edus": d.QueuedEDUs,
	}
}

func nullInt(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

// GET /_synapse/admin/v1/federation/destinations?from=&limit=&destination=&order_by=&dir=
func (fa *federationAdmin) list(r *http.Request, _ *httpapi.Device) httpapi.Response {
	q, _, ok := fa.queue()
	if !ok {
		// Federation off: no destinations (synapse-admin shows an empty page).
		return httpapi.JSON(http.StatusOK, map[string]any{"destinations": []any{}, "total": 0})
	}
	from, ok1 := intParam(r, "from", 0)
	limit, ok2 := intParam(r, "limit", 100)
	orderBy, dir := r.URL.Query().Get("order_by"), r.URL.Query().Get("dir")
	if orderBy == "" {
		orderBy = "destination"
	}
	if !ok1 || !ok2 || (dir != "" && dir != "f" && dir != "b") ||
		!slices.Contains([]string{"destination", "retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering"}, orderBy) {
		return badParam("from and limit are non-negative integers, dir is f or b, order_by a destination field")
	}
	all, err := q.List(r.Context())
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	term := r.URL.Query().Get("destination")
	var ds []federationapi.Destination
	for _, d := range all {
		if term == "" || strings.Contains(d.Name, term) {
			ds = append(ds, d)
		}
	}
	key := func(d federationapi.Destination) int64 {
		switch orderBy {
		case "retry_last_ts":
			return d.RetryLastTS
		case "retry_interval":
			return d.RetryIntervalMS
		case "failure_ts":
			return d.FailureTS
		}
		return 0
	}
	slices.SortStableFunc(ds, func(x, y federationapi.Destination) int {
		c := cmpInt(key(x), key(y))
		if c == 0 {
			c = strings.Compare(x.Name, y.Name)
		}
		if dir == "b" {
			c = -c
		}
		return c
	})
	page := ds[min(from, len(ds)):min(from+limit, len(ds))]
	out := make([]map[string]any, 0, len(page))
	for _, d := range page {
		out = append(out, destinationJSON(d))
	}
	body := map[string]any{"destinations": out, "total": len(ds)}
	if from+len(page) < len(ds) {
		body["next_token"] = strconv.Itoa(from + len(page))
	}
	return httpapi.JSON(http.StatusOK, body)
}

func (fa *federationAdmin) load(r *http.Request) (Destinations, federationapi.Destination, httpapi.Response, bool) {
	q, resp, ok := fa.queue()
	if !ok {
		return nil, federationapi.Destination{}, resp, false
	}
	d, found, err := q.Get(r.Context(), vars(r, "destination"))
	if err != nil {
		return nil, d, httpapi.InternalError(r, err), false
	}
	if !found {
		return nil, d, httpapi.NotFound("unknown destination"), false
	}
	return q, d, httpapi.Response{}, true
}

// GET /_synapse/admin/v1/federation/destinations/{destination}
func (fa *federationAdmin) get(r *http.Request, _ *httpapi.Device) httpapi.Response {
	_, d, resp, ok := fa.load(r)
	if !ok {
		return resp
	}
	return httpapi.JSON(http.StatusOK, destinationJSON(d))
}

// GET /_synapse/admin/v1/federation/destinations/{destination}/rooms?from=&limit=&dir=
func (fa *federationAdmin) rooms(r *http.Request, _ *httpapi.Device) httpapi.Response {
	q, d, resp, ok := fa.load(r)
	if !ok {
		return resp
	}
	from, ok1 := intParam(r, "from", 0)
	limit, ok2 := intParam(r, "limit", 100)
	if !ok1 || !ok2 {
		return badParam("from and limit are non-negative integers")
	}
	rooms, err := q.Rooms(r.Context(), d.Name)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if r.URL.Query().Get("dir") == "b" {
		slices.Reverse(rooms)
	}
	page := rooms[min(from, len(rooms)):min(from+limit, len(rooms))]
	out := make([]map[string]any, 0, len(page))
	for _, rp := range page {
		out = append(out, map[string]any{"room_id": rp.RoomID, "stream_ordering": rp.Pos})
	}
	body := map[string]any{"rooms": out, "total": len(rooms)}
	if from+len(page) < len(rooms) {
		body["next_token"] = strconv.Itoa(from + len(page))
	}
	return httpapi.JSON(http.StatusOK, body)
}

// POST /_synapse/admin/v1/federation/destinations/{destination}/reset_connection:
// forget the destination's failures and retry now. As in Synapse, a
// destination that is not backing off is a 400.
func (fa *federationAdmin) reset(r *http.Request, dev *httpapi.Device) httpapi.Response {
	q, d, resp, ok := fa.load(r)
	if !ok {
		return resp
	}
	if !q.Reset(d.Name) {
		return badParam("the destination %s is not backing off", d.Name)
	}
	if err := fa.audit.Record(r.Context(), fa.db, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
		Action: auditapi.ActionFedReset, Target: d.Name}); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}
