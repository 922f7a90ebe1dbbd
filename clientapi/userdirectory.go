package clientapi

import (
	"net/http"
	"strings"
	"unicode/utf8"

	"enclave/internal/httpapi"
	"enclave/storage"
)

// The user directory: POST /user_directory/search finds users sharing a
// room with the searcher and users in public rooms, or every local user
// when user_directory.search_all_users is set.

// SetUserDirectorySearchAll makes user directory searches cover every
// local account, not only users sharing a room or in public rooms.
func (a *API) SetUserDirectorySearchAll(all bool) { a.directory.searchAllUsers = all }

const (
	userDirectoryDefaultLimit = 10
	userDirectoryMaxLimit     = 50
)

func (dir *directory) searchUserDirectory(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      int     `json:"limit"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.SearchTerm == nil {
		return httpapi.MissingParam("search_term is required")
	}
	term := strings.TrimSpace(*req.SearchTerm)
	if utf8.RuneCountInString(term) > 256 {
		return httpapi.InvalidParam("search_term is too long")
	}
	limit := userDirectoryDefaultLimit
	if req.Limit > 0 {
		limit = min(req.Limit, userDirectoryMaxLimit)
	}
	results := []map[string]any{}
	if term == "" {
		return httpapi.JSON(200, map[string]any{"results": results, "limited": false})
	}
	users, err := storage.SearchUsers(r.Context(), dir.db, dev.UserID, term, dir.searchAllUsers, limit+1)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	limited := len(users) > limit
	if limited {
		users = users[:limit]
	}
	for _, u := range users {
		e := map[string]any{"user_id": u.UserID}
		if u.DisplayName != "" {
			e["display_name"] = u.DisplayName
		}
		if u.AvatarURL != "" {
			e["avatar_url"] = u.AvatarURL
		}
		results = append(results, e)
	}
	return httpapi.JSON(200, map[string]any{"results": results, "limited": limited})
}
