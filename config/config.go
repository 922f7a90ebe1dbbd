package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ConfigFileName is the config file EnsureDataDir creates inside the data dir.
const ConfigFileName = "enclave.yaml"

// Config is the complete server configuration.
//
// Field docs live in the `doc` tags because they are emitted verbatim into
// the generated config file; keep them operator-facing.
type Config struct {
	// DataDir is the directory relative paths were resolved against. It is
	// set by Load and is deliberately not a YAML option: the data dir is
	// where the YAML file lives, so it must be known before reading it.
	DataDir string `yaml:"-"`

	ServerName    string              `yaml:"server_name" doc:"The Matrix server name: the part after the colon in user IDs (@alice:example.org). A hostname, IPv4 address or [IPv6] literal, optionally with :port. It cannot be changed once users or rooms exist."`
	Listen        ListenConfig        `yaml:"listen" doc:"Network listeners."`
	TLS           TLSConfig           `yaml:"tls" doc:"TLS certificate material, shared by the client and federation listeners."`
	SigningKey    string              `yaml:"signing_key" doc:"Ed25519 server signing key file, one line: 'ed25519 <version> <unpadded base64 seed>'. Created on first start if missing. Relative to the data directory. Keep it secret and backed up: other servers cache its public half."`
	Database      DatabaseConfig      `yaml:"database" doc:"Database connection and pool."`
	Registration  RegistrationConfig  `yaml:"registration" doc:"Account registration."`
	Auth          AuthConfig          `yaml:"auth" doc:"Token lifetimes. Durations are Go duration strings (30s, 5m, 1h); 0 means never expire."`
	RateLimits    RateLimitConfig     `yaml:"rate_limits" doc:"Per-client request rate limiting (token buckets)."`
	Limits        LimitsConfig        `yaml:"limits" doc:"Request size limits."`
	Log           LogConfig           `yaml:"log" doc:"Logging."`
	Media         MediaConfig         `yaml:"media" doc:"Media repository storage."`
	Federation    FederationConfig    `yaml:"federation" doc:"Federation with other Matrix servers. Server lists are globs (* and ?), e.g. *.example.org."`
	Presence      PresenceConfig      `yaml:"presence" doc:"Presence (online/offline status)."`
	UserDirectory UserDirectoryConfig `yaml:"user_directory" doc:"User directory search."`
	Profile       ProfileConfig       `yaml:"profile" doc:"Profile lookups."`
	TURN          TURNConfig          `yaml:"turn" doc:"TURN relay for VoIP calls (TURN REST API / coturn use-auth-secret)."`
	Audit         AuditConfig         `yaml:"audit" doc:"Append-only audit log of security-relevant actions."`
	Retention     RetentionConfig     `yaml:"retention" doc:"Message retention (MSC1763). Once an hour, timeline events older than their room's max_lifetime are deleted; state events, each room's latest events and every room under legal hold (or with a member under hold) are kept, and each purge is audited. Durations are Go duration strings (720h is 30 days)."`
	RBAC          RBACConfig          `yaml:"rbac" doc:"Role-based access control. Built-in roles: admin (administers the server; cannot read the audit log), auditor (reads and exports the audit log only), operator (user plus room administration), user and guest."`
	WellKnown     WellKnownConfig     `yaml:"well_known" doc:"Values served under /.well-known/matrix/."`
	AppServices   AppServicesConfig   `yaml:"app_services" doc:"Application services (bridges, bots): their registration files."`
}

// AppServicesConfig lists the appservice registration files.
type AppServicesConfig struct {
	ConfigFiles []string `yaml:"config_files" doc:"Registration files (YAML, as bridges write them), relative to the data directory. The server pushes events to each one's url; an invalid file fails the start. Re-read on SIGHUP."`
	// The queue of a bridge that stays down (or was removed) is bounded,
	// each drop audited as appservice.queue_dropped.
	QueueMaxEvents int      `yaml:"queue_max_events" doc:"Most events kept queued for one appservice (a bridge that is down, or one no longer registered); past it the oldest are dropped, audited as appservice.queue_dropped. 0: no cap."`
	QueueMaxAge    Duration `yaml:"queue_max_age" doc:"Queued events older than this are dropped (audited as appservice.queue_dropped), for registered and removed appservices alike. 0: kept until delivered."`
}

