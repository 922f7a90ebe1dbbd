package clientapi

import (
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// Reporting content: events, rooms and users reported to this server's
// admins land in the content_reports table (storage/reports.go). Nothing
// about a report is shown to the reported party.

// maxReportReason bounds a stored reason (characters).
const maxReportReason = 2000

type reportBody struct {
	Reason string `json:"reason"`
	Score  *int64 `json:"score"`
}

func readReport(r *http.Request) (reportBody, httpapi.Response, bool) {
	var b reportBody
	if resp, ok := httpapi.DecodeJSON(r, &b); !ok {
		return b, resp, false
	}
	if utf8.RuneCountInString(b.Reason) > maxReportReason {
		return b, httpapi.InvalidParam("reason is longer than %d characters", maxReportReason), false
	}
	if b.Score != nil && (*b.Score < -100 || *b.Score > 0) {
		return b, httpapi.InvalidParam("score must be between -100 and 0"), false
	}
	return b, httpapi.Response{}, true
}

func (a *API) storeReport(r *http.Request, rep *storage.Report) httpapi.Response {
	rep.CreatedTS = time.Now().UnixMilli()
	if _, err := storage.InsertReport(r.Context(), a.db, rep); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, struct{}{})
}

// reportEvent needs the reporter joined to the room and the event visible
// to them; anything else is one 404 so reports cannot probe for events.
func (a *API) reportEvent(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	body, resp, ok := readReport(r)
	if !ok {
		return resp
	}
	notFound := httpapi.NotFound("the event was not found or you are not joined to the room")
	m, err := a.rs.Membership(r.Context(), roomID, dev.UserID)
	if errors.Is(err, roomserver.ErrRoomNotFound) || (err == nil && m != "join") {
		return notFound
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	ev, err := storage.GetEvent(r.Context(), a.db, httpapi.Vars(r)["eventId"])
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (ev.RoomID != roomID || ev.StreamPos == 0 || ev.Redacted)) {
		return notFound
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if vis, err := a.sync.Visible(r.Context(), dev.UserID, roomID, []*storage.Event{ev}); err != nil {
		return httpapi.InternalError(r, err)
	} else if len(vis) == 0 {
		return notFound
	}
	return a.storeReport(r, &storage.Report{Kind: storage.ReportEvent, Reporter: dev.UserID, RoomID: roomID, EventID: ev.EventID,
		TargetUser: ev.Sender, Reason: body.Reason, Score: body.Score})
}

// reportRoom needs only that the room exists here (the spec does not ask
// the reporter to be in it).
func (a *API) reportRoom(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	body, resp, ok := readReport(r)
	if !ok {
		return resp
	}
	if _, err := storage.GetRoom(r.Context(), a.db, roomID); errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("the room was not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return a.storeReport(r, &storage.Report{Kind: storage.ReportRoom, Reporter: dev.UserID, RoomID: roomID, Reason: body.Reason})
}

// reportUser accepts local accounts and users this server has seen in a
// room.
func (a *API) reportUser(r *http.Request, dev *httpapi.Device) httpapi.Response {
	userID := httpapi.Vars(r)["userId"]
	if _, _, err := gomatrixserverlib.SplitID('@', userID); err != nil {
		return httpapi.InvalidParam("invalid user ID %q", userID)
	}
	body, resp, ok := readReport(r)
	if !ok {
		return resp
	}
	known := false
	if strings.HasSuffix(userID, ":"+a.opts.ServerName) {
		ex, err := storage.AccountExists(r.Context(), a.db, userID)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		known = ex
	} else {
		rooms, err := storage.RoomsByMembership(r.Context(), a.db, userID, "join", "invite", "leave", "ban", "knock")
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		known = len(rooms) > 0
	}
	if !known {
		return httpapi.NotFound("the user was not found")
	}
	return a.storeReport(r, &storage.Report{Kind: storage.ReportUser, Reporter: dev.UserID, TargetUser: userID, Reason: body.Reason})
}
