package federationapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// End-to-end encryption across servers.
//
// Inbound: POST /user/keys/query, POST /user/keys/claim and
// GET /user/devices/{userId} answer for this server's users only; the
// m.direct_to_device, m.device_list_update and m.signing_key_update EDUs
// are applied only for users of the sending server.
//
// Outbound: RemoteE2EE implements the client API's RemoteKeys and
// RemoteToDevice. Remote users' keys are cached in memory per user (all
// their devices and cross-signing keys) while the user shares a room with
// a local user — the case in which their server keeps us informed — and
// dropped when an m.device_list_update or m.signing_key_update for the
// user arrives (or after keyCacheTTL, in case one was lost), or when a
// query finds no room shared any more. Changes of
// local users' devices become EDUs to every server sharing a room with
// them (DeviceListChanged, fed by storage.DB.OnDeviceListChange).

// Bounds of the E2EE endpoints.
const (
	maxKeyQueryUsers    = 5000
	maxKeyClaimDevices  = 10000
	maxToDeviceMessages = 10000
	maxRemoteKeysBody   = 16 << 20
	keyCacheTTL         = time.Hour
	keyCacheMaxUsers    = 20000
	// toDeviceChunkBytes splits large to-device batches into several EDUs.
	toDeviceChunkBytes = 256 << 10
	mSigningKeyUpdate  = "m.signing_key_update"
)

// --- inbound endpoints ---

func (f *userKeys) userKeysQuery(r *http.Request, origin spec.ServerName, body []byte) httpapi.Response {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.BadJSON("request body has the wrong shape: %v", err)
	}
	if req.DeviceKeys == nil {
		return httpapi.Errf(http.StatusBadRequest, "M_MISSING_PARAM", "device_keys is required")
	}
	if len(req.DeviceKeys) > maxKeyQueryUsers {
		return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "at most %d users per query", maxKeyQueryUsers)
	}
	local := map[string][]string{}
	for u, devs := range req.DeviceKeys {
		if f.isLocalUser(u) {
			local[u] = devs
		}
	}
	res, err := storage.QueryLocalKeys(r.Context(), f.db, "", local)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	out := map[string]any{"device_keys": res.DeviceKeys, "master_keys": map[string]json.RawMessage{}, "self_signing_keys": map[string]json.RawMessage{}}
	if res.MasterKeys != nil {
		out["master_keys"] = res.MasterKeys
	}
	if res.SelfSigningKeys != nil {
		out["self_signing_keys"] = res.SelfSigningKeys
	}
	return httpapi.JSON(http.StatusOK, out)
}

func (f *userKeys) userKeysClaim(r *http.Request, origin spec.ServerName, body []byte) httpapi.Response {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.BadJSON("request body has the wrong shape: %v", err)
	}
	if req.OneTimeKeys == nil {
		return httpapi.Errf(http.StatusBadRequest, "M_MISSING_PARAM", "one_time_keys is required")
	}
	n := 0
	local := map[string]map[string]string{}
	for u, devs := range req.OneTimeKeys {
		n += len(devs)
		if f.isLocalUser(u) && len(devs) > 0 {
			local[u] = devs
		}
	}
	if n > maxKeyClaimDevices {
		return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "at most %d devices per claim", maxKeyClaimDevices)
	}
	keys, err := storage.ClaimLocalKeys(r.Context(), f.db, local)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	// The claimed devices' key counts changed: wake their /syncs.
	if l := f.local(); l != nil && l.NotifyUsers != nil {
		var users []string
		for u, devs := range keys {
			if len(devs) > 0 {
				users = append(users, u)
			}
		}
		if len(users) > 0 {
			l.NotifyUsers(users...)
		}
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"one_time_keys": keys})
}

// userDevice is one entry of GET /user/devices.
type userDevice struct {
	DeviceID    string          `json:"device_id"`
	Keys        json.RawMessage `json:"keys"`
	DisplayName string          `json:"device_display_name,omitempty"`
}

