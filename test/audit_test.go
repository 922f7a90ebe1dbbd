package test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"enclave/auditapi"
	"enclave/config"
	"enclave/storage"
)

// ---- helpers -------------------------------------------------------------

// auditRows flushes the server's audit log and returns every sealed row.
func auditRows(t testing.TB, srv *Server) []*storage.AuditRow {
	t.Helper()
	ctx := context.Background()
	if err := srv.Audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := storage.ListAuditRows(ctx, srv.DB, storage.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func details(t testing.TB, r *storage.AuditRow) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.Details), &m); err != nil {
		t.Fatalf("details of %d: %v", r.N, err)
	}
	return m
}

// findAudit returns the last entry with this action matching match.
func findAudit(t testing.TB, rows []*storage.AuditRow, action string, match func(r *storage.AuditRow) bool) *storage.AuditRow {
	t.Helper()
	for i := len(rows) - 1; i >= 0; i-- {
		if rows[i].Action == action && (match == nil || match(rows[i])) {
			return rows[i]
		}
	}
	var seen []string
	for _, r := range rows {
		seen = append(seen, r.Action+"("+r.Target+")")
	}
	t.Fatalf("no %s entry; log has %s", action, strings.Join(seen, ", "))
	return nil
}

func target(s string) func(*storage.AuditRow) bool {
	return func(r *storage.AuditRow) bool { return r.Target == s }
}

func cs(base string) string { return base + "/_matrix/client/v3" }

// uiaPost runs a request that needs m.login.password UIA.
func uiaPost(t testing.TB, url, token, userID, password string, body map[string]any) rawResp {
	t.Helper()
	first := raw(t, "POST", url, token, body)
	if first.Status != http.StatusUnauthorized {
		return first
	}
	with := map[string]any{}
	for k, v := range body {
		with[k] = v
	}
	with["auth"] = map[string]any{"type": "m.login.password", "session": first.Body["session"],
		"identifier": map[string]any{"type": "m.id.user", "user": userID}, "password": password}
	return raw(t, "POST", url, token, with)
}

func mustOK(t testing.TB, what string, r rawResp) rawResp {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("%s: %d %s", what, r.Status, r.Raw)
	}
	return r
}

// ---- tests ---------------------------------------------------------------

// Account group: registration, login success and failure, password
// change, device addition and removal, logout, deactivation.
func TestAuditAccountActions(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		carol := registerClient(t, srv.URL, "carol", "carol-pass-1")
		uid := carol.UserID.String()
		loginCli := loginClient(t, srv.URL, "carol", "carol-pass-1")
		bad := raw(t, "POST", cs(srv.URL)+"/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "carol"}, "password": "wrong"})
		bad.wantErr(t, "bad login", 403, "M_FORBIDDEN")
		mustOK(t, "logout", raw(t, "POST", cs(srv.URL)+"/logout", loginCli.AccessToken, map[string]any{}))
		third := loginClient(t, srv.URL, "carol", "carol-pass-1")
		mustOK(t, "password", uiaPost(t, cs(srv.URL)+"/account/password", carol.AccessToken, uid, "carol-pass-1", map[string]any{"new_password": "carol-pass-2"}))
		fourth := loginClient(t, srv.URL, "carol", "carol-pass-2")
		mustOK(t, "logout all", raw(t, "POST", cs(srv.URL)+"/logout/all", fourth.AccessToken, map[string]any{}))
		dave := registerClient(t, srv.URL, "dave", "dave-pass-1")
		mustOK(t, "deactivate", uiaPost(t, cs(srv.URL)+"/account/deactivate", dave.AccessToken, dave.UserID.String(), "dave-pass-1", map[string]any{}))

		rows := auditRows(t, srv)
		reg := findAudit(t, rows, auditapi.ActionRegister, target(uid))
		if details(t, reg)["kind"] != "user" || reg.ActorUser != uid || reg.ActorIP != "127.0.0.1" {
			t.Fatalf("register entry %+v", reg)
		}
		ok := findAudit(t, rows, auditapi.ActionLogin, func(r *storage.AuditRow) bool { return r.ActorDevice == loginCli.DeviceID.String() })
		if ok.Outcome != auditapi.OutcomeSuccess || ok.ActorIP != "127.0.0.1" || ok.ActorUA == "" {
			t.Fatalf("login entry %+v", ok)
		}
		fail := findAudit(t, rows, auditapi.ActionLogin, func(r *storage.AuditRow) bool { return r.Outcome == auditapi.OutcomeFailure })
		if fail.ActorUser != uid || details(t, fail)["reason"] != "invalid_credentials" || strings.Contains(fail.Details, "wrong") {
			t.Fatalf("failed login entry %+v", fail)
		}
		findAudit(t, rows, auditapi.ActionDeviceAdd, target(third.DeviceID.String()))
		findAudit(t, rows, auditapi.ActionLogout, target(loginCli.DeviceID.String()))
		findAudit(t, rows, auditapi.ActionDeviceRemove, target(loginCli.DeviceID.String()))
		pw := findAudit(t, rows, auditapi.ActionPasswordChange, target(uid))
		if pw.ActorDevice != carol.DeviceID.String() || strings.Contains(pw.Details, "carol-pass") {
			t.Fatalf("password entry %+v", pw)
		}
		// The password change logged out the other sessions, one by one.
		findAudit(t, rows, auditapi.ActionDeviceRemove, func(r *storage.AuditRow) bool {
			return r.Target == third.DeviceID.String() && details(t, r)["reason"] == "password_change"
		})
		all := findAudit(t, rows, auditapi.ActionLogout, target(fourth.DeviceID.String()))
		if details(t, all)["all"] != true {
			t.Fatalf("logout/all entry %+v", all)
		}
		findAudit(t, rows, auditapi.ActionDeactivate, target(dave.UserID.String()))
		// Nothing recorded a password or token.
		for _, r := range rows {
			for _, secret := range []string{"carol-pass", "dave-pass", carol.AccessToken, "enc_at_"} {
				if strings.Contains(r.Details, secret) || strings.Contains(r.Target, secret) {
					t.Fatalf("entry %d leaks a secret: %+v", r.N, r)
				}
			}
		}
	})
}

