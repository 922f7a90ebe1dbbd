package federationapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"enclave/internal/httpapi"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// TestRouteTable enumerates the federation router: every route it serves
// comes from the route table with an access class, and the class is what
// the route enforces (a signed route refuses an unsigned request, an open
// one does not ask for a signature).
func TestRouteTable(t *testing.T) {
	f := newTestFederation(t, &fakeRooms{versions: map[string]gomatrixserverlib.RoomVersion{}}, nil)
	table := map[string]Access{}
	for _, rt := range f.routes() {
		key := rt.method + " " + rt.path
		if _, dup := table[key]; dup {
			t.Errorf("route %s listed twice", key)
		}
		if rt.access != AccessSigned && rt.access != AccessOpen {
			t.Errorf("route %s has no access class", key)
		}
		table[key] = rt.access
	}
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	vars := strings.NewReplacer("{txnId}", "t1", "{roomId}", "!r:self.test", "{userId}", "@u:remote.test",
		"{eventId}", "$e", "{mediaId}", "m1", "{serverName}", "self.test", "{keyID}", "ed25519:x")
	seen := 0
	err := f.router.Walk(func(r *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tmpl, err := r.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := r.GetMethods()
		if err != nil || len(methods) != 1 {
			t.Errorf("route %s: methods %v %v", tmpl, methods, err)
			return nil
		}
		key := methods[0] + " " + tmpl
		access, ok := table[key]
		if !ok {
			t.Errorf("router serves %s, which is not in the route table", key)
			return nil
		}
		seen++
		req, _ := http.NewRequest(methods[0], srv.URL+vars.Replace(tmpl), nil)
		code, body := do(t, srv.URL, req)
		unauthorized := code == http.StatusUnauthorized && errcode(body) == "M_UNAUTHORIZED"
		if access == AccessSigned && !unauthorized {
			t.Errorf("signed route %s answered an unsigned request %d %s", key, code, body)
		}
		if access == AccessOpen && unauthorized {
			t.Errorf("open route %s asked for a signature", key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(table) {
		t.Errorf("router serves %d routes, the table lists %d", seen, len(table))
	}

	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/_matrix/federation/v1/nonsense", 404},
		{"GET", "/_matrix/key/v2/nowhere", 404},
		{"DELETE", "/_matrix/federation/v1/version", 405},
		{"GET", "/_matrix/federation/v1/send/t1", 405},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		if code, body := do(t, srv.URL, req); code != tc.code || errcode(body) != "M_UNRECOGNIZED" {
			t.Errorf("%s %s: %d %s, want %d M_UNRECOGNIZED", tc.method, tc.path, code, body, tc.code)
		}
	}
}

// TestRouteWithoutAccessRefused checks that mounting fails closed: a route
// with no access class, or one whose handler does not match it, stops New.
func TestRouteWithoutAccessRefused(t *testing.T) {
	f := newTestFederation(t, &fakeRooms{versions: map[string]gomatrixserverlib.RoomVersion{}}, nil)
	h := func(*http.Request, spec.ServerName, []byte) httpapi.Response { return httpapi.JSON(200, nil) }
	o := func(*http.Request) httpapi.Response { return httpapi.JSON(200, nil) }
	for name, rt := range map[string]route{
		"no class":          {method: "GET", path: "/x", signed: h},
		"unknown class":     {method: "GET", path: "/x", access: "federation.anyone", open: o},
		"open, signed h":    {method: "GET", path: "/x", access: AccessOpen, signed: h},
		"signed, open h":    {method: "GET", path: "/x", access: AccessSigned, open: o},
		"signed, two h":     {method: "GET", path: "/x", access: AccessSigned, signed: h, open: o},
		"signed, no h":      {method: "GET", path: "/x", access: AccessSigned},
		"open, two classes": {method: "GET", path: "/x", access: AccessOpen, open: o, signed: h},
	} {
		f.router = mux.NewRouter()
		if err := f.mount([]route{rt}); err == nil {
			t.Errorf("%s: mounted", name)
		}
	}
}
