package adminapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
	"enclave/syncapi"
)

// More of Synapse's room admin API: reading a room's messages as an
// administrator, making a user room admin, purging history (with its
// status) and the database's room statistics.

type roomOps struct {
	db         *storage.DB
	rooms      Rooms
	serverName string
	record     func(ctx context.Context, tx *storage.Tx, dev *httpapi.Device, e auditapi.Entry) error
	audit      *auditapi.Log
	purges     sync.Map // purge_id -> *purgeStatus
}

type purgeStatus struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

func (ro *roomOps) loadRoom(r *http.Request) (string, roomserver.StateMap, httpapi.Response, bool) {
	roomID := vars(r, "roomId")
	if _, err := storage.GetRoom(r.Context(), ro.db, roomID); errors.Is(err, storage.ErrNotFound) {
		return "", nil, httpapi.NotFound("room not found"), false
	} else if err != nil {
		return "", nil, httpapi.InternalError(r, err), false
	}
	st, err := ro.rooms.CurrentState(r.Context(), roomID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && len(st) == 0) {
		return "", nil, httpapi.NotFound("room not found"), false
	}
	if err != nil {
		return "", nil, httpapi.InternalError(r, err), false
	}
	return roomID, st, httpapi.Response{}, true
}

// GET /_synapse/admin/v1/rooms/{roomId}/messages?from=&to=&limit=&dir=
// The room's timeline whatever the administrator's membership, in the
// client format (chunk, start, end), dir f by default as in Synapse. The
// tokens are /sync's and /messages' own.
func (ro *roomOps) messages(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, _, resp, ok := ro.loadRoom(r)
	if !ok {
		return resp
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		dir = "f"
	}
	limit, ok := intParam(r, "limit", 10)
	if dir != "b" && dir != "f" || !ok || limit == 0 {
		return badParam("dir is b or f, limit a positive integer")
	}
	limit = min(limit, 1000)
	current := ro.db.Stream.Current()
	from := int64(math.MinInt64)
	if dir == "b" {
		from = current
	}
	if s := q.Get("from"); s != "" {
		tok, err := syncapi.ParseToken(s)
		if err != nil {
			return badParam("invalid from token")
		}
		from = tok.Pos
	}
	lo, hi := from, current
	if dir == "b" {
		lo, hi = math.MinInt64, min(from, current)
	}
	if s := q.Get("to"); s != "" {
		tok, err := syncapi.ParseToken(s)
		if err != nil {
			return badParam("invalid to token")
		}
		if dir == "b" {
			lo = tok.Pos
		} else {
			hi = min(hi, tok.Pos)
		}
	}
	evs, err := storage.RoomEventsRange(r.Context(), ro.db, roomID, lo, hi, limit, dir == "b")
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	chunk := make([]syncapi.ClientEvent, 0, len(evs))
	for _, e := range evs {
		pdu, err := ro.rooms.PDU(e)
		if err != nil {
			continue
		}
		chunk = append(chunk, syncapi.FormatEvent(e, pdu, syncapi.Viewer{UserID: dev.UserID, DeviceID: dev.DeviceID}, true))
	}
	body := map[string]any{"chunk": chunk, "start": syncapi.Token{Pos: from}.String()}
	if from == math.MinInt64 {
		body["start"] = syncapi.Token{Pos: lo}.String()
	}
	if len(evs) > 0 {
		end := evs[len(evs)-1].StreamPos
		if dir == "b" {
			end-- // the next page starts below the last event returned
		}
		body["end"] = syncapi.Token{Pos: end}.String()
	}
	return httpapi.JSON(http.StatusOK, body)
}

// POST /_synapse/admin/v1/rooms/{roomId}/make_room_admin {"user_id"}: the
// local member with the highest power level (one who may change power
// levels) raises user_id to its own level, inviting them first if they
// are not in the room and it is not public. user_id defaults to the
// caller.
func (ro *roomOps) makeRoomAdmin(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, st, resp, ok := ro.loadRoom(r)
	if !ok {
		return resp
	}
	var req struct {
		UserID string `json:"user_id"`
	}
	if r.ContentLength != 0 {
		if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
			return resp
		}
	}
	if req.UserID == "" {
		req.UserID = dev.UserID
	}
	if _, server, ok := strings.Cut(req.UserID, ":"); !ok || server != ro.serverName || !strings.HasPrefix(req.UserID, "@") {
		return badParam("%s is not a user of this server", req.UserID)
	}
	if _, err := storage.GetAccount(r.Context(), ro.db, req.UserID); errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("user not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	pl := roomserver.PowerLevels(st)
	need := pl.EventLevel("m.room.power_levels", true)
	var admin string
	var level int64 = math.MinInt64
	for k, ev := range st {
		if k.Type != "m.room.member" || !strings.HasSuffix(k.StateKey, ":"+ro.serverName) {
			continue
		}
		if m, _ := ev.Membership(); m != "join" {
			continue
		}
		if l := roomserver.PowerLevel(st, k.StateKey); l > level || (l == level && k.StateKey < admin) {
			admin, level = k.StateKey, l
		}
	}
	if admin == "" || level < need {
		return badParam("no local member of %s may change its power levels", roomID)
	}
	grant := level
	if grant >= 1<<53 { // a privileged creator (v12): give the highest listed level
		grant = 100
		for _, l := range pl.Users {
			grant = max(grant, l)
		}
	}
	ctx := r.Context()
	var joinRule struct {
		JoinRule string `json:"join_rule"`
	}
	if ev := st.Get("m.room.join_rules", ""); ev != nil {
		_ = json.Unmarshal(ev.Content(), &joinRule)
	}
	if m := st.Membership(req.UserID); m != "join" && m != "invite" && joinRule.JoinRule != "public" {
		target := req.UserID
		invite, _ := json.Marshal(map[string]any{"membership": "invite"})
		if _, err := ro.rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: roomID, Sender: admin, Type: "m.room.member", StateKey: &target, Content: invite}); err != nil {
			return sendError(r, err)
		}
	}
	content := map[string]any{}
	if ev := st.Get("m.room.power_levels", ""); ev != nil {
		_ = json.Unmarshal(ev.Content(), &content)
	}
	users, _ := content["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
		if ev := st.Get("m.room.power_levels", ""); ev == nil {
			for u, l := range pl.Users {
				users[u] = l
			}
		}
	}
	users[req.UserID] = grant
	content["users"] = users
	raw, _ := json.Marshal(content)
	empty := ""
	ev, err := ro.rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: roomID, Sender: admin, Type: "m.room.power_levels", StateKey: &empty, Content: raw})
	if err != nil {
		return sendError(r, err)
	}
	if err := ro.audit.Record(ctx, ro.db, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
		Action: auditapi.ActionRoomAdmin, Target: req.UserID, RoomID: roomID,
		Details: map[string]any{"event_id": ev.EventID, "sent_as": admin, "level": grant}}); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