// Room group: creation, invite, join, leave, kick, ban, unban, power
// levels, other state, messages (plain and encrypted: hash only),
// redactions.
func TestAuditRoomActions(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		carol := Register(t, srv.URL, "carol", "carol-pw", false)
		base := cs(srv.URL)
		room := mustOK(t, "create", raw(t, "POST", base+"/createRoom", alice.AccessToken, map[string]any{"name": "Audit room"})).Body["room_id"].(string)
		rp := base + "/rooms/" + url.PathEscape(room)
		invite := func(who RegisterResult) {
			mustOK(t, "invite", raw(t, "POST", rp+"/invite", alice.AccessToken, map[string]any{"user_id": who.UserID}))
			mustOK(t, "join", raw(t, "POST", rp+"/join", who.AccessToken, map[string]any{}))
		}
		invite(bob)
		invite(carol)
		mustOK(t, "leave", raw(t, "POST", rp+"/leave", carol.AccessToken, map[string]any{}))
		plain := map[string]any{"msgtype": "m.text", "body": "the secret plan"}
		sent := mustOK(t, "send", raw(t, "PUT", rp+"/send/m.room.message/t1", bob.AccessToken, plain)).Body["event_id"].(string)
		enc := map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEpABqOCAKLMNOPciphertextXYZ", "sender_key": "sk", "session_id": "sess", "device_id": bob.DeviceID}
		encID := mustOK(t, "send encrypted", raw(t, "PUT", rp+"/send/m.room.encrypted/t2", bob.AccessToken, enc)).Body["event_id"].(string)
		mustOK(t, "topic", raw(t, "PUT", rp+"/state/m.room.topic", alice.AccessToken, map[string]any{"topic": "t"}))
		mustOK(t, "power levels", raw(t, "PUT", rp+"/state/m.room.power_levels", alice.AccessToken, map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 50}}))
		mustOK(t, "redact", raw(t, "PUT", rp+"/redact/"+url.PathEscape(sent)+"/t3", alice.AccessToken, map[string]any{}))
		mustOK(t, "kick", raw(t, "POST", rp+"/kick", alice.AccessToken, map[string]any{"user_id": bob.UserID}))
		mustOK(t, "ban", raw(t, "POST", rp+"/ban", alice.AccessToken, map[string]any{"user_id": bob.UserID}))
		mustOK(t, "unban", raw(t, "POST", rp+"/unban", alice.AccessToken, map[string]any{"user_id": bob.UserID}))

		rows := auditRows(t, srv)
		inRoom := func(r *storage.AuditRow) bool { return r.RoomID == room }
		create := findAudit(t, rows, auditapi.ActionRoomCreate, inRoom)
		if create.ActorUser != alice.UserID || create.ActorDevice != alice.DeviceID || create.ActorIP != "127.0.0.1" {
			t.Fatalf("create entry %+v", create)
		}
		findAudit(t, rows, auditapi.ActionInvite, target(bob.UserID))
		join := findAudit(t, rows, auditapi.ActionJoin, target(bob.UserID))
		if join.ActorUser != bob.UserID {
			t.Fatalf("join entry %+v", join)
		}
		findAudit(t, rows, auditapi.ActionLeave, target(carol.UserID))
		kick := findAudit(t, rows, auditapi.ActionKick, target(bob.UserID))
		if kick.ActorUser != alice.UserID {
			t.Fatalf("kick entry %+v", kick)
		}
		findAudit(t, rows, auditapi.ActionBan, target(bob.UserID))
		findAudit(t, rows, auditapi.ActionUnban, target(bob.UserID))
		pl := findAudit(t, rows, auditapi.ActionPowerLevels, func(r *storage.AuditRow) bool { return strings.Contains(r.Details, `"@bob:localhost":50`) })
		if pl.ActorUser != alice.UserID {
			t.Fatalf("power levels entry %+v", pl)
		}
		findAudit(t, rows, auditapi.ActionRoomState, target("m.room.topic|"))
		findAudit(t, rows, auditapi.ActionRoomState, target("m.room.name|"))
		findAudit(t, rows, auditapi.ActionRedaction, target(sent))

		// Messages: ID, room, sender, type, size and content hash; never content.
		canon := func(v map[string]any) string {
			b, _ := json.Marshal(v) // sorted keys, compact: the canonical form of these objects
			return string(b)
		}
		for _, m := range []struct {
			id      string
			typ     string
			content map[string]any
		}{{sent, "m.room.message", plain}, {encID, "m.room.encrypted", enc}} {
			e := findAudit(t, rows, auditapi.ActionMessage, target(m.id))
			dt := details(t, e)
			sum := sha256.Sum256([]byte(canon(m.content)))
			if e.RoomID != room || e.ActorUser != bob.UserID || e.ActorDevice != bob.DeviceID || dt["type"] != m.typ ||
				dt["content_sha256"] != hex.EncodeToString(sum[:]) || int(dt["size"].(float64)) != len(canon(m.content)) {
				t.Fatalf("message entry %+v", e)
			}
		}
		for _, r := range rows {
			row := fmt.Sprintf("%+v", *r)
			if strings.Contains(row, "secret plan") || strings.Contains(row, "ciphertextXYZ") {
				t.Fatalf("entry %d holds message content: %s", r.N, row)
			}
		}
	})
}

