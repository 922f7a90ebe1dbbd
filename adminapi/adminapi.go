package adminapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/internal/rbac"
	"enclave/mediaapi"
	"enclave/roomserver"
	"enclave/storage"
)

// MediaAdmin is what the admin API needs of the media repository
// (mediaapi.Repo implements it).
type MediaAdmin interface {
	DeleteMedia(ctx context.Context, serverName, mediaID string) error
	QuarantineMedia(ctx context.Context, serverName, mediaID string) error
	UnquarantineMedia(ctx context.Context, serverName, mediaID string) error
	DeleteUserMedia(ctx context.Context, userID string) (int, error)
	ListUserMedia(ctx context.Context, userID string) ([]mediaapi.MediaInfo, error)
	MediaDetails(ctx context.Context, serverName, mediaID string) (*mediaapi.MediaDetails, error)
	DeleteMatching(ctx context.Context, f mediaapi.MediaFilter) ([]string, error)
	UserMediaStats(ctx context.Context, fromTS, untilTS int64) ([]mediaapi.UserMediaStat, error)
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
	PurgeHistoryKeeping(ctx context.Context, roomID string, beforeTS, beforePos int64, keepServer string, inTx func(tx *storage.Tx, events int64) error) (int64, error)
	PDU(e *storage.Event) (gomatrixserverlib.PDU, error)
}

// ClientAPI is what the admin API needs of the client API: its listener to
// mount on, and the account actions that reach its token cache and rooms
// (clientapi.API implements it).
type ClientAPI interface {
	httpapi.Routes
	InvalidateUserTokens(userID string)
	LeaveAllRooms(ctx context.Context, userID string)
	IssueAdminToken(ctx context.Context, userID, displayName string, validUntil int64, inTx func(tx *storage.Tx, deviceID string) error) (token, deviceID string, err error)
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
	// AppServices returns the registered appservices, or nil.
	AppServices func() AppServices
	// Retention is the server-wide retention policy.
	Retention RetentionPolicy
	// Metrics is where the retention job's counter is registered (nil:
	// nowhere, as in tests).
	Metrics prometheus.Registerer
	// Destinations returns the federation outbound queue, or nil when
	// federation is off.
	Destinations func() Destinations
	// NotifyUser wakes the user's syncs after an account data change made
	// here (the server-notice room's tag); nil wakes none.
	NotifyUser func(userID string)
}

// API serves the admin endpoints.
type API struct {
	Options
	deletes sync.Map // delete_id -> *deleteStatus
	// Handler groups with their own dependencies.
	reports *reports
	grants  *roleGrants
	// retentionPurged counts the events retention deleted.
	retentionPurged prometheus.Counter
	media           *mediaAdmin
	fed             *federationAdmin
	roomOps         *roomOps
	userOps         *userOps
	appsvcs         appServices
}

// New builds the admin API; Register mounts it.
func New(o Options) *API {
	a := &API{Options: o, retentionPurged: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "enclave", Subsystem: "retention", Name: "purged_events_total",
		Help: "Timeline events deleted by the retention job (room or server-wide max_lifetime).",
	})}
	if o.Metrics != nil {
		o.Metrics.MustRegister(a.retentionPurged)
	}
	a.reports = &reports{db: o.DB, rooms: o.Rooms, record: a.record}
	a.appsvcs = appServices{get: o.AppServices}
	a.grants = &roleGrants{db: o.DB, rbac: o.RBAC, record: a.record, rolesBody: a.rolesBody}
	a.media = &mediaAdmin{db: o.DB, serverName: o.ServerName, media: o.Media, audit: o.Audit}
	a.fed = &federationAdmin{db: o.DB, dests: o.Destinations, audit: o.Audit}
	a.roomOps = &roomOps{db: o.DB, rooms: o.Rooms, serverName: o.ServerName, record: a.record, audit: o.Audit}
	a.userOps = &userOps{db: o.DB, client: o.Client, loadUser: a.loadUser, record: a.record}
	if o.RBAC != nil {
		a.userOps.can = o.RBAC.Can
	}
	return a
}

