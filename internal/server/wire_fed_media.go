package server

import (
	"context"
	"errors"

	"enclave/federationapi"
	"enclave/mediaapi"
)

// Federated media: the media repository fetches other servers' media
// over federation. The repository and the federation component are both
// wired after this file, so the fetcher is installed at start.
func init() {
	addWiring("fed_media", func(ctx context.Context, s *Server) error {
		if !s.Config.Federation.Enabled {
			return nil
		}
		s.OnStart(func() error {
			if m := s.Media(); m != nil && s.Federation() != nil {
				m.SetRemoteFetcher(mediaFetcher{s})
			}
			return nil
		})
		return nil
	})
}

type mediaFetcher struct{ s *Server }

func (m mediaFetcher) FetchMedia(ctx context.Context, server, mediaID string) (*mediaapi.RemoteMedia, error) {
	f := m.s.Federation()
	if f == nil {
		return nil, errFederationOff
	}
	body, ct, name, err := f.FetchMedia(ctx, server, mediaID)
	if errors.Is(err, federationapi.ErrMediaNotFound) {
		return nil, mediaapi.ErrRemoteNotFound
	}
	if err != nil {
		return nil, err
	}
	return &mediaapi.RemoteMedia{Body: body, ContentType: ct, FileName: name}, nil
}