// Administration, the audit trail itself, media, and the server: admin
// API calls, role changes, denials, exports and verifications, media
// upload and download, config reloads, start and stop.
func TestAuditAdminMediaServerActions(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		admin := Register(t, srv.URL, "root", "root-pw", true)
		aud := Register(t, srv.URL, "auditor1", "aud-pw", false)
		mustOK(t, "list users", raw(t, "GET", srv.URL+"/_synapse/admin/v2/users", admin.AccessToken, nil))
		mustOK(t, "grant auditor", setRolesApproved(t, srv.URL, admin.AccessToken, aud.UserID, "auditor"))
		raw(t, "GET", srv.URL+"/_enclave/audit/v1/entries", admin.AccessToken, nil).wantErr(t, "admin reads audit", 403, "M_FORBIDDEN")
		entries := mustOK(t, "auditor reads", raw(t, "GET", srv.URL+"/_enclave/audit/v1/entries?action=rbac.*", aud.AccessToken, nil))
		if list, _ := entries.Body["entries"].([]any); len(list) < 2 {
			t.Fatalf("auditor listing: %s", entries.Raw)
		}
		ver := mustOK(t, "verify", raw(t, "POST", srv.URL+"/_enclave/audit/v1/verify", aud.AccessToken, map[string]any{}))
		if ver.Body["ok"] != true || ver.Body["anchored"] != true {
			t.Fatalf("verify: %s", ver.Raw)
		}
		exp := raw(t, "GET", srv.URL+"/_enclave/audit/v1/export?format=jsonl", aud.AccessToken, nil)
		if exp.Status != 200 || !strings.HasPrefix(string(exp.Raw), `{"format":"enclave-audit-export"`) {
			t.Fatalf("export: %d %.200s", exp.Status, exp.Raw)
		}
		_, auditPub := srv.Audit.PublicKey()
		if res, _, err := auditapi.VerifyExport(strings.NewReader(string(exp.Raw)), auditPub, nil); err != nil || !res.OK() {
			t.Fatalf("offline verification of the HTTP export: %v %s", err, res)
		}
		// Media.
		up := raw(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename=a.txt", admin.AccessToken, "not a secret file")
		if up.Status != 200 {
			t.Fatalf("upload: %d %s", up.Status, up.Raw)
		}
		mxc := up.Body["content_uri"].(string)
		mediaID := mxc[strings.LastIndex(mxc, "/")+1:]
		if dl := raw(t, "GET", srv.URL+"/_matrix/client/v1/media/download/localhost/"+mediaID, admin.AccessToken, nil); dl.Status != 200 {
			t.Fatalf("download: %d", dl.Status)
		}
		srv.ConfigReloaded("/etc/enclave.yaml", nil)

		rows := auditRows(t, srv)
		if rows[0].Action != auditapi.ActionServerStart || rows[0].N != 1 {
			t.Fatalf("first entry %+v", rows[0])
		}
		call := findAudit(t, rows, auditapi.ActionAdminCall, target("/_synapse/admin/v2/users"))
		if call.ActorUser != admin.UserID || details(t, call)["status"] != float64(200) {
			t.Fatalf("admin call %+v", call)
		}
		// auditor is granted by a second admin (the two-person rule): the
		// request is the first admin's, the change the approver's.
		findAudit(t, rows, auditapi.ActionRoleGrant, func(r *storage.AuditRow) bool {
			return r.Target == aud.UserID && r.ActorUser == admin.UserID && strings.Contains(r.Details, `"op":"requested"`)
		})
		rc := findAudit(t, rows, auditapi.ActionRoleChange, target(aud.UserID))
		if rc.ActorUser == admin.UserID || !strings.HasPrefix(rc.ActorUser, "@approver-") || !strings.Contains(rc.Details, `"to":["auditor"]`) {
			t.Fatalf("role change %+v", rc)
		}
		den := findAudit(t, rows, auditapi.ActionAccessDenied, func(r *storage.AuditRow) bool { return r.ActorUser == admin.UserID })
		if den.Outcome != auditapi.OutcomeDenied || details(t, den)["permission"] != "read_audit" {
			t.Fatalf("denial %+v", den)
		}
		findAudit(t, rows, auditapi.ActionAuditVerify, func(r *storage.AuditRow) bool { return r.ActorUser == aud.UserID })
		findAudit(t, rows, auditapi.ActionAuditExport, func(r *storage.AuditRow) bool { return r.ActorUser == aud.UserID })
		upl := findAudit(t, rows, auditapi.ActionMediaUpload, target(mediaID))
		sum := sha256.Sum256([]byte("not a secret file"))
		if upl.ActorUser != admin.UserID || details(t, upl)["sha256"] != hex.EncodeToString(sum[:]) {
			t.Fatalf("upload entry %+v", upl)
		}
		findAudit(t, rows, auditapi.ActionMediaDownload, target(mediaID))
		findAudit(t, rows, auditapi.ActionConfigLoad, nil)

		// Stop: a server.stop entry, then a final checkpoint.
		dburl := srv.DBURL
		srv.Stop()
		store, err := storage.Open(context.Background(), dburl, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		head, _, err := storage.AuditHead(context.Background(), store)
		if err != nil || head.Kind != auditapi.KindCheckpoint {
			t.Fatalf("last row after stop: %+v %v", head, err)
		}
		stop, err := storage.AuditRowAt(context.Background(), store, head.N-1)
		if err != nil || stop.Action != auditapi.ActionServerStop {
			t.Fatalf("entry before the final checkpoint: %+v %v", stop, err)
		}
	})
}

