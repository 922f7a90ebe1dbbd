package clientapi

import (
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
	if err := ad.writeAccountData(r, dev.UserID, roomID, typ, content); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}

// writeAccountData stores a blob and wakes the user's syncs.
func (ad *accountData) writeAccountData(r *http.Request, userID, roomID, typ string, content json.RawMessage) error {
	return ad.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		pos, err := storage.PutAccountData(r.Context(), tx, userID, roomID, typ, content)
		if err != nil {
			return err
		}
		tx.Publish(pos, func() { ad.sync.NotifyUsers(userID) })
		return nil
	})
}