func (f *userKeys) userDevices(r *http.Request, origin spec.ServerName, _ []byte) httpapi.Response {
	userID := mux.Vars(r)["userId"]
	if !f.isLocalUser(userID) {
		return httpapi.NotFound("%s is not a user of this server", userID)
	}
	ctx := r.Context()
	// The stream ID first: an update racing this request then carries a
	// newer ID than the one we report, so the caller applies it.
	streamID, err := storage.DeviceListStreamID(ctx, f.db, userID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	res, err := storage.QueryLocalKeys(ctx, f.db, "", map[string][]string{userID: nil})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	devs, err := storage.ListDevices(ctx, f.db, userID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	names := map[string]string{}
	for _, d := range devs {
		names[d.DeviceID] = d.DisplayName
	}
	out := map[string]any{"user_id": userID, "stream_id": streamID}
	list := []userDevice{}
	for id, k := range res.DeviceKeys[userID] {
		list = append(list, userDevice{DeviceID: id, Keys: k, DisplayName: names[id]})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].DeviceID < list[j].DeviceID })
	out["devices"] = list
	if k := res.MasterKeys[userID]; k != nil {
		out["master_key"] = k
	}
	if k := res.SelfSigningKeys[userID]; k != nil {
		out["self_signing_key"] = k
	}
	return httpapi.JSON(http.StatusOK, out)
}

// --- inbound EDUs ---

func (f *inboundEDUs) onDirectToDevice(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	if userServer(c.Sender) != origin {
		return errForeignUser
	}
	if c.Type == "" || len(c.Type) > 255 || c.MessageID == "" || len(c.MessageID) > 255 {
		return errors.New("to-device message without a valid type or message_id")
	}
	users := make([]string, 0, len(c.Messages))
	n := 0
	for u, devs := range c.Messages {
		if f.isLocalUser(u) {
			users = append(users, u)
			n += len(devs)
		}
	}
	if n > maxToDeviceMessages {
		return fmt.Errorf("%d to-device messages in one EDU; at most %d accepted", n, maxToDeviceMessages)
	}
	sort.Strings(users)
	var msgs []storage.ToDeviceMessage
	var recipients []string
	for _, u := range users {
		existing, err := storage.ListDeviceIDs(ctx, f.db, u)
		if err != nil {
			return err
		}
		targets := map[string]json.RawMessage{}
		if all, ok := c.Messages[u]["*"]; ok {
			for _, d := range existing {
				targets[d] = all
			}
		}
		for _, d := range existing {
			if m, ok := c.Messages[u][d]; ok {
				targets[d] = m // a message for one device wins over "*"
			}
		}
		ids := make([]string, 0, len(targets))
		for d := range targets {
			ids = append(ids, d)
		}
		sort.Strings(ids)
		for _, d := range ids {
			compact, ok := compactObject(targets[d])
			if !ok {
				continue
			}
			msgs = append(msgs, storage.ToDeviceMessage{UserID: u, DeviceID: d, Sender: c.Sender, Type: c.Type, Content: compact})
		}
		if len(ids) > 0 {
			recipients = append(recipients, u)
		}
	}
	l := f.local()
	return f.db.WithTx(ctx, func(tx *storage.Tx) error {
		fresh, err := storage.MarkInboundToDevice(ctx, tx, string(origin), c.Sender, c.MessageID, time.Now().UnixMilli())
		if err != nil || !fresh || len(msgs) == 0 {
			return err
		}
		pos, err := storage.InsertToDevice(ctx, tx, msgs)
		if err != nil {
			return err
		}
		if l != nil && l.NotifyUsers != nil {
			tx.Publish(pos, func() { l.NotifyUsers(recipients...) })
		}
		return nil
	})
}

// compactObject returns raw as compact JSON if it is an object.
func compactObject(raw json.RawMessage) (json.RawMessage, bool) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, false
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, false
	}
	return b.Bytes(), true
}

// remoteDeviceChange records that a remote user's devices (or, with no
// device, cross-signing keys) changed: their cached keys are dropped and
// local users sharing a room with them see them in device_lists.changed.
// Updates about users nobody here shares a room with are ignored.
func (f *inboundEDUs) remoteDeviceChange(ctx context.Context, origin spec.ServerName, userID, deviceID string, deleted bool) error {
	if userServer(userID) != origin {
		return errForeignUser
	}
	f.ext().keys.invalidate(userID)
	watchers, err := localUsersSharingRoomWith(ctx, f.db, f.isLocalUser, userID)
	if err != nil || len(watchers) == 0 {
		return err
	}
	var devs []string
	if deviceID != "" {
		devs = []string{deviceID}
	}
	return f.db.WithTx(ctx, func(tx *storage.Tx) error {
		_, err := storage.RecordDeviceListChange(ctx, tx, userID, devs, deleted, "")
		return err
	})
}