// noSecretsIn fails if any row's target or details holds one of secrets.
func noSecretsIn(t testing.TB, rows []*storage.AuditRow, secrets ...string) {
	t.Helper()
	for _, r := range rows {
		for _, sec := range secrets {
			if sec != "" && (strings.Contains(r.Details, sec) || strings.Contains(r.Target, sec)) {
				t.Fatalf("entry %d (%s) holds secret material %q: %s", r.N, r.Action, sec, r.Details)
			}
		}
	}
}

// Device rename: recorded with the device, never the new name.
func TestAuditDeviceRename(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		const name = "Alice's private laptop"
		mustOK(t, "rename", raw(t, "PUT", cs(srv.URL)+"/devices/"+alice.DeviceID, alice.AccessToken, map[string]any{"display_name": name}))
		rows := auditRows(t, srv)
		e := findAudit(t, rows, auditapi.ActionDeviceUpdate, target(alice.DeviceID))
		if e.ActorUser != alice.UserID || e.ActorDevice != alice.DeviceID || e.ActorIP != "127.0.0.1" {
			t.Fatalf("rename entry %+v", e)
		}
		noSecretsIn(t, rows, name, alice.AccessToken)
	})
}

// Cross-signing keys and signatures: key types and counts, no signatures
// or private keys.
func TestAuditCrossSigning(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		base := cs(srv.URL)
		x := newE2EERaw(Register(t, srv.URL, "xs", "xs-pw", false))
		mustOK(t, "device keys", e2eeUpload(t, srv.URL, x, map[string]any{"device_keys": x.deviceKeys()}))
		newKey := func() (string, ed25519.PrivateKey) {
			pub, priv, _ := ed25519.GenerateKey(nil)
			return e2eeB64.EncodeToString(pub), priv
		}
		xsKey := func(usage, pub string) map[string]any {
			return map[string]any{"user_id": x.userID, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
		}
		mPub, mPriv := newKey()
		sPub, sPriv := newKey()
		uPub, uPriv := newKey()
		self := e2eeSign(xsKey("self_signing", sPub), x.userID, "ed25519:"+mPub, mPriv)
		user := e2eeSign(xsKey("user_signing", uPub), x.userID, "ed25519:"+mPub, mPriv)
		mustOK(t, "device_signing", raw(t, "POST", base+"/keys/device_signing/upload", x.token,
			map[string]any{"master_key": xsKey("master", mPub), "self_signing_key": self, "user_signing_key": user}))
		q := mustOK(t, "query", raw(t, "POST", base+"/keys/query", x.token, map[string]any{"device_keys": map[string]any{x.userID: []string{}}}))
		stored := q.Body["device_keys"].(map[string]any)[x.userID].(map[string]any)[x.deviceID].(map[string]any)
		delete(stored, "unsigned")
		signed := e2eeSign(stored, x.userID, "ed25519:"+sPub, sPriv)
		sig := signed["signatures"].(map[string]any)[x.userID].(map[string]any)["ed25519:"+sPub].(string)
		up := mustOK(t, "signatures", raw(t, "POST", base+"/keys/signatures/upload", x.token, map[string]any{x.userID: map[string]any{x.deviceID: signed}}))
		if f := up.Body["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("signature upload failures: %s", up.Raw)
		}

		rows := auditRows(t, srv)
		xs := findAudit(t, rows, auditapi.ActionCrossSigning, target(x.userID))
		keys, _ := details(t, xs)["keys"].([]any)
		if xs.ActorUser != x.userID || xs.ActorDevice != x.deviceID || len(keys) != 3 ||
			!strings.Contains(xs.Details, `"master"`) || !strings.Contains(xs.Details, `"self_signing"`) || !strings.Contains(xs.Details, `"user_signing"`) {
			t.Fatalf("cross-signing entry %+v", xs)
		}
		sg := findAudit(t, rows, auditapi.ActionSignatures, target(x.userID))
		if dt := details(t, sg); sg.ActorDevice != x.deviceID || dt["count"] != float64(1) || dt["devices"] != float64(1) {
			t.Fatalf("signatures entry %+v", sg)
		}
		secrets := []string{sig, x.token}
		for _, k := range []ed25519.PrivateKey{mPriv, sPriv, uPriv, x.priv} {
			secrets = append(secrets, e2eeB64.EncodeToString(k), e2eeB64.EncodeToString(k.Seed()))
		}
		for _, k := range []map[string]any{self, user} {
			for _, s := range k["signatures"].(map[string]any)[x.userID].(map[string]any) {
				secrets = append(secrets, s.(string))
			}
		}
		noSecretsIn(t, rows, secrets...)
	})
}

