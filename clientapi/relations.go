package clientapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"sort"
	"strconv"

	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/storage"
	"enclave/syncapi"
)

// Relations and threads: GET /rooms/{roomId}/relations/{eventId}[/{relType}
// [/{eventType}]] pages through an event's children, GET /rooms/{roomId}/
// threads through a room's threads. Both read the relations table the room
// event hook writes, and serve events with their bundled aggregations.

const (
	relationsDefaultLimit = 20
	relationsMaxLimit     = 100
	// relationsRecurseDepth is how many levels recurse=true follows (the
	// spec recommends at least 3); relationsRecurseMax bounds the events
	// collected that way.
	relationsRecurseDepth = 3
	relationsRecurseMax   = 2000
)

// bundle adds bundled aggregations to formatted events (see
// syncapi.Syncer.BundleAggregations). A failure only costs the bundles.
func (eg *events) bundle(ctx context.Context, dev *httpapi.Device, evs []syncapi.ClientEvent) {
	if len(evs) == 0 {
		return
	}
	if err := eg.sync.BundleAggregations(ctx, viewer(dev), syncapi.EventPage{Events: evs}); err != nil && !errors.Is(err, context.Canceled) {
		logrus.WithError(err).Warn("bundling aggregations")
	}
}

func parseBoolParam(r *http.Request, name string) (val, set bool, resp httpapi.Response, ok bool) {
	s := r.URL.Query().Get(name)
	switch s {
	case "":
		return false, false, httpapi.Response{}, true
	case "true":
		return true, true, httpapi.Response{}, true
	case "false":
		return false, true, httpapi.Response{}, true
	}
	return false, false, httpapi.InvalidParam("%s must be true or false", name), false
}

