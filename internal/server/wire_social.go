package server

import (
	"context"

	"enclave/clientapi"
	pushnotify "enclave/internal/pushrules/notifier"
	"enclave/syncapi"
)

// The social layer: profiles, account data, typing, receipts, presence,
// push rules and unread counts.
func init() {
	addWiring("social", func(ctx context.Context, s *Server) error {
		s.Client.SetSocialOptions(clientapi.SocialOptions{ProfileRequireSharedRoom: s.Config.Profile.RequireSharedRoom})

		presence := syncapi.PresenceOf(s.Sync)
		presence.SetEnabled(s.Config.Presence.Enabled)
		if s.Config.Presence.Enabled {
			if err := presence.Start(ctx); err != nil {
				return err
			}
			s.OnShutdown(presence.Stop)
		}

		// Push rules run after each event commits; counts reach /sync
		// through the notification rows' stream positions. The notifier
		// wakes the rooms' long-polls once an event's counts are stored, so
		// the event and its counts come in one response.
		n := pushnotify.New(s.DB, s.Rooms, s.Config.ServerName, s.Sync.NotifyUsers, s.Sync.NotifyRoom)
		s.Sync.HandOffEventWakes()
		s.Rooms.Subscribe(n.OnEvent)
		s.OnShutdown(n.Close)
		s.OnShutdown(func() { syncapi.ForgetSocial(s.Sync) })

		s.Sync.AddExtension(syncapi.NewAccountDataExtension(s.Sync))
		s.Sync.AddExtension(syncapi.NewEphemeralExtension(s.Sync))
		s.Sync.AddExtension(syncapi.NewPresenceExtension(s.Sync))
		// Last: counts go to every joined room the others put in.
		s.Sync.AddExtension(syncapi.NewUnreadExtension(s.Sync))
		return nil
	})
}
