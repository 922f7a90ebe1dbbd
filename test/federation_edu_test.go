package test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/config"
	"enclave/storage"
)

// eduSync is the part of a /sync response these tests read.
type eduSync struct {
	NextBatch string `json:"next_batch"`
	Presence  struct {
		Events []struct {
			Sender  string         `json:"sender"`
			Content map[string]any `json:"content"`
		} `json:"events"`
	} `json:"presence"`
	Rooms struct {
		Join map[string]struct {
			Ephemeral struct {
				Events []struct {
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
			} `json:"ephemeral"`
		} `json:"join"`
	} `json:"rooms"`
}

// eduWatch long-polls token's /sync from an initial sync until cond holds
// for a response, failing after timeout. It returns the last since token.
func eduWatch(t *testing.T, baseURL, token, since, what string, timeout time.Duration, cond func(s *eduSync) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		u := baseURL + "/_matrix/client/v3/sync?timeout=1000&set_presence=offline"
		if since != "" {
			u += "&since=" + url.QueryEscape(since)
		}
		r := raw(t, "GET", u, token, nil)
		if r.Status != 200 {
			t.Fatalf("sync: %d %s", r.Status, r.Raw)
		}
		var s eduSync
		if err := json.Unmarshal(r.Raw, &s); err != nil {
			t.Fatal(err)
		}
		since = s.NextBatch
		if cond(&s) {
			return since
		}
	}
	t.Fatalf("timed out waiting for %s", what)
	return ""
}

// typingIn returns the m.typing user list of a room in a sync (nil when
// the response has none).
func (s *eduSync) typingIn(room id.RoomID) []string {
	for _, e := range s.Rooms.Join[room.String()].Ephemeral.Events {
		if e.Type == "m.typing" {
			var c struct {
				UserIDs []string `json:"user_ids"`
			}
			_ = json.Unmarshal(e.Content, &c)
			if c.UserIDs == nil {
				c.UserIDs = []string{}
			}
			return c.UserIDs
		}
	}
	return nil
}

// readBy reports whether the sync holds user's m.read receipt for ev.
func (s *eduSync) readBy(room id.RoomID, ev id.EventID, user id.UserID) bool {
	for _, e := range s.Rooms.Join[room.String()].Ephemeral.Events {
		if e.Type != "m.receipt" {
			continue
		}
		var c map[string]map[string]map[string]any
		_ = json.Unmarshal(e.Content, &c)
		if _, ok := c[ev.String()]["m.read"][user.String()]; ok {
			return true
		}
	}
	return false
}

// eduRoom has creator make a public room that joiner joins through via.
func eduRoom(t *testing.T, creator, joiner *mautrix.Client, via string) id.RoomID {
	t.Helper()
	resp, err := creator.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "ephemera"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := joiner.JoinRoom(ctxT(t), resp.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{via}}); err != nil {
		t.Fatalf("%s joining over federation: %v", joiner.UserID, err)
	}
	return resp.RoomID
}

// eduSend sends a transaction of EDUs from node `from` to node `to`.
func eduSend(t *testing.T, c *FedCluster, from, to *FedNode, txnID string, edus ...map[string]any) {
	t.Helper()
	txn := map[string]any{"origin": from.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{}, "edus": edus}
	code, body := fedSignedRequest(t, c, spec.ServerName(from.ServerName), gomatrixserverlib.KeyID(from.KeyID), from.Key, spec.ServerName(to.ServerName),
		"PUT", "/_matrix/federation/v1/send/"+txnID, txn)
	if code != 200 {
		t.Fatalf("send %s: %d %s", txnID, code, body)
	}
}

