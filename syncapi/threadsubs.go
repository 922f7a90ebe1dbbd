package syncapi

import (
	"context"

	"enclave/storage"
)

// threadSubscriptionsExtension is MSC4308's sliding sync extension (its
// unstable name); the server sends at most defaultThreadSubscriptionsLimit
// changes in one response, the client pages back for the rest.
const (
	threadSubscriptionsExtension    = "io.element.msc4308.thread_subscriptions"
	defaultThreadSubscriptionsLimit = 100
)

// ThreadSubscriptionPage is one page of a user's thread subscription
// changes (MSC4308) with to < pos <= from, at most limit of them, newest
// first: "subscribed" and "unsubscribed" map room -> thread root ->
// {automatic, bump_stamp} / {bump_stamp}; "prev_batch" is set when older
// changes in the range were left out, to continue from (exclusive).
func ThreadSubscriptionPage(ctx context.Context, db *storage.DB, userID string, to, from int64, limit int) (map[string]any, error) {
	rows, err := storage.ThreadSubscriptionChanges(ctx, db, userID, to, from, limit+1)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if len(rows) > limit {
		rows = rows[:limit]
		out["prev_batch"] = Token{Pos: rows[len(rows)-1].StreamPos - 1}.String()
	}
	subscribed := map[string]map[string]any{}
	unsubscribed := map[string]map[string]any{}
	for _, s := range rows {
		m := unsubscribed
		entry := map[string]any{"bump_stamp": s.StreamPos}
		if s.Subscribed {
			m = subscribed
			entry["automatic"] = s.Automatic
		}
		if m[s.RoomID] == nil {
			m[s.RoomID] = map[string]any{}
		}
		m[s.RoomID][s.RootID] = entry
	}
	if len(subscribed) > 0 {
		out["subscribed"] = subscribed
	}
	if len(unsubscribed) > 0 {
		out["unsubscribed"] = unsubscribed
	}
	return out, nil
}
