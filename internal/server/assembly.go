package server

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"enclave/adminapi"
	"enclave/appservice"
	"enclave/auditapi"
	"enclave/auditapi/endpoints"
	"enclave/auditapi/siem"
	"enclave/clientapi"
	"enclave/config"
	"enclave/federationapi"
	importsvc "enclave/importer/service"
	"enclave/internal/httpapi"
	"enclave/internal/perm"
	pushnotify "enclave/internal/pushrules/notifier"
	"enclave/internal/rbac"
	"enclave/mediaapi"
	"enclave/roomserver"
	"enclave/storage"
	"enclave/syncapi"
)

// The room server meets everything federation asks of it.
var _ federationapi.RoomServer = (*roomserver.RoomServer)(nil)

// retentionInterval is how often expired events (MSC1763) are purged.
const retentionInterval = time.Hour

// build makes every component and connects them, in one fixed order. The
// order matters in four places, each noted at its step:
//   - room server hooks run in the order added, inside each event's
//     transaction: audit, then device lists, then the room index; then
//     the state hooks: federation's outbound queue, then the appservice
//     queue;
//   - room server subscribers run in the order added, after commit: the
//     sync stream (syncapi.New), then the push notifier;
//   - sync extensions fill a response in the order added: E2EE,
//     relations, account data, ephemeral, presence, unread counts last;
//   - shutdown closers run in the order added, start hooks likewise.
func (s *Server) build(ctx context.Context) error {
	cfg := s.Config
	// The core: the room server is the writer of rooms; the sync stream
	// subscribes to it first. Event wakes are handed off to the push
	// notifier (buildSocial), which wakes a room once the event's unread
	// counts are stored, so both come in one /sync response.
	s.Rooms = roomserver.New(s.DB, cfg.ServerName, s.KeyID, s.Key)
	s.Sync = syncapi.New(s.DB, s.Rooms, syncapi.Options{
		EventWakesHandedOff: true,
		PresenceDisabled:    !cfg.Presence.Enabled,
	})
	// The audit log is opened before every component that records into
	// it; each is given it explicitly (buildAudit adds its hooks later).
	if err := s.openAudit(ctx); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	copts := ClientOptions(cfg)
	copts.Audit = s.Audit
	client, err := clientapi.New(copts, s.DB, s.Rooms, s.Sync, s.Registry)
	if err != nil {
		return err
	}
	s.Client = client
	s.registerMetrics()
	// Delayed events (MSC4140) are sent once the server serves, and not
	// after it stops.
	s.OnStart(func() error {
		s.OnShutdown(client.StartDelayedEvents())
		return nil
	})

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"admin", s.buildAdmin},           // RBAC first: every authenticated route, audit's included, is checked by it
		{"audit", s.buildAudit},           // its event hook is the first room hook
		{"media", s.buildMedia},           // audited from the start
		{"import", s.buildImport},         // writes through the room server and media
		{"federation", s.buildFederation}, // after media (it fetches remote media) and audit (refusals)
		{"appservices", s.buildAppServices},
		{"e2ee", s.buildE2EE},
		{"room index", s.buildRoomIndex},
		{"social", s.buildSocial}, // after federation: the push notifier subscribes after it
	}
	for _, st := range steps {
		if err := st.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
	}

	// Long-polling /sync requests would hold http.Server.Shutdown until
	// their timeouts (up to the whole drain deadline): once the listeners
	// are open, have their Shutdown first end the long-polls.
	s.OnStart(func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, srv := range s.servers {
			srv.RegisterOnShutdown(s.Sync.Shutdown)
		}
		return nil
	})
	return nil
}

