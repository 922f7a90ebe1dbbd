package appservice

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"enclave/storage"
)

// What a transaction carries besides room events (MSC2409, stable in
// v1.13 for ephemeral events; MSC3202 for the end-to-end encryption
// data). Each item is a row of the appservice's one queue, so it goes out
// in order with the room events, in the transaction in flight until the
// bridge answers 200, and never again after:
//   - typing is queued when a local user's typing changes (SendTyping);
//   - receipts, presence and device-list changes are read from the stream
//     by collect, from the position it recorded last, in the transaction
//     that queues them and moves the position;
//   - to-device messages for the appservice's devices (those it created,
//     MSC4190) are moved from the device's inbox into the queue in one
//     transaction: such a device hears through transactions, not /sync;
//   - one-time and fallback key counts of those devices are queued when
//     they differ from the counts queued last.

// inboxBatch bounds the to-device messages moved per device and round.
const inboxBatch = 100

// PushesEphemeral: receipts, typing and presence go to the bridge.
func (r *Registration) PushesEphemeral() bool { return r.ReceiveEphemeral || r.PushEphemeral }

// PushesCrypto: to-device messages, device lists and key counts go to the
// bridge (MSC3202, or MSC2409's to-device flag).
func (r *Registration) PushesCrypto() bool { return r.MSC3202 || r.PushToDevice }

// SendTyping queues the room's typing set for the appservices interested
// in the room (the client API calls it after each local change, with the
// federation sender). A typing state that lapses by timeout is not pushed.
func (s *Service) SendTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) {
	var users []string
	queued := false
	for _, r := range s.Registrations() {
		if r.PushURL() == "" || !r.PushesEphemeral() {
			continue
		}
		if ok, err := s.roomInterests(ctx, r, roomID, nil); err != nil || !ok {
			continue
		}
		if users == nil {
			users = []string{}
			if s.opts.TypingUsers != nil {
				users = append(users, s.opts.TypingUsers(roomID)...)
			}
		}
		js, _ := json.Marshal(map[string]any{"type": "m.typing", "room_id": roomID, "content": map[string]any{"user_ids": users}})
		if err := storage.EnqueueAppService(ctx, s.opts.DB, r.ID, storage.AppServiceKindEphemeral, js); err == nil {
			queued = true
		}
	}
	if queued {
		s.Wake()
	}
}

// ReceiptChanged and PresenceChanged wake the senders, whose collection
// reads the new rows from the stream.
func (s *Service) ReceiptChanged()  { s.Wake() }
func (s *Service) PresenceChanged() { s.Wake() }

// roomInterests reports whether one of r's users is joined to the room or
// the room is in its namespace; cache (may be nil) remembers answers.
func (s *Service) roomInterests(ctx context.Context, r *Registration, roomID string, cache map[string]bool) (bool, error) {
	if v, ok := cache[roomID]; ok {
		return v, nil
	}
	ok := r.WantsRoom(roomID)
	if !ok {
		members, err := storage.RoomMembers(ctx, s.opts.DB, roomID, "join")
		if err != nil {
			return false, err
		}
		for _, m := range members {
			if r.OwnsUser(m, s.opts.ServerName) {
				ok = true
				break
			}
		}
	}
	if cache != nil {
		cache[roomID] = ok
	}
	return ok, nil
}

// keyCounts is a key_counts row.
type keyCounts struct {
	UserID   string         `json:"user_id"`
	DeviceID string         `json:"device_id"`
	Counts   map[string]int `json:"counts"`
	Fallback []string       `json:"fallback"`
}

type queuedRow struct {
	kind string
	js   []byte
}