// ListenConfig holds listener addresses; an empty address disables that listener.
type ListenConfig struct {
	Client     string `yaml:"client" doc:"host:port the client-server API listens on."`
	Federation string `yaml:"federation" doc:"host:port for the server-server (federation) API, always served with TLS 1.3 or newer using tls.cert and tls.key. Empty disables the federation listener."`
	ClientTLS  bool   `yaml:"client_tls" doc:"Serve TLS on the client listener using tls.cert and tls.key. Leave false when a reverse proxy terminates TLS."`
	Metrics    string `yaml:"metrics" doc:"host:port for the Prometheus metrics endpoint. Empty disables it. Do not expose it publicly."`
	// ClientTLSMinVersion is the oldest TLS version the client listener
	// accepts; federation is always 1.3.
	ClientTLSMinVersion string `yaml:"client_tls_min_version" doc:"Oldest TLS version the client listener accepts when listen.client_tls is true: 1.2 or 1.3. Keep 1.3 unless old clients must connect directly."`
	// MaxConnectionsPerIP bounds the open connections of one remote
	// address on every listener, so one host cannot exhaust the process's
	// file descriptors.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip" doc:"Most open connections one remote IP may hold on each listener; further connections are closed at once. 0 disables the cap. Behind a reverse proxy every client shares the proxy's address: raise it to the proxy's upstream connection limit."`
	// BodyTimeout and BodyMinRate close connections whose request body
	// trickles in: a body must arrive at BodyMinRate bytes per second on
	// average after a grace of BodyTimeout.
	BodyTimeout Duration `yaml:"body_timeout" doc:"Grace for a request body: after it, the body must have arrived at listen.body_min_bytes_per_second on average or the connection is closed. 0 disables the check."`
	BodyMinRate int64    `yaml:"body_min_bytes_per_second" doc:"Average rate a request body must keep after listen.body_timeout (bytes per second)."`
}

// TLSConfig locates certificate files; paths are relative to the data dir.
type TLSConfig struct {
	Cert     string `yaml:"cert" doc:"PEM certificate chain for the TLS listeners. Relative to the data directory."`
	Key      string `yaml:"key" doc:"PEM private key matching tls.cert. Relative to the data directory."`
	CABundle string `yaml:"ca_bundle" doc:"Optional PEM file of extra CA certificates trusted, in addition to the system pool, for outbound connections (e.g. federating with servers behind a private CA). Relative to the data directory."`
}

// DatabaseConfig selects the database and sizes its connection pool.
// URL is tagged secret:"url" so Print hides only an embedded password and
// keeps the rest visible for debugging.
type DatabaseConfig struct {
	URL             string   `yaml:"url" secret:"url" doc:"sqlite:PATH (relative to the data directory) or a postgres:// / postgresql:// DSN."`
	MaxOpenConns    int      `yaml:"max_open_conns" doc:"Maximum open connections in the pool."`
	MaxIdleConns    int      `yaml:"max_idle_conns" doc:"Maximum idle connections kept in the pool."`
	ConnMaxLifetime Duration `yaml:"conn_max_lifetime" doc:"Maximum lifetime of a pooled connection; 0 means unlimited."`
}

// RegistrationConfig controls who may create accounts.
type RegistrationConfig struct {
	Mode         string   `yaml:"mode" doc:"Who may register: closed (nobody; create users with the admin API), open (anyone), token (only with a valid registration token)."`
	SharedSecret string   `yaml:"shared_secret" secret:"true" doc:"Secret for shared-secret admin registration, which lets an operator create users (including admins) even when registration is closed. Empty disables it. Treat it like a root password."`
	Tokens       []string `yaml:"tokens" secret:"true" doc:"Static registration tokens accepted when mode is token."`
}

