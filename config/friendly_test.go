package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadErrorsNameThePath: config errors name the YAML path and what is
// wrong, with the nearest option for a typo, all problems at once.
func TestLoadErrorsNameThePath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "enclave.yaml")
	yml := "rate_limits:\n  per_second: many\n  per_secnd: 3\nlisten:\n  body_timeout: soon\nfederaton:\n  enabled: true\nregistration:\n  tokens: abc\n"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, dir)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{
		`rate_limits.per_second: "many" is not a number (line 2)`,
		`rate_limits.per_secnd: unknown option (did you mean per_second?) (line 3)`,
		`listen.body_timeout: "soon" is not a duration (like 30s, 5m, 1h) (line 5)`,
		`federaton: unknown option (did you mean federation?) (line 6)`,
		`registration.tokens: "abc" is not a list (line 9)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "config.RateLimitConfig") || strings.Contains(err.Error(), "float64") {
		t.Errorf("error speaks Go types: %v", err)
	}
}

// TestUnknownEnvRefused: an ENCLAVE_* variable that matches no option is an
// error naming it and the nearest option (it was silently ignored), while
// the variables the config names (*_env options) and the test harness's
// ENCLAVE_TEST_* pass.
func TestUnknownEnvRefused(t *testing.T) {
	c := Default()
	err := c.unknownEnv([]string{"ENCLAVE_FEDERATON_ENABLED=true", "ENCLAVE_SERVER_NAME=x", "HOME=/root", "ENCLAVE_TEST_POSTGRES=postgres://"})
	if err == nil || !strings.Contains(err.Error(), "ENCLAVE_FEDERATON_ENABLED matches no option (did you mean ENCLAVE_FEDERATION_ENABLED?)") {
		t.Fatalf("misspelt variable: %v", err)
	}
	if strings.Contains(err.Error(), "ENCLAVE_SERVER_NAME") || strings.Contains(err.Error(), "TEST_POSTGRES") {
		t.Fatalf("known variables reported: %v", err)
	}
	c.Media.KEKEnv = "ENCLAVE_MY_KEK"
	if err := c.unknownEnv([]string{"ENCLAVE_MY_KEK=abc"}); err != nil {
		t.Fatalf("the variable media.kek_env names was refused: %v", err)
	}
	t.Setenv("ENCLAVE_LISTEN_CLINET", "127.0.0.1:1")
	if _, err := Load("", t.TempDir()); err == nil || !strings.Contains(err.Error(), "ENCLAVE_LISTEN_CLINET") {
		t.Fatalf("Load with a misspelt variable: %v", err)
	}
}

// TestFederationDestinationAllowed: keys are fetched only from server
// names the allow-list gives exactly.
func TestFederationDestinationAllowed(t *testing.T) {
	c := Default()
	c.Federation.Enabled = true
	c.Federation.AllowedServers = []string{"bravo.gov", "*.charlie.gov", "delta.gov:8448"}
	for name, want := range map[string]bool{
		"bravo.gov": true, "bravo.gov:22": false, "m.charlie.gov": true, "m.charlie.gov:1": false,
		"delta.gov:8448": true, "delta.gov": false, "delta.gov:22": false, "echo.gov": false,
	} {
		if got := c.FederationDestinationAllowed(name); got != want {
			t.Errorf("FederationDestinationAllowed(%q) = %v, want %v", name, got, want)
		}
	}
	c.Federation.AllowedServers = nil
	if !c.FederationDestinationAllowed("any.gov:22") {
		t.Error("without an allow-list every server is a destination")
	}
}

// TestRestartNeeded names what a SIGHUP cannot apply.
func TestRestartNeeded(t *testing.T) {
	a, b := Default(), Default()
	b.Log.Level = "debug"
	b.Federation.Enabled = true
	b.Listen.Client = "127.0.0.1:9999"
	b.RateLimits.PerSecond = 99
	got := strings.Join(RestartNeeded(a, b), ",")
	if got != "listen.client,rate_limits.per_second" {
		t.Fatalf("RestartNeeded = %s", got)
	}
}
