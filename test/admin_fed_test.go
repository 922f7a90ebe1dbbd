package test

import (
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"enclave/storage"
)

// TestAdminFederationDestinations: synapse-admin's Federation page against
// two Enclaves (SQLite and PostgreSQL). A lists B as a destination with
// the room they share; with B down, A's queue backs off and the
// destination shows its failure and retry interval; reset_connection
// makes A retry at once (a new attempt well inside the backoff) and is
// audited.
func TestAdminFederationDestinations(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	a, b := c.Nodes[0], c.Nodes[1]
	c.StartAll()
	ctx := ctxT(t)
	admin := Register(t, a.URL, "root", "root-pw", true)
	alice := sessionClient(t, a.URL, Register(t, a.URL, "alice", "pw", false))
	bob := sessionClient(t, b.URL, Register(t, b.URL, "bob", "pw", false))
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	fedJoin(t, bob, room.RoomID, a)
	s1 := a.URL + "/_synapse/admin/v1/federation/destinations"
	tok := admin.AccessToken
	dest := func() map[string]any {
		t.Helper()
		return mustOK(t, "destination", raw(t, "GET", s1+"/"+b.ServerName, tok, nil)).Body
	}

	list := mustOK(t, "destinations", raw(t, "GET", s1+"?from=0&limit=10&order_by=destination&dir=f", tok, nil))
	ds, _ := list.Body["destinations"].([]any)
	if list.Body["total"] != float64(1) || len(ds) != 1 {
		t.Fatalf("destinations: %s", list.Raw)
	}
	wantKeys(t, "destination", ds[0].(map[string]any), map[string]string{"destination": "string", "retry_last_ts": "number",
		"retry_interval": "number", "failure_ts": "number|null", "last_successful_stream_ordering": "number|null"})
	if ds[0].(map[string]any)["destination"] != b.ServerName {
		t.Fatalf("destination: %s", list.Raw)
	}
	if f := mustOK(t, "filter", raw(t, "GET", s1+"?destination=nowhere", tok, nil)); f.Body["total"] != float64(0) {
		t.Fatalf("filter: %s", f.Raw)
	}
	rooms := mustOK(t, "rooms", raw(t, "GET", s1+"/"+b.ServerName+"/rooms", tok, nil))
	if rs, _ := rooms.Body["rooms"].([]any); rooms.Body["total"] != float64(1) || len(rs) != 1 || rs[0].(map[string]any)["room_id"] != string(room.RoomID) ||
		rs[0].(map[string]any)["stream_ordering"] == nil {
		t.Fatalf("rooms: %s", rooms.Raw)
	}
	raw(t, "GET", s1+"/nowhere.example", tok, nil).wantErr(t, "unknown destination", 404, "M_NOT_FOUND")
	raw(t, "GET", s1, alice.AccessToken, nil).wantErr(t, "non-admin", 403, "M_FORBIDDEN")

	// B goes down: A's sends to it fail and back off.
	b.Stop()
	if _, err := alice.SendText(ctx, room.RoomID, "are you there?"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a backoff of 2s or more", 30*time.Second, func() bool {
		d := dest()
		iv, _ := d["retry_interval"].(float64)
		return d["failure_ts"] != nil && iv >= 2000
	})
	before := dest()
	resetAt := float64(time.Now().UnixMilli())
	mustOK(t, "reset", raw(t, "POST", s1+"/"+b.ServerName+"/reset_connection", tok, map[string]any{}))
	// The next attempt comes at once, not after the (≥ 1 s) backoff.
	waitFor(t, "an attempt right after the reset", 900*time.Millisecond, func() bool {
		last, _ := dest()["retry_last_ts"].(float64)
		return last >= resetAt
	})
	if before["retry_last_ts"].(float64) >= resetAt {
		t.Fatalf("attempt before the reset already: %v", before)
	}
	raw(t, "POST", s1+"/nowhere.example/reset_connection", tok, map[string]any{}).wantErr(t, "unknown destination", 404, "M_NOT_FOUND")
	findAudit(t, auditRows(t, a.Server), "admin.federation_reset", func(r *storage.AuditRow) bool { return r.Target == b.ServerName })
}
