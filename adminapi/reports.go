package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// Event reports, in the shapes of Synapse's Event Reports admin API
// (synapse-admin's "Reports" page and synadm read them).

// reports serves them: it reads the store and, for each report's room
// label, the room server's current state.
type reports struct {
	db     *storage.DB
	rooms  Rooms
	record func(ctx context.Context, tx *storage.Tx, dev *httpapi.Device, e auditapi.Entry) error
}

// reportJSON renders a report as Synapse lists it, with the room's name
// and canonical alias and the reported event's sender.
func (rp *reports) reportJSON(ctx context.Context, rep *storage.Report) (map[string]any, *storage.Event) {
	var name, alias, sender string
	if state, err := rp.rooms.CurrentState(ctx, rep.RoomID); err == nil {
		var c struct {
			Name  string `json:"name"`
			Alias string `json:"alias"`
		}
		if ev := state.Get("m.room.name", ""); ev != nil && json.Unmarshal(ev.Content(), &c) == nil {
			name = c.Name
		}
		if ev := state.Get("m.room.canonical_alias", ""); ev != nil && json.Unmarshal(ev.Content(), &c) == nil {
			alias = c.Alias
		}
	}
	ev, err := storage.GetEvent(ctx, rp.db, rep.EventID)
	if err == nil {
		sender = ev.Sender
	} else {
		ev = nil
	}
	var score any
	if rep.Score != nil {
		score = *rep.Score
	}
	return map[string]any{
		"id": rep.ID, "received_ts": rep.CreatedTS, "room_id": rep.RoomID, "event_id": rep.EventID,
		"user_id": rep.Reporter, "reason": nullable(rep.Reason), "score": score,
		"name": nullable(name), "canonical_alias": nullable(alias), "sender": nullable(sender),
	}, ev
}

// GET /_synapse/admin/v1/event_reports?from=&limit=&dir=&user_id=&room_id=
func (rp *reports) list(r *http.Request, _ *httpapi.Device) httpapi.Response {
	from, ok1 := intParam(r, "from", 0)
	limit, ok2 := intParam(r, "limit", 100)
	dir := r.URL.Query().Get("dir")
	if !ok1 || !ok2 || (dir != "" && dir != "b" && dir != "f") {
		return badParam("from and limit are non-negative integers, dir is b or f")
	}
	f := storage.EventReportFilter{From: from, Limit: limit, Forward: dir == "f",
		UserID: r.URL.Query().Get("user_id"), RoomID: r.URL.Query().Get("room_id")}
	reps, total, err := storage.ListEventReports(r.Context(), rp.db, f)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	out := make([]map[string]any, 0, len(reps))
	for _, rep := range reps {
		j, _ := rp.reportJSON(r.Context(), rep)
		out = append(out, j)
	}
	body := map[string]any{"event_reports": out, "total": total}
	if from+len(reps) < total {
		body["next_token"] = from + len(reps)
	}
	return httpapi.JSON(http.StatusOK, body)
}

func (rp *reports) load(r *http.Request) (*storage.Report, httpapi.Response, bool) {
	id, err := strconv.ParseInt(vars(r, "reportId"), 10, 64)
	if err != nil || id <= 0 {
		return nil, badParam("the report ID is a positive integer"), false
	}
	rep, err := storage.GetReport(r.Context(), rp.db, id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && rep.Kind != storage.ReportEvent) {
		return nil, httpapi.NotFound("no such event report"), false
	}
	if err != nil {
		return nil, httpapi.InternalError(r, err), false
	}
	return rep, httpapi.Response{}, true
}

// GET /_synapse/admin/v1/event_reports/{reportId}: the report with the
// reported event's JSON.
func (rp *reports) get(r *http.Request, _ *httpapi.Device) httpapi.Response {
	rep, resp, ok := rp.load(r)
	if !ok {
		return resp
	}
	body, ev := rp.reportJSON(r.Context(), rep)
	body["event_json"] = nil
	if ev != nil {
		body["event_json"] = json.RawMessage(ev.JSON)
	}
	return httpapi.JSON(http.StatusOK, body)
}

// DELETE /_synapse/admin/v1/event_reports/{reportId}
func (rp *reports) delete(r *http.Request, dev *httpapi.Device) httpapi.Response {
	rep, resp, ok := rp.load(r)
	if !ok {
		return resp
	}
	err := rp.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		if _, err := storage.DeleteReport(r.Context(), tx, rep.ID); err != nil {
			return err
		}
		return rp.record(r.Context(), tx, dev, auditapi.Entry{Action: auditapi.ActionReportDelete, Target: strconv.FormatInt(rep.ID, 10), RoomID: rep.RoomID,
			Details: map[string]any{"event_id": rep.EventID, "reporter": rep.Reporter}})
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}
