package appservice

import (
	"context"
	"sort"
	"time"

	"enclave/storage"
)

// The operators' view of the bridges (admin API GET
// /_enclave/admin/v1/appservices): what each may see and how its queue
// stands. Tokens are never part of it.

// NamespaceView is one namespace regex as operators see it.
type NamespaceView struct {
	Regex     string `json:"regex"`
	Exclusive bool   `json:"exclusive"`
}

// RoomView is a room an appservice sees through its users' memberships.
type RoomView struct {
	RoomID string `json:"room_id"`
	// Members are its namespace users joined or invited there, with
	// their membership.
	Members map[string]string `json:"members"`
}

// View is one appservice in the admin API.
type View struct {
	ID             string                     `json:"id"`
	File           string                     `json:"file"`
	URL            *string                    `json:"url"`
	SenderUserID   string                     `json:"sender_user_id"`
	RateLimited    bool                       `json:"rate_limited"`
	Protocols      []string                   `json:"protocols"`
	Namespaces     map[string][]NamespaceView `json:"namespaces"`
	Rooms          []RoomView                 `json:"rooms"`
	RoomsTruncated bool                       `json:"rooms_truncated,omitempty"`
	QueueDepth     int                        `json:"queue_depth"`
	QueueOldestTS  int64                      `json:"queue_oldest_ts,omitempty"`
	LastSuccessTS  int64                      `json:"last_success_ts,omitempty"`
	LastFailureTS  int64                      `json:"last_failure_ts,omitempty"`
	LastError      string                     `json:"last_error,omitempty"`
	ReceiveEphem   bool                       `json:"receive_ephemeral"`
	MSC3202        bool                       `json:"msc3202"`
	MSC4190        bool                       `json:"msc4190"`
}

// QueueView is the queue of an appservice no longer registered.
type QueueView struct {
	ID            string `json:"id"`
	QueueDepth    int    `json:"queue_depth"`
	QueueOldestTS int64  `json:"queue_oldest_ts,omitempty"`
}

// viewRoomsMax bounds the rooms listed for one appservice.
const viewRoomsMax = 1000

func namespaceViews(ns []Namespace) []NamespaceView {
	out := make([]NamespaceView, 0, len(ns))
	for _, n := range ns {
		out = append(out, NamespaceView{Regex: n.Regex, Exclusive: n.Exclusive})
	}
	return out
}

func msOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Overview lists the registered appservices and the queues left by those
// removed.
func (s *Service) Overview(ctx context.Context) ([]View, []QueueView, error) {
	regs := s.Registrations()
	queues, err := storage.AppServiceQueueStats(ctx, s.opts.DB)
	if err != nil {
		return nil, nil, err
	}
	members, err := storage.LocalJoinsAndInvites(ctx, s.opts.DB, s.opts.ServerName)
	if err != nil {
		return nil, nil, err
	}
	views := make([]View, 0, len(regs))
	for _, r := range regs {
		v := View{ID: r.ID, File: r.file, URL: r.URL, SenderUserID: r.Sender(s.opts.ServerName), RateLimited: r.IsRateLimited(),
			Protocols: append([]string{}, r.Protocols...), ReceiveEphem: r.ReceiveEphemeral || r.PushEphemeral, MSC3202: r.MSC3202, MSC4190: r.MSC4190,
			Namespaces: map[string][]NamespaceView{"users": namespaceViews(r.Namespaces.Users), "aliases": namespaceViews(r.Namespaces.Aliases), "rooms": namespaceViews(r.Namespaces.Rooms)},
			Rooms:      []RoomView{}}
		byRoom := map[string]int{}
		for _, m := range members {
			if !r.OwnsUser(m.UserID, s.opts.ServerName) {
				continue
			}
			j, ok := byRoom[m.RoomID]
			if !ok {
				if len(v.Rooms) >= viewRoomsMax {
					v.RoomsTruncated = true
					continue
				}
				j = len(v.Rooms)
				byRoom[m.RoomID] = j
				v.Rooms = append(v.Rooms, RoomView{RoomID: m.RoomID, Members: map[string]string{}})
			}
			v.Rooms[j].Members[m.UserID] = m.Membership
		}
		q := queues[r.ID]
		delete(queues, r.ID)
		v.QueueDepth, v.QueueOldestTS = q.Depth, q.OldestTS
		d := s.delivery(r.ID)
		v.LastSuccessTS, v.LastFailureTS, v.LastError = msOrZero(d.LastSuccess), msOrZero(d.LastFailure), d.LastError
		views = append(views, v)
	}
	removed := make([]QueueView, 0, len(queues))
	for id, q := range queues {
		removed = append(removed, QueueView{ID: id, QueueDepth: q.Depth, QueueOldestTS: q.OldestTS})
	}
	sort.Slice(removed, func(i, j int) bool { return removed[i].ID < removed[j].ID })
	return views, removed, nil
}

// AdminView is Overview as the admin API answers it.
func (s *Service) AdminView(ctx context.Context) (any, error) {
	views, removed, err := s.Overview(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]any{"appservices": views, "removed_queues": removed}, nil
}
