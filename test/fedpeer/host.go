package fedpeer

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// CreateRoom makes a public room on the peer, created by creator (a user
// of the peer): create event, creator's join, power levels (creator 100,
// then plOverride's keys), public join rules and shared history. Servers
// under test can join it through the peer (make_join/send_join v2).
func (p *Peer) CreateRoom(t testing.TB, version gomatrixserverlib.RoomVersion, creator string, plOverride map[string]any) *Room {
	t.Helper()
	ver, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	if ver.DomainlessRoomIDs() {
		t.Fatalf("fedpeer: room version %s (room ID from the create event) is not supported", version)
	}
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	r := &Room{ID: "!" + hex.EncodeToString(b) + ":" + string(p.ServerName), Version: ver, p: p,
		events: map[string]gomatrixserverlib.PDU{}, state: map[string]gomatrixserverlib.PDU{}, forward: map[string]bool{}}
	create := map[string]any{"room_version": string(version)}
	if ver.CreatorInCreateEvent() {
		create["creator"] = creator
	}
	pl := map[string]any{"users": map[string]any{creator: 100}}
	for k, v := range plOverride {
		pl[k] = v
	}
	for _, e := range []struct {
		typ, key string
		content  any
	}{
		{spec.MRoomCreate, "", create},
		{spec.MRoomMember, creator, map[string]any{"membership": spec.Join}},
		{spec.MRoomPowerLevels, "", pl},
		{spec.MRoomJoinRules, "", map[string]any{"join_rule": spec.Public}},
		{spec.MRoomHistoryVisibility, "", map[string]any{"history_visibility": "shared"}},
	} {
		ev := r.StateEvent(t, creator, e.typ, e.key, e.content)
		r.Add(ev)
	}
	p.mu.Lock()
	p.rooms[r.ID] = r
	p.mu.Unlock()
	return r
}

// serveMakeJoin answers a join template on the peer's current state.
func (p *Peer) serveMakeJoin(w http.ResponseWriter, r *http.Request, _ *fclient.FederationRequest) {
	room := p.Room(r.PathValue("roomID"))
	if room == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown room"})
		return
	}
	user := r.PathValue("userID")
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: user, RoomID: room.ID, Type: spec.MRoomMember, StateKey: &user,
		Content: spec.RawJSON(`{"membership":"join"}`), PrevEvents: room.Forward(),
	}
	proto.AuthEvents = room.AuthFor(p.t, proto)
	room.mu.Lock()
	proto.Depth = room.depth + 1
	room.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"event": proto, "room_version": room.Version.Version()})
}

// serveSendJoin takes the join into the room (the peer trusts it: the
// server under test is the one being checked) and answers with the state
// before it; every state event is its own auth chain in a peer's room.
func (p *Peer) serveSendJoin(w http.ResponseWriter, r *http.Request, fr *fclient.FederationRequest) {
	room := p.Room(r.PathValue("roomID"))
	if room == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown room"})
		return
	}
	raw := json.RawMessage(fr.Content())
	ev, err := room.Version.NewEventFromUntrustedJSON(raw)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"errcode": "M_BAD_JSON", "error": err.Error()})
		return
	}
	room.mu.Lock()
	state := make([]json.RawMessage, 0, len(room.state))
	for _, e := range room.state {
		state = append(state, e.JSON())
	}
	room.mu.Unlock()
	room.Add(ev)
	writeJSON(w, http.StatusOK, map[string]any{
		"origin": p.ServerName, "state": state, "auth_chain": state, "event": raw,
		"members_omitted": false, "servers_in_room": []spec.ServerName{p.ServerName},
	})
}
