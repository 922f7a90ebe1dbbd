package clientapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/sirupsen/logrus"
)

// Response is what a handler returns; the router writes it as JSON.
type Response struct {
	Code    int
	Body    any
	Headers map[string]string
}

// JSON builds a JSON response.
func JSON(code int, body any) Response { return Response{Code: code, Body: body} }

// MatrixError is the spec's error body: {"errcode": ..., "error": ...} plus
// the optional fields some errors carry.
type MatrixError struct {
	ErrCode      string `json:"errcode"`
	Err          string `json:"error"`
	RetryAfterMs int64  `json:"retry_after_ms,omitempty"`
	SoftLogout   bool   `json:"soft_logout,omitempty"`
	RoomVersion  string `json:"room_version,omitempty"`
}

func (e *MatrixError) Error() string { return e.ErrCode + ": " + e.Err }

// Errf builds an error response with the given status and errcode.
func Errf(code int, errcode, format string, args ...any) Response {
	return Response{Code: code, Body: &MatrixError{ErrCode: errcode, Err: fmt.Sprintf(format, args...)}}
}

// Common errors, named as in the spec.
func Forbidden(format string, args ...any) Response {
	return Errf(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}
func NotFound(format string, args ...any) Response {
	return Errf(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func BadJSON(format string, args ...any) Response {
	return Errf(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}
func InvalidParam(format string, args ...any) Response {
	return Errf(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}
func MissingParam(format string, args ...any) Response {
	return Errf(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}
func Unrecognized(code int, format string, args ...any) Response {
	return Errf(code, "M_UNRECOGNIZED", format, args...)
}

// InternalError logs err and answers 500 M_UNKNOWN without leaking detail.
func InternalError(r *http.Request, err error) Response {
	entry := logrus.WithError(err)
	if r != nil {
		entry = entry.WithField("path", r.URL.Path).WithField("request_id", RequestID(r.Context()))
	}
	entry.Error("internal error")
	return Errf(http.StatusInternalServerError, "M_UNKNOWN", "internal server error")
}

// readBody reads r's body, answering M_TOO_LARGE past the size limit and
// M_NOT_JSON for bodies that are not JSON. An empty body reads as {}.
func readBody(r *http.Request) ([]byte, Response, bool) {
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
	if !json.Valid(body) {
		return nil, Errf(http.StatusBadRequest, "M_NOT_JSON", "request body is not valid JSON"), false
	}
	return body, Response{}, true
}

// decodeJSON reads r's body into v: M_NOT_JSON for bodies that are not
// JSON, M_BAD_JSON for JSON of the wrong shape, M_TOO_LARGE past the size
// limit. ok is false when resp should be returned.
func decodeJSON(r *http.Request, v any) (resp Response, ok bool) {
	body, resp, ok := readBody(r)
	if !ok {
		return resp, false
	}
	if err := json.Unmarshal(body, v); err != nil {
		return BadJSON("request body has the wrong shape: %v", err), false
	}
	return Response{}, true
}

// readJSONObject reads a body that must be a JSON object and returns it as
// sent (event content, account data).
func readJSONObject(r *http.Request) (json.RawMessage, Response, bool) {
	body, resp, ok := readBody(r)
	if !ok {
		return nil, resp, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return nil, BadJSON("request body must be a JSON object"), false
	}
	return body, Response{}, true
}

func writeResponse(w http.ResponseWriter, resp Response) {
	for k, v := range resp.Headers {
		w.Header().Set(k, v)
	}
	if raw, ok := resp.Body.([]byte); ok {
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(resp.Code)
		_, _ = w.Write(raw)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	b, err := json.Marshal(resp.Body)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"could not encode response"}`))
		return
	}
	if resp.Code == 0 {
		resp.Code = http.StatusOK
	}
	w.WriteHeader(resp.Code)
	_, _ = w.Write(b)
}
