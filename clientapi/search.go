package clientapi

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"enclave/internal/httpapi"
	"enclave/storage"
	"enclave/syncapi"
)

// Server-side search (POST /search): full-text search over the rooms the
// user is joined to, through the index the room event hook maintains
// (message bodies, room names and topics; never encrypted events). Every
// hit passes the same history-visibility check as /messages before it is
// returned.

const (
	searchDefaultLimit = 10
	searchMaxLimit     = 50
	// searchScan bounds the index rows one request examines.
	searchScan           = 500
	searchContextMax     = 20
	searchContextDefault = 5
)

type searchRequest struct {
	SearchCategories struct {
		RoomEvents *struct {
			SearchTerm   *string                  `json:"search_term"`
			Keys         []string                 `json:"keys"`
			Filter       *syncapi.RoomEventFilter `json:"filter"`
			OrderBy      string                   `json:"order_by"`
			EventContext *struct {
				BeforeLimit    *int `json:"before_limit"`
				AfterLimit     *int `json:"after_limit"`
				IncludeProfile bool `json:"include_profile"`
			} `json:"event_context"`
			IncludeState bool `json:"include_state"`
			Groupings    struct {
				GroupBy []struct {
					Key string `json:"key"`
				} `json:"group_by"`
			} `json:"groupings"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

var searchKeys = map[string]bool{"content.body": true, "content.name": true, "content.topic": true}

func (eg *events) search(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req searchRequest
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	re := req.SearchCategories.RoomEvents
	if re == nil {
		return httpapi.JSON(200, map[string]any{"search_categories": map[string]any{}})
	}
	if re.SearchTerm == nil {
		return httpapi.MissingParam("search_categories.room_events.search_term is required")
	}
	for _, k := range re.Keys {
		if !searchKeys[k] {
			return httpapi.InvalidParam("unknown search key %q", k)
		}
	}
	recent := false
	switch re.OrderBy {
	case "", "rank":
	case "recent":
		recent = true
	default:
		return httpapi.InvalidParam("order_by must be rank or recent")
	}
	for _, g := range re.Groupings.GroupBy {
		if g.Key != "room_id" && g.Key != "sender" {
			return httpapi.InvalidParam("unknown group_by key %q", g.Key)
		}
	}
	filter := re.Filter
	if filter == nil {
		filter = &syncapi.RoomEventFilter{}
	}
	limit := searchDefaultLimit
	if filter.Limit != nil && *filter.Limit > 0 {
		limit = min(*filter.Limit, searchMaxLimit)
	}
	// Pagination: "r<pos>" continues a recent-ordered search below pos,
	// "k<offset>" a rank-ordered one after offset rows.
	// A token may carry "_<count>": the first page's total, which later
	// pages repeat (count is the total of all pages, not of this one).
	var before int64
	offset := 0
	total := -1
	if nb := r.URL.Query().Get("next_batch"); nb != "" {
		if i := strings.LastIndexByte(nb, '_'); i > 0 {
			c, err := strconv.Atoi(nb[i+1:])
			if err != nil || c < 0 {
				return httpapi.InvalidParam("unknown next_batch token")
			}
			total, nb = c, nb[:i]
		}
		n, err := strconv.ParseInt(nb[1:], 10, 64)
		switch {
		case err != nil || n == 0:
			return httpapi.InvalidParam("unknown next_batch token")
		case recent && nb[0] == 'r': // positions are negative for backfilled history
			before = n
		case !recent && nb[0] == 'k' && n > 0:
			offset = int(n)
		default:
			return httpapi.InvalidParam("next_batch token does not match order_by")
		}
	}
	terms := storage.SearchTerms(*re.SearchTerm)
	joined, err := storage.RoomsByMembership(r.Context(), eg.db, dev.UserID, "join")
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	var rooms []string
	for id := range joined {
		if filter.Rooms != nil && !containsString(*filter.Rooms, id) || containsString(filter.NotRooms, id) {
			continue
		}
		rooms = append(rooms, id)
	}
	sort.Strings(rooms)
	keys := re.Keys
	hits, err := storage.SearchEvents(r.Context(), eg.db, storage.SearchQuery{Terms: terms, RoomIDs: rooms, Keys: keys, Recent: recent, Before: before, Offset: offset, Limit: searchScan})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	visible, err := eg.visibleHits(r.Context(), dev.UserID, hits, filter)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	out := map[string]any{"count": 0, "highlights": terms, "results": []any{}}
	if terms == nil {
		out["highlights"] = []string{}
	}
	var page []storage.SearchHit
	lastRaw := -1
	for i, h := range hits {
		if visible[h.EventID] == nil {
			continue
		}
		if len(page) == limit {
			break
		}
		page = append(page, h)
		lastRaw = i
	}
	if total < 0 {
		total = len(visible)
	}
	if len(page) == limit {
		// A full page: there may be more (clients page until a response
		// has no next_batch, and an empty last page is how they learn it).
		if recent {
			out["next_batch"] = "r" + strconv.FormatInt(page[len(page)-1].StreamPos, 10) + "_" + strconv.Itoa(total)
		} else {
			out["next_batch"] = "k" + strconv.Itoa(offset+lastRaw+1) + "_" + strconv.Itoa(total)
		}
	}
	if _, ok := out["next_batch"]; !ok && len(hits) == searchScan {
		// The scan window ran out (perhaps on hits the user may not see):
		// later rows may match too.
		if recent {
			out["next_batch"] = "r" + strconv.FormatInt(hits[len(hits)-1].StreamPos, 10) + "_" + strconv.Itoa(total)
		} else {
			out["next_batch"] = "k" + strconv.Itoa(offset+len(hits)) + "_" + strconv.Itoa(total)
		}
	}
	out["count"] = total
	evs := make([]*storage.Event, len(page))
	for i, h := range page {
		evs[i] = visible[h.EventID]
	}
	// Formatting skips events it cannot parse: keep only those formatted,
	// so results, ranks and groups stay aligned.
	formatted := eg.formatStored(r.Context(), dev, evs, true)
	rank := make(map[string]float64, len(page))
	for _, h := range page {
		rank[h.EventID] = h.Rank
	}
	kept := make(map[string]bool, len(formatted))
	for _, ce := range formatted {
		kept[ce.EventID] = true
	}
	evs = slices.DeleteFunc(evs, func(e *storage.Event) bool { return !kept[e.EventID] })
	results := make([]map[string]any, 0, len(formatted))
	byRoom := map[string]bool{}
	for i, ce := range formatted {
		res := map[string]any{"rank": rank[ce.EventID], "result": ce}
		if ec := re.EventContext; ec != nil {
			bl, al := searchContextDefault, searchContextDefault
			if ec.BeforeLimit != nil {
				bl = max(0, min(*ec.BeforeLimit, searchContextMax))
			}
			if ec.AfterLimit != nil {
				al = max(0, min(*ec.AfterLimit, searchContextMax))
			}
			c, err := eg.searchContext(r.Context(), dev, evs[i], bl, al, ec.IncludeProfile)
			if err != nil {
				return httpapi.InternalError(r, err)
			}
			res["context"] = c
		}
		results = append(results, res)
		byRoom[evs[i].RoomID] = true
	}
	out["results"] = results
	if len(re.Groupings.GroupBy) > 0 {
		groups := map[string]any{}
		for _, g := range re.Groupings.GroupBy {
			gm := map[string]map[string]any{}
			for _, e := range evs {
				v := e.RoomID
				if g.Key == "sender" {
					v = e.Sender
				}
				if gm[v] == nil {
					gm[v] = map[string]any{"results": []string{}, "order": len(gm) + 1}
				}
				gm[v]["results"] = append(gm[v]["results"].([]string), e.EventID)
			}
			groups[g.Key] = gm
		}
		out["groups"] = groups
	}
	if re.IncludeState {
		state := map[string]any{}
		for room := range byRoom {
			st, err := eg.rs.CurrentState(r.Context(), room)
			if err != nil {
				return httpapi.InternalError(r, err)
			}
			evs, err := eg.formatState(r.Context(), dev, st.Events())
			if err != nil {
				return httpapi.InternalError(r, err)
			}
			state[room] = evs
		}
		out["state"] = state
	}
	return httpapi.JSON(200, map[string]any{"search_categories": map[string]any{"room_events": out}})
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// visibleHits loads the hits' events and keeps those the user may see
// (history visibility) and the filter allows.
func (eg *events) visibleHits(ctx context.Context, userID string, hits []storage.SearchHit, filter *syncapi.RoomEventFilter) (map[string]*storage.Event, error) {
	ids := make([]string, len(hits))
	for i, h := range hits {
		ids[i] = h.EventID
	}
	stored, err := storage.GetEvents(ctx, eg.db, ids)
	if err != nil {
		return nil, err
	}
	byRoom := map[string][]*storage.Event{}
	for _, e := range stored {
		if e.Redacted || e.Rejected || e.SoftFailed || e.StreamPos == 0 {
			continue
		}
		if !filter.AllowsEvent(e.RoomID, e.Type, e.Sender, e.JSON) {
			continue
		}
		byRoom[e.RoomID] = append(byRoom[e.RoomID], e)
	}
	out := map[string]*storage.Event{}
	for room, evs := range byRoom {
		sort.Slice(evs, func(i, j int) bool { return evs[i].StreamPos < evs[j].StreamPos })
		vis, err := eg.sync.Visible(ctx, userID, room, evs)
		if err != nil {
			return nil, err
		}
		for _, e := range vis {
			out[e.EventID] = e
		}
	}
	return out, nil
}

// searchContext is a result's surrounding events, as /context gives them
// (search only covers rooms the user is joined to, so nothing caps them).
func (eg *events) searchContext(ctx context.Context, dev *httpapi.Device, ev *storage.Event, beforeLimit, afterLimit int, profiles bool) (map[string]any, error) {
	c := map[string]any{"events_before": []syncapi.ClientEvent{}, "events_after": []syncapi.ClientEvent{}}
	var before, after []*storage.Event
	var err error
	if beforeLimit > 0 {
		if before, err = storage.RoomEventsRange(ctx, eg.db, ev.RoomID, math.MinInt64, ev.StreamPos-1, beforeLimit, true); err != nil {
			return nil, err
		}
	}
	if afterLimit > 0 {
		if after, err = storage.RoomEventsRange(ctx, eg.db, ev.RoomID, ev.StreamPos, math.MaxInt64, afterLimit, false); err != nil {
			return nil, err
		}
	}
	start, end := ev.StreamPos-1, ev.StreamPos
	if len(before) > 0 {
		start = before[len(before)-1].StreamPos - 1
	}
	if len(after) > 0 {
		end = after[len(after)-1].StreamPos
	}
	c["start"] = syncapi.Token{Pos: start}.String()
	c["end"] = syncapi.Token{Pos: end}.String()
	if before, err = eg.sync.Visible(ctx, dev.UserID, ev.RoomID, before); err != nil {
		return nil, err
	}
	if after, err = eg.sync.Visible(ctx, dev.UserID, ev.RoomID, after); err != nil {
		return nil, err
	}
	c["events_before"] = eg.formatStored(ctx, dev, before, true)
	c["events_after"] = eg.formatStored(ctx, dev, after, true)
	if profiles {
		info := map[string]any{}
		for _, e := range append(append([]*storage.Event{ev}, before...), after...) {
			if _, done := info[e.Sender]; done {
				continue
			}
			p := map[string]any{}
			m, err := eg.rs.StateEventAt(ctx, ev.SnapshotBefore, "m.room.member", e.Sender)
			if err != nil {
				return nil, err
			}
			if m != nil {
				var mc struct {
					DisplayName string `json:"displayname"`
					AvatarURL   string `json:"avatar_url"`
				}
				if json.Unmarshal(m.Content(), &mc) == nil {
					if mc.DisplayName != "" {
						p["displayname"] = mc.DisplayName
					}
					if mc.AvatarURL != "" {
						p["avatar_url"] = strings.TrimSpace(mc.AvatarURL)
					}
				}
			}
			info[e.Sender] = p
		}
		c["profile_info"] = info
	}
	return c, nil
}
