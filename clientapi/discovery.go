package clientapi

import (
	"net/http"

	"enclave/internal/httpapi"
	"enclave/internal/invitefilter"
	"enclave/roomserver"

	"github.com/matrix-org/gomatrixserverlib"
)

// supportedVersions are the spec versions we serve; clients pick features by them.
var supportedVersions = []string{"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16"}

// versions answers GET /_matrix/client/versions.
func versions(*http.Request) httpapi.Response {
	return httpapi.JSON(200, map[string]any{
		"versions":          supportedVersions,
		"unstable_features": map[string]bool{"org.matrix.msc3575": false, "org.matrix.simplified_msc3575": true, "org.matrix.msc4306": true},
	})
}

// wellKnown answers GET /.well-known/matrix/client.
func (a *API) wellKnown(*http.Request) httpapi.Response {
	if a.opts.BaseURL == "" {
		return httpapi.NotFound("no client well-known configured")
	}
	return httpapi.JSON(200, map[string]any{"m.homeserver": map[string]string{"base_url": a.opts.BaseURL}})
}

// capabilities answers GET /capabilities.
func capabilities(*http.Request, *httpapi.Device) httpapi.Response {
	versions := map[string]string{}
	for v, impl := range gomatrixserverlib.RoomVersions() {
		if v == gomatrixserverlib.RoomVersionPseudoIDs {
			continue
		}
		if impl.Stable() {
			versions[string(v)] = "stable"
		}
	}
	return httpapi.JSON(200, map[string]any{"capabilities": map[string]any{
		"m.room_versions":   map[string]any{"default": roomserver.DefaultRoomVersion, "available": versions},
		"m.change_password": map[string]bool{"enabled": true},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": false},
		"m.profile_fields":  map[string]bool{"enabled": true},
		// MSC4155: the server applies invite permission configs itself.
		invitefilter.CapabilityEnforced: map[string]bool{"enabled": true},
	}})
}
