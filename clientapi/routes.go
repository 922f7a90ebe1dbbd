package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/roomserver"
	"enclave/storage"
)

// routes is every Client-Server API endpoint, one row each, with the
// permission it needs. The order is behaviour: gorilla/mux serves the first
// route that matches. A row's requirement is perm.Public (no token),
// perm.AnyUser (any valid token), fixed permissions (perm.Needs) or a
// function of the request (the needs below); New refuses a row without one.
//
// Components mounted on the same router (media, admin, audit) give theirs
// to HandleAuthed / HandleRaw.
func (a *API) routes() [][]route {
	n := needs{serverName: a.opts.ServerName, db: a.db, rs: a.rs}
	return [][]route{
		// Discovery.
		open("GET", "/_matrix/client/versions", "discovery", perm.Public, versions),
		open("GET", "/.well-known/matrix/client", "discovery", perm.Public, a.wellKnown),
		authed("GET", "/_matrix/client/v3/capabilities", "discovery", perm.AnyUser, capabilities),
		authed("GET", "/_matrix/client/r0/capabilities", "discovery", perm.AnyUser, capabilities),

		// Login and sessions.
		openV3("GET", "/login", "login", perm.Public, a.accounts.getLoginFlows),
		openV3("POST", "/login", "login", perm.Public, a.accounts.postLogin),
		open("POST", "/_matrix/client/v3/refresh", "login", perm.Public, a.accounts.postRefresh),
		v3("POST", "/logout", "login", perm.AnyUser, a.accounts.postLogout),
		v3("POST", "/logout/all", "login", perm.AnyUser, a.accounts.postLogoutAll),

		// Registration (the admin one is authorised by the shared secret).
		openV3("POST", "/register", "register", perm.Public, a.accounts.postRegister),
		openV3("GET", "/register/available", "register", perm.Public, a.accounts.getRegisterAvailable),
		open("GET", "/_matrix/client/v1/register/m.login.registration_token/validity", "register", perm.Public, a.accounts.getRegistrationTokenValidity),
		open("GET", "/_synapse/admin/v1/register", "admin", perm.Public, a.accounts.getAdminRegisterNonce),
		open("POST", "/_synapse/admin/v1/register", "admin", perm.Public, a.accounts.postAdminRegister),

		// Account management.
		v3("GET", "/account/whoami", "account", perm.AnyUser, a.accounts.getWhoami),
		v3("POST", "/account/password", "account", perm.AnyUser, a.accounts.postPassword),
		v3("POST", "/account/deactivate", "account", perm.AnyUser, a.accounts.postDeactivate),
		v3("GET", "/account/3pid", "account", perm.AnyUser, a.accounts.getThreepids),

		// Rooms and membership.
		v3("POST", "/createRoom", "rooms", n.createRoom(), a.rooms.createRoom),
		v3("POST", "/join/{roomIdOrAlias}", "membership", n.join("roomIdOrAlias"), a.rooms.joinRoomIDOrAlias),
		v3("POST", "/rooms/{roomId}/join", "membership", n.join("roomId"), a.rooms.joinRoomByID),
		v3("POST", "/rooms/{roomId}/invite", "membership", n.invite(), a.rooms.membershipOther("invite")),
		v3("POST", "/rooms/{roomId}/kick", "membership", perm.AnyUser, a.rooms.membershipOther("leave")),
		v3("POST", "/rooms/{roomId}/ban", "membership", perm.AnyUser, a.rooms.membershipOther("ban")),
		v3("POST", "/rooms/{roomId}/unban", "membership", perm.AnyUser, a.rooms.membershipOther("unban")),
		v3("POST", "/rooms/{roomId}/leave", "membership", perm.AnyUser, a.rooms.leaveRoom),
		v3("POST", "/rooms/{roomId}/forget", "membership", perm.AnyUser, a.rooms.forgetRoom),
		v3("GET", "/joined_rooms", "rooms", perm.AnyUser, a.rooms.joinedRooms),
		v3("GET", "/rooms/{roomId}/members", "rooms", perm.AnyUser, a.events.members),
		v3("GET", "/rooms/{roomId}/joined_members", "rooms", perm.AnyUser, a.events.joinedMembers),
		v3("GET", "/rooms/{roomId}/state", "rooms", perm.AnyUser, a.events.roomState),
		v3("GET", "/rooms/{roomId}/state/{eventType}", "rooms", perm.AnyUser, a.events.roomStateEvent),
		v3("GET", "/rooms/{roomId}/state/{eventType}/{stateKey:.*}", "rooms", perm.AnyUser, a.events.roomStateEvent),
		v3("PUT", "/rooms/{roomId}/state/{eventType}", "send", n.putState(false), a.rooms.putState),
		v3("PUT", "/rooms/{roomId}/state/{eventType}/{stateKey:.*}", "send", n.putState(true), a.rooms.putState),
		v3("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", "send", perm.AnyUser, a.rooms.send),
		authed("GET", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events", "send", perm.AnyUser, a.delayed.list),
		authed("POST", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}", "send", perm.AnyUser, a.delayed.update("")),
		authed("POST", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/cancel", "send", perm.AnyUser, a.delayed.update("cancel")),
		authed("POST", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/restart", "send", perm.AnyUser, a.delayed.update("restart")),
		authed("POST", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/send", "send", perm.AnyUser, a.delayed.update("send")),
		v3("PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}", "send", perm.AnyUser, a.rooms.redact),
		v3("GET", "/rooms/{roomId}/event/{eventId}", "rooms", perm.AnyUser, a.events.getEvent),
		v3("GET", "/rooms/{roomId}/messages", "messages", perm.AnyUser, a.events.messages),
		v3("GET", "/rooms/{roomId}/context/{eventId}", "messages", perm.AnyUser, a.events.eventContext),
		authed("GET", "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", "messages", perm.AnyUser, a.events.timestampToEvent),
		authed("GET", "/_matrix/client/unstable/org.matrix.msc3030/rooms/{roomId}/timestamp_to_event", "messages", perm.AnyUser, a.events.timestampToEvent),
		v3("GET", "/directory/room/{roomAlias}", "directory", perm.AnyUser, a.directory.getAlias),
		v3("PUT", "/directory/room/{roomAlias}", "directory", perm.AnyUser, a.directory.putAlias),
		v3("DELETE", "/directory/room/{roomAlias}", "directory", perm.AnyUser, a.directory.deleteAlias),
		v3("GET", "/rooms/{roomId}/aliases", "directory", perm.AnyUser, a.directory.roomAliases),
		open("GET", "/_matrix/client/v3/directory/list/room/{roomId}", "directory", perm.Public, a.directory.getDirectoryVisibility),
		v3("PUT", "/directory/list/room/{roomId}", "directory", n.publish(), a.directory.putDirectoryVisibility),

		// Sync and filters.
		v3("GET", "/sync", "sync", perm.AnyUser, a.syncing.syncHandler),
		v3("POST", "/user/{userId}/filter", "filter", perm.AnyUser, a.syncing.postFilter),
		v3("GET", "/user/{userId}/filter/{filterId}", "filter", perm.AnyUser, a.syncing.getFilter),

		// Account data.
		v3("GET", "/user/{userId}/account_data/{type}", "account_data", perm.AnyUser, a.accountData.getAccountData),
		v3("PUT", "/user/{userId}/account_data/{type}", "account_data", perm.AnyUser, a.accountData.putAccountData),
		v3("GET", "/user/{userId}/rooms/{roomId}/account_data/{type}", "account_data", perm.AnyUser, a.accountData.getAccountData),
		v3("PUT", "/user/{userId}/rooms/{roomId}/account_data/{type}", "account_data", perm.AnyUser, a.accountData.putAccountData),
		authed("DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/{userId}/account_data/{type}", "account_data", perm.AnyUser, a.accountData.deleteAccountData),
		authed("DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/{userId}/rooms/{roomId}/account_data/{type}", "account_data", perm.AnyUser, a.accountData.deleteAccountData),

		// Devices.
		v3("GET", "/devices", "devices", perm.AnyUser, a.devices.listDevices),
		v3("GET", "/devices/{deviceId}", "devices", perm.AnyUser, a.devices.getDevice),
		v3("PUT", "/devices/{deviceId}", "devices", perm.AnyUser, a.devices.putDevice),
		v3("DELETE", "/devices/{deviceId}", "devices", perm.AnyUser, a.devices.deleteDevice),
		v3("POST", "/delete_devices", "devices", perm.AnyUser, a.devices.postDeleteDevices),

		// Space hierarchy.
		authed("GET", "/_matrix/client/v1/rooms/{roomId}/hierarchy", "rooms", perm.AnyUser, a.rooms.hierarchy),

		// Key backup. These and the cross-signing uploads predate r0's
		// successor and released SDKs still call them under /unstable
		// (matrix-js-sdk's legacy crypto posts device_signing/upload
		// there; the Rust SDK's request history starts there): v3Unstable.
		v3Unstable("POST", "/room_keys/version", "keybackup", perm.AnyUser, a.keys.createBackupVersion),
		v3Unstable("GET", "/room_keys/version", "keybackup", perm.AnyUser, a.keys.getBackupVersion),
		v3Unstable("GET", "/room_keys/version/{version}", "keybackup", perm.AnyUser, a.keys.getBackupVersion),
		v3Unstable("PUT", "/room_keys/version/{version}", "keybackup", perm.AnyUser, a.keys.putBackupVersion),
		v3Unstable("DELETE", "/room_keys/version/{version}", "keybackup", perm.AnyUser, a.keys.deleteBackupVersion),
		v3Unstable("GET", "/room_keys/keys", "keybackup", perm.AnyUser, a.keys.getBackupKeys),
		v3Unstable("PUT", "/room_keys/keys", "keybackup", perm.AnyUser, a.keys.putBackupKeys),
		v3Unstable("DELETE", "/room_keys/keys", "keybackup", perm.AnyUser, a.keys.deleteBackupKeys),
		v3Unstable("GET", "/room_keys/keys/{roomId}", "keybackup", perm.AnyUser, a.keys.getBackupKeys),
		v3Unstable("PUT", "/room_keys/keys/{roomId}", "keybackup", perm.AnyUser, a.keys.putBackupKeys),
		v3Unstable("DELETE", "/room_keys/keys/{roomId}", "keybackup", perm.AnyUser, a.keys.deleteBackupKeys),
		v3Unstable("GET", "/room_keys/keys/{roomId}/{sessionId}", "keybackup", perm.AnyUser, a.keys.getBackupKeys),
		v3Unstable("PUT", "/room_keys/keys/{roomId}/{sessionId}", "keybackup", perm.AnyUser, a.keys.putBackupKeys),
		v3Unstable("DELETE", "/room_keys/keys/{roomId}/{sessionId}", "keybackup", perm.AnyUser, a.keys.deleteBackupKeys),

		// End-to-end keys.
		v3("POST", "/keys/upload", "keys", perm.AnyUser, a.keys.keysUpload),
		v3("POST", "/keys/query", "keys", perm.AnyUser, a.keys.keysQuery),
		v3("POST", "/keys/claim", "keys", perm.AnyUser, a.keys.keysClaim),
		v3("GET", "/keys/changes", "keys", perm.AnyUser, a.keys.keysChanges),
		v3Unstable("POST", "/keys/device_signing/upload", "keys", perm.AnyUser, a.keys.crossSigningUpload),
		v3Unstable("POST", "/keys/signatures/upload", "keys", perm.AnyUser, a.keys.signaturesUpload),
		authed("PUT", dehydratedPrefix, "keys", perm.AnyUser, a.keys.putDehydratedDevice),
		authed("GET", dehydratedPrefix, "keys", perm.AnyUser, a.keys.getDehydratedDevice),
		authed("DELETE", dehydratedPrefix, "keys", perm.AnyUser, a.keys.deleteDehydratedDevice),
		authed("POST", dehydratedPrefix+"/{deviceId}/events", "keys", perm.AnyUser, a.keys.dehydratedEvents),

		// Knocking.
		v3("POST", "/knock/{roomIdOrAlias}", "membership", n.join("roomIdOrAlias"), a.rooms.knock),

		// Notifications, OpenID, presence.
		v3("GET", "/notifications", "notifications", perm.AnyUser, a.events.getNotifications),
		v3("POST", "/user/{userId}/openid/request_token", "openid", perm.AnyUser, a.accounts.requestOpenIDToken),
		v3("GET", "/presence/{userId}/status", "presence", perm.AnyUser, a.social.getPresence),
		v3("PUT", "/presence/{userId}/status", "presence", perm.AnyUser, a.social.putPresence),

		// Profiles: lookups need no token unless profiles are limited to
		// shared rooms; another server's user needs a token and federate.
		// The handler checks both (through the authorizer for federate).
		open("GET", "/_matrix/client/v3/profile/{userId}", "profile", perm.Public, a.social.getProfile),
		open("GET", "/_matrix/client/v3/profile/{userId}/displayname", "profile", perm.Public, a.social.getProfileField("displayname")),
		open("GET", "/_matrix/client/v3/profile/{userId}/avatar_url", "profile", perm.Public, a.social.getProfileField("avatar_url")),
		open("GET", "/_matrix/client/r0/profile/{userId}", "profile", perm.Public, a.social.getProfile),
		open("GET", "/_matrix/client/r0/profile/{userId}/displayname", "profile", perm.Public, a.social.getProfileField("displayname")),
		open("GET", "/_matrix/client/r0/profile/{userId}/avatar_url", "profile", perm.Public, a.social.getProfileField("avatar_url")),
		v3("PUT", "/profile/{userId}/displayname", "profile", perm.AnyUser, a.social.putProfileField("displayname")),
		v3("PUT", "/profile/{userId}/avatar_url", "profile", perm.AnyUser, a.social.putProfileField("avatar_url")),

		// Public room directory: GET needs no token (the spec lists no
		// security for it); filtering with POST does.
		open("GET", "/_matrix/client/v3/publicRooms", "directory", perm.Public, a.directory.getPublicRooms),
		open("GET", "/_matrix/client/r0/publicRooms", "directory", perm.Public, a.directory.getPublicRooms),
		v3("POST", "/publicRooms", "directory", n.serverParam(), a.directory.postPublicRooms),

		// Push rules and pushers.
		v3("GET", "/pushrules/", "pushrules", perm.AnyUser, a.accountData.getAllPushRules),
		v3("GET", "/pushrules", "pushrules", perm.AnyUser, a.accountData.getAllPushRules),
		v3("GET", "/pushrules/global/", "pushrules", perm.AnyUser, a.accountData.getGlobalPushRules),
		v3("GET", "/pushrules/global", "pushrules", perm.AnyUser, a.accountData.getGlobalPushRules),
		v3("GET", "/pushrules/{scope}/{kind}/{ruleId}", "pushrules", perm.AnyUser, a.accountData.getPushRule),
		v3("PUT", "/pushrules/{scope}/{kind}/{ruleId}", "pushrules", perm.AnyUser, a.accountData.putPushRule),
		v3("DELETE", "/pushrules/{scope}/{kind}/{ruleId}", "pushrules", perm.AnyUser, a.accountData.deletePushRule),
		v3("GET", "/pushrules/{scope}/{kind}/{ruleId}/enabled", "pushrules", perm.AnyUser, a.accountData.getPushRuleEnabled),
		v3("PUT", "/pushrules/{scope}/{kind}/{ruleId}/enabled", "pushrules", perm.AnyUser, a.accountData.putPushRuleEnabled),
		v3("GET", "/pushrules/{scope}/{kind}/{ruleId}/actions", "pushrules", perm.AnyUser, a.accountData.getPushRuleActions),
		v3("PUT", "/pushrules/{scope}/{kind}/{ruleId}/actions", "pushrules", perm.AnyUser, a.accountData.putPushRuleActions),
		v3("GET", "/pushers", "pushers", perm.AnyUser, a.accountData.getPushers),
		v3("POST", "/pushers/set", "pushers", perm.AnyUser, a.accountData.setPusher),

		// Receipts, relations, reports, search.
		v3("POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", "receipts", perm.AnyUser, a.events.postReceipt),
		v3("POST", "/rooms/{roomId}/read_markers", "receipts", perm.AnyUser, a.events.postReadMarkers),
		authed("GET", "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}", "messages", perm.AnyUser, a.events.relations),
		authed("GET", "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}", "messages", perm.AnyUser, a.events.relations),
		authed("GET", "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", "messages", perm.AnyUser, a.events.relations),
		authed("GET", "/_matrix/client/v1/rooms/{roomId}/threads", "messages", perm.AnyUser, a.events.threads),
		// Thread subscriptions (MSC4306) and their changes (MSC4308).
		authed("GET", "/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription", "account_data", perm.AnyUser, a.threadSubs.get),
		authed("PUT", "/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription", "account_data", perm.AnyUser, a.threadSubs.put),
		authed("DELETE", "/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription", "account_data", perm.AnyUser, a.threadSubs.delete),
		authed("GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions", "account_data", perm.AnyUser, a.threadSubs.list),
		v3("POST", "/rooms/{roomId}/report/{eventId}", "report", perm.AnyUser, a.reportEvent),
		v3("POST", "/rooms/{roomId}/report", "report", perm.AnyUser, a.reportRoom),
		v3("POST", "/users/{userId}/report", "report", perm.AnyUser, a.reportUser),
		v3("POST", "/search", "search", perm.AnyUser, a.events.search),

		// Sliding sync.
		authed("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", "sync", perm.AnyUser, a.syncing.slidingHandler),

		// Room summaries (a token is optional; the handler checks it).
		open("GET", "/_matrix/client/v1/room_summary/{roomIdOrAlias}", "rooms", perm.Public, a.rooms.roomSummary(false)),
		open("GET", "/_matrix/client/unstable/im.nheko.summary/rooms/{roomIdOrAlias}/summary", "rooms", perm.Public, a.rooms.roomSummary(true)),
		open("GET", "/_matrix/client/unstable/im.nheko.summary/summary/{roomIdOrAlias}", "rooms", perm.Public, a.rooms.roomSummary(true)),

		// Tags.
		v3("GET", "/user/{userId}/rooms/{roomId}/tags", "account_data", perm.AnyUser, a.accountData.getTags),
		v3("PUT", "/user/{userId}/rooms/{roomId}/tags/{tag}", "account_data", perm.AnyUser, a.accountData.putTag),
		v3("DELETE", "/user/{userId}/rooms/{roomId}/tags/{tag}", "account_data", perm.AnyUser, a.accountData.deleteTag),

		// Third-party lookups and the network directory are the
		// appservices' (enclave/appservice mounts them).
		v3("POST", "/account/3pid", "account", perm.AnyUser, refuse3PID),
		v3("POST", "/account/3pid/add", "account", perm.AnyUser, refuse3PID),
		v3("POST", "/account/3pid/bind", "account", perm.AnyUser, refuse3PID),
		v3("POST", "/account/3pid/delete", "account", perm.AnyUser, refuse3PID),
		v3("POST", "/account/3pid/unbind", "account", perm.AnyUser, refuse3PID),
		open("POST", "/_matrix/client/v3/account/3pid/email/requestToken", "account", perm.Public, refuse3PIDToken),
		open("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", "account", perm.Public, refuse3PIDToken),
		open("POST", "/_matrix/client/r0/account/3pid/email/requestToken", "account", perm.Public, refuse3PIDToken),
		open("POST", "/_matrix/client/r0/account/3pid/msisdn/requestToken", "account", perm.Public, refuse3PIDToken),

		// To-device, typing, upgrades, user directory, VoIP.
		v3("PUT", "/sendToDevice/{eventType}/{txnId}", "todevice", perm.AnyUser, a.keys.sendToDevice),
		v3("PUT", "/rooms/{roomId}/typing/{userId}", "typing", perm.AnyUser, a.events.putTyping),
		v3("POST", "/rooms/{roomId}/upgrade", "rooms", n.upgrade(), a.rooms.upgradeRoom),
		v3("POST", "/user_directory/search", "user_directory", perm.AnyUser, a.directory.searchUserDirectory),
		v3("GET", "/voip/turnServer", "voip", perm.AnyUser, a.turnServer),
	}
}

// route is one row of the route table: exactly one of open, authed and
// raw is set.
type route struct {
	method, path, group string
	need                perm.Requirement
	open                handler
	authed              authedHandler
	raw                 http.HandlerFunc // writes its own response; see HandleRaw
}

// open is an endpoint that needs no access token.
func open(method, path, group string, need perm.Requirement, h handler) []route {
	return []route{{method: method, path: path, group: group, need: need, open: h}}
}

// authed is an endpoint that needs a valid access token.
func authed(method, path, group string, need perm.Requirement, h authedHandler) []route {
	return []route{{method: method, path: path, group: group, need: need, authed: h}}
}

// v3 is an authenticated endpoint under /_matrix/client/v3 and its r0
// alias.
func v3(method, path, group string, need perm.Requirement, h authedHandler) []route {
	return append(authed(method, "/_matrix/client/v3"+path, group, need, h), authed(method, "/_matrix/client/r0"+path, group, need, h)...)
}

// v3Unstable is v3 plus the same row under /_matrix/client/unstable, for
// endpoints released SDKs still call there: same handler, same permission.
func v3Unstable(method, path, group string, need perm.Requirement, h authedHandler) []route {
	return append(v3(method, path, group, need, h), authed(method, "/_matrix/client/unstable"+path, group, need, h)...)
}

// openV3 is an open endpoint under /_matrix/client/v3 and its r0 alias.
func openV3(method, path, group string, need perm.Requirement, h handler) []route {
	return append(open(method, "/_matrix/client/v3"+path, group, need, h), open(method, "/_matrix/client/r0"+path, group, need, h)...)
}

// ---------------------------------------------------------------------------
// Requirements that depend on the request. Each declares every permission
// it may add (perm.Dynamic's may), so the route-table tests can reach them.
// A body that cannot be read or parsed adds nothing: the handler refuses
// it with the spec's error before acting on it.

// needs holds what the request-dependent requirements look at.
type needs struct {
	serverName string
	db         *storage.DB
	rs         roomserver.API
}

func (n needs) remoteUser(userID string) bool {
	_, domain, ok := strings.Cut(userID, ":")
	return ok && domain != "" && !strings.EqualFold(domain, n.serverName)
}

// createRoom: create_room; create_public_room for a room anyone may join
// or that is published (visibility public, preset public_chat, or a
// public join rule in initial_state); inviting a remote user needs
// invite_remote_users and federate.
func (n needs) createRoom() perm.Requirement {
	return perm.Dynamic("createRoom", []perm.Permission{perm.CreatePublicRoom, perm.InviteRemoteUsers, perm.Federate}, func(r *http.Request) ([]perm.Permission, error) {
		var req createRoomRequest
		if !peekBody(r, &req) {
			return nil, nil
		}
		var out []perm.Permission
		public := req.Visibility == "public" || req.Preset == "public_chat"
		for _, is := range req.InitialState {
			if is.Type == "m.room.join_rules" && is.StateKey == "" && is.Content["join_rule"] == "public" {
				public = true
			}
		}
		if public {
			out = append(out, perm.CreatePublicRoom)
		}
		for _, u := range req.Invite {
			if n.remoteUser(u) {
				return append(out, perm.InviteRemoteUsers, perm.Federate), nil
			}
		}
		return out, nil
	}, perm.CreateRoom)
}

// join (and knock): join_remote_rooms and federate when the room is one
// this server does not have, or an alias of another server.
func (n needs) join(param string) perm.Requirement {
	return perm.Dynamic("join", []perm.Permission{perm.JoinRemoteRooms, perm.Federate}, func(r *http.Request) ([]perm.Permission, error) {
		remote, err := n.remoteRoom(r.Context(), httpapi.Vars(r)[param])
		if err != nil || !remote {
			return nil, err
		}
		return []perm.Permission{perm.JoinRemoteRooms, perm.Federate}, nil
	})
}

// remoteRoom reports whether target (a room ID or alias) names a room this
// server does not have. A local alias that names nothing is not remote
// (the handler answers 404).
func (n needs) remoteRoom(ctx context.Context, target string) (bool, error) {
	if strings.HasPrefix(target, "#") {
		if _, domain, ok := strings.Cut(target, ":"); ok && !strings.EqualFold(domain, n.serverName) {
			return true, nil
		}
		id, _, err := storage.GetAlias(ctx, n.db, target)
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		target = id
	}
	_, err := storage.GetRoom(ctx, n.db, target)
	if errors.Is(err, storage.ErrNotFound) {
		return true, nil
	}
	return false, err
}

// invite: invite_remote_users and federate for a remote invitee.
func (n needs) invite() perm.Requirement {
	return perm.Dynamic("invite", []perm.Permission{perm.InviteRemoteUsers, perm.Federate}, func(r *http.Request) ([]perm.Permission, error) {
		var body struct {
			UserID string `json:"user_id"`
		}
		if peekBody(r, &body) && n.remoteUser(body.UserID) {
			return []perm.Permission{perm.InviteRemoteUsers, perm.Federate}, nil
		}
		return nil, nil
	})
}

// putState: inviting a remote user through their member event needs
// invite_remote_users and federate; making a room joinable by anyone (a
// public join rule) needs create_public_room, as creating it so would.
// keyed is the route with a state key in its path (only it can name a
// member).
func (n needs) putState(keyed bool) perm.Requirement {
	name, may := "putStateNoKey", []perm.Permission{perm.CreatePublicRoom}
	if keyed {
		name, may = "putState", []perm.Permission{perm.CreatePublicRoom, perm.InviteRemoteUsers, perm.Federate}
	}
	return perm.Dynamic(name, may, func(r *http.Request) ([]perm.Permission, error) {
		v := httpapi.Vars(r)
		switch v["eventType"] {
		case "m.room.member":
			var body struct {
				Membership string `json:"membership"`
			}
			if n.remoteUser(v["stateKey"]) && peekBody(r, &body) && body.Membership == "invite" {
				return []perm.Permission{perm.InviteRemoteUsers, perm.Federate}, nil
			}
		case "m.room.join_rules":
			var body struct {
				JoinRule any `json:"join_rule"`
			}
			if v["stateKey"] == "" && peekBody(r, &body) && body.JoinRule == "public" {
				return []perm.Permission{perm.CreatePublicRoom}, nil
			}
		}
		return nil, nil
	})
}

// publish: listing a room in the public directory needs
// create_public_room.
func (n needs) publish() perm.Requirement {
	return perm.Dynamic("publish", []perm.Permission{perm.CreatePublicRoom}, func(r *http.Request) ([]perm.Permission, error) {
		var body struct {
			Visibility string `json:"visibility"`
		}
		if peekBody(r, &body) && body.Visibility == "public" {
			return []perm.Permission{perm.CreatePublicRoom}, nil
		}
		return nil, nil
	})
}

// upgrade creates a room: create_room, and create_public_room when the
// old room is public (its join rule and directory listing carry over).
func (n needs) upgrade() perm.Requirement {
	return perm.Dynamic("upgrade", []perm.Permission{perm.CreatePublicRoom}, func(r *http.Request) ([]perm.Permission, error) {
		roomID := httpapi.Vars(r)["roomId"]
		room, err := storage.GetRoom(r.Context(), n.db, roomID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, nil // the handler answers for an unknown room
		} else if err != nil {
			return nil, err
		}
		public := room.IsPublic
		if !public {
			st, err := n.rs.CurrentState(r.Context(), roomID)
			if errors.Is(err, roomserver.ErrRoomNotFound) {
				return nil, nil
			} else if err != nil {
				return nil, err
			}
			public = contentMap(st.Get("m.room.join_rules", ""))["join_rule"] == "public"
		}
		if public {
			return []perm.Permission{perm.CreatePublicRoom}, nil
		}
		return nil, nil
	}, perm.CreateRoom)
}

// serverParam: asking another server's directory needs federate.
func (n needs) serverParam() perm.Requirement {
	return perm.Dynamic("serverParam", []perm.Permission{perm.Federate}, func(r *http.Request) ([]perm.Permission, error) {
		if s := r.URL.Query().Get("server"); s != "" && !strings.EqualFold(s, n.serverName) {
			return []perm.Permission{perm.Federate}, nil
		}
		return nil, nil
	})
}

// peekBody decodes the JSON body into v and puts it back for the handler
// (with the read error, if any, so the handler answers it as it would).
func peekBody(r *http.Request, v any) bool {
	if r.Body == nil {
		return false
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), errReader{err}))
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	if len(b) == 0 {
		b = []byte("{}")
	}
	return json.Unmarshal(b, v) == nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
