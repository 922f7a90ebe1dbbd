package adminapi

import (
	"net/http"
	"strings"

	"enclave/auditapi"
	"enclave/internal/accounts"
	"enclave/internal/httpapi"
	"enclave/mediaapi"
	"enclave/storage"
)

// More of Synapse's user admin API, as synapse-admin and synadm call it.

// GET /_synapse/admin/v1/username_available?username=foo
func (a *API) usernameAvailable(r *http.Request, _ *httpapi.Device) httpapi.Response {
	name := strings.ToLower(strings.TrimPrefix(r.URL.Query().Get("username"), "@"))
	if name == "" {
		return httpapi.MissingParam("username is required")
	}
	if !accounts.ValidLocalpart(name) {
		return httpapi.Errf(http.StatusBadRequest, "M_INVALID_USERNAME", "%q is not a valid user name", name)
	}
	taken, err := storage.AccountExists(r.Context(), a.DB, "@"+name+":"+a.ServerName)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if taken {
		return httpapi.Errf(http.StatusBadRequest, "M_USER_IN_USE", "the user name %q is taken", name)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"available": true})
}

// GET /_synapse/admin/v1/users/{userId}/pushers
func (a *API) userPushers(r *http.Request, _ *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	ps, err := storage.Pushers(r.Context(), a.DB, acc.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if ps == nil {
		ps = []*storage.Pusher{}
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"pushers": ps, "total": len(ps)})
}

// mediaJSON renders one item as Synapse's user media list does. The
// content type and upload name are sealed at rest with the content, so the
// listing shows null for them rather than unsealing every item.
func mediaJSON(m mediaapi.MediaInfo) map[string]any {
	var quarantinedBy any
	if m.Quarantined {
		quarantinedBy = "admin"
	}
	return map[string]any{
		"media_id": m.MediaID, "media_length": m.Size, "created_ts": m.CreatedTS, "last_access_ts": nil,
		"media_type": nil, "upload_name": nil, "quarantined_by": quarantinedBy, "safe_from_quarantine": false,
	}
}

// GET /_synapse/admin/v1/users/{userId}/media?from=&limit=
func (a *API) userMedia(r *http.Request, _ *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	from, ok1 := intParam(r, "from", 0)
	limit, ok2 := intParam(r, "limit", 100)
	if !ok1 || !ok2 {
		return badParam("from and limit are non-negative integers")
	}
	items, err := a.Media().ListUserMedia(r.Context(), acc.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	out := []map[string]any{}
	for i := from; i < len(items) && i < from+limit; i++ {
		out = append(out, mediaJSON(items[i]))
	}
	body := map[string]any{"media": out, "total": len(items)}
	if from+len(out) < len(items) {
		body["next_token"] = from + len(out)
	}
	return httpapi.JSON(http.StatusOK, body)
}

// DELETE /_synapse/admin/v1/users/{userId}/media: every item, audited.
func (a *API) deleteUserMedia(r *http.Request, dev *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	items, err := a.Media().ListUserMedia(r.Context(), acc.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	n, err := a.Media().DeleteUserMedia(r.Context(), acc.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	ids := []string{}
	for _, m := range items[:min(n, len(items))] {
		ids = append(ids, m.MediaID)
	}
	if err := a.Audit.Record(r.Context(), a.DB, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
		Action: auditapi.ActionMediaAdmin, Target: acc.UserID, Details: map[string]any{"op": "delete_user_media", "count": n}}); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"deleted_media": ids, "total": len(ids)})
}
