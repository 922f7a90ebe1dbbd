// Package adminapi is the server administration API: the Synapse admin
// API paths and shapes that tools such as synadm and synapse-admin use
// (/_synapse/admin/...), and Enclave's own extensions under
// /_enclave/admin/v1 (roles, legal holds).
//
// Every endpoint is authorised by RBAC (internal/rbac's rule table: admin
// API use plus manage_users, manage_rooms or manage_roles). Every call is
// recorded in the audit trail (admin.call, with its outcome), and every
// change also records its own entry inside the transaction that makes it.
package adminapi

import (
	"context"
	"net/http"
	"strings"
	"sync"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/rbac"
	"enclave/roomserver"
	"enclave/storage"
)

// MediaAdmin is what the admin API needs of the media repository
// (mediaapi.Repo implements it).
type MediaAdmin interface {
	DeleteMedia(ctx context.Context, serverName, mediaID string) error
	QuarantineMedia(ctx context.Context, serverName, mediaID string) error
	UnquarantineMedia(ctx context.Context, serverName, mediaID string) error
}

// Rooms is what the admin API asks of the room server: the reads and
// local events of its room endpoints, and the purges, which only the room
// server may run (under the room lock, keeping its caches true). inTx runs
// in the purge's transaction, for the audit entry and the block.
type Rooms interface {
	CreateRoom(ctx context.Context, req roomserver.CreateRoomRequest) (string, error)
	SendEvent(ctx context.Context, req roomserver.SendRequest) (*storage.Event, error)
	CurrentState(ctx context.Context, roomID string) (roomserver.StateMap, error)
	Membership(ctx context.Context, roomID, userID string) (string, error)
	PurgeRoom(ctx context.Context, roomID string, inTx func(tx *storage.Tx, events int64) error) (int64, error)
	PurgeHistory(ctx context.Context, roomID string, beforeTS int64, inTx func(tx *storage.Tx, events int64) error) (int64, error)
}

// ClientAPI is what the admin API needs of the client API: its listener to
// mount on, and the account actions that reach its token cache and rooms
// (clientapi.API implements it).
type ClientAPI interface {
	httpapi.Routes
	InvalidateUserTokens(userID string)
	LeaveAllRooms(ctx context.Context, userID string)
}

// Options are the admin API's dependencies.
type Options struct {
	DB         *storage.DB
	Rooms      Rooms
	Client     ClientAPI
	RBAC       *rbac.RBAC
	Audit      *auditapi.Log
	ServerName string
	Version    string
	// Media returns the media repository, or nil if there is none.
	Media func() MediaAdmin
	// Retention is the server-wide retention policy.
	Retention RetentionPolicy
}

// API serves the admin endpoints.
type API struct {
	Options
	deletes sync.Map // delete_id -> *deleteStatus
}

// New builds the admin API; Register mounts it.
func New(o Options) *API { return &API{Options: o} }

type handler func(r *http.Request, dev *httpapi.Device) httpapi.Response

