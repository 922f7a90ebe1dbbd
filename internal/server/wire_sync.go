package server

import "context"

// Long-polling /sync requests would hold http.Server.Shutdown until their
// timeouts (up to the whole drain deadline): once the listeners are open,
// have their Shutdown first end the long-polls.
func init() {
	addWiring("sync-shutdown", func(_ context.Context, s *Server) error {
		s.OnStart(func() error {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, srv := range s.servers {
				srv.RegisterOnShutdown(s.Sync.Shutdown)
			}
			return nil
		})
		return nil
	})
}
