package test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"enclave/config"
	"enclave/storage"
)

// TestCLI drives the real binary as an operator would (issue: `create-user
// dave --admin --data DIR` made a ./data with password "--admin"; `config`
// on a missing directory wrote a new config with a new secret; a misspelt
// ENCLAVE_* variable was ignored).
func TestCLI(t *testing.T) {
	bin := enclaveBinary(t)
	work := t.TempDir() // the working directory: nothing may appear in it
	dataDir := filepath.Join(t.TempDir(), "data")
	if _, _, err := config.EnsureDataDir(dataDir); err != nil { // as serve's first start leaves it
		t.Fatal(err)
	}
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	t.Run("flags after the user name", func(t *testing.T) {
		if out, err := run(nil, "create-user", "dave", "--admin", "--data", dataDir, "dave-password"); err != nil {
			t.Fatalf("create-user: %v\n%s", err, out)
		}
		cfg, err := config.Load(filepath.Join(dataDir, config.ConfigFileName), dataDir)
		if err != nil {
			t.Fatal(err)
		}
		db, err := storage.Open(context.Background(), cfg.Database.URL, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		acc, err := storage.GetAccount(context.Background(), db, "@dave:localhost")
		if err != nil || !acc.IsAdmin {
			t.Fatalf("dave: %+v, %v: want an admin", acc, err)
		}
		if out, err := run(nil, "create-user", "erin", "--data", dataDir, "pw", "extra"); err == nil {
			t.Fatalf("a stray argument was accepted: %s", out)
		}
	})

	t.Run("tools never create a data directory", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nowhere")
		for _, args := range [][]string{
			{"create-user", "erin", "--data", missing, "pw"},
			{"config", "--data", missing},
			{"generate-keys", "--data", missing},
			{"create-user", "frank", "pw"}, // default ./data in the working directory
		} {
			out, err := run(nil, args...)
			if err == nil || !strings.Contains(out, "no Enclave data directory") {
				t.Errorf("%v: %v\n%s", args, err, out)
			}
		}
		if _, err := os.Stat(missing); !os.IsNotExist(err) {
			t.Errorf("%s was created", missing)
		}
		if entries, _ := os.ReadDir(work); len(entries) != 0 {
			t.Errorf("the working directory gained %v", entries)
		}
	})

	t.Run("config prints, masked, as a list or YAML", func(t *testing.T) {
		before, _ := os.ReadFile(filepath.Join(dataDir, config.ConfigFileName))
		out, err := run(nil, "config", "--format", "yaml", "--data", dataDir)
		if err != nil {
			t.Fatalf("config --format yaml: %v\n%s", err, out)
		}
		var parsed map[string]any
		if err := yaml.Unmarshal([]byte(out), &parsed); err != nil || parsed["server_name"] != "localhost" {
			t.Fatalf("not YAML with server_name: %v\n%s", err, out)
		}
		cfg, _ := config.Load(filepath.Join(dataDir, config.ConfigFileName), dataDir)
		if strings.Contains(out, cfg.Registration.SharedSecret) || !strings.Contains(out, config.Mask) {
			t.Fatalf("the shared secret is not masked:\n%s", out)
		}
		if out, err := run(nil, "config", "--data", dataDir); err != nil || !strings.Contains(out, "server_name = ") {
			t.Fatalf("config list: %v\n%s", err, out)
		}
		after, _ := os.ReadFile(filepath.Join(dataDir, config.ConfigFileName))
		if string(before) != string(after) {
			t.Fatal("printing the config changed the file")
		}
	})

	// A served data directory (the first start creates the audit key) for
	// the commands that record into or read the audit trail; the server
	// seals what the command line records.
	served := filepath.Join(t.TempDir(), "served")
	srvProc := startBinary(t, bin, served, "sqlite:"+filepath.Join(served, "enclave.db"))

	t.Run("user role shows, sets, adds and removes roles", func(t *testing.T) {
		dataDir := served
		if out, err := run(nil, "create-user", "--data", dataDir, "grace", "grace-password"); err != nil {
			t.Fatalf("create-user: %v\n%s", err, out)
		}
		roles := func() []string {
			t.Helper()
			cfg, _ := config.Load(filepath.Join(dataDir, config.ConfigFileName), dataDir)
			db, err := storage.Open(context.Background(), cfg.Database.URL, storage.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			r, err := storage.UserRoles(context.Background(), db, "@grace:localhost")
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		if out, err := run(nil, "user", "role", "--data", dataDir, "grace"); err != nil || !strings.Contains(out, "@grace:localhost: user") {
			t.Fatalf("user role (show): %v\n%s", err, out)
		}
		if out, err := run(nil, "user", "role", "--data", dataDir, "grace", "operator"); err != nil {
			t.Fatalf("user role (set): %v\n%s", err, out)
		}
		if got := roles(); len(got) != 1 || got[0] != "operator" {
			t.Fatalf("roles after set: %v", got)
		}
		if out, err := run(nil, "user", "role", "--data", dataDir, "--add", "auditor", "grace"); err != nil {
			t.Fatalf("user role --add: %v\n%s", err, out)
		}
		if got := strings.Join(roles(), ","); !strings.Contains(got, "auditor") || !strings.Contains(got, "operator") {
			t.Fatalf("roles after --add auditor: %v", got)
		}
		if out, err := run(nil, "user", "role", "--data", dataDir, "--remove", "operator", "grace"); err != nil {
			t.Fatalf("user role --remove: %v\n%s", err, out)
		}
		if got := roles(); len(got) != 1 || got[0] != "auditor" {
			t.Fatalf("roles after --remove operator: %v", got)
		}
		if out, err := run(nil, "user", "role", "--data", dataDir, "nobody-here"); err == nil || !strings.Contains(out, "no such user") {
			t.Errorf("user role of an unknown user: %v\n%s", err, out)
		}
		// The running (idle) server chains what the command line recorded:
		// its positions are beyond the server's own stream.
		cfg, _ := config.Load(filepath.Join(dataDir, config.ConfigFileName), dataDir)
		db, err := storage.Open(context.Background(), cfg.Database.URL, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		waitFor(t, "the role changes chained by the running server", 15*time.Second, func() bool {
			n, err := storage.CountUnsealedAudit(context.Background(), db)
			return err == nil && n == 0
		})
	})

	t.Run("audit export writes JSONL and CEF that verify offline", func(t *testing.T) {
		dataDir := served
		// A clean stop seals everything and writes the final checkpoint.
		_ = srvProc.cmd.Process.Signal(syscall.SIGTERM)
		<-srvProc.done
		export := func(args ...string) string {
			t.Helper()
			cmd := exec.Command(bin, append([]string{"audit", "export", "--data", dataDir}, args...)...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("audit export %v: %v\n%s", args, err, stderr.String())
			}
			return string(out)
		}
		out := export()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var roleChange bool
		for _, l := range lines {
			var e map[string]any
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("export line is not JSON: %q", l)
			}
			if strings.HasPrefix(fmt.Sprint(e["action"]), "rbac.") && e["target"] == "@grace:localhost" {
				roleChange = true
			}
		}
		if !roleChange {
			t.Errorf("the export lacks the role changes made above:\n%s", out)
		}
		exportFile := filepath.Join(t.TempDir(), "export.jsonl")
		if err := os.WriteFile(exportFile, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, _ := config.Load(filepath.Join(dataDir, config.ConfigFileName), dataDir)
		_, pub, err := config.AuditPublicKey(cfg)
		if err != nil {
			t.Fatal(err)
		}
		key := base64.RawStdEncoding.EncodeToString(pub)
		if out, err := run(nil, "audit", "verify", exportFile, "--pubkey", key, "--allow-unanchored"); err != nil {
			t.Fatalf("audit verify of the export: %v\n%s", err, out)
		}
		if cef := export("--format", "cef"); !strings.HasPrefix(cef, "CEF:0|") || strings.Count(cef, "\n") != len(lines)-1 { // JSONL has a header line
			t.Fatalf("audit export --format cef: %d lines for %d entries\n%.300s", strings.Count(cef, "\n"), len(lines), cef)
		}
	})

	t.Run("keys status names the audit key and whether the media key opens the store", func(t *testing.T) {
		out, err := run(nil, "keys", "status", "--data", served)
		if err != nil {
			t.Fatalf("keys status: %v\n%s", err, out)
		}
		cfg, _ := config.Load(filepath.Join(served, config.ConfigFileName), served)
		keyID, pub, err := config.AuditPublicKey(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"audit signing key: " + keyID + ", public key " + base64.RawStdEncoding.EncodeToString(pub),
			"store sealed under key id: ",
			"opens the store: true",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("keys status lacks %q:\n%s", want, out)
			}
		}
		wrong := filepath.Join(t.TempDir(), "wrong.kek")
		if err := os.WriteFile(wrong, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err = run([]string{"ENCLAVE_MEDIA_KEK_FILE=" + wrong}, "keys", "status", "--data", served)
		if err != nil || !strings.Contains(out, "opens the store: false") {
			t.Errorf("keys status with a wrong media key: %v\n%s", err, out)
		}
	})

	t.Run("keys show prints the published key and its fingerprint", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keyed")
		if out, err := run(nil, "init", "--data", dir, "--server-name", "matrix.alpha.gov:8448"); err != nil {
			t.Fatalf("init: %v\n%s", err, out)
		}
		before, _ := os.ReadDir(dir)
		out, err := run(nil, "keys", "show", "--data", dir)
		if err != nil {
			t.Fatalf("keys show: %v\n%s", err, out)
		}
		cfg, _ := config.Load(filepath.Join(dir, config.ConfigFileName), dir)
		keyID, priv, _, err := config.LoadOrCreateSigningKey(cfg.SigningKey)
		if err != nil {
			t.Fatal(err)
		}
		pub := priv.Public().(ed25519.PublicKey)
		sum := sha256.Sum256(pub)
		var pairs []string
		for _, b := range sum {
			pairs = append(pairs, strings.ToUpper(hex.EncodeToString([]byte{b})))
		}
		for _, want := range []string{
			"server name: matrix.alpha.gov:8448\n",
			"key id:      " + keyID + "\n",
			"public key:  " + base64.RawStdEncoding.EncodeToString(pub) + "\n", // as verify_keys publishes it
			"fingerprint: " + strings.Join(pairs, ":") + "\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("keys show lacks %q:\n%s", want, out)
			}
		}
		if after, _ := os.ReadDir(dir); len(after) != len(before) {
			t.Errorf("keys show changed the data directory: %v → %v", before, after)
		}
		if out, err := run(nil, "keys", "show", "--data", filepath.Join(t.TempDir(), "none")); err == nil {
			t.Errorf("keys show on a missing directory succeeded: %s", out)
		}
	})

	t.Run("init writes config and key without serving, never overwrites", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "fresh")
		out, err := run(nil, "init", "--data", dir, "--server-name", "chat.example.org")
		if err != nil {
			t.Fatalf("init: %v\n%s", err, out)
		}
		cfgPath := filepath.Join(dir, config.ConfigFileName)
		cfg, err := config.Load(cfgPath, dir)
		if err != nil || cfg.ServerName != "chat.example.org" {
			t.Fatalf("config after init: %+v, %v", cfg, err)
		}
		if _, _, created, err := config.LoadOrCreateSigningKey(cfg.SigningKey); err != nil || created {
			t.Fatalf("signing key after init: created=%v, %v", created, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "enclave.db")); !os.IsNotExist(err) {
			t.Errorf("init created a database (it must not serve or migrate): %v", err)
		}
		before, _ := os.ReadFile(cfgPath)
		out, err = run(nil, "init", "--data", dir, "--server-name", "other.example.org")
		if err == nil || !strings.Contains(out, "already exists; not overwriting") {
			t.Fatalf("a second init: %v\n%s", err, out)
		}
		if after, _ := os.ReadFile(cfgPath); string(after) != string(before) {
			t.Fatal("a second init changed the config")
		}
		for _, args := range [][]string{
			{"init", "--data", filepath.Join(t.TempDir(), "x")},
			{"init", "--data", filepath.Join(t.TempDir(), "y"), "--server-name", "bad name!"},
		} {
			if out, err := run(nil, args...); err == nil {
				t.Errorf("%v succeeded:\n%s", args, out)
			}
		}
		if entries, _ := os.ReadDir(work); len(entries) != 0 {
			t.Errorf("the working directory gained %v", entries)
		}
	})

	t.Run("a misspelt environment variable is an error", func(t *testing.T) {
		out, err := run([]string{"ENCLAVE_FEDERATON_ENABLED=true"}, "config", "--data", dataDir)
		if err == nil || !strings.Contains(out, "ENCLAVE_FEDERATON_ENABLED matches no option (did you mean ENCLAVE_FEDERATION_ENABLED?)") {
			t.Fatalf("%v\n%s", err, out)
		}
	})
}
