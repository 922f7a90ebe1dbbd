package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"enclave/internal/httpapi"
	"enclave/internal/perm"
)

// Register mounts POST /_matrix/client/v1/appservice/{appserviceId}/ping
// (MSC2659): an appservice asks the server to call its /ping, to check
// both directions work.
//
// It also mounts the third-party lookups and the network directory
// (thirdparty.go), which the appservices answer.
func (s *Service) Register(routes httpapi.Routes) error {
	return errors.Join(
		routes.HandleAuthed("POST", "/_matrix/client/v1/appservice/{appserviceId}/ping", "appservice", perm.AnyUser, s.ping),
		s.registerThirdParty(routes))
}

func (s *Service) ping(r *http.Request, dev *httpapi.Device) httpapi.Response {
	id := httpapi.Vars(r)["appserviceId"]
	if dev.AppService == "" || dev.AppService != id {
		return httpapi.Forbidden("only the application service itself may ping it")
	}
	var body struct {
		TransactionID string `json:"transaction_id,omitempty"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	reg := s.byID(id)
	if reg.PushURL() == "" {
		return httpapi.Errf(http.StatusBadRequest, "M_URL_NOT_SET", "the application service has no url")
	}
	out, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	start := time.Now()
	status, err := s.call(ctx, reg, http.MethodPost, reg.PushURL()+"/_matrix/app/v1/ping", out)
	switch {
	case err == nil:
		return httpapi.JSON(http.StatusOK, map[string]int64{"duration_ms": time.Since(start).Milliseconds()})
	case status != 0:
		return httpapi.JSON(http.StatusBadGateway, map[string]any{"errcode": "M_BAD_STATUS", "error": "the application service answered with an error", "status": status})
	case errors.Is(err, context.DeadlineExceeded):
		return httpapi.Errf(http.StatusGatewayTimeout, "M_CONNECTION_TIMEOUT", "the application service did not answer in time")
	default:
		return httpapi.Errf(http.StatusBadGateway, "M_CONNECTION_FAILED", "the application service could not be reached")
	}
}
