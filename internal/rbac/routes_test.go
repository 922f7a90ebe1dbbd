package rbac_test

import (
	"slices"
	"testing"

	"enclave/internal/perm"
	"enclave/storage"
	"enclave/test"
)

// Every permission guards at least one route of the assembled server, and
// the route table says what the best-known routes need.
func TestEveryPermissionIsRequiredSomewhere(t *testing.T) {
	srv := test.Start(t, storage.SQLite, test.Options{})
	routes := srv.Client.Routes()
	used := map[perm.Permission]bool{}
	need := map[string]perm.Requirement{}
	for _, r := range routes {
		for _, p := range r.Need.Possible() {
			used[p] = true
		}
		need[r.Method+" "+r.Path] = r.Need
	}
	for _, p := range perm.All {
		if !used[p] {
			t.Errorf("no route needs %s", p)
		}
	}
	for route, want := range map[string][]perm.Permission{
		"POST /_matrix/client/v3/createRoom":                      {perm.CreateRoom, perm.CreatePublicRoom, perm.InviteRemoteUsers, perm.Federate},
		"POST /_matrix/client/r0/rooms/{roomId}/invite":           {perm.InviteRemoteUsers, perm.Federate},
		"POST /_matrix/client/v3/rooms/{roomId}/upgrade":          {perm.CreateRoom, perm.CreatePublicRoom},
		"PUT /_matrix/client/v3/directory/list/room/{roomId}":     {perm.CreatePublicRoom},
		"PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}": {perm.CreatePublicRoom},
		"GET /_synapse/admin/v2/users/{userId}":                   {perm.UseAdminAPI, perm.ManageUsers},
		"GET /_synapse/admin/v1/server_version":                   {perm.UseAdminAPI},
		"PUT /_enclave/admin/v1/users/{userId}/roles":             {perm.UseAdminAPI, perm.ManageRoles},
		"GET /_enclave/audit/v1/export":                           {perm.ExportAudit},
		"GET /_enclave/audit/v1/entries":                          {perm.ReadAudit},
		"POST /_matrix/media/v3/upload":                           {perm.UploadMedia},
		"GET /_matrix/client/v3/sync":                             nil,
	} {
		q, ok := need[route]
		if !ok {
			t.Errorf("%s: not registered", route)
			continue
		}
		if got := q.Possible(); !slices.Equal(got, want) {
			t.Errorf("%s needs %v, want %v", route, got, want)
		}
	}
	if q := need["GET /_matrix/client/v3/sync"]; q.String() != "any user" {
		t.Errorf("sync: %s, want any user", q)
	}
	if q := need["POST /_matrix/client/v3/login"]; !q.IsPublic() {
		t.Errorf("login: %s, want public", q)
	}
}
