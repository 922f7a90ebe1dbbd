package adminapi

import (
	"context"
	"net/http"

	"enclave/internal/httpapi"
)

// AppServices is what the admin API shows of the registered bridges
// (appservice.Service implements it): each one's namespaces, the rooms it
// sees and its queue, never its tokens.
type AppServices interface {
	AdminView(ctx context.Context) (any, error)
}

// appServices serves GET /_enclave/admin/v1/appservices (permission
// appservice.manage).
type appServices struct {
	get func() AppServices
}

func (a appServices) list(r *http.Request, _ *httpapi.Device) httpapi.Response {
	as := a.get
	if as == nil || as() == nil {
		return httpapi.JSON(http.StatusOK, map[string]any{"appservices": []any{}, "removed_queues": []any{}})
	}
	v, err := as().AdminView(r.Context())
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, v)
}
