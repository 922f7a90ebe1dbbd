package test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"enclave/auditapi"
	"enclave/config"
	"enclave/storage"
)

// queryBridge is a mautrix appservice that answers the server's user and
// alias queries as a bridge does (making the puppet or the portal room
// through the client API) and serves the third-party lookups on its
// router; it records what it was asked and the token it was asked with.
type queryBridge struct {
	as *appservice.AppService
	mu sync.Mutex
	// asked lists each query: "user @x", "alias #y", "tp GET /path?query".
	asked []string
	// badAuth counts third-party requests without the hs_token.
	badAuth int
}

func (q *queryBridge) note(s string) {
	q.mu.Lock()
	q.asked = append(q.asked, s)
	q.mu.Unlock()
}

func (q *queryBridge) count(s string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, a := range q.asked {
		if a == s {
			n++
		}
	}
	return n
}

// QueryUser: @bridge_known_* exist on the partner network and are made
// as puppets; @bridge_lazy_* exist but the bridge leaves the account to
// the server; any other user does not exist.
func (q *queryBridge) QueryUser(userID id.UserID) bool {
	q.note("user " + string(userID))
	ctx := context.Background()
	switch {
	case strings.HasPrefix(string(userID), "@bridge_known_"):
		in := q.as.Intent(userID)
		if err := in.EnsureRegistered(ctx); err != nil {
			return false
		}
		return in.SetDisplayName(ctx, "Partner "+strings.TrimPrefix(userID.Localpart(), "bridge_known_")) == nil
	case strings.HasPrefix(string(userID), "@bridge_lazy_"):
		return true
	}
	return false
}

// QueryAlias: #bridge_room_* are portals made on demand, public so that
// anyone can join them.
func (q *queryBridge) QueryAlias(alias id.RoomAlias) bool {
	q.note("alias " + string(alias))
	if !strings.HasPrefix(string(alias), "#bridge_room_") {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(string(alias), "#"), ":")
	_, err := q.as.BotClient().CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: name, Name: "Portal " + name})
	return err == nil
}

// thirdParty serves the /_matrix/app/v1/thirdparty lookups of protocol
// "partnernet" with one network, "coalition".
func (q *queryBridge) thirdParty(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+q.as.Registration.ServerToken {
		q.mu.Lock()
		q.badAuth++
		q.mu.Unlock()
		mautrix.MUnknownToken.WithMessage("bad hs_token").Write(w)
		return
	}
	q.note("tp " + r.URL.Path + "?" + r.URL.RawQuery)
	var out any
	switch p := strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/thirdparty/"); {
	case p == "protocol/partnernet":
		out = map[string]any{"user_fields": []string{"name"}, "location_fields": []string{"room"}, "icon": "mxc://localhost/icon",
			"field_types": map[string]any{"name": map[string]any{"regexp": ".*", "placeholder": "name"}, "room": map[string]any{"regexp": ".*", "placeholder": "room"}},
			"instances":   []any{map[string]any{"desc": "Coalition partner", "network_id": "coalition", "fields": map[string]any{}}}}
	case p == "location/partnernet":
		out = []any{map[string]any{"alias": "#bridge_room_" + r.URL.Query().Get("room") + ":localhost", "protocol": "partnernet", "fields": map[string]any{"room": r.URL.Query().Get("room")}}}
	case p == "user/partnernet":
		out = []any{map[string]any{"userid": "@bridge_known_" + r.URL.Query().Get("name") + ":localhost", "protocol": "partnernet", "fields": map[string]any{"name": r.URL.Query().Get("name")}}}
	case p == "location":
		out = []any{map[string]any{"alias": r.URL.Query().Get("alias"), "protocol": "partnernet", "fields": map[string]any{"room": "general"}}}
	case p == "user":
		out = []any{map[string]any{"userid": r.URL.Query().Get("userid"), "protocol": "partnernet", "fields": map[string]any{"name": "bob"}}}
	default:
		mautrix.MNotFound.WithMessage("no such protocol").Write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// startQueryBridge writes the registration, starts a server that loads it
// and the bridge on port.
func startQueryBridge(t *testing.T, d storage.Dialect, configure func(c *config.Config)) (*Server, *queryBridge) {
	port := freePort(t)
	reg := appservice.CreateRegistration()
	reg.ID = "testbridge"
	reg.URL = "http://127.0.0.1:" + strconv.Itoa(port)
	reg.SenderLocalpart = "bridgebot"
	reg.RateLimited = new(bool)
	reg.Protocols = []string{"partnernet"}
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(`^@bridge_.*:localhost$`), true)
	reg.Namespaces.RoomAliases.Register(regexp.MustCompile(`^#bridge_.*:localhost$`), true)
	path := filepath.Join(t.TempDir(), "registration.yaml")
	y, err := reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := Start(t, d, Options{Configure: func(c *config.Config) {
		c.AppServices.ConfigFiles = []string{path}
		if configure != nil {
			configure(c)
		}
	}})
	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: "localhost", HomeserverURL: srv.URL,
		HostConfig: appservice.HostConfig{Hostname: "127.0.0.1", Port: uint16(port)}})
	if err != nil {
		t.Fatal(err)
	}
	q := &queryBridge{as: as}
	as.QueryHandler = q
	as.Router.HandleFunc("GET /_matrix/app/v1/thirdparty/", q.thirdParty)
	go func() {
		for range as.Events {
		}
	}()
	b := &bridge{as: as}
	b.start()
	t.Cleanup(b.stop)
	return srv, q
}

