package clientapi

// Application services as the client API sees them: an as_token is a
// bearer token acting as the appservice's sender or, with ?user_id=, as a
// user of its namespace (masquerading); puppets are registered with
// m.login.application_service; exclusive namespaces are closed to ordinary
// registration and alias creation; ?ts= sets an appservice's event time.

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// AppServices is what the client API asks of the registered appservices
// (enclave/appservice implements it; the assembly connects them).
type AppServices interface {
	// ByToken finds the appservice whose as_token this is (compared in
	// constant time) and its sender's user ID.
	ByToken(token string) (id, sender string, ok bool)
	// MayMasquerade reports whether appservice id may act as userID: the
	// user is in its user namespace.
	MayMasquerade(id, userID string) bool
	// ExclusiveUserOwner and ExclusiveAliasOwner name the appservice that
	// reserves the ID exclusively, or "".
	ExclusiveUserOwner(userID string) string
	ExclusiveAliasOwner(alias string) string
	// RateLimited reports whether appservice id's requests are rate
	// limited (its registration's rate_limited; bridges mostly say no).
	RateLimited(id string) bool
	// MasqueradesDevices reports whether appservice id may name a device
	// with ?device_id= (MSC3202/MSC4326); ManagesDevices whether it
	// creates and deletes its users' devices without login or UIA
	// (MSC4190).
	MasqueradesDevices(id string) bool
	ManagesDevices(id string) bool
	// Wake tells the appservices' senders that something they push may
	// have been stored (to-device messages for their devices).
	Wake()
	// QueryUser asks the appservices whose namespace holds userID, a
	// local user, whether it exists if it has no account yet; true when
	// the account exists afterwards. Called before an invite or a profile
	// lookup names the user.
	QueryUser(ctx context.Context, userID string) bool
	// QueryAlias asks the appservices whose namespace holds alias, a local
	// alias naming no room; true when one made it (resolve it again).
	QueryAlias(ctx context.Context, alias string) bool
}

// queryUser is AppServices.QueryUser when appservices are installed.
func queryUser(ctx context.Context, as AppServices, userID string) bool {
	return as != nil && as.QueryUser(ctx, userID)
}

// resolveLocalAlias looks up a local alias, asking the appservices about
// one that names nothing (their alias query) and looking again.
func resolveLocalAlias(ctx context.Context, db *storage.DB, as AppServices, alias string) (string, error) {
	roomID, _, err := storage.GetAlias(ctx, db, alias)
	if errors.Is(err, storage.ErrNotFound) && as != nil && as.QueryAlias(ctx, alias) {
		roomID, _, err = storage.GetAlias(ctx, db, alias)
	}
	return roomID, err
}

// rateLimited reports whether dev's requests go through the limiter.
func (ac *accounts) rateLimited(dev *httpapi.Device) bool {
	return dev.AppService == "" || ac.appservices.RateLimited(dev.AppService)
}

const appServiceLoginType = "m.login.application_service"

// appServiceToken returns the appservice whose as_token the request
// carries, if any.
func (ac *accounts) appServiceToken(r *http.Request) (id string, ok bool) {
	if ac.appservices == nil {
		return "", false
	}
	token := r.URL.Query().Get("access_token")
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		token = strings.TrimPrefix(h, "Bearer ")
	}
	id, _, ok = ac.appservices.ByToken(token)
	return id, ok
}

func exclusive(msg string) httpapi.Response {
	return httpapi.Errf(http.StatusBadRequest, "M_EXCLUSIVE", "%s", msg)
}

// authenticateAppService is the device of a request made with an as_token:
// no device, the sender or the masqueraded user.
func (ac *accounts) authenticateAppService(r *http.Request, id, sender string) (*httpapi.Device, httpapi.Response, bool) {
	userID := sender
	if u := r.URL.Query().Get("user_id"); u != "" && u != sender {
		if !ac.appservices.MayMasquerade(id, u) {
			return nil, httpapi.Errf(http.StatusForbidden, "M_EXCLUSIVE", "the application service may not act as %s", u), false
		}
		acc, err := storage.GetAccount(r.Context(), ac.db, u)
		if err != nil || acc.Deactivated {
			return nil, httpapi.Forbidden("the application service has not registered %s", u), false
		}
		userID = u
	}
	dev := &httpapi.Device{UserID: userID, AppService: id}
	if resp, ok := ac.masqueradeDevice(r, dev); !ok {
		return nil, resp, false
	}
	if resp, ok := ac.noteAppServiceAddress(r, dev); !ok {
		return nil, resp, false
	}
	return dev, httpapi.Response{}, true
}

