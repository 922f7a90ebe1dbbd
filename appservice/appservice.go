package appservice

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
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
	// TypingUsers is who is typing in a room now (the syncer's tracker),
	// for the m.typing events pushed to bridges; nil: no typing.
	TypingUsers func(roomID string) []string
	// QueueMaxEvents and QueueMaxAge bound each appservice's queue
	// (prune.go); 0: no bound.
	QueueMaxEvents int
	QueueMaxAge    time.Duration
	// Client makes the calls to the bridges (transactions, ping); nil: a
	// client with a 30 s timeout.
	Client *http.Client
}

// Service is the set of registered appservices.
type Service struct {
	opts   Options
	client *http.Client
	// cur is the registrations in force and their senders, swapped whole
	// by Reload: the room hook and every request read one consistent set.
	cur atomic.Pointer[registered]

	// stats is each appservice's delivery record since start, by id,
	// kept across reloads (the operators' view).
	statsMu sync.Mutex
	stats   map[string]*Delivery

	mu      sync.Mutex      // serialises Start, Reload and stop
	runCtx  context.Context // nil until Start; senders run under it
	stopped bool
}

// registered is one generation of registrations.
type registered struct {
	regs    []*Registration
	senders []*sender // one per registration with a url
}

// New takes the registrations loaded at start.
func New(opts Options) (*Service, error) {
	s := &Service{opts: opts, client: opts.Client}
	if s.client == nil {
		s.client = &http.Client{Timeout: 30 * time.Second}
	}
	s.cur.Store(s.generation(opts.Registrations))
	return s, nil
}

func (s *Service) generation(regs []*Registration) *registered {
	g := &registered{regs: regs}
	for _, r := range regs {
		if r.PushURL() != "" {
			g.senders = append(g.senders, &sender{s: s, reg: r, wake: make(chan struct{}, 1)})
		}
	}
	return g
}

// Registrations lists the appservices in force.
func (s *Service) Registrations() []*Registration { return s.cur.Load().regs }

// EnsureSenders creates each appservice's sender user if it is missing
// (it needs no password: only the as_token acts as it), and records the
// load in the audit trail.
func (s *Service) EnsureSenders(ctx context.Context) error {
	return s.ensureSenders(ctx, s.Registrations())
}

func (s *Service) ensureSenders(ctx context.Context, regs []*Registration) error {
	for _, r := range regs {
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
	for _, r := range s.Registrations() {
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
	for _, r := range s.Registrations() {
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
	for _, r := range s.Registrations() {
		if r.ExclusiveUser(userID) || userID == r.Sender(s.opts.ServerName) {
			return r.ID
		}
	}
	return ""
}

// MasqueradesDevices implements clientapi.AppServices: device_id
// masquerading is for appservices that manage devices (MSC3202, MSC4190).
func (s *Service) MasqueradesDevices(id string) bool {
	r := s.byID(id)
	return r != nil && (r.MSC3202 || r.MSC4190)
}

// ManagesDevices implements clientapi.AppServices: the appservice creates
// and deletes its users' devices without login or UIA (MSC4190).
func (s *Service) ManagesDevices(id string) bool {
	r := s.byID(id)
	return r != nil && r.MSC4190
}

// RateLimited implements clientapi.AppServices.
func (s *Service) RateLimited(id string) bool {
	r := s.byID(id)
	return r == nil || r.IsRateLimited()
}

// ExclusiveAliasOwner implements clientapi.AppServices.
func (s *Service) ExclusiveAliasOwner(alias string) string {
	for _, r := range s.Registrations() {
		if r.ExclusiveAlias(alias) {
			return r.ID
		}
	}
	return ""
}

// Delivery is how an appservice's pushes have gone since start.
type Delivery struct {
	LastSuccess time.Time // the last transaction it acknowledged
	LastFailure time.Time // the last one it did not
	LastError   string    // why (no token or body: a status or a connection error)
}

// delivered records one push's outcome.
func (s *Service) delivered(id string, err error) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if s.stats == nil {
		s.stats = map[string]*Delivery{}
	}
	d := s.stats[id]
	if d == nil {
		d = &Delivery{}
		s.stats[id] = d
	}
	if err == nil {
		d.LastSuccess = time.Now()
	} else {
		d.LastFailure, d.LastError = time.Now(), err.Error()
	}
}

func (s *Service) delivery(id string) Delivery {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if d := s.stats[id]; d != nil {
		return *d
	}
	return Delivery{}
}