func TestAppServiceQueries(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		ctx := ctxT(t)
		srv, q := startQueryBridge(t, d, nil)
		v3 := srv.URL + "/_matrix/client/v3"
		alice := registerClient(t, srv.URL, "alice", "password-alice-1")
		tok := alice.AccessToken
		exists := func(userID string) bool {
			ok, err := storage.AccountExists(ctx, srv.DB, userID)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}

		t.Run("user_query_profile", func(t *testing.T) {
			const bob = "@bridge_known_bob:localhost"
			res := raw(t, "GET", v3+"/profile/"+bob, tok, nil)
			if res.Status != 200 || res.Body["displayname"] != "Partner bob" {
				t.Fatalf("profile of a puppet made on demand: %d %s", res.Status, res.Raw)
			}
			if !exists(bob) || q.count("user "+bob) != 1 {
				t.Fatalf("puppet stored %v, bridge asked %d times", exists(bob), q.count("user "+bob))
			}
			// Known now: not asked again.
			mustOK(t, "profile again", raw(t, "GET", v3+"/profile/"+bob, tok, nil))
			if n := q.count("user " + bob); n != 1 {
				t.Fatalf("bridge asked %d times about a user that exists", n)
			}
			// A user the bridge does not know: 404, nothing stored.
			raw(t, "GET", v3+"/profile/@bridge_ghost:localhost", tok, nil).wantErr(t, "unknown puppet", 404, "M_NOT_FOUND")
			if exists("@bridge_ghost:localhost") || q.count("user @bridge_ghost:localhost") != 1 {
				t.Fatal("an unknown puppet was stored, or the bridge was not asked")
			}
			// Outside every namespace: the bridge is not asked.
			raw(t, "GET", v3+"/profile/@nobody:localhost", tok, nil).wantErr(t, "unknown user", 404, "M_NOT_FOUND")
			if q.count("user @nobody:localhost") != 0 {
				t.Fatal("the bridge was asked about a user outside its namespace")
			}
		})

		t.Run("user_query_invite", func(t *testing.T) {
			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			if err != nil {
				t.Fatal(err)
			}
			// The bridge answers 200 but leaves the account to the server.
			const lazy = "@bridge_lazy_carol:localhost"
			if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: lazy}); err != nil {
				t.Fatalf("invite: %v", err)
			}
			if !exists(lazy) || q.count("user "+lazy) != 1 {
				t.Fatalf("invited puppet stored %v, asked %d", exists(lazy), q.count("user "+lazy))
			}
			st, err := srv.Rooms.CurrentState(ctx, string(room.RoomID))
			if err != nil || st.Membership(lazy) != "invite" {
				t.Fatalf("membership of the invited puppet: %q %v", st.Membership(lazy), err)
			}
			var audited bool
			for _, r := range auditRows(t, srv) {
				if r.Action == auditapi.ActionRegister && r.Target == lazy {
					audited = details(t, r)["kind"] == "appservice_query" && details(t, r)["appservice"] == "testbridge"
				}
			}
			if !audited {
				t.Fatal("the account made for the queried puppet is not audited with the appservice")
			}
			// createRoom's invite list asks too.
			const dave = "@bridge_known_dave:localhost"
			r2, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{dave}})
			if err != nil {
				t.Fatal(err)
			}
			st, err = srv.Rooms.CurrentState(ctx, string(r2.RoomID))
			if err != nil || st.Membership(dave) != "invite" || !exists(dave) {
				t.Fatalf("createRoom invite of a queried puppet: %q %v", st.Membership(dave), err)
			}
		})

		t.Run("alias_query", func(t *testing.T) {
			res := mustOK(t, "resolve", raw(t, "GET", v3+"/directory/room/"+url.PathEscape("#bridge_room_ops:localhost"), tok, nil))
			roomID, _ := res.Body["room_id"].(string)
			stored, _, err := storage.GetAlias(ctx, srv.DB, "#bridge_room_ops:localhost")
			if err != nil || stored != roomID || roomID == "" {
				t.Fatalf("alias made on demand: %q stored %q %v", roomID, stored, err)
			}
			// Joining by an alias not made yet asks too.
			joined, err := alice.JoinRoom(ctx, "#bridge_room_logistics:localhost", nil)
			if err != nil {
				t.Fatalf("join by a queried alias: %v", err)
			}
			st, err := srv.Rooms.CurrentState(ctx, string(joined.RoomID))
			if err != nil || st.Membership(alice.UserID.String()) != "join" {
				t.Fatalf("alice's membership in the portal: %v", err)
			}
			// Unknown to the bridge: 404, asked once; outside the namespace: not asked.
			raw(t, "GET", v3+"/directory/room/"+url.PathEscape("#bridge_nothing:localhost"), tok, nil).wantErr(t, "unknown portal", 404, "M_NOT_FOUND")
			raw(t, "POST", v3+"/join/"+url.PathEscape("#elsewhere:localhost"), tok, map[string]any{}).wantErr(t, "unknown alias", 404, "M_NOT_FOUND")
			if q.count("alias #bridge_nothing:localhost") != 1 || q.count("alias #elsewhere:localhost") != 0 {
				t.Fatalf("queries: %v", q.asked)
			}
			if _, _, err := storage.GetAlias(ctx, srv.DB, "#bridge_nothing:localhost"); err == nil {
				t.Fatal("an alias the bridge refused exists")
			}
		})

		t.Run("third_party", func(t *testing.T) {
			res := mustOK(t, "protocols", raw(t, "GET", v3+"/thirdparty/protocols", tok, nil))
			pn, _ := res.Body["partnernet"].(map[string]any)
			inst, _ := pn["instances"].([]any)
			if pn == nil || len(inst) != 1 || inst[0].(map[string]any)["instance_id"] != "testbridge|coalition" || pn["icon"] != "mxc://localhost/icon" {
				t.Fatalf("protocols: %s", res.Raw)
			}
			res = mustOK(t, "protocol", raw(t, "GET", v3+"/thirdparty/protocol/partnernet", tok, nil))
			if res.Body["user_fields"] == nil {
				t.Fatalf("protocol: %s", res.Raw)
			}
			raw(t, "GET", v3+"/thirdparty/protocol/smoke-signals", tok, nil).wantErr(t, "unknown protocol", 404, "M_NOT_FOUND")
			raw(t, "GET", v3+"/thirdparty/location/smoke-signals?room=x", tok, nil).wantErr(t, "unknown protocol location", 404, "M_NOT_FOUND")
			raw(t, "GET", v3+"/thirdparty/user/smoke-signals", tok, nil).wantErr(t, "unknown protocol user", 404, "M_NOT_FOUND")
			raw(t, "GET", v3+"/thirdparty/location", tok, nil).wantErr(t, "location without alias", 400, "M_MISSING_PARAM")
			raw(t, "GET", v3+"/thirdparty/protocols", "", nil).wantErr(t, "no token", 401, "M_MISSING_TOKEN")

			list := func(path string) []map[string]any {
				t.Helper()
				r := raw(t, "GET", v3+path, tok, nil)
				var out []map[string]any
				if r.Status != 200 || json.Unmarshal(r.Raw, &out) != nil {
					t.Fatalf("%s: %d %s", path, r.Status, r.Raw)
				}
				return out
			}
			if l := list("/thirdparty/location/partnernet?room=general"); len(l) != 1 || l[0]["alias"] != "#bridge_room_general:localhost" {
				t.Fatalf("location lookup: %v", l)
			}
			if l := list("/thirdparty/user/partnernet?name=erin"); len(l) != 1 || l[0]["userid"] != "@bridge_known_erin:localhost" {
				t.Fatalf("user lookup: %v", l)
			}
			if l := list("/thirdparty/location?alias=" + url.QueryEscape("#bridge_room_general:localhost")); len(l) != 1 || l[0]["protocol"] != "partnernet" {
				t.Fatalf("reverse location lookup: %v", l)
			}
			if l := list("/thirdparty/user?userid=" + url.QueryEscape("@bridge_known_erin:localhost")); len(l) != 1 || l[0]["userid"] != "@bridge_known_erin:localhost" {
				t.Fatalf("reverse user lookup: %v", l)
			}
			// The fields reach the bridge as given, the client's token does not.
			if q.count("tp /_matrix/app/v1/thirdparty/location/partnernet?room=general") != 1 {
				t.Fatalf("bridge was asked: %v", q.asked)
			}
			if q.badAuth != 0 {
				t.Fatalf("%d third-party requests without the hs_token", q.badAuth)
			}
		})

		t.Run("network_directory", func(t *testing.T) {
			bot := q.as.BotClient()
			portal, err := bot.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Coalition ops"})
			if err != nil {
				t.Fatal(err)
			}
			local, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Local"})
			if err != nil {
				t.Fatal(err)
			}
			put := func(token, roomID, vis string) rawResp {
				return raw(t, "PUT", v3+"/directory/list/appservice/coalition/"+url.PathEscape(roomID), token, map[string]any{"visibility": vis})
			}
			mustOK(t, "publish in the network", put(bot.AccessToken, string(portal.RoomID), "public"))
			put(tok, string(local.RoomID), "public").wantErr(t, "an ordinary user", 403, "M_FORBIDDEN")
			put(bot.AccessToken, "!nowhere:localhost", "public").wantErr(t, "unknown room", 404, "M_NOT_FOUND")
			put(bot.AccessToken, string(portal.RoomID), "secret").wantErr(t, "bad visibility", 400, "M_INVALID_PARAM")

			rooms := func(query string, body any) []string {
				t.Helper()
				var r rawResp
				if body != nil {
					r = raw(t, "POST", v3+"/publicRooms", tok, body)
				} else {
					r = raw(t, "GET", v3+"/publicRooms?"+query, tok, nil)
				}
				if r.Status != 200 {
					t.Fatalf("publicRooms %s: %d %s", query, r.Status, r.Raw)
				}
				var out []string
				for _, c := range r.Body["chunk"].([]any) {
					out = append(out, c.(map[string]any)["room_id"].(string))
				}
				slices.Sort(out)
				return out
			}
			want := func(what string, got []string, ids ...id.RoomID) {
				t.Helper()
				var w []string
				for _, i := range ids {
					w = append(w, string(i))
				}
				slices.Sort(w)
				if !slices.Equal(got, w) {
					t.Fatalf("%s: %v, want %v", what, got, w)
				}
			}
			inst := url.QueryEscape("testbridge|coalition")
			want("the server's own directory", rooms("", nil), local.RoomID)
			want("the coalition network", rooms("third_party_instance_id="+inst, nil), portal.RoomID)
			want("all networks", rooms("include_all_networks=true", nil), local.RoomID, portal.RoomID)
			want("the coalition network (POST)", rooms("", map[string]any{"third_party_instance_id": "testbridge|coalition"}), portal.RoomID)
			want("a network nobody named", rooms("third_party_instance_id="+url.QueryEscape("testbridge|other"), nil))
			want("not an instance id", rooms("third_party_instance_id=coalition", nil))

			var audited bool
			for _, r := range auditRows(t, srv) {
				if r.Action == auditapi.ActionAppServiceNetworkRoom && r.Target == string(portal.RoomID) {
					dt := details(t, r)
					audited = dt["appservice"] == "testbridge" && dt["network_id"] == "coalition" && dt["visibility"] == "public"
				}
			}
			if !audited {
				t.Fatal("publishing in the network directory is not audited")
			}
			// Withdrawn.
			mustOK(t, "withdraw", put(bot.AccessToken, string(portal.RoomID), "private"))
			want("the coalition network after withdrawal", rooms("third_party_instance_id="+inst, nil))
			want("all networks after withdrawal", rooms("include_all_networks=true", nil), local.RoomID)
		})
	})
}

