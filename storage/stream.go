package storage

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Stream hands out the store's ordered positions. Every row a client syncs
// (room events, receipts, account data, to-device messages, device-list
// changes…) takes its position from this one sequence, so a sync token is a
// single number that stays valid across restarts.
//
// Transactions commit out of order, so a position is "visible" only when
// every lower reserved position has committed or been abandoned: readers use
// Current(), never the highest ID, and so can never skip a row that commits
// late. Publish defers a wake-up until its position is visible.
//
// Current() also never passes the highest committed position: an abandoned
// (rolled-back) position is in no table, so after a restart the stream
// hands it out again, and a token naming it would skip that new row.
type Stream struct {
	mu        sync.Mutex
	next      int64
	inflight  []int64 // sorted reserved-but-unfinished positions
	current   int64
	committed int64 // highest position whose transaction committed
	pending   []pendingPublish
	// lastOf is the highest position handed out for rows of each stream
	// table (loaded at start, raised by Reserve), so a reader can skip a
	// table that has nothing in its range without asking the store.
	lastOf map[string]int64
}

type pendingPublish struct {
	pos int64
	fn  func()
}

// streamTables lists every table.column holding stream positions, so the
// stream resumes above the largest one after a restart and Stream.Moved can
// tell whether a table has rows past a position.
var streamTables = []struct{ table, column string }{
	{"events", "stream_pos"},
	{"account_data", "stream_pos"},
	{"presence", "stream_pos"},
	{"receipts", "stream_pos"},
	{"notifications", "stream_pos"},
	// Relations take their event's position: listed so that readers can
	// ask whether any relation was stored after a position.
	{"event_relations", "stream_pos"},
	{"e2ee_device_list_changes", "pos"},
	{"e2ee_to_device", "pos"},
	{"e2ee_stream_mark", "pos"},
	{"e2ee_member_changes", "pos"},
	{"audit_log", "pos"},
	{"thread_subscriptions", "stream_pos"},
}

func loadStream(ctx context.Context, db *DB) (*Stream, error) {
	var maxPos int64
	lastOf := make(map[string]int64, len(streamTables))
	for _, st := range streamTables {
		var v *int64
		if err := db.QueryRowContext(ctx, fmt.Sprintf("SELECT MAX(%s) FROM %s", st.column, st.table)).Scan(&v); err != nil {
			return nil, fmt.Errorf("storage: reading stream position of %s: %w", st.table, err)
		}
		lastOf[st.table] = 0
		if v != nil {
			lastOf[st.table] = *v
			maxPos = max(maxPos, *v)
		}
	}
	return &Stream{next: maxPos + 1, current: maxPos, committed: maxPos, lastOf: lastOf}, nil
}

// Reserve takes the next position for a row of table (a registered stream
// table). The caller must Release it.
func (s *Stream) Reserve(table string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.next
	s.next++
	if _, ok := s.lastOf[table]; ok {
		s.lastOf[table] = p
	}
	s.inflight = append(s.inflight, p) // positions are issued in order: stays sorted
	return p
}

// ReserveAfterGap sets k positions aside (never handed out: lo to
// lo+k-1) and then reserves one for a row of table, above them. The
// positions set aside give later rows a place below that row (a
// timeline gap filled by backfill).
func (s *Stream) ReserveAfterGap(table string, k int64) (lo, p int64) {
	s.mu.Lock()
	lo = s.next
	s.next += k
	s.mu.Unlock()
	return lo, s.Reserve(table)
}

// Committed records that pos's transaction committed; call it before
// Release(pos).
func (s *Stream) Committed(pos int64) {
	s.mu.Lock()
	s.committed = max(s.committed, pos)
	s.mu.Unlock()
}

// Release marks pos finished (committed or rolled back) and runs any
// publications that became visible.
func (s *Stream) Release(pos int64) {
	s.mu.Lock()
	i := sort.Search(len(s.inflight), func(i int) bool { return s.inflight[i] >= pos })
	if i < len(s.inflight) && s.inflight[i] == pos {
		s.inflight = append(s.inflight[:i], s.inflight[i+1:]...)
	}
	bound := s.next - 1
	if len(s.inflight) > 0 {
		bound = s.inflight[0] - 1
	}
	// Everything up to bound is finished; what lies above the highest
	// commit was rolled back and holds no rows.
	s.current = max(s.current, min(bound, s.committed))
	var ready []func()
	keep := s.pending[:0]
	for _, p := range s.pending {
		if p.pos <= s.current {
			ready = append(ready, p.fn)
		} else {
			keep = append(keep, p)
		}
	}
	s.pending = keep
	s.mu.Unlock()
	for _, fn := range ready {
		fn()
	}
}

// Note records that a row of table took position pos, reserved for
// another table (a derived row written with its event's position).
func (s *Stream) Note(table string, pos int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, ok := s.lastOf[table]; ok && pos > last {
		s.lastOf[table] = pos
	}
}

// noteStream is Note for whichever store q belongs to.
func noteStream(q Querier, table string, pos int64) {
	q.Store().Stream.Note(table, pos)
}

// Moved reports whether table may hold rows with a position above since.
// It is false only when no position above since was ever handed out for
// it; an unregistered table always reports true.
func (s *Stream) Moved(table string, since int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	last, ok := s.lastOf[table]
	return !ok || last > since
}

// Last is the highest position handed out so far (committed or not).
func (s *Stream) Last() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next - 1
}

// Wait blocks until pos is visible to readers, or ctx ends. A writer that
// waits before acknowledging gives its client read-your-writes: otherwise
// a lower position still in flight in another transaction hides the
// acknowledged row from /sync and /messages for a moment.
func (s *Stream) Wait(ctx context.Context, pos int64) error {
	ch := make(chan struct{})
	s.Publish(pos, func() { close(ch) })
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Current is the highest position below which every row is committed.
func (s *Stream) Current() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Publish runs fn as soon as pos is visible (immediately if it already is).
func (s *Stream) Publish(pos int64, fn func()) {
	s.mu.Lock()
	if pos <= s.current {
		s.mu.Unlock()
		fn()
		return
	}
	s.pending = append(s.pending, pendingPublish{pos, fn})
	s.mu.Unlock()
}
