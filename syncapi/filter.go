package syncapi

import (
	"encoding/json"
	"strings"
)

// Filter is the spec's sync filter (POST /user/{userId}/filter).
type Filter struct {
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	AccountData EventFilter `json:"account_data"`
	Presence    EventFilter `json:"presence"`
	Room        RoomFilter  `json:"room"`
}

// RoomFilter filters what /sync says about rooms.
type RoomFilter struct {
	Rooms        *[]string       `json:"rooms,omitempty"`
	NotRooms     []string        `json:"not_rooms,omitempty"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
	Timeline     RoomEventFilter `json:"timeline"`
	State        RoomEventFilter `json:"state"`
	Ephemeral    RoomEventFilter `json:"ephemeral"`
	AccountData  RoomEventFilter `json:"account_data"`
}

// EventFilter is the basic filter over event types and senders.
type EventFilter struct {
	Limit      *int      `json:"limit,omitempty"`
	Types      *[]string `json:"types,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
}

// RoomEventFilter adds the room-event fields.
type RoomEventFilter struct {
	EventFilter
	Rooms                   *[]string `json:"rooms,omitempty"`
	NotRooms                []string  `json:"not_rooms,omitempty"`
	LazyLoadMembers         bool      `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers bool      `json:"include_redundant_members,omitempty"`
	ContainsURL             *bool     `json:"contains_url,omitempty"`
	UnreadThreadNotes       bool      `json:"unread_thread_notifications,omitempty"`
	// Relation filters (MSC3874): keep only events with (or without) one of
	// these content.m.relates_to.rel_type values.
	RelTypes    *[]string `json:"org.matrix.msc3874.rel_types,omitempty"`
	NotRelTypes []string  `json:"org.matrix.msc3874.not_rel_types,omitempty"`
}

// ParseFilter decodes and sanity-checks a filter.
func ParseFilter(b []byte) (*Filter, error) {
	var f Filter
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// matchType matches an event type against a pattern where '*' is a wildcard.
func matchType(pattern, typ string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == typ
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(typ, parts[0]) {
		return false
	}
	rest := typ[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return strings.HasSuffix(rest, parts[len(parts)-1])
}

func anyMatch(patterns []string, v string, typ bool) bool {
	for _, p := range patterns {
		if (typ && matchType(p, v)) || (!typ && p == v) {
			return true
		}
	}
	return false
}

// Allows reports whether an event of type from sender passes the filter.
func (f *EventFilter) Allows(typ, sender string) bool {
	if anyMatch(f.NotTypes, typ, true) || anyMatch(f.NotSenders, sender, false) {
		return false
	}
	if f.Types != nil && !anyMatch(*f.Types, typ, true) {
		return false
	}
	if f.Senders != nil && !anyMatch(*f.Senders, sender, false) {
		return false
	}
	return true
}

// LimitOr returns the filter's limit, or def when unset or out of range.
func (f *EventFilter) LimitOr(def int) int {
	if f.Limit == nil || *f.Limit <= 0 {
		return def
	}
	return min(*f.Limit, 1000)
}

// AllowsRoom applies rooms / not_rooms.
func allowsRoom(rooms *[]string, notRooms []string, roomID string) bool {
	if anyMatch(notRooms, roomID, false) {
		return false
	}
	return rooms == nil || anyMatch(*rooms, roomID, false)
}

// AllowsEvent applies a room event filter to an event with its JSON (nil
// when the caller has none: it then has no URL and no relation).
func (f *RoomEventFilter) AllowsEvent(roomID, typ, sender string, event []byte) bool {
	if !allowsRoom(f.Rooms, f.NotRooms, roomID) || !f.Allows(typ, sender) {
		return false
	}
	if f.ContainsURL != nil {
		has := strings.Contains(string(event), `"url"`)
		if has != *f.ContainsURL {
			return false
		}
	}
	if f.RelTypes != nil || len(f.NotRelTypes) > 0 {
		rel := relType(event)
		if rel != "" && anyMatch(f.NotRelTypes, rel, false) {
			return false
		}
		if f.RelTypes != nil && (rel == "" || !anyMatch(*f.RelTypes, rel, false)) {
			return false
		}
	}
	return true
}

// relType reads content.m.relates_to.rel_type of an event's JSON ("" for
// none); it is parsed only when a filter asks.
func relType(event []byte) string {
	var e struct {
		Content struct {
			RelatesTo struct {
				RelType string `json:"rel_type"`
			} `json:"m.relates_to"`
		} `json:"content"`
	}
	if len(event) == 0 || json.Unmarshal(event, &e) != nil {
		return ""
	}
	return e.Content.RelatesTo.RelType
}
