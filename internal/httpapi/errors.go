package httpapi

import (
	"fmt"
	"net/http"

	"github.com/sirupsen/logrus"
)

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
