package federationapi

import (
	"errors"
	"net/http"
	"time"

	"enclave/internal/httpapi"
	"enclave/storage"
)

// GET /_matrix/federation/v1/openid/userinfo?access_token=…: a third party
// holding an OpenID token one of our users requested (POST
// /_matrix/client/v3/user/{userId}/openid/request_token) learns whose it
// is. The endpoint needs no X-Matrix signature: the token is the secret.

func (f *queries) openIDUserInfo(r *http.Request) httpapi.Response {
	token := r.URL.Query().Get("access_token")
	if token == "" || len(token) > 255 {
		return httpapi.Errf(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "access token unknown or expired")
	}
	user, err := storage.OpenIDTokenUser(r.Context(), f.db, storage.HashOpenIDToken(token), time.Now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.Errf(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "access token unknown or expired")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]string{"sub": user})
}
