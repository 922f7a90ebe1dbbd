package httpapi

import (
	"encoding/json"
	"net/http"
)

// Response is what a handler returns; the router writes it as JSON.
type Response struct {
	Code    int
	Body    any
	Headers map[string]string
}

// JSON builds a JSON response.
func JSON(code int, body any) Response { return Response{Code: code, Body: body} }

// WriteResponse writes resp: a []byte body is sent as is (already JSON, or
// another type named in the headers), anything else is encoded as JSON.
// A zero Code is 200.
func WriteResponse(w http.ResponseWriter, resp Response) {
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
