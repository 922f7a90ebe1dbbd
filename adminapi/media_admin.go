package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/mediaapi"
	"enclave/storage"
)

// The rest of Synapse's media admin API and its media statistics, as
// synapse-admin's Media pages and synadm's media commands call them.

// mediaAdmin serves them from the media repository and, for the media a
// room's events name, the store.
type mediaAdmin struct {
	db         *storage.DB
	serverName string
	media      func() MediaAdmin
	audit      *auditapi.Log
}

func (m *mediaAdmin) repo() (MediaAdmin, httpapi.Response, bool) {
	var repo MediaAdmin
	if m.media != nil {
		repo = m.media()
	}
	if repo == nil {
		return nil, httpapi.Unrecognized(http.StatusNotImplemented, "this server has no media repository"), false
	}
	return repo, httpapi.Response{}, true
}

// recordAfter audits a change the media repository made in its own
// transactions (each deletion also has its own entry there).
func (m *mediaAdmin) recordAfter(r *http.Request, dev *httpapi.Device, target string, details map[string]any) error {
	return m.audit.Record(r.Context(), m.db, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
		Action: auditapi.ActionMediaAdmin, Target: target, Details: details})
}

// GET /_synapse/admin/v1/room/{roomId}/media: the mxc URIs the room's
// events name (content.url, content.info.thumbnail_url, avatars), local and
// remote. Encrypted events name none that the server can read. "total"
// (not in Synapse's answer) counts the local ones, which synapse-admin
// lists and pages by.
func (m *mediaAdmin) roomMedia(r *http.Request, _ *httpapi.Device) httpapi.Response {
	roomID := vars(r, "roomId")
	ctx := r.Context()
	if _, err := storage.GetRoom(ctx, m.db, roomID); errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("room not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	local, remote := []string{}, []string{}
	seen := map[string]bool{}
	add := func(uri string) {
		server, id, ok := strings.Cut(strings.TrimPrefix(uri, "mxc://"), "/")
		if !strings.HasPrefix(uri, "mxc://") || !ok || server == "" || id == "" || seen[uri] {
			return
		}
		seen[uri] = true
		if server == m.serverName {
			local = append(local, uri)
		} else {
			remote = append(remote, uri)
		}
	}
	from := int64(math.MinInt64)
	for {
		evs, err := storage.RoomEventsRange(ctx, m.db, roomID, from, math.MaxInt64, 500, false)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		for _, ev := range evs {
			if ev.Redacted {
				continue
			}
			var e struct {
				Content struct {
					URL  string `json:"url"`
					Info struct {
						ThumbnailURL string `json:"thumbnail_url"`
					} `json:"info"`
				} `json:"content"`
			}
			if json.Unmarshal(ev.JSON, &e) == nil {
				add(e.Content.URL)
				add(e.Content.Info.ThumbnailURL)
			}
		}
		if len(evs) < 500 {
			break
		}
		from = evs[len(evs)-1].StreamPos
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"local": local, "remote": remote, "total": len(local)})
}

// GET /_synapse/admin/v1/media/{serverName}/{mediaId}: one item's details.
// Enclave keeps no last-access time or file-system ID: last_access_ts is
// the time it was stored, filesystem_id its sealed blob's ID is not
// disclosed (null).
func (m *mediaAdmin) info(r *http.Request, _ *httpapi.Device) httpapi.Response {
	repo, resp, ok := m.repo()
	if !ok {
		return resp
	}
	d, err := repo.MediaDetails(r.Context(), vars(r, "serverName"), vars(r, "mediaId"))
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("unknown media")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	var quarantinedBy any
	if d.Quarantined {
		quarantinedBy = "admin"
	}
	stored := d.UploadedTS
	if stored == 0 {
		stored = d.CreatedTS
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"media_info": map[string]any{
		"media_origin": d.ServerName, "user_id": nullable(d.UserID), "media_id": d.MediaID,
		"media_type": nullable(d.ContentType), "media_length": d.Size, "upload_name": nullable(d.FileName),
		"created_ts": d.CreatedTS, "last_access_ts": stored, "filesystem_id": nil, "url_cache": nil,
		"quarantined_by": quarantinedBy, "safe_from_quarantine": false, "authenticated": true, "sha256": nullable(d.SHA256),
	}})
}