// AuthConfig holds token lifetimes.
type AuthConfig struct {
	AccessTokenLifetime        Duration `yaml:"access_token_lifetime" doc:"Lifetime of access tokens for clients that do not use refresh tokens; 0 means they never expire. Clients that ask for refresh tokens get refresh_access_token_lifetime instead."`
	RefreshAccessTokenLifetime Duration `yaml:"refresh_access_token_lifetime" doc:"Lifetime of access tokens issued to clients that use refresh tokens."`
	LoginTokenLifetime         Duration `yaml:"login_token_lifetime" doc:"Lifetime of one-shot m.login.token tokens (e.g. login via another device)."`
	// The lockout holds whether or not rate limits are enabled.
	LockoutAfterFailures int      `yaml:"lockout_after_failures" doc:"Consecutive failed password logins that lock an account (audited as account.lockout); 0 disables the lockout. Applies even with rate limits off."`
	Lockout              Duration `yaml:"lockout" doc:"First lockout after auth.lockout_after_failures failures; every further failure doubles it."`
	LockoutMax           Duration `yaml:"lockout_max" doc:"Longest lockout."`
}

// RateLimitConfig configures token buckets; requests refill at the
// per-second rate up to the burst size.
type RateLimitConfig struct {
	Enabled        bool     `yaml:"enabled" doc:"Enable rate limiting."`
	PerSecond      float64  `yaml:"per_second" doc:"Sustained requests per second allowed per client."`
	Burst          int      `yaml:"burst" doc:"Requests a client may make at once before per_second applies."`
	LoginPerSecond float64  `yaml:"login_per_second" doc:"Sustained login and registration attempts per second per client; kept low to slow password guessing."`
	LoginBurst     int      `yaml:"login_burst" doc:"Burst size for login and registration attempts."`
	ExemptUsers    []string `yaml:"exempt_users" doc:"Matrix user IDs never rate limited (e.g. bridges and bots)."`
}

// LimitsConfig bounds request sizes to protect memory.
type LimitsConfig struct {
	MaxRequestBytes int64 `yaml:"max_request_bytes" doc:"Maximum JSON request body size in bytes."`
	MaxUploadBytes  int64 `yaml:"max_upload_bytes" doc:"Maximum media upload size in bytes."`
}

// LogConfig selects log verbosity and encoding.
type LogConfig struct {
	Level  string `yaml:"level" doc:"Minimum level logged: trace, debug, info, warn or error."`
	Format string `yaml:"format" doc:"Log encoding: text (human-readable) or json (for log shippers)."`
	// File, when set, takes the log instead of stderr (for hosts without
	// journald or a container runtime collecting stderr).
	File       string `yaml:"file" doc:"Write the log to this file instead of stderr, rotating it by size (relative to the data directory; empty: stderr, for journald or a container runtime)."`
	MaxSizeMB  int    `yaml:"max_size_mb" doc:"Rotate log.file when it reaches this many megabytes."`
	MaxFiles   int    `yaml:"max_files" doc:"Rotated log files kept beside log.file (the oldest are deleted); 0 keeps them all."`
	MaxAgeDays int    `yaml:"max_age_days" doc:"Delete rotated log files older than this many days; 0 keeps them whatever their age."`
}

// MediaConfig locates media storage and its encryption key.
type MediaConfig struct {
	Path    string `yaml:"path" doc:"Directory holding uploaded media. Relative to the data directory."`
	KEKFile string `yaml:"kek_file" doc:"File holding the key-encryption key for media at rest: 32 random bytes as base64 or hex text (head -c 32 /dev/urandom | base64). Relative to the data directory. Set at most one of kek_file and kek_env; with neither, media.kek in the data directory is used, created on the very first start. Keep production keys on separate storage and back them up: without the key no media can be read. Change keys with enclave keys rotate."`
	KEKEnv  string `yaml:"kek_env" doc:"Name of an environment variable holding the media key-encryption key (base64 or hex of 32 bytes), for secrets injected by an orchestrator."`

	MaxUserBytes  int64 `yaml:"max_user_bytes" doc:"Total bytes of media one user may have stored; uploads past it are refused with 403 M_FORBIDDEN. 0 means no per-user quota."`
	MaxTotalBytes int64 `yaml:"max_total_bytes" doc:"Total bytes of media the server stores for all users together; uploads past it are refused with 403 M_FORBIDDEN. 0 means no limit."`

	MaxImagePixels int64 `yaml:"max_image_pixels" doc:"Largest image, in pixels (width × height as its header declares), that thumbnails are made of; larger ones answer 413 M_TOO_LARGE. Decodes running together use at most 4 bytes per such pixel (128 MB at the default of 32 megapixels)."`

	LegacyUnauthenticated bool `yaml:"legacy_unauthenticated" doc:"Keep serving the legacy /_matrix/media/v3 and r0 download and thumbnail paths, which take no access token, for clients older than Matrix 1.11; each read is audited with the requester's IP. Off by default: those paths answer 404 M_NOT_FOUND (as the spec allows since v1.11) and media is read only through the authenticated /_matrix/client/v1/media paths."`

	URLPreview URLPreviewConfig `yaml:"url_preview" doc:"URL previews (GET /_matrix/client/v1/media/preview_url). Off by default: the server then makes no outbound request for a preview."`
}