// buildAdmin: RBAC on every authenticated client-API request, raw routes
// included (clientapi.Authenticate runs the authorizer; it also attaches
// the requester to the request for the audit trail), the admin API and
// the retention purge job.
func (s *Server) buildAdmin(ctx context.Context) error {
	z, err := rbac.New(ctx, s.DB, RBACAudit(s.Audit), s.Config.RBAC.Roles, s.Config.RBAC.DefaultRole)
	if err != nil {
		return err
	}
	s.RBAC = z
	s.Client.SetAuthorizer(func(r *http.Request, dev *httpapi.Device, need perm.Requirement) (httpapi.Response, bool) {
		clientapi.AttachActor(r, dev)
		return z.Authorize(r, dev, need)
	})
	s.Admin = adminapi.New(adminapi.Options{
		DB: s.DB, Rooms: s.Rooms, Client: s.Client, RBAC: z, Audit: s.Audit, ServerName: s.Config.ServerName, Version: Version,
		Retention: adminapi.RetentionPolicy{
			DefaultMaxLifetime: s.Config.Retention.DefaultMaxLifetime.Duration,
			AllowedMin:         s.Config.Retention.AllowedLifetimeMin.Duration,
			AllowedMax:         s.Config.Retention.AllowedLifetimeMax.Duration,
		},
		// Read when a request comes, by which time buildMedia has run.
		Media:   func() adminapi.MediaAdmin { return s.Media },
		Metrics: s.Registry,
		// Likewise after buildFederation; nil when federation is off.
		Destinations: func() adminapi.Destinations {
			if s.Federation == nil {
				return nil
			}
			return federationapi.NewDestinations(s.Federation)
		},
		NotifyUser: func(userID string) { s.Sync.NotifyUsers(userID) },
		AppServices: func() adminapi.AppServices {
			if s.AppServices == nil {
				return nil
			}
			return s.AppServices
		},
	})
	if err := s.Admin.Register(); err != nil {
		return err
	}
	s.OnStart(func() error {
		s.OnShutdown(s.Admin.StartRetention(retentionInterval))
		return nil
	})
	return nil
}

// openAudit loads the audit signing key (never the federation key: see
// config/auditkey.go) and opens the audit log, which checks the chain's
// tail against the last exported head before it signs anything.
func (s *Server) openAudit(ctx context.Context) error {
	c := s.Config.Audit
	ak, err := config.LoadAuditKey(s.Config, true)
	if err != nil {
		return err
	}
	if ak.Path != "" && s.Config.InsideDataDir(ak.Path) {
		logrus.WithField("path", ak.Path).Warn("audit: the audit signing key lies inside the data directory: whoever can copy or edit the data directory can re-sign a rewritten audit log; move it elsewhere (audit.signing_key) or provide it through audit.signing_key_env")
	}
	if ak.Created {
		logrus.WithFields(logrus.Fields{"path": ak.Path, "key_id": ak.KeyID}).Info("generated a new audit signing key (public key in PATH.pub): keep a copy of the public key off the host for verification")
	}
	anchor := s.Config.AuditAnchorPath()
	if anchor != "" && s.Config.InsideDataDir(anchor) {
		logrus.WithField("path", anchor).Warn("audit: audit.anchor_file lies inside the data directory: it is lost with it and anchors nothing against whoever controls it")
	}
	l, err := auditapi.Open(ctx, s.DB, auditapi.Options{
		Enabled: c.Enabled, ServerName: s.Config.ServerName, KeyID: ak.KeyID, Key: ak.Key,
		LegacyKeyID: s.KeyID, LegacyKey: s.Key.Public().(ed25519.PublicKey),
		CheckpointEvery: c.CheckpointEvery, CheckpointInterval: c.CheckpointInterval.Duration,
		HeadExportPath: c.HeadExportPath, AnchorPath: anchor, HeadSyslog: c.HeadSyslog, SyslogAddress: c.SyslogAddress,
	})
	if err != nil {
		return err
	}
	s.Audit = l
	// Key operations are audited (after server.start, by buildAudit): the
	// keys made for this start.
	for _, k := range []struct {
		made   bool
		action string
		id     string
	}{{s.signingKeyCreated, auditapi.ActionSigningKey, s.KeyID}, {ak.Created, auditapi.ActionAuditKey, ak.KeyID}} {
		if k.made {
			s.keyOps = append(s.keyOps, auditapi.Entry{Actor: auditapi.Actor{Server: s.Config.ServerName}, Action: k.action,
				Target: k.id, Details: map[string]any{"op": "generated", "via": "server start"}})
		}
	}
	return nil
}

// buildAudit: the room event hook that records every stored event in its
// own transaction, the auditor endpoints, and server start and stop
// entries.
func (s *Server) buildAudit(ctx context.Context) error {
	c := s.Config.Audit
	l := s.Audit
	s.Rooms.AddHook(l.EventHook())
	if err := (&endpoints.API{DB: s.DB, Client: s.Client, RBAC: s.RBAC, Log: l, ServerName: s.Config.ServerName,
		Version: Version, HeadPath: c.HeadExportPath, AnchorPath: s.Config.AuditAnchorPath()}).Register(); err != nil {
		return err
	}
	if err := s.buildSIEM(); err != nil {
		return err
	}
	start := map[string]any{"version": Version}
	if sinks := s.SIEM.Sinks(); len(sinks) > 0 {
		start["siem_sinks"] = sinks
	}
	if err := l.Record(ctx, s.DB, auditapi.Entry{Actor: auditapi.Actor{Server: s.Config.ServerName},
		Action: auditapi.ActionServerStart, Details: start}); err != nil {
		return err // New closes the log
	}
	for _, e := range s.keyOps {
		if err := l.Record(ctx, s.DB, e); err != nil {
			return err
		}
	}
	s.OnShutdown(func() {
		if err := l.Record(context.Background(), s.DB, auditapi.Entry{Actor: auditapi.Actor{Server: s.Config.ServerName},
			Action: auditapi.ActionServerStop}); err != nil {
			logrus.WithError(err).Error("audit: recording server stop")
		}
		if err := l.Close(); err != nil {
			logrus.WithError(err).Error("audit: closing the log")
		}
		// After the log's last seal: the stop entry and final checkpoint
		// go out in the streamer's last pass (or at the next start).
		s.SIEM.Stop()
	})
	return nil
}

