package storage_test

import (
	"context"
	"errors"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// Thread subscriptions: manual beats automatic, an unsubscription fences
// older causes, every change takes a new stream position and the change
// list pages newest first; the notifier's subscriber set follows.
func TestThreadSubscriptionsStore(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const u, room, root = "@a:test", "!r:test", "$root"
		tx := func(fn func(tx *storage.Tx) (int64, error)) (int64, error) {
			var pos int64
			err := db.WithTx(ctx, func(tx *storage.Tx) error {
				var err error
				pos, err = fn(tx)
				return err
			})
			return pos, err
		}
		sub := func(root string, cause int64) (int64, error) {
			return tx(func(t *storage.Tx) (int64, error) { return storage.SubscribeThread(ctx, t, u, room, root, cause) })
		}
		unsub := func(root string) (int64, error) {
			return tx(func(t *storage.Tx) (int64, error) { return storage.UnsubscribeThread(ctx, t, u, room, root) })
		}
		p1, err := sub(root, 5)
		if err != nil || p1 == 0 {
			t.Fatalf("automatic: %d %v", p1, err)
		}
		if p, err := sub(root, 6); err != nil || p != 0 {
			t.Fatalf("automatic again changed the row: %d %v", p, err)
		}
		p2, err := sub(root, 0)
		if err != nil || p2 <= p1 {
			t.Fatalf("manual over automatic: %d %v", p2, err)
		}
		if s, _ := storage.GetThreadSubscription(ctx, db, u, room, root); !s.Subscribed || s.Automatic || s.StreamPos != p2 {
			t.Fatalf("after manual %+v", s)
		}
		p3, err := unsub(root)
		if err != nil || p3 <= p2 {
			t.Fatalf("unsubscribe: %d %v", p3, err)
		}
		if _, err := sub(root, p3); !errors.Is(err, storage.ErrConflictingUnsubscription) {
			t.Fatalf("cause at the fence: %v", err)
		}
		if subs, _ := storage.ThreadSubscribers(ctx, db, room, root); len(subs) != 0 {
			t.Fatalf("subscribers after unsubscribing %v", subs)
		}
		p4, err := sub(root, p3+1)
		if err != nil || p4 <= p3 {
			t.Fatalf("cause after the fence: %d %v", p4, err)
		}
		if subs, _ := storage.ThreadSubscribers(ctx, db, room, root); !subs[u] {
			t.Fatalf("subscribers %v", subs)
		}
		p5, _ := unsub("$other") // never subscribed: recorded all the same
		changes, err := storage.ThreadSubscriptionChanges(ctx, db, u, 0, p5, 10)
		if err != nil || len(changes) != 2 || changes[0].RootID != "$other" || changes[0].Subscribed || changes[1].RootID != root || !changes[1].Automatic {
			t.Fatalf("changes %+v %v", changes, err)
		}
		if older, _ := storage.ThreadSubscriptionChanges(ctx, db, u, 0, p5-1, 10); len(older) != 1 || older[0].RootID != root {
			t.Fatalf("changes before %d: %+v", p5, older)
		}
		if none, _ := storage.ThreadSubscriptionChanges(ctx, db, u, p5, p5+100, 10); len(none) != 0 {
			t.Fatalf("changes after the last: %+v", none)
		}
	})
}