// URLPreviewConfig bounds the server's fetches of pages for link previews.
type URLPreviewConfig struct {
	Enabled      bool     `yaml:"enabled" doc:"Fetch pages (and their og:image) for URL previews. Off: preview_url answers 404 M_UNRECOGNIZED and clients show no previews."`
	AllowedHosts []string `yaml:"allowed_hosts" doc:"Globs of host names (or IP literals) that may be fetched (*.example.gov); nothing else is. Hosts resolving to loopback, private, link-local, ULA, CGNAT or cloud metadata addresses are refused unless listed exactly, without a wildcard. Checked at every connection and redirect."`
	MaxBytes     int64    `yaml:"max_bytes" doc:"Bytes of a page read for its preview (the rest is not fetched); its og:image may be up to limits.max_upload_bytes."`
	Timeout      Duration `yaml:"timeout" doc:"Time limit for fetching one preview, its redirects and image included."`
}

// FederationConfig controls server-server traffic.
type FederationConfig struct {
	Enabled           bool     `yaml:"enabled" doc:"Federate with other Matrix servers. Inbound federation also needs listen.federation."`
	AllowedServers    []string `yaml:"allowed_servers" doc:"If non-empty, only servers matching one of these globs may federate with us. A glob without a port matches any port; with a port (matrix.bravo.gov:8448) only that port. Keys are fetched directly only from server names matched exactly (a portless entry admits only the portless name): list partners whose server names carry a port with that port."`
	DeniedServers     []string `yaml:"denied_servers" doc:"Servers matching any of these globs are refused; takes precedence over allowed_servers."`
	KeyNotaries       []string `yaml:"key_notaries" doc:"Notary (perspective) servers to fetch other servers' signing keys through. When set, keys are fetched ONLY through them, never directly. Each entry is a server name, optionally followed by the notary's pinned keys as 'ed25519:<id>=<unpadded base64>' separated by spaces; without a pin the notary's own key is fetched from it over TLS on first use."`
	RequestsPerSecond float64  `yaml:"requests_per_second" doc:"Sustained signed federation requests per second accepted from each remote server; 0 disables the limit."`
	RequestBurst      int      `yaml:"request_burst" doc:"Requests a remote server may make at once before requests_per_second applies."`
	FasterJoins       bool     `yaml:"faster_joins" doc:"Experimental: join remote rooms with partial state (MSC3706 omit_members): the join answers without the room's member events, which are fetched in the background. Off by default: history backfilled during the resync can miss events whose senders' memberships are not fetched yet."`
}

// PresenceConfig toggles presence.
type PresenceConfig struct {
	Enabled bool `yaml:"enabled" doc:"Track and share presence. Disabling reduces load and metadata leakage."`
}

// UserDirectoryConfig scopes user search.
type UserDirectoryConfig struct {
	SearchAllUsers bool `yaml:"search_all_users" doc:"Search all local users. When false, only users sharing a room with the searcher or in public rooms are found."`
}

// ProfileConfig scopes profile lookups.
type ProfileConfig struct {
	RequireSharedRoom bool `yaml:"require_shared_room" doc:"Only allow looking up profiles of users who share a room with the requester."`
}

// TURNConfig is handed to clients via /voip/turnServer.
type TURNConfig struct {
	URIs         []string `yaml:"uris" doc:"TURN URIs given to clients, e.g. turn:turn.example.org:3478?transport=udp. Empty disables TURN."`
	SharedSecret string   `yaml:"shared_secret" secret:"true" doc:"The TURN server's shared auth secret, used to mint time-limited credentials. Required when uris is set."`
	TTL          Duration `yaml:"ttl" doc:"Lifetime of minted TURN credentials."`
}