type handler func(r *http.Request, dev *httpapi.Device) httpapi.Response

// Register mounts every endpoint on the client listener, each with the
// permissions it needs: use_admin_api always, plus manage_users,
// manage_rooms or manage_roles by what it touches.
func (a *API) Register() error {
	const s1, s2, e1 = "/_synapse/admin/v1", "/_synapse/admin/v2", "/_enclave/admin/v1"
	admin := perm.Needs(perm.UseAdminAPI)
	users := perm.Needs(perm.UseAdminAPI, perm.ManageUsers)
	rooms := perm.Needs(perm.UseAdminAPI, perm.ManageRooms)
	roles := perm.Needs(perm.UseAdminAPI, perm.ManageRoles)
	var errs []error
	route := func(method, path string, need perm.Requirement, h handler) {
		errs = append(errs, a.route(method, path, need, h))
	}
	route("GET", s1+"/server_version", admin, a.serverVersion)

	// Users.
	route("GET", s2+"/users", users, a.listUsers)
	route("GET", s2+"/users/{userId}", users, a.getUser)
	route("GET", "/_synapse/admin/v3/users/{userId}", users, a.getUser) // synapse-admin reads v3; same shape here
	route("PUT", s2+"/users/{userId}", users, a.putUser)
	route("POST", s1+"/deactivate/{userId}", users, a.deactivate)
	route("POST", s1+"/reset_password/{userId}", users, a.resetPassword)
	route("GET", s1+"/whois/{userId}", users, a.whois)
	route("GET", s1+"/users/{userId}/joined_rooms", users, a.joinedRooms)
	route("GET", s1+"/users/{userId}/admin", users, a.getUserAdmin)
	route("PUT", s1+"/users/{userId}/admin", users, a.putUserAdmin)
	route("GET", s2+"/users/{userId}/devices", users, a.userDevices)
	route("GET", s1+"/users/{userId}/pushers", users, a.userPushers)
	route("GET", s1+"/users/{userId}/media", users, a.userMedia)
	route("DELETE", s1+"/users/{userId}/media", users, a.deleteUserMedia)
	route("GET", s1+"/username_available", users, a.usernameAvailable)
	route("POST", s1+"/users/{userId}/login", perm.Needs(perm.UseAdminAPI, perm.ManageUsers, perm.LoginAsUser), a.userOps.login)
	route("POST", s1+"/users/{userId}/shadow_ban", users, a.userOps.shadowBan(true))
	route("DELETE", s1+"/users/{userId}/shadow_ban", users, a.userOps.shadowBan(false))

	// Rooms.
	route("GET", s1+"/rooms", rooms, a.listRooms)
	route("GET", s1+"/rooms/{roomId}", rooms, a.getRoom)
	route("GET", s1+"/rooms/{roomId}/members", rooms, a.roomMembers)
	route("GET", s1+"/rooms/{roomId}/state", rooms, a.roomState)
	route("DELETE", s1+"/rooms/{roomId}", rooms, a.deleteRoomV1)
	route("DELETE", s2+"/rooms/{roomId}", rooms, a.deleteRoomV2)
	route("GET", s2+"/rooms/{roomId}/delete_status", rooms, a.deleteStatusByRoom)
	route("GET", s2+"/rooms/delete_status/{deleteId}", rooms, a.deleteStatusByID)
	route("GET", s1+"/rooms/{roomId}/block", rooms, a.getRoomBlock)
	route("PUT", s1+"/rooms/{roomId}/block", rooms, a.putRoomBlock)
	route("GET", s1+"/rooms/{roomId}/messages", rooms, a.roomOps.messages)
	route("POST", s1+"/rooms/{roomId}/make_room_admin", rooms, a.roomOps.makeRoomAdmin)
	route("POST", s1+"/purge_history/{roomId}", rooms, a.roomOps.purgeHistory)
	route("GET", s1+"/purge_history_status/{purgeId}", rooms, a.roomOps.purgeStatus)
	route("GET", s1+"/statistics/database/rooms", rooms, a.roomOps.databaseRooms)

	// Registration tokens.
	route("GET", s1+"/registration_tokens", users, a.listRegTokens)
	route("POST", s1+"/registration_tokens/new", users, a.newRegToken)
	route("GET", s1+"/registration_tokens/{token}", users, a.getRegToken)
	route("PUT", s1+"/registration_tokens/{token}", users, a.putRegToken)
	route("DELETE", s1+"/registration_tokens/{token}", users, a.deleteRegToken)

	// Media (synadm sends a trailing slash).
	for _, p := range []string{"", "/"} {
		route("POST", s1+"/media/quarantine/{serverName}/{mediaId}"+p, rooms, a.mediaOp("quarantine"))
		route("POST", s1+"/media/unquarantine/{serverName}/{mediaId}"+p, rooms, a.mediaOp("unquarantine"))
		route("DELETE", s1+"/media/{serverName}/{mediaId}"+p, rooms, a.mediaOp("delete"))
	}
	route("POST", s1+"/media/{serverName}/delete", rooms, a.media.deleteBefore)
	route("POST", s1+"/media/delete", rooms, a.media.deleteBefore)
	route("GET", s1+"/media/{serverName}/{mediaId}", rooms, a.media.info)
	route("GET", s1+"/room/{roomId}/media", rooms, a.media.roomMedia)
	route("POST", s1+"/purge_media_cache", rooms, a.media.purgeCache)
	route("GET", s1+"/statistics/users/media", rooms, a.media.userStats)

	// Federation.
	route("GET", s1+"/federation/destinations", rooms, a.fed.list)
	route("GET", s1+"/federation/destinations/{destination}", rooms, a.fed.get)
	route("GET", s1+"/federation/destinations/{destination}/rooms", rooms, a.fed.rooms)
	route("POST", s1+"/federation/destinations/{destination}/reset_connection", rooms, a.fed.reset)

	// Event reports.
	route("GET", s1+"/event_reports", rooms, a.reports.list)
	route("GET", s1+"/event_reports/{reportId}", rooms, a.reports.get)
	route("DELETE", s1+"/event_reports/{reportId}", rooms, a.reports.delete)

	// Server notices.
	route("POST", s1+"/send_server_notice", users, a.sendServerNotice)
	route("PUT", s1+"/send_server_notice/{txnId}", users, a.sendServerNotice)

	// Enclave extensions.
	route("GET", e1+"/roles", roles, a.listRoles)
	route("GET", e1+"/users/{userId}/roles", roles, a.getUserRoles)
	route("PUT", e1+"/users/{userId}/roles", roles, a.putUserRoles)
	route("GET", e1+"/role_grants", roles, a.grants.list)
	route("POST", e1+"/role_grants/{grantId}/approve", roles, a.grants.approve)
	route("DELETE", e1+"/role_grants/{grantId}", roles, a.grants.cancel)
	route("GET", e1+"/legal_holds", rooms, a.listLegalHolds)
	route("PUT", e1+"/legal_holds/{scope}/{target}", rooms, a.putLegalHold)
	route("DELETE", e1+"/legal_holds/{scope}/{target}", perm.Needs(perm.UseAdminAPI, perm.LiftLegalHold), a.deleteLegalHold)
	route("POST", e1+"/retention/run", rooms, a.runRetention)
	route("GET", e1+"/appservices", perm.Needs(perm.UseAdminAPI, perm.ManageAppServices), a.appsvcs.list)
	errs = append(errs, a.Client.HandleRaw("GET", e1+"/rooms/{roomId}/export", "admin", rooms, a.exportRoom))
	return errors.Join(errs...)
}

// route registers an admin endpoint whose every call is audited. A read
// whose call cannot be recorded is not answered.
func (a *API) route(method, path string, need perm.Requirement, h handler) error {
	return a.Client.HandleAuthed(method, path, "admin", need, func(r *http.Request, dev *httpapi.Device) httpapi.Response {
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
