package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"unicode/utf8"
)

// ReadBody reads r's body, answering M_TOO_LARGE past the size limit (an
// http.MaxBytesReader set by the listener) and M_NOT_JSON for bodies that
// are not JSON (the spec's JSON is UTF-8: invalid bytes are refused, not
// replaced). An empty body reads as {}. ok is false when resp should be
// returned.
func ReadBody(r *http.Request) (body []byte, resp Response, ok bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "request body exceeds %d bytes", mbe.Limit), false
		}
		return nil, BadJSON("could not read body: %v", err), false
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	if !utf8.Valid(body) || !json.Valid(body) {
		return nil, Errf(http.StatusBadRequest, "M_NOT_JSON", "request body is not valid JSON"), false
	}
	return body, Response{}, true
}

// DecodeJSON reads r's body into v: M_NOT_JSON for bodies that are not
// JSON, M_BAD_JSON for JSON of the wrong shape, M_TOO_LARGE past the size
// limit. ok is false when resp should be returned.
func DecodeJSON(r *http.Request, v any) (resp Response, ok bool) {
	body, resp, ok := ReadBody(r)
	if !ok {
		return resp, false
	}
	if err := json.Unmarshal(body, v); err != nil {
		return BadJSON("request body has the wrong shape: %v", err), false
	}
	return Response{}, true
}

// ReadJSONObject reads a body that must be a JSON object and returns it as
// sent (event content, account data).
func ReadJSONObject(r *http.Request) (json.RawMessage, Response, bool) {
	body, resp, ok := ReadBody(r)
	if !ok {
		return nil, resp, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return nil, BadJSON("request body must be a JSON object"), false
	}
	return body, Response{}, true
}
