package test

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"enclave/clientapi"
	"enclave/config"
	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/storage"
)

// TestClientRouteTable walks the client listener's router: every route on it
// was registered through a table with a permission requirement, unknown
// paths and wrong methods get the spec's M_UNRECOGNIZED, registering a
// route without a requirement fails, and a request whose requirement
// cannot be decided is refused.
func TestClientRouteTable(t *testing.T) {
	srv := Start(t, storage.SQLite, Options{})
	table := map[string]clientapi.RouteInfo{}
	for _, r := range srv.Client.Routes() {
		table[r.Method+" "+r.Path] = r
	}
	walked := 0
	err := srv.Client.Router().Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tmpl, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			t.Errorf("%s: no method: %v", tmpl, err)
			return nil
		}
		for _, m := range methods {
			walked++
			ri, ok := table[m+" "+tmpl]
			if !ok {
				t.Errorf("%s %s is on the router but in no route table", m, tmpl)
			} else if !ri.Need.Valid() {
				t.Errorf("%s %s has no permission requirement", m, tmpl)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if walked != len(table) || walked < 200 {
		t.Fatalf("walked %d routes, the tables list %d", walked, len(table))
	}

	u := Register(t, srv.URL, "walker", "walker-pw", false)
	raw(t, "GET", srv.URL+"/_matrix/client/v3/no_such_endpoint", u.AccessToken, nil).
		wantErr(t, "unknown path", http.StatusNotFound, "M_UNRECOGNIZED")
	raw(t, "GET", srv.URL+"/_matrix/client/v3/no_such_endpoint", "", nil).
		wantErr(t, "unknown path without a token", http.StatusNotFound, "M_UNRECOGNIZED")
	raw(t, "DELETE", srv.URL+"/_matrix/client/v3/createRoom", u.AccessToken, nil).
		wantErr(t, "wrong method", http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	raw(t, "POST", srv.URL+"/_matrix/client/versions", "", map[string]any{}).
		wantErr(t, "wrong method on an open route", http.StatusMethodNotAllowed, "M_UNRECOGNIZED")

	// Fail closed at registration.
	ok := func(*http.Request, *httpapi.Device) httpapi.Response {
		return httpapi.JSON(200, map[string]any{})
	}
	if err := srv.Client.HandleAuthed("GET", "/_test/unclassified", "test", perm.Requirement{}, ok); err == nil {
		t.Error("a route without a requirement was registered")
	}
	if err := srv.Client.HandleRaw("GET", "/_test/unclassified_raw", "test", perm.Requirement{}, func(http.ResponseWriter, *http.Request) {}); err == nil {
		t.Error("a raw route without a requirement was registered")
	}
	if err := srv.Client.HandleAuthed("GET", "/_test/public_authed", "test", perm.Public, ok); err == nil {
		t.Error("an authenticated route was registered as public")
	}
	if err := srv.Client.HandleAuthed("GET", "/_matrix/client/v3/sync", "test", perm.AnyUser, ok); err == nil {
		t.Error("a route was registered twice")
	}

	// Fail closed at request time: a requirement that cannot be decided,
	// and a raw handler that authenticates without a requirement.
	broken := perm.Dynamic("broken", []perm.Permission{perm.Federate}, func(*http.Request) ([]perm.Permission, error) {
		return nil, errors.New("store unavailable")
	})
	if err := srv.Client.HandleAuthed("GET", "/_test/undecidable", "test", broken, ok); err != nil {
		t.Fatal(err)
	}
	srv.Client.Router().HandleFunc("/_test/unregistered_raw", func(w http.ResponseWriter, r *http.Request) {
		if _, resp, ok := srv.Client.Authenticate(r); !ok {
			httpapi.WriteResponse(w, resp)
			return
		}
		httpapi.WriteResponse(w, httpapi.JSON(200, map[string]any{}))
	}).Methods("GET")
	raw(t, "GET", srv.URL+"/_test/undecidable", u.AccessToken, nil).
		wantErr(t, "undecidable requirement", http.StatusForbidden, "M_FORBIDDEN")
	raw(t, "GET", srv.URL+"/_test/unregistered_raw", u.AccessToken, nil).
		wantErr(t, "raw route without a requirement", http.StatusForbidden, "M_FORBIDDEN")
}

// pathVar matches a mux path variable, with or without a pattern.
var pathVar = regexp.MustCompile(`\{([^}:]+)(:[^}]*)?\}`)

// TestClientRoutePermissions: for every permission, a user whose role
// lacks exactly that permission is refused 403 naming it on every route
// that can need it, driven through the real HTTP handler. Routes whose
// need depends on the request are sent a request that needs it.
func TestClientRoutePermissions(t *testing.T) {
	type request struct {
		vars  map[string]string
		query string
		body  any
	}
	remote := "@x:remote.example"
	var publicRoom string
	// triggers[dynamic name][permission]: a request that needs it.
	triggers := map[string]map[perm.Permission]func() request{
		"createRoom": {
			perm.CreatePublicRoom:  func() request { return request{body: map[string]any{"visibility": "public"}} },
			perm.InviteRemoteUsers: func() request { return request{body: map[string]any{"invite": []string{remote}}} },
			perm.Federate:          func() request { return request{body: map[string]any{"invite": []string{remote}}} },
		},
		"join": {
			perm.JoinRemoteRooms: func() request {
				return request{vars: map[string]string{"roomIdOrAlias": "#room:remote.example", "roomId": "!nowhere:remote.example"}}
			},
			perm.Federate: func() request {
				return request{vars: map[string]string{"roomIdOrAlias": "!nowhere:remote.example", "roomId": "!nowhere:remote.example"}}
			},
		},
		"invite": {
			perm.InviteRemoteUsers: func() request { return request{body: map[string]any{"user_id": remote}} },
			perm.Federate:          func() request { return request{body: map[string]any{"user_id": remote}} },
		},
		"putState": {
			perm.InviteRemoteUsers: func() request {
				return request{vars: map[string]string{"eventType": "m.room.member", "stateKey": remote}, body: map[string]any{"membership": "invite"}}
			},
			perm.Federate: func() request {
				return request{vars: map[string]string{"eventType": "m.room.member", "stateKey": remote}, body: map[string]any{"membership": "invite"}}
			},
			perm.CreatePublicRoom: func() request {
				return request{vars: map[string]string{"eventType": "m.room.join_rules"}, body: map[string]any{"join_rule": "public"}}
			},
		},
		"putStateNoKey": {
			perm.CreatePublicRoom: func() request {
				return request{vars: map[string]string{"eventType": "m.room.join_rules"}, body: map[string]any{"join_rule": "public"}}
			},
		},
		"publish": {
			perm.CreatePublicRoom: func() request { return request{body: map[string]any{"visibility": "public"}} },
		},
		"upgrade": {
			perm.CreatePublicRoom: func() request {
				return request{vars: map[string]string{"roomId": publicRoom}, body: map[string]any{"new_version": "10"}}
			},
		},
		"serverParam": {
			perm.Federate: func() request { return request{query: "server=remote.example", body: map[string]any{}} },
		},
	}
	defaults := map[string]string{"roomId": "!nowhere:localhost", "roomIdOrAlias": "!nowhere:localhost", "userId": "@nobody:localhost",
		"eventType": "m.room.message", "stateKey": "", "serverName": "localhost"}

	var all []string
	for _, p := range perm.All {
		all = append(all, string(p))
	}
	roles := []string{"everything=" + strings.Join(all, " ")}
	for _, p := range perm.All {
		rest := slices.DeleteFunc(slices.Clone(all), func(q string) bool { return q == string(p) })
		roles = append(roles, "no_"+string(p)+"="+strings.Join(rest, " "))
	}
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{Configure: func(c *config.Config) { c.RBAC.Roles = roles }})
		admin := Register(t, srv.URL, "boss", "boss-pw", true)
		setRoles := func(r RegisterResult, roles ...string) {
			t.Helper()
			resp := setRolesApproved(t, srv.URL, admin.AccessToken, r.UserID, roles...)
			if resp.Status != 200 {
				t.Fatalf("set roles %v: %d %s", roles, resp.Status, resp.Raw)
			}
		}
		owner := Register(t, srv.URL, "owner", "owner-pw", false)
		setRoles(owner, "everything")
		resp := raw(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", owner.AccessToken, map[string]any{"visibility": "public"})
		if resp.Status != 200 {
			t.Fatalf("public room: %d %s", resp.Status, resp.Raw)
		}
		publicRoom, _ = resp.Body["room_id"].(string)

		denied := map[perm.Permission]RegisterResult{}
		for _, p := range perm.All {
			u := Register(t, srv.URL, "no_"+string(p), "pw-"+string(p), false)
			setRoles(u, "no_"+string(p))
			denied[p] = u
		}
		checked := map[perm.Permission]int{}
		for _, rt := range srv.Client.Routes() {
			for _, p := range rt.Need.Possible() {
				req := request{body: map[string]any{}}
				if !slices.Contains(rt.Need.Fixed(), p) {
					fn := triggers[rt.Need.DynamicName()][p]
					if fn == nil {
						t.Errorf("%s %s: no request in this test that needs %s (%s)", rt.Method, rt.Path, p, rt.Need)
						continue
					}
					req = fn()
				}
				path := pathVar.ReplaceAllStringFunc(rt.Path, func(v string) string {
					name := pathVar.FindStringSubmatch(v)[1]
					val, ok := req.vars[name]
					if !ok {
						val, ok = defaults[name]
					}
					if !ok {
						val = "x"
					}
					return url.PathEscape(val)
				})
				target := srv.URL + path
				if req.query != "" {
					target += "?" + req.query
				}
				var body any = req.body
				if rt.Method == "GET" || rt.Method == "DELETE" {
					body = nil
				}
				resp := raw(t, rt.Method, target, denied[p].AccessToken, body)
				msg, _ := resp.Body["error"].(string)
				if resp.Status != http.StatusForbidden || resp.errcode() != "M_FORBIDDEN" || !strings.Contains(msg, string(p)) {
					t.Errorf("%s %s (%s) without %s: want 403 M_FORBIDDEN naming it, got %d %s", rt.Method, target, rt.Need, p, resp.Status, resp.Raw)
				}
				checked[p]++
			}
		}
		for _, p := range perm.All {
			if checked[p] == 0 {
				t.Errorf("no route checked for %s", p)
			}
		}
		t.Logf("refusals checked per permission: %v", checked)
	})
}
