package syncapi

import (
	"context"
	"math"

	"enclave/storage"
)

// EventPage is a page of formatted events of one room (RoomID "" means
// each event names its room).
type EventPage struct {
	RoomID string
	Events []ClientEvent
}

// maxReferences bounds the m.reference chunk bundled with one event.
const maxReferences = 50

// BundleAggregations adds the spec's server-side aggregations to the
// events being served, as unsigned["m.relations"]:
//
//   - m.thread: {latest_event, count, current_user_participated};
//   - m.replace: the latest edit by the original sender;
//   - m.reference: {chunk: [{event_id}]}.
//
// Annotations are not aggregated (the spec dropped that). All pages are
// handled together: one query for edits and references, one for thread
// summaries and one to load the bundled events, whatever the page size.
// Bundled events the user may not see (history visibility) are left out.
func (s *Syncer) BundleAggregations(ctx context.Context, v Viewer, pages ...EventPage) error {
	type target struct {
		ev   *ClientEvent
		room string
	}
	targets := map[string]target{}
	var ids []string
	for _, p := range pages {
		for i := range p.Events {
			e := &p.Events[i]
			room := p.RoomID
			if room == "" {
				room = e.RoomID
			}
			if e.StateKey != nil || e.EventID == "" || room == "" {
				continue
			}
			if _, redacted := e.Unsigned["redacted_because"]; redacted {
				continue
			}
			if _, dup := targets[e.EventID]; !dup {
				ids = append(ids, e.EventID)
			}
			targets[e.EventID] = target{e, room}
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rels, err := relationsByParent(ctx, s.db, ids)
	if err != nil {
		return err
	}
	threads, err := storage.ThreadSummaries(ctx, s.db, ids, v.UserID, math.MaxInt64)
	if err != nil {
		return err
	}
	type bundle struct {
		edit   string
		refs   []map[string]string
		thread *storage.ThreadSummary
	}
	bundles := map[string]*bundle{}
	get := func(id string) *bundle {
		b := bundles[id]
		if b == nil {
			b = &bundle{}
			bundles[id] = b
		}
		return b
	}
	var load []string
	for _, r := range rels {
		t, ok := targets[r.RelatesTo]
		if !ok || r.RoomID != t.room {
			continue
		}
		switch r.RelType {
		case "m.replace":
			// Only the original sender may edit; later edits win (rows are oldest first).
			if r.Sender == t.ev.Sender && r.Type == t.ev.Type {
				get(r.RelatesTo).edit = r.EventID
			}
		case "m.reference":
			b := get(r.RelatesTo)
			if len(b.refs) < maxReferences {
				b.refs = append(b.refs, map[string]string{"event_id": r.EventID})
			}
		}
	}
	for root, th := range threads {
		if t, ok := targets[root]; ok && th.RoomID == t.room {
			b := get(root)
			b.thread = th
			load = append(load, th.LatestEvent)
		}
	}
	for _, b := range bundles {
		if b.edit != "" {
			load = append(load, b.edit)
		}
	}
	// Load the bundled events and keep those the user may see.
	stored, err := storage.GetEvents(ctx, s.db, load)
	if err != nil {
		return err
	}
	byRoom := map[string][]*storage.Event{}
	for _, e := range stored {
		byRoom[e.RoomID] = append(byRoom[e.RoomID], e)
	}
	visible := map[string]*storage.Event{}
	for room, evs := range byRoom {
		vis, err := s.Visible(ctx, v.UserID, room, evs)
		if err != nil {
			return err
		}
		for _, e := range vis {
			visible[e.EventID] = e
		}
	}
	format := func(id string, withRoom bool) (ClientEvent, bool) {
		e := visible[id]
		if e == nil {
			return ClientEvent{}, false
		}
		pdu, err := s.rs.PDU(e)
		if err != nil {
			return ClientEvent{}, false
		}
		return FormatEvent(e, pdu, v, withRoom), true
	}
	for id, b := range bundles {
		t := targets[id]
		withRoom := t.ev.RoomID != ""
		m := map[string]any{}
		if b.edit != "" {
			if ce, ok := format(b.edit, withRoom); ok {
				m["m.replace"] = ce
			}
		}
		if len(b.refs) > 0 {
			m["m.reference"] = map[string]any{"chunk": b.refs}
		}
		if b.thread != nil {
			if ce, ok := format(b.thread.LatestEvent, withRoom); ok {
				m["m.thread"] = map[string]any{
					"latest_event":              ce,
					"count":                     b.thread.Count,
					"current_user_participated": b.thread.UserEvents > 0 || t.ev.Sender == v.UserID,
				}
			}
		}
		if len(m) == 0 {
			continue
		}
		if t.ev.Unsigned == nil {
			t.ev.Unsigned = map[string]any{}
		}
		t.ev.Unsigned["m.relations"] = m
	}
	return nil
}

// relationsByParent loads the edits and references of the given events.
func relationsByParent(ctx context.Context, db *storage.DB, parents []string) ([]storage.Relation, error) {
	var out []storage.Relation
	for start := 0; start < len(parents); start += 500 {
		end := min(start+500, len(parents))
		rels, err := storage.ParentRelations(ctx, db, parents[start:end], []string{"m.replace", "m.reference"})
		if err != nil {
			return nil, err
		}
		out = append(out, rels...)
	}
	return out, nil
}

// relationsExtension bundles aggregations into /sync timelines.
type relationsExtension struct{ s *Syncer }

// RelationsExtension returns the sync extension that adds aggregations
// to every timeline of a sync response in one batch.
func (s *Syncer) RelationsExtension() Extension { return relationsExtension{s} }

func (e relationsExtension) Apply(ctx context.Context, req *Request, resp *Response) error {
	var pages []EventPage
	// Every timeline event lies above its timeline's prev_batch, and a
	// relation is stored after its target: when no relation was stored
	// above the lowest prev_batch, there is nothing to bundle.
	var after int64 = math.MaxInt64
	add := func(id string, tl *Timeline) {
		if len(tl.Events) == 0 {
			return
		}
		pages = append(pages, EventPage{RoomID: id, Events: tl.Events})
		t, err := ParseToken(tl.PrevBatch)
		if err != nil {
			t.Pos = math.MinInt64
		}
		after = min(after, t.Pos)
	}
	for id, jr := range resp.Rooms.Join {
		add(id, &jr.Timeline)
	}
	for id, lr := range resp.Rooms.Leave {
		add(id, &lr.Timeline)
	}
	if len(pages) == 0 || !e.s.db.Stream.Moved("event_relations", after) {
		return nil
	}
	return e.s.BundleAggregations(ctx, Viewer{UserID: req.UserID, DeviceID: req.DeviceID}, pages...)
}
