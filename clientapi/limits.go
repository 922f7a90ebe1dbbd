package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"enclave/internal/httpapi"
)

// Identifier limits (spec appendices, identifier grammar): user IDs, room
// IDs, room aliases and event IDs are at most 255 bytes, sigil and server
// name included. Transaction IDs, event types, device IDs and the other
// opaque IDs in paths get the same bound: they are stored beside the IDs
// above (a 100 kB transaction ID used to be kept), and no client needs
// more.
const maxIDBytes = 255

// boundedPathVar says whether a path variable holds an identifier. A state
// key does not (it is bounded by the 64 KiB event it ends up in), nor does
// a media download's file name (only echoed back).
func boundedPathVar(name string) bool {
	switch name {
	case "stateKey", "fileName":
		return false
	}
	return true
}

// limitPathVars answers 400 M_INVALID_PARAM, before any handler runs,
// when a path variable of the matched route is longer than an identifier
// may be, so nothing is stored or looked up for it.
func limitPathVars(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for name, v := range mux.Vars(r) {
			if len(v) > maxIDBytes && boundedPathVar(name) {
				httpapi.WriteResponse(w, httpapi.InvalidParam("%s is longer than %d bytes", name, maxIDBytes))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
