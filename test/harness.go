package test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"enclave/config"
	"enclave/internal/server"
	"enclave/storage"
	"enclave/storage/storagetest"
)

// SharedSecret is the registration shared secret of test servers.
const SharedSecret = "test-shared-secret"

// Server is a homeserver started for a test.
type Server struct {
	*server.Server
	URL     string // http://127.0.0.1:PORT
	DataDir string
	DBURL   string
	t       testing.TB
}

// Options tweak a test server's config before it starts.
type Options struct {
	ServerName string
	DataDir    string // reuse a data dir (restart tests)
	DBURL      string // reuse a database (restart tests)
	Configure  func(c *config.Config)
}

// TestConfig returns the config a test server runs with: open registration,
// the shared secret set, rate limits off, on a random loopback port.
func TestConfig(t testing.TB, d storage.Dialect, o Options) *config.Config {
	t.Helper()
	dataDir := o.DataDir
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.ServerName = "localhost"
	if o.ServerName != "" {
		cfg.ServerName = o.ServerName
	}
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Registration.Mode = "open"
	cfg.Registration.SharedSecret = SharedSecret
	cfg.RateLimits.Enabled = false
	cfg.SigningKey = filepath.Join(dataDir, "signing.key")
	cfg.Media.Path = filepath.Join(dataDir, "media")
	cfg.Database.URL = o.DBURL
	if cfg.Database.URL == "" {
		cfg.Database.URL = storagetest.NewURL(t, d)
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	return cfg
}

// Start runs a server in-process with a fresh store of dialect d; it is
// shut down when the test ends.
func Start(t testing.TB, d storage.Dialect, o Options) *Server {
	t.Helper()
	return StartConfig(t, TestConfig(t, d, o))
}

// StartConfig runs a server in-process with the given config.
func StartConfig(t testing.TB, cfg *config.Config) *Server {
	t.Helper()
	// The data directory as `enclave serve` leaves it (an enclave.yaml),
	// so that tests can run the command-line tools against it.
	if _, _, err := config.EnsureDataDir(cfg.DataDir); err != nil {
		t.Fatalf("data directory: %v", err)
	}
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting server: %v", err)
	}
	addr, err := srv.Start()
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	s := &Server{Server: srv, URL: "http://" + addr, DataDir: cfg.DataDir, DBURL: cfg.Database.URL, t: t}
	t.Cleanup(func() { s.Stop() })
	return s
}

// Stop shuts the server down (idempotent).
func (s *Server) Stop() {
	if s.Server == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
	s.Server = nil
}

// EachStore runs fn as a subtest against a server on each store.
func EachStore(t *testing.T, fn func(t *testing.T, d storage.Dialect)) {
	for _, d := range storagetest.Dialects {
		t.Run(string(d), func(t *testing.T) { fn(t, d) })
	}
}

// RegisterResult is the body of a successful registration or login.
type RegisterResult struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

// Register creates a user through the shared-secret admin API, the way
// test tools and mxbench do, and returns its first login.
func Register(t testing.TB, baseURL, localpart, password string, admin bool) RegisterResult {
	t.Helper()
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	resp, err := http.Get(baseURL + "/_synapse/admin/v1/register")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&nonce)
	resp.Body.Close()
	mac := hmac.New(sha1.New, []byte(SharedSecret))
	adminStr := "notadmin"
	if admin {
		adminStr = "admin"
	}
	mac.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + password + "\x00" + adminStr))
	body, _ := json.Marshal(map[string]any{"nonce": nonce.Nonce, "username": localpart, "password": password, "admin": admin, "mac": hex.EncodeToString(mac.Sum(nil))})
	resp, err = http.Post(baseURL+"/_synapse/admin/v1/register", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out RegisterResult
	if resp.StatusCode != 200 {
		var e map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("register %s: %d %v", localpart, resp.StatusCode, e)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// UserID returns the full user ID of a localpart on server name sn.
func UserID(localpart, sn string) string { return fmt.Sprintf("@%s:%s", localpart, sn) }
