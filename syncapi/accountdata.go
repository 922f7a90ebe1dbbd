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
	h := a.s.inviteHider(ctx, userID)
	if !h.active() {
		return
	}
	for roomID, ir := range resp.Rooms.Invite {
		for _, ev := range ir.InviteState.Events {
			if ev.Type == "m.room.member" && ev.StateKey == userID && h.hides(ev.Sender) {
				delete(resp.Rooms.Invite, roomID)
				break
			}
		}
	}
}

// inviteHider decides which invites a user never sees: those from users
// they ignore, and those their MSC4155 invite permission config does not
// let through. /sync and sliding sync both ask it.
type inviteHider struct {
	ignored map[string]bool
	filter  json.RawMessage
}

func (s *Syncer) inviteHider(ctx context.Context, userID string) *inviteHider {
	filter, _ := storage.GetAccountData(ctx, s.db, userID, "", invitefilter.Type)
	return &inviteHider{ignored: s.IgnoredBy(userID), filter: filter}
}

// active reports whether anything can be hidden (else callers skip the
// state reads).
func (h *inviteHider) active() bool { return len(h.ignored) > 0 || h.filter != nil }

// hides reports whether an invite from sender is hidden.
func (h *inviteHider) hides(sender string) bool {
	return h.ignored[sender] || invitefilter.Decide(h.filter, sender) != invitefilter.Allow
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
