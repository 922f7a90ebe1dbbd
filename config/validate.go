package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// FieldError is a problem with one option. Path is the YAML path, so the
// message points operators at exactly what to edit.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return "config: " + e.Path + ": " + e.Msg }

// Validate checks the whole configuration and reports every problem found
// (joined with errors.Join), so an operator can fix them in one pass.
// Individual problems are *FieldError values, reachable via errors.As.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	oneOf := func(path, got string, allowed ...string) {
		for _, a := range allowed {
			if got == a {
				return
			}
		}
		bad(path, "must be one of %s (got %q)", strings.Join(allowed, ", "), got)
	}
	positive := func(path string, n float64) {
		if n <= 0 {
			bad(path, "must be positive (got %v)", n)
		}
	}
	notNegative := func(path string, d Duration) {
		if d.Duration < 0 {
			bad(path, "must not be negative (got %s)", d)
		}
	}

	if c.ServerName == "" {
		bad("server_name", "must be set")
	} else if err := ValidateServerName(c.ServerName); err != nil {
		bad("server_name", "%v", err)
	}

	// Listeners.
	if c.Listen.Client == "" {
		bad("listen.client", "must be set")
	}
	for _, l := range []struct{ path, addr string }{
		{"listen.client", c.Listen.Client},
		{"listen.federation", c.Listen.Federation},
		{"listen.metrics", c.Listen.Metrics},
	} {
		if l.addr != "" {
			if err := validateListenAddr(l.addr); err != nil {
				bad(l.path, "%v", err)
			}
		}
	}
	oneOf("listen.client_tls_min_version", c.Listen.ClientTLSMinVersion, "1.2", "1.3")
	if c.Listen.MaxConnectionsPerIP < 0 {
		bad("listen.max_connections_per_ip", "must not be negative")
	}
	notNegative("listen.body_timeout", c.Listen.BodyTimeout)
	if c.Auth.LockoutAfterFailures < 0 {
		bad("auth.lockout_after_failures", "must not be negative")
	}
	if c.Auth.LockoutAfterFailures > 0 {
		positive("auth.lockout", c.Auth.Lockout.Seconds())
		if c.Auth.LockoutMax.Duration < c.Auth.Lockout.Duration {
			bad("auth.lockout_max", "must be at least auth.lockout (%s)", c.Auth.Lockout)
		}
	}
	if c.Listen.BodyTimeout.Duration > 0 {
		positive("listen.body_min_bytes_per_second", float64(c.Listen.BodyMinRate))
	}
	if c.TLS.Cert == "" && c.TLS.Key != "" {
		bad("tls.cert", "must be set when tls.key is set")
	}
	if c.TLS.Key == "" && c.TLS.Cert != "" {
		bad("tls.key", "must be set when tls.cert is set")
	}
	if c.TLS.Cert == "" && c.TLS.Key == "" {
		if c.Listen.ClientTLS {
			bad("tls.cert", "tls.cert and tls.key must be set when listen.client_tls is true")
		}
		if c.Listen.Federation != "" {
			bad("tls.cert", "tls.cert and tls.key must be set when listen.federation is set (federation is TLS-only)")
		}
	}

	if c.SigningKey == "" {
		bad("signing_key", "must be set")
	}

	// Database.
	switch c.DatabaseDialect() {
	case "sqlite":
		if c.SQLitePath() == "" {
			bad("database.url", "sqlite: URL needs a path, e.g. sqlite:enclave.db")
		}
	case "postgres":
		if _, err := url.Parse(c.Database.URL); err != nil {
			bad("database.url", "invalid postgres URL")
		}
	default:
		// Do not echo the URL: it may carry a password.
		bad("database.url", "must start with sqlite:, postgres:// or postgresql://")
	}
	positive("database.max_open_conns", float64(c.Database.MaxOpenConns))
	if c.Database.MaxIdleConns < 0 {
		bad("database.max_idle_conns", "must not be negative (got %d)", c.Database.MaxIdleConns)
	}
	notNegative("database.conn_max_lifetime", c.Database.ConnMaxLifetime)

	oneOf("registration.mode", c.Registration.Mode, RegistrationClosed, RegistrationOpen, RegistrationToken)
	for _, t := range c.Registration.Tokens {
		if t == "" {
			bad("registration.tokens", "tokens must not be empty")
			break
		}
	}

	notNegative("auth.access_token_lifetime", c.Auth.AccessTokenLifetime)
	positive("auth.refresh_access_token_lifetime", c.Auth.RefreshAccessTokenLifetime.Seconds())
	positive("auth.login_token_lifetime", c.Auth.LoginTokenLifetime.Seconds())

	// Validated even when disabled, so flipping enabled on cannot expose a
	// latent mistake at runtime.
	positive("rate_limits.per_second", c.RateLimits.PerSecond)
	positive("rate_limits.burst", float64(c.RateLimits.Burst))
	positive("rate_limits.login_per_second", c.RateLimits.LoginPerSecond)
	positive("rate_limits.login_burst", float64(c.RateLimits.LoginBurst))

	positive("limits.max_request_bytes", float64(c.Limits.MaxRequestBytes))
	positive("limits.max_upload_bytes", float64(c.Limits.MaxUploadBytes))

	oneOf("log.level", c.Log.Level, "trace", "debug", "info", "warn", "error")
	oneOf("log.format", c.Log.Format, "text", "json")
	positive("log.max_size_mb", float64(c.Log.MaxSizeMB))
	if c.Log.MaxFiles < 0 {
		bad("log.max_files", "must not be negative")
	}
	if c.Log.MaxAgeDays < 0 {
		bad("log.max_age_days", "must not be negative")
	}

	if c.Media.Path == "" {
		bad("media.path", "must be set")
	}
	positive("media.max_image_pixels", float64(c.Media.MaxImagePixels))
	positive("media.url_preview.max_bytes", float64(c.Media.URLPreview.MaxBytes))
	positive("media.url_preview.timeout", float64(c.Media.URLPreview.Timeout.Duration))
	for _, g := range c.Media.URLPreview.AllowedHosts {
		if _, err := path.Match(g, ""); err != nil || g == "" || strings.Contains(g, "/") {
			bad("media.url_preview.allowed_hosts", "%q is not a host name glob", g)
		}
	}
	if c.Media.KEKFile != "" && c.Media.KEKEnv != "" {
		bad("media.kek_env", "set at most one of media.kek_file and media.kek_env")
	}

	for _, l := range []struct {
		path  string
		globs []string
	}{
		{"federation.allowed_servers", c.Federation.AllowedServers},
		{"federation.denied_servers", c.Federation.DeniedServers},
	} {
		for _, g := range l.globs {
			if why := serverPatternProblem(g); why != "" {
				bad(l.path, "%q can never match a server name: %s", g, why)
			}
		}
	}

	if len(c.TURN.URIs) > 0 && c.TURN.SharedSecret == "" {
		bad("turn.shared_secret", "must be set when turn.uris is set")
	}
	positive("turn.ttl", c.TURN.TTL.Seconds())

	positive("audit.checkpoint_every", float64(c.Audit.CheckpointEvery))
	positive("audit.checkpoint_interval", c.Audit.CheckpointInterval.Seconds())
	if c.Audit.SigningKey != "" && c.Audit.SigningKeyEnv != "" {
		bad("audit.signing_key_env", "set at most one of audit.signing_key and audit.signing_key_env")
	}
	if a := c.Audit.SyslogAddress; a != "" && !strings.HasPrefix(a, "udp://") && !strings.HasPrefix(a, "tcp://") {
		bad("audit.syslog_address", "must be udp://HOST:PORT or tcp://HOST:PORT (got %q)", a)
	}
	c.validateSIEM(bad)

	notNegative("retention.default_max_lifetime", c.Retention.DefaultMaxLifetime)
	notNegative("app_services.queue_max_age", c.AppServices.QueueMaxAge)
	if c.AppServices.QueueMaxEvents < 0 {
		bad("app_services.queue_max_events", "must not be negative")
	}
	notNegative("retention.allowed_lifetime_min", c.Retention.AllowedLifetimeMin)
	notNegative("retention.allowed_lifetime_max", c.Retention.AllowedLifetimeMax)
	if lo, hi := c.Retention.AllowedLifetimeMin, c.Retention.AllowedLifetimeMax; lo.Duration > 0 && hi.Duration > 0 && lo.Duration > hi.Duration {
		bad("retention.allowed_lifetime_min", "must not exceed retention.allowed_lifetime_max (got %s > %s)", lo, hi)
	}
	if d := c.Retention.DefaultMaxLifetime; d.Duration > 0 {
		if lo := c.Retention.AllowedLifetimeMin; lo.Duration > 0 && d.Duration < lo.Duration {
			bad("retention.default_max_lifetime", "must not be below retention.allowed_lifetime_min (got %s < %s)", d, lo)
		}
		if hi := c.Retention.AllowedLifetimeMax; hi.Duration > 0 && d.Duration > hi.Duration {
			bad("retention.default_max_lifetime", "must not exceed retention.allowed_lifetime_max (got %s > %s)", d, hi)
		}
	}

	if u := c.WellKnown.ClientBaseURL; u != "" {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			bad("well_known.client_base_url", "must be an absolute http(s) URL (got %q)", u)
		}
	}

	return errors.Join(errs...)
}