// AuditConfig controls the audit log and its integrity checkpoints.
type AuditConfig struct {
	Enabled            bool            `yaml:"enabled" doc:"Record security-relevant actions in the audit log."`
	CheckpointEvery    int             `yaml:"checkpoint_every" doc:"Write an integrity checkpoint after this many audit entries."`
	CheckpointInterval Duration        `yaml:"checkpoint_interval" doc:"Also write a checkpoint at least this often while entries are being added."`
	HeadExportPath     string          `yaml:"head_export_path" doc:"If set, the latest audit log head is also written to this file (relative to the data directory) so it can be copied off-host to detect tampering. Empty disables."`
	HeadSyslog         bool            `yaml:"head_syslog" doc:"Also send the signed audit log head to syslog (facility auth, tag enclave-audit) whenever it is exported, so a copy leaves the host through syslog forwarding or straight to a SIEM (see syslog_address)."`
	SyslogAddress      string          `yaml:"syslog_address" doc:"Where head_syslog sends: empty for the local syslog daemon, or udp://HOST:PORT or tcp://HOST:PORT for a SIEM's syslog collector."`
	SigningKey         string          `yaml:"signing_key" doc:"File holding the ed25519 key that signs audit checkpoints and heads (Matrix key file format), created on first start. Keep it away from the data directory and the database: whoever holds it can re-sign a rewritten log. Empty: DATA.audit.key beside the data directory DATA (falling back, with a warning, to DATA/audit.key if that cannot be created). A key inside the data directory is warned about at every start."`
	SigningKeyEnv      string          `yaml:"signing_key_env" doc:"Name of an environment variable holding the audit signing key (unpadded base64 of the 32-byte ed25519 seed, e.g. from a secrets manager); overrides signing_key."`
	PublicKey          string          `yaml:"public_key" doc:"The audit public key (unpadded base64), or a file holding it, for enclave audit verify on a host that does not hold the private key. Empty: derived from the signing key."`
	AnchorFile         string          `yaml:"anchor_file" doc:"Append-only JSONL file every signed head is appended to, the anchor enclave audit verify checks the chain against. Put it on storage the database's administrators cannot rewrite (a remote or append-only mount). Empty: DATA.audit-anchor.jsonl beside the data directory DATA; none disables the file (then anchor with head_syslog)."`
	SIEM               AuditSIEMConfig `yaml:"siem" doc:"Streaming of every audit entry (checkpoints included) to a SIEM: a syslog collector and/or a rotated local file. Each sink keeps its position in the store, so entries a slow or unreachable collector has not taken wait in the store and are sent when it is back, also after a restart (at least once: each record carries its chain index n, by which a collector drops duplicates). Nothing is sent anywhere unless syslog.address or file.path is set."`
}

// AuditSIEMConfig selects the SIEM sinks and their record format.
type AuditSIEMConfig struct {
	Format string            `yaml:"format" doc:"Record format of both sinks: jsonl (one audit export entry per line, verifiable against the chain) or cef (ArcSight CEF:0: suser actor, duser target user, cs1 roomId, src client IP, rt time in ms, act action, externalId the chain index)."`
	Syslog AuditSyslogConfig `yaml:"syslog" doc:"RFC 5424 syslog over TCP (optionally TLS), octet-counting framing (RFC 6587 / RFC 5425), facility auth, APP-NAME enclave, MSGID the action, [meta sequenceId] the chain index."`
	File   AuditFileConfig   `yaml:"file" doc:"Append-only local file with size-based rotation (PATH, PATH.1 newest rotated, ..., PATH.N oldest), for a log shipper to pick up."`
}

// AuditSyslogConfig is the syslog collector of SIEM streaming.
type AuditSyslogConfig struct {
	Address  string `yaml:"address" doc:"HOST:PORT of the collector's TCP syslog listener. Empty disables the syslog sink."`
	TLS      bool   `yaml:"tls" doc:"Connect with TLS (RFC 5425), verifying the collector's certificate against ca_file (or the system pool) and HOST."`
	CAFile   string `yaml:"ca_file" doc:"PEM CA certificates the collector's certificate must chain to (with tls). Empty: the system pool. Relative to the data directory."`
	CertFile string `yaml:"cert_file" doc:"PEM client certificate presented to the collector (mutual TLS; with key_file). Relative to the data directory."`
	KeyFile  string `yaml:"key_file" doc:"PEM private key of cert_file. Relative to the data directory."`
}