// buildSIEM: the audit.siem streamer, a reader of the sealed chain beside
// the write path, with a position per sink in the store. It connects to
// nothing unless a sink is configured, and runs while the server serves.
func (s *Server) buildSIEM() error {
	c := s.Config.Audit.SIEM
	o := siem.Options{ServerName: s.Config.ServerName, Version: Version, Format: c.Format}
	if c.Syslog.Address != "" {
		tc, err := s.Config.SIEMSyslogTLSConfig()
		if err != nil {
			return err
		}
		o.Syslog = &siem.SyslogOptions{Address: c.Syslog.Address, TLS: tc}
	}
	if c.File.Path != "" {
		o.File = &siem.FileOptions{Path: c.File.Path, MaxBytes: int64(c.File.MaxSizeMB * (1 << 20)), MaxFiles: c.File.MaxFiles}
	}
	st, err := siem.New(s.DB, o)
	if err != nil || st == nil {
		return err
	}
	if err := st.RegisterMetrics(s.Registry); err != nil {
		return err
	}
	s.SIEM = st
	s.OnStart(func() error {
		st.Start()
		return nil
	})
	return nil
}

// ConfigReloaded records a configuration reload (SIGHUP) in the audit
// trail; err is the reload's failure, if any.
func (s *Server) ConfigReloaded(path string, err error) {
	e := auditapi.Entry{Actor: auditapi.Actor{Server: s.Config.ServerName}, Action: auditapi.ActionConfigLoad, Details: map[string]any{"path": path}}
	if err != nil {
		e.Outcome = auditapi.OutcomeFailure
		e.Details["error"] = err.Error()
	}
	if rerr := s.Audit.Record(context.Background(), s.DB, e); rerr != nil {
		logrus.WithError(rerr).Error("audit: recording config reload")
	}
}

// buildMedia: the media repository, its client routes and its audit hook.
func (s *Server) buildMedia(ctx context.Context) error {
	mopts := mediaapi.OptionsFromConfig(s.Config)
	mopts.Audit = s.Audit
	if mopts.Preview.Enabled { // previews reach https sites the agency CA may sign
		roots, err := s.Config.RootCAs()
		if err != nil {
			return err
		}
		mopts.Preview.RootCAs = roots
	}
	repo, err := mediaapi.New(ctx, mopts, s.DB)
	if err != nil {
		return err
	}
	if err := repo.Register(s.Client); err != nil {
		return err
	}
	repo.SetAuditHook(s.Audit.MediaHook())
	if err := repo.RegisterMetrics(s.Registry); err != nil {
		return err
	}
	s.Media = repo
	return nil
}

// buildImport: the admin endpoint that imports a Slack or Mattermost
// export into the running server (enclave import --server), through the
// same room server, media repository and audit log as every write.
func (s *Server) buildImport(context.Context) error {
	s.Import = &importsvc.Service{DB: s.DB, Rooms: s.Rooms, Media: s.Media, Audit: s.Audit, ServerName: s.Config.ServerName,
		SpoolDir: filepath.Join(s.Config.DataDir, "import-spool")}
	return s.Import.Register(s.Client)
}

