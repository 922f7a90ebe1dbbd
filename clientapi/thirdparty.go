package clientapi

import (
	"enclave/internal/httpapi"
	"net/http"
)

// Third-party identifiers. This server never contacts an identity server,
// so every attempt to add, bind or verify a third-party identifier (email,
// phone) is refused: users are provisioned by the operator, and a 3PID
// would be an unverifiable side channel. The third-party network lookups
// are the appservices' (enclave/appservice).

// refuse3PID answers every attempt to add, bind or remove a 3PID.
func refuse3PID(*http.Request, *httpapi.Device) httpapi.Response { return no3PID() }

// refuse3PIDToken answers the token requests, unauthenticated in the spec.
func refuse3PIDToken(*http.Request) httpapi.Response { return no3PID() }

func no3PID() httpapi.Response {
	return httpapi.Forbidden("third-party identifiers are not supported on this server")
}
