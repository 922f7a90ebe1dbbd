package clientapi

// Dehydrated devices (MSC3814): a device the user's client uploads,
// encrypted under a key in secret storage, so that room keys sent while no
// client of theirs is running can be picked up on the next login. It is a
// real device (listed by /keys/query, to-device messages queue for it) that
// never has an access token: a client reads its inbox through
// POST …/dehydrated_device/{deviceId}/events. device_data is opaque here.

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

const (
	dehydratedPrefix      = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
	dehydratedEventsBatch = 100
	maxDeviceDataLen      = 256 << 10
)

type putDehydratedRequest struct {
	DeviceID                 string                     `json:"device_id"`
	DeviceData               json.RawMessage            `json:"device_data"`
	InitialDeviceDisplayName string                     `json:"initial_device_display_name"`
	DeviceKeys               json.RawMessage            `json:"device_keys"`
	OneTimeKeys              map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys             map[string]json.RawMessage `json:"fallback_keys"`
}

var (
	errDeviceIDTaken      = errors.New("device ID in use")
	errDehydratedDeviceID = errors.New("device ID is the user's dehydrated device")
)

// PUT /dehydrated_device: the new device replaces the user's earlier
// dehydrated device (deleted with its keys and inbox) in one transaction.
func (ks *keys) putDehydratedDevice(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req putDehydratedRequest
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.DeviceID == "" {
		req.DeviceID = newDeviceID()
	}
	if resp, ok := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); !ok {
		return resp
	}
	if strings.ContainsAny(req.DeviceID, "/\x00") {
		return httpapi.InvalidParam("device_id may not contain / or NUL")
	}
	var data map[string]json.RawMessage
	if len(req.DeviceData) == 0 || json.Unmarshal(req.DeviceData, &data) != nil || data == nil {
		return httpapi.MissingParam("device_data must be an object")
	}
	if len(req.DeviceData) > maxDeviceDataLen {
		return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "device_data may not exceed %d bytes", maxDeviceDataLen)
	}
	if len(req.DeviceKeys) == 0 || string(req.DeviceKeys) == "null" {
		return httpapi.MissingParam("device_keys is required")
	}
	devKeys, ed, resp, ok := parseDeviceKeys(req.DeviceKeys, dev.UserID, req.DeviceID)
	if !ok {
		return resp
	}
	otks, resp, ok := parseOneTimeKeys(req.OneTimeKeys, "one-time")
	if !ok {
		return resp
	}
	fallback, resp, ok := parseOneTimeKeys(req.FallbackKeys, "fallback")
	if !ok {
		return resp
	}
	stored, err := compactJSON(req.DeviceData)
	if err != nil {
		return httpapi.BadJSON("device_data: %v", err)
	}
	ctx := r.Context()
	now := time.Now().UnixMilli()
	err = ks.db.WithTx(ctx, func(tx *storage.Tx) error {
		old, err := storage.GetDehydratedDevice(ctx, tx, dev.UserID)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if old != nil {
			if err := storage.DeleteDevices(ctx, tx, dev.UserID, []string{old.DeviceID}); err != nil {
				return err
			}
			if err := ks.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionDeviceRemove,
				Target: old.DeviceID, Details: map[string]any{"dehydrated": true, "replaced_by": req.DeviceID}}); err != nil {
				return err
			}
		}
		created, err := storage.CreateDevice(ctx, tx, &storage.Device{UserID: dev.UserID, DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName, CreatedTS: now})
		if err != nil {
			return err
		}
		if !created { // a logged-in device of the user has this ID
			return errDeviceIDTaken
		}
		if _, err := storage.SetDeviceKeys(ctx, tx, dev.UserID, req.DeviceID, devKeys, ed, now); err != nil {
			return err
		}
		if err := storage.AddOneTimeKeys(ctx, tx, dev.UserID, req.DeviceID, otks); err != nil {
			return err
		}
		for _, k := range fallback {
			if err := storage.SetFallbackKey(ctx, tx, dev.UserID, req.DeviceID, k); err != nil {
				return err
			}
		}
		if err := storage.SetDehydratedDevice(ctx, tx, dev.UserID, &storage.DehydratedDevice{DeviceID: req.DeviceID, DeviceData: stored, CreatedTS: now}); err != nil {
			return err
		}
		// The user's room-mates learn of the new device (and of the old
		// one's removal, recorded by DeleteDevices) as of any key upload.
		if _, err := storage.RecordDeviceListChange(ctx, tx, dev.UserID, []string{req.DeviceID}, false, ""); err != nil {
			return err
		}
		return ks.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionDeviceAdd,
			Target: req.DeviceID, Details: map[string]any{"dehydrated": true, "one_time_keys": len(otks), "fallback_keys": len(fallback)}})
	})
	var conflict *storage.KeyConflictError
	switch {
	case errors.Is(err, errDeviceIDTaken):
		return httpapi.InvalidParam("device_id %s is already one of your devices", req.DeviceID)
	case errors.As(err, &conflict):
		return httpapi.InvalidParam("one-time key %s appears twice with different keys", conflict.KeyID)
	case err != nil:
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]string{"device_id": req.DeviceID})
}