// Key backup: version create/update/delete and room-key uploads and
// deletions, with versions and counts; never auth_data or session data.
func TestAuditKeyBackup(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		base := cs(srv.URL)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
		c := mustOK(t, "create", raw(t, "POST", base+"/room_keys/version", bob.AccessToken, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "BackupPublicKeyMarker"}}))
		if c.Body["version"] != "1" {
			t.Fatalf("create: %s", c.Raw)
		}
		key := func(data string) map[string]any {
			return map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false,
				"session_data": map[string]any{"ephemeral": "E", "ciphertext": data, "mac": "M"}}
		}
		mustOK(t, "put keys", raw(t, "PUT", base+"/room_keys/keys/!r:localhost?version=1", bob.AccessToken,
			map[string]any{"sessions": map[string]any{"s1": key("SessionCiphertextOne"), "s2": key("SessionCiphertextTwo")}}))
		mustOK(t, "delete key", raw(t, "DELETE", base+"/room_keys/keys/!r:localhost/s2?version=1", bob.AccessToken, nil))
		mustOK(t, "update", raw(t, "PUT", base+"/room_keys/version/1", bob.AccessToken, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "BackupPublicKeyMarker2"}}))
		mustOK(t, "delete version", raw(t, "DELETE", base+"/room_keys/version/1", bob.AccessToken, nil))

		rows := auditRows(t, srv)
		op := func(action, op string) *storage.AuditRow {
			t.Helper()
			e := findAudit(t, rows, action, func(r *storage.AuditRow) bool { return details(t, r)["op"] == op })
			if e.Target != bob.UserID || e.ActorUser != bob.UserID || e.ActorDevice != bob.DeviceID || details(t, e)["version"] != "1" {
				t.Fatalf("%s %s entry %+v", action, op, e)
			}
			return e
		}
		if cr := op(auditapi.ActionKeyBackup, "create"); details(t, cr)["algorithm"] != alg {
			t.Fatalf("create entry %+v", cr)
		}
		op(auditapi.ActionKeyBackup, "update")
		op(auditapi.ActionKeyBackup, "delete")
		if put := op(auditapi.ActionKeyBackupKeys, "put"); details(t, put)["count"] != float64(2) {
			t.Fatalf("keys put entry %+v", put)
		}
		if del := op(auditapi.ActionKeyBackupKeys, "delete"); details(t, del)["count"] != float64(1) {
			t.Fatalf("keys delete entry %+v", del)
		}
		noSecretsIn(t, rows, "BackupPublicKeyMarker", "SessionCiphertext", bob.AccessToken)
	})
}

