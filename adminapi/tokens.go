package adminapi

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"regexp"
	"time"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// Registration tokens, as Synapse's /_synapse/admin/v1/registration_tokens.

var validRegToken = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)

// GET /_synapse/admin/v1/registration_tokens[?valid=true|false]
func (a *API) listRegTokens(r *http.Request, _ *httpapi.Device) httpapi.Response {
	valid, ok := boolParam(r, "valid")
	if !ok {
		return badParam("valid must be true or false")
	}
	toks, err := storage.ListRegistrationTokens(r.Context(), a.DB)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	now := time.Now().UnixMilli()
	out := []*storage.RegistrationToken{}
	for _, t := range toks {
		isValid := (t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed) && (t.ExpiryTime == nil || *t.ExpiryTime > now)
		if valid == nil || *valid == isValid {
			out = append(out, t)
		}
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"registration_tokens": out})
}

// GET /_synapse/admin/v1/registration_tokens/{token}
func (a *API) getRegToken(r *http.Request, _ *httpapi.Device) httpapi.Response {
	t, err := storage.GetRegistrationToken(r.Context(), a.DB, vars(r, "token"))
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no such registration token")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, t)
}

// optionalInt distinguishes absent, null and a number in a JSON body.
type optionalInt struct {
	Set   bool
	Value *int64
}

func (o *optionalInt) UnmarshalJSON(b []byte) error {
	o.Set = true
	if string(b) == "null" {
		o.Value = nil
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	o.Value = &n
	return nil
}

func checkTokenLimits(uses, expiry optionalInt) (httpapi.Response, bool) {
	if uses.Value != nil && *uses.Value < 0 {
		return badParam("uses_allowed must be a non-negative integer or null"), false
	}
	if expiry.Value != nil && *expiry.Value <= time.Now().UnixMilli() {
		return badParam("expiry_time must not be in the past"), false
	}
	return httpapi.Response{}, true
}

// POST /_synapse/admin/v1/registration_tokens/new
func (a *API) newRegToken(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req struct {
		Token       *string     `json:"token"`
		UsesAllowed optionalInt `json:"uses_allowed"`
		ExpiryTime  optionalInt `json:"expiry_time"`
		Length      *int        `json:"length"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if resp, ok := checkTokenLimits(req.UsesAllowed, req.ExpiryTime); !ok {
		return resp
	}
	tok := ""
	if req.Token != nil {
		if !validRegToken.MatchString(*req.Token) {
			return badParam("token must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~' and '-'")
		}
		tok = *req.Token
	} else {
		n := 16
		if req.Length != nil {
			if *req.Length < 1 || *req.Length > 64 {
				return badParam("length must be between 1 and 64")
			}
			n = *req.Length
		}
		tok = randomToken(n)
	}
	t := &storage.RegistrationToken{Token: tok, UsesAllowed: req.UsesAllowed.Value, ExpiryTime: req.ExpiryTime.Value}
	ctx := r.Context()
	err := a.DB.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := storage.GetRegistrationToken(ctx, tx, tok); err == nil {
			return errExists
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		created, err := storage.CreateRegistrationToken(ctx, tx, t)
		if err != nil {
			return err
		}
		if !created {
			return errExists
		}
		return a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionRegTokenChange, Target: tokenRef(tok),
			Details: map[string]any{"op": "create", "uses_allowed": t.UsesAllowed, "expiry_time": t.ExpiryTime}})
	})
	if errors.Is(err, errExists) {
		return badParam("token already exists")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, t)
}

// PUT /_synapse/admin/v1/registration_tokens/{token}
func (a *API) putRegToken(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var req struct {
		UsesAllowed optionalInt `json:"uses_allowed"`
		ExpiryTime  optionalInt `json:"expiry_time"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if resp, ok := checkTokenLimits(req.UsesAllowed, req.ExpiryTime); !ok {
		return resp
	}
	tok := vars(r, "token")
	ctx := r.Context()
	var out *storage.RegistrationToken
	err := a.DB.WithTx(ctx, func(tx *storage.Tx) error {
		t, err := storage.GetRegistrationToken(ctx, tx, tok)
		if err != nil {
			return err
		}
		if req.UsesAllowed.Set {
			t.UsesAllowed = req.UsesAllowed.Value
		}
		if req.ExpiryTime.Set {
			t.ExpiryTime = req.ExpiryTime.Value
		}
		if _, err := storage.UpdateRegistrationToken(ctx, tx, tok, t.UsesAllowed, t.ExpiryTime); err != nil {
			return err
		}
		out = t
		return a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionRegTokenChange, Target: tokenRef(tok),
			Details: map[string]any{"op": "update", "uses_allowed": t.UsesAllowed, "expiry_time": t.ExpiryTime}})
	})
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no such registration token")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, out)
}

// DELETE /_synapse/admin/v1/registration_tokens/{token}
func (a *API) deleteRegToken(r *http.Request, dev *httpapi.Device) httpapi.Response {
	tok := vars(r, "token")
	ctx := r.Context()
	err := a.DB.WithTx(ctx, func(tx *storage.Tx) error {
		ok, err := storage.DeleteRegistrationToken(ctx, tx, tok)
		if err != nil {
			return err
		}
		if !ok {
			return storage.ErrNotFound
		}
		return a.record(ctx, tx, dev, auditapi.Entry{Action: auditapi.ActionRegTokenChange, Target: tokenRef(tok), Details: map[string]any{"op": "delete"}})
	})
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no such registration token")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}

// tokenRef names a registration token in the audit trail without giving
// it away: its first characters only.
func tokenRef(tok string) string {
	if len(tok) <= 4 {
		return "token:" + tok[:1] + "…"
	}
	return "token:" + tok[:4] + "…"
}

func randomToken(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, n)
	for i := range out {
		x, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		out[i] = alphabet[x.Int64()]
	}
	return string(out)
}