// GET /dehydrated_device: 404 M_NOT_FOUND when there is none, which tells
// Element's crypto that the server supports dehydration.
func (ks *keys) getDehydratedDevice(r *http.Request, dev *httpapi.Device) httpapi.Response {
	d, err := storage.GetDehydratedDevice(r.Context(), ks.db, dev.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no dehydrated device")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"device_id": d.DeviceID, "device_data": d.DeviceData})
}

// DELETE /dehydrated_device
func (ks *keys) deleteDehydratedDevice(r *http.Request, dev *httpapi.Device) httpapi.Response {
	ctx := r.Context()
	var deviceID string
	err := ks.db.WithTx(ctx, func(tx *storage.Tx) error {
		d, err := storage.GetDehydratedDevice(ctx, tx, dev.UserID)
		if err != nil {
			return err
		}
		deviceID = d.DeviceID
		if err := storage.DeleteDevices(ctx, tx, dev.UserID, []string{d.DeviceID}); err != nil {
			return err
		}
		return ks.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionDeviceRemove,
			Target: d.DeviceID, Details: map[string]any{"dehydrated": true}})
	})
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no dehydrated device")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]string{"device_id": deviceID})
}

// POST /dehydrated_device/{deviceId}/events pages through the device's
// to-device messages. next_batch is a cursor "pos_id"; messages stay until
// the device is replaced or deleted (MSC3814), and the last page is an
// empty one that still carries a next_batch.
func (ks *keys) dehydratedEvents(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req struct {
		NextBatch string `json:"next_batch"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	var afterPos, afterID int64
	if req.NextBatch != "" {
		p, i, ok := strings.Cut(req.NextBatch, "_")
		var err1, err2 error
		afterPos, err1 = strconv.ParseInt(p, 10, 64)
		afterID, err2 = strconv.ParseInt(i, 10, 64)
		if !ok || err1 != nil || err2 != nil || afterPos < 0 || afterID < 0 {
			return httpapi.InvalidParam("next_batch is not a token this server gave")
		}
	}
	ctx := r.Context()
	d, err := storage.GetDehydratedDevice(ctx, ks.db, dev.UserID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return httpapi.InternalError(r, err)
	}
	if d == nil || d.DeviceID != httpapi.Vars(r)["deviceId"] {
		return httpapi.Forbidden("that is not your dehydrated device")
	}
	evs, pos, id, err := storage.DehydratedEvents(ctx, ks.db, dev.UserID, d.DeviceID, afterPos, afterID, ks.db.Stream.Current(), dehydratedEventsBatch)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"events": evs, "next_batch": strconv.FormatInt(pos, 10) + "_" + strconv.FormatInt(id, 10)})
}
