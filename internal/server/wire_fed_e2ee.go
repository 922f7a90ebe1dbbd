package server

import (
	"context"
	"encoding/json"
	"errors"

	"enclave/storage"
)

// Federated E2EE: the client API's /keys/query, /keys/claim and
// /sendToDevice reach other servers' users through federation, and local
// users' device-list and cross-signing changes go out as EDUs. This wiring
// runs before the federation component exists (wirings run in file-name
// order), so the hooks look it up when called.
func init() {
	addWiring("fed_e2ee", func(ctx context.Context, s *Server) error {
		if !s.Config.Federation.Enabled {
			return nil
		}
		remote := lazyRemoteE2EE{s}
		s.Client.SetRemoteKeys(remote)
		s.Client.SetRemoteToDevice(remote)
		storage.OnDeviceListChange(s.DB, func(changes []storage.DeviceListChange) {
			if f := s.Federation(); f != nil {
				f.DeviceListChanged(changes)
			}
		})
		return nil
	})
}

var errFederationOff = errors.New("federation is not running")

// lazyRemoteE2EE forwards to the federation component once it exists.
type lazyRemoteE2EE struct{ s *Server }

func (l lazyRemoteE2EE) QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*storage.KeysQueryResult, error) {
	f := l.s.Federation()
	if f == nil {
		return nil, errFederationOff
	}
	return f.E2EE().QueryKeys(ctx, server, deviceKeys)
}

func (l lazyRemoteE2EE) ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	f := l.s.Federation()
	if f == nil {
		return nil, errFederationOff
	}
	return f.E2EE().ClaimKeys(ctx, server, oneTimeKeys)
}

func (l lazyRemoteE2EE) SendToDevice(ctx context.Context, server, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error {
	f := l.s.Federation()
	if f == nil {
		return errFederationOff
	}
	return f.E2EE().SendToDevice(ctx, server, sender, eventType, messageID, messages)
}
