package appservice

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"enclave/auditapi"
	"enclave/storage"
)

// Options are what the appservices need from the assembly.
type Options struct {
	ServerName    string
	Registrations []*Registration
	DB            *storage.DB
	Audit         *auditapi.Log
	// Client makes the calls to the bridges (transactions, ping); nil: a
	// client with a 30 s timeout.
	Client *http.Client
}

// Service is the set of registered appservices.
type Service struct {
	opts    Options
	regs    []*Registration
	client  *http.Client
	senders []*sender // one per registration with a url
}

// New checks the registrations against the server name.
func New(opts Options) (*Service, error) {
	s := &Service{opts: opts, regs: opts.Registrations, client: opts.Client}
	if s.client == nil {
		s.client = &http.Client{Timeout: 30 * time.Second}
	}
	for _, r := range s.regs {
		if r.Sender(opts.ServerName) == "" {
			return nil, fmt.Errorf("%s: sender_localpart: empty", r)
		}
		if r.PushURL() != "" {
			s.senders = append(s.senders, &sender{s: s, reg: r, wake: make(chan struct{}, 1)})
		}
	}
	return s, nil
}

// Registrations lists the loaded appservices.
func (s *Service) Registrations() []*Registration { return s.regs }

// EnsureSenders creates each appservice's sender user if it is missing
// (it needs no password: only the as_token acts as it), and records the
// load in the audit trail.
func (s *Service) EnsureSenders(ctx context.Context) error {
	for _, r := range s.regs {
		uid := r.Sender(s.opts.ServerName)
		err := s.opts.DB.WithTx(ctx, func(tx *storage.Tx) error {
			created, err := storage.CreateAccount(ctx, tx, &storage.Account{UserID: uid, Localpart: r.SenderLocalpart, CreatedTS: time.Now().UnixMilli(), DisplayName: r.SenderLocalpart})
			if err != nil {
				return err
			}
			return s.opts.Audit.Record(ctx, tx, auditapi.Entry{
				Actor:  auditapi.Actor{Server: s.opts.ServerName, AppService: r.ID},
				Action: auditapi.ActionAppServiceLoad, Target: uid,
				Details: map[string]any{"appservice": r.ID, "file": r.file, "sender_created": created, "pushes": r.PushURL() != ""},
			})
		})
		if err != nil {
			return fmt.Errorf("%s: %w", r, err)
		}
	}
	return nil
}

func (s *Service) byID(id string) *Registration {
	for _, r := range s.regs {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// ByToken implements clientapi.AppServices. Every registration is
// compared, so the time taken does not say which one matched.
func (s *Service) ByToken(token string) (id, sender string, ok bool) {
	if token == "" {
		return "", "", false
	}
	var found *Registration
	for _, r := range s.regs {
		if r.ASTokenIs(token) {
			found = r
		}
	}
	if found == nil {
		return "", "", false
	}
	return found.ID, found.Sender(s.opts.ServerName), true
}

// MayMasquerade implements clientapi.AppServices.
func (s *Service) MayMasquerade(id, userID string) bool {
	r := s.byID(id)
	return r != nil && r.OwnsUser(userID, s.opts.ServerName)
}

// ExclusiveUserOwner implements clientapi.AppServices.
func (s *Service) ExclusiveUserOwner(userID string) string {
	for _, r := range s.regs {
		if r.ExclusiveUser(userID) || userID == r.Sender(s.opts.ServerName) {
			return r.ID
		}
	}
	return ""
}

// RateLimited implements clientapi.AppServices.
func (s *Service) RateLimited(id string) bool {
	r := s.byID(id)
	return r == nil || r.IsRateLimited()
}

// ExclusiveAliasOwner implements clientapi.AppServices.
func (s *Service) ExclusiveAliasOwner(alias string) string {
	for _, r := range s.regs {
		if r.ExclusiveAlias(alias) {
			return r.ID
		}
	}
	return ""
}
