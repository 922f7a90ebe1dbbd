package clientapi

// PUT /sendToDevice/{eventType}/{txnId}: queue messages for devices. Local
// recipients read them from /sync (syncapi/e2ee.go); remote ones go through
// federation (RemoteToDevice) once it is installed.

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/storage"
)

// maxToDeviceMessages bounds the recipients of one request.
const maxToDeviceMessages = 10000

func (ks *keys) sendToDevice(r *http.Request, dev *httpapi.Device) httpapi.Response {
	v := httpapi.Vars(r)
	evType, txnID := v["eventType"], v["txnId"]
	if evType == "" || len(evType) > 255 || txnID == "" || len(txnID) > 255 {
		return httpapi.InvalidParam("invalid event type or transaction ID")
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.Messages == nil {
		return httpapi.MissingParam("messages is required")
	}
	ctx := r.Context()
	if _, err := storage.GetTxn(ctx, ks.db, dev.UserID, dev.DeviceID, "todevice", txnID); err == nil {
		return httpapi.JSON(http.StatusOK, struct{}{}) // already done: idempotent
	}
	n := 0
	users := make([]string, 0, len(req.Messages))
	for u, devs := range req.Messages {
		n += len(devs)
		if serverOf(u) == "" {
			return httpapi.InvalidParam("invalid user ID %q", u)
		}
		for d, content := range devs {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(content, &obj); err != nil || obj == nil {
				return httpapi.BadJSON("message content for %s/%s must be an object", u, d)
			}
		}
		users = append(users, u)
	}
	if n > maxToDeviceMessages {
		return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "at most %d messages per request", maxToDeviceMessages)
	}
	sort.Strings(users)
	var msgs []storage.ToDeviceMessage
	var recipients []string
	remote := map[string]map[string]map[string]json.RawMessage{}
	for _, u := range users {
		devs := req.Messages[u]
		if srv := serverOf(u); srv != ks.opts.ServerName {
			if remote[srv] == nil {
				remote[srv] = map[string]map[string]json.RawMessage{}
			}
			remote[srv][u] = devs
			continue
		}
		existing, err := storage.ListDeviceIDs(ctx, ks.db, u)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		known := make(map[string]bool, len(existing))
		for _, d := range existing {
			known[d] = true
		}
		targets := map[string]json.RawMessage{}
		if content, ok := devs["*"]; ok {
			for _, d := range existing {
				targets[d] = content
			}
		}
		for d, content := range devs {
			if d != "*" && known[d] {
				targets[d] = content // a message for one device wins over "*"
			}
		}
		if len(targets) == 0 {
			continue
		}
		ids := make([]string, 0, len(targets))
		for d := range targets {
			ids = append(ids, d)
		}
		sort.Strings(ids)
		for _, d := range ids {
			compact, err := compactJSON(targets[d])
			if err != nil {
				return httpapi.BadJSON("message content: %v", err)
			}
			msgs = append(msgs, storage.ToDeviceMessage{UserID: u, DeviceID: d, Sender: dev.UserID, Type: evType, Content: compact})
		}
		recipients = append(recipients, u)
	}
	err := ks.db.WithTx(ctx, func(tx *storage.Tx) error {
		if len(msgs) > 0 {
			pos, err := storage.InsertToDevice(ctx, tx, msgs)
			if err != nil {
				return err
			}
			tx.Publish(pos, func() { ks.sync.NotifyUsers(recipients...) })
		}
		return storage.PutTxn(ctx, tx, dev.UserID, dev.DeviceID, "todevice", txnID, "", time.Now().UnixMilli())
	})
	if storage.IsUniqueViolation(err) {
		return httpapi.JSON(http.StatusOK, struct{}{}) // a concurrent retry of the same transaction won
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if as := ks.accounts.appservices; as != nil && len(msgs) > 0 {
		as.Wake() // a recipient may be an appservice's device
	}
	if len(remote) > 0 {
		ks.sendRemoteToDevice(context.WithoutCancel(ctx), dev, evType, txnID, remote)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// sendRemoteToDevice hands messages for other servers to federation, which
// queues them durably; without federation they cannot be delivered.
func (ks *keys) sendRemoteToDevice(ctx context.Context, dev *httpapi.Device, evType, txnID string, remote map[string]map[string]map[string]json.RawMessage) {
	rt := ks.remoteToDevice()
	for srv, msgs := range remote {
		if rt == nil {
			logrus.WithField("server", srv).Debug("todevice: federation is not enabled; dropping messages for a remote server")
			continue
		}
		if err := rt.SendToDevice(ctx, srv, dev.UserID, evType, dev.DeviceID+"/"+txnID, msgs); err != nil {
			logrus.WithError(err).WithField("server", srv).Warn("todevice: queueing messages for a remote server")
		}
	}
}