// AuditFileConfig is the local file sink of SIEM streaming.
type AuditFileConfig struct {
	Path      string  `yaml:"path" doc:"File the records are appended to (fsynced before the sink's position advances). Empty disables the file sink. Relative to the data directory."`
	MaxSizeMB float64 `yaml:"max_size_mb" doc:"Size in MB (may be fractional) at which the file is rotated: PATH becomes PATH.1, PATH.1 becomes PATH.2, and so on. A record is never split across files."`
	MaxFiles  int     `yaml:"max_files" doc:"Rotated files kept besides PATH; the oldest beyond it is deleted."`
}

// SIEM formats.
const (
	SIEMFormatJSONL = "jsonl"
	SIEMFormatCEF   = "cef"
)

// RetentionConfig is the server-wide retention policy: a default for rooms
// that set none, and bounds on what rooms may set.
type RetentionConfig struct {
	DefaultMaxLifetime Duration `yaml:"default_max_lifetime" doc:"Lifetime of timeline events in rooms whose m.room.retention state sets no max_lifetime. 0 keeps them forever."`
	AllowedLifetimeMin Duration `yaml:"allowed_lifetime_min" doc:"Lower bound on a room's own max_lifetime: shorter values are raised to it. 0 means no lower bound."`
	AllowedLifetimeMax Duration `yaml:"allowed_lifetime_max" doc:"Upper bound on a room's own max_lifetime: longer values are lowered to it. 0 means no upper bound."`
}

// RBACConfig defines server roles beyond the built-in ones.
type RBACConfig struct {
	DefaultRole string   `yaml:"default_role" doc:"Role of users who have none assigned (guest accounts get guest; accounts flagged admin also hold admin). Assign roles with enclave user role or the admin API."`
	Roles       []string `yaml:"roles" doc:"Custom roles, each 'name=permission permission ...'. Permissions: create_room, create_public_room, invite_remote_users, join_remote_rooms, federate, upload_media, use_admin_api, manage_users, manage_rooms, read_audit, export_audit, manage_roles. Naming operator, user or guest redefines that role; admin and auditor are fixed."`
}

// WellKnownConfig controls client discovery.
type WellKnownConfig struct {
	ClientBaseURL string `yaml:"client_base_url" doc:"Homeserver base URL advertised to clients. Empty derives http(s)://server_name[:port] from listen.client and listen.client_tls; set it explicitly behind a reverse proxy."`
}

// Default returns the built-in defaults. Paths are still relative; Load
// resolves them against the data directory.
func Default() *Config {
	return &Config{
		ServerName: "localhost",
		Listen: ListenConfig{Client: "127.0.0.1:8008", ClientTLSMinVersion: "1.3",
			MaxConnectionsPerIP: 1024, BodyTimeout: Duration{30 * time.Second}, BodyMinRate: 1024},
		SigningKey: "signing.key",
		Database: DatabaseConfig{
			URL:             "sqlite:enclave.db",
			MaxOpenConns:    20,
			MaxIdleConns:    5,
			ConnMaxLifetime: Duration{time.Hour},
		},
		Registration: RegistrationConfig{Mode: RegistrationClosed},
		Auth: AuthConfig{
			AccessTokenLifetime:        Duration{0},
			RefreshAccessTokenLifetime: Duration{5 * time.Minute},
			LoginTokenLifetime:         Duration{2 * time.Minute},
			LockoutAfterFailures:       10,
			Lockout:                    Duration{time.Minute},
			LockoutMax:                 Duration{time.Hour},
		},
		RateLimits: RateLimitConfig{
			Enabled:        true,
			PerSecond:      10,
			Burst:          50,
			LoginPerSecond: 1,
			LoginBurst:     10,
		},
		Limits: LimitsConfig{
			MaxRequestBytes: 1 << 20,
			MaxUploadBytes:  100 << 20,
		},
		Log:      LogConfig{Level: "info", Format: "text", MaxSizeMB: 100, MaxFiles: 10},
		Media:    MediaConfig{Path: "media", MaxImagePixels: 32_000_000, URLPreview: URLPreviewConfig{MaxBytes: 1 << 20, Timeout: Duration{10 * time.Second}}},
		Presence: PresenceConfig{Enabled: true},
		Federation: FederationConfig{
			RequestsPerSecond: 50,
			RequestBurst:      200,
		},
		TURN: TURNConfig{TTL: Duration{24 * time.Hour}},
		Audit: AuditConfig{
			Enabled:            true,
			CheckpointEvery:    1000,
			CheckpointInterval: Duration{5 * time.Minute},
			SIEM: AuditSIEMConfig{Format: SIEMFormatJSONL,
				File: AuditFileConfig{MaxSizeMB: 100, MaxFiles: 10}},
		},
		RBAC:        RBACConfig{DefaultRole: "user"},
		AppServices: AppServicesConfig{QueueMaxEvents: 100_000, QueueMaxAge: Duration{7 * 24 * time.Hour}},
	}
}

