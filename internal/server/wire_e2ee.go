package server

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/storage"
	"enclave/syncapi"
)

// E2EE: the sync extension (to-device, device lists, key counts), the
// room-server hook that feeds joins and leaves into the device-list stream,
// and the waker that device-list changes use to reach long-polling syncs.
// Backfilled history (negative positions) is not a change anyone must
// hear of. The HTTP endpoints register themselves in clientapi (keys*.go,
// todevice.go, devices.go, keybackup.go).
func init() {
	addWiring("e2ee", func(ctx context.Context, s *Server) error {
		storage.SetDeviceListWaker(s.DB, s.Sync.NotifyUsers)
		s.OnShutdown(func() { storage.ForgetDeviceListHooks(s.DB) })
		s.Sync.AddExtension(syncapi.NewE2EE(s.DB, s.Sync))
		s.Rooms.AddHook(func(ctx context.Context, tx *storage.Tx, ev *storage.Event, _ gomatrixserverlib.PDU) error {
			if ev.Type != "m.room.member" || ev.StateKey == nil || ev.StreamPos <= 0 || ev.SoftFailed || ev.Rejected || ev.Outlier {
				return nil
			}
			return storage.RecordMembershipTransition(ctx, tx, ev.StreamPos, ev.RoomID, *ev.StateKey, ev.Membership)
		})
		return nil
	})
}
