package syncapi

import (
	"context"

	"enclave/storage"
)

// unread adds unread notification counts to the joined rooms of a
// response. Register it after the streams that add rooms (receipts,
// account data): every joined room in the response gets its counts, and
// rooms whose counts changed in (Since, To] (new notification rows) are
// added. Receipts are stream rows too, so a room whose counts a receipt
// reset is in the response through its m.receipt.
type unread struct{ s *Syncer }

// NewUnreadExtension makes the unread counts stream.
func NewUnreadExtension(s *Syncer) Extension { return &unread{s: s} }

func (u *unread) Apply(ctx context.Context, req *Request, resp *Response) error {
	// Rooms whose totals moved in (Since, To] join the response (read only
	// when the notifications stream moved); every joined room in it gets
	// its totals. One query answers both.
	since := int64(-1)
	if !req.Initial && u.s.moved("notifications", req) {
		since = req.Since.Pos
	}
	if len(resp.Rooms.Join) == 0 && since < 0 {
		return nil
	}
	var rooms []string
	if !req.Initial {
		rooms = make([]string, 0, len(resp.Rooms.Join))
		for r := range resp.Rooms.Join {
			rooms = append(rooms, r)
		}
	}
	counts, err := storage.UnreadCounts(ctx, u.s.db, req.UserID, rooms, since)
	if err != nil {
		return err
	}
	if since >= 0 {
		joined := make(map[string]bool, len(req.JoinedRooms))
		for _, r := range req.JoinedRooms {
			joined[r] = true
		}
		for r := range counts {
			if joined[r] {
				resp.JoinedRoom(r)
			}
		}
	}
	perThread := req.Filter.Room.Timeline.UnreadThreadNotes
	for roomID, jr := range resp.Rooms.Join {
		c := counts[roomID]
		var room UnreadNotifications
		var threads map[string]UnreadNotifications
		for thread, tc := range c {
			if perThread && thread != "main" {
				if threads == nil {
					threads = map[string]UnreadNotifications{}
				}
				threads[thread] = UnreadNotifications{NotificationCount: tc.Notifications, HighlightCount: tc.Highlights}
				continue
			}
			room.NotificationCount += tc.Notifications
			room.HighlightCount += tc.Highlights
		}
		jr.UnreadNotifications = &room
		if perThread {
			jr.UnreadThreadNotifications = threads
		}
	}
	return nil
}
