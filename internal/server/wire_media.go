package server

import (
	"context"
	"sync"

	"enclave/mediaapi"
)

// mediaRepos maps each Server to its media repository (Server's fields
// belong to server.go; this keeps the media wiring in its own file).
var mediaRepos sync.Map // *Server → *mediaapi.Repo

func init() {
	addWiring("media", func(ctx context.Context, s *Server) error {
		repo, err := mediaapi.New(ctx, mediaapi.OptionsFromConfig(s.Config), s.DB)
		if err != nil {
			return err
		}
		repo.Register(s.Client)
		mediaRepos.Store(s, repo)
		s.OnShutdown(func() { mediaRepos.Delete(s) })
		return nil
	})
}

// Media returns the server's media repository: the admin API calls its
// DeleteMedia / QuarantineMedia, audit installs SetAuditHook, federation
// SetRemoteFetcher.
func (s *Server) Media() *mediaapi.Repo {
	if v, ok := mediaRepos.Load(s); ok {
		return v.(*mediaapi.Repo)
	}
	return nil
}