// validateListenAddr requires host:port with a numeric port; the host may be
// empty to mean all interfaces.
func validateListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port (got %q)", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port == "" || n > 65535 {
		return fmt.Errorf("invalid port in %q", addr)
	}
	return nil
}

// ValidateServerName checks a Matrix server name: a DNS name, IPv4 address
// or bracketed IPv6 literal, optionally followed by :port. Exported because
// federation code must apply the same rule to remote names.
func ValidateServerName(name string) error {
	host, port := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return fmt.Errorf("invalid server name %q: unterminated IPv6 literal", name)
		}
		host, port = name[:end+1], name[end+1:]
		if port != "" && (!strings.HasPrefix(port, ":") || port == ":") {
			return fmt.Errorf("invalid server name %q: bad port", name)
		}
		port = strings.TrimPrefix(port, ":")
		ip := net.ParseIP(host[1:end])
		if ip == nil || !strings.Contains(host, ":") {
			return fmt.Errorf("invalid server name %q: bad IPv6 literal", name)
		}
	} else {
		if i := strings.LastIndexByte(name, ':'); i >= 0 {
			host, port = name[:i], name[i+1:]
			if port == "" {
				return fmt.Errorf("invalid server name %q: empty port", name)
			}
		}
		if err := validateHost(host); err != nil {
			return fmt.Errorf("invalid server name %q: %v", name, err)
		}
	}
	if port != "" {
		if len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return fmt.Errorf("invalid server name %q: bad port", name)
		}
		if n, _ := strconv.Atoi(port); n < 1 || n > 65535 {
			return fmt.Errorf("invalid server name %q: port out of range", name)
		}
	}
	return nil
}

