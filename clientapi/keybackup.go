package clientapi

// Server-side key backup: /room_keys/version[/{version}] and
// /room_keys/keys[/{roomId}[/{sessionId}]]. The session data is encrypted
// by the client to the backup's public key; the server keeps the better
// copy of each session by the spec's rules and never decrypts anything.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// maxBackupKeysPerRequest bounds one upload.
const maxBackupKeysPerRequest = 20000

// parseVersion reads a backup version; ok is false for anything that
// cannot name a version (such a version does not exist).
func parseVersion(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v > 0 && strconv.FormatInt(v, 10) == s
}

func noBackup(version string) httpapi.Response {
	if version == "" {
		return httpapi.NotFound("no current backup version")
	}
	return httpapi.NotFound("unknown backup version %s", version)
}

func (ks *keys) createBackupVersion(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req struct {
		Algorithm string          `json:"algorithm"`
		AuthData  json.RawMessage `json:"auth_data"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.Algorithm == "" {
		return httpapi.MissingParam("algorithm is required")
	}
	authData, ok := jsonObject(req.AuthData)
	if !ok {
		return httpapi.MissingParam("auth_data must be an object")
	}
	ctx := r.Context()
	var v int64
	var err error
	for range 3 { // concurrent creations race for the next number
		err = ks.db.WithTx(ctx, func(tx *storage.Tx) error {
			var err error
			if v, err = storage.CreateBackupVersion(ctx, tx, dev.UserID, req.Algorithm, authData); err != nil {
				return err
			}
			return ks.auditBackup(ctx, tx, dev, auditapi.ActionKeyBackup, "create", v, map[string]any{"algorithm": req.Algorithm})
		})
		if !storage.IsUniqueViolation(err) {
			break
		}
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]string{"version": strconv.FormatInt(v, 10)})
}

// auditBackup records a change to one of the user's backups (action
// ActionKeyBackup or ActionKeyBackupKeys): which version, what was done
// and counts; never auth_data or session data.
func (ks *keys) auditBackup(ctx context.Context, tx *storage.Tx, dev *httpapi.Device, action, op string, version int64, details map[string]any) error {
	if details == nil {
		details = map[string]any{}
	}
	details["op"], details["version"] = op, strconv.FormatInt(version, 10)
	return ks.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: action, Target: dev.UserID, Details: details})
}

// jsonObject compacts raw if it is a JSON object.
func jsonObject(raw json.RawMessage) (json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, false
	}
	b, err := compactJSON(raw)
	return b, err == nil
}

func (ks *keys) getBackupVersion(r *http.Request, dev *httpapi.Device) httpapi.Response {
	vs, given := httpapi.Vars(r)["version"]
	var v int64
	if given {
		var ok bool
		if v, ok = parseVersion(vs); !ok {
			return noBackup(vs)
		}
	}
	ctx := r.Context()
	b, err := storage.GetBackupVersion(ctx, ks.db, dev.UserID, v)
	if errors.Is(err, storage.ErrNotFound) {
		return noBackup(vs)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	n, err := storage.CountBackupKeys(ctx, ks.db, dev.UserID, b.Version)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{
		"algorithm": b.Algorithm,
		"auth_data": b.AuthData,
		"count":     n,
		"etag":      strconv.FormatInt(b.ETag, 10),
		"version":   strconv.FormatInt(b.Version, 10),
	})
}

func (ks *keys) putBackupVersion(r *http.Request, dev *httpapi.Device) httpapi.Response {
	vs := httpapi.Vars(r)["version"]
	var req struct {
		Algorithm string          `json:"algorithm"`
		AuthData  json.RawMessage `json:"auth_data"`
		Version   *string         `json:"version"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.Version != nil && *req.Version != vs {
		return httpapi.InvalidParam("version in the body does not match the path")
	}
	authData, ok := jsonObject(req.AuthData)
	if !ok {
		return httpapi.MissingParam("auth_data must be an object")
	}
	v, ok := parseVersion(vs)
	if !ok {
		return noBackup(vs)
	}
	ctx := r.Context()
	b, err := storage.GetBackupVersion(ctx, ks.db, dev.UserID, v)
	if errors.Is(err, storage.ErrNotFound) {
		return noBackup(vs)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if req.Algorithm != b.Algorithm {
		return httpapi.InvalidParam("algorithm does not match the backup's")
	}
	err = ks.db.WithTx(ctx, func(tx *storage.Tx) error {
		updated, err := storage.UpdateBackupAuthData(ctx, tx, dev.UserID, v, authData)
		if err != nil || !updated {
			return err
		}
		return ks.auditBackup(ctx, tx, dev, auditapi.ActionKeyBackup, "update", v, nil)
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

func (ks *keys) deleteBackupVersion(r *http.Request, dev *httpapi.Device) httpapi.Response {
	vs := httpapi.Vars(r)["version"]
	v, ok := parseVersion(vs)
	if !ok {
		return noBackup(vs)
	}
	ctx := r.Context()
	var found bool
	err := ks.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		if found, err = storage.DeleteBackupVersion(ctx, tx, dev.UserID, v); err != nil || !found {
			return err
		}
		return ks.auditBackup(ctx, tx, dev, auditapi.ActionKeyBackup, "delete", v, nil)
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if !found {
		return noBackup(vs)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// backupTarget is the version and the room/session scope of a keys request.
func (ks *keys) backupTarget(r *http.Request, dev *httpapi.Device) (*storage.BackupVersion, string, string, httpapi.Response, bool) {
	vs := r.URL.Query().Get("version")
	if vs == "" {
		return nil, "", "", httpapi.MissingParam("version is required"), false
	}
	v, ok := parseVersion(vs)
	if !ok {
		return nil, "", "", noBackup(vs), false
	}
	b, err := storage.GetBackupVersion(r.Context(), ks.db, dev.UserID, v)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, "", "", noBackup(vs), false
	}
	if err != nil {
		return nil, "", "", httpapi.InternalError(r, err), false
	}
	return b, httpapi.Vars(r)["roomId"], httpapi.Vars(r)["sessionId"], httpapi.Response{}, true
}

func (ks *keys) backupCountETag(r *http.Request, userID string, version int64) httpapi.Response {
	b, err := storage.GetBackupVersion(r.Context(), ks.db, userID, version)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	n, err := storage.CountBackupKeys(r.Context(), ks.db, userID, version)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"count": n, "etag": strconv.FormatInt(b.ETag, 10)})
}

type backupSessions struct {
	Sessions map[string]json.RawMessage `json:"sessions"`
}

func (ks *keys) putBackupKeys(r *http.Request, dev *httpapi.Device) httpapi.Response {
	body, resp, ok := httpapi.ReadBody(r)
	if !ok {
		return resp
	}
	roomID, sessionID := httpapi.Vars(r)["roomId"], httpapi.Vars(r)["sessionId"]
	var keys []storage.BackupKey
	add := func(room, session string, raw json.RawMessage) (httpapi.Response, bool) {
		var k storage.BackupKey
		if err := json.Unmarshal(raw, &k); err != nil {
			return httpapi.BadJSON("key backup data for %s/%s has the wrong shape: %v", room, session, err), false
		}
		sd, ok := jsonObject(k.SessionData)
		if !ok {
			return httpapi.BadJSON("session_data for %s/%s must be an object", room, session), false
		}
		if k.FirstMessageIndex < 0 || k.ForwardedCount < 0 {
			return httpapi.InvalidParam("first_message_index and forwarded_count must not be negative"), false
		}
		k.RoomID, k.SessionID, k.SessionData = room, session, sd
		keys = append(keys, k)
		return httpapi.Response{}, len(keys) <= maxBackupKeysPerRequest
	}
	tooMany := httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "at most %d keys per request", maxBackupKeysPerRequest)
	switch {
	case sessionID != "":
		if resp, ok := add(roomID, sessionID, body); !ok {
			return orTooMany(resp, tooMany)
		}
	case roomID != "":
		var req backupSessions
		if err := json.Unmarshal(body, &req); err != nil || req.Sessions == nil {
			return httpapi.BadJSON("body must be {\"sessions\": {...}}")
		}
		for s, raw := range req.Sessions {
			if resp, ok := add(roomID, s, raw); !ok {
				return orTooMany(resp, tooMany)
			}
		}
	default:
		var req struct {
			Rooms map[string]backupSessions `json:"rooms"`
		}
		if err := json.Unmarshal(body, &req); err != nil || req.Rooms == nil {
			return httpapi.BadJSON("body must be {\"rooms\": {...}}")
		}
		for room, rs := range req.Rooms {
			for s, raw := range rs.Sessions {
				if resp, ok := add(room, s, raw); !ok {
					return orTooMany(resp, tooMany)
				}
			}
		}
	}
	vs := r.URL.Query().Get("version")
	if vs == "" {
		return httpapi.MissingParam("version is required")
	}
	ctx := r.Context()
	cur, err := storage.GetBackupVersion(ctx, ks.db, dev.UserID, 0)
	if errors.Is(err, storage.ErrNotFound) {
		return noBackup(vs)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if strconv.FormatInt(cur.Version, 10) != vs {
		return httpapi.Response{Code: http.StatusForbidden, Body: map[string]string{
			"errcode": "M_WRONG_ROOM_KEYS_VERSION", "error": "the backup version is not the current one", "current_version": strconv.FormatInt(cur.Version, 10),
		}}
	}
	err = ks.db.WithTx(ctx, func(tx *storage.Tx) error {
		changed, err := storage.PutBackupKeys(ctx, tx, dev.UserID, cur.Version, keys)
		if err != nil {
			return err
		}
		return ks.auditBackup(ctx, tx, dev, auditapi.ActionKeyBackupKeys, "put", cur.Version, map[string]any{"count": len(keys), "changed": changed})
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return ks.backupCountETag(r, dev.UserID, cur.Version)
}

// orTooMany returns resp when it is an error, else the too-many response.
func orTooMany(resp, tooMany httpapi.Response) httpapi.Response {
	if resp.Code != 0 {
		return resp
	}
	return tooMany
}

func (ks *keys) getBackupKeys(r *http.Request, dev *httpapi.Device) httpapi.Response {
	b, roomID, sessionID, resp, ok := ks.backupTarget(r, dev)
	if !ok {
		return resp
	}
	keys, err := storage.GetBackupKeys(r.Context(), ks.db, dev.UserID, b.Version, roomID, sessionID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	switch {
	case sessionID != "":
		if len(keys) == 0 {
			return httpapi.NotFound("no key backed up for this session")
		}
		return httpapi.JSON(http.StatusOK, keys[0])
	case roomID != "":
		out := backupSessions{Sessions: map[string]json.RawMessage{}}
		for _, k := range keys {
			out.Sessions[k.SessionID], _ = json.Marshal(k)
		}
		return httpapi.JSON(http.StatusOK, out)
	default:
		rooms := map[string]backupSessions{}
		for _, k := range keys {
			rs, ok := rooms[k.RoomID]
			if !ok {
				rs = backupSessions{Sessions: map[string]json.RawMessage{}}
				rooms[k.RoomID] = rs
			}
			rs.Sessions[k.SessionID], _ = json.Marshal(k)
		}
		return httpapi.JSON(http.StatusOK, map[string]any{"rooms": rooms})
	}
}

func (ks *keys) deleteBackupKeys(r *http.Request, dev *httpapi.Device) httpapi.Response {
	b, roomID, sessionID, resp, ok := ks.backupTarget(r, dev)
	if !ok {
		return resp
	}
	ctx := r.Context()
	err := ks.db.WithTx(ctx, func(tx *storage.Tx) error {
		before, err := storage.CountBackupKeys(ctx, tx, dev.UserID, b.Version)
		if err != nil {
			return err
		}
		if err := storage.DeleteBackupKeys(ctx, tx, dev.UserID, b.Version, roomID, sessionID); err != nil {
			return err
		}
		after, err := storage.CountBackupKeys(ctx, tx, dev.UserID, b.Version)
		if err != nil {
			return err
		}
		scope := "all"
		switch {
		case sessionID != "":
			scope = "session"
		case roomID != "":
			scope = "room"
		}
		return ks.auditBackup(ctx, tx, dev, auditapi.ActionKeyBackupKeys, "delete", b.Version, map[string]any{"count": before - after, "scope": scope})
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return ks.backupCountETag(r, dev.UserID, b.Version)
}
