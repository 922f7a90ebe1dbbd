package appservice

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/storage"
)

// The server's queries to the bridges (spec: Application Service API,
// "Querying"): a client names a user or alias that does not exist but
// falls in an appservice's namespace, and the bridge is asked whether it
// exists on the partner network. Each query is bounded by queryTimeout,
// so a slow bridge delays only the request that named one of its IDs.

// queryTimeout bounds one query to one bridge.
const queryTimeout = 5 * time.Second

// QueryUser implements clientapi.AppServices: for a local user with no
// account, each appservice whose user namespace holds it is asked
// (GET /_matrix/app/v1/users/{userId}); on a 200 the account exists
// afterwards — made by the bridge through /register, or here if it did
// not — and true is returned.
func (s *Service) QueryUser(ctx context.Context, userID string) bool {
	localpart, ok := strings.CutPrefix(userID, "@")
	if !ok || !strings.HasSuffix(localpart, ":"+s.opts.ServerName) {
		return false
	}
	localpart = strings.TrimSuffix(localpart, ":"+s.opts.ServerName)
	var regs []*Registration
	for _, r := range s.Registrations() {
		if r.PushURL() != "" && match(r.Namespaces.Users, userID, false) {
			regs = append(regs, r)
		}
	}
	if len(regs) == 0 {
		return false
	}
	if ok, err := storage.AccountExists(ctx, s.opts.DB, userID); err != nil || ok {
		return ok
	}
	for _, r := range regs {
		if !s.query(ctx, r, "/_matrix/app/v1/users/"+url.PathEscape(userID)) {
			continue
		}
		err := s.opts.DB.WithTx(ctx, func(tx *storage.Tx) error {
			created, err := storage.CreateAccount(ctx, tx, &storage.Account{UserID: userID, Localpart: localpart, CreatedTS: time.Now().UnixMilli(), DisplayName: localpart})
			if err != nil || !created {
				return err
			}
			return s.opts.Audit.Record(ctx, tx, auditapi.Entry{
				Actor:  auditapi.Actor{Server: s.opts.ServerName, AppService: r.ID},
				Action: auditapi.ActionRegister, Target: userID,
				Details: map[string]any{"kind": "appservice_query", "appservice": r.ID},
			})
		})
		if err != nil {
			logrus.WithError(err).WithField("appservice", r.ID).Warn("appservice: creating a queried user")
			return false
		}
		return true
	}
	return false
}

// QueryAlias implements clientapi.AppServices: alias is a local alias that
// names no room. Each appservice whose alias namespace holds it is asked
// (GET /_matrix/app/v1/rooms/{alias}); true when one answered 200, having
// created the room and the alias through the client API, so the caller
// resolves it again.
func (s *Service) QueryAlias(ctx context.Context, alias string) bool {
	for _, r := range s.Registrations() {
		if r.PushURL() == "" || !r.OwnsAlias(alias) {
			continue
		}
		if s.query(ctx, r, "/_matrix/app/v1/rooms/"+url.PathEscape(alias)) {
			return true
		}
	}
	return false
}

// query makes one GET to a bridge and reports whether it answered 200.
func (s *Service) query(ctx context.Context, r *Registration, path string) bool {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	status, err := s.call(ctx, r, http.MethodGet, r.PushURL()+path, nil)
	if err != nil && status != http.StatusNotFound {
		logrus.WithError(err).WithField("appservice", r.ID).Debug("appservice: query")
	}
	return err == nil && status == http.StatusOK
}
