package syncapi

import (
	"context"

	"enclave/storage"
)

// ToDeviceLimit bounds the to-device messages of one /sync response; the
// rest follow in the next.
const ToDeviceLimit = 100

// E2EE is the sync extension for end-to-end encryption: to_device,
// device_lists, device_one_time_keys_count and
// device_unused_fallback_key_types. It runs on every poll, so it reads
// everything in one indexed query (storage.ReadSyncState).
type E2EE struct {
	db     *storage.DB
	syncer *Syncer
}

// NewE2EE makes the extension; register it with Syncer.AddExtension.
func NewE2EE(db *storage.DB, s *Syncer) *E2EE { return &E2EE{db: db, syncer: s} }

// Apply adds the device's E2EE state for (Since, To] to resp. To-device
// runs even when the stream has not moved: the since-token may acknowledge
// the messages of the previous response. device_lists only comes with
// incremental syncs: after an initial sync the client queries everyone's
// keys anyway.
func (e *E2EE) Apply(ctx context.Context, req *Request, resp *Response) error {
	user := req.UserID
	st, err := storage.ReadSyncState(ctx, e.db, req.UserID, req.DeviceID, req.Since.Pos, req.To.Pos, ToDeviceLimit, !req.Initial,
		func() { e.syncer.NotifyUsers(user) })
	if err != nil {
		return err
	}
	// Clients read a missing signed_curve25519 count as "no keys": say so.
	if _, ok := st.Counts["signed_curve25519"]; !ok {
		st.Counts["signed_curve25519"] = 0
	}
	resp.DeviceOneTimeKeysCount = st.Counts
	resp.DeviceUnusedFallbackKeyTypes = &st.UnusedFallback
	events := make([]any, len(st.ToDevice))
	for i, m := range st.ToDevice {
		events[i] = m
	}
	resp.ToDevice = &EventList{Events: events}
	if len(st.Changed) > 0 || len(st.Left) > 0 {
		resp.DeviceLists = &DeviceLists{Changed: st.Changed, Left: st.Left}
	}
	return nil
}
