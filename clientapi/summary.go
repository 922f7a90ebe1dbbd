package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// Room summaries (GET /_matrix/client/v1/room_summary/{roomIdOrAlias}, and
// MSC3266's unstable im.nheko.summary paths that clients still probe): a
// room's public face for anyone who could join or peek it. Access may be
// unauthenticated for rooms that are public, knockable or world readable.
// A room the caller may not preview answers the same 404 as an unknown
// one, so its existence does not leak.

// optionalDevice authenticates the request if it carries an access token;
// ok is false (with resp to send) only for a token that is invalid.
func (rm *rooms) optionalDevice(r *http.Request) (*httpapi.Device, httpapi.Response, bool) {
	if r.Header.Get("Authorization") == "" && r.URL.Query().Get("access_token") == "" {
		return nil, httpapi.Response{}, true
	}
	return rm.accounts.authenticate(r)
}

// resolveRoom turns a room ID or a local alias into a room ID ("" if the
// alias is unknown or the argument is neither).
func (rm *rooms) resolveRoom(ctx context.Context, idOrAlias string) (string, error) {
	if strings.HasPrefix(idOrAlias, "#") {
		id, _, err := storage.GetAlias(ctx, rm.db, idOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", nil
		}
		return id, err
	}
	if !validRoomID.MatchString(idOrAlias) {
		return "", nil
	}
	return idOrAlias, nil
}

// roomStats loads a room's directory stats, computing them if the room
// has none yet; ErrNotFound for unknown rooms.
func (rm *rooms) roomStats(ctx context.Context, roomID string) (*storage.RoomStats, error) {
	st, err := storage.GetRoomStats(ctx, rm.db, roomID)
	if !errors.Is(err, storage.ErrNotFound) {
		return st, err
	}
	if _, err := storage.GetRoom(ctx, rm.db, roomID); err != nil {
		return nil, err
	}
	if err := storage.RefreshRoomStats(ctx, rm.db, roomID); err != nil {
		return nil, err
	}
	return storage.GetRoomStats(ctx, rm.db, roomID)
}

// joinRuleAllow returns the room IDs a restricted join rule allows
// membership of (nil for other join rules).
func joinRuleAllow(st roomserver.StateMap) (rule string, rooms []string) {
	return roomserver.JoinRule(st)
}

// canPreview applies the "potential joiner" rules of /hierarchy and room
// summaries: members (any membership but leave), rooms anyone may join or
// knock on, world-readable rooms, and restricted rooms whose allowed rooms
// the user is joined to. userID "" is an unauthenticated caller, who only
// sees public, knockable and world-readable rooms.
func (rm *rooms) canPreview(ctx context.Context, userID string, st roomserver.StateMap) bool {
	if hv := st.Get("m.room.history_visibility", ""); hv != nil {
		if v, _ := hv.HistoryVisibility(); v == "world_readable" {
			return true
		}
	}
	rule, allow := joinRuleAllow(st)
	switch rule {
	case "public", "knock", "knock_restricted":
		return true
	}
	if userID == "" {
		return false
	}
	if m := st.Membership(userID); m != "" && m != "leave" {
		return true
	}
	for _, room := range allow {
		if m, err := rm.rs.Membership(ctx, room, userID); err == nil && m == "join" {
			return true
		}
	}
	return false
}

func (rm *rooms) roomSummary(unstable bool) handler {
	return func(r *http.Request) httpapi.Response {
		dev, resp, ok := rm.optionalDevice(r)
		if !ok {
			return resp
		}
		userID := ""
		if dev != nil {
			userID = dev.UserID
		}
		roomID, err := rm.resolveRoom(r.Context(), httpapi.Vars(r)["roomIdOrAlias"])
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		notFound := httpapi.NotFound("room not found")
		if roomID == "" {
			return notFound
		}
		st, err := rm.rs.CurrentState(r.Context(), roomID)
		if errors.Is(err, roomserver.ErrRoomNotFound) {
			return notFound
		} else if err != nil {
			return httpapi.InternalError(r, err)
		}
		if !rm.canPreview(r.Context(), userID, st) {
			return notFound
		}
		stats, err := rm.roomStats(r.Context(), roomID)
		if errors.Is(err, storage.ErrNotFound) {
			return notFound
		} else if err != nil {
			return httpapi.InternalError(r, err)
		}
		body := storage.PublicRoomChunk(stats)
		body["room_version"] = stats.RoomVersion
		if stats.Encryption != "" {
			body["encryption"] = stats.Encryption
		}
		if _, allow := joinRuleAllow(st); len(allow) > 0 {
			body["allowed_room_ids"] = allow
		}
		if userID != "" {
			m := st.Membership(userID)
			if m == "" {
				m = "leave"
			}
			body["membership"] = m
		}
		if unstable {
			body["im.nheko.summary.room_version"] = stats.RoomVersion
			body["im.nheko.summary.version"] = stats.RoomVersion
			if stats.Encryption != "" {
				body["im.nheko.summary.encryption"] = stats.Encryption
			}
		}
		return httpapi.JSON(200, body)
	}
}