// buildFederation: with federation.enabled, the federation component (key
// ring, policy, outbound client and queue, /send and the key endpoints),
// its TLS 1.3 listener on listen.federation, and everything that reaches
// other servers through it: remote events for the room server, remote
// keys, to-device messages and profiles for the client API, remote media
// for the media repository, device-list changes and typing, receipt and
// presence EDUs. The current signing key is recorded even with federation
// off, so a later rotation can still publish it as an old key.
func (s *Server) buildFederation(ctx context.Context) error {
	if !s.Config.Federation.Enabled {
		pub := base64.RawStdEncoding.EncodeToString(s.Key.Public().(ed25519.PublicKey))
		return storage.RecordOwnKey(ctx, s.DB, s.KeyID, pub, time.Now().UnixMilli())
	}
	f, err := federationapi.New(s.Config, s.DB, s.Rooms, s.KeyID, s.Key)
	if err != nil {
		return err
	}
	f.SetVersion(Version)
	if err := f.RegisterMetrics(s.Registry); err != nil {
		return err
	}
	s.Federation = f
	f.SetAuditHook(s.Audit.FederationRefusalHook())

	// Remote events close gaps through federation; local events are
	// queued for the servers in the room inside their own transaction
	// (a crash after commit cannot lose them); an invite of another
	// server's user is countersigned by that server before it is stored;
	// clients join, leave and knock on remote rooms, look up remote
	// aliases and backfill. The client API's typing, receipt and presence
	// handlers tell federation of each change: typing is sent at once,
	// receipts and presence are read back from the stream by federation's
	// tailer, which the news wakes so they leave at once.
	s.Rooms.SetFetcher(f.Fetcher())
	s.Rooms.AddStateHook(f.QueueRoomEvent)
	s.Rooms.SetInviteSigner(f.Memberships().CountersignInvite)
	s.fedEphemeral = f.EphemeralSender(s.Sync.Typing().Users)
	s.Client.SetFederation(f.Memberships(), s.fedEphemeral)

	// The client API's /keys/query, /keys/claim and /sendToDevice reach
	// other servers' users; local users' device-list and cross-signing
	// changes go out as EDUs; profiles of remote users are looked up.
	s.Client.SetRemoteKeys(f.E2EE())
	s.Client.SetRemoteToDevice(f.E2EE())
	s.DB.OnDeviceListChange(f.DeviceListChanged)
	s.Client.SetRemoteProfiles(f)
	s.Media.SetRemoteFetcher(mediaFetcher{f})

	// The local services federation delivers into: sync wake-ups, the
	// typing tracker, local media. Started before the component itself.
	s.OnStart(func() error {
		// Remote typing, receipts, presence and to-device messages also
		// reach the bridges (their senders are woken; typing is queued).
		as := s.AppServices
		f.StartLocal(federationapi.Local{
			NotifyUsers: func(users ...string) { s.Sync.NotifyUsers(users...); as.Wake() },
			NotifyRoom:  func(roomID string) { s.Sync.NotifyRoom(roomID); as.Wake() },
			SetTyping: func(roomID, userID string, typing bool, timeout time.Duration) {
				s.Sync.Typing().Set(roomID, userID, typing, timeout)
				as.SendTyping(context.Background(), roomID, userID, typing, timeout)
			},
			PresenceEnabled: s.Sync.Presence().Enabled,
			StreamPos:       s.DB.Stream.Current,
			Media:           s.Media,
		})
		return nil
	})
	s.OnStart(f.Start)
	// The typing timers and local delivery stop before the component.
	s.OnShutdown(func() {
		s.fedEphemeral.Stop()
		f.StopLocal()
	})
	s.OnShutdown(f.Stop)

	if addr := s.Config.Listen.Federation; addr != "" {
		tc, err := s.Config.FederationTLSConfig()
		if err != nil {
			return err
		}
		s.AddListener(addr, f.Handler(), tc)
	} else {
		logrus.Warn("federation is enabled but listen.federation is empty: outbound only")
	}
	return nil
}

// buildAppServices: the registration files (an invalid one fails the
// start), each appservice's sender user, the as_token authentication and
// namespace reservations of the client API, the ping route, and the
// persistent transaction queue: filled by a state hook inside each event's
// transaction, pushed by one sender per bridge that the room server's
// subscriber wakes after commit.
func (s *Server) buildAppServices(ctx context.Context) error {
	regs, err := appservice.LoadFiles(s.Config.AppServices.ConfigFiles)
	if err != nil {
		return err
	}
	as, err := appservice.New(appservice.Options{ServerName: s.Config.ServerName, Registrations: regs, DB: s.DB, Audit: s.Audit,
		TypingUsers:    s.Sync.Typing().Users,
		QueueMaxEvents: s.Config.AppServices.QueueMaxEvents, QueueMaxAge: s.Config.AppServices.QueueMaxAge.Duration})
	if err != nil {
		return err
	}
	s.AppServices = as
	// Installed even with none registered: SIGHUP may add some.
	if err := as.EnsureSenders(ctx); err != nil {
		return err
	}
	s.Client.SetAppServices(as)
	// Local typing, receipts and presence reach the bridges that take
	// ephemeral events (after federation hears of them).
	s.Client.AddEphemeralSender(as)
	// Device-list changes wake the senders of encrypting bridges.
	s.DB.OnDeviceListChange(func([]storage.DeviceListChange) { as.Wake() })
	if err := as.Register(s.Client); err != nil {
		return err
	}
	s.Rooms.AddStateHook(as.QueueRoomEvent)
	s.Rooms.Subscribe(func(roomserver.OutputEvent) { as.Wake() })
	s.OnStart(func() error {
		s.OnShutdown(as.Start())
		return nil
	})
	return nil
}

