package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestReadmeQuickStart runs the README's curl quick start verbatim against
// the real binary serving a fresh data directory, as `make run` does, so the
// commands an operator copies first cannot rot.
func TestReadmeQuickStart(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the quick start needs %s on PATH: %v", tool, err)
		}
	}
	_, file, _, _ := runtime.Caller(0)
	readme, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(file)), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- quickstart -->\n```sh\n(.*?)```\n<!-- /quickstart -->").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no <!-- quickstart --> sh block")
	}
	script := string(m[1])

	// The block runs where `make run` leaves things: bin/enclave and ./data.
	work := t.TempDir()
	if err := os.Mkdir(filepath.Join(work, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(enclaveBinary(t), filepath.Join(work, "bin", "enclave")); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(work, "data")
	p := startBinary(t, filepath.Join(work, "bin", "enclave"), data, "sqlite:"+filepath.Join(data, "enclave.db"))

	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "HS="+p.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("quick start failed: %v\n%s\nserver:\n%s", err, out, p.out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "created @alice:") || !strings.HasPrefix(lines[1], "$") || lines[2] != "hello from curl" {
		t.Fatalf("quick start printed %q; want the created user, an event ID and the message read back", out)
	}

	// What it printed is what the server stored: alice is an admin and the
	// message is in her room.
	login := raw(t, "POST", p.URL+"/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
		"password": "correct horse battery staple",
	})
	tok, _ := login.Body["access_token"].(string)
	if login.Status != 200 || tok == "" {
		t.Fatalf("login as alice: %d %v", login.Status, login.Body)
	}
	if r := raw(t, "GET", p.URL+"/_synapse/admin/v2/users/@alice:localhost", tok, nil); r.Status != 200 || r.Body["admin"] != true {
		t.Fatalf("alice is not an admin: %d %v", r.Status, r.Body)
	}
	rooms := raw(t, "GET", p.URL+"/_matrix/client/v3/joined_rooms", tok, nil)
	joined, _ := rooms.Body["joined_rooms"].([]any)
	if len(joined) != 1 {
		t.Fatalf("joined_rooms: %v", rooms.Body)
	}
	room, _ := joined[0].(string)
	ev := raw(t, "GET", p.URL+"/_matrix/client/v3/rooms/"+room+"/event/"+lines[1], tok, nil)
	if c, _ := ev.Body["content"].(map[string]any); ev.Status != 200 || c["body"] != "hello from curl" {
		t.Fatalf("stored event %s: %d %v", lines[1], ev.Status, ev.Body)
	}
}
