package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"enclave/internal/httpapi"
	"enclave/storage"
)

// Room tags (favourites, low priority, user tags). They live in the room
// account data event m.tag — {"tags": {tag: {"order": n}}} — so /sync
// delivers them like any other room account data; these endpoints edit one
// tag at a time, as Element does when a room is (un)favourited.

const tagType = "m.tag"

// tagTarget checks the path: own user, valid room ID.
func tagTarget(r *http.Request, dev *httpapi.Device) (string, httpapi.Response, bool) {
	if httpapi.Vars(r)["userId"] != dev.UserID {
		return "", httpapi.Forbidden("you may only access your own tags"), false
	}
	return roomIDParam(r)
}

// tagsOf decodes an m.tag content; a missing or malformed one has no tags.
func tagsOf(content json.RawMessage) map[string]json.RawMessage {
	var c struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	_ = json.Unmarshal(content, &c)
	if c.Tags == nil {
		c.Tags = map[string]json.RawMessage{}
	}
	return c.Tags
}

func (ad *accountData) getTags(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := tagTarget(r, dev)
	if !ok {
		return resp
	}
	c, err := storage.GetAccountData(r.Context(), ad.db, dev.UserID, roomID, tagType)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{"tags": tagsOf(c)})
}

func (ad *accountData) putTag(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := tagTarget(r, dev)
	if !ok {
		return resp
	}
	tag := httpapi.Vars(r)["tag"]
	if tag == "" || len(tag) > maxAccountDataType {
		return httpapi.InvalidParam("invalid tag")
	}
	body, resp, ok := httpapi.ReadJSONObject(r)
	if !ok {
		return resp
	}
	var t struct {
		Order *json.RawMessage `json:"order"`
	}
	_ = json.Unmarshal(body, &t)
	if t.Order != nil {
		var n float64
		if err := json.Unmarshal(*t.Order, &n); err != nil {
			return httpapi.BadJSON("order must be a number")
		}
	}
	return ad.editTags(r, dev.UserID, roomID, func(tags map[string]json.RawMessage) { tags[tag] = body })
}

func (ad *accountData) deleteTag(r *http.Request, dev *httpapi.Device) httpapi.Response {
	roomID, resp, ok := tagTarget(r, dev)
	if !ok {
		return resp
	}
	tag := httpapi.Vars(r)["tag"]
	return ad.editTags(r, dev.UserID, roomID, func(tags map[string]json.RawMessage) { delete(tags, tag) })
}

// editTags rewrites the room's m.tag in one transaction and wakes the
// user's syncs. Touching the row first makes concurrent edits of the same
// room's tags queue behind each other instead of losing one.
func (ad *accountData) editTags(r *http.Request, userID, roomID string, edit func(map[string]json.RawMessage)) httpapi.Response {
	ctx := r.Context()
	err := ad.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.LockAccountData(ctx, tx, userID, roomID, tagType); err != nil {
			return err
		}
		c, err := storage.GetAccountData(ctx, tx, userID, roomID, tagType)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		tags := tagsOf(c)
		edit(tags)
		content, err := json.Marshal(map[string]any{"tags": tags})
		if err != nil {
			return err
		}
		pos, err := storage.PutAccountData(ctx, tx, userID, roomID, tagType, content)
		if err != nil {
			return err
		}
		tx.Publish(pos, func() { ad.sync.NotifyUsers(userID) })
		return nil
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(200, map[string]any{})
}
