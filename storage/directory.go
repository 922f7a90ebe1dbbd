package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Directory tables.
//
//   - room_directory_stats: one row per room with the public face of its
//     current state (name, topic, join rule, member count…), kept up to date
//     by the room event hook in the event's own transaction. The room
//     directory, the user directory, room summaries and space hierarchies
//     read it instead of resolving each room's state.
const directoryV1 = `
CREATE TABLE room_directory_stats (
	room_id TEXT PRIMARY KEY,
	name TEXT NOT NULL DEFAULT '',
	topic TEXT NOT NULL DEFAULT '',
	canonical_alias TEXT NOT NULL DEFAULT '',
	avatar_url TEXT NOT NULL DEFAULT '',
	join_rule TEXT NOT NULL DEFAULT '',
	history_visibility TEXT NOT NULL DEFAULT '',
	guest_access TEXT NOT NULL DEFAULT '',
	room_type TEXT NOT NULL DEFAULT '',
	encryption TEXT NOT NULL DEFAULT '',
	joined_members BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX room_directory_stats_join_rule ON room_directory_stats(join_rule)`

// RoomStats is the directory's view of a room.
type RoomStats struct {
	RoomID            string
	Name              string
	Topic             string
	CanonicalAlias    string
	AvatarURL         string
	JoinRule          string
	HistoryVisibility string
	GuestAccess       string
	RoomType          string
	Encryption        string
	JoinedMembers     int64
	// RoomVersion and IsPublic come from the rooms table when read.
	RoomVersion string
	IsPublic    bool
}

// statsStateTypes are the state events (state key "") the stats mirror.
var statsStateTypes = []string{"m.room.create", "m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar",
	"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access", "m.room.encryption"}

// IsStatsStateType reports whether a state event of this type (with an
// empty state key) changes a room's stats.
func IsStatsStateType(typ string) bool {
	for _, t := range statsStateTypes {
		if t == typ {
			return true
		}
	}
	return false
}

