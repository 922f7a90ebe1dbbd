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

// thirdPartyProtocols answers GET /thirdparty/protocols: none.
func thirdPartyProtocols(*http.Request, *httpapi.Device) httpapi.Response {
	return httpapi.JSON(200, struct{}{})
}

// thirdPartyProtocol answers GET /thirdparty/protocol/{protocol}.
func thirdPartyProtocol(*http.Request, *httpapi.Device) httpapi.Response {
	return httpapi.NotFound("unknown protocol")
}

// thirdPartyLookup answers the location and user lookups: nothing found.
func thirdPartyLookup(*http.Request, *httpapi.Device) httpapi.Response {
	return httpapi.JSON(200, []any{})
}

// refuse3PID answers every attempt to add, bind or remove a 3PID.
func refuse3PID(*http.Request, *httpapi.Device) httpapi.Response { return no3PID() }

// refuse3PIDToken answers the token requests, unauthenticated in the spec.
func refuse3PIDToken(*http.Request) httpapi.Response { return no3PID() }

func no3PID() httpapi.Response {
	return httpapi.Forbidden("third-party identifiers are not supported on this server")
}
