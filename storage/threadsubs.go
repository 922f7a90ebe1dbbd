package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Thread subscriptions (MSC4306): one row per user and thread, the
// latest state only (the MSC needs no history). Every change takes a new
// stream position, so the sliding sync extension (MSC4308) sends only what
// changed since a pos and can page back through the rest.
// unsubscribed_pos is the position of the user's latest unsubscription (0
// for none): an automatic subscription whose cause event is not after it
// is refused, so a stale device cannot re-subscribe the user.
const threadSubscriptionsV1 = `
CREATE TABLE thread_subscriptions (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	root_id TEXT NOT NULL,
	subscribed BOOLEAN NOT NULL,
	automatic BOOLEAN NOT NULL,
	unsubscribed_pos BIGINT NOT NULL DEFAULT 0,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, root_id)
);
CREATE INDEX thread_subscriptions_user_pos ON thread_subscriptions(user_id, stream_pos);
CREATE INDEX thread_subscriptions_thread ON thread_subscriptions(room_id, root_id)`

// ThreadSubscription is one user's state for one thread.
type ThreadSubscription struct {
	RoomID     string
	RootID     string
	Subscribed bool
	Automatic  bool
	// UnsubscribedPos is the stream position of the latest
	// unsubscription, 0 if none.
	UnsubscribedPos int64
	StreamPos       int64
}

// ErrConflictingUnsubscription refuses an automatic subscription whose
// cause event the user had already seen when they unsubscribed.
var ErrConflictingUnsubscription = errors.New("thread unsubscribed after the cause event")

// GetThreadSubscription loads a user's row for a thread, or ErrNotFound.
func GetThreadSubscription(ctx context.Context, q Querier, userID, roomID, rootID string) (*ThreadSubscription, error) {
	s := &ThreadSubscription{RoomID: roomID, RootID: rootID}
	err := q.QueryRowContext(ctx, `SELECT subscribed, automatic, unsubscribed_pos, stream_pos FROM thread_subscriptions
		WHERE user_id = $1 AND room_id = $2 AND root_id = $3`, userID, roomID, rootID).Scan(&s.Subscribed, &s.Automatic, &s.UnsubscribedPos, &s.StreamPos)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// SubscribeThread subscribes userID to a thread inside tx and returns the
// change's stream position (0 when nothing changed). causePos is the
// stream position of the event that caused an automatic subscription, 0
// for a manual one. A manual subscription replaces an automatic one; an
// automatic one leaves any subscription as it is and is refused
// (ErrConflictingUnsubscription) when the cause is not after the latest
// unsubscription.
func SubscribeThread(ctx context.Context, tx *Tx, userID, roomID, rootID string, causePos int64) (int64, error) {
	automatic := causePos > 0
	cur, err := GetThreadSubscription(ctx, tx, userID, roomID, rootID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return 0, err
	}
	if cur != nil {
		if automatic && !cur.Subscribed && causePos <= cur.UnsubscribedPos {
			return 0, ErrConflictingUnsubscription
		}
		if cur.Subscribed && (automatic || !cur.Automatic) {
			return 0, nil
		}
	}
	pos := tx.NextPos("thread_subscriptions")
	_, err = tx.ExecContext(ctx, `INSERT INTO thread_subscriptions (user_id, room_id, root_id, subscribed, automatic, unsubscribed_pos, stream_pos)
		VALUES ($1, $2, $3, TRUE, $4, 0, $5)
		ON CONFLICT (user_id, room_id, root_id) DO UPDATE SET subscribed = TRUE, automatic = excluded.automatic, stream_pos = excluded.stream_pos`,
		userID, roomID, rootID, automatic, pos)
	if err != nil {
		return 0, err
	}
	return pos, nil
}

// UnsubscribeThread records that userID unsubscribed from a thread (also
// when they were not subscribed: the decision still outranks an older
// automatic subscription) and returns the change's stream position. A
// repeated unsubscription moves the fence (and the change) forwards.
func UnsubscribeThread(ctx context.Context, tx *Tx, userID, roomID, rootID string) (int64, error) {
	pos := tx.NextPos("thread_subscriptions")
	_, err := tx.ExecContext(ctx, `INSERT INTO thread_subscriptions (user_id, room_id, root_id, subscribed, automatic, unsubscribed_pos, stream_pos)
		VALUES ($1, $2, $3, FALSE, FALSE, $4, $4)
		ON CONFLICT (user_id, room_id, root_id) DO UPDATE SET subscribed = FALSE, automatic = FALSE,
			unsubscribed_pos = excluded.unsubscribed_pos, stream_pos = excluded.stream_pos`,
		userID, roomID, rootID, pos)
	if err != nil {
		return 0, err
	}
	return pos, nil
}

// ThreadSubscriptionChanges lists userID's thread subscription changes
// with to < stream_pos <= from, newest first, at most limit of them.
func ThreadSubscriptionChanges(ctx context.Context, q Querier, userID string, to, from int64, limit int) ([]ThreadSubscription, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, root_id, subscribed, automatic, unsubscribed_pos, stream_pos FROM thread_subscriptions
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos DESC LIMIT $4`, userID, to, from, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ThreadSubscription
	for rows.Next() {
		var s ThreadSubscription
		if err := rows.Scan(&s.RoomID, &s.RootID, &s.Subscribed, &s.Automatic, &s.UnsubscribedPos, &s.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// ThreadSubscribers returns which of users are subscribed to a thread
// (the notifier's thread_subscription condition).
func ThreadSubscribers(ctx context.Context, q Querier, roomID, rootID string) (map[string]bool, error) {
	rows, err := q.QueryContext(ctx, `SELECT user_id FROM thread_subscriptions WHERE room_id = $1 AND root_id = $2 AND subscribed = TRUE`, roomID, rootID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out[u] = true
	}
	return out, rows.Err()
}