// validateHost accepts an IPv4 address or a DNS name of letters, digits and
// hyphens in non-empty labels.
func validateHost(host string) error {
	if host == "" {
		return errors.New("empty host")
	}
	if len(host) > 255 {
		return errors.New("host longer than 255 characters")
	}
	if strings.Trim(host, "0123456789.") == "" {
		// All digits and dots: must be a real IPv4 address, not e.g. 300.1.1.1.
		if ip := net.ParseIP(host); ip == nil || ip.To4() == nil {
			return errors.New("bad IPv4 address")
		}
		return nil
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("bad DNS label")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("invalid character %q", r)
			}
		}
	}
	return nil
}

// validateSIEM checks audit.siem: the sinks' addresses, TLS material and
// rotation bounds, each problem naming its option.
func (c *Config) validateSIEM(bad func(path, format string, args ...any)) {
	s := c.Audit.SIEM
	if s.Format != SIEMFormatJSONL && s.Format != SIEMFormatCEF {
		bad("audit.siem.format", "must be one of jsonl, cef (got %q)", s.Format)
	}
	y := s.Syslog
	if y.Address != "" {
		if strings.Contains(y.Address, "://") {
			bad("audit.siem.syslog.address", "must be HOST:PORT, without a scheme (TCP; set audit.siem.syslog.tls for TLS) (got %q)", y.Address)
		} else if host, port, err := net.SplitHostPort(y.Address); err != nil || host == "" || port == "" {
			bad("audit.siem.syslog.address", "must be HOST:PORT (got %q)", y.Address)
		} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			bad("audit.siem.syslog.address", "port must be 1-65535 (got %q)", port)
		}
	}
	tlsOnly := func(path, v string) {
		if v != "" && !y.TLS {
			bad(path, "is only used with audit.siem.syslog.tls: true")
		}
	}
	tlsOnly("audit.siem.syslog.ca_file", y.CAFile)
	tlsOnly("audit.siem.syslog.cert_file", y.CertFile)
	tlsOnly("audit.siem.syslog.key_file", y.KeyFile)
	if (y.CertFile == "") != (y.KeyFile == "") {
		bad("audit.siem.syslog.cert_file", "cert_file and key_file must be set together")
	}
	if y.TLS && y.Address == "" {
		bad("audit.siem.syslog.tls", "needs audit.siem.syslog.address")
	}
	f := s.File
	if f.MaxSizeMB <= 0 {
		bad("audit.siem.file.max_size_mb", "must be positive (got %v)", f.MaxSizeMB)
	}
	if f.MaxFiles < 1 {
		bad("audit.siem.file.max_files", "must be at least 1 (got %d)", f.MaxFiles)
	}
}