// RefreshRoomStats recomputes a room's stats row from its current state.
func RefreshRoomStats(ctx context.Context, q Querier, roomID string) error {
	ph := make([]string, len(statsStateTypes))
	args := []any{roomID}
	for i, t := range statsStateTypes {
		ph[i] = fmt.Sprintf("$%d", i+2)
		args = append(args, t)
	}
	rows, err := q.QueryContext(ctx, `SELECT cs.type, e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND cs.state_key = '' AND cs.type IN (`+strings.Join(ph, ",")+`)`, args...)
	if err != nil {
		return err
	}
	st := RoomStats{RoomID: roomID}
	for rows.Next() {
		var typ, js string
		if err := rows.Scan(&typ, &js); err != nil {
			rows.Close()
			return err
		}
		var ev struct {
			Content map[string]json.RawMessage `json:"content"`
		}
		if json.Unmarshal([]byte(js), &ev) != nil {
			continue
		}
		str := func(k string) string {
			var s string
			_ = json.Unmarshal(ev.Content[k], &s)
			return s
		}
		switch typ {
		case "m.room.create":
			st.RoomType = str("type")
		case "m.room.name":
			st.Name = str("name")
		case "m.room.topic":
			st.Topic = str("topic")
		case "m.room.canonical_alias":
			st.CanonicalAlias = str("alias")
		case "m.room.avatar":
			st.AvatarURL = str("url")
		case "m.room.join_rules":
			st.JoinRule = str("join_rule")
		case "m.room.history_visibility":
			st.HistoryVisibility = str("history_visibility")
		case "m.room.guest_access":
			st.GuestAccess = str("guest_access")
		case "m.room.encryption":
			st.Encryption = str("algorithm")
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID).Scan(&st.JoinedMembers); err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO room_directory_stats (room_id, name, topic, canonical_alias, avatar_url, join_rule, history_visibility, guest_access, room_type, encryption, joined_members)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (room_id) DO UPDATE SET name = excluded.name, topic = excluded.topic, canonical_alias = excluded.canonical_alias, avatar_url = excluded.avatar_url,
		join_rule = excluded.join_rule, history_visibility = excluded.history_visibility, guest_access = excluded.guest_access, room_type = excluded.room_type,
		encryption = excluded.encryption, joined_members = excluded.joined_members`,
		st.RoomID, st.Name, st.Topic, st.CanonicalAlias, st.AvatarURL, st.JoinRule, st.HistoryVisibility, st.GuestAccess, st.RoomType, st.Encryption, st.JoinedMembers)
	return err
}

// RefreshJoinedCount updates only the member count, which is all a
// membership change can alter; it falls back to a full refresh for rooms
// without a row yet.
func RefreshJoinedCount(ctx context.Context, q Querier, roomID string) error {
	res, err := q.ExecContext(ctx, `UPDATE room_directory_stats SET joined_members =
		(SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join') WHERE room_id = $1`, roomID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		return nil
	}
	return RefreshRoomStats(ctx, q, roomID)
}

// RoomsMissingStats lists rooms that have no stats row (rooms created
// before the directory tables existed), for a backfill at start.
func RoomsMissingStats(ctx context.Context, q Querier) ([]string, error) {
	return queryStrings(ctx, q, `SELECT room_id FROM rooms WHERE room_id NOT IN (SELECT room_id FROM room_directory_stats) ORDER BY room_id`)
}

const statsCols = `s.room_id, s.name, s.topic, s.canonical_alias, s.avatar_url, s.join_rule, s.history_visibility, s.guest_access, s.room_type, s.encryption,
	s.joined_members, r.room_version, r.is_public`

func scanStats(sc interface{ Scan(...any) error }) (*RoomStats, error) {
	var st RoomStats
	err := sc.Scan(&st.RoomID, &st.Name, &st.Topic, &st.CanonicalAlias, &st.AvatarURL, &st.JoinRule, &st.HistoryVisibility, &st.GuestAccess,
		&st.RoomType, &st.Encryption, &st.JoinedMembers, &st.RoomVersion, &st.IsPublic)
	return &st, err
}

// GetRoomStats loads a room's stats, or ErrNotFound.
func GetRoomStats(ctx context.Context, q Querier, roomID string) (*RoomStats, error) {
	st, err := scanStats(q.QueryRowContext(ctx, `SELECT `+statsCols+` FROM room_directory_stats s JOIN rooms r ON r.room_id = s.room_id WHERE s.room_id = $1`, roomID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return st, err
}

// PublicRoomsQuery selects a page of the published room directory.
type PublicRoomsQuery struct {
	// Term matches name, topic and canonical alias, case-insensitively.
	Term string
	// RoomTypes, when non-nil, keeps rooms of these types ("" = no type).
	RoomTypes []string
	Offset    int
	Limit     int
	// AllNetworks adds the rooms appservices publish in their networks'
	// directories; AppService and Network, when set, list only the rooms
	// of that one network instead of the server's own directory.
	AllNetworks         bool
	AppService, Network string
}

// likeEscape lowercases a user's search term and escapes LIKE's wildcards
// ('!' is the escape character), so the term only ever matches literally.
func likeEscape(term string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(strings.ToLower(term))
}

// likePattern matches term anywhere.
func likePattern(term string) string { return "%" + likeEscape(term) + "%" }

// PublicRooms returns a page of published rooms, largest first, and how
// many rooms match in total.
func PublicRooms(ctx context.Context, q Querier, pq PublicRoomsQuery) ([]*RoomStats, int, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	switch {
	case pq.AllNetworks:
		where = append(where, "(r.is_public = TRUE OR EXISTS (SELECT 1 FROM appservice_room_list l WHERE l.room_id = r.room_id))")
	case pq.AppService != "":
		where = append(where, "EXISTS (SELECT 1 FROM appservice_room_list l WHERE l.room_id = r.room_id AND l.appservice_id = "+arg(pq.AppService)+" AND l.network_id = "+arg(pq.Network)+")")
	default:
		where = append(where, "r.is_public = TRUE")
	}
	if pq.Term != "" {
		p := arg(likePattern(pq.Term))
		where = append(where, fmt.Sprintf(`(LOWER(s.name) LIKE %[1]s ESCAPE '!' OR LOWER(s.topic) LIKE %[1]s ESCAPE '!' OR LOWER(s.canonical_alias) LIKE %[1]s ESCAPE '!')`, p))
	}
	if pq.RoomTypes != nil {
		if len(pq.RoomTypes) == 0 {
			return nil, 0, nil
		}
		ph := make([]string, len(pq.RoomTypes))
		for i, t := range pq.RoomTypes {
			ph[i] = arg(t)
		}
		where = append(where, "s.room_type IN ("+strings.Join(ph, ",")+")")
	}
	from := ` FROM room_directory_stats s JOIN rooms r ON r.room_id = s.room_id WHERE ` + strings.Join(where, " AND ")
	var total int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*)`+from, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	lim, off := arg(pq.Limit), arg(pq.Offset)
	rows, err := q.QueryContext(ctx, `SELECT `+statsCols+from+` ORDER BY s.joined_members DESC, s.room_id ASC LIMIT `+lim+` OFFSET `+off, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []*RoomStats
	for rows.Next() {
		st, err := scanStats(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, st)
	}
	return out, total, rows.Err()
}

// MoveAliases points every local alias of room from at room to (upgrades).
func MoveAliases(ctx context.Context, q Querier, from, to string) error {
	_, err := q.ExecContext(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, to, from)
	return err
}

// DirectoryUser is a user directory search result.
type DirectoryUser struct {
	UserID      string
	DisplayName string
	AvatarURL   string
}

// SearchUsers finds users whose ID or display name contains term
// (case-insensitively) among those visible to searcher: users sharing a
// joined room with them and users joined to public rooms (join rule public
// or published in the directory), plus every local account when allLocal.
// Deactivated accounts and the searcher never appear. Results are ordered: prefix matches
// first, then users with a display name, then by user ID. At most limit
// rows are returned.
func SearchUsers(ctx context.Context, q Querier, searcher, term string, allLocal bool, limit int) ([]DirectoryUser, error) {
	pat, prefix := likePattern(term), likeEscape(term)+"%"
	candidates := `SELECT DISTINCT m.state_key AS user_id FROM current_state m WHERE m.type = 'm.room.member' AND m.membership = 'join' AND (
			m.room_id IN (SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join')
			OR m.room_id IN (SELECT room_id FROM room_directory_stats WHERE join_rule = 'public')
			OR m.room_id IN (SELECT room_id FROM rooms WHERE is_public = TRUE))`
	if allLocal {
		candidates += ` UNION SELECT user_id FROM accounts WHERE is_guest = FALSE`
	}
	rows, err := q.QueryContext(ctx, `SELECT u.user_id, COALESCE(a.displayname, ''), COALESCE(a.avatar_url, '') FROM (`+candidates+`) u
		LEFT JOIN accounts a ON a.user_id = u.user_id
		WHERE COALESCE(a.deactivated, FALSE) = FALSE AND u.user_id <> $1
		AND (LOWER(u.user_id) LIKE $2 ESCAPE '!' OR LOWER(COALESCE(a.displayname, '')) LIKE $2 ESCAPE '!')
		ORDER BY CASE WHEN LOWER(COALESCE(a.displayname, '')) LIKE $3 ESCAPE '!' OR LOWER(u.user_id) LIKE $4 ESCAPE '!' THEN 0 ELSE 1 END,
			CASE WHEN COALESCE(a.displayname, '') = '' THEN 1 ELSE 0 END, u.user_id
		LIMIT $5`, searcher, pat, prefix, "@"+prefix, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DirectoryUser
	for rows.Next() {
		var u DirectoryUser
		if err := rows.Scan(&u.UserID, &u.DisplayName, &u.AvatarURL); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// PublicRoomsRequest is the body of /publicRooms, the same for clients and
// for other servers.
type PublicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// ErrBadSince is a /publicRooms since token this server did not issue.
var ErrBadSince = errors.New("unknown since token")

// PublicRoomsPage answers /publicRooms for both the client and the
// federation API: one page of the directory, at most maxLimit rooms, with
// offset tokens "p<N>".
func PublicRoomsPage(ctx context.Context, q Querier, req PublicRoomsRequest, maxLimit int) (map[string]any, error) {
	limit := maxLimit
	if req.Limit != nil && *req.Limit > 0 {
		limit = min(*req.Limit, maxLimit)
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "p"))
		if !strings.HasPrefix(req.Since, "p") || err != nil || n < 0 {
			return nil, ErrBadSince
		}
		offset = n
	}
	body := map[string]any{"chunk": []any{}, "total_room_count_estimate": 0}
	pq := PublicRoomsQuery{Term: strings.TrimSpace(req.Filter.GenericSearchTerm), Offset: offset, Limit: limit + 1, AllNetworks: req.IncludeAllNetworks}
	if req.ThirdPartyInstanceID != "" && !req.IncludeAllNetworks {
		// An instance is "appservice|network", as /thirdparty/protocols
		// names them; one this server never named lists nothing.
		as, network, ok := strings.Cut(req.ThirdPartyInstanceID, "|")
		if !ok || as == "" {
			return body, nil
		}
		pq.AppService, pq.Network = as, network
	}
	if req.Filter.RoomTypes != nil {
		pq.RoomTypes = []string{}
		for _, t := range req.Filter.RoomTypes {
			if t == nil {
				pq.RoomTypes = append(pq.RoomTypes, "")
			} else {
				pq.RoomTypes = append(pq.RoomTypes, *t)
			}
		}
	}
	rooms, total, err := PublicRooms(ctx, q, pq)
	if err != nil {
		return nil, err
	}
	if len(rooms) > limit {
		rooms = rooms[:limit]
		body["next_batch"] = "p" + strconv.Itoa(offset+limit)
	}
	if offset > 0 {
		body["prev_batch"] = "p" + strconv.Itoa(max(0, offset-limit))
	}
	chunk := make([]map[string]any, 0, len(rooms))
	for _, st := range rooms {
		chunk = append(chunk, PublicRoomChunk(st))
	}
	body["chunk"] = chunk
	body["total_room_count_estimate"] = total
	return body, nil
}

// PublicRoomChunk renders a room as the spec's PublicRoomsChunk (the
// directory, room summaries and space hierarchies).
func PublicRoomChunk(st *RoomStats) map[string]any {
	c := map[string]any{
		"room_id":            st.RoomID,
		"num_joined_members": st.JoinedMembers,
		"world_readable":     st.HistoryVisibility == "world_readable",
		"guest_can_join":     st.GuestAccess == "can_join",
		"join_rule":          st.JoinRule,
	}
	if st.JoinRule == "" {
		c["join_rule"] = "invite"
	}
	for k, v := range map[string]string{"name": st.Name, "topic": st.Topic, "canonical_alias": st.CanonicalAlias, "avatar_url": st.AvatarURL, "room_type": st.RoomType} {
		if v != "" {
			c[k] = v
		}
	}
	return c
}