func (f *inboundEDUs) onDeviceListUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c gomatrixserverlib.DeviceListUpdateEvent
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	if c.DeviceID == "" || len(c.DeviceID) > 255 {
		return errors.New("device list update without a device ID")
	}
	return f.remoteDeviceChange(ctx, origin, c.UserID, c.DeviceID, c.Deleted)
}

func (f *inboundEDUs) onSigningKeyUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	return f.remoteDeviceChange(ctx, origin, c.UserID, "", false)
}

// --- outbound device-list updates ---

// DeviceListChanged queues EDUs for committed device-list changes of
// local users (storage.DB.OnDeviceListChange calls it after commit). Changes
// visible to one user only (their signatures of others' keys) stay here.
func (f *Federation) DeviceListChanged(changes []storage.DeviceListChange) {
	x := f.ext()
	x.mu.Lock()
	for _, c := range changes {
		if c.VisibleTo == "" && f.isLocalUser(c.UserID) {
			x.devQ = append(x.devQ, c)
		}
	}
	x.mu.Unlock()
	select {
	case x.devWake <- struct{}{}:
	default:
	}
}

// deviceListWorker sends queued device-list changes in order, so each
// user's stream IDs reach other servers in the order they were issued.
func (f *Federation) deviceListWorker(ctx context.Context) {
	x := f.ext()
	for {
		x.mu.Lock()
		batch, joins := x.devQ, x.joinQ
		x.devQ, x.joinQ = nil, nil
		x.mu.Unlock()
		if len(batch) > 0 || len(joins) > 0 {
			if err := f.sendDeviceListChanges(ctx, batch); err != nil && ctx.Err() == nil {
				logrus.WithError(err).Warn("federation: sending device list updates")
			}
			for _, j := range joins {
				if err := f.sendDevicesTo(ctx, j); err != nil && ctx.Err() == nil {
					logrus.WithError(err).Warn("federation: sending a joiner's devices")
				}
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-x.devWake:
		}
	}
}

// sendDeviceListChanges turns changes (grouped per user, in order) into
// m.device_list_update EDUs, one per device, and m.signing_key_update EDUs
// for cross-signing changes.
func (f *Federation) sendDeviceListChanges(ctx context.Context, changes []storage.DeviceListChange) error {
	var errs []error
	for start := 0; start < len(changes); {
		end := start + 1
		for end < len(changes) && changes[end].UserID == changes[start].UserID && changes[end].Pos == changes[start].Pos {
			end++
		}
		if err := f.sendUserDeviceChanges(ctx, changes[start].UserID, changes[start:end]); err != nil {
			errs = append(errs, err)
		}
		start = end
	}
	return errors.Join(errs...)
}

func (f *Federation) sendUserDeviceChanges(ctx context.Context, userID string, changes []storage.DeviceListChange) error {
	dests, err := f.serversSharingRoomWith(ctx, userID)
	if err != nil || len(dests) == 0 {
		return err
	}
	return f.sendUserDeviceChangesTo(ctx, userID, changes, dests)
}

// devicesTo is a local user who joined a room, and the servers in it that
// shared no other room with them.
type devicesTo struct {
	userID string
	dests  []spec.ServerName
}

// announceDevicesOnJoin arranges, once the join commits, that the servers
// in the room which shared no other room with the joiner get an
// m.device_list_update for each of the joiner's devices: the spec sends
// them when a user joins a room with servers not yet receiving updates
// for that user, so those servers can encrypt for the joiner at once.
func (f *Federation) announceDevicesOnJoin(ctx context.Context, tx *storage.Tx, se *storage.Event, ev gomatrixserverlib.PDU, st roomserver.StateMap) error {
	userID := string(ev.SenderID())
	if m, _ := ev.Membership(); m != spec.Join || ev.StateKey() == nil || *ev.StateKey() != userID {
		return nil
	}
	roomID := ev.RoomID().String()
	if se != nil {
		// A join after a join (a profile change) is nobody's news.
		if prev, err := storage.LatestMembershipBefore(ctx, tx, roomID, userID, se.StreamPos-1); err == nil && prev.Membership == spec.Join {
			return nil
		}
	}
	others, err := storage.UsersSharingOtherRoomWith(ctx, tx, userID, roomID)
	if err != nil {
		return err
	}
	known := map[spec.ServerName]bool{f.serverName: true}
	for _, s := range f.remoteServers(others) {
		known[s] = true
	}
	var dests []spec.ServerName
	for _, s := range ServersInRoom(st) {
		if !known[s] {
			dests = append(dests, s)
		}
	}
	if len(dests) == 0 {
		return nil
	}
	tx.AfterCommit(func() {
		x := f.ext()
		x.mu.Lock()
		x.joinQ = append(x.joinQ, devicesTo{userID: userID, dests: dests})
		x.mu.Unlock()
		select {
		case x.devWake <- struct{}{}:
		default:
		}
	})
	return nil
}

// sendDevicesTo sends every device of j's user to j's servers.
func (f *Federation) sendDevicesTo(ctx context.Context, j devicesTo) error {
	devs, err := storage.ListDevices(ctx, f.db, j.userID)
	if err != nil || len(devs) == 0 {
		return err
	}
	changes := make([]storage.DeviceListChange, 0, len(devs))
	for _, d := range devs {
		changes = append(changes, storage.DeviceListChange{UserID: j.userID, DeviceID: d.DeviceID})
	}
	return f.sendUserDeviceChangesTo(ctx, j.userID, changes, j.dests)
}

// sendUserDeviceChangesTo sends one user's changes to dests.
func (f *Federation) sendUserDeviceChangesTo(ctx context.Context, userID string, changes []storage.DeviceListChange, dests []spec.ServerName) error {
	var devices []storage.DeviceListChange
	userLevel := false
	for _, c := range changes {
		if c.DeviceID == "" {
			userLevel = true
		} else {
			devices = append(devices, c)
		}
	}
	if len(devices) > 0 {
		ids := make([]string, 0, len(devices))
		for _, c := range devices {
			ids = append(ids, c.DeviceID)
		}
		keys, err := storage.QueryLocalKeys(ctx, f.db, "", map[string][]string{userID: ids})
		if err != nil {
			return err
		}
		first, prev, err := storage.NextDeviceListStreamIDs(ctx, f.db, userID, len(devices))
		if err != nil {
			return err
		}
		for i, c := range devices {
			upd := gomatrixserverlib.DeviceListUpdateEvent{UserID: userID, DeviceID: c.DeviceID, StreamID: first + int64(i), Deleted: c.Deleted}
			if prev > 0 {
				upd.PrevID = []int64{prev}
			}
			prev = upd.StreamID
			if !c.Deleted {
				if d, err := storage.GetDevice(ctx, f.db, userID, c.DeviceID); err == nil {
					upd.DeviceDisplayName = d.DisplayName
				}
				if k, ok := keys.DeviceKeys[userID][c.DeviceID]; ok {
					upd.Keys = k
				}
			}
			content, err := json.Marshal(upd)
			if err != nil {
				return err
			}
			if err := f.SendEDU(ctx, dests, gomatrixserverlib.EDU{Type: spec.MDeviceListUpdate, Content: content}); err != nil {
				return err
			}
		}
	}
	if userLevel {
		keys, err := storage.QueryLocalKeys(ctx, f.db, "", map[string][]string{userID: nil})
		if err != nil {
			return err
		}
		c := map[string]any{"user_id": userID}
		if k := keys.MasterKeys[userID]; k != nil {
			c["master_key"] = k
		}
		if k := keys.SelfSigningKeys[userID]; k != nil {
			c["self_signing_key"] = k
		}
		content, err := json.Marshal(c)
		if err != nil {
			return err
		}
		return f.SendEDU(ctx, dests, gomatrixserverlib.EDU{Type: mSigningKeyUpdate, Content: content})
	}
	return nil
}

// --- outbound queries: RemoteE2EE ---

// RemoteE2EE reaches other servers' users for the client API's key
// queries, key claims and to-device messages.
type RemoteE2EE struct{ f *Federation }

// E2EE returns the federation side of the client API's E2EE endpoints.
func (f *Federation) E2EE() RemoteE2EE { return RemoteE2EE{f} }

// QueryKeys implements clientapi.RemoteKeys: cached users are answered
// here; the others are asked for (all their devices, so the answer can
// be cached) in one /user/keys/query.
func (e RemoteE2EE) QueryKeys(ctx context.Context, server string, want map[string][]string) (*storage.KeysQueryResult, error) {
	f, dest := e.f, spec.ServerName(server)
	res := &storage.KeysQueryResult{DeviceKeys: map[string]map[string]json.RawMessage{}}
	miss := map[string][]string{}
	tokens := map[string]cacheToken{}
	for u, devs := range want {
		if userServer(u) != dest {
			continue
		}
		if c := f.ext().keys.get(u); c != nil {
			// Only while a room is shared does u's server tell us of
			// changes: past that the copy may be stale and is dropped.
			if shared, err := storage.SharesRoomWithServer(ctx, f.db, u, string(f.serverName)); err == nil && shared {
				c.fill(res, u, devs)
				continue
			}
			f.ext().keys.invalidate(u)
		}
		miss[u] = []string{}
		tokens[u] = f.ext().keys.token(u)
	}
	if len(miss) == 0 {
		return res, nil
	}
	var raw struct {
		DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
		MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
		SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	}
	if err := f.fedJSON(ctx, dest, "POST", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": miss}, &raw, maxRemoteKeysBody); err != nil {
		return nil, err
	}
	for u := range miss {
		c := &cachedKeys{devices: map[string]json.RawMessage{}, fetched: time.Now()}
		for d, k := range raw.DeviceKeys[u] {
			if keyBelongsTo(k, u, d) {
				c.devices[d] = k
			}
		}
		if k := raw.MasterKeys[u]; keyBelongsTo(k, u, "") {
			c.master = k
		}
		if k := raw.SelfSigningKeys[u]; keyBelongsTo(k, u, "") {
			c.selfSigning = k
		}
		if users, err := localUsersSharingRoomWith(ctx, f.db, f.isLocalUser, u); err == nil && len(users) > 0 {
			f.ext().keys.put(u, c, tokens[u])
		}
		c.fill(res, u, want[u])
	}
	return res, nil
}

// keyBelongsTo checks that a key object names the user (and device, if
// given) it is listed under.
func keyBelongsTo(raw json.RawMessage, userID, deviceID string) bool {
	if len(raw) == 0 {
		return false
	}
	var k struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	if json.Unmarshal(raw, &k) != nil || k.UserID != userID {
		return false
	}
	return deviceID == "" || k.DeviceID == deviceID
}

// ClaimKeys implements clientapi.RemoteKeys with /user/keys/claim.
func (e RemoteE2EE) ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	f, dest := e.f, spec.ServerName(server)
	ask := map[string]map[string]string{}
	for u, devs := range want {
		if userServer(u) == dest && len(devs) > 0 {
			ask[u] = devs
		}
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	if len(ask) == 0 {
		return out, nil
	}
	var raw struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := f.fedJSON(ctx, dest, "POST", "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": ask}, &raw, maxRemoteKeysBody); err != nil {
		return nil, err
	}
	for u, devs := range raw.OneTimeKeys {
		for d, keys := range devs {
			if _, asked := ask[u][d]; !asked || len(keys) == 0 {
				continue
			}
			if out[u] == nil {
				out[u] = map[string]map[string]json.RawMessage{}
			}
			out[u][d] = keys
		}
	}
	return out, nil
}

