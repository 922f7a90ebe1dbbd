package storage

import (
	"context"
	"fmt"
)

// Relations table.
//
//   - event_relations: one row per event whose content carries
//     m.relates_to {rel_type, event_id} (threads, edits, reactions,
//     references), written by the room event hook in the event's
//     transaction and removed when the child event is redacted. Relations
//     stay in the clear in encrypted rooms, so they are indexed there too.
const relationsV1 = `
CREATE TABLE event_relations (
	event_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	relates_to TEXT NOT NULL,
	rel_type TEXT NOT NULL,
	type TEXT NOT NULL,
	sender TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	aggregation_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX event_relations_parent ON event_relations(relates_to, stream_pos);
CREATE INDEX event_relations_room_type ON event_relations(room_id, rel_type, stream_pos)`

// Relation is a row of event_relations: EventID relates to RelatesTo.
type Relation struct {
	EventID        string
	RoomID         string
	RelatesTo      string
	RelType        string
	Type           string
	Sender         string
	StreamPos      int64
	AggregationKey string
}

// InsertRelation records a relation (ignored if the event already has one).
func InsertRelation(ctx context.Context, q Querier, r Relation) error {
	noteStream(q, "event_relations", r.StreamPos)
	_, err := q.ExecContext(ctx, `INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, type, sender, stream_pos, aggregation_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING`,
		r.EventID, r.RoomID, r.RelatesTo, r.RelType, r.Type, r.Sender, r.StreamPos, r.AggregationKey)
	return err
}

