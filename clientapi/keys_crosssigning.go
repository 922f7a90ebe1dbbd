package clientapi

// Cross-signing: POST /keys/device_signing/upload and
// POST /keys/signatures/upload.

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// xsKey is a parsed cross-signing key object.
type xsKey struct {
	typ  string
	obj  map[string]json.RawMessage
	pub  string
	json []byte // compact form as stored
}

// parseXSKey checks a cross-signing key object of the given usage for
// userID: one ed25519 key, named by its public key.
func parseXSKey(raw json.RawMessage, userID, usage string) (*xsKey, httpapi.Response, bool) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, httpapi.BadJSON("%s key must be an object", usage), false
	}
	var head struct {
		UserID string            `json:"user_id"`
		Usage  []string          `json:"usage"`
		Keys   map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, httpapi.BadJSON("%s key has the wrong shape: %v", usage, err), false
	}
	if head.UserID != userID {
		return nil, httpapi.InvalidParam("%s key must belong to %s", usage, userID), false
	}
	if !slices.Contains(head.Usage, usage) {
		return nil, httpapi.InvalidParam("%s key must have usage %q", usage, usage), false
	}
	if len(head.Keys) != 1 {
		return nil, httpapi.InvalidParam("%s key must hold exactly one key", usage), false
	}
	var pub string
	for id, k := range head.Keys {
		if id != "ed25519:"+k {
			return nil, httpapi.InvalidParam("%s key ID must be ed25519:<public key>", usage), false
		}
		if _, err := decodeKey(k); err != nil {
			return nil, httpapi.InvalidParam("%s key is not a valid ed25519 key", usage), false
		}
		pub = k
	}
	delete(obj, "unsigned")
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, httpapi.BadJSON("%s key: %v", usage, err), false
	}
	return &xsKey{typ: usage, obj: obj, pub: pub, json: b}, httpapi.Response{}, true
}

