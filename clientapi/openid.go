package clientapi

import (
	"net/http"
	"time"

	"enclave/internal/httpapi"
	"enclave/storage"
)

// POST /user/{userId}/openid/request_token: a token the user hands to a
// third party (an integration manager, a widget host), which learns the
// user's ID from it through the federation API's GET /openid/userinfo.
// The token proves identity only; it grants no access to this server.

// openIDTokenLifetime is the expires_in of OpenID tokens.
const openIDTokenLifetime = time.Hour

func (ac *accounts) requestOpenIDToken(r *http.Request, dev *httpapi.Device) httpapi.Response {
	if httpapi.Vars(r)["userId"] != dev.UserID {
		return httpapi.Forbidden("you may only request OpenID tokens for yourself")
	}
	var body map[string]any
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	token, _ := newToken("enc_oi_")
	now := time.Now()
	err := storage.CreateOpenIDToken(r.Context(), ac.db, storage.HashOpenIDToken(token), dev.UserID, now.Add(openIDTokenLifetime).UnixMilli(), now.UnixMilli())
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{
		"access_token":       token,
		"token_type":         "Bearer",
		"matrix_server_name": ac.opts.ServerName,
		"expires_in":         int(openIDTokenLifetime / time.Second),
	})
}
