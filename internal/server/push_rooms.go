package server

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/internal/lru"
	pushnotify "enclave/internal/pushrules/notifier"
	"enclave/roomserver"
)

// pushRooms gives the push notifier the room state it evaluates rules
// against, read from the room server (the notifier imports no component).
// members caches what the notifier reads of a member event's content
// (membership, display name), keyed by the content itself: every event in
// a room would otherwise decode all its members' events again.
type pushRooms struct {
	rs      roomserver.API
	members *lru.Cache[string, memberInfo]
}

type memberInfo struct {
	membership, displayName string
}

func newPushRooms(rs roomserver.API) pushRooms {
	return pushRooms{rs: rs, members: lru.New[string, memberInfo](16384)}
}

func (p pushRooms) PushContext(ctx context.Context, roomID, sender string) (*pushnotify.Room, error) {
	state, err := p.rs.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	room := &pushnotify.Room{Joined: map[string]string{}}
	for k, ev := range state {
		if k.Type != "m.room.member" {
			continue
		}
		if m := p.member(ev); m.membership == "join" {
			room.Joined[k.StateKey] = m.displayName
		}
	}
	room.SenderPowerLevel = roomserver.PowerLevel(state, sender)
	pl := roomserver.PowerLevels(state)
	room.NotificationLevel = pl.NotificationLevel
	return room, nil
}

func (p pushRooms) member(ev gomatrixserverlib.PDU) memberInfo {
	content := ev.Content()
	if m, ok := p.members.Get(string(content)); ok {
		return m
	}
	var c struct {
		Membership  string `json:"membership"`
		DisplayName string `json:"displayname"`
	}
	_ = json.Unmarshal(content, &c)
	m := memberInfo{membership: c.Membership, displayName: c.DisplayName}
	if len(content) <= 1024 {
		p.members.Put(string(content), m)
	}
	return m
}
