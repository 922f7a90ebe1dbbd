package clientapi

// Device management: GET /devices, GET/PUT/DELETE /devices/{deviceId},
// POST /delete_devices, and the last-seen bookkeeping of every request.
// Deleting a device deletes its tokens, E2EE keys and to-device inbox and
// tells the user's room-mates (storage.DeleteDevices runs the E2EE cleanup).

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// devices serves the user's device list: listing, renaming and
// deleting devices (with user-interactive auth) and recording when each
// was last seen.
type devices struct {
	opts     Options
	db       *storage.DB
	accounts *accounts // tokens, UIA and last-seen throttling
}

// clientDevice is a device as the spec's device endpoints show it.
type clientDevice struct {
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	LastSeenIP  string `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
}

func toClientDevice(d *storage.Device) clientDevice {
	return clientDevice{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

func (dv *devices) listDevices(r *http.Request, dev *httpapi.Device) httpapi.Response {
	devs, err := storage.ListDevices(r.Context(), dv.db, dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	out := make([]clientDevice, 0, len(devs))
	for _, d := range devs {
		out = append(out, toClientDevice(d))
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"devices": out})
}

func (dv *devices) getDevice(r *http.Request, dev *httpapi.Device) httpapi.Response {
	d, err := storage.GetDevice(r.Context(), dv.db, dev.UserID, httpapi.Vars(r)["deviceId"])
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no such device")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, toClientDevice(d))
}

func (dv *devices) putDevice(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	deviceID := httpapi.Vars(r)["deviceId"]
	ctx := r.Context()
	if dev.AppService != "" && dv.accounts.appservices.ManagesDevices(dev.AppService) {
		if resp, created := dv.createAppServiceDevice(r, dev, deviceID, req.DisplayName); created {
			return resp
		}
	}
	if req.DisplayName == nil {
		if _, err := storage.GetDevice(ctx, dv.db, dev.UserID, deviceID); errors.Is(err, storage.ErrNotFound) {
			return httpapi.NotFound("no such device")
		} else if err != nil {
			return httpapi.InternalError(r, err)
		}
		return httpapi.JSON(http.StatusOK, struct{}{})
	}
	if len(*req.DisplayName) > maxDeviceNameLen {
		return httpapi.InvalidParam("display_name may not be longer than %d bytes", maxDeviceNameLen)
	}
	errNoDevice := errors.New("no such device")
	err := dv.db.WithTx(ctx, func(tx *storage.Tx) error {
		old, err := storage.GetDevice(ctx, tx, dev.UserID, deviceID)
		if errors.Is(err, storage.ErrNotFound) {
			return errNoDevice
		}
		if err != nil || old.DisplayName == *req.DisplayName {
			return err
		}
		if _, err := storage.SetDeviceDisplayName(ctx, tx, dev.UserID, deviceID, *req.DisplayName); err != nil {
			return err
		}
		// The name itself stays out of the record: it is user content.
		if err := dv.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionDeviceUpdate, Target: deviceID,
			Details: map[string]any{"fields": []string{"display_name"}}}); err != nil {
			return err
		}
		// Key queries show the name (unsigned.device_display_name).
		if _, err := storage.GetDeviceKeys(ctx, tx, dev.UserID, deviceID); err == nil {
			_, err = storage.RecordDeviceListChange(ctx, tx, dev.UserID, []string{deviceID}, false, "")
			return err
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		return nil
	})
	if errors.Is(err, errNoDevice) {
		return httpapi.NotFound("no such device")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// createAppServiceDevice is MSC4190's PUT /devices/{deviceId}: an
// appservice creates a device for one of its users (no access token: the
// appservice acts as it with ?device_id=) and hears its to-device
// messages and key counts in its transactions. created is false when the
// device exists (the ordinary rename follows).
func (dv *devices) createAppServiceDevice(r *http.Request, dev *httpapi.Device, deviceID string, name *string) (httpapi.Response, bool) {
	ctx := r.Context()
	if deviceID == "" || len(deviceID) > 255 {
		return httpapi.InvalidParam("device ID must be 1 to 255 bytes"), true
	}
	if name != nil && len(*name) > maxDeviceNameLen {
		return httpapi.InvalidParam("display_name may not be longer than %d bytes", maxDeviceNameLen), true
	}
	created := false
	err := dv.db.WithTx(ctx, func(tx *storage.Tx) error {
		d := &storage.Device{UserID: dev.UserID, DeviceID: deviceID, CreatedTS: time.Now().UnixMilli()}
		if name != nil {
			d.DisplayName = *name
		}
		var err error
		if created, err = storage.CreateDevice(ctx, tx, d); err != nil || !created {
			return err
		}
		if err := storage.AddAppServiceDevice(ctx, tx, dev.AppService, dev.UserID, deviceID); err != nil {
			return err
		}
		return dv.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: RequestActor(r, dev), Action: auditapi.ActionDeviceAdd, Target: deviceID,
			Details: map[string]any{"appservice": dev.AppService}})
	})
	if err != nil {
		return httpapi.InternalError(r, err), true
	}
	if !created {
		return httpapi.Response{}, false
	}
	return httpapi.JSON(http.StatusCreated, struct{}{}), true
}

// appServiceNoUIA: an appservice that manages its users' devices
// (MSC4190) deletes them without user-interactive auth (its users have no
// password to give).
func (dv *devices) appServiceNoUIA(dev *httpapi.Device) bool {
	return dev.AppService != "" && dv.accounts.appservices.ManagesDevices(dev.AppService)
}

func (dv *devices) deleteDevice(r *http.Request, dev *httpapi.Device) httpapi.Response {
	body, resp, ok := httpapi.ReadBody(r)
	if !ok {
		return resp
	}
	deviceID := httpapi.Vars(r)["deviceId"]
	ctx := r.Context()
	if _, err := storage.GetDevice(ctx, dv.db, dev.UserID, deviceID); errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no such device")
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	if !dv.appServiceNoUIA(dev) {
		if resp, ok := dv.accounts.requireUIA(r, body, dev, [][]string{{stagePassword}}); !ok {
			return resp
		}
	}
	if err := dv.accounts.deleteDevices(ctx, dev.UserID, []string{deviceID}); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

func (dv *devices) postDeleteDevices(r *http.Request, dev *httpapi.Device) httpapi.Response {
	body, resp, ok := httpapi.ReadBody(r)
	if !ok {
		return resp
	}
	var req struct {
		Devices []string `json:"devices"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.BadJSON("request body has the wrong shape: %v", err)
	}
	if req.Devices == nil {
		return httpapi.MissingParam("devices is required")
	}
	if len(req.Devices) > 1000 {
		return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "at most 1000 devices per request")
	}
	if !dv.appServiceNoUIA(dev) {
		if resp, ok := dv.accounts.requireUIA(r, body, dev, [][]string{{stagePassword}}); !ok {
			return resp
		}
	}
	if err := dv.accounts.deleteDevices(r.Context(), dev.UserID, req.Devices); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// lastSeenMiddleware records, after each authenticated request, the
// device's last-seen time, IP and user agent. touchDevice throttles the
// writes per device and makes them in the background; here it only costs
// a hash and a map lookup (tokens the request just authenticated are in
// the cache).
func (dv *devices) lastSeenMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r)
		token := ""
		if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
			token = strings.TrimPrefix(h, "Bearer ")
		} else {
			token = r.URL.Query().Get("access_token")
		}
		if token == "" {
			return
		}
		e, ok := dv.accounts.tokens.get(hashToken(token), time.Now())
		if !ok {
			return
		}
		ip, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			ip = r.RemoteAddr
		}
		ua := r.UserAgent()
		if len(ua) > 512 {
			ua = ua[:512]
		}
		dv.accounts.touchDevice(e.dev.UserID, e.dev.DeviceID, ip, ua)
	})
}