// SendToDevice implements clientapi.RemoteToDevice: the messages go out
// as m.direct_to_device EDUs (durably queued). The message ID is derived
// from the sender's (device/transaction) ID, so a retried request yields
// the same ID and the receiver delivers it once.
func (e RemoteE2EE) SendToDevice(ctx context.Context, server, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error {
	f, dest := e.f, spec.ServerName(server)
	users := make([]string, 0, len(messages))
	for u := range messages {
		if userServer(u) == dest {
			users = append(users, u)
		}
	}
	sort.Strings(users)
	var chunks []map[string]map[string]json.RawMessage
	cur, size := map[string]map[string]json.RawMessage{}, 0
	for _, u := range users {
		n := len(u)
		for d, m := range messages[u] {
			n += len(d) + len(m) + 8
		}
		if size > 0 && size+n > toDeviceChunkBytes {
			chunks = append(chunks, cur)
			cur, size = map[string]map[string]json.RawMessage{}, 0
		}
		cur[u], size = messages[u], size+n
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	for i, msgs := range chunks {
		content, err := json.Marshal(map[string]any{
			"sender": sender, "type": eventType, "message_id": toDeviceMessageID(sender, messageID, i), "messages": msgs,
		})
		if err != nil {
			return err
		}
		if err := f.SendEDU(ctx, []spec.ServerName{dest}, gomatrixserverlib.EDU{Type: spec.MDirectToDevice, Content: content}); err != nil {
			return err
		}
	}
	return nil
}

// toDeviceMessageID is a 32-character ID (the spec's maximum) unique per
// sender, request and chunk.
func toDeviceMessageID(sender, id string, chunk int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d", sender, id, chunk)))
	return hex.EncodeToString(sum[:16])
}

// --- the remote key cache ---

type cachedKeys struct {
	devices     map[string]json.RawMessage
	master      json.RawMessage
	selfSigning json.RawMessage
	fetched     time.Time
}

// fill adds the cached keys of userID (only the wanted devices, or all)
// to a query answer.
func (c *cachedKeys) fill(res *storage.KeysQueryResult, userID string, want []string) {
	devs := map[string]json.RawMessage{}
	for d, k := range c.devices {
		if len(want) == 0 || containsStr(want, d) {
			devs[d] = k
		}
	}
	res.DeviceKeys[userID] = devs
	if c.master != nil {
		if res.MasterKeys == nil {
			res.MasterKeys = map[string]json.RawMessage{}
		}
		res.MasterKeys[userID] = c.master
	}
	if c.selfSigning != nil {
		if res.SelfSigningKeys == nil {
			res.SelfSigningKeys = map[string]json.RawMessage{}
		}
		res.SelfSigningKeys[userID] = c.selfSigning
	}
}

func containsStr(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// keyCache holds remote users' keys. A query records a token before it
// asks; an invalidation in between changes the user's generation, so the
// stale answer is not cached.
type keyCache struct {
	mu    sync.Mutex
	epoch uint64
	users map[string]*cachedKeys
	gens  map[string]uint64
}

type cacheToken struct{ epoch, gen uint64 }

func newKeyCache() *keyCache {
	return &keyCache{users: map[string]*cachedKeys{}, gens: map[string]uint64{}}
}

func (k *keyCache) get(userID string) *cachedKeys {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.users[userID]
	if c != nil && time.Since(c.fetched) > keyCacheTTL {
		delete(k.users, userID)
		return nil
	}
	return c
}

func (k *keyCache) token(userID string) cacheToken {
	k.mu.Lock()
	defer k.mu.Unlock()
	return cacheToken{k.epoch, k.gens[userID]}
}

func (k *keyCache) put(userID string, c *cachedKeys, t cacheToken) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if t.epoch != k.epoch || t.gen != k.gens[userID] {
		return // invalidated while the query was in flight
	}
	if len(k.users) >= keyCacheMaxUsers || len(k.gens) >= keyCacheMaxUsers {
		// Start over rather than track recency: a new epoch makes every
		// query in flight uncacheable, as the generations are gone.
		k.epoch++
		k.users = map[string]*cachedKeys{}
		k.gens = map[string]uint64{}
		return
	}
	k.users[userID] = c
}

func (k *keyCache) invalidate(userID string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.users, userID)
	k.gens[userID]++
}

// --- raw signed requests ---

// RemoteError is a non-2xx answer from another server.
type RemoteError struct {
	Code    int
	ErrCode string
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("remote server answered %d %s %s", e.Code, e.ErrCode, e.Message)
}

// fedDo sends a signed federation request through the policy-checked
// transport and returns the response (the caller closes its body).
func (f *Federation) fedDo(ctx context.Context, dest spec.ServerName, method, path string, content any) (*http.Response, error) {
	fr := fclient.NewFederationRequest(method, f.serverName, dest, path)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			return nil, err
		}
	}
	if err := fr.Sign(f.serverName, f.keyID, f.key); err != nil {
		return nil, err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "Enclave")
	return (&http.Client{Transport: f.transport}).Do(req.WithContext(ctx))
}

// fedJSON sends a signed request and decodes a JSON answer of at most
// limit bytes into out; other answers are *RemoteError.
func (f *Federation) fedJSON(ctx context.Context, dest spec.ServerName, method, path string, content, out any, limit int64) error {
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	resp, err := f.fedDo(ctx, dest, method, path, content)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return err
	}
	if int64(len(body)) > limit {
		return fmt.Errorf("answer from %s exceeds %d bytes", dest, limit)
	}
	if resp.StatusCode/100 != 2 {
		re := &RemoteError{Code: resp.StatusCode}
		var m httpapi.MatrixError
		if json.Unmarshal(body, &m) == nil {
			re.ErrCode, re.Message = m.ErrCode, m.Err
		}
		return re
	}
	return json.Unmarshal(body, out)
}
