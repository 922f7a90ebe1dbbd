package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"enclave/internal/httpapi"
	pushnotify "enclave/internal/pushrules/notifier"
	"enclave/storage"
	"enclave/syncapi"
)

// accountData serves what a user keeps for their own clients: account
// data, room tags, push rules and pushers. All of it is per user, stored
// as sent and streamed back through /sync.
type accountData struct {
	db   *storage.DB
	sync *syncapi.Syncer
}

// Account data types the server manages itself.
const fullyReadType = "m.fully_read"

const maxAccountDataType = 255

// accountDataTarget checks the path: own user, valid room (if any), type.
func accountDataTarget(r *http.Request, dev *httpapi.Device) (roomID, typ string, resp httpapi.Response, ok bool) {
	v := httpapi.Vars(r)
	if v["userId"] != dev.UserID {
		return "", "", httpapi.Forbidden("you may only access your own account data"), false
	}
	if _, room := v["roomId"]; room {
		if roomID, resp, ok = roomIDParam(r); !ok {
			return "", "", resp, false
		}
	}
	typ = v["type"]
	if typ == "" || len(typ) > maxAccountDataType {
		return "", "", httpapi.InvalidParam("invalid account data type"), false
	}
	return roomID, typ, httpapi.Response{}, true
}

func (ad *accountData) getAccountData(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, typ, resp, ok := accountDataTarget(r, dev)
	if !ok {
		return resp
	}
	if roomID == "" && typ == syncapi.PushRulesType {
		c, err := pushnotify.AccountDataContent(r.Context(), ad.db, dev.UserID)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		return httpapi.Response{Code: 200, Body: []byte(c)}
	}
	c, err := storage.GetAccountData(r.Context(), ad.db, dev.UserID, roomID, typ)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no account data of type %s", typ)
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.Response{Code: 200, Body: []byte(c)}
}

func (ad *accountData) putAccountData(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, typ, resp, ok := accountDataTarget(r, dev)
	if !ok {
		return resp
	}
	if typ == fullyReadType || typ == syncapi.PushRulesType {
		return httpapi.Errf(http.StatusMethodNotAllowed, "M_BAD_JSON", "%s is managed by the server and cannot be set here", typ)
	}
	content, resp, ok := httpapi.ReadJSONObject(r)
	if !ok {
		return resp
	}
	if roomID == "" && typ == storage.IgnoredUserListType {
		var c struct {
			Ignored map[string]json.RawMessage `json:"ignored_users"`
		}
		if err := json.Unmarshal(content, &c); err != nil {
			return httpapi.BadJSON("ignored_users must be an object of user IDs")
		}
		for u := range c.Ignored {
			if !looksLikeUserID(u) {
				return httpapi.BadJSON("ignored_users: %q is not a user ID", u)
			}
		}
	}
	if isEmptyObject(content) {
		// MSC3391: an empty object deletes the blob.
		return ad.deleteAccountData(r, dev)
	}
	if err := ad.writeAccountData(r, dev.UserID, roomID, typ, content); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}

func isEmptyObject(content json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(content, &m) == nil && len(m) == 0
}

// deleteAccountData (MSC3391) deletes a blob; the user's other clients see
// it in /sync as the type with empty content. Deleting nothing succeeds.
func (ad *accountData) deleteAccountData(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, typ, resp, ok := accountDataTarget(r, dev)
	if !ok {
		return resp
	}
	if typ == fullyReadType || typ == syncapi.PushRulesType {
		return httpapi.Errf(http.StatusMethodNotAllowed, "M_BAD_JSON", "%s is managed by the server and cannot be deleted here", typ)
	}
	var pos int64
	err := ad.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		var err error
		pos, err = ad.deleteInTx(r.Context(), tx, dev.UserID, roomID, typ)
		return err
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	ad.readYourWrite(r, pos)
	return httpapi.JSON(200, map[string]any{})
}

// readYourWrite holds the answer until the write's stream position is
// visible, as room sends do: a /sync the client makes next must see it,
// even while a lower position (another writer's) is still uncommitted.
func (ad *accountData) readYourWrite(r *http.Request, pos int64) {
	if pos > 0 {
		_ = ad.db.Stream.Wait(r.Context(), pos)
	}
}

// deleteInTx deletes a blob inside tx, wakes the user's syncs after
// commit, and returns the deletion's stream position (0: nothing there).
func (ad *accountData) deleteInTx(ctx context.Context, tx *storage.Tx, userID, roomID, typ string) (int64, error) {
	pos, err := storage.DeleteAccountData(ctx, tx, userID, roomID, typ)
	if err != nil || pos == 0 {
		return 0, err
	}
	tx.Publish(pos, func() { ad.sync.NotifyUsers(userID) })
	return pos, nil
}

// localNotificationSettingsPrefix names a device's own notification
// settings (MSC3890); they go when the device goes.
const localNotificationSettingsPrefix = "org.matrix.msc3890.local_notification_settings."

// deleteDeviceData deletes the account data kept for the given devices.
func (ad *accountData) deleteDeviceData(ctx context.Context, tx *storage.Tx, userID string, deviceIDs []string) error {
	for _, d := range deviceIDs {
		if _, err := ad.deleteInTx(ctx, tx, userID, "", localNotificationSettingsPrefix+d); err != nil {
			return err
		}
	}
	return nil
}

// writeAccountData stores a blob and wakes the user's syncs.
func (ad *accountData) writeAccountData(r *http.Request, userID, roomID, typ string, content json.RawMessage) error {
	var pos int64
	err := ad.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		var err error
		if pos, err = storage.PutAccountData(r.Context(), tx, userID, roomID, typ, content); err != nil {
			return err
		}
		tx.Publish(pos, func() { ad.sync.NotifyUsers(userID) })
		return nil
	})
	if err == nil {
		ad.readYourWrite(r, pos)
	}
	return err
}