func (eg *events) relations(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	v := httpapi.Vars(r)
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "b" && dir != "f" {
		return httpapi.InvalidParam("dir must be b or f")
	}
	limit, resp, ok := parseLimit(r, relationsDefaultLimit, relationsMaxLimit)
	if !ok {
		return resp
	}
	recurse, recurseSet, resp, ok := parseBoolParam(r, "recurse")
	if !ok {
		return resp
	}
	var from, to int64 = -1, -1
	for name, dst := range map[string]*int64{"from": &from, "to": &to} {
		if s := q.Get(name); s != "" {
			tok, err := syncapi.ParseToken(s)
			if err != nil {
				return httpapi.InvalidParam("invalid %s token", name)
			}
			*dst = tok.Pos
		}
	}
	// The parent must exist in this room and be visible to the user;
	// anything else is the same 404, so nothing leaks.
	acc, _, ok := eg.access(r.Context(), dev.UserID, roomID)
	if !ok {
		return httpapi.NotFound("event not found")
	}
	parent, err := storage.GetEvent(r.Context(), eg.db, v["eventId"])
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (parent.RoomID != roomID || parent.StreamPos == 0 || parent.StreamPos > acc.capPos)) {
		return httpapi.NotFound("event not found")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if vis, err := eg.sync.Visible(r.Context(), dev.UserID, roomID, []*storage.Event{parent}); err != nil {
		return httpapi.InternalError(r, err)
	} else if len(vis) == 0 {
		return httpapi.NotFound("event not found")
	}
	// Children are read by parent, not by stream range: everything
	// committed counts (up to a former member's departure), so a reply the
	// client just sent is listed even while an unrelated write holds the
	// stream's visible position back.
	upper := acc.capPos
	// Backfilled history has negative positions: no lower bound by default.
	lo, hi := int64(math.MinInt64), upper
	if dir == "b" {
		if from >= 0 {
			hi = min(from, upper)
		}
		if to >= 0 {
			lo = to
		}
	} else {
		if from >= 0 {
			lo = from
		}
		if to >= 0 {
			hi = min(to, upper)
		}
	}
	var rels []storage.Relation
	if !recurse {
		rels, err = storage.ChildRelations(r.Context(), eg.db, storage.RelationsQuery{RoomID: roomID, Parent: parent.EventID, RelType: v["relType"],
			EventType: v["eventType"], From: lo, To: hi, Backwards: dir == "b", Limit: limit + 1})
	} else {
		rels, err = eg.relationTree(r.Context(), roomID, parent.EventID, v["relType"], v["eventType"], lo, hi, dir == "b", limit+1)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	body := map[string]any{}
	if len(rels) > limit {
		rels = rels[:limit]
		last := rels[len(rels)-1].StreamPos
		if dir == "b" {
			last--
		}
		body["next_batch"] = syncapi.Token{Pos: last}.String()
	}
	if s := q.Get("from"); s != "" {
		body["prev_batch"] = s
	}
	if recurseSet {
		depth := 1
		if recurse {
			depth = relationsRecurseDepth
		}
		body["recursion_depth"] = depth
	}
	evs, err := eg.storedInOrder(r.Context(), relationIDs(rels))
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	vis, err := eg.sync.Visible(r.Context(), dev.UserID, roomID, evs)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	body["chunk"] = eg.formatStored(r.Context(), dev, vis, true)
	return httpapi.JSON(200, body)
}

func relationIDs(rels []storage.Relation) []string {
	ids := make([]string, len(rels))
	for i, r := range rels {
		ids[i] = r.EventID
	}
	return ids
}

// storedInOrder loads events keeping the order of ids.
func (eg *events) storedInOrder(ctx context.Context, ids []string) ([]*storage.Event, error) {
	stored, err := storage.GetEvents(ctx, eg.db, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*storage.Event, len(stored))
	for _, e := range stored {
		byID[e.EventID] = e
	}
	out := make([]*storage.Event, 0, len(ids))
	for _, id := range ids {
		if e := byID[id]; e != nil && e.StreamPos != 0 && !e.Rejected && !e.SoftFailed {
			out = append(out, e)
		}
	}
	return out, nil
}

// relationTree collects the events relating to root directly or through
// up to relationsRecurseDepth relations, keeps those of relType/eventType
// in (lo, hi], and returns them in stream order (newest first when
// backwards), at most limit.
func (eg *events) relationTree(ctx context.Context, roomID, root, relType, eventType string, lo, hi int64, backwards bool, limit int) ([]storage.Relation, error) {
	var all []storage.Relation
	seen := map[string]bool{root: true}
	level := []string{root}
	for depth := 0; depth < relationsRecurseDepth && len(level) > 0 && len(all) < relationsRecurseMax; depth++ {
		var next []string
		for start := 0; start < len(level); start += 500 {
			end := min(start+500, len(level))
			rels, err := storage.RelationsOf(ctx, eg.db, roomID, level[start:end], nil, relationsRecurseMax-len(all))
			if err != nil {
				return nil, err
			}
			for _, rel := range rels {
				if seen[rel.EventID] {
					continue
				}
				seen[rel.EventID] = true
				all = append(all, rel)
				next = append(next, rel.EventID)
			}
		}
		level = next
	}
	var out []storage.Relation
	for _, rel := range all {
		if rel.StreamPos <= lo || rel.StreamPos > hi || (relType != "" && rel.RelType != relType) || (eventType != "" && rel.Type != eventType) {
			continue
		}
		out = append(out, rel)
	}
	sort.Slice(out, func(i, j int) bool {
		if backwards {
			return out[i].StreamPos > out[j].StreamPos
		}
		return out[i].StreamPos < out[j].StreamPos
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (eg *events) threads(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	q := r.URL.Query()
	include := q.Get("include")
	if include == "" {
		include = "all"
	}
	if include != "all" && include != "participated" {
		return httpapi.InvalidParam("include must be all or participated")
	}
	if s := q.Get("limit"); s != "" {
		if n, err := strconv.Atoi(s); err != nil || n <= 0 {
			return httpapi.InvalidParam("limit must be an integer greater than zero")
		}
	}
	limit, resp, ok := parseLimit(r, relationsDefaultLimit, relationsMaxLimit)
	if !ok {
		return resp
	}
	acc, resp, ok := eg.access(r.Context(), dev.UserID, roomID)
	if !ok {
		return resp
	}
	before := int64(math.MaxInt64)
	if s := q.Get("from"); s != "" {
		tok, err := syncapi.ParseToken(s)
		if err != nil {
			return httpapi.InvalidParam("unknown pagination token")
		}
		before = tok.Pos
	}
	participant := ""
	if include == "participated" {
		participant = dev.UserID
	}
	roots, err := storage.ThreadRoots(r.Context(), eg.db, roomID, participant, acc.capPos, before, limit+1)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	body := map[string]any{}
	if len(roots) > limit {
		roots = roots[:limit]
		body["next_batch"] = syncapi.Token{Pos: roots[len(roots)-1].LatestPos - 1}.String()
	}
	ids := make([]string, len(roots))
	for i, t := range roots {
		ids[i] = t.Root
	}
	evs, err := eg.storedInOrder(r.Context(), ids)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	kept := evs[:0:0]
	for _, e := range evs {
		if e.RoomID == roomID {
			kept = append(kept, e)
		}
	}
	// Visible keeps its input's order; roots stay most recently active first.
	vis, err := eg.sync.Visible(r.Context(), dev.UserID, roomID, kept)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	body["chunk"] = eg.formatStored(r.Context(), dev, vis, true)
	return httpapi.JSON(200, body)
}
