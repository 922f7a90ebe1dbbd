package clientapi

import (
	"net/http"
	"strings"
	"testing"

	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/storage"
	"enclave/storage/storagetest"
)

// A row of the table without a requirement, or with one its kind of route
// cannot have, stops the API from being built.
func TestRouteRowsChecked(t *testing.T) {
	db := storagetest.Open(t, storage.SQLite)
	a, err := New(Options{ServerName: "test.local"}, db, &fakeRS{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	openH := func(*http.Request) httpapi.Response { return httpapi.JSON(200, nil) }
	authedH := func(*http.Request, *httpapi.Device) httpapi.Response { return httpapi.JSON(200, nil) }
	for _, c := range []struct {
		rt   route
		want string
	}{
		{route{method: "GET", path: "/a", authed: authedH}, "no permission requirement"},
		{route{method: "GET", path: "/b", open: openH}, "no permission requirement"},
		{route{method: "GET", path: "/c", need: perm.AnyUser, open: openH}, "takes no token"},
		{route{method: "GET", path: "/d", need: perm.Needs(perm.CreateRoom), open: openH}, "takes no token"},
		{route{method: "GET", path: "/e", need: perm.Public, authed: authedH}, "takes a token"},
		{route{method: "GET", path: "/f", need: perm.AnyUser}, "exactly one handler"},
		{route{method: "GET", path: "/_matrix/client/v3/sync", need: perm.AnyUser, authed: authedH}, "registered twice"},
	} {
		if err := a.add(c.rt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want an error saying %q", c.rt.method, c.rt.path, err, c.want)
		}
	}
	if perm.Needs().Valid() || perm.Dynamic("x", nil, nil).Valid() {
		t.Error("an empty requirement counts as a decision")
	}
}