// TestFederationTypingReceiptsPresence: typing notifications, read
// receipts and presence of users on A (SQLite) reach B's (PostgreSQL)
// clients through EDUs and vice versa; EDUs about users who are not of
// the sending server, or not in the room, change nothing.
func TestFederationTypingReceiptsPresence(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	ra := Register(t, a.URL, "alice", "pw", false)
	rb := Register(t, b.URL, "bob", "pw", false)
	alice, bob := sessionClient(t, a.URL, ra), sessionClient(t, b.URL, rb)
	room := eduRoom(t, alice, bob, a.ServerName)
	sinceA := eduWatch(t, a.URL, ra.AccessToken, "", "A's initial sync", 10*time.Second, func(*eduSync) bool { return true })
	sinceB := eduWatch(t, b.URL, rb.AccessToken, "", "B's initial sync", 10*time.Second, func(*eduSync) bool { return true })

	// Forged EDUs first: typing for a user of B sent by A, typing for a
	// user of A who is not in the room, a receipt for B's user sent by A.
	ghost := UserID("ghost", a.ServerName)
	eduSend(t, c, a, b, "forged1",
		map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": UserID("mallory", b.ServerName), "typing": true}},
		map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": ghost, "typing": true}},
	)

	// Typing, A → B: B's client sees exactly alice typing, then nobody.
	if _, err := alice.UserTyping(ctxT(t), room, true, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	sinceB = eduWatch(t, b.URL, rb.AccessToken, sinceB, "bob to see alice typing", 30*time.Second, func(s *eduSync) bool {
		users := s.typingIn(room)
		if len(users) > 1 || (len(users) == 1 && users[0] != ra.UserID) {
			t.Fatalf("B reports typing users %v, want only %s", users, ra.UserID)
		}
		return len(users) == 1
	})
	if _, err := alice.UserTyping(ctxT(t), room, false, 0); err != nil {
		t.Fatal(err)
	}
	sinceB = eduWatch(t, b.URL, rb.AccessToken, sinceB, "bob to see alice stop typing", 30*time.Second, func(s *eduSync) bool {
		users := s.typingIn(room)
		return users != nil && len(users) == 0
	})
	// Typing, B → A.
	if _, err := bob.UserTyping(ctxT(t), room, true, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	sinceA = eduWatch(t, a.URL, ra.AccessToken, sinceA, "alice to see bob typing", 30*time.Second, func(s *eduSync) bool {
		users := s.typingIn(room)
		return len(users) == 1 && users[0] == rb.UserID
	})

	// Receipts both ways: each reads the other's message.
	evA, err := alice.SendText(ctxT(t), room, "read me, bob")
	if err != nil {
		t.Fatal(err)
	}
	waitForBody(t, bob, room, "read me, bob", 30*time.Second)
	if err := bob.SendReceipt(ctxT(t), room, evA.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	sinceA = eduWatch(t, a.URL, ra.AccessToken, sinceA, "alice to see bob's receipt", 30*time.Second, func(s *eduSync) bool {
		return s.readBy(room, evA.EventID, bob.UserID)
	})
	evB, err := bob.SendText(ctxT(t), room, "read me, alice")
	if err != nil {
		t.Fatal(err)
	}
	waitForBody(t, alice, room, "read me, alice", 30*time.Second)
	if err := alice.SendReceipt(ctxT(t), room, evB.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	_ = eduWatch(t, b.URL, rb.AccessToken, sinceB, "bob to see alice's receipt", 30*time.Second, func(s *eduSync) bool {
		return s.readBy(room, evB.EventID, alice.UserID)
	})
	// A receipt for bob's user sent by A is ignored by B.
	eduSend(t, c, a, b, "forged2", map[string]any{"edu_type": "m.receipt", "content": map[string]any{
		room.String(): map[string]any{"m.read": map[string]any{rb.UserID: map[string]any{"event_ids": []string{evB.EventID.String()}, "data": map[string]any{"ts": 1}}}},
	}})
	recs, err := storage.UserReceipts(ctxT(t), b.DB, rb.UserID, room.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Type == storage.ReceiptRead && r.TS == 1 {
			t.Fatalf("B stored a receipt for its own user sent by A: %+v", r)
		}
	}

	// Presence, B → A.
	if err := bob.SetPresence(ctxT(t), mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "federating"}); err != nil {
		t.Fatal(err)
	}
	eduWatch(t, a.URL, ra.AccessToken, sinceA, "alice to see bob's presence", 30*time.Second, func(s *eduSync) bool {
		for _, p := range s.Presence.Events {
			if p.Sender == rb.UserID && p.Content["status_msg"] == "federating" && p.Content["presence"] == "online" {
				return true
			}
		}
		return false
	})
	// A presence EDU from A about B's user is ignored (bea, on B in the
	// same room, would otherwise be shown it).
	rbea := Register(t, b.URL, "bea", "pw", false)
	if _, err := sessionClient(t, b.URL, rbea).JoinRoom(ctxT(t), room.String(), nil); err != nil {
		t.Fatal(err)
	}
	eduSend(t, c, a, b, "forged3", map[string]any{"edu_type": "m.presence", "content": map[string]any{
		"push": []any{map[string]any{"user_id": rb.UserID, "presence": "offline", "last_active_ago": 5}},
	}})
	if p, err := storage.GetPresence(ctxT(t), b.DB, rb.UserID); err != nil || p.State != "online" {
		t.Fatalf("bob's presence on B after a forged EDU: %+v %v", p, err)
	}
}

// TestFederationProfileMediaDirectory: a client on A looks up a profile
// on B; media uploaded on A downloads through B's client API with the
// same bytes (and A serves thumbnails over federation); B lists its
// public rooms and a space hierarchy to A; OpenID tokens of A's users
// check out through A's federation userinfo.
func TestFederationProfileMediaDirectory(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.Nodes[0].Configure = func(cfg *config.Config) { cfg.Profile.RequireSharedRoom = true }
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	ra := Register(t, a.URL, "alice", "pw", false)
	rb := Register(t, b.URL, "bob", "pw", false)
	alice, bob := sessionClient(t, a.URL, ra), sessionClient(t, b.URL, rb)

	// Profiles: A limits lookups to users sharing a room, remote ones too.
	if err := bob.SetDisplayName(ctxT(t), "Bob of B"); err != nil {
		t.Fatal(err)
	}
	raw(t, "GET", a.URL+"/_matrix/client/v3/profile/"+url.PathEscape(rb.UserID), ra.AccessToken, nil).
		wantErr(t, "remote profile without a shared room", 403, "M_FORBIDDEN")
	eduRoom(t, alice, bob, a.ServerName)
	r := raw(t, "GET", a.URL+"/_matrix/client/v3/profile/"+url.PathEscape(rb.UserID), ra.AccessToken, nil)
	if r.Status != 200 || r.Body["displayname"] != "Bob of B" {
		t.Fatalf("remote profile: %d %s", r.Status, r.Raw)
	}
	r = raw(t, "GET", a.URL+"/_matrix/client/v3/profile/"+url.PathEscape(rb.UserID)+"/displayname", ra.AccessToken, nil)
	if r.Status != 200 || r.Body["displayname"] != "Bob of B" {
		t.Fatalf("remote displayname: %d %s", r.Status, r.Raw)
	}
	raw(t, "GET", b.URL+"/_matrix/client/v3/profile/"+url.PathEscape(UserID("nobody", a.ServerName)), rb.AccessToken, nil).
		wantErr(t, "profile of an unknown remote user", 404, "M_NOT_FOUND")

	// Media: uploaded on A, downloaded by bob through B.
	data := bytes.Repeat([]byte("sealed but federated "), 5000)
	up, err := alice.UploadBytesWithName(ctxT(t), data, "application/octet-stream", "report.bin")
	if err != nil {
		t.Fatal(err)
	}
	if up.ContentURI.Homeserver != a.ServerName {
		t.Fatalf("uploaded to %s", up.ContentURI)
	}
	dl := raw(t, "GET", b.URL+"/_matrix/client/v1/media/download/"+up.ContentURI.Homeserver+"/"+up.ContentURI.FileID, rb.AccessToken, nil)
	if dl.Status != 200 || !bytes.Equal(dl.Raw, data) {
		t.Fatalf("federated download: %d, %d bytes (want %d)", dl.Status, len(dl.Raw), len(data))
	}
	raw(t, "GET", b.URL+"/_matrix/client/v1/media/download/"+a.ServerName+"/doesnotexist0000000000", rb.AccessToken, nil).
		wantErr(t, "download of missing remote media", 404, "M_NOT_FOUND")
	// A thumbnail straight from A's federation API.
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for x := 0; x < 64; x++ {
		img.Set(x, x%48, color.RGBA{R: 200, A: 255})
	}
	var pngBuf bytes.Buffer
	if err := png.Encode(&pngBuf, img); err != nil {
		t.Fatal(err)
	}
	upImg, err := alice.UploadBytes(ctxT(t), pngBuf.Bytes(), "image/png")
	if err != nil {
		t.Fatal(err)
	}
	ct, parts := eduMultipart(t, c, b, a, "/_matrix/federation/v1/media/thumbnail/"+upImg.ContentURI.FileID+"?width=32&height=32&method=scale")
	if len(parts) != 2 || string(parts[0].body) != "{}" || parts[0].ctype != "application/json" {
		t.Fatalf("thumbnail response %s: %d parts", ct, len(parts))
	}
	if cfg, format, err := image.DecodeConfig(bytes.NewReader(parts[1].body)); err != nil || cfg.Width > 64 || cfg.Width == 0 {
		t.Fatalf("thumbnail part (%s) does not decode: %v %s", parts[1].ctype, err, format)
	}
	_, parts = eduMultipart(t, c, b, a, "/_matrix/federation/v1/media/download/"+up.ContentURI.FileID)
	if len(parts) != 2 || !bytes.Equal(parts[1].body, data) {
		t.Fatal("federation media download does not carry the bytes")
	}

	// The directory and a space hierarchy of B, seen from A.
	space, err := bob.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "B space", Visibility: "public",
		CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	child, err := bob.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "B child"})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := bob.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "B secret"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []id.RoomID{child.RoomID, secret.RoomID} {
		if _, err := bob.SendStateEvent(ctxT(t), space.RoomID, event.StateSpaceChild, ch.String(), map[string]any{"via": []string{b.ServerName}}); err != nil {
			t.Fatal(err)
		}
	}
	fed := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		code, raw := fedSignedRequest(t, c, spec.ServerName(a.ServerName), gomatrixserverlib.KeyID(a.KeyID), a.Key, spec.ServerName(b.ServerName), method, path, body)
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return code, out
	}
	code, pr := fed("GET", "/_matrix/federation/v1/publicRooms?limit=10", nil)
	if code != 200 || !eduChunkHas(pr["chunk"], space.RoomID) {
		t.Fatalf("publicRooms: %d %v", code, pr)
	}
	code, pr = fed("POST", "/_matrix/federation/v1/publicRooms", map[string]any{"limit": 5, "filter": map[string]any{"generic_search_term": "no such room"}})
	if code != 200 || eduChunkHas(pr["chunk"], space.RoomID) {
		t.Fatalf("filtered publicRooms: %d %v", code, pr)
	}
	code, h := fed("GET", "/_matrix/federation/v1/hierarchy/"+url.PathEscape(space.RoomID.String()), nil)
	if code != 200 {
		t.Fatalf("hierarchy: %d %v", code, h)
	}
	root, _ := h["room"].(map[string]any)
	if root["room_id"] != space.RoomID.String() || root["room_type"] != "m.space" {
		t.Fatalf("hierarchy room: %v", root)
	}
	if cs, _ := root["children_state"].([]any); len(cs) != 2 {
		t.Fatalf("hierarchy children_state: %v", root["children_state"])
	}
	if !eduChunkHas(h["children"], child.RoomID) || eduChunkHas(h["children"], secret.RoomID) {
		t.Fatalf("hierarchy children: %v", h["children"])
	}
	if inacc, _ := h["inaccessible_children"].([]any); len(inacc) != 1 || inacc[0] != secret.RoomID.String() {
		t.Fatalf("hierarchy inaccessible_children: %v", h["inaccessible_children"])
	}
	if code, _ := fed("GET", "/_matrix/federation/v1/hierarchy/"+url.PathEscape(secret.RoomID.String()), nil); code != 404 {
		t.Fatalf("hierarchy of a private room: %d", code)
	}

	// OpenID: a token of alice's, checked by a third party at A.
	r = raw(t, "POST", a.URL+"/_matrix/client/v3/user/"+url.PathEscape(ra.UserID)+"/openid/request_token", ra.AccessToken, map[string]any{})
	tok, _ := r.Body["access_token"].(string)
	if r.Status != 200 || tok == "" || r.Body["token_type"] != "Bearer" || r.Body["matrix_server_name"] != a.ServerName || r.Body["expires_in"] != float64(3600) {
		t.Fatalf("request_token: %d %s", r.Status, r.Raw)
	}
	raw(t, "POST", a.URL+"/_matrix/client/v3/user/"+url.PathEscape(rb.UserID)+"/openid/request_token", ra.AccessToken, map[string]any{}).
		wantErr(t, "token for another user", 403, "M_FORBIDDEN")
	userinfo := func(token string) (int, map[string]any) {
		resp, err := c.HTTPClient().Get(a.FedURL("/_matrix/federation/v1/openid/userinfo?access_token=" + url.QueryEscape(token)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if code, out := userinfo(tok); code != 200 || out["sub"] != ra.UserID {
		t.Fatalf("userinfo: %d %v", code, out)
	}
	if code, out := userinfo(tok + "x"); code != 401 || out["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("userinfo with a bad token: %d %v", code, out)
	}
}

func eduChunkHas(chunk any, room id.RoomID) bool {
	list, _ := chunk.([]any)
	for _, e := range list {
		if m, _ := e.(map[string]any); m["room_id"] == room.String() {
			return true
		}
	}
	return false
}

type eduPart struct {
	ctype string
	body  []byte
}

// eduMultipart GETs a federation media path of `to`, signed by `from`, and
// splits the multipart/mixed answer.
func eduMultipart(t *testing.T, c *FedCluster, from, to *FedNode, path string) (string, []eduPart) {
	t.Helper()
	fr := fclient.NewFederationRequest("GET", spec.ServerName(from.ServerName), spec.ServerName(to.ServerName), path)
	if err := fr.Sign(spec.ServerName(from.ServerName), gomatrixserverlib.KeyID(from.KeyID), from.Key); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme = "https"
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if resp.StatusCode != 200 || err != nil || mt != "multipart/mixed" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s %s", path, resp.StatusCode, ct, b)
	}
	var parts []eduPart
	mr := multipart.NewReader(resp.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, eduPart{ctype: p.Header.Get("Content-Type"), body: b})
	}
	return ct, parts
}

// TestThreadReceiptsInSyncMSC4102Federation: once alice's unthreaded
// receipt for an event has reached bob on B, a threaded receipt for the
// same event never reaches bob's /sync: A drops it when storing (so never
// sends it), and B drops one that arrives anyway (sent here as an EDU
// from A), so B's store keeps only the unthreaded receipt.
func TestThreadReceiptsInSyncMSC4102Federation(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	ra := Register(t, a.URL, "alice", "pw", false)
	rb := Register(t, b.URL, "bob", "pw", false)
	alice, bob := sessionClient(t, a.URL, ra), sessionClient(t, b.URL, rb)
	room := eduRoom(t, alice, bob, a.ServerName)
	root := sendRaw(t, a.URL, ra.AccessToken, room.String(), "m.room.message", map[string]any{"msgtype": "m.text", "body": "Hello world!"})
	reply := sendRaw(t, a.URL, ra.AccessToken, room.String(), "m.room.message", threadReply(root, "Start thread!"))
	waitForBody(t, bob, room, "Start thread!", 30*time.Second)
	rpath := a.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(room.String()) + "/receipt/m.read/" + url.PathEscape(reply)
	mustOK(t, "unthreaded", raw(t, "POST", rpath, ra.AccessToken, map[string]any{}))
	sinceB := eduWatch(t, b.URL, rb.AccessToken, "", "bob to see alice's unthreaded receipt", 30*time.Second, func(s *eduSync) bool {
		return s.readBy(room, id.EventID(reply), alice.UserID)
	})

	// The clash, by alice's client on A and by an EDU from A straight to B.
	mustOK(t, "threaded", raw(t, "POST", rpath, ra.AccessToken, map[string]any{"thread_id": root}))
	eduSend(t, c, a, b, "clash1", map[string]any{"edu_type": "m.receipt", "content": map[string]any{room.String(): map[string]any{
		"m.read": map[string]any{ra.UserID: map[string]any{"event_ids": []string{reply}, "data": map[string]any{"ts": time.Now().UnixMilli(), "thread_id": root}}}}}})
	marker := sendRaw(t, a.URL, ra.AccessToken, room.String(), "m.room.message", map[string]any{"msgtype": "m.text", "body": "Marker"})
	deadline := time.Now().Add(30 * time.Second)
	for seen := false; !seen; {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the marker on B")
		}
		r := mustOK(t, "sync B", raw(t, "GET", b.URL+"/_matrix/client/v3/sync?timeout=1000&since="+url.QueryEscape(sinceB), rb.AccessToken, nil))
		sinceB = r.Body["next_batch"].(string)
		jr := joinedRoom(r, room.String())
		eph, _ := jr["ephemeral"].(map[string]any)
		evs, _ := eph["events"].([]any)
		for _, e := range evs {
			ev, _ := e.(map[string]any)
			content, _ := ev["content"].(map[string]any)
			rc, _ := content[reply].(map[string]any)
			read, _ := rc["m.read"].(map[string]any)
			if info, ok := read[ra.UserID].(map[string]any); ok && info["thread_id"] != nil {
				t.Fatalf("bob was served the clashing threaded receipt: %v", info)
			}
		}
		tl, _ := jr["timeline"].(map[string]any)
		tevs, _ := tl["events"].([]any)
		for _, e := range tevs {
			if e.(map[string]any)["event_id"] == marker {
				seen = true
			}
		}
	}
	for _, n := range []*FedNode{a, b} {
		rs, err := storage.UserReceipts(ctxT(t), n.DB, ra.UserID, room.String())
		if err != nil || len(rs) != 1 || rs[0].ThreadID != "" || rs[0].EventID != reply {
			t.Fatalf("%s stored %+v %v", n.ServerName, rs, err)
		}
	}
}