// Registration modes.
const (
	RegistrationClosed = "closed"
	RegistrationOpen   = "open"
	RegistrationToken  = "token"
)

// Load builds the effective configuration: defaults, then the YAML file at
// path (skipped if path is empty), then ENCLAVE_* environment overrides, then
// relative paths resolved against dataDir, then Validate.
//
// Unknown YAML keys are rejected so that a typo cannot silently fall back to
// a default (e.g. a misspelt registration.mode leaving registration open).
func Load(path string, dataDir string) (*Config, error) {
	c := Default()
	if path != "" {
		if err := decodeFile(path, c); err != nil {
			return nil, err
		}
	}
	if err := c.ApplyEnv(os.LookupEnv); err != nil {
		return nil, err
	}
	if err := c.unknownEnv(os.Environ()); err != nil {
		return nil, err
	}
	if err := c.resolvePaths(dataDir); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeFile(path string, c *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config: %s is not valid YAML: %w", path, err)
	}
	if errs := checkNode(&doc, reflect.TypeOf(*c), ""); len(errs) > 0 {
		lines := make([]string, len(errs))
		for i, e := range errs {
			lines[i] = "  " + e.Error()
		}
		return fmt.Errorf("config: %s:\n%s", path, strings.Join(lines, "\n"))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // EOF: empty file means all defaults
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}

// resolvePaths makes file paths absolute relative to dataDir, so the server
// behaves the same whatever its working directory.
func (c *Config) resolvePaths(dataDir string) error {
	if dataDir == "" {
		dataDir = "."
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("config: data dir: %w", err)
	}
	c.DataDir = abs
	if c.Audit.AnchorFile != AnchorNone {
		c.Audit.AnchorFile = c.resolve(c.Audit.AnchorFile)
	}
	for _, p := range []*string{
		&c.SigningKey, &c.Media.Path, &c.Media.KEKFile,
		&c.TLS.Cert, &c.TLS.Key, &c.TLS.CABundle, &c.Audit.HeadExportPath, &c.Audit.SigningKey, &c.Log.File,
		&c.Audit.SIEM.Syslog.CAFile, &c.Audit.SIEM.Syslog.CertFile, &c.Audit.SIEM.Syslog.KeyFile, &c.Audit.SIEM.File.Path,
	} {
		*p = c.resolve(*p)
	}
	for i, p := range c.AppServices.ConfigFiles {
		c.AppServices.ConfigFiles[i] = c.resolve(p)
	}
	if c.DatabaseDialect() == "sqlite" {
		p := c.SQLitePath()
		// ":memory:" and "file:" URIs are not plain paths; leave them alone.
		if p != "" && p != ":memory:" && !strings.HasPrefix(p, "file:") {
			c.Database.URL = sqlitePrefix + c.resolve(p)
		}
	}
	return nil
}

func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.DataDir, p)
}

const sqlitePrefix = "sqlite:"

// DatabaseDialect reports "sqlite" or "postgres" from database.url, or ""
// if the URL has neither form (Validate rejects that).
func (c *Config) DatabaseDialect() string {
	u := c.Database.URL
	switch {
	case strings.HasPrefix(u, sqlitePrefix):
		return "sqlite"
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		return "postgres"
	}
	return ""
}

// SQLitePath returns the path part of a sqlite: database URL (absolute after
// Load), or "" for other dialects.
func (c *Config) SQLitePath() string {
	if c.DatabaseDialect() != "sqlite" {
		return ""
	}
	return strings.TrimPrefix(c.Database.URL, sqlitePrefix)
}
