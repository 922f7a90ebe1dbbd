package federationapi

import (
	"context"
	"errors"
	"net/http"

	"enclave/internal/httpapi"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// SetVersion sets the version reported by /_matrix/federation/v1/version.
func (f *Federation) SetVersion(v string) { f.version.Store(&v) }

// serveVersion is GET /_matrix/federation/v1/version.
func (f *Federation) serveVersion(*http.Request) httpapi.Response {
	v := "unknown"
	if p := f.version.Load(); p != nil {
		v = *p
	}
	type server struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	return httpapi.JSON(http.StatusOK, struct {
		Server server `json:"server"`
	}{server{Name: "Enclave", Version: v}})
}

// RemoteVersion asks server for its /_matrix/federation/v1/version (a
// reachability check for operators and tests).
func (f *Federation) RemoteVersion(ctx context.Context, server spec.ServerName) (fclient.Version, error) {
	c, ok := f.client.(interface {
		GetVersion(context.Context, spec.ServerName) (fclient.Version, error)
	})
	if !ok {
		return fclient.Version{}, errors.New("federation: client cannot query versions")
	}
	return c.GetVersion(ctx, server)
}
