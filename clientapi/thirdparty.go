package clientapi

import (
	"enclave/internal/httpapi"
	"net/http"
)

// Third-party networks and identifiers. This server bridges no protocols
// and never contacts an identity server, so the protocol lookups answer
// empty and every attempt to add, bind or verify a third-party identifier
// (email, phone) is refused: users are provisioned by the operator, and a
// 3PID would be an unverifiable side channel.

func (a *API) thirdPartyRoutes() {
	a.v3("GET", "/thirdparty/protocols", "thirdparty", func(r *http.Request, dev *httpapi.Device) httpapi.Response {
		return httpapi.JSON(200, struct{}{})
	})
	a.v3("GET", "/thirdparty/protocol/{protocol}", "thirdparty", func(r *http.Request, dev *httpapi.Device) httpapi.Response {
		return httpapi.NotFound("unknown protocol")
	})
	for _, p := range []string{"/thirdparty/location", "/thirdparty/location/{protocol}", "/thirdparty/user", "/thirdparty/user/{protocol}"} {
		a.v3("GET", p, "thirdparty", func(r *http.Request, dev *httpapi.Device) httpapi.Response {
			return httpapi.JSON(200, []any{})
		})
	}
	refuse := func(r *http.Request, dev *httpapi.Device) httpapi.Response {
		return httpapi.Forbidden("third-party identifiers are not supported on this server")
	}
	for _, p := range []string{"/account/3pid", "/account/3pid/add", "/account/3pid/bind", "/account/3pid/delete", "/account/3pid/unbind"} {
		a.v3("POST", p, "account", refuse)
	}
	// Token requests are unauthenticated in the spec; refuse them alike.
	for _, v := range []string{"v3", "r0"} {
		for _, p := range []string{"/account/3pid/email/requestToken", "/account/3pid/msisdn/requestToken"} {
			a.open("POST", "/_matrix/client/"+v+p, "account", func(r *http.Request) httpapi.Response {
				return httpapi.Forbidden("third-party identifiers are not supported on this server")
			})
		}
	}
}
