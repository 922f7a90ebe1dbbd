package test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOpsLogsAndHealth runs the real binary as a packaged deployment
// would (init, create-user, serve with TLS and log.format json) and reads
// its stderr: every line must be JSON, Go's own TLS handshake errors
// included; each request leaves an access line with the route template and
// the user, and an access token given in the query string never appears.
// /health on the client listener says only ok; the metrics listener's has
// the details (issue 16).
func TestOpsLogsAndHealth(t *testing.T) {
	bin := enclaveBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	runCLI := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	runCLI("init", "--data", dir, "--server-name", "localhost")
	runCLI("create-user", "--data", dir, "alice", "alice-password")
	certFile, keyFile := selfSignedCert(t, dir)

	port, mport := freePort(t), freePort(t)
	cmd := exec.Command(bin, "serve", "--data", dir)
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("ENCLAVE_LISTEN_CLIENT=127.0.0.1:%d", port),
		fmt.Sprintf("ENCLAVE_LISTEN_METRICS=127.0.0.1:%d", mport),
		"ENCLAVE_LISTEN_CLIENT_TLS=true",
		"ENCLAVE_TLS_CERT="+certFile, "ENCLAVE_TLS_KEY="+keyFile,
		"ENCLAVE_LOG_FORMAT=json", "ENCLAVE_LOG_LEVEL=info",
		"ENCLAVE_RATE_LIMITS_ENABLED=false",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	})

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	get := func(url, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("enclave exited during start:\n%s%s", stdout.String(), stderr.String())
		default:
		}
		if resp, err := client.Get(base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("enclave did not become healthy")
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Run("health", func(t *testing.T) {
		if code, body := get(base+"/health", ""); code != 200 || strings.TrimSpace(body) != `{"status":"ok"}` {
			t.Errorf("client /health: %d %s: want just {\"status\":\"ok\"}", code, body)
		}
		code, body := get(fmt.Sprintf("http://127.0.0.1:%d/health", mport), "")
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil || code != 200 || m["status"] != "ok" || m["store"] != "ok" || m["database"] != "sqlite" || m["version"] == nil {
			t.Errorf("metrics /health: %d %s: want status, store, database and version", code, body)
		}
	})

	// Requests for the access log.
	resp, err := client.Post(base+"/_matrix/client/v3/login", "application/json", strings.NewReader(
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"alice-password"}`))
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if login.AccessToken == "" {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	whoami := base + "/_matrix/client/v3/account/whoami"
	if code, body := get(whoami, login.AccessToken); code != 200 {
		t.Fatalf("whoami: %d %s", code, body)
	}
	if code, _ := get(whoami+"?access_token=SECRET", ""); code != 401 {
		t.Fatalf("whoami with a bad token: %d", code)
	}
	if code, _ := get(whoami+"?access_token="+login.AccessToken, ""); code != 200 {
		t.Fatalf("whoami with the token in the query: %d", code)
	}
	// Go's server logs these itself: one connection closed before its
	// handshake, one that sends garbage.
	for _, payload := range []string{"", "\x16\x03\x01\x00\x05hello"} {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(payload))
		_ = c.Close()
	}
	time.Sleep(300 * time.Millisecond) // let the server log them

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("enclave did not stop on SIGTERM")
	}

	out := stderr.String() + stdout.String()
	if strings.Contains(out, "SECRET") || strings.Contains(out, login.AccessToken) || strings.Contains(out, "alice-password") {
		t.Errorf("a token or password reached the log:\n%s", out)
	}
	var access, userLines, handshake int
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Errorf("not a JSON line: %q", line)
			continue
		}
		if e["msg"] == "access" && e["level"] == "info" {
			access++
			for _, k := range []string{"method", "route", "status", "duration_ms", "request_id"} {
				if _, ok := e[k]; !ok {
					t.Errorf("access line without %s: %s", k, line)
				}
			}
			if route, _ := e["route"].(string); strings.Contains(route, "?") || strings.Contains(route, "access_token") {
				t.Errorf("access line with a query: %s", line)
			}
			if e["user"] == "@alice:localhost" && strings.HasSuffix(e["route"].(string), "/account/whoami") {
				userLines++
			}
		}
		if msg, _ := e["msg"].(string); strings.Contains(msg, "TLS handshake error") && e["component"] == "http" {
			handshake++
		}
	}
	if access < 4 || userLines < 2 || handshake < 1 {
		t.Errorf("access lines %d (want ≥4), whoami lines naming the user %d (want 2), TLS handshake errors logged %d (want ≥1):\n%s", access, userLines, handshake, out)
	}
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key into dir.
func selfSignedCert(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls.key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kb)
	return certFile, keyFile
}

// TestOpsLogFile runs the binary with log.file: the log goes to the file,
// not stderr, and rotates by size keeping log.max_files old files (issue
// 16: "optional log file with rotation").
func TestOpsLogFile(t *testing.T) {
	bin := enclaveBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	logDir := t.TempDir()
	logFile := filepath.Join(logDir, "enclave.log")
	p := startBinary(t, bin, dir, "sqlite:"+filepath.Join(dir, "enclave.db"),
		"ENCLAVE_LOG_FILE="+logFile, "ENCLAVE_LOG_MAX_SIZE_MB=1", "ENCLAVE_LOG_MAX_FILES=2",
		"ENCLAVE_LOG_FORMAT=json", "ENCLAVE_LOG_LEVEL=info")
	// Each request leaves an access line of about 200 bytes: 3 MB of
	// them rotate the 1 MB file at least twice.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for range 4500 {
				resp, err := client.Get(p.URL + "/_matrix/client/versions")
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	p.kill()
	entries, err := os.ReadDir(logDir)
	if err != nil {
		t.Fatal(err)
	}
	var rotated []string
	for _, e := range entries {
		if e.Name() != "enclave.log" {
			rotated = append(rotated, e.Name())
		}
		info, _ := e.Info()
		if info.Size() > 1<<20+4096 {
			t.Errorf("%s is %d bytes: not rotated at 1 MB", e.Name(), info.Size())
		}
	}
	if len(rotated) != 2 {
		t.Errorf("rotated files %v: want exactly log.max_files = 2 kept", rotated)
	}
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line in the log file: %q", l)
		}
	}
	if !strings.Contains(string(data), `"/_matrix/client/versions"`) {
		t.Errorf("no access line in the log file:\n%s", lines[len(lines)-1])
	}
	if strings.Contains(p.out.String(), "/_matrix/client/versions") {
		t.Errorf("access lines still went to stderr:\n%.500s", p.out.String())
	}
}
