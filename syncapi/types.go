package syncapi

import "encoding/json"

// Response is the body of GET /sync.
type Response struct {
	NextBatch                    string          `json:"next_batch"`
	AccountData                  *EventList      `json:"account_data,omitempty"`
	Presence                     *EventList      `json:"presence,omitempty"`
	ToDevice                     *EventList      `json:"to_device,omitempty"`
	DeviceLists                  *DeviceLists    `json:"device_lists,omitempty"`
	DeviceOneTimeKeysCount       map[string]int  `json:"device_one_time_keys_count,omitempty"`
	DeviceUnusedFallbackKeyTypes *[]string       `json:"device_unused_fallback_key_types,omitempty"`
	Rooms                        Rooms           `json:"rooms"`
	Extensions                   json.RawMessage `json:"extensions,omitempty"`
}

// EventList is {"events": [...]}.
type EventList struct {
	Events []any `json:"events"`
}

// DeviceLists tells clients whose devices changed (E2EE).
type DeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// Rooms is the rooms section of a sync response.
type Rooms struct {
	Join   map[string]*JoinedRoom  `json:"join"`
	Invite map[string]*InvitedRoom `json:"invite"`
	Leave  map[string]*LeftRoom    `json:"leave"`
	Knock  map[string]*KnockedRoom `json:"knock,omitempty"`
}

// Timeline is a room's timeline slice.
type Timeline struct {
	Events    []ClientEvent `json:"events"`
	Limited   bool          `json:"limited"`
	PrevBatch string        `json:"prev_batch,omitempty"`
}

// Summary is the room summary (heroes and member counts).
type Summary struct {
	Heroes             []string `json:"m.heroes,omitempty"`
	JoinedMemberCount  *int     `json:"m.joined_member_count,omitempty"`
	InvitedMemberCount *int     `json:"m.invited_member_count,omitempty"`
}

// UnreadNotifications are a room's (or thread's) notification counts.
type UnreadNotifications struct {
	HighlightCount    int `json:"highlight_count"`
	NotificationCount int `json:"notification_count"`
}

// JoinedRoom is one room under rooms.join.
type JoinedRoom struct {
	Summary *Summary `json:"summary,omitempty"`
	// State is left out (nil events) when the client asked for state_after.
	State                     StateList                      `json:"state,omitzero"`
	StateAfter                *StateList                     `json:"state_after,omitempty"`
	StateAfterUnstable        *StateList                     `json:"org.matrix.msc4222.state_after,omitempty"`
	Timeline                  Timeline                       `json:"timeline"`
	Ephemeral                 EventList                      `json:"ephemeral"`
	AccountData               EventList                      `json:"account_data"`
	UnreadNotifications       *UnreadNotifications           `json:"unread_notifications,omitempty"`
	UnreadThreadNotifications map[string]UnreadNotifications `json:"unread_thread_notifications,omitempty"`
}

// StateList is {"events": [...]} of state events.
type StateList struct {
	Events []ClientEvent `json:"events"`
}

// InvitedRoom is one room under rooms.invite (stripped state).
type InvitedRoom struct {
	InviteState struct {
		Events []StrippedEvent `json:"events"`
	} `json:"invite_state"`
}

// KnockedRoom is one room under rooms.knock (stripped state).
type KnockedRoom struct {
	KnockState struct {
		Events []StrippedEvent `json:"events"`
	} `json:"knock_state"`
}

// LeftRoom is one room under rooms.leave.
type LeftRoom struct {
	State              StateList  `json:"state,omitzero"`
	StateAfter         *StateList `json:"state_after,omitempty"`
	StateAfterUnstable *StateList `json:"org.matrix.msc4222.state_after,omitempty"`
	Timeline           Timeline   `json:"timeline"`
	AccountData        EventList  `json:"account_data"`
}

func newJoinedRoom() *JoinedRoom {
	return &JoinedRoom{State: StateList{Events: []ClientEvent{}}, Timeline: Timeline{Events: []ClientEvent{}},
		Ephemeral: EventList{Events: []any{}}, AccountData: EventList{Events: []any{}}}
}

// JoinedRoom returns the response's entry for a joined room, creating it:
// extensions add receipts, typing and room account data through it.
func (r *Response) JoinedRoom(roomID string) *JoinedRoom {
	if jr := r.Rooms.Join[roomID]; jr != nil {
		return jr
	}
	jr := newJoinedRoom()
	r.Rooms.Join[roomID] = jr
	return jr
}

// empty reports whether the response carries nothing a long-poll should
// return for.
func (r *Response) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Knock) == 0 &&
		(r.AccountData == nil || len(r.AccountData.Events) == 0) &&
		(r.Presence == nil || len(r.Presence.Events) == 0) &&
		(r.ToDevice == nil || len(r.ToDevice.Events) == 0) &&
		(r.DeviceLists == nil || (len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0))
}
