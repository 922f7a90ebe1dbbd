package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/storage"
)

// DefaultRoomVersion is the version of rooms created without one named
// (/createRoom, server notices, admin-made rooms): which versions are
// created is the room server's decision.
const DefaultRoomVersion = "10"

// API is what other components may ask of the room server.
type API interface {
	// CreateRoom builds and stores a room's initial events atomically.
	CreateRoom(ctx context.Context, req CreateRoomRequest) (roomID string, err error)
	// SendEvent builds a local event on the room's current extremities,
	// authorises it and stores it. Auth failures are *NotAllowedError.
	SendEvent(ctx context.Context, req SendRequest) (*storage.Event, error)
	// RoomVersion answers ErrRoomNotFound for rooms we do not know.
	RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.RoomVersion, error)
	// CurrentState returns the room's current state events.
	CurrentState(ctx context.Context, roomID string) (StateMap, error)
	// StateAt returns the room state before (or after) the event.
	StateAt(ctx context.Context, eventID string, after bool) (StateMap, error)
	// Membership returns the user's current membership ("" if none).
	Membership(ctx context.Context, roomID, userID string) (string, error)
	// Events loads events by ID as PDUs (missing IDs are skipped).
	Events(ctx context.Context, ids []string) ([]gomatrixserverlib.PDU, error)
	// StateAtSnapshot resolves a stored snapshot ID to its state.
	StateAtSnapshot(ctx context.Context, id int64) (StateMap, error)
	// StateEventAt returns one slot of a snapshot's state, or nil.
	StateEventAt(ctx context.Context, snapshot int64, typ, stateKey string) (gomatrixserverlib.PDU, error)
	// PDU parses a stored event.
	PDU(e *storage.Event) (gomatrixserverlib.PDU, error)
	// Subscribe receives every stored event once visible in the stream.
	Subscribe(fn func(OutputEvent))
	// AddHook runs h inside the transaction of every stored event.
	AddHook(h Hook)
}

// StateKey identifies a state slot.
type StateKey struct{ Type, StateKey string }

// StateMap is a room state: each slot's event.
type StateMap map[StateKey]gomatrixserverlib.PDU

// Get returns the event in a slot, or nil.
func (s StateMap) Get(typ, key string) gomatrixserverlib.PDU { return s[StateKey{typ, key}] }

// Membership returns userID's membership in this state ("" if none).
func (s StateMap) Membership(userID string) string {
	ev := s.Get("m.room.member", userID)
	if ev == nil {
		return ""
	}
	m, _ := ev.Membership()
	return m
}

// Events returns the state's events.
func (s StateMap) Events() []gomatrixserverlib.PDU {
	out := make([]gomatrixserverlib.PDU, 0, len(s))
	for _, e := range s {
		out = append(out, e)
	}
	return out
}

// SendRequest describes a local event to build.
type SendRequest struct {
	RoomID   string
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Redacts  string
	// TxnID and DeviceID make the send idempotent and let the sender's own
	// device see unsigned.transaction_id on its echo.
	TxnID    string
	DeviceID string
	// TS, when set, is origin_server_ts in milliseconds: an application
	// service importing history keeps each message's own time (?ts=).
	TS int64
	// Imported marks history brought from another platform: stored and
	// shown like any event, but not pushed or counted as unread.
	Imported bool
}

// InitialEvent is one event of a new room, after the create event.
type InitialEvent struct {
	Type     string
	StateKey *string
	Content  any
}

// CreateRoomRequest holds the events of a new room. The room server builds
// m.room.create itself (it may determine the room ID, as in v12), then the
// given events in order, each on the previous one.
type CreateRoomRequest struct {
	Creator       string
	RoomVersion   gomatrixserverlib.RoomVersion
	CreateContent map[string]any
	Events        []InitialEvent
	Public        bool // listed in the room directory
	// Alias, when set, is reserved in the same transaction.
	Alias string
	// TS, when set, is the origin_server_ts of the initial events (an
	// imported room keeps its creation time).
	TS int64
	// Imported: the room's initial events are imported history.
	Imported bool
	// InTx, when set, runs inside the creating transaction (the importer
	// records which source conversation the room is, atomically).
	InTx func(tx *storage.Tx, roomID string) error
}

// NotAllowedError is an event the auth rules reject.
type NotAllowedError struct{ Reason string }

func (e *NotAllowedError) Error() string { return "event not allowed: " + e.Reason }

// ErrRoomNotFound is returned for rooms this server does not know.
var ErrRoomNotFound = errors.New("room not found")

// ErrAliasInUse is returned when CreateRoom's alias is taken.
var ErrAliasInUse = errors.New("room alias in use")

// BadRequestError is a malformed event request (bad content, too large).
type BadRequestError struct{ Reason string }

func (e *BadRequestError) Error() string { return e.Reason }

func badRequest(format string, args ...any) error {
	return &BadRequestError{Reason: fmt.Sprintf(format, args...)}
}
