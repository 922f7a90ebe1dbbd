package adminapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"enclave/auditapi"
	"enclave/internal/accounts"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// userJSON renders an account the way Synapse's user admin API does.
// Fields Enclave has no notion of (threepids, external IDs, consent, user
// types, shadow bans, locks) are present with their empty values so that
// tools find the keys they read.
func userJSON(acc *storage.Account, lastSeen int64, roles []string) map[string]any {
	var dn, av any
	if acc.DisplayName != "" {
		dn = acc.DisplayName
	}
	if acc.AvatarURL != "" {
		av = acc.AvatarURL
	}
	var seen any
	if lastSeen > 0 {
		seen = lastSeen
	}
	out := map[string]any{
		"name": acc.UserID, "displayname": dn, "avatar_url": av, "threepids": []any{}, "external_ids": []any{},
		"is_guest": acc.IsGuest, "admin": acc.IsAdmin, "deactivated": acc.Deactivated, "erased": acc.Erased,
		"shadow_banned": acc.ShadowBanned, "locked": false, "suspended": false, "user_type": nil, "appservice_id": nil,
		"consent_server_notice_sent": nil, "consent_version": nil, "consent_ts": nil,
		"creation_ts": acc.CreatedTS, "last_seen_ts": seen, "approved": true,
	}
	if roles != nil {
		out["enclave_roles"] = roles
	}
	return out
}

func boolParam(r *http.Request, name string) (*bool, bool) {
	v, ok := r.URL.Query()[name]
	if !ok || len(v) == 0 || v[0] == "" {
		return nil, true
	}
	b, err := strconv.ParseBool(v[0])
	if err != nil {
		return nil, false
	}
	return &b, true
}

func intParam(r *http.Request, name string, def int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 0
}

// GET /_synapse/admin/v2/users
func (a *API) listUsers(r *http.Request, _ *httpapi.Device) httpapi.Response {
	from, ok1 := intParam(r, "from", 0)
	limit, ok2 := intParam(r, "limit", 100)
	guests, ok3 := boolParam(r, "guests")
	admins, ok4 := boolParam(r, "admins")
	deact, ok5 := boolParam(r, "deactivated")
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return badParam("from and limit must be non-negative integers; guests, admins and deactivated true or false")
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "" && dir != "f" && dir != "b" {
		return badParam("dir must be f or b")
	}
	f := storage.AccountFilter{From: from, Limit: min(max(limit, 1), 1000), UserID: q.Get("user_id"), Name: q.Get("name"),
		Guests: guests, Admins: admins, Deactivated: deact != nil && *deact, OrderBy: q.Get("order_by"), Backwards: dir == "b"}
	accs, total, err := storage.ListAdminAccounts(r.Context(), a.DB, f)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	users := make([]map[string]any, 0, len(accs))
	for _, acc := range accs {
		users = append(users, userJSON(&acc.Account, acc.LastSeenTS, nil))
	}
	body := map[string]any{"users": users, "total": total}
	if next := from + len(accs); next < total && len(accs) > 0 {
		body["next_token"] = strconv.Itoa(next)
	}
	return httpapi.JSON(http.StatusOK, body)
}

func (a *API) lastSeen(ctx context.Context, userID string) (int64, error) {
	devs, err := storage.ListDevices(ctx, a.DB, userID)
	if err != nil {
		return 0, err
	}
	var last int64
	for _, d := range devs {
		last = max(last, d.LastSeenTS)
	}
	return last, nil
}

func (a *API) loadUser(r *http.Request) (*storage.Account, httpapi.Response, bool) {
	userID := vars(r, "userId")
	if !a.isLocalUser(userID) {
		return nil, badParam("can only look up local users"), false
	}
	acc, err := storage.GetAccount(r.Context(), a.DB, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("user not found"), false
	}
	if err != nil {
		return nil, httpapi.InternalError(r, err), false
	}
	return acc, httpapi.Response{}, true
}

