package federationapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// hierarchyLimit bounds one /hierarchy answer read from another server.
const hierarchyLimit = 4 << 20

// RemoteHierarchy asks via's servers in turn for GET
// /_matrix/federation/v1/hierarchy/{roomID}: a space child this server is
// not in. It returns the first answer: the room, its children (with their
// children_state) and the children that server says the requester cannot
// see.
func (m Memberships) RemoteHierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (room map[string]any, children []map[string]any, inaccessible []string, err error) {
	f := m.f
	path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID)
	if suggestedOnly {
		path += "?suggested_only=true"
	}
	err = ErrNoServers
	tried := map[string]bool{}
	for _, s := range via {
		if spec.ServerName(s) == f.serverName || tried[s] {
			continue
		}
		tried[s] = true
		var out struct {
			Room         map[string]any   `json:"room"`
			Children     []map[string]any `json:"children"`
			Inaccessible []string         `json:"inaccessible_children"`
		}
		if err = f.fedJSON(ctx, spec.ServerName(s), http.MethodGet, path, nil, &out, hierarchyLimit); err != nil {
			continue
		}
		if id, _ := out.Room["room_id"].(string); id != roomID {
			err = errors.New("hierarchy answer from " + s + " describes another room")
			continue
		}
		return out.Room, out.Children, out.Inaccessible, nil
	}
	return nil, nil, nil, err
}
