package clientapi

// Shared-secret registration, as Synapse's /_synapse/admin/v1/register:
// operators and test tools create users (admins included) with the
// registration shared secret, even when registration is closed.
//
//	GET  → {"nonce": N}            (single use, valid 60 s)
//	POST {nonce, username, password, admin, mac, displayname?, user_type?}
//	     mac = hex HMAC-SHA1(secret, nonce\0username\0password\0admin|notadmin[\0user_type])

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"enclave/auditapi"
	acct "enclave/internal/accounts"
	"enclave/internal/httpapi"
	"enclave/storage"
)

const (
	nonceLifetime = 60 * time.Second
	maxNonces     = 10000
)

type nonceStore struct {
	mu sync.Mutex
	m  map[string]time.Time // nonce -> expiry
}

func (s *nonceStore) issue(now time.Time) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, exp := range s.m {
		if !now.Before(exp) {
			delete(s.m, n)
		}
	}
	if len(s.m) >= maxNonces {
		return "", false
	}
	n := randomHex(16)
	s.m[n] = now.Add(nonceLifetime)
	return n, true
}

// take consumes a nonce, reporting whether it was issued and unexpired.
func (s *nonceStore) take(n string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.m[n]
	if !ok {
		return false
	}
	delete(s.m, n)
	return now.Before(exp)
}

func sharedSecretDisabled() httpapi.Response {
	return httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "Shared secret registration is not enabled")
}

func (ac *accounts) getAdminRegisterNonce(r *http.Request) httpapi.Response {
	if ac.opts.SharedSecret == "" {
		return sharedSecretDisabled()
	}
	n, ok := ac.nonces.issue(time.Now())
	if !ok {
		return httpapi.Errf(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "too many outstanding nonces")
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"nonce": n})
}

func (ac *accounts) postAdminRegister(r *http.Request) httpapi.Response {
	if ac.opts.SharedSecret == "" {
		return sharedSecretDisabled()
	}
	var req struct {
		Nonce       string  `json:"nonce"`
		Username    string  `json:"username"`
		Password    string  `json:"password"`
		Admin       bool    `json:"admin"`
		DisplayName string  `json:"displayname"`
		UserType    *string `json:"user_type"`
		MAC         string  `json:"mac"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.Nonce == "" {
		return httpapi.MissingParam("nonce is required")
	}
	// The nonce is spent whatever happens next.
	if !ac.nonces.take(req.Nonce, time.Now()) {
		return httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "unrecognised nonce")
	}
	switch {
	case req.Username == "" || len(req.Username) > 512 || strings.ContainsRune(req.Username, 0):
		return httpapi.InvalidParam("invalid username")
	case req.Password == "" || len(req.Password) > acct.MaxPasswordBytes || strings.ContainsRune(req.Password, 0):
		return httpapi.InvalidParam("invalid password")
	case req.MAC == "":
		return httpapi.MissingParam("mac is required")
	case req.UserType != nil && strings.ContainsRune(*req.UserType, 0):
		return httpapi.InvalidParam("invalid user_type")
	}

	mac := hmac.New(sha1.New, []byte(ac.opts.SharedSecret))
	mac.Write([]byte(req.Nonce))
	mac.Write([]byte{0})
	mac.Write([]byte(req.Username))
	mac.Write([]byte{0})
	mac.Write([]byte(req.Password))
	mac.Write([]byte{0})
	if req.Admin {
		mac.Write([]byte("admin"))
	} else {
		mac.Write([]byte("notadmin"))
	}
	if req.UserType != nil {
		mac.Write([]byte{0})
		mac.Write([]byte(*req.UserType))
	}
	got, err := hex.DecodeString(strings.ToLower(req.MAC))
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return httpapi.Forbidden("HMAC incorrect")
	}

	ctx := actorContext(r)
	localpart := strings.ToLower(req.Username)
	if resp, ok := ac.checkNewLocalpart(localpart); !ok {
		return resp
	}
	userID := ac.userID(localpart)
	taken, err := storage.AccountExists(ctx, ac.db, userID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if taken {
		return userInUse()
	}
	hash, err := acct.HashPassword(ctx, req.Password)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	displayName := req.DisplayName
	if displayName == "" {
		displayName = localpart
	}
	now := time.Now()
	var issued *issuedSession
	err = ac.db.WithTx(ctx, func(tx *storage.Tx) error {
		if taken, err := storage.AccountExists(ctx, tx, userID); err != nil {
			return err
		} else if taken {
			return errRegUserInUse
		}
		created, err := storage.CreateAccount(ctx, tx, &storage.Account{UserID: userID, Localpart: localpart, PasswordHash: hash, CreatedTS: now.UnixMilli(), IsAdmin: req.Admin, DisplayName: displayName})
		if err != nil {
			return err
		}
		if !created {
			return errRegUserInUse
		}
		if err := ac.opts.Audit.Record(ctx, tx, auditapi.Entry{Action: auditapi.ActionRegister, Target: userID,
			Details: map[string]any{"kind": "shared_secret", "admin": req.Admin}}); err != nil {
			return err
		}
		issued, err = ac.issueSession(ctx, tx, userID, "", "", false, now)
		return err
	})
	if errors.Is(err, errRegUserInUse) {
		return userInUse()
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{
		"access_token": issued.AccessToken,
		"user_id":      userID,
		"home_server":  ac.opts.ServerName,
		"device_id":    issued.DeviceID,
	})
}