// mediaFetcher fetches other servers' media over federation for the media
// repository.
type mediaFetcher struct{ f *federationapi.Federation }

func (m mediaFetcher) FetchMedia(ctx context.Context, server, mediaID string) (*mediaapi.RemoteMedia, error) {
	body, ct, name, err := m.f.FetchMedia(ctx, server, mediaID)
	if errors.Is(err, federationapi.ErrMediaNotFound) {
		return nil, mediaapi.ErrRemoteNotFound
	}
	if err != nil {
		return nil, err
	}
	return &mediaapi.RemoteMedia{Body: body, ContentType: ct, FileName: name}, nil
}

// buildE2EE: the sync extension (to-device, device lists, key counts), the
// room-server hook that feeds joins and leaves into the device-list stream,
// and the waker that device-list changes use to reach long-polling syncs.
// Backfilled history (negative positions) is not a change anyone must
// hear of.
func (s *Server) buildE2EE(context.Context) error {
	s.DB.SetDeviceListWaker(s.Sync.NotifyUsers)
	s.Sync.AddExtension(syncapi.NewE2EE(s.DB, s.Sync))
	s.Rooms.AddHook(func(ctx context.Context, tx *storage.Tx, ev *storage.Event, _ gomatrixserverlib.PDU) error {
		if ev.Type != "m.room.member" || ev.StateKey == nil || ev.StreamPos <= 0 || ev.SoftFailed || ev.Rejected || ev.Outlier {
			return nil
		}
		return storage.RecordMembershipTransition(ctx, tx, ev.StreamPos, ev.RoomID, *ev.StateKey, ev.Membership)
	})
	return nil
}

// buildRoomIndex: search, relations and directory stats (the room
// server's index hook, see roomserver/index.go), the relations sync
// extension and the user directory's scope.
func (s *Server) buildRoomIndex(ctx context.Context) error {
	if err := roomserver.PrepareIndex(ctx, s.DB); err != nil {
		return err
	}
	s.Rooms.AddHook(roomserver.IndexEvent)
	s.Sync.AddExtension(s.Sync.RelationsExtension())
	s.Client.SetUserDirectorySearchAll(s.Config.UserDirectory.SearchAllUsers)
	return nil
}

// buildSocial: profiles, account data, typing, receipts, presence, push
// rules and unread counts.
func (s *Server) buildSocial(ctx context.Context) error {
	s.Client.SetSocialOptions(clientapi.SocialOptions{ProfileRequireSharedRoom: s.Config.Profile.RequireSharedRoom})

	if s.Config.Presence.Enabled {
		if err := s.Sync.Presence().Start(ctx); err != nil {
			return err
		}
		s.OnShutdown(s.Sync.Presence().Stop)
	}

	// Push rules run after each event commits; counts reach /sync
	// through the notification rows' stream positions. The notifier wakes
	// the rooms' long-polls once an event's counts are stored (the syncer
	// was built with EventWakesHandedOff), so the event and its counts
	// come in one response.
	s.Push = pushnotify.New(s.DB, newPushRooms(s.Rooms), s.Config.ServerName, s.Sync.NotifyUsers, s.Sync.NotifyRoom)
	s.Rooms.Subscribe(func(o roomserver.OutputEvent) { s.Push.OnEvent(o.Event) })
	s.OnShutdown(s.Push.Close)
	s.OnShutdown(s.Sync.Typing().Stop)

	s.Sync.AddExtension(syncapi.NewAccountDataExtension(s.Sync))
	s.Sync.AddExtension(syncapi.NewEphemeralExtension(s.Sync))
	s.Sync.AddExtension(syncapi.NewPresenceExtension(s.Sync))
	// Last: counts go to every joined room the others put in.
	s.Sync.AddExtension(syncapi.NewUnreadExtension(s.Sync))
	return nil
}

// The federation component implements the faces the client API asks of
// it; checked here, in the assembly, so neither imports the other.
var (
	_ clientapi.Federation     = federationapi.Memberships{}
	_ clientapi.RemoteKeys     = federationapi.RemoteE2EE{}
	_ clientapi.RemoteToDevice = federationapi.RemoteE2EE{}
	_ clientapi.AppServices    = (*appservice.Service)(nil)
	_ adminapi.AppServices     = (*appservice.Service)(nil)
)