// Device key upload: one entry per upload with counts, not the keys; an
// empty upload (reading the counts) records nothing.
func TestAuditDeviceKeysUpload(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		u := newE2EERaw(Register(t, srv.URL, "carol", "carol-pw", false))
		dk := u.deviceKeys()
		otks := map[string]any{}
		for i := range 3 {
			otks[fmt.Sprintf("signed_curve25519:K%d", i)] = u.otk(false)
		}
		fb := u.otk(true)
		mustOK(t, "upload", e2eeUpload(t, srv.URL, u, map[string]any{"device_keys": dk, "one_time_keys": otks, "fallback_keys": map[string]any{"signed_curve25519:FB": fb}}))
		mustOK(t, "count-only upload", e2eeUpload(t, srv.URL, u, map[string]any{}))

		rows := auditRows(t, srv)
		var mine []*storage.AuditRow
		for _, r := range rows {
			if r.Action == auditapi.ActionDeviceKeys && r.Target == u.deviceID {
				mine = append(mine, r)
			}
		}
		if len(mine) != 1 {
			t.Fatalf("%d device-key upload entries, want 1", len(mine))
		}
		e, dt := mine[0], details(t, mine[0])
		if e.ActorUser != u.userID || e.ActorDevice != u.deviceID || dt["device_keys"] != true || dt["one_time_keys"] != float64(3) || dt["fallback_keys"] != float64(1) {
			t.Fatalf("device keys entry %+v", e)
		}
		secrets := []string{e2eeB64.EncodeToString(u.priv.Seed()), fb["key"].(string)}
		for _, k := range dk["keys"].(map[string]string) {
			secrets = append(secrets, k)
		}
		for _, o := range otks {
			secrets = append(secrets, o.(map[string]any)["key"].(string))
		}
		noSecretsIn(t, rows, secrets...)
	})
}

// Media uploads (direct and to a created ID) and administrative changes
// are recorded in the transactions that store them: size and hash, never
// content, file name or content type.
func TestAuditMediaUpload(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := newMediaClient(t, srv, "alice")
		const content, later = "media content marker", "late media content marker"
		_, id := alice.mustUpload([]byte(content), "text/x-secret-type", "secret-file-name.txt")
		cr := alice.do("POST", "/_matrix/media/v1/create", alice.token, strings.NewReader("{}"), 2, map[string]string{"Content-Type": "application/json"})
		var created struct {
			URI string `json:"content_uri"`
		}
		if cr.Status != 200 || json.Unmarshal(cr.Body, &created) != nil {
			t.Fatalf("create: %d %s", cr.Status, cr.Body)
		}
		lateID := created.URI[strings.LastIndex(created.URI, "/")+1:]
		if res := alice.do("PUT", "/_matrix/media/v3/upload/localhost/"+lateID+"?filename=late-name.bin", alice.token, strings.NewReader(later), int64(len(later)), nil); res.Status != 200 {
			t.Fatalf("upload to created ID: %d %s", res.Status, res.Body)
		}
		if err := srv.Media.QuarantineMedia(context.Background(), "localhost", lateID); err != nil {
			t.Fatal(err)
		}

		rows := auditRows(t, srv)
		for _, m := range []struct{ id, content string }{{id, content}, {lateID, later}} {
			e := findAudit(t, rows, auditapi.ActionMediaUpload, target(m.id))
			sum := sha256.Sum256([]byte(m.content))
			if dt := details(t, e); e.ActorUser != "@alice:localhost" || e.ActorIP != "127.0.0.1" || dt["sha256"] != hex.EncodeToString(sum[:]) || dt["size"] != float64(len(m.content)) {
				t.Fatalf("upload entry %+v", e)
			}
			if n := len(auditMatching(rows, auditapi.ActionMediaUpload, m.id)); n != 1 {
				t.Fatalf("%d upload entries for %s, want 1", n, m.id)
			}
		}
		findAudit(t, rows, auditapi.ActionMediaAdmin, func(r *storage.AuditRow) bool { return r.Target == lateID && details(t, r)["op"] == "quarantine" })
		noSecretsIn(t, rows, "content marker", "secret-file-name", "late-name", "x-secret-type", alice.token)
	})
}