// DeleteRelation forgets the relation of a redacted event.
func DeleteRelation(ctx context.Context, q Querier, eventID string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM event_relations WHERE event_id = $1`, eventID)
	return err
}

const relationCols = `event_id, room_id, relates_to, rel_type, type, sender, stream_pos, aggregation_key`

func queryRelations(ctx context.Context, q Querier, query string, args ...any) ([]Relation, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Relation
	for rows.Next() {
		var r Relation
		if err := rows.Scan(&r.EventID, &r.RoomID, &r.RelatesTo, &r.RelType, &r.Type, &r.Sender, &r.StreamPos, &r.AggregationKey); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// RelationsQuery pages through the children of one event.
type RelationsQuery struct {
	RoomID    string
	Parent    string
	RelType   string // "" = any
	EventType string // "" = any
	// Children with From < stream_pos <= To, newest first when Backwards.
	From, To  int64
	Backwards bool
	Limit     int
}

// ChildRelations returns a page of an event's direct children.
func ChildRelations(ctx context.Context, q Querier, rq RelationsQuery) ([]Relation, error) {
	where := `room_id = $1 AND relates_to = $2 AND stream_pos > $3 AND stream_pos <= $4`
	args := []any{rq.RoomID, rq.Parent, rq.From, rq.To}
	if rq.RelType != "" {
		args = append(args, rq.RelType)
		where += fmt.Sprintf(" AND rel_type = $%d", len(args))
	}
	if rq.EventType != "" {
		args = append(args, rq.EventType)
		where += fmt.Sprintf(" AND type = $%d", len(args))
	}
	order := "ASC"
	if rq.Backwards {
		order = "DESC"
	}
	args = append(args, rq.Limit)
	return queryRelations(ctx, q, `SELECT `+relationCols+` FROM event_relations WHERE `+where+
		` ORDER BY stream_pos `+order+fmt.Sprintf(` LIMIT $%d`, len(args)), args...)
}

// RelationsOf returns every relation whose parent is one of parents, in
// room, with one of relTypes (all types when none), oldest first; at most
// limit rows.
func RelationsOf(ctx context.Context, q Querier, roomID string, parents []string, relTypes []string, limit int) ([]Relation, error) {
	if len(parents) == 0 {
		return nil, nil
	}
	args := []any{roomID}
	for _, p := range parents {
		args = append(args, p)
	}
	where := `room_id = $1 AND relates_to IN ` + inPlaceholders(2, len(parents))
	if len(relTypes) > 0 {
		where += ` AND rel_type IN ` + inPlaceholders(len(args)+1, len(relTypes))
		for _, t := range relTypes {
			args = append(args, t)
		}
	}
	args = append(args, limit)
	return queryRelations(ctx, q, `SELECT `+relationCols+` FROM event_relations WHERE `+where+
		fmt.Sprintf(` ORDER BY stream_pos ASC LIMIT $%d`, len(args)), args...)
}

// ParentRelations returns the relations (of relTypes; all when none) whose
// parent is one of parents, in any room, oldest first. Callers check that
// a child's room is its parent's.
func ParentRelations(ctx context.Context, q Querier, parents []string, relTypes []string) ([]Relation, error) {
	if len(parents) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(parents)+len(relTypes))
	for _, p := range parents {
		args = append(args, p)
	}
	where := `relates_to IN ` + inPlaceholders(1, len(parents))
	if len(relTypes) > 0 {
		where += ` AND rel_type IN ` + inPlaceholders(len(args)+1, len(relTypes))
		for _, t := range relTypes {
			args = append(args, t)
		}
	}
	return queryRelations(ctx, q, `SELECT `+relationCols+` FROM event_relations WHERE `+where+` ORDER BY stream_pos ASC`, args...)
}

// ThreadSummary is the aggregate of one thread.
type ThreadSummary struct {
	Root        string
	RoomID      string
	Count       int64
	LatestEvent string
	LatestPos   int64
	// UserEvents counts the thread events sent by the user asked about.
	UserEvents int64
}

// ThreadSummaries aggregates the m.thread children of roots (children in
// the root's own room only, at or below maxPos), 500 roots per query.
func ThreadSummaries(ctx context.Context, q Querier, roots []string, userID string, maxPos int64) (map[string]*ThreadSummary, error) {
	out := map[string]*ThreadSummary{}
	for start := 0; start < len(roots); start += 500 {
		end := min(start+500, len(roots))
		args := []any{userID, maxPos}
		for _, r := range roots[start:end] {
			args = append(args, r)
		}
		rows, err := q.QueryContext(ctx, `SELECT r.relates_to, r.room_id, r.event_id, x.n, x.latest, x.mine FROM event_relations r JOIN (
				SELECT c.relates_to, COUNT(*) AS n, MAX(c.stream_pos) AS latest, SUM(CASE WHEN c.sender = $1 THEN 1 ELSE 0 END) AS mine
				FROM event_relations c JOIN events p ON p.event_id = c.relates_to AND p.room_id = c.room_id
				WHERE c.rel_type = 'm.thread' AND c.stream_pos <= $2 AND c.relates_to IN `+inPlaceholders(3, end-start)+`
				GROUP BY c.relates_to) x ON r.relates_to = x.relates_to AND r.stream_pos = x.latest AND r.rel_type = 'm.thread'`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var s ThreadSummary
			if err := rows.Scan(&s.Root, &s.RoomID, &s.LatestEvent, &s.Count, &s.LatestPos, &s.UserEvents); err != nil {
				rows.Close()
				return nil, err
			}
			out[s.Root] = &s
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ThreadRoot is a thread of a room with the position of its latest event.
type ThreadRoot struct {
	Root      string
	LatestPos int64
}

// ThreadRoots lists a room's threads by their latest event at or below
// capPos, keeping those whose latest event is at or below before, most
// recently active first; participatedBy keeps only threads the user sent
// the root of or an event in.
func ThreadRoots(ctx context.Context, q Querier, roomID, participatedBy string, capPos, before int64, limit int) ([]ThreadRoot, error) {
	args := []any{roomID, capPos, before}
	having := ""
	if participatedBy != "" {
		args = append(args, participatedBy)
		having = ` AND (SUM(CASE WHEN r.sender = $4 THEN 1 ELSE 0 END) > 0
			OR EXISTS (SELECT 1 FROM events e WHERE e.event_id = r.relates_to AND e.sender = $4))`
	}
	args = append(args, limit)
	rows, err := q.QueryContext(ctx, `SELECT r.relates_to, MAX(r.stream_pos) FROM event_relations r
		WHERE r.room_id = $1 AND r.rel_type = 'm.thread' AND r.stream_pos <= $2
		GROUP BY r.relates_to HAVING MAX(r.stream_pos) <= $3`+having+`
		ORDER BY 2 DESC`+fmt.Sprintf(` LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ThreadRoot
	for rows.Next() {
		var t ThreadRoot
		if err := rows.Scan(&t.Root, &t.LatestPos); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