// TestAppServiceAdminView: the operators' view of the bridges, behind
// appservice.manage, with no token in it.
func TestAppServiceAdminView(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		ctx := ctxT(t)
		srv, q := startQueryBridge(t, d, func(c *config.Config) {
			c.RBAC.Roles = []string{"bridgeless=use_admin_api manage_rooms manage_users"}
		})
		admin := Register(t, srv.URL, "boss", "boss-pw", true)
		alice := registerClient(t, srv.URL, "alice", "password-alice-1")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{"@bridge_known_frank:localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		frank := q.as.Intent("@bridge_known_frank:localhost")
		if _, err := frank.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "hello partner"); err != nil {
			t.Fatal(err)
		}
		// Delivered: the bridge acknowledged at least one transaction.
		waitFor(t, "a delivery", 15*time.Second, func() bool {
			res := raw(t, "GET", srv.URL+"/_enclave/admin/v1/appservices", admin.AccessToken, nil)
			l, _ := res.Body["appservices"].([]any)
			return len(l) == 1 && l[0].(map[string]any)["last_success_ts"] != nil && l[0].(map[string]any)["queue_depth"] == float64(0)
		})
		res := mustOK(t, "admin view", raw(t, "GET", srv.URL+"/_enclave/admin/v1/appservices", admin.AccessToken, nil))
		reg := q.as.Registration
		if strings.Contains(string(res.Raw), reg.AppToken) || strings.Contains(string(res.Raw), reg.ServerToken) {
			t.Fatal("the admin view shows a token")
		}
		var view struct {
			AppServices []struct {
				ID           string  `json:"id"`
				URL          *string `json:"url"`
				SenderUserID string  `json:"sender_user_id"`
				RateLimited  bool    `json:"rate_limited"`
				Protocols    []string
				Namespaces   map[string][]struct {
					Regex     string `json:"regex"`
					Exclusive bool   `json:"exclusive"`
				} `json:"namespaces"`
				Rooms []struct {
					RoomID  string            `json:"room_id"`
					Members map[string]string `json:"members"`
				} `json:"rooms"`
				QueueDepth    *int  `json:"queue_depth"`
				LastSuccessTS int64 `json:"last_success_ts"`
			} `json:"appservices"`
			RemovedQueues []any `json:"removed_queues"`
		}
		if err := json.Unmarshal(res.Raw, &view); err != nil {
			t.Fatal(err)
		}
		if len(view.AppServices) != 1 {
			t.Fatalf("view: %s", res.Raw)
		}
		v := view.AppServices[0]
		if v.ID != "testbridge" || v.URL == nil || *v.URL != reg.URL || v.SenderUserID != "@bridgebot:localhost" || v.RateLimited ||
			!slices.Equal(v.Protocols, []string{"partnernet"}) || len(v.Namespaces["users"]) != 1 || v.Namespaces["users"][0].Regex != `^@bridge_.*:localhost$` ||
			!v.Namespaces["users"][0].Exclusive || v.QueueDepth == nil || v.LastSuccessTS == 0 || view.RemovedQueues == nil {
			t.Fatalf("view: %s", res.Raw)
		}
		var sees bool
		for _, r := range v.Rooms {
			if r.RoomID == string(room.RoomID) {
				sees = r.Members["@bridge_known_frank:localhost"] == "join"
			}
		}
		if !sees {
			t.Fatalf("the view does not show the room frank joined: %s", res.Raw)
		}

		// A role without appservice.manage is refused, and the refusal is
		// in the audit trail.
		ops := Register(t, srv.URL, "ops", "ops-pw", false)
		if r := setRolesApproved(t, srv.URL, admin.AccessToken, ops.UserID, "bridgeless"); r.Status != 200 {
			t.Fatalf("roles: %d %s", r.Status, r.Raw)
		}
		denied := raw(t, "GET", srv.URL+"/_enclave/admin/v1/appservices", ops.AccessToken, nil)
		denied.wantErr(t, "without appservice.manage", 403, "M_FORBIDDEN")
		if !strings.Contains(denied.Body["error"].(string), "appservice.manage") || strings.Contains(string(denied.Raw), "testbridge") {
			t.Fatalf("denial: %s", denied.Raw)
		}
		// The same user may use the rest of the admin API its role grants.
		mustOK(t, "rooms admin", raw(t, "GET", srv.URL+"/_synapse/admin/v1/rooms", ops.AccessToken, nil))
		if err := srv.Audit.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		rows, err := storage.ListAuditRows(ctx, srv.DB, storage.AuditFilter{Action: auditapi.ActionAccessDenied})
		if err != nil {
			t.Fatal(err)
		}
		var deniedAudited bool
		for _, r := range rows {
			deniedAudited = deniedAudited || (r.ActorUser == ops.UserID && strings.Contains(r.Details, "appservice.manage"))
		}
		if !deniedAudited {
			t.Fatal("the refusal is not audited")
		}
		// Every registration load is audited.
		var loads int
		for _, r := range auditRows(t, srv) {
			if r.Action == auditapi.ActionAppServiceLoad && details(t, r)["appservice"] == "testbridge" {
				loads++
			}
		}
		if loads != 1 {
			t.Fatalf("%d audit entries for the registration load, want 1", loads)
		}
	})
}