func (a *API) userBody(r *http.Request, acc *storage.Account) httpapi.Response {
	seen, err := a.lastSeen(r.Context(), acc.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	roles, err := a.RBAC.UserRoles(r.Context(), acc.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, userJSON(acc, seen, roles))
}

// GET /_synapse/admin/v2/users/{userId}
func (a *API) getUser(r *http.Request, _ *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	return a.userBody(r, acc)
}

// PUT /_synapse/admin/v2/users/{userId}: create or modify.
func (a *API) putUser(r *http.Request, dev *httpapi.Device) httpapi.Response {
	userID := vars(r, "userId")
	if !a.isLocalUser(userID) {
		return badParam("this server can only create and modify its own users")
	}
	var req struct {
		Password      *string `json:"password"`
		LogoutDevices *bool   `json:"logout_devices"`
		DisplayName   *string `json:"displayname"`
		AvatarURL     *string `json:"avatar_url"`
		Admin         *bool   `json:"admin"`
		Deactivated   *bool   `json:"deactivated"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.Password != nil && (len(*req.Password) > accounts.MaxPasswordBytes || *req.Password == "") {
		return badParam("password must be 1 to %d bytes", accounts.MaxPasswordBytes)
	}
	if req.AvatarURL != nil && *req.AvatarURL != "" && !strings.HasPrefix(*req.AvatarURL, "mxc://") {
		return badParam("avatar_url must be an mxc:// URI")
	}
	ctx := r.Context()
	hash := ""
	if req.Password != nil {
		h, err := accounts.HashPassword(ctx, *req.Password)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		hash = h
	}
	existing, err := storage.GetAccount(ctx, a.DB, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return httpapi.InternalError(r, err)
	}
	if existing == nil {
		return a.createUser(r, dev, userID, hash, req.DisplayName, req.AvatarURL, req.Admin != nil && *req.Admin)
	}
	var fields []string
	deactivated, roleChanged := false, false
	err = a.DB.WithTx(ctx, func(tx *storage.Tx) error {
		if req.Password != nil {
			fields = append(fields, "password")
			if err := storage.SetPassword(ctx, tx, userID, hash); err != nil {
				return err
			}
			if req.LogoutDevices == nil || *req.LogoutDevices {
				if _, err := storage.DeleteAllDevices(ctx, tx, userID, ""); err != nil {
					return err
				}
			}
			if err := a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionPasswordChange, Target: userID, Details: map[string]any{"by_admin": true}}); err != nil {
				return err
			}
		}
		if req.DisplayName != nil {
			fields = append(fields, "displayname")
			if err := storage.SetAccountDisplayName(ctx, tx, userID, *req.DisplayName); err != nil {
				return err
			}
		}
		if req.AvatarURL != nil {
			fields = append(fields, "avatar_url")
			if err := storage.SetAccountAvatarURL(ctx, tx, userID, *req.AvatarURL); err != nil {
				return err
			}
		}
		if req.Admin != nil && *req.Admin != existing.IsAdmin {
			if err := a.setAdmin(ctx, tx, dev, existing, *req.Admin); err != nil {
				return err
			}
			roleChanged = true
		}
		if req.Deactivated != nil && *req.Deactivated != existing.Deactivated {
			if *req.Deactivated {
				if err := storage.Deactivate(ctx, tx, userID, false); err != nil {
					return err
				}
				deactivated = true
				if err := a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionDeactivate, Target: userID, Details: map[string]any{"by_admin": true, "erase": false}}); err != nil {
					return err
				}
			} else {
				if err := storage.ReactivateAccount(ctx, tx, userID); err != nil {
					return err
				}
				if err := a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionReactivate, Target: userID}); err != nil {
					return err
				}
			}
		}
		if len(fields) > 0 {
			return a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionAccountModify, Target: userID, Details: map[string]any{"fields": fields}})
		}
		return nil
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if req.Password != nil || deactivated {
		a.Client.InvalidateUserTokens(userID)
	}
	if roleChanged {
		a.RBAC.Invalidate(userID)
	}
	if deactivated {
		a.Client.LeaveAllRooms(ctx, userID)
	}
	acc, err := storage.GetAccount(ctx, a.DB, userID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return a.userBody(r, acc)
}

// setAdmin flips the admin flag (the admin role) and records it as a role
// change.
func (a *API) setAdmin(ctx context.Context, tx *storage.Tx, dev *httpapi.Device, acc *storage.Account, admin bool) error {
	explicit, err := storage.UserRoles(ctx, tx, acc.UserID)
	if err != nil {
		return err
	}
	roles := append([]string(nil), explicit...)
	if admin {
		roles = append(roles, storage.AdminRole)
	}
	_, _, err = a.RBAC.SetRoles(ctx, tx, acc.UserID, roles, dev.UserID)
	return err
}

func (a *API) createUser(r *http.Request, dev *httpapi.Device, userID, hash string, displayName, avatarURL *string, admin bool) httpapi.Response {
	local := strings.TrimPrefix(strings.SplitN(userID, ":", 2)[0], "@")
	if !accounts.ValidLocalpart(local) {
		return httpapi.Errf(http.StatusBadRequest, "M_INVALID_USERNAME", "user ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+', and may not start with '_'")
	}
	acc := &storage.Account{UserID: userID, Localpart: local, PasswordHash: hash, CreatedTS: time.Now().UnixMilli(), IsAdmin: admin, DisplayName: local}
	if displayName != nil {
		acc.DisplayName = *displayName
	}
	if avatarURL != nil {
		acc.AvatarURL = *avatarURL
	}
	ctx := r.Context()
	err := a.DB.WithTx(ctx, func(tx *storage.Tx) error {
		created, err := storage.CreateAccount(ctx, tx, acc)
		if err != nil {
			return err
		}
		if !created {
			return errExists
		}
		details := map[string]any{"kind": "admin_api", "admin": admin}
		if err := a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionRegister, Target: userID, Details: details}); err != nil {
			return err
		}
		if admin {
			return a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionRoleChange, Target: userID,
				Details: map[string]any{"from": []string{}, "to": []string{storage.AdminRole}}})
		}
		return nil
	})
	if errors.Is(err, errExists) {
		return httpapi.Errf(http.StatusBadRequest, "M_USER_IN_USE", "user ID already taken")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	resp := a.userBody(r, acc)
	if resp.Code == http.StatusOK {
		resp.Code = http.StatusCreated
	}
	return resp
}

var errExists = errors.New("already exists")

// POST /_synapse/admin/v1/deactivate/{userId}
func (a *API) deactivate(r *http.Request, dev *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	var req struct {
		Erase bool `json:"erase"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	ctx := r.Context()
	if req.Erase {
		held, err := storage.UserUnderHold(ctx, a.DB, acc.UserID)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		if held {
			return httpapi.Forbidden("the user is under legal hold: erasing would hide held history; lift the hold first (nothing was changed)")
		}
	}
	err := a.DB.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.Deactivate(ctx, tx, acc.UserID, req.Erase); err != nil {
			return err
		}
		// Like Synapse: the password goes too.
		if err := storage.SetPassword(ctx, tx, acc.UserID, ""); err != nil {
			return err
		}
		return a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionDeactivate, Target: acc.UserID, Details: map[string]any{"by_admin": true, "erase": req.Erase}})
	})
	a.Client.InvalidateUserTokens(acc.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	a.Client.LeaveAllRooms(ctx, acc.UserID)
	if req.Erase {
		// Erasure as Synapse defines it: the profile went above, the
		// user's media go now, and their events are served redacted to
		// anyone who was not in the room when they were sent
		// (storage.Erased, syncapi.Visible).
		n, err := a.Media().DeleteUserMedia(ctx, acc.UserID)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		if err := a.Audit.Record(ctx, a.DB, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
			Action: auditapi.ActionDeactivate, Target: acc.UserID, Details: map[string]any{"erased_media": n, "by_admin": true, "erase": true}}); err != nil {
			return httpapi.InternalError(r, err)
		}
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"id_server_unbind_result": "success"})
}