// masqueradeDevice applies ?device_id= (or MSC3202's
// org.matrix.msc3202.device_id): the request acts as that device of the
// user, which must exist. Ignored for appservices that do not manage
// devices, as the parameter is unknown to them.
func (ac *accounts) masqueradeDevice(r *http.Request, dev *httpapi.Device) (httpapi.Response, bool) {
	q := r.URL.Query()
	d := q.Get("org.matrix.msc3202.device_id")
	if d == "" {
		d = q.Get("device_id")
	}
	if d == "" || !ac.appservices.MasqueradesDevices(dev.AppService) {
		return httpapi.Response{}, true
	}
	if _, err := storage.GetDevice(r.Context(), ac.db, dev.UserID, d); errors.Is(err, storage.ErrNotFound) {
		return httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN_DEVICE", "%s has no device %s", dev.UserID, d), false
	} else if err != nil {
		return httpapi.InternalError(r, err), false
	}
	dev.DeviceID = d
	return httpapi.Response{}, true
}

// asSeenMax bounds the addresses remembered; past it the memory restarts
// (and the next use from each address is audited again).
const asSeenMax = 4096

// noteAppServiceAddress audits the first use of an as_token from each
// address (since start): a bridge's token used from elsewhere stands out.
func (ac *accounts) noteAppServiceAddress(r *http.Request, dev *httpapi.Device) (httpapi.Response, bool) {
	ip := requestIP(r)
	key := dev.AppService + "|" + ip
	ac.asSeenMu.Lock()
	seen := ac.asSeen[key]
	ac.asSeenMu.Unlock()
	if seen {
		return httpapi.Response{}, true
	}
	err := ac.opts.Audit.Record(r.Context(), ac.db, auditapi.Entry{Actor: RequestActor(r, dev), Action: auditapi.ActionAppServiceAddress,
		Target: dev.AppService, Details: map[string]any{"appservice": dev.AppService, "ip": ip}})
	if err != nil {
		return httpapi.InternalError(r, err), false
	}
	ac.asSeenMu.Lock()
	if ac.asSeen == nil || len(ac.asSeen) >= asSeenMax {
		ac.asSeen = map[string]bool{}
	}
	ac.asSeen[key] = true
	ac.asSeenMu.Unlock()
	return httpapi.Response{}, true
}

// registerAppServiceUser is POST /register with m.login.application_service:
// the appservice creates a user of its namespace, with no password.
func (ac *accounts) registerAppServiceUser(r *http.Request, asID string, req registerRequest) httpapi.Response {
	username := strings.ToLower(req.Username)
	if resp, ok := ac.checkNewLocalpart(username); !ok {
		return resp
	}
	userID := ac.userID(username)
	dev := &httpapi.Device{UserID: userID, AppService: asID}
	if !ac.appservices.MayMasquerade(asID, userID) {
		return exclusive("the user ID is not in the application service's namespace")
	}
	now := time.Now()
	ctx := auditapi.WithActor(r.Context(), RequestActor(r, dev))
	var issued *issuedSession
	err := ac.db.WithTx(ctx, func(tx *storage.Tx) error {
		created, err := storage.CreateAccount(ctx, tx, &storage.Account{UserID: userID, Localpart: username, CreatedTS: now.UnixMilli(), DisplayName: username})
		if err != nil {
			return err
		}
		if !created {
			return errRegUserInUse
		}
		if err := ac.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: RequestActor(r, dev), Action: auditapi.ActionRegister, Target: userID,
			Details: map[string]any{"kind": "appservice", "appservice": dev.AppService}}); err != nil {
			return err
		}
		if req.InhibitLogin {
			return nil
		}
		issued, err = ac.issueSession(ctx, tx, userID, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken, now)
		return err
	})
	if err == errRegUserInUse {
		return userInUse()
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	out := &sessionResponse{UserID: userID, HomeServer: ac.opts.ServerName}
	if issued != nil {
		out.AccessToken, out.DeviceID, out.RefreshToken, out.ExpiresInMs = issued.AccessToken, issued.DeviceID, issued.RefreshToken, issued.ExpiresInMs
	}
	return httpapi.JSON(http.StatusOK, out)
}

// userReserved refuses an ordinary registration inside an exclusive
// namespace.
func (ac *accounts) userReserved(userID string) (httpapi.Response, bool) {
	if ac.appservices != nil && ac.appservices.ExclusiveUserOwner(userID) != "" {
		return exclusive("the user ID is reserved by an application service"), false
	}
	return httpapi.Response{}, true
}

// aliasReserved refuses an alias inside another's exclusive namespace.
func aliasReserved(as AppServices, dev *httpapi.Device, alias string) (httpapi.Response, bool) {
	if as == nil {
		return httpapi.Response{}, true
	}
	if owner := as.ExclusiveAliasOwner(alias); owner != "" && owner != dev.AppService {
		return exclusive("the alias is reserved by an application service"), false
	}
	return httpapi.Response{}, true
}

// massagedTS reads ?ts= (milliseconds), which only appservices may set.
func massagedTS(r *http.Request, dev *httpapi.Device) (int64, httpapi.Response, bool) {
	s := r.URL.Query().Get("ts")
	if s == "" || dev.AppService == "" {
		return 0, httpapi.Response{}, true
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ts <= 0 {
		return 0, httpapi.InvalidParam("ts must be a positive integer of milliseconds"), false
	}
	return ts, httpapi.Response{}, true
}
