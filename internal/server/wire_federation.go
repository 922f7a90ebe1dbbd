package server

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/federationapi"
	"enclave/storage"
)

// federations maps each Server to its federation component (nil when
// federation.enabled is false).
var federations sync.Map // *Server → *federationapi.Federation

// Federation: with federation.enabled, the federation component (key ring,
// policy, outbound client and queue, /send and the key endpoints) and its
// TLS 1.3 listener on listen.federation. The current signing key is
// recorded even with federation off, so a later rotation can still publish
// it as an old key.
func init() {
	addWiring("federation", func(ctx context.Context, s *Server) error {
		if !s.Config.Federation.Enabled {
			pub := base64.RawStdEncoding.EncodeToString(s.Key.Public().(ed25519.PublicKey))
			return storage.RecordOwnKey(ctx, s.DB, s.KeyID, pub, time.Now().UnixMilli())
		}
		f, err := federationapi.New(s.Config, s.DB, s.Rooms, s.KeyID, s.Key)
		if err != nil {
			return err
		}
		f.SetVersion(Version)
		if err := f.RegisterMetrics(s.Registry); err != nil {
			return err
		}
		federations.Store(s, f)
		// Remote events close gaps through federation; local events go out
		// through the queues; clients join remote rooms and backfill.
		s.Rooms.SetFetcher(f.Fetcher())
		s.Rooms.Subscribe(f.OnRoomEvent)
		s.Client.SetFederation(f)
		s.OnStart(f.Start)
		s.OnShutdown(func() {
			f.Stop()
			federations.Delete(s)
		})
		if addr := s.Config.Listen.Federation; addr != "" {
			tc, err := s.Config.FederationTLSConfig()
			if err != nil {
				return err
			}
			s.AddListener(addr, f.Handler(), tc)
		} else {
			logrus.Warn("federation is enabled but listen.federation is empty: outbound only")
		}
		return nil
	})
}

// Federation returns the server's federation component, or nil when
// federation is disabled. Other components use it to send (SendPDU,
// SendEDU), receive (HandleEDU) and query (Client) over federation, and
// cmd/enclave's SIGHUP reload calls its ReloadPolicy.
func (s *Server) Federation() *federationapi.Federation {
	if v, ok := federations.Load(s); ok {
		return v.(*federationapi.Federation)
	}
	return nil
}
