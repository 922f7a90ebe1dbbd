package roomserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// maxAuthFetchDepth bounds how far back authStateFor fetches auth events
// it does not have: ours normally reach our own copy of the room within a
// step or two, so a longer unknown chain is a server feeding us one.
const maxAuthFetchDepth = 8

// authStateFor is ev's auth events as a state map, checked as the spec's
// auth rules ask of them before ev itself is checked: no two for one
// (type, state_key), none the auth-event selection would not pick for ev,
// and none rejected. Auth events we do not have are fetched from origin and
// must themselves pass the auth rules against their own auth events (we
// keep no rejected events, so one we once rejected fails again here). Any
// failure is an *ErrRejected naming the auth event.
func (s *RoomServer) authStateFor(ctx context.Context, origin spec.ServerName, h *roomHead, ev gomatrixserverlib.PDU) (StateMap, error) {
	return s.authStateDepth(ctx, origin, h, ev, 0)
}

func (s *RoomServer) authStateDepth(ctx context.Context, origin spec.ServerName, h *roomHead, ev gomatrixserverlib.PDU, depth int) (StateMap, error) {
	ids := ev.AuthEventIDs()
	evs, err := s.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, e := range evs {
		have[e.EventID()] = true
	}
	var fetched []gomatrixserverlib.PDU
	for _, id := range ids {
		if have[id] {
			continue
		}
		if s.fetcher == nil {
			return nil, fmt.Errorf("missing auth event %s", id)
		}
		if depth >= maxAuthFetchDepth {
			return nil, &ErrRejected{Reason: fmt.Sprintf("auth event %s is further than %d unknown auth events away", id, maxAuthFetchDepth)}
		}
		e, err := s.fetcher.Event(ctx, origin, id, h.version.Version())
		if err != nil {
			return nil, fmt.Errorf("fetching auth event %s: %w", id, err)
		}
		if e.EventID() != id || e.RoomID().String() != ev.RoomID().String() {
			return nil, &ErrRejected{Reason: fmt.Sprintf("auth event %s is not the event asked for, or in another room", id)}
		}
		sub, err := s.authStateDepth(ctx, origin, h, e, depth+1)
		var rej *ErrRejected
		if errors.As(err, &rej) {
			return nil, &ErrRejected{Reason: fmt.Sprintf("auth event %s was rejected: %s", id, rej.Reason)}
		} else if err != nil {
			return nil, err
		}
		if err := checkAllowed(e, sub); err != nil {
			return nil, &ErrRejected{Reason: fmt.Sprintf("auth event %s was rejected: %v", id, err)}
		}
		fetched = append(fetched, e)
		have[id] = true
	}
	if err := s.storeOutliers(ctx, fetched); err != nil {
		return nil, err
	}
	selected := map[StateKey]bool{}
	for _, tup := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples() {
		selected[StateKey{tup.EventType, tup.StateKey}] = true
	}
	st := StateMap{}
	for _, a := range append(evs, fetched...) {
		if a.StateKey() == nil {
			return nil, &ErrRejected{Reason: fmt.Sprintf("auth event %s is not a state event", a.EventID())}
		}
		k := StateKey{a.Type(), *a.StateKey()}
		if _, dup := st[k]; dup {
			return nil, &ErrRejected{Reason: fmt.Sprintf("two auth events for (%s, %q)", k.Type, k.StateKey)}
		}
		if !selected[k] {
			return nil, &ErrRejected{Reason: fmt.Sprintf("auth event %s (%s, %q) is not one the auth rules select for this event", a.EventID(), k.Type, k.StateKey)}
		}
		st[k] = a
	}
	if h.version.DomainlessRoomIDs() { // v12: the create event is implied by the room ID
		if c := h.state.Get(spec.MRoomCreate, ""); c != nil {
			st[StateKey{spec.MRoomCreate, ""}] = c
		}
	}
	return st, nil
}
