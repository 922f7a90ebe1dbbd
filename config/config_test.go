package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// clearEnv removes any ENCLAVE_* variables inherited by the test process so
// Load sees only what a test sets, restoring them afterwards.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, EnvPrefix) {
			os.Unsetenv(k)
			t.Cleanup(func() { os.Setenv(k, v) })
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// optionValues maps each option path to its rendered YAML value.
func optionValues(t *testing.T, c *Config) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, o := range c.options() {
		v, err := yamlValue(o.Value)
		if err != nil {
			t.Fatal(err)
		}
		m[o.Path] = v
	}
	return m
}

func TestDefaults(t *testing.T) {
	want := map[string]string{
		"server_name":                        "localhost",
		"listen.client":                      "127.0.0.1:8008",
		"listen.federation":                  `""`,
		"listen.client_tls":                  "false",
		"listen.metrics":                     `""`,
		"listen.client_tls_min_version":      `"1.3"`,
		"listen.max_connections_per_ip":      "1024",
		"listen.body_timeout":                "30s",
		"listen.body_min_bytes_per_second":   "1024",
		"tls.cert":                           `""`,
		"tls.key":                            `""`,
		"tls.ca_bundle":                      `""`,
		"signing_key":                        "signing.key",
		"database.url":                       "sqlite:enclave.db",
		"database.max_open_conns":            "20",
		"database.max_idle_conns":            "5",
		"database.conn_max_lifetime":         "1h",
		"registration.mode":                  "closed",
		"registration.shared_secret":         `""`,
		"registration.tokens":                "[]",
		"auth.access_token_lifetime":         "0",
		"auth.refresh_access_token_lifetime": "5m",
		"auth.login_token_lifetime":          "2m",
		"auth.lockout_after_failures":        "10",
		"auth.lockout":                       "1m",
		"auth.lockout_max":                   "1h",
		"rate_limits.enabled":                "true",
		"rate_limits.per_second":             "10",
		"rate_limits.burst":                  "50",
		"rate_limits.login_per_second":       "1",
		"rate_limits.login_burst":            "10",
		"rate_limits.exempt_users":           "[]",
		"limits.max_request_bytes":           "1048576",
		"limits.max_upload_bytes":            "104857600",
		"log.level":                          "info",
		"log.format":                         "text",
		"log.file":                           `""`,
		"log.max_size_mb":                    "100",
		"log.max_files":                      "10",
		"log.max_age_days":                   "0",
		"media.path":                         "media",
		"media.kek_file":                     `""`,
		"media.kek_env":                      `""`,
		"media.max_user_bytes":               "0",
		"media.max_total_bytes":              "0",
		"media.legacy_unauthenticated":       "false",
		"media.max_image_pixels":             "32000000",
		"media.url_preview.enabled":          "false",
		"media.url_preview.allowed_hosts":    "[]",
		"media.url_preview.max_bytes":        "1048576",
		"media.url_preview.timeout":          "10s",
		"federation.enabled":                 "false",
		"federation.faster_joins":            "false",
		"federation.allowed_servers":         "[]",
		"federation.denied_servers":          "[]",
		"federation.key_notaries":            "[]",
		"federation.requests_per_second":     "50",
		"federation.request_burst":           "200",
		"presence.enabled":                   "true",
		"user_directory.search_all_users":    "false",
		"app_services.config_files":          "[]",
		"app_services.queue_max_events":      "100000",
		"app_services.queue_max_age":         "168h",
		"profile.require_shared_room":        "false",
		"turn.uris":                          "[]",
		"turn.shared_secret":                 `""`,
		"turn.ttl":                           "24h",
		"audit.enabled":                      "true",
		"audit.checkpoint_every":             "1000",
		"audit.checkpoint_interval":          "5m",
		"audit.head_export_path":             `""`,
		"audit.head_syslog":                  "false",
		"audit.syslog_address":               `""`,
		"audit.signing_key":                  `""`,
		"audit.signing_key_env":              `""`,
		"audit.public_key":                   `""`,
		"audit.anchor_file":                  `""`,
		"audit.siem.format":                  "jsonl",
		"audit.siem.syslog.address":          `""`,
		"audit.siem.syslog.tls":              "false",
		"audit.siem.syslog.ca_file":          `""`,
		"audit.siem.syslog.cert_file":        `""`,
		"audit.siem.syslog.key_file":         `""`,
		"audit.siem.file.path":               `""`,
		"audit.siem.file.max_size_mb":        "100",
		"audit.siem.file.max_files":          "10",
		"retention.default_max_lifetime":     "0",
		"retention.allowed_lifetime_min":     "0",
		"retention.allowed_lifetime_max":     "0",
		"rbac.default_role":                  "user",
		"rbac.roles":                         "[]",
		"well_known.client_base_url":         `""`,
	}
	got := optionValues(t, Default())
	if !reflect.DeepEqual(got, want) {
		for k := range want {
			if got[k] != want[k] {
				t.Errorf("%s = %s, want %s", k, got[k], want[k])
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("option %s has no expected default in this test", k)
			}
		}
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestDurationYAML(t *testing.T) {
	tests := []struct {
		yaml    string
		want    time.Duration
		wantErr bool
	}{
		{"ttl: 5m", 5 * time.Minute, false},
		{"ttl: 0", 0, false},
		{`ttl: "0"`, 0, false},
		{"ttl: 1h30m", 90 * time.Minute, false},
		{"ttl: 250ms", 250 * time.Millisecond, false},
		{"ttl:", 24 * time.Hour, false}, // null keeps the existing value
		{"ttl: 5", 0, true},             // unitless non-zero is ambiguous
		{"ttl: 5x", 0, true},
		{"ttl: [1]", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			v := struct {
				TTL Duration `yaml:"ttl"`
			}{Duration{24 * time.Hour}}
			err := yaml.Unmarshal([]byte(tt.yaml), &v)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && v.TTL.Duration != tt.want {
				t.Errorf("got %v, want %v", v.TTL.Duration, tt.want)
			}
		})
	}

	for _, d := range []time.Duration{0, time.Second, 90 * time.Second, 5 * time.Minute, time.Hour, 25 * time.Hour, 1500 * time.Millisecond} {
		out, err := yaml.Marshal(Duration{d})
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := yaml.Unmarshal(out, &back); err != nil || back.Duration != d {
			t.Errorf("round trip %v via %q: got %v, %v", d, out, back.Duration, err)
		}
	}
	var txt Duration
	if b, _ := (Duration{90 * time.Minute}).MarshalText(); txt.UnmarshalText(b) != nil || txt.Duration != 90*time.Minute {
		t.Errorf("text round trip failed: %v", txt)
	}
	for d, want := range map[time.Duration]string{0: "0", 5 * time.Minute: "5m", time.Hour: "1h", 24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s"} {
		if got := (Duration{d}).String(); got != want {
			t.Errorf("Duration(%v).String() = %q, want %q", d, got, want)
		}
	}
}

func TestLoadYAML(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "enclave.yaml", `
server_name: example.org
listen:
  client: 0.0.0.0:8008
  federation: ":8448"
tls:
  cert: tls/cert.pem
  key: /etc/enclave/key.pem
signing_key: keys/signing.key
database:
  url: postgres://enclave:pw@db/enclave?sslmode=disable
  conn_max_lifetime: 0
registration:
  mode: token
  tokens: [abc, def]
auth:
  access_token_lifetime: 24h
rate_limits:
  enabled: false
  per_second: 2.5
federation:
  enabled: true
  denied_servers: ["*.evil.example"]
turn:
  uris: ["turn:turn.example.org:3478?transport=udp"]
  shared_secret: s3cret
audit:
  head_export_path: audit/head.json
retention:
  default_max_lifetime: 720h
  allowed_lifetime_max: 8760h
`)
	c, err := Load(p, dir)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"server_name", c.ServerName, "example.org"},
		{"listen.client", c.Listen.Client, "0.0.0.0:8008"},
		{"listen.federation", c.Listen.Federation, ":8448"},
		{"listen.metrics default", c.Listen.Metrics, ""},
		{"tls.cert resolved", c.TLS.Cert, filepath.Join(dir, "tls/cert.pem")},
		{"tls.key absolute kept", c.TLS.Key, "/etc/enclave/key.pem"},
		{"signing_key resolved", c.SigningKey, filepath.Join(dir, "keys/signing.key")},
		{"database.url", c.Database.URL, "postgres://enclave:pw@db/enclave?sslmode=disable"},
		{"database dialect", c.DatabaseDialect(), "postgres"},
		{"database.conn_max_lifetime", c.Database.ConnMaxLifetime.Duration, time.Duration(0)},
		{"database.max_open_conns default", c.Database.MaxOpenConns, 20},
		{"registration.mode", c.Registration.Mode, "token"},
		{"registration.tokens", c.Registration.Tokens, []string{"abc", "def"}},
		{"auth.access_token_lifetime", c.Auth.AccessTokenLifetime.Duration, 24 * time.Hour},
		{"auth.login_token_lifetime default", c.Auth.LoginTokenLifetime.Duration, 2 * time.Minute},
		{"rate_limits.enabled", c.RateLimits.Enabled, false},
		{"rate_limits.per_second", c.RateLimits.PerSecond, 2.5},
		{"rate_limits.burst default", c.RateLimits.Burst, 50},
		{"federation.enabled", c.Federation.Enabled, true},
		{"federation.denied_servers", c.Federation.DeniedServers, []string{"*.evil.example"}},
		{"media.path resolved default", c.Media.Path, filepath.Join(dir, "media")},
		{"audit.head_export_path resolved", c.Audit.HeadExportPath, filepath.Join(dir, "audit/head.json")},
		{"turn.shared_secret", c.TURN.SharedSecret, "s3cret"},
		{"retention.default_max_lifetime", c.Retention.DefaultMaxLifetime.Duration, 720 * time.Hour},
		{"retention.allowed_lifetime_max", c.Retention.AllowedLifetimeMax.Duration, 8760 * time.Hour},
		{"retention.allowed_lifetime_min default", c.Retention.AllowedLifetimeMin.Duration, time.Duration(0)},
		{"DataDir", c.DataDir, dir},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	clearEnv(t)
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown top-level key", "server_nmae: x\n", []string{"server_nmae"}},
		{"unknown nested key", "listen:\n  clinet: 1.2.3.4:5\n", []string{"clinet"}},
		{"wrong type", "rate_limits:\n  burst: lots\n", []string{"lots"}},
		{"bad duration", "turn:\n  ttl: forever\n", []string{"forever", "line 2"}},
		{"invalid value reaches Validate", "registration:\n  mode: x\n", []string{`config: registration.mode: must be one of closed, open, token (got "x")`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Load(writeFile(t, dir, "enclave.yaml", tt.yaml), dir)
			if err == nil {
				t.Fatal("expected an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want ErrNotExist", err)
	}
}

func TestLoadEmptyAndNoFile(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	for _, path := range []string{writeFile(t, dir, "empty.yaml", ""), ""} {
		c, err := Load(path, dir)
		if err != nil {
			t.Fatalf("Load(%q): %v", path, err)
		}
		if c.ServerName != "localhost" || c.SQLitePath() != filepath.Join(dir, "enclave.db") {
			t.Errorf("Load(%q) did not yield resolved defaults: %+v", path, c)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		get  func(*Config) any
		want any
	}{
		{"string", map[string]string{"ENCLAVE_REGISTRATION_SHARED_SECRET": "hunter2"}, func(c *Config) any { return c.Registration.SharedSecret }, "hunter2"},
		{"nested string", map[string]string{"ENCLAVE_LISTEN_CLIENT": "[::]:9000"}, func(c *Config) any { return c.Listen.Client }, "[::]:9000"},
		{"empty string clears", map[string]string{"ENCLAVE_SERVER_NAME": ""}, func(c *Config) any { return c.ServerName }, ""},
		{"bool true", map[string]string{"ENCLAVE_FEDERATION_ENABLED": "true"}, func(c *Config) any { return c.Federation.Enabled }, true},
		{"bool 0", map[string]string{"ENCLAVE_RATE_LIMITS_ENABLED": "0"}, func(c *Config) any { return c.RateLimits.Enabled }, false},
		{"bool with spaces", map[string]string{"ENCLAVE_LISTEN_CLIENT_TLS": " TRUE "}, func(c *Config) any { return c.Listen.ClientTLS }, true},
		{"list", map[string]string{"ENCLAVE_FEDERATION_DENIED_SERVERS": "a.org, *.b.org,,"}, func(c *Config) any { return c.Federation.DeniedServers }, []string{"a.org", "*.b.org"}},
		{"empty list", map[string]string{"ENCLAVE_RATE_LIMITS_EXEMPT_USERS": ""}, func(c *Config) any { return c.RateLimits.ExemptUsers }, []string{}},
		{"duration", map[string]string{"ENCLAVE_TURN_TTL": "90m"}, func(c *Config) any { return c.TURN.TTL.Duration }, 90 * time.Minute},
		{"duration 0", map[string]string{"ENCLAVE_DATABASE_CONN_MAX_LIFETIME": "0"}, func(c *Config) any { return c.Database.ConnMaxLifetime.Duration }, time.Duration(0)},
		{"retention duration", map[string]string{"ENCLAVE_RETENTION_DEFAULT_MAX_LIFETIME": "720h"}, func(c *Config) any { return c.Retention.DefaultMaxLifetime.Duration }, 720 * time.Hour},
		{"int", map[string]string{"ENCLAVE_AUDIT_CHECKPOINT_EVERY": "42"}, func(c *Config) any { return c.Audit.CheckpointEvery }, 42},
		{"int64", map[string]string{"ENCLAVE_LIMITS_MAX_UPLOAD_BYTES": "5000000000"}, func(c *Config) any { return c.Limits.MaxUploadBytes }, int64(5000000000)},
		{"float", map[string]string{"ENCLAVE_RATE_LIMITS_LOGIN_PER_SECOND": "0.25"}, func(c *Config) any { return c.RateLimits.LoginPerSecond }, 0.25},
		{"unrelated vars ignored", map[string]string{"ENCLAVE_CONFIG": "/x", "SERVER_NAME": "y"}, func(c *Config) any { return c.ServerName }, "localhost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			if err := c.ApplyEnv(mapLookup(tt.env)); err != nil {
				t.Fatal(err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func mapLookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestEnvOverrideErrors(t *testing.T) {
	tests := map[string]string{
		"ENCLAVE_RATE_LIMITS_ENABLED":       "maybe",
		"ENCLAVE_RATE_LIMITS_BURST":         "ten",
		"ENCLAVE_RATE_LIMITS_PER_SECOND":    "fast",
		"ENCLAVE_AUTH_LOGIN_TOKEN_LIFETIME": "2 minutes",
		"ENCLAVE_LIMITS_MAX_REQUEST_BYTES":  "1.5",
		"ENCLAVE_AUDIT_CHECKPOINT_EVERY":    "99999999999999999999",
	}
	for name, val := range tests {
		t.Run(name, func(t *testing.T) {
			err := Default().ApplyEnv(mapLookup(map[string]string{name: val}))
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("got %v, want an error naming %s", err, name)
			}
		})
	}
}

// sampleEnvValue returns a valid, non-default string for an option's type.
func sampleEnvValue(t *testing.T, v reflect.Value) string {
	t.Helper()
	if _, ok := v.Addr().Interface().(*Duration); ok {
		return "17s"
	}
	switch v.Kind() {
	case reflect.String:
		return "env-value"
	case reflect.Bool:
		if v.Bool() {
			return "false"
		}
		return "true"
	case reflect.Int, reflect.Int64:
		return "12345"
	case reflect.Float64:
		return "3.5"
	case reflect.Slice:
		return "x, y"
	}
	t.Fatalf("no sample env value for type %s: extend setFromString and this test", v.Type())
	return ""
}

// TestEveryOptionHasEnvOverride proves, for every field (including ones
// added later), that its ENCLAVE_ variable exists, is unique and takes effect.
func TestEveryOptionHasEnvOverride(t *testing.T) {
	seen := map[string]string{}
	for _, o := range Default().options() {
		name := EnvVar(o.Path)
		if prev, dup := seen[name]; dup {
			t.Errorf("%s and %s share env var %s", prev, o.Path, name)
		}
		seen[name] = o.Path

		c := Default()
		before := optionValues(t, c)[o.Path]
		val := sampleEnvValue(t, o.Value)
		if err := c.ApplyEnv(mapLookup(map[string]string{name: val})); err != nil {
			t.Errorf("%s=%s: %v", name, val, err)
			continue
		}
		if after := optionValues(t, c)[o.Path]; after == before {
			t.Errorf("%s=%s did not change %s (still %s)", name, val, o.Path, after)
		}
	}
	if len(seen) < 40 {
		t.Errorf("only %d options found; reflection walk is broken", len(seen))
	}
}

func TestLoadEnvBeatsYAML(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "enclave.yaml", "server_name: file.example\nlog:\n  level: debug\n")
	t.Setenv("ENCLAVE_SERVER_NAME", "env.example")
	t.Setenv("ENCLAVE_DATABASE_URL", "sqlite:db/x.db")
	c, err := Load(p, dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "env.example" || c.Log.Level != "debug" {
		t.Errorf("server_name=%q log.level=%q", c.ServerName, c.Log.Level)
	}
	if c.SQLitePath() != filepath.Join(dir, "db/x.db") {
		t.Errorf("env-provided sqlite path not resolved: %q", c.SQLitePath())
	}

	t.Setenv("ENCLAVE_LOG_LEVEL", "loud")
	if _, err := Load(p, dir); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("invalid env value not caught by Validate: %v", err)
	}
	t.Setenv("ENCLAVE_PRESENCE_ENABLED", "nope")
	if _, err := Load(p, dir); err == nil || !strings.Contains(err.Error(), "ENCLAVE_PRESENCE_ENABLED") {
		t.Errorf("bad env bool: %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		path   string // expected FieldError path
		msg    string // substring of the full message
	}{
		{"server_name empty", func(c *Config) { c.ServerName = "" }, "server_name", "must be set"},
		{"server_name invalid", func(c *Config) { c.ServerName = "exa mple.org" }, "server_name", "invalid server name"},
		{"server_name bad port", func(c *Config) { c.ServerName = "example.org:99999" }, "server_name", "port"},
		{"listen.client empty", func(c *Config) { c.Listen.Client = "" }, "listen.client", "must be set"},
		{"listen.client no port", func(c *Config) { c.Listen.Client = "localhost" }, "listen.client", "host:port"},
		{"listen.client bad port", func(c *Config) { c.Listen.Client = "localhost:http" }, "listen.client", "invalid port"},
		{"listen.metrics bad", func(c *Config) { c.Listen.Metrics = "9090" }, "listen.metrics", "host:port"},
		{"listen.federation bad", func(c *Config) { c.Listen.Federation = "x:70000"; c.TLS.Cert, c.TLS.Key = "c", "k" }, "listen.federation", "invalid port"},
		{"client_tls without cert", func(c *Config) { c.Listen.ClientTLS = true }, "tls.cert", "listen.client_tls"},
		{"federation listener without cert", func(c *Config) { c.Listen.Federation = ":8448" }, "tls.cert", "listen.federation"},
		{"cert without key", func(c *Config) { c.TLS.Cert = "c.pem" }, "tls.key", "must be set"},
		{"key without cert", func(c *Config) { c.TLS.Key = "k.pem" }, "tls.cert", "must be set"},
		{"signing_key empty", func(c *Config) { c.SigningKey = "" }, "signing_key", "must be set"},
		{"database.url scheme", func(c *Config) { c.Database.URL = "mysql://u:p@h/db" }, "database.url", "sqlite:, postgres://"},
		{"database.url empty sqlite", func(c *Config) { c.Database.URL = "sqlite:" }, "database.url", "needs a path"},
		{"max_open_conns", func(c *Config) { c.Database.MaxOpenConns = 0 }, "database.max_open_conns", "positive"},
		{"max_idle_conns", func(c *Config) { c.Database.MaxIdleConns = -1 }, "database.max_idle_conns", "negative"},
		{"conn_max_lifetime", func(c *Config) { c.Database.ConnMaxLifetime.Duration = -time.Second }, "database.conn_max_lifetime", "negative"},
		{"registration.mode", func(c *Config) { c.Registration.Mode = "x" }, "registration.mode", `must be one of closed, open, token (got "x")`},
		{"registration.tokens empty", func(c *Config) { c.Registration.Tokens = []string{""} }, "registration.tokens", "empty"},
		{"access_token_lifetime", func(c *Config) { c.Auth.AccessTokenLifetime.Duration = -1 }, "auth.access_token_lifetime", "negative"},
		{"refresh lifetime", func(c *Config) { c.Auth.RefreshAccessTokenLifetime.Duration = 0 }, "auth.refresh_access_token_lifetime", "positive"},
		{"login token lifetime", func(c *Config) { c.Auth.LoginTokenLifetime.Duration = 0 }, "auth.login_token_lifetime", "positive"},
		{"per_second", func(c *Config) { c.RateLimits.PerSecond = 0 }, "rate_limits.per_second", "positive"},
		{"burst", func(c *Config) { c.RateLimits.Burst = -5 }, "rate_limits.burst", "positive"},
		{"login_per_second", func(c *Config) { c.RateLimits.LoginPerSecond = -1 }, "rate_limits.login_per_second", "positive"},
		{"login_burst", func(c *Config) { c.RateLimits.LoginBurst = 0 }, "rate_limits.login_burst", "positive"},
		{"max_request_bytes", func(c *Config) { c.Limits.MaxRequestBytes = 0 }, "limits.max_request_bytes", "positive"},
		{"max_upload_bytes", func(c *Config) { c.Limits.MaxUploadBytes = -1 }, "limits.max_upload_bytes", "positive"},
		{"log.level", func(c *Config) { c.Log.Level = "verbose" }, "log.level", "trace, debug, info, warn, error"},
		{"log.format", func(c *Config) { c.Log.Format = "xml" }, "log.format", "text, json"},
		{"media.path", func(c *Config) { c.Media.Path = "" }, "media.path", "must be set"},
		{"kek both", func(c *Config) { c.Media.KEKFile, c.Media.KEKEnv = "k", "K" }, "media.kek_env", "at most one"},
		{"allowed glob", func(c *Config) { c.Federation.AllowedServers = []string{"a b.org"} }, "federation.allowed_servers", "invalid glob"},
		{"preview host glob", func(c *Config) { c.Media.URLPreview.AllowedHosts = []string{"example.org/path"} }, "media.url_preview.allowed_hosts", "not a host name glob"},
		{"denied glob empty", func(c *Config) { c.Federation.DeniedServers = []string{""} }, "federation.denied_servers", "invalid glob"},
		{"allowed empty port", func(c *Config) { c.Federation.AllowedServers = []string{"ok.org", "matrix.bravo.gov:"} }, "federation.allowed_servers", `"matrix.bravo.gov:" can never match a server name: empty port`},
		{"allowed port not a number", func(c *Config) { c.Federation.AllowedServers = []string{"matrix.bravo.gov:https"} }, "federation.allowed_servers", `"matrix.bravo.gov:https" can never match`},
		{"allowed port out of range", func(c *Config) { c.Federation.AllowedServers = []string{"matrix.bravo.gov:84480"} }, "federation.allowed_servers", "out of range"},
		{"allowed port zero", func(c *Config) { c.Federation.AllowedServers = []string{"matrix.bravo.gov:0"} }, "federation.allowed_servers", "out of range"},
		{"allowed no host", func(c *Config) { c.Federation.AllowedServers = []string{":8448"} }, "federation.allowed_servers", "no host part"},
		{"allowed bare ipv6", func(c *Config) { c.Federation.AllowedServers = []string{"2001:db8::1"} }, "federation.allowed_servers", "must be in brackets"},
		{"denied open bracket", func(c *Config) { c.Federation.DeniedServers = []string{"[2001:db8::1"} }, "federation.denied_servers", "unterminated"},
		{"turn secret", func(c *Config) { c.TURN.URIs = []string{"turn:x"} }, "turn.shared_secret", "must be set"},
		{"turn ttl", func(c *Config) { c.TURN.TTL.Duration = 0 }, "turn.ttl", "positive"},
		{"checkpoint_every", func(c *Config) { c.Audit.CheckpointEvery = 0 }, "audit.checkpoint_every", "positive"},
		{"checkpoint_interval", func(c *Config) { c.Audit.CheckpointInterval.Duration = 0 }, "audit.checkpoint_interval", "positive"},
		{"siem format", func(c *Config) { c.Audit.SIEM.Format = "leef" }, "audit.siem.format", `must be one of jsonl, cef (got "leef")`},
		{"siem syslog scheme", func(c *Config) { c.Audit.SIEM.Syslog.Address = "tcp://siem:6514" }, "audit.siem.syslog.address", "without a scheme"},
		{"siem syslog no port", func(c *Config) { c.Audit.SIEM.Syslog.Address = "siem.example.org" }, "audit.siem.syslog.address", "HOST:PORT"},
		{"siem syslog bad port", func(c *Config) { c.Audit.SIEM.Syslog.Address = "siem:99999" }, "audit.siem.syslog.address", "1-65535"},
		{"siem ca without tls", func(c *Config) { c.Audit.SIEM.Syslog.Address, c.Audit.SIEM.Syslog.CAFile = "siem:6514", "ca.pem" }, "audit.siem.syslog.ca_file", "only used with audit.siem.syslog.tls"},
		{"siem tls without address", func(c *Config) { c.Audit.SIEM.Syslog.TLS = true }, "audit.siem.syslog.tls", "needs audit.siem.syslog.address"},
		{"siem cert without key", func(c *Config) {
			c.Audit.SIEM.Syslog = AuditSyslogConfig{Address: "siem:6514", TLS: true, CertFile: "c.pem"}
		}, "audit.siem.syslog.cert_file", "set together"},
		{"siem max_size_mb", func(c *Config) { c.Audit.SIEM.File.MaxSizeMB = 0 }, "audit.siem.file.max_size_mb", "positive"},
		{"siem max_files", func(c *Config) { c.Audit.SIEM.File.MaxFiles = 0 }, "audit.siem.file.max_files", "at least 1"},
		{"client_base_url", func(c *Config) { c.WellKnown.ClientBaseURL = "matrix.example.org" }, "well_known.client_base_url", "absolute http(s) URL"},
		{"retention default negative", func(c *Config) { c.Retention.DefaultMaxLifetime.Duration = -time.Hour }, "retention.default_max_lifetime", "negative"},
		{"retention min negative", func(c *Config) { c.Retention.AllowedLifetimeMin.Duration = -time.Hour }, "retention.allowed_lifetime_min", "negative"},
		{"retention max negative", func(c *Config) { c.Retention.AllowedLifetimeMax.Duration = -time.Hour }, "retention.allowed_lifetime_max", "negative"},
		{"retention min above max", func(c *Config) {
			c.Retention.AllowedLifetimeMin.Duration, c.Retention.AllowedLifetimeMax.Duration = 48*time.Hour, 24*time.Hour
		}, "retention.allowed_lifetime_min", "must not exceed retention.allowed_lifetime_max (got 48h > 24h)"},
		{"retention default below min", func(c *Config) {
			c.Retention.DefaultMaxLifetime.Duration, c.Retention.AllowedLifetimeMin.Duration = time.Hour, 24*time.Hour
		}, "retention.default_max_lifetime", "below retention.allowed_lifetime_min"},
		{"retention default above max", func(c *Config) {
			c.Retention.DefaultMaxLifetime.Duration, c.Retention.AllowedLifetimeMax.Duration = 48*time.Hour, 24*time.Hour
		}, "retention.default_max_lifetime", "exceed retention.allowed_lifetime_max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("expected a validation error")
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Path != tt.path {
				t.Fatalf("error %q: want FieldError for %s", err, tt.path)
			}
			want := "config: " + tt.path + ": "
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q: want prefix %q containing %q", err, want, tt.msg)
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	c := Default()
	c.Log.Level, c.Log.Format = "x", "y"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "log.level") || !strings.Contains(err.Error(), "log.format") {
		t.Errorf("want both problems reported, got %v", err)
	}
}

func TestValidateAcceptsGoodConfigs(t *testing.T) {
	tests := map[string]func(*Config){
		"postgresql scheme": func(c *Config) { c.Database.URL = "postgresql://u@h/db" },
		"tls everywhere": func(c *Config) {
			c.Listen.ClientTLS, c.Listen.Federation, c.TLS.Cert, c.TLS.Key = true, "[::]:8448", "c", "k"
		},
		"token mode": func(c *Config) { c.Registration.Mode, c.Registration.Tokens = RegistrationToken, []string{"t"} },
		"open mode":  func(c *Config) { c.Registration.Mode = RegistrationOpen },
		"turn":       func(c *Config) { c.TURN.URIs, c.TURN.SharedSecret = []string{"turn:x"}, "s" },
		"globs":      func(c *Config) { c.Federation.AllowedServers = []string{"*.example.org", "matrix.org"} },
		"globs with ports": func(c *Config) {
			c.Federation.AllowedServers = []string{"matrix.bravo.gov:8448", "[2001:db8::1]:443", "*.example.org:84*", "10.0.0.1:65535"}
		},
		"client_base_url":        func(c *Config) { c.WellKnown.ClientBaseURL = "https://matrix.example.org/" },
		"empty listen host":      func(c *Config) { c.Listen.Client = ":8008" },
		"ipv6 server name":       func(c *Config) { c.ServerName = "[2001:db8::1]:8448" },
		"log json debug":         func(c *Config) { c.Log.Level, c.Log.Format = "debug", "json" },
		"rate limits disabled":   func(c *Config) { c.RateLimits.Enabled = false },
		"sqlite in memory":       func(c *Config) { c.Database.URL = "sqlite::memory:" },
		"kek from env only":      func(c *Config) { c.Media.KEKEnv = "ENCLAVE_MEDIA_KEY" },
		"metrics listener":       func(c *Config) { c.Listen.Metrics = "127.0.0.1:9090" },
		"zero access lifetime":   func(c *Config) { c.Auth.AccessTokenLifetime.Duration = 0 },
		"no checkpoint exports":  func(c *Config) { c.Audit.Enabled = false },
		"retention default only": func(c *Config) { c.Retention.DefaultMaxLifetime.Duration = 720 * time.Hour },
		"retention bounds": func(c *Config) {
			c.Retention.DefaultMaxLifetime.Duration = 720 * time.Hour
			c.Retention.AllowedLifetimeMin.Duration, c.Retention.AllowedLifetimeMax.Duration = 24*time.Hour, 8760*time.Hour
		},
		"retention clamp without default": func(c *Config) { c.Retention.AllowedLifetimeMax.Duration = time.Hour },
	}
	for name, mutate := range tests {
		c := Default()
		mutate(c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidateServerName(t *testing.T) {
	valid := []string{
		"localhost", "example.org", "matrix.example.org:8448", "a-b.c", "1.2.3.4", "1.2.3.4:1",
		"[::1]", "[2001:db8::1]:8448", "[::ffff:1.2.3.4]", "xn--bcher-kva.example", "EXAMPLE.ORG",
	}
	for _, s := range valid {
		if err := ValidateServerName(s); err != nil {
			t.Errorf("%q: unexpected error %v", s, err)
		}
	}
	invalid := []string{
		"", ":8448", "example.org:", "example.org:0", "example.org:65536", "example.org:123456",
		"example.org:8a", "exa_mple.org", "exa mple.org", "example..org", ".example.org", "example.org.",
		"300.1.1.1", "[::1", "[1.2.3.4]", "[::1]x", "[::1]:", "[nothex::]", "::1", "ex@mple.org",
		"a/b", strings.Repeat("a", 64) + ".org", strings.Repeat("a.", 128) + "org",
	}
	for _, s := range invalid {
		if err := ValidateServerName(s); err == nil {
			t.Errorf("%q: accepted, want error", s)
		}
	}
}

func TestResolvePaths(t *testing.T) {
	tests := []struct {
		url, wantURL string
	}{
		{"sqlite:enclave.db", "sqlite:/data/enclave.db"},
		{"sqlite:sub/x.db", "sqlite:/data/sub/x.db"},
		{"sqlite:/abs/x.db", "sqlite:/abs/x.db"},
		{"sqlite::memory:", "sqlite::memory:"},
		{"sqlite:file:x.db?mode=ro", "sqlite:file:x.db?mode=ro"},
		{"postgres://h/db", "postgres://h/db"},
	}
	for _, tt := range tests {
		c := Default()
		c.Database.URL = tt.url
		c.TLS.CABundle = "ca.pem"
		c.Media.KEKFile = "/run/secrets/kek"
		if err := c.resolvePaths("/data"); err != nil {
			t.Fatal(err)
		}
		if c.Database.URL != tt.wantURL {
			t.Errorf("%s → %s, want %s", tt.url, c.Database.URL, tt.wantURL)
		}
		if c.TLS.CABundle != "/data/ca.pem" || c.Media.KEKFile != "/run/secrets/kek" || c.Media.Path != "/data/media" || c.SigningKey != "/data/signing.key" {
			t.Errorf("paths not resolved as expected: %+v", c)
		}
		if c.TLS.Cert != "" || c.Audit.HeadExportPath != "" {
			t.Error("empty paths must stay empty (they mean 'off')")
		}
	}

	// A relative data dir is made absolute so later chdirs cannot break paths.
	c := Default()
	if err := c.resolvePaths("rel"); err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(c.DataDir) || !filepath.IsAbs(c.SigningKey) {
		t.Errorf("relative data dir not made absolute: %q %q", c.DataDir, c.SigningKey)
	}
}

func TestDatabaseDialect(t *testing.T) {
	tests := []struct{ url, dialect, sqlitePath string }{
		{"sqlite:/d/enclave.db", "sqlite", "/d/enclave.db"},
		{"sqlite::memory:", "sqlite", ":memory:"},
		{"postgres://u:p@h:5432/db?sslmode=require", "postgres", ""},
		{"postgresql://h/db", "postgres", ""},
		{"mysql://h/db", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		c := &Config{Database: DatabaseConfig{URL: tt.url}}
		if got := c.DatabaseDialect(); got != tt.dialect {
			t.Errorf("DatabaseDialect(%q) = %q, want %q", tt.url, got, tt.dialect)
		}
		if got := c.SQLitePath(); got != tt.sqlitePath {
			t.Errorf("SQLitePath(%q) = %q, want %q", tt.url, got, tt.sqlitePath)
		}
	}
}

func TestEnsureDataDir(t *testing.T) {
	clearEnv(t)
	dir := filepath.Join(t.TempDir(), "nested", "data")
	path, created, err := EnsureDataDir(dir)
	if err != nil || !created || path != filepath.Join(dir, ConfigFileName) {
		t.Fatalf("EnsureDataDir = %q, %v, %v", path, created, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	original, _ := os.ReadFile(path)

	c, err := Load(path, dir)
	if err != nil {
		t.Fatalf("generated config does not load: %v", err)
	}
	if c.Registration.Mode != RegistrationClosed {
		t.Errorf("registration.mode = %q, want closed", c.Registration.Mode)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(c.Registration.SharedSecret) {
		t.Errorf("shared secret %q is not 32 random bytes in hex", c.Registration.SharedSecret)
	}

	// Apart from the secret, the generated file must equal the defaults.
	want := Default()
	want.Registration.SharedSecret = c.Registration.SharedSecret
	if err := want.resolvePaths(dir); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(optionValues(t, c), optionValues(t, want)) {
		t.Errorf("generated config differs from defaults:\n%v\n%v", optionValues(t, c), optionValues(t, want))
	}

	// A second call leaves the file alone.
	path2, created, err := EnsureDataDir(dir)
	if err != nil || created || path2 != path {
		t.Fatalf("second EnsureDataDir = %q, %v, %v", path2, created, err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, original) {
		t.Error("existing config was modified")
	}

	// Each data dir gets its own secret.
	other, _, err := EnsureDataDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Load(other, filepath.Dir(other))
	if err != nil {
		t.Fatal(err)
	}
	if c2.Registration.SharedSecret == c.Registration.SharedSecret {
		t.Error("shared secret is not random")
	}
}

// TestGeneratedConfigDocumentsEveryOption walks Config by reflection, so a
// new field without documentation or without a place in the file fails here.
func TestGeneratedConfigDocumentsEveryOption(t *testing.T) {
	path, _, err := EnsureDataDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}

	// Sections need docs too.
	var checkSections func(rt reflect.Type, prefix string)
	checkSections = func(rt reflect.Type, prefix string) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			if name := yamlName(f); name != "" && !isLeaf(f.Type) {
				if f.Tag.Get("doc") == "" {
					t.Errorf("section %s%s has no doc tag", prefix, name)
				}
				checkSections(f.Type, prefix+name+".")
			}
		}
	}
	checkSections(reflect.TypeFor[Config](), "")

	for _, o := range Default().options() {
		if strings.TrimSpace(o.Field.Tag.Get("doc")) == "" {
			t.Errorf("%s has no doc tag", o.Path)
		}
		key := lookupNode(root.Content[0], strings.Split(o.Path, "."))
		if key == nil {
			t.Errorf("%s missing from generated config", o.Path)
			continue
		}
		comment := key.HeadComment
		if !strings.Contains(comment, "Default: ") || !strings.Contains(comment, EnvVar(o.Path)) {
			t.Errorf("%s comment lacks default or env var name:\n%s", o.Path, comment)
		}
		firstDocWord := strings.Fields(o.Field.Tag.Get("doc"))[0]
		if !strings.Contains(comment, firstDocWord) {
			t.Errorf("%s comment does not contain its doc text:\n%s", o.Path, comment)
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if len(line) > 100 {
			t.Errorf("overlong line in generated config: %q", line)
		}
	}
}

// lookupNode returns the key node for a path in a YAML mapping tree.
func lookupNode(m *yaml.Node, path []string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == path[0] {
			if len(path) == 1 {
				return m.Content[i]
			}
			return lookupNode(m.Content[i+1], path[1:])
		}
	}
	return nil
}

// TestMarshalAnnotatedRoundTrip makes sure values needing YAML quoting
// survive being written into a config file and read back.
func TestMarshalAnnotatedRoundTrip(t *testing.T) {
	c := Default()
	c.ServerName = "[::1]:8448"
	c.Listen.Federation = ":8448"
	c.TLS.Cert, c.TLS.Key = "c: tricky.pem", "#key.pem"
	c.Registration.SharedSecret = "yes"
	c.Registration.Tokens = []string{"a,b", "c]", "true", "  spaced  "}
	c.Federation.DeniedServers = []string{"*.evil.example", "[ab]c.org"}
	c.Auth.AccessTokenLifetime.Duration = 36 * time.Hour
	c.RateLimits.PerSecond = 0.125
	c.Limits.MaxUploadBytes = 1 << 40
	c.WellKnown.ClientBaseURL = "https://m.example.org:443/"

	data, err := MarshalAnnotated(c)
	if err != nil {
		t.Fatal(err)
	}
	back := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(back); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	// Compared as rendered values: an empty list legitimately comes back as
	// []string{} rather than nil.
	if got, want := optionValues(t, back), optionValues(t, c); !reflect.DeepEqual(got, want) {
		t.Errorf("round trip mismatch:\n got %v\nwant %v", got, want)
	}
	if !reflect.DeepEqual(back.Registration.Tokens, c.Registration.Tokens) {
		t.Errorf("tokens: got %q, want %q", back.Registration.Tokens, c.Registration.Tokens)
	}
}

func TestPrint(t *testing.T) {
	c := Default()
	c.Registration.SharedSecret = "topsecret"
	c.Registration.Tokens = []string{"tok1", "tok2"}
	c.TURN.SharedSecret = "" // empty secrets are shown, to make "unset" visible
	c.Database.URL = "postgres://enclave:dbpass@db:5432/enclave?sslmode=disable&password=qpass"
	c.Federation.AllowedServers = []string{"a.org", "b.org"}

	var buf bytes.Buffer
	if err := Print(&buf, c); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, leaked := range []string{"topsecret", "tok1", "tok2", "dbpass", "qpass"} {
		if strings.Contains(out, leaked) {
			t.Errorf("Print leaked %q:\n%s", leaked, out)
		}
	}
	wantLines := []string{
		"registration.shared_secret = ********  (ENCLAVE_REGISTRATION_SHARED_SECRET)",
		"registration.tokens = ********  (ENCLAVE_REGISTRATION_TOKENS)",
		`turn.shared_secret = ""  (ENCLAVE_TURN_SHARED_SECRET)`,
		"database.url = postgres://enclave:********@db:5432/enclave?sslmode=disable&password=********  (ENCLAVE_DATABASE_URL)",
		"server_name = localhost  (ENCLAVE_SERVER_NAME)",
		"listen.client = 127.0.0.1:8008  (ENCLAVE_LISTEN_CLIENT)",
		"federation.allowed_servers = [a.org, b.org]  (ENCLAVE_FEDERATION_ALLOWED_SERVERS)",
		"auth.refresh_access_token_lifetime = 5m  (ENCLAVE_AUTH_REFRESH_ACCESS_TOKEN_LIFETIME)",
		"rate_limits.enabled = true  (ENCLAVE_RATE_LIMITS_ENABLED)",
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, w := range wantLines {
		found := false
		for _, l := range lines {
			found = found || l == w
		}
		if !found {
			t.Errorf("missing line %q in:\n%s", w, out)
		}
	}
	if n := len(c.options()); len(lines) != n {
		t.Errorf("printed %d lines, want one per option (%d)", len(lines), n)
	}
	lineRE := regexp.MustCompile(`^[a-z_.]+ = .*  \(ENCLAVE_[A-Z_]+\)$`)
	for _, l := range lines {
		if !lineRE.MatchString(l) {
			t.Errorf("malformed line %q", l)
		}
	}

	// sqlite URLs carry no credentials and stay readable.
	buf.Reset()
	c.Database.URL = "sqlite:/data/enclave.db"
	_ = Print(&buf, c)
	if !strings.Contains(buf.String(), "database.url = sqlite:/data/enclave.db  (") {
		t.Errorf("sqlite URL not shown:\n%s", buf.String())
	}
}

func TestEverySecretIsMasked(t *testing.T) {
	c := Default()
	secrets := 0
	for _, o := range c.options() {
		if o.Secret == "true" {
			secrets++
			if err := setFromString(o.Value, "leak-me"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if secrets < 3 {
		t.Fatalf("only %d secret options found", secrets)
	}
	var buf bytes.Buffer
	if err := Print(&buf, c); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "leak-me") {
		t.Errorf("secret leaked:\n%s", buf.String())
	}
	if got := strings.Count(buf.String(), Mask); got != secrets {
		t.Errorf("%d masked values, want %d", got, secrets)
	}
}

func TestClientBaseURL(t *testing.T) {
	tests := []struct {
		server, listen string
		tls            bool
		explicit, want string
	}{
		{"localhost", "127.0.0.1:8008", false, "", "http://localhost:8008"},
		{"example.org", "0.0.0.0:443", true, "", "https://example.org"},
		{"example.org:8448", "0.0.0.0:8443", true, "", "https://example.org:8443"},
		{"example.org", ":80", false, "", "http://example.org"},
		{"[::1]:8448", "[::1]:8008", false, "", "http://[::1]:8008"},
		{"example.org", "127.0.0.1:8008", false, "https://matrix.example.org/", "https://matrix.example.org"},
	}
	for _, tt := range tests {
		c := Default()
		c.ServerName, c.Listen.Client, c.Listen.ClientTLS, c.WellKnown.ClientBaseURL = tt.server, tt.listen, tt.tls, tt.explicit
		if got := c.ClientBaseURL(); got != tt.want {
			t.Errorf("%+v: got %q, want %q", tt, got, tt.want)
		}
	}
}

func TestFederationAllowed(t *testing.T) {
	tests := []struct {
		name            string
		enabled         bool
		allowed, denied []string
		server          string
		want            bool
	}{
		{"disabled", false, nil, nil, "matrix.org", false},
		{"open", true, nil, nil, "matrix.org", true},
		{"denied glob", true, nil, []string{"*.evil.example"}, "a.evil.example", false},
		{"denied ignores port", true, nil, []string{"*.evil.example"}, "a.evil.example:8448", false},
		{"denied case-insensitive", true, nil, []string{"*.Evil.example"}, "A.EVIL.example", false},
		{"not denied", true, nil, []string{"*.evil.example"}, "evil.example.org", true},
		{"allow list hit", true, []string{"matrix.org", "*.example.org"}, nil, "chat.example.org", true},
		{"allow list miss", true, []string{"matrix.org"}, nil, "other.org", false},
		{"deny beats allow", true, []string{"*.example.org"}, []string{"bad.example.org"}, "bad.example.org", false},
		{"ipv6 brackets are literal", true, []string{"[::1]"}, nil, "[::1]:8448", true},
		{"ipv6 no class match", true, []string{"[::1]"}, nil, "1", false},
		{"question mark", true, []string{"s?.example.org"}, nil, "s1.example.org", true},
		{"star matches dots", true, []string{"*.org"}, nil, "a.b.org", true},
		{"star not suffix", true, []string{"*.org"}, nil, "a.org.evil", false},
		{"full server name", true, []string{"matrix.bravo.gov:8448"}, nil, "matrix.bravo.gov:8448", true},
		{"full server name case", true, []string{"Matrix.Bravo.gov:8448"}, nil, "matrix.bravo.GOV:8448", true},
		{"other port", true, []string{"matrix.bravo.gov:8448"}, nil, "matrix.bravo.gov:443", false},
		{"port given, name has none", true, []string{"matrix.bravo.gov:8448"}, nil, "matrix.bravo.gov", false},
		{"no port matches any", true, []string{"matrix.bravo.gov"}, nil, "matrix.bravo.gov:8448", true},
		{"no port matches none", true, []string{"matrix.bravo.gov"}, nil, "matrix.bravo.gov", true},
		{"glob host with port", true, []string{"*.bravo.gov:8448"}, nil, "a.bravo.gov:8448", true},
		{"glob port", true, []string{"matrix.bravo.gov:84*"}, nil, "matrix.bravo.gov:8448", true},
		{"ipv6 with port", true, []string{"[::1]:8448"}, nil, "[::1]:8448", true},
		{"ipv6 other port", true, []string{"[::1]:8448"}, nil, "[::1]:8449", false},
		{"ip with port", true, []string{"127.0.0.2:8448"}, nil, "127.0.0.2:8448", true},
		{"denied with port", true, nil, []string{"evil.example:8448"}, "evil.example:8448", false},
		{"denied other port", true, nil, []string{"evil.example:8448"}, "evil.example:9000", true},
	}
	for _, tt := range tests {
		c := Default()
		c.Federation = FederationConfig{Enabled: tt.enabled, AllowedServers: tt.allowed, DeniedServers: tt.denied}
		if got := c.FederationAllowed(tt.server); got != tt.want {
			t.Errorf("%s: FederationAllowed(%q) = %v, want %v", tt.name, tt.server, got, tt.want)
		}
	}
}
