package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ctxT is the context of a test's requests: bounded, so a hung server
// fails the test instead of the whole run.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// client returns a mautrix client for an existing session. Retries are
// off: a 429 or 5xx must reach the test, not be papered over.
func client(t testing.TB, baseURL, userID, token string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(baseURL, id.UserID(userID), token)
	if err != nil {
		t.Fatal(err)
	}
	cli.DefaultHTTPRetries = 0
	return cli
}

// registerClient registers localpart through the client API's open
// registration (m.login.dummy) with mautrix, returning its session.
func registerClient(t testing.TB, baseURL, localpart, password string) *mautrix.Client {
	t.Helper()
	cli := client(t, baseURL, "", "")
	resp, err := cli.RegisterDummy(ctxT(t), &mautrix.ReqRegister[any]{Username: localpart, Password: password, InitialDeviceDisplayName: "registered"})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return cli
}

// loginClient logs localpart in with its password, a new device.
func loginClient(t testing.TB, baseURL, localpart, password string) *mautrix.Client {
	t.Helper()
	cli := client(t, baseURL, "", "")
	resp, err := cli.Login(ctxT(t), &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:   password, StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("login %s: %v", localpart, err)
	}
	if resp.DeviceID == "" || resp.AccessToken == "" {
		t.Fatalf("login %s: no device or token in %+v", localpart, resp)
	}
	return cli
}

// sessionClient turns a shared-secret registration into a client.
func sessionClient(t testing.TB, baseURL string, r RegisterResult) *mautrix.Client {
	cli := client(t, baseURL, r.UserID, r.AccessToken)
	cli.DeviceID = id.DeviceID(r.DeviceID)
	return cli
}

// rebase points a client at a restarted server.
func rebase(t testing.TB, cli *mautrix.Client, baseURL string) *mautrix.Client {
	t.Helper()
	c := client(t, baseURL, cli.UserID.String(), cli.AccessToken)
	c.DeviceID = cli.DeviceID
	return c
}

// wantMatrixErr asserts that err is an HTTP error with this status and errcode.
func wantMatrixErr(t testing.TB, what string, err error, status int, errcode string) *mautrix.RespError {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("%s: want %d %s, got %v", what, status, errcode, err)
	}
	if he.Response.StatusCode != status || he.RespError == nil || he.RespError.ErrCode != errcode {
		t.Fatalf("%s: want %d %s, got %d %s", what, status, errcode, he.Response.StatusCode, he.ResponseBody)
	}
	return he.RespError
}

// rawResp is a decoded JSON response of a raw request.
type rawResp struct {
	Status int
	Body   map[string]any
	Raw    []byte
}

func (r rawResp) errcode() string { s, _ := r.Body["errcode"].(string); return s }

// raw sends a request with exactly this body (string/[]byte as is, other
// values as JSON, nil for none) and decodes the JSON answer.
func raw(t testing.TB, method, url, token string, body any) rawResp {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := rawResp{Status: resp.StatusCode, Raw: b}
	_ = json.Unmarshal(b, &out.Body)
	return out
}

// wantErr asserts a raw response is the Matrix error status/errcode.
func (r rawResp) wantErr(t testing.TB, what string, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.errcode() != errcode {
		t.Fatalf("%s: want %d %s, got %d %s", what, status, errcode, r.Status, r.Raw)
	}
	if _, ok := r.Body["error"].(string); !ok {
		t.Fatalf("%s: error body lacks a string \"error\": %s", what, r.Raw)
	}
}

func body(ev *event.Event) string { s, _ := ev.Content.Raw["body"].(string); return s }