// POST /_synapse/admin/v1/reset_password/{userId}
func (a *API) resetPassword(r *http.Request, dev *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	var req struct {
		NewPassword   string `json:"new_password"`
		LogoutDevices *bool  `json:"logout_devices"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.NewPassword == "" {
		return httpapi.MissingParam("new_password is required")
	}
	if len(req.NewPassword) > accounts.MaxPasswordBytes {
		return httpapi.Errf(http.StatusBadRequest, "M_WEAK_PASSWORD", "password may not be longer than %d bytes", accounts.MaxPasswordBytes)
	}
	ctx := r.Context()
	hash, err := accounts.HashPassword(ctx, req.NewPassword)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	err = a.DB.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.SetPassword(ctx, tx, acc.UserID, hash); err != nil {
			return err
		}
		if logout {
			if _, err := storage.DeleteAllDevices(ctx, tx, acc.UserID, ""); err != nil {
				return err
			}
		}
		return a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionPasswordChange, Target: acc.UserID, Details: map[string]any{"by_admin": true, "logout_devices": logout}})
	})
	if logout {
		a.Client.InvalidateUserTokens(acc.UserID)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// GET /_synapse/admin/v1/whois/{userId}
func (a *API) whois(r *http.Request, _ *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	devs, err := storage.ListDevices(r.Context(), a.DB, acc.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	conns := []map[string]any{}
	for _, d := range devs {
		conns = append(conns, map[string]any{"ip": d.LastSeenIP, "last_seen": d.LastSeenTS, "user_agent": d.LastSeenUA, "device_id": d.DeviceID})
	}
	return httpapi.JSON(http.StatusOK, map[string]any{
		"user_id": acc.UserID,
		"devices": map[string]any{"": map[string]any{"sessions": []any{map[string]any{"connections": conns}}}},
	})
}

// GET /_synapse/admin/v2/users/{userId}/devices
func (a *API) userDevices(r *http.Request, _ *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	devs, err := storage.ListDevices(r.Context(), a.DB, acc.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	out := []map[string]any{}
	for _, d := range devs {
		var dn, seen, ip, ua any
		if d.DisplayName != "" {
			dn = d.DisplayName
		}
		if d.LastSeenTS > 0 {
			seen = d.LastSeenTS
		}
		if d.LastSeenIP != "" {
			ip = d.LastSeenIP
		}
		if d.LastSeenUA != "" {
			ua = d.LastSeenUA
		}
		out = append(out, map[string]any{"device_id": d.DeviceID, "display_name": dn, "last_seen_ts": seen, "last_seen_ip": ip, "last_seen_user_agent": ua, "user_id": d.UserID})
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"devices": out, "total": len(out)})
}

// GET /_synapse/admin/v1/users/{userId}/joined_rooms
func (a *API) joinedRooms(r *http.Request, _ *httpapi.Device) httpapi.Response {
	userID := vars(r, "userId")
	rooms, err := storage.RoomsByMembership(r.Context(), a.DB, userID, "join")
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	ids := make([]string, 0, len(rooms))
	for id := range rooms {
		ids = append(ids, id)
	}
	sortStrings(ids)
	return httpapi.JSON(http.StatusOK, map[string]any{"joined_rooms": ids, "total": len(ids)})
}

// GET /_synapse/admin/v1/users/{userId}/admin
func (a *API) getUserAdmin(r *http.Request, _ *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"admin": acc.IsAdmin})
}

// PUT /_synapse/admin/v1/users/{userId}/admin
func (a *API) putUserAdmin(r *http.Request, dev *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	var req struct {
		Admin *bool `json:"admin"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.Admin == nil {
		return httpapi.MissingParam("admin is required")
	}
	if !*req.Admin && acc.UserID == dev.UserID {
		return badParam("you may not demote yourself")
	}
	if *req.Admin != acc.IsAdmin {
		err := a.DB.WithTx(r.Context(), func(tx *storage.Tx) error { return a.setAdmin(r.Context(), tx, dev, acc, *req.Admin) })
		if err != nil {
			return httpapi.InternalError(r, err)
		}
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}