func sendError(r *http.Request, err error) httpapi.Response {
	var na *roomserver.NotAllowedError
	if errors.As(err, &na) {
		return httpapi.Forbidden("%s", na.Reason)
	}
	return httpapi.InternalError(r, err)
}

// POST /_synapse/admin/v1/purge_history/{roomId}
// {"delete_local_events", "purge_up_to_event_id" | "purge_up_to_ts"}:
// delete the room's timeline events (never state, never the latest
// events) before the point, through the room server. Local users' events
// stay unless delete_local_events. A room under legal hold is refused.
// Synapse runs the purge in the background; Enclave finishes it before
// answering and keeps its status for purge_history_status.
func (ro *roomOps) purgeHistory(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID := vars(r, "roomId")
	ctx := r.Context()
	var req struct {
		DeleteLocal bool   `json:"delete_local_events"`
		UpToEventID string `json:"purge_up_to_event_id"`
		UpToTS      *int64 `json:"purge_up_to_ts"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if _, err := storage.GetRoom(ctx, ro.db, roomID); errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("room not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	var before, beforePos int64
	switch {
	case req.UpToEventID != "":
		ev, err := storage.GetEvent(ctx, ro.db, req.UpToEventID)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && ev.RoomID != roomID) {
			return httpapi.NotFound("event %s not found in the room", req.UpToEventID)
		}
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		if ev.StreamPos == 0 {
			return badParam("event %s is not in the room's timeline", req.UpToEventID)
		}
		before, beforePos = ev.OriginTS, ev.StreamPos
	case req.UpToTS != nil:
		before = *req.UpToTS
	default:
		return httpapi.MissingParam("purge_up_to_event_id or purge_up_to_ts is required")
	}
	held, err := storage.RoomUnderHold(ctx, ro.db, roomID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if held {
		return httpapi.Forbidden("room %s is under legal hold and cannot be purged", roomID)
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	purgeID := hex.EncodeToString(b)
	keep := ro.serverName
	if req.DeleteLocal {
		keep = ""
	}
	st := &purgeStatus{Status: "complete"}
	_, err = ro.rooms.PurgeHistoryKeeping(ctx, roomID, before, beforePos, keep, func(tx *storage.Tx, n int64) error {
		return ro.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionPurgeHistory, Target: roomID, RoomID: roomID,
			Details: map[string]any{"events": n, "before_ts": before, "delete_local_events": req.DeleteLocal, "purge_id": purgeID}})
	})
	if err != nil {
		logrus.WithError(err).WithField("room_id", roomID).Error("admin: purging history")
		st.Status, st.Error = "failed", "internal error"
	}
	ro.purges.Store(purgeID, st)
	return httpapi.JSON(http.StatusOK, map[string]any{"purge_id": purgeID})
}

// GET /_synapse/admin/v1/purge_history_status/{purgeId}
func (ro *roomOps) purgeStatus(r *http.Request, _ *httpapi.Device) httpapi.Response {
	v, ok := ro.purges.Load(vars(r, "purgeId"))
	if !ok {
		return httpapi.NotFound("unknown purge")
	}
	return httpapi.JSON(http.StatusOK, v)
}

// GET /_synapse/admin/v1/statistics/database/rooms: the rooms taking the
// most space, estimated from their events' JSON.
func (ro *roomOps) databaseRooms(r *http.Request, _ *httpapi.Device) httpapi.Response {
	sizes, err := storage.RoomSizes(r.Context(), ro.db)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	out := make([]map[string]any, 0, len(sizes))
	for _, s := range sizes {
		out = append(out, map[string]any{"room_id": s.RoomID, "estimated_size": s.Bytes})
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"rooms": out})
}
