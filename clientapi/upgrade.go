package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// Room upgrades (POST /rooms/{roomId}/upgrade): the spec's server
// behaviour — a replacement room of the new version whose create event
// names its predecessor, the transferable state copied across, local
// aliases moved, a tombstone in the old room and its power levels
// restricted so that ordinary members can no longer talk there.

// transferableState are the state events copied into the replacement
// room, in the order they are sent there.
var transferableState = []string{"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access", "m.room.name",
	"m.room.topic", "m.room.avatar", "m.room.encryption", "m.room.server_acl", "m.room.canonical_alias"}

func (rm *rooms) upgradeRoom(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := roomIDParam(r)
	if !ok {
		return resp
	}
	var body struct {
		NewVersion         string   `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if body.NewVersion == "" {
		return httpapi.MissingParam("new_version is required")
	}
	ver := gomatrixserverlib.RoomVersion(body.NewVersion)
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil || !impl.Stable() {
		return httpapi.Errf(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "room version %q is not supported", body.NewVersion)
	}
	for _, u := range body.AdditionalCreators {
		if _, _, err := gomatrixserverlib.SplitID('@', u); err != nil {
			return httpapi.InvalidParam("invalid user ID in additional_creators: %q", u)
		}
	}
	if len(body.AdditionalCreators) > 0 && !impl.PrivilegedCreators() {
		return httpapi.InvalidParam("additional_creators needs a room version with privileged creators")
	}
	m, _ := rm.upgradeLocks.LoadOrStore(roomID, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()

	st, err := rm.rs.CurrentState(r.Context(), roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return httpapi.Forbidden("unknown room or not a member")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if st.Membership(dev.UserID) != "join" {
		return httpapi.Forbidden("you are not in this room")
	}
	pl := roomserver.PowerLevels(st)
	if roomserver.PowerLevel(st, dev.UserID) < pl.EventLevel("m.room.tombstone", true) {
		return httpapi.Forbidden("you do not have permission to upgrade this room")
	}
	if ts := st.Get("m.room.tombstone", ""); ts != nil {
		var c struct {
			Replacement string `json:"replacement_room"`
		}
		if json.Unmarshal(ts.Content(), &c) == nil && c.Replacement != "" {
			return httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "room has already been upgraded to %s", c.Replacement)
		}
	}
	newRoom, err := rm.createReplacement(r.Context(), dev, roomID, st, ver, impl, body.AdditionalCreators)
	if err != nil {
		return roomError(r, err)
	}
	if err := rm.retireRoom(r.Context(), dev, roomID, newRoom, st); err != nil {
		return roomError(r, err)
	}
	for k, ev := range st {
		if m, _ := ev.Membership(); k.Type == "m.room.member" && m == "join" && strings.HasSuffix(k.StateKey, ":"+rm.opts.ServerName) {
			if err := rm.accountData.copyRoomPushRules(r.Context(), k.StateKey, roomID, newRoom); err != nil {
				logrus.WithError(err).WithField("user_id", k.StateKey).Warn("upgrade: could not copy push rules to the new room")
			}
		}
	}
	return httpapi.JSON(200, map[string]string{"replacement_room": newRoom})
}

// contentMap decodes a state event's content as a JSON object.
func contentMap(ev gomatrixserverlib.PDU) map[string]any {
	m := map[string]any{}
	if ev != nil {
		_ = json.Unmarshal(ev.Content(), &m)
	}
	return m
}

// createReplacement creates the new room with the old room's
// transferable state, power levels and bans.
func (rm *rooms) createReplacement(ctx context.Context, dev *httpapi.Device, oldRoom string, st roomserver.StateMap, ver gomatrixserverlib.RoomVersion,
	impl gomatrixserverlib.IRoomVersion, additional []string) (string, error) {
	sp := func(s string) *string { return &s }
	createContent := map[string]any{"predecessor": map[string]any{"room_id": oldRoom}}
	oldCreate := contentMap(st.Get("m.room.create", ""))
	for _, k := range []string{"type", "m.federate"} {
		if v, ok := oldCreate[k]; ok {
			createContent[k] = v
		}
	}
	if len(additional) > 0 {
		createContent["additional_creators"] = additional
	}
	member := map[string]any{"membership": "join"}
	if p, err := rm.profile(ctx, dev.UserID); err == nil {
		for k, v := range p {
			member[k] = v
		}
	}
	events := []roomserver.InitialEvent{{Type: "m.room.member", StateKey: sp(dev.UserID), Content: member}}

	// Power levels: the old room's, with the upgrader able to send the
	// state that follows; restored exactly at the end when that took a
	// temporary raise. With privileged creators (v12) the creators hold
	// unlimited power and must not appear in the users map at all.
	plContent := contentMap(st.Get("m.room.power_levels", ""))
	if len(plContent) == 0 {
		// No power levels in the old room: its creator held 100 there.
		plContent = map[string]any{"users": map[string]any{}}
		if !impl.PrivilegedCreators() {
			plContent["users"] = map[string]any{dev.UserID: 100}
		}
	}
	users, _ := plContent["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	plContent["users"] = users
	oldPL := roomserver.PowerLevels(st)
	var final map[string]any
	if impl.PrivilegedCreators() {
		delete(users, dev.UserID)
		for _, u := range additional {
			delete(users, u)
		}
	} else {
		need := oldPL.EventLevel("m.room.power_levels", true)
		for _, t := range transferableState {
			need = max(need, oldPL.EventLevel(t, true))
		}
		need = max(need, oldPL.Ban)
		cur := roomserver.PowerLevel(st, dev.UserID)
		if cur > 1<<40 { // a v12 creator upgrading to an older version keeps full power
			cur = 100
			users[dev.UserID] = cur
		}
		if cur < need {
			final = cloneMap(plContent)
			raised := cloneMap(plContent)
			ru := cloneMap(users)
			ru[dev.UserID] = need
			raised["users"] = ru
			plContent = raised
		}
	}
	events = append(events, roomserver.InitialEvent{Type: "m.room.power_levels", StateKey: sp(""), Content: plContent})
	for _, t := range transferableState {
		if ev := st.Get(t, ""); ev != nil {
			c := contentMap(ev)
			if len(c) == 0 {
				continue
			}
			events = append(events, roomserver.InitialEvent{Type: t, StateKey: sp(""), Content: c})
		}
	}
	for k, ev := range st {
		if k.Type == "m.room.member" {
			if m, _ := ev.Membership(); m == "ban" {
				c := map[string]any{"membership": "ban"}
				if reason, ok := contentMap(ev)["reason"]; ok {
					c["reason"] = reason
				}
				events = append(events, roomserver.InitialEvent{Type: "m.room.member", StateKey: sp(k.StateKey), Content: c})
			}
		}
	}
	if final != nil {
		events = append(events, roomserver.InitialEvent{Type: "m.room.power_levels", StateKey: sp(""), Content: final})
	}
	room, err := storage.GetRoom(ctx, rm.db, oldRoom)
	if err != nil {
		return "", err
	}
	return rm.rs.CreateRoom(ctx, roomserver.CreateRoomRequest{
		Creator: dev.UserID, RoomVersion: ver, CreateContent: createContent, Events: events, Public: room.IsPublic,
	})
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// retireRoom tombstones the old room, moves its aliases and directory
// listing to the new one and restricts who may still speak in it.
func (rm *rooms) retireRoom(ctx context.Context, dev *httpapi.Device, oldRoom, newRoom string, st roomserver.StateMap) error {
	empty := ""
	tomb, _ := json.Marshal(map[string]string{"body": "This room has been replaced", "replacement_room": newRoom})
	if _, err := rm.rs.SendEvent(ctx, roomserver.SendRequest{RoomID: oldRoom, Sender: dev.UserID, Type: "m.room.tombstone", StateKey: &empty, Content: tomb}); err != nil {
		return err
	}
	if err := storage.MoveAliases(ctx, rm.db, oldRoom, newRoom); err != nil {
		return err
	}
	if room, err := storage.GetRoom(ctx, rm.db, oldRoom); err == nil && room.IsPublic {
		if err := storage.SetRoomPublic(ctx, rm.db, oldRoom, false); err != nil {
			return err
		}
	}
	// The rest is best effort: the upgrade has happened once the
	// tombstone is in, and the upgrader may lack power for some of it.
	log := logrus.WithField("room_id", oldRoom)
	if ca := st.Get("m.room.canonical_alias", ""); ca != nil && len(contentMap(ca)) > 0 {
		if _, err := rm.rs.SendEvent(ctx, roomserver.SendRequest{RoomID: oldRoom, Sender: dev.UserID, Type: "m.room.canonical_alias", StateKey: &empty, Content: json.RawMessage("{}")}); err != nil {
			log.WithError(err).Info("upgrade: could not clear the old room's canonical alias")
		}
	}
	pl := contentMap(st.Get("m.room.power_levels", ""))
	if len(pl) > 0 {
		ud := roomserver.PowerLevels(st).UsersDefault
		restricted := max(int64(50), ud+1)
		pl["events_default"] = restricted
		pl["invite"] = restricted
		b, _ := json.Marshal(pl)
		if _, err := rm.rs.SendEvent(ctx, roomserver.SendRequest{RoomID: oldRoom, Sender: dev.UserID, Type: "m.room.power_levels", StateKey: &empty, Content: b}); err != nil {
			log.WithError(err).Info("upgrade: could not restrict the old room's power levels")
		}
	}
	return nil
}
