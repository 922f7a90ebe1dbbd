package server

import (
	"context"
	"encoding/json"

	pushnotify "enclave/internal/pushrules/notifier"
	"enclave/roomserver"
)

// pushRooms gives the push notifier the room state it evaluates rules
// against, read from the room server (the notifier imports no component).
type pushRooms struct{ rs roomserver.API }

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
		if m, _ := ev.Membership(); m != "join" {
			continue
		}
		var c struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		room.Joined[k.StateKey] = c.DisplayName
	}
	room.SenderPowerLevel = roomserver.PowerLevel(state, sender)
	pl := roomserver.PowerLevels(state)
	room.NotificationLevel = pl.NotificationLevel
	return room, nil
}