// pageAll pages /messages in direction dir from `from` (may be "") down
// to `to` (may be "") with the given page size, checking that every page
// hands out a usable end token until the room is exhausted.
func pageAll(t testing.TB, cli *mautrix.Client, roomID id.RoomID, from, to string, dir mautrix.Direction, page int) []*event.Event {
	t.Helper()
	out, err := pageAllErr(ctxT(t), cli, roomID, from, to, dir, page)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pageAllErr is pageAll for goroutines other than the test's.
func pageAllErr(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, from, to string, dir mautrix.Direction, page int) ([]*event.Event, error) {
	var out []*event.Event
	for i := 0; ; i++ {
		if i > 10000 {
			return nil, fmt.Errorf("/messages did not terminate")
		}
		resp, err := cli.Messages(ctx, roomID, from, to, dir, nil, page)
		if err != nil {
			return nil, fmt.Errorf("/messages from %q dir %c: %w", from, dir, err)
		}
		if len(resp.Chunk) > page {
			return nil, fmt.Errorf("/messages returned %d events for limit %d", len(resp.Chunk), page)
		}
		out = append(out, resp.Chunk...)
		if resp.End == "" {
			return out, nil
		}
		if resp.End == from {
			return nil, fmt.Errorf("/messages end token %q did not move", from)
		}
		from = resp.End
	}
}

// messagesOnly keeps the m.room.message events.
func messagesOnly(evs []*event.Event) []*event.Event {
	var out []*event.Event
	for _, e := range evs {
		if e.Type.Type == event.EventMessage.Type {
			out = append(out, e)
		}
	}
	return out
}

func ids(evs []*event.Event) []id.EventID {
	out := make([]id.EventID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func reversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// sameIDs asserts two event ID sequences are identical.
func sameIDs(t testing.TB, what string, got, want []id.EventID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: event %d is %s, want %s", what, i, got[i], want[i])
		}
	}
}

// noDuplicates asserts each event appears once.
func noDuplicates(t testing.TB, what string, evs []id.EventID) {
	t.Helper()
	seen := map[id.EventID]bool{}
	for _, e := range evs {
		if seen[e] {
			t.Fatalf("%s: event %s appears twice", what, e)
		}
		seen[e] = true
	}
}

// timelineFilter uploads a filter with the given timeline limit and no
// presence or account data, and returns its ID.
func timelineFilter(t testing.TB, cli *mautrix.Client, limit int) string {
	t.Helper()
	resp, err := cli.CreateFilter(ctxT(t), &mautrix.Filter{
		Room:        &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: limit}},
		Presence:    &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
	})
	if err != nil {
		t.Fatalf("create filter: %v", err)
	}
	return resp.FilterID
}

// --- the real binary ---

// enclaveBinary builds cmd/enclave into the calling test's temp dir. Call
// it once from a top-level test and hand the path to its subtests.
func enclaveBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "enclave")
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-tags", "goolm", "-o", bin, "./cmd/enclave")
	cmd.Dir = filepath.Dir(filepath.Dir(file))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a running `enclave serve`.
type proc struct {
	cmd  *exec.Cmd
	URL  string
	done chan struct{}
	out  *bytes.Buffer
}

// startBinary runs `enclave serve --data dir` against dbURL on a fresh
// port and waits until /health answers.
func startBinary(t testing.TB, bin, dir, dbURL string, extraEnv ...string) *proc {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(bin, "serve", "--data", dir)
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("ENCLAVE_LISTEN_CLIENT=127.0.0.1:%d", port),
		"ENCLAVE_DATABASE_URL="+dbURL,
		"ENCLAVE_REGISTRATION_SHARED_SECRET="+SharedSecret,
		"ENCLAVE_RATE_LIMITS_ENABLED=false",
		"ENCLAVE_LOG_LEVEL=warn",
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, URL: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan struct{}), out: out}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("enclave exited during start:\n%s", out)
		default:
		}
		if resp, err := http.Get(p.URL + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("enclave did not become healthy:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// setRolesApproved sets userID's roles through the admin API as admin. A
// grant of a watchful role (one holding read_audit, export_audit or
// lift_legal_hold) waits for a second admin (202): a fresh one approves it.
func setRolesApproved(t testing.TB, baseURL, adminToken, userID string, roles ...string) rawResp {
	t.Helper()
	resp := raw(t, "PUT", baseURL+"/_enclave/admin/v1/users/"+userID+"/roles", adminToken, map[string]any{"roles": roles})
	if resp.Status != http.StatusAccepted {
		return resp
	}
	pending, _ := resp.Body["pending"].(map[string]any)
	id, _ := pending["id"].(string)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	second := Register(t, baseURL, "approver-"+hex.EncodeToString(b), "approver-pw", true)
	return raw(t, "POST", baseURL+"/_enclave/admin/v1/role_grants/"+id+"/approve", second.AccessToken, nil)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
