package adminapi

import (
	"errors"
	"net/http"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// mediaOp serves quarantine, unquarantine and delete of one media item
// through the media repository.
func (a *API) mediaOp(op string) handler {
	return func(r *http.Request, dev *httpapi.Device) httpapi.Response {
		var m MediaAdmin
		if a.Media != nil {
			m = a.Media()
		}
		if m == nil {
			return httpapi.Unrecognized(http.StatusNotImplemented, "this server has no media repository")
		}
		server, id := vars(r, "serverName"), vars(r, "mediaId")
		ctx := r.Context()
		var err error
		switch op {
		case "quarantine":
			err = m.QuarantineMedia(ctx, server, id)
		case "unquarantine":
			err = m.UnquarantineMedia(ctx, server, id)
		default:
			err = m.DeleteMedia(ctx, server, id)
		}
		if errors.Is(err, storage.ErrNotFound) {
			return httpapi.NotFound("unknown media")
		}
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		// The media repository changes its rows in its own transaction, so
		// this record follows it rather than sharing it.
		if err := a.Audit.Record(ctx, a.DB, auditapi.Entry{
			Actor:  auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
			Action: auditapi.ActionMediaAdmin, Target: "mxc://" + server + "/" + id,
			Details: map[string]any{"op": op},
		}); err != nil {
			return httpapi.InternalError(r, err)
		}
		if op == "delete" {
			return httpapi.JSON(http.StatusOK, map[string]any{"deleted_media": []string{id}, "total": 1})
		}
		return httpapi.JSON(http.StatusOK, struct{}{})
	}
}