// Register mounts every endpoint on the client listener.
func (a *API) Register() {
	const s1, s2, e1 = "/_synapse/admin/v1", "/_synapse/admin/v2", "/_enclave/admin/v1"
	a.route("GET", s1+"/server_version", a.serverVersion)

	// Users.
	a.route("GET", s2+"/users", a.listUsers)
	a.route("GET", s2+"/users/{userId}", a.getUser)
	a.route("PUT", s2+"/users/{userId}", a.putUser)
	a.route("POST", s1+"/deactivate/{userId}", a.deactivate)
	a.route("POST", s1+"/reset_password/{userId}", a.resetPassword)
	a.route("GET", s1+"/whois/{userId}", a.whois)
	a.route("GET", s1+"/users/{userId}/joined_rooms", a.joinedRooms)
	a.route("GET", s1+"/users/{userId}/admin", a.getUserAdmin)
	a.route("PUT", s1+"/users/{userId}/admin", a.putUserAdmin)
	a.route("GET", s2+"/users/{userId}/devices", a.userDevices)

	// Rooms.
	a.route("GET", s1+"/rooms", a.listRooms)
	a.route("GET", s1+"/rooms/{roomId}", a.getRoom)
	a.route("GET", s1+"/rooms/{roomId}/members", a.roomMembers)
	a.route("GET", s1+"/rooms/{roomId}/state", a.roomState)
	a.route("DELETE", s1+"/rooms/{roomId}", a.deleteRoomV1)
	a.route("DELETE", s2+"/rooms/{roomId}", a.deleteRoomV2)
	a.route("GET", s2+"/rooms/{roomId}/delete_status", a.deleteStatusByRoom)
	a.route("GET", s2+"/rooms/delete_status/{deleteId}", a.deleteStatusByID)
	a.route("GET", s1+"/rooms/{roomId}/block", a.getRoomBlock)
	a.route("PUT", s1+"/rooms/{roomId}/block", a.putRoomBlock)

	// Registration tokens.
	a.route("GET", s1+"/registration_tokens", a.listRegTokens)
	a.route("POST", s1+"/registration_tokens/new", a.newRegToken)
	a.route("GET", s1+"/registration_tokens/{token}", a.getRegToken)
	a.route("PUT", s1+"/registration_tokens/{token}", a.putRegToken)
	a.route("DELETE", s1+"/registration_tokens/{token}", a.deleteRegToken)

	// Media (synadm sends a trailing slash).
	for _, p := range []string{"", "/"} {
		a.route("POST", s1+"/media/quarantine/{serverName}/{mediaId}"+p, a.mediaOp("quarantine"))
		a.route("POST", s1+"/media/unquarantine/{serverName}/{mediaId}"+p, a.mediaOp("unquarantine"))
		a.route("DELETE", s1+"/media/{serverName}/{mediaId}"+p, a.mediaOp("delete"))
	}

	// Server notices.
	a.route("POST", s1+"/send_server_notice", a.sendServerNotice)
	a.route("PUT", s1+"/send_server_notice/{txnId}", a.sendServerNotice)

	// Enclave extensions.
	a.route("GET", e1+"/roles", a.listRoles)
	a.route("GET", e1+"/users/{userId}/roles", a.getUserRoles)
	a.route("PUT", e1+"/users/{userId}/roles", a.putUserRoles)
	a.route("GET", e1+"/legal_holds", a.listLegalHolds)
	a.route("PUT", e1+"/legal_holds/{scope}/{target}", a.putLegalHold)
	a.route("DELETE", e1+"/legal_holds/{scope}/{target}", a.deleteLegalHold)
	a.route("POST", e1+"/retention/run", a.runRetention)
	a.Client.HandleRaw("GET", e1+"/rooms/{roomId}/export", "admin", a.exportRoom)
}

// route registers an admin endpoint whose every call is audited. A read
// whose call cannot be recorded is not answered.
func (a *API) route(method, path string, h handler) {
	a.Client.HandleAuthed(method, path, "admin", func(r *http.Request, dev *httpapi.Device) httpapi.Response {
		resp := h(r, dev)
		code := resp.Code
		if code == 0 {
			code = http.StatusOK
		}
		outcome := auditapi.OutcomeSuccess
		if code >= 400 {
			outcome = auditapi.OutcomeFailure
		}
		target := r.URL.Path
		if tok := vars(r, "token"); tok != "" {
			// Registration tokens are secrets: keep only a recognisable prefix.
			target = strings.Replace(target, tok, tokenRef(tok), 1)
		}
		err := a.Audit.Record(r.Context(), a.DB, auditapi.Entry{
			Actor:   auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
			Action:  auditapi.ActionAdminCall,
			Target:  target,
			Outcome: outcome,
			Details: map[string]any{"method": method, "route": path, "status": code},
		})
		if err != nil {
			if method == http.MethodGet {
				return httpapi.InternalError(r, err)
			}
			logrus.WithError(err).WithField("path", r.URL.Path).Error("admin: recording the call (its change was recorded with it)")
		}
		return resp
	})
}

func (a *API) serverVersion(r *http.Request, _ *httpapi.Device) httpapi.Response {
	return httpapi.JSON(http.StatusOK, map[string]any{"server_version": a.Version})
}

// vars returns a path variable.
func vars(r *http.Request, name string) string { return mux.Vars(r)[name] }

// isLocalUser reports whether userID is a well-formed user of this server.
func (a *API) isLocalUser(userID string) bool {
	local, server, ok := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return ok && strings.HasPrefix(userID, "@") && local != "" && server == a.ServerName
}

// record writes an audit entry for a change inside its transaction.
func (a *API) record(ctx context.Context, tx *storage.Tx, dev *httpapi.Device, e auditapi.Entry) error {
	if e.Actor.UserID == "" {
		e.Actor = auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}
	}
	return a.Audit.Record(ctx, tx, e)
}

func badParam(format string, args ...any) httpapi.Response {
	return httpapi.InvalidParam(format, args...)
}
