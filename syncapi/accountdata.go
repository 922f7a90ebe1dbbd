package syncapi

import (
	"context"
	"encoding/json"

	"enclave/internal/invitefilter"
	pushnotify "enclave/internal/pushrules/notifier"
	"enclave/storage"
)

// PushRulesType is the account data type clients read push rules from.
const PushRulesType = "m.push_rules"

// accountData sends the account data written in (Since, To]: global data
// at the top level, room data under rooms.join; everything on an initial
// sync, including the computed push rules. It also drops invites from
// ignored users.
type accountData struct{ s *Syncer }

// NewAccountDataExtension makes the account data stream.
func NewAccountDataExtension(s *Syncer) Extension { return &accountData{s: s} }

func (a *accountData) Apply(ctx context.Context, req *Request, resp *Response) error {
	var rows []storage.AccountData
	var err error
	if a.s.moved("account_data", req) {
		if rows, err = storage.AccountDataRange(ctx, a.s.db, req.UserID, req.Since.Pos, req.To.Pos); err != nil {
			return err
		}
	}
	joined := make(map[string]bool, len(req.JoinedRooms))
	for _, r := range req.JoinedRooms {
		joined[r] = true
	}
	gf := &req.Filter.AccountData
	rf := &req.Filter.Room.AccountData
	var global []any
	sentRules := false
	for _, row := range rows {
		if row.RoomID == "" {
			if !gf.Allows(row.Type, req.UserID) {
				continue
			}
			content := row.Content
			if row.Type == PushRulesType {
				if content, err = pushnotify.AccountDataContent(ctx, a.s.db, req.UserID); err != nil {
					return err
				}
				sentRules = true
			}
			global = append(global, accountDataEvent(row.Type, content))
			continue
		}
		if !joined[row.RoomID] || !rf.AllowsEvent(row.RoomID, row.Type, req.UserID, nil) {
			continue
		}
		jr := resp.JoinedRoom(row.RoomID)
		jr.AccountData.Events = append(jr.AccountData.Events, accountDataEvent(row.Type, row.Content))
	}
	if req.Initial && !sentRules && gf.Allows(PushRulesType, req.UserID) {
		content, err := pushnotify.AccountDataContent(ctx, a.s.db, req.UserID)
		if err != nil {
			return err
		}
		global = append(global, accountDataEvent(PushRulesType, content))
	}
	if len(global) > 0 {
		if resp.AccountData == nil {
			resp.AccountData = &EventList{Events: []any{}}
		}
		resp.AccountData.Events = append(resp.AccountData.Events, global...)
	}
	a.dropIgnoredInvites(ctx, req.UserID, resp)
	return nil
}

func accountDataEvent(typ string, content json.RawMessage) map[string]any {
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	return map[string]any{"type": typ, "content": content}
}

// dropIgnoredInvites removes invites sent by users the user ignores, and
// those their invite permission config (MSC4155) does not let through
// (ignored ones are accepted but never shown).
func (a *accountData) dropIgnoredInvites(ctx context.Context, userID string, resp *Response) {
	if len(resp.Rooms.Invite) == 0 {
		return
	}
	ignored := a.s.IgnoredBy(userID)
	filter, _ := storage.GetAccountData(ctx, a.s.db, userID, "", invitefilter.Type)
	if len(ignored) == 0 && filter == nil {
		return
	}
	for roomID, ir := range resp.Rooms.Invite {
		for _, ev := range ir.InviteState.Events {
			if ev.Type == "m.room.member" && ev.StateKey == userID && (ignored[ev.Sender] || invitefilter.Decide(filter, ev.Sender) != invitefilter.Allow) {
				delete(resp.Rooms.Invite, roomID)
				break
			}
		}
	}
}

// IgnoredBy returns the users userID ignores (m.ignored_user_list): their
// non-state events are left out of /sync and /messages.
func (s *Syncer) IgnoredBy(userID string) map[string]bool {
	m, err := storage.IgnoredUsers(context.Background(), s.db, userID)
	if err != nil {
		return nil
	}
	return m
}

// Ignored reports whether an event from sender is hidden from a viewer
// who ignores the users in ignored: state events are always shown.
func Ignored(ignored map[string]bool, sender string, isState bool) bool {
	return !isState && ignored[sender]
}