// POST /_synapse/admin/v1/media/{serverName}/delete?before_ts=&size_gt=&keep_profiles=
// (and /v1/media/delete): delete local media stored before before_ts and
// larger than size_gt; with keep_profiles (the default) the pictures of
// user profiles and room avatars stay.
func (m *mediaAdmin) deleteBefore(r *http.Request, dev *httpapi.Device) httpapi.Response {
	if s := vars(r, "serverName"); s != "" && s != m.serverName {
		return badParam("can only delete local media")
	}
	repo, resp, ok := m.repo()
	if !ok {
		return resp
	}
	q := r.URL.Query()
	before, err := strconv.ParseInt(q.Get("before_ts"), 10, 64)
	if err != nil || before < 0 {
		return httpapi.MissingParam("before_ts (ms) is required")
	}
	var sizeGt int64
	if s := q.Get("size_gt"); s != "" {
		if sizeGt, err = strconv.ParseInt(s, 10, 64); err != nil || sizeGt < 0 {
			return badParam("size_gt must be a non-negative number of bytes")
		}
	}
	keepProfiles := true
	if s := q.Get("keep_profiles"); s != "" {
		if s != "true" && s != "false" {
			return badParam("keep_profiles must be true or false")
		}
		keepProfiles = s == "true"
	}
	f := mediaapi.MediaFilter{Origin: m.serverName, BeforeTS: before, SizeGt: sizeGt}
	if keepProfiles {
		if f.Keep, err = m.profileMedia(r.Context()); err != nil {
			return httpapi.InternalError(r, err)
		}
	}
	deleted, err := repo.DeleteMatching(r.Context(), f)
	if err == nil {
		err = m.recordAfter(r, dev, "mxc://"+m.serverName, map[string]any{"op": "delete_before", "before_ts": before,
			"size_gt": sizeGt, "keep_profiles": keepProfiles, "count": len(deleted)})
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"deleted_media": deleted, "total": len(deleted)})
}

// profileMedia is the set of local media IDs in use as user avatars or
// room avatars.
func (m *mediaAdmin) profileMedia(ctx context.Context) (map[string]bool, error) {
	uris, err := storage.AvatarURLs(ctx, m.db)
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, u := range uris {
		if server, id, ok := strings.Cut(strings.TrimPrefix(u, "mxc://"), "/"); ok && server == m.serverName {
			keep[id] = true
		}
	}
	return keep, nil
}

// POST /_synapse/admin/v1/purge_media_cache?before_ts=: drop cached copies
// of remote media stored before before_ts (fetched again when asked for).
func (m *mediaAdmin) purgeCache(r *http.Request, dev *httpapi.Device) httpapi.Response {
	repo, resp, ok := m.repo()
	if !ok {
		return resp
	}
	before, err := strconv.ParseInt(r.URL.Query().Get("before_ts"), 10, 64)
	if err != nil || before < 0 {
		return httpapi.MissingParam("before_ts (ms) is required")
	}
	deleted, err := repo.DeleteMatching(r.Context(), mediaapi.MediaFilter{Origin: m.serverName, Remote: true, BeforeTS: before})
	if err == nil {
		err = m.recordAfter(r, dev, "remote media cache", map[string]any{"op": "purge_cache", "before_ts": before, "count": len(deleted)})
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"deleted": len(deleted)})
}

// GET /_synapse/admin/v1/statistics/users/media?from=&limit=&order_by=&dir=&search_term=&from_ts=&until_ts=
func (m *mediaAdmin) userStats(r *http.Request, _ *httpapi.Device) httpapi.Response {
	repo, resp, ok := m.repo()
	if !ok {
		return resp
	}
	q := r.URL.Query()
	from, ok1 := intParam(r, "from", 0)
	limit, ok2 := intParam(r, "limit", 100)
	fromTS, ok3 := intParam(r, "from_ts", 0)
	untilTS, ok4 := intParam(r, "until_ts", 0)
	orderBy, dir := q.Get("order_by"), q.Get("dir")
	if orderBy == "" {
		orderBy = "user_id"
	}
	if !ok1 || !ok2 || !ok3 || !ok4 || (dir != "" && dir != "f" && dir != "b") ||
		!slices.Contains([]string{"user_id", "displayname", "media_length", "media_count"}, orderBy) {
		return badParam("from, limit, from_ts and until_ts are non-negative integers; order_by is user_id, displayname, media_length or media_count; dir is f or b")
	}
	stats, err := repo.UserMediaStats(r.Context(), int64(fromTS), int64(untilTS))
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	type row struct {
		UserID      string `json:"user_id"`
		DisplayName any    `json:"displayname"`
		MediaCount  int    `json:"media_count"`
		MediaLength int64  `json:"media_length"`
		name        string
	}
	term := strings.ToLower(q.Get("search_term"))
	rows := []row{}
	for _, s := range stats {
		var name string
		if acc, err := storage.GetAccount(r.Context(), m.db, s.UserID); err == nil {
			name = acc.DisplayName
		}
		if term != "" && !strings.Contains(strings.ToLower(s.UserID), term) && !strings.Contains(strings.ToLower(name), term) {
			continue
		}
		rows = append(rows, row{UserID: s.UserID, DisplayName: nullable(name), MediaCount: s.Count, MediaLength: s.Bytes, name: name})
	}
	slices.SortStableFunc(rows, func(x, y row) int {
		c := 0
		switch orderBy {
		case "displayname":
			c = strings.Compare(x.name, y.name)
		case "media_length":
			c = cmpInt(x.MediaLength, y.MediaLength)
		case "media_count":
			c = cmpInt(int64(x.MediaCount), int64(y.MediaCount))
		}
		if c == 0 {
			c = strings.Compare(x.UserID, y.UserID)
		}
		if dir == "b" {
			c = -c
		}
		return c
	})
	page := rows[min(from, len(rows)):min(from+limit, len(rows))]
	body := map[string]any{"users": page, "total": len(rows)}
	if from+len(page) < len(rows) {
		body["next_token"] = from + len(page)
	}
	return httpapi.JSON(http.StatusOK, body)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
