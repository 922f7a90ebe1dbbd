package storage

import (
	"context"
	"sync"
)

// UserRoom is a room the user has a membership in, with the room's latest
// stream position, so /sync can skip rooms with nothing new, and the
// position of the user's current membership event (0 when unknown), so it
// can skip looking for membership changes.
type UserRoom struct {
	Membership string
	LastPos    int64
	MemberPos  int64
}

// memberCache keeps what UserRooms answers — every /sync asks it — in
// memory: each user's membership rows and each room's last position. The
// writers in this package (SetCurrentState, InsertRoom, UpdateRoomHead,
// SetRoomLastPos, PurgeRoom) update it after their transaction commits and
// before its stream positions become visible, so a reader that has seen a
// position also sees the cache at or past it.
//
// A load never overwrites a newer write: a user's rows are stored only if
// no membership of theirs was written while the query ran (gens), a room's
// position only if none was written at all.
type memberCache struct {
	mu      sync.Mutex
	users   map[string]map[string]UserRoom // user -> room -> membership, MemberPos
	gens    map[string]uint64              // user -> writes seen
	lastPos map[string]int64               // room -> last_pos, or noRoomRow
	epoch   uint64                         // bumped by reset
}

// afterWrite runs fn on q's membership cache once q's transaction has
// committed (at once outside a transaction).
func afterWrite(q Querier, fn func(*memberCache)) {
	onCommit(q, func(db *DB) { db.members.locked(fn) })
}

// onCommit runs fn with q's store once q's transaction has committed —
// before its stream positions become visible (see WithTx) — or at once
// when q is the store itself. The in-memory read caches are kept this way.
func onCommit(q Querier, fn func(*DB)) {
	db := q.Store()
	if tx := q.Txn(); tx != nil {
		tx.AfterCommit(func() { fn(db) })
		return
	}
	fn(db)
}

func (c *memberCache) locked(fn func(*memberCache)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.users == nil {
		c.users, c.gens, c.lastPos = map[string]map[string]UserRoom{}, map[string]uint64{}, map[string]int64{}
	}
	fn(c)
}

func (c *memberCache) setLastPos(roomID string, pos int64) { c.lastPos[roomID] = pos }

func (c *memberCache) setMembership(r CurrentStateRow) {
	c.gens[r.StateKey]++
	rooms := c.users[r.StateKey]
	if rooms == nil {
		return // not loaded: the next read queries the store
	}
	if r.EventID == "" {
		delete(rooms, r.RoomID)
		return
	}
	rooms[r.RoomID] = UserRoom{Membership: r.Membership, MemberPos: r.StreamPos}
}

func (c *memberCache) reset() {
	clear(c.users)
	clear(c.lastPos)
	c.epoch++
}

// UserRooms lists the user's current memberships (in rooms this server has
// a row for) with each room's last_pos. Read through the store (q a *DB),
// it is answered from memory after the user's first call.
func UserRooms(ctx context.Context, q Querier, userID string) (map[string]UserRoom, error) {
	if q.Txn() != nil {
		all, err := queryUserRooms(ctx, q, userID)
		return withRoomRows(all), err
	}
	db := q.Store()
	c := &db.members
	var out map[string]UserRoom
	var missing []string
	var gen, epoch uint64
	c.locked(func(c *memberCache) {
		gen, epoch = c.gens[userID], c.epoch
		rooms := c.users[userID]
		if rooms == nil {
			return
		}
		out = make(map[string]UserRoom, len(rooms))
		for id, ur := range rooms {
			pos, ok := c.lastPos[id]
			switch {
			case !ok:
				missing = append(missing, id)
			case pos != noRoomRow:
				ur.LastPos = pos
				out[id] = ur
			}
		}
	})
	if out != nil && len(missing) == 0 {
		return out, nil
	}
	// First call for this user, or rooms whose position is not known yet:
	// read the store, and keep what no write has overtaken meanwhile.
	all, err := queryUserRooms(ctx, db, userID)
	if err != nil {
		return nil, err
	}
	c.locked(func(c *memberCache) {
		if c.epoch != epoch {
			return
		}
		for id, ur := range all {
			if _, ok := c.lastPos[id]; !ok {
				c.lastPos[id] = ur.LastPos // noRoomRow too, until InsertRoom
			}
		}
		if c.users[userID] == nil && c.gens[userID] == gen {
			rooms := make(map[string]UserRoom, len(all))
			for id, ur := range all {
				rooms[id] = UserRoom{Membership: ur.Membership, MemberPos: ur.MemberPos}
			}
			c.users[userID] = rooms
		}
	})
	return withRoomRows(all), nil
}

// withRoomRows drops memberships in rooms without a row.
func withRoomRows(all map[string]UserRoom) map[string]UserRoom {
	for id, ur := range all {
		if ur.LastPos == noRoomRow {
			delete(all, id)
		}
	}
	return all
}

// noRoomRow marks, in queryUserRooms' answer, a membership in a room this
// server has no row for (a remote invite): UserRooms leaves it out.
const noRoomRow = -1 << 62

func queryUserRooms(ctx context.Context, q Querier, userID string) (map[string]UserRoom, error) {
	rows, err := q.QueryContext(ctx, `SELECT cs.room_id, cs.membership, COALESCE(r.last_pos, $2), cs.stream_pos
		FROM current_state cs LEFT JOIN rooms r ON r.room_id = cs.room_id
		WHERE cs.state_key = $1 AND cs.type = 'm.room.member'`, userID, int64(noRoomRow))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]UserRoom{}
	for rows.Next() {
		var id string
		var ur UserRoom
		if err := rows.Scan(&id, &ur.Membership, &ur.LastPos, &ur.MemberPos); err != nil {
			return nil, err
		}
		out[id] = ur
	}
	return out, rows.Err()
}