// collect queues what the stream and the devices' inboxes hold for the
// appservice since the last round. Reads are made first; a write
// transaction is opened only when there is something to queue.
func (sd *sender) collect(ctx context.Context) error {
	r, s := sd.reg, sd.s
	eph, cr := r.PushesEphemeral(), r.PushesCrypto()
	if !eph && !cr {
		return nil
	}
	db := s.opts.DB
	to := db.Stream.Current()
	from, started, err := storage.AppServiceStreamPos(ctx, db, r.ID)
	if err != nil {
		return err
	}
	if !started {
		from = to // history before the first round is not pushed
	}
	var rows []queuedRow
	var devs []storage.AppServiceDevice
	if cr {
		if devs, err = storage.AppServiceDevices(ctx, db, r.ID); err != nil {
			return err
		}
	}
	if to > from {
		if eph {
			if rows, err = sd.collectEphemeral(ctx, from, to, rows); err != nil {
				return err
			}
		}
		if cr && len(devs) > 0 {
			if rows, err = sd.collectDeviceLists(ctx, from, to, devs, rows); err != nil {
				return err
			}
		}
	}
	var inboxes []storage.AppServiceDevice
	type countsRow struct {
		dev storage.AppServiceDevice
		js  string
	}
	var counts []countsRow
	for _, d := range devs {
		if n, err := storage.PendingToDevice(ctx, db, d.UserID, d.DeviceID); err != nil {
			return err
		} else if n > 0 {
			inboxes = append(inboxes, d)
		}
		c, fb, err := storage.SyncKeyCounts(ctx, db, d.UserID, d.DeviceID)
		if err != nil {
			return err
		}
		sort.Strings(fb)
		js, _ := json.Marshal(keyCounts{UserID: d.UserID, DeviceID: d.DeviceID, Counts: c, Fallback: fb})
		if string(js) != d.OTKSent {
			counts = append(counts, countsRow{d, string(js)})
		}
	}
	if len(rows) == 0 && len(inboxes) == 0 && len(counts) == 0 && started && to <= from {
		return nil
	}
	return db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, row := range rows {
			if err := storage.EnqueueAppService(ctx, tx, r.ID, row.kind, row.js); err != nil {
				return err
			}
		}
		for _, d := range inboxes {
			msgs, err := storage.TakeToDeviceInbox(ctx, tx, d.UserID, d.DeviceID, inboxBatch)
			if err != nil {
				return err
			}
			for _, m := range msgs {
				js, _ := json.Marshal(map[string]any{"type": m.Type, "sender": m.Sender, "content": m.Content, "to_user_id": d.UserID, "to_device_id": d.DeviceID})
				if err := storage.EnqueueAppService(ctx, tx, r.ID, storage.AppServiceKindToDevice, js); err != nil {
					return err
				}
			}
		}
		for _, c := range counts {
			if err := storage.EnqueueAppService(ctx, tx, r.ID, storage.AppServiceKindKeyCounts, []byte(c.js)); err != nil {
				return err
			}
			if err := storage.SetAppServiceOTKSent(ctx, tx, c.dev.UserID, c.dev.DeviceID, c.js); err != nil {
				return err
			}
		}
		if !started || to > from {
			return storage.SetAppServiceStreamPos(ctx, tx, r.ID, to)
		}
		return nil
	})
}

// collectEphemeral adds the public receipts of rooms the appservice is in
// and the presence of its users and of those sharing a room with them.
func (sd *sender) collectEphemeral(ctx context.Context, from, to int64, rows []queuedRow) ([]queuedRow, error) {
	r, s, db := sd.reg, sd.s, sd.s.opts.DB
	cache := map[string]bool{}
	receipts, err := storage.PublicReceiptsRange(ctx, db, from, to)
	if err != nil {
		return nil, err
	}
	for _, rc := range receipts {
		if ok, err := s.roomInterests(ctx, r, rc.RoomID, cache); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		data := map[string]any{"ts": rc.TS}
		if rc.ThreadID != "" {
			data["thread_id"] = rc.ThreadID
		}
		js, _ := json.Marshal(map[string]any{"type": "m.receipt", "room_id": rc.RoomID,
			"content": map[string]any{rc.EventID: map[string]any{rc.Type: map[string]any{rc.UserID: data}}}})
		rows = append(rows, queuedRow{storage.AppServiceKindEphemeral, js})
	}
	presence, err := storage.AllPresenceRange(ctx, db, from, to)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	for _, p := range presence {
		ok := r.OwnsUser(p.UserID, s.opts.ServerName)
		if !ok {
			rooms, err := storage.RoomsByMembership(ctx, db, p.UserID, "join")
			if err != nil {
				return nil, err
			}
			for room := range rooms {
				if ok, err = s.roomInterests(ctx, r, room, cache); err != nil {
					return nil, err
				} else if ok {
					break
				}
			}
		}
		if !ok {
			continue
		}
		c := map[string]any{"presence": p.State, "currently_active": p.CurrentlyActive}
		if p.LastActiveTS > 0 {
			c["last_active_ago"] = max(now-p.LastActiveTS, 0)
		}
		if p.StatusMsg != nil {
			c["status_msg"] = *p.StatusMsg
		}
		js, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": p.UserID, "content": c})
		rows = append(rows, queuedRow{storage.AppServiceKindEphemeral, js})
	}
	return rows, nil
}

// collectDeviceLists adds the users whose devices changed and who are the
// appservice's device holders or share a room with one (left is not
// reported: the bridge's crypto re-queries a user it still tracks).
func (sd *sender) collectDeviceLists(ctx context.Context, from, to int64, devs []storage.AppServiceDevice, rows []queuedRow) ([]queuedRow, error) {
	db := sd.s.opts.DB
	changes, err := storage.DeviceListChangesRange(ctx, db, from, to, 10000)
	if err != nil || len(changes) == 0 {
		return rows, err
	}
	holders := map[string]bool{}
	for _, d := range devs {
		holders[d.UserID] = true
	}
	var users []string
	seen := map[string]bool{}
	for _, c := range changes {
		if !seen[c.UserID] && (c.VisibleTo == "" || holders[c.VisibleTo]) {
			seen[c.UserID] = true
			users = append(users, c.UserID)
		}
	}
	changed := map[string]bool{}
	for h := range holders {
		shared, err := storage.SharingRoomWith(ctx, db, h, users)
		if err != nil {
			return nil, err
		}
		for u := range shared {
			changed[u] = true
		}
		if seen[h] {
			changed[h] = true
		}
	}
	if len(changed) == 0 {
		return rows, nil
	}
	list := make([]string, 0, len(changed))
	for u := range changed {
		list = append(list, u)
	}
	sort.Strings(list)
	js, _ := json.Marshal(map[string]any{"changed": list})
	return append(rows, queuedRow{storage.AppServiceKindDeviceLists, js}), nil
}