// auditMatching lists the entries with this action and target.
func auditMatching(rows []*storage.AuditRow, action, tgt string) []*storage.AuditRow {
	var out []*storage.AuditRow
	for _, r := range rows {
		if r.Action == action && r.Target == tgt {
			out = append(out, r)
		}
	}
	return out
}

// An action whose audit record cannot be written does not happen.
func TestAuditWriteFailureFailsAction(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		base := cs(srv.URL)
		room := mustOK(t, "create", raw(t, "POST", base+"/createRoom", alice.AccessToken, map[string]any{})).Body["room_id"].(string)
		rp := base + "/rooms/" + url.PathEscape(room)
		ctx := context.Background()
		countEvents := func() int {
			var n int
			if err := srv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE room_id = $1`, room).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		countDevices := func() int {
			var n int
			if err := srv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE user_id = $1`, alice.UserID).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		count := func(q string) int {
			t.Helper()
			var n int
			if err := srv.DB.QueryRowContext(ctx, q, alice.UserID).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		const mediaRows, backups = `SELECT COUNT(*) FROM media WHERE user_id = $1`, `SELECT COUNT(*) FROM e2ee_backup_versions WHERE user_id = $1`
		mediaDir := filepath.Join(srv.DataDir, "media")
		events, devices, media, blobs := countEvents(), countDevices(), count(mediaRows), len(mediaBlobFiles(t, mediaDir))
		if _, err := srv.DB.ExecContext(ctx, `ALTER TABLE audit_log RENAME TO audit_log_away`); err != nil {
			t.Fatal(err)
		}
		raw(t, "PUT", rp+"/send/m.room.message/f1", alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "x"}).wantErr(t, "send", 500, "M_UNKNOWN")
		raw(t, "POST", base+"/createRoom", alice.AccessToken, map[string]any{}).wantErr(t, "createRoom", 500, "M_UNKNOWN")
		raw(t, "POST", base+"/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "alice-pw"}).wantErr(t, "login", 500, "M_UNKNOWN")
		raw(t, "POST", base+"/logout", alice.AccessToken, map[string]any{}).wantErr(t, "logout", 500, "M_UNKNOWN")
		raw(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename=f.txt", alice.AccessToken, "unrecorded upload").wantErr(t, "media upload", 500, "M_UNKNOWN")
		raw(t, "POST", base+"/room_keys/version", alice.AccessToken, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "k"}}).wantErr(t, "key backup create", 500, "M_UNKNOWN")
		if e, dv := countEvents(), countDevices(); e != events || dv != devices {
			t.Fatalf("actions happened without their records: events %d→%d, devices %d→%d", events, e, devices, dv)
		}
		if m, b, bk := count(mediaRows), len(mediaBlobFiles(t, mediaDir)), count(backups); m != media || b != blobs || bk != 0 {
			t.Fatalf("media or a key backup was stored without its record: media rows %d→%d, blobs %d→%d, backups %d", media, m, blobs, b, bk)
		}
		var rooms int
		_ = srv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM rooms`).Scan(&rooms)
		if rooms != 1 {
			t.Fatalf("a room was created without its record (%d rooms)", rooms)
		}
		if _, err := srv.DB.ExecContext(ctx, `ALTER TABLE audit_log_away RENAME TO audit_log`); err != nil {
			t.Fatal(err)
		}
		mustOK(t, "send after repair", raw(t, "PUT", rp+"/send/m.room.message/f2", alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "y"}))
		mustOK(t, "media upload after repair", raw(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename=f.txt", alice.AccessToken, "recorded upload"))
		if c := mustOK(t, "key backup after repair", raw(t, "POST", base+"/room_keys/version", alice.AccessToken, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "k"}})); c.Body["version"] != "1" {
			t.Fatalf("key backup after repair: %s", c.Raw)
		}
		mustOK(t, "logout after repair", raw(t, "POST", base+"/logout", alice.AccessToken, map[string]any{}))
		auditRows(t, srv)
		keyID, pub := srv.Audit.PublicKey()
		res, err := auditapi.VerifyStore(ctx, srv.DB, keyID, pub, nil)
		if err != nil || !res.OK() {
			t.Fatalf("chain after the outage: %v %s", err, res)
		}
	})
}

// Verification passes on an untouched log (across a restart) and
// pinpoints rows edited, deleted or reordered in the database, and a
// truncated tail against the exported head.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dataDir := t.TempDir()
		opts := Options{DataDir: dataDir, Configure: func(c *config.Config) {
			c.Audit.CheckpointEvery = 5
			c.Audit.HeadExportPath = filepath.Join(dataDir, "audit-head.json")
		}}
		srv := Start(t, d, opts)
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		room := mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", alice.AccessToken, map[string]any{})).Body["room_id"].(string)
		for i := range 6 {
			mustOK(t, "send", raw(t, "PUT", cs(srv.URL)+"/rooms/"+url.PathEscape(room)+"/send/m.room.message/m"+fmt.Sprint(i), alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "hi"}))
		}
		opts.DBURL = srv.DBURL
		// Checkpoints are signed with the audit key, not the federation key.
		keyID, pub := srv.Audit.PublicKey()
		if keyID == srv.KeyID || pub.Equal(srv.Key.Public()) {
			t.Fatalf("the audit log is signed with the federation key %s", srv.KeyID)
		}
		srv.Stop()
		// Restart: the chain carries on where it ended.
		srv = Start(t, d, opts)
		mustOK(t, "logout after restart", raw(t, "POST", cs(srv.URL)+"/logout", alice.AccessToken, map[string]any{}))
		srv.Stop()

		ctx := context.Background()
		db, err := storage.Open(ctx, opts.DBURL, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		head, err := auditapi.ReadHead(filepath.Join(dataDir, "audit-head.json"))
		if err != nil {
			t.Fatal(err)
		}
		verify := func() *auditapi.Result {
			t.Helper()
			res, err := auditapi.VerifyStore(ctx, db, keyID, pub, head)
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		res := verify()
		if !res.OK() || !res.HeadChecked || res.Checkpoints < 4 || res.LastN != head.N || res.Unsealed != 0 {
			t.Fatalf("untouched log: %s %+v", res, res)
		}
		if !strings.HasPrefix(res.String(), fmt.Sprintf("verified %d entries", res.Verified)) {
			t.Fatalf("result text %q", res.String())
		}
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.ExecContext(ctx, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		wantBreak := func(what string, n int64) {
			t.Helper()
			res := verify()
			if res.OK() || res.Break.N != n {
				t.Fatalf("%s: want a break at entry %d, got %s", what, n, res)
			}
			t.Logf("%s: %s", what, res)
		}
		const victim = 9
		orig, err := storage.AuditRowAt(ctx, db, victim)
		if err != nil {
			t.Fatal(err)
		}

		// Edited content.
		exec(`UPDATE audit_log SET details = $1 WHERE n = $2`, `{"forged":true}`, victim)
		wantBreak("edited details", victim)
		exec(`UPDATE audit_log SET details = $1 WHERE n = $2`, orig.Details, victim)
		// Edited with the entry hash recomputed: the chain still breaks.
		forged := *orig
		forged.Action = "account.nothing"
		exec(`UPDATE audit_log SET action = $1, entry_hash = $2 WHERE n = $3`, forged.Action, auditapi.EntryHash(&forged), victim)
		wantBreak("edited with its hash", victim)
		exec(`UPDATE audit_log SET action = $1, entry_hash = $2 WHERE n = $3`, orig.Action, orig.EntryHash, victim)
		if res := verify(); !res.OK() {
			t.Fatalf("restored: %s", res)
		}

		// Deleted.
		exec(`DELETE FROM audit_log WHERE n = $1`, victim)
		wantBreak("deleted", victim)
		if err := storage.InsertAuditRow(ctx, db, orig, true); err != nil {
			t.Fatal(err)
		}

		// Reordered.
		exec(`UPDATE audit_log SET n = -1 WHERE n = $1`, victim)
		exec(`UPDATE audit_log SET n = $1 WHERE n = $2`, victim, victim+1)
		exec(`UPDATE audit_log SET n = $1 WHERE n = -1`, victim+1)
		wantBreak("reordered", victim)
		exec(`UPDATE audit_log SET n = -1 WHERE n = $1`, victim)
		exec(`UPDATE audit_log SET n = $1 WHERE n = $2`, victim, victim+1)
		exec(`UPDATE audit_log SET n = $1 WHERE n = -1`, victim+1)

		// A forged checkpoint signature.
		var cpN int64
		if err := db.QueryRowContext(ctx, `SELECT MIN(n) FROM audit_log WHERE kind = 'checkpoint'`).Scan(&cpN); err != nil {
			t.Fatal(err)
		}
		cp, _ := storage.AuditRowAt(ctx, db, cpN)
		exec(`UPDATE audit_log SET signature = $1 WHERE n = $2`, strings.Repeat("A", 86), cpN)
		wantBreak("forged checkpoint", cpN)
		exec(`UPDATE audit_log SET signature = $1 WHERE n = $2`, cp.Signature, cpN)
		if res := verify(); !res.OK() {
			t.Fatalf("restored again: %s", res)
		}

		// Truncated tail: consistent on its own, caught by the exported head.
		exec(`DELETE FROM audit_log WHERE n > $1`, head.N-3)
		wantBreak("truncated", head.N-2)
		if res, _ := auditapi.VerifyStore(ctx, db, keyID, pub, nil); !res.OK() {
			t.Fatalf("without the head a clean truncation is self-consistent: %s", res)
		}
	})
}
