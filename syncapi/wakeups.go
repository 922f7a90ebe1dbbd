package syncapi

import (
	"context"
	"sync"

	"enclave/storage"
)

// wakeups wakes long-polling /sync requests. It keeps, per room, the users
// who should hear of its events (joined and invited), so an event wakes
// only them, and per user a channel closed at each wake-up.
type wakeups struct {
	db *storage.DB

	mu      sync.Mutex
	members map[string]map[string]bool // room -> users to wake
	wake    map[string]chan struct{}   // user -> closed on the next wake-up
	waiters [2]int                     // by Waiter kind
}

// WaiterKind tells the long-polls apart in metrics.
type WaiterKind int

const (
	SyncWaiter    WaiterKind = iota // GET /sync
	SlidingWaiter                   // simplified sliding sync (MSC4186)
)

func newWakeups(db *storage.DB) *wakeups {
	return &wakeups{db: db, members: map[string]map[string]bool{}, wake: map[string]chan struct{}{}}
}

// channel returns the channel that the user's next wake-up closes. Taking
// it before reading the stream position means no wake-up is lost.
func (n *wakeups) channel(userID string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := n.wake[userID]
	if ch == nil {
		ch = make(chan struct{})
		n.wake[userID] = ch
	}
	return ch
}

func (n *wakeups) wakeLocked(userID string) {
	if ch := n.wake[userID]; ch != nil {
		close(ch)
		delete(n.wake, userID)
	}
}

// wakeUsers wakes the given users.
func (n *wakeups) wakeUsers(users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		n.wakeLocked(u)
	}
}

// roomMembers returns the wake set of a room, loading it on first use.
func (n *wakeups) roomMembersLocked(ctx context.Context, roomID string) map[string]bool {
	if m := n.members[roomID]; m != nil {
		return m
	}
	m := map[string]bool{}
	for _, membership := range []string{"join", "invite"} {
		users, _ := storage.RoomMembers(ctx, n.db, roomID, membership)
		for _, u := range users {
			m[u] = true
		}
	}
	n.members[roomID] = m
	return m
}

// wakeRoom wakes everyone in the room's wake set.
func (n *wakeups) wakeRoom(ctx context.Context, roomID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for u := range n.roomMembersLocked(ctx, roomID) {
		n.wakeLocked(u)
	}
}

// onMembership updates a room's wake set for a membership change, waking
// the target too (a user who left or was kicked must hear of it).
func (n *wakeups) onMembership(ctx context.Context, roomID, userID, membership string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.roomMembersLocked(ctx, roomID)
	switch membership {
	case "join", "invite":
		m[userID] = true
	default:
		delete(m, userID)
	}
	n.wakeLocked(userID)
}

func (n *wakeups) addWaiter(kind WaiterKind, d int) {
	n.mu.Lock()
	n.waiters[kind] += d
	n.mu.Unlock()
}

// Waiters is the number of long-polls of a kind waiting now.
func (n *wakeups) Waiters(kind WaiterKind) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.waiters[kind]
}