func (ks *keys) crossSigningUpload(r *http.Request, dev *httpapi.Device) httpapi.Response {
	body, resp, ok := httpapi.ReadBody(r)
	if !ok {
		return resp
	}
	var req struct {
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
		UserSigning json.RawMessage `json:"user_signing_key"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.BadJSON("request body has the wrong shape: %v", err)
	}
	present := func(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }
	var keys []*xsKey
	var master *xsKey
	for _, p := range []struct {
		raw   json.RawMessage
		usage string
	}{{req.Master, storage.KeyTypeMaster}, {req.SelfSigning, storage.KeyTypeSelfSigning}, {req.UserSigning, storage.KeyTypeUserSigning}} {
		if !present(p.raw) {
			continue
		}
		k, resp, ok := parseXSKey(p.raw, dev.UserID, p.usage)
		if !ok {
			return resp
		}
		if k.typ == storage.KeyTypeMaster {
			master = k
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return httpapi.MissingParam("no cross-signing keys given")
	}
	ctx := r.Context()
	existing, err := storage.CrossSigningKeysFor(ctx, ks.db, []string{dev.UserID})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	stored := existing[dev.UserID]
	masterPub := ""
	if master != nil {
		masterPub = master.pub
		devices, err := storage.ListDeviceIDs(ctx, ks.db, dev.UserID)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		for _, k := range keys {
			if slices.Contains(devices, k.pub) {
				return httpapi.Forbidden("key ID %s is in use by a device", k.pub)
			}
		}
	} else if m := stored[storage.KeyTypeMaster]; m != nil {
		masterPub = m.PublicKey
	}
	for _, k := range keys {
		if k.typ == storage.KeyTypeMaster {
			continue
		}
		if masterPub == "" {
			return httpapi.MissingParam("no master key is available")
		}
		if !verifySigned(k.obj, dev.UserID, "ed25519:"+masterPub, masterPub) {
			return httpapi.Errf(http.StatusBadRequest, "M_INVALID_SIGNATURE", "the %s key is not signed by the master key", k.typ)
		}
	}
	// MSC3967: the first upload needs no UIA (nothing to protect yet), and
	// re-uploading exactly what is stored changes nothing.
	if stored[storage.KeyTypeMaster] != nil {
		same := true
		for _, k := range keys {
			if s := stored[k.typ]; s == nil || string(s.JSON) != string(k.json) {
				same = false
			}
		}
		if same {
			return httpapi.JSON(http.StatusOK, struct{}{})
		}
		if resp, ok := ks.accounts.requireUIA(r, body, dev, [][]string{{stagePassword}}); !ok {
			return resp
		}
	}
	now := time.Now().UnixMilli()
	err = ks.db.WithTx(ctx, func(tx *storage.Tx) error {
		types := make([]string, 0, len(keys))
		for _, k := range keys {
			if err := storage.SetCrossSigningKey(ctx, tx, &storage.CrossSigningKey{UserID: dev.UserID, Type: k.typ, PublicKey: k.pub, JSON: k.json}, now); err != nil {
				return err
			}
			types = append(types, k.typ)
		}
		if _, err := storage.RecordDeviceListChange(ctx, tx, dev.UserID, nil, false, ""); err != nil {
			return err
		}
		return ks.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionCrossSigning, Target: dev.UserID,
			Details: map[string]any{"keys": types}})
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// sigFailure is one entry of /keys/signatures/upload's failures.
func sigFailure(errcode, msg string) map[string]string {
	return map[string]string{"errcode": errcode, "error": msg}
}

func (ks *keys) signaturesUpload(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req map[string]map[string]json.RawMessage
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	total := 0
	for _, m := range req {
		total += len(m)
	}
	if total > maxKeysPerUpload {
		return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "at most %d signed objects per upload", maxKeysPerUpload)
	}
	ctx := r.Context()
	me := dev.UserID
	users := []string{me}
	for u := range req {
		if u != me {
			users = append(users, u)
		}
	}
	xs, err := storage.CrossSigningKeysFor(ctx, ks.db, users)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	var myDevices map[string]*storage.UserDeviceKeys
	if _, ok := req[me]; ok {
		all, err := storage.DeviceKeysForUsers(ctx, ks.db, []string{me})
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		myDevices = all[me]
	}
	failures := map[string]map[string]any{}
	fail := func(u, k, code, msg string) {
		if failures[u] == nil {
			failures[u] = map[string]any{}
		}
		failures[u][k] = sigFailure(code, msg)
	}
	var sigs []storage.KeySignature
	var myDevicesSigned []string
	myMasterSigned := false
	othersSigned := map[string]bool{}
	for u, objs := range req {
		for keyID, raw := range objs {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
				fail(u, keyID, "M_BAD_JSON", "signed object must be a JSON object")
				continue
			}
			switch {
			case u == me && myDevices[keyID] != nil:
				// A device of ours, signed by our self-signing key.
				ssk := xs[me][storage.KeyTypeSelfSigning]
				if ssk == nil {
					fail(u, keyID, "M_MISSING_PARAM", "no self-signing key is uploaded")
					continue
				}
				var storedObj map[string]json.RawMessage
				_ = json.Unmarshal(myDevices[keyID].KeyJSON, &storedObj)
				if !sameSignedContent(obj, storedObj) {
					fail(u, keyID, "M_INVALID_PARAM", "the signed object does not match the device's keys")
					continue
				}
				signer := "ed25519:" + ssk.PublicKey
				if !verifySigned(obj, me, signer, ssk.PublicKey) {
					fail(u, keyID, "M_INVALID_SIGNATURE", "invalid signature")
					continue
				}
				sigs = append(sigs, storage.KeySignature{TargetUser: me, TargetKey: keyID, SignerUser: me, SignerKey: signer, Signature: objectSignatures(obj)[me][signer]})
				myDevicesSigned = append(myDevicesSigned, keyID)
			case u == me && xs[me][storage.KeyTypeMaster] != nil && keyID == xs[me][storage.KeyTypeMaster].PublicKey:
				// Our master key, signed by one of our devices.
				mk := xs[me][storage.KeyTypeMaster]
				var storedObj map[string]json.RawMessage
				_ = json.Unmarshal(mk.JSON, &storedObj)
				if !sameSignedContent(obj, storedObj) {
					fail(u, keyID, "M_INVALID_PARAM", "the signed object does not match the master key")
					continue
				}
				found := false
				for signer, sig := range objectSignatures(obj)[me] {
					devID, ok := strings.CutPrefix(signer, "ed25519:")
					if !ok || myDevices[devID] == nil {
						continue
					}
					if !verifySigned(obj, me, signer, myDevices[devID].Ed25519) {
						continue
					}
					found = true
					sigs = append(sigs, storage.KeySignature{TargetUser: me, TargetKey: keyID, SignerUser: me, SignerKey: signer, Signature: sig})
				}
				if !found {
					fail(u, keyID, "M_INVALID_SIGNATURE", "no valid device signature on the master key")
					continue
				}
				myMasterSigned = true
			case u == me:
				fail(u, keyID, "M_NOT_FOUND", "unknown key")
			default:
				// Another user's master key, signed by our user-signing key.
				usk := xs[me][storage.KeyTypeUserSigning]
				mk := xs[u][storage.KeyTypeMaster]
				if usk == nil {
					fail(u, keyID, "M_MISSING_PARAM", "no user-signing key is uploaded")
					continue
				}
				if mk == nil || keyID != mk.PublicKey {
					fail(u, keyID, "M_NOT_FOUND", "unknown master key")
					continue
				}
				var storedObj map[string]json.RawMessage
				_ = json.Unmarshal(mk.JSON, &storedObj)
				if !sameSignedContent(obj, storedObj) {
					fail(u, keyID, "M_INVALID_PARAM", "the signed object does not match the master key")
					continue
				}
				signer := "ed25519:" + usk.PublicKey
				if !verifySigned(obj, me, signer, usk.PublicKey) {
					fail(u, keyID, "M_INVALID_SIGNATURE", "invalid signature")
					continue
				}
				sigs = append(sigs, storage.KeySignature{TargetUser: u, TargetKey: keyID, SignerUser: me, SignerKey: signer, Signature: objectSignatures(obj)[me][signer]})
				othersSigned[u] = true
			}
		}
	}
	if len(sigs) > 0 {
		err := ks.db.WithTx(ctx, func(tx *storage.Tx) error {
			for _, s := range sigs {
				if err := storage.AddSignature(ctx, tx, s); err != nil {
					return err
				}
			}
			if len(myDevicesSigned) > 0 {
				if _, err := storage.RecordDeviceListChange(ctx, tx, me, myDevicesSigned, false, ""); err != nil {
					return err
				}
			}
			if myMasterSigned {
				if _, err := storage.RecordDeviceListChange(ctx, tx, me, nil, false, ""); err != nil {
					return err
				}
			}
			// Signatures on others' keys are only shown to us.
			users := make([]string, 0, len(othersSigned))
			for u := range othersSigned {
				if _, err := storage.RecordDeviceListChange(ctx, tx, u, nil, false, me); err != nil {
					return err
				}
				users = append(users, u)
			}
			slices.Sort(users)
			return ks.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: me, DeviceID: dev.DeviceID}, Action: auditapi.ActionSignatures, Target: me,
				Details: map[string]any{"count": len(sigs), "devices": len(myDevicesSigned), "master": myMasterSigned, "users": users}})
		})
		if err != nil {
			return httpapi.InternalError(r, err)
		}
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"failures": failures})
}
