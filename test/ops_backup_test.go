package test

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// TestBackupRestore follows docs/OPERATIONS.md: back up a running
// deployment (SQLite: stop, copy the files; PostgreSQL: pg_dump while it
// runs), wipe it, restore onto a fresh data directory and database, start,
// and read back every message and file (issue 16).
func TestBackupRestore(t *testing.T) {
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		if d == storage.Postgres {
			for _, tool := range []string{"pg_dump", "pg_restore"} {
				if _, err := exec.LookPath(tool); err != nil {
					t.Skipf("%s is not on PATH: the PostgreSQL backup cannot be taken here", tool)
				}
			}
		}
		root := t.TempDir()
		dir := filepath.Join(root, "data")
		if b, err := exec.Command(bin, "init", "--data", dir, "--server-name", "localhost").CombinedOutput(); err != nil {
			t.Fatalf("init: %v\n%s", err, b)
		}
		dbURL := "sqlite:enclave.db" // relative to the data directory, as init writes it
		if d == storage.Postgres {
			dbURL = storagetest.NewURL(t, d)
		}
		p := startBinary(t, bin, dir, dbURL)
		ctx := ctxT(t)
		reg := Register(t, p.URL, "alice", "alice-pw", false)
		cli := sessionClient(t, p.URL, reg)
		room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		var sent []string
		for i := 0; i < 20; i++ {
			body := fmt.Sprintf("message %d before the backup", i)
			if _, err := cli.SendText(ctx, room.RoomID, body); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, body)
		}
		mc := &mediaClient{t: t, base: p.URL, token: reg.AccessToken}
		files := map[string][]byte{}
		for i := 0; i < 3; i++ {
			data := bytes.Repeat([]byte(fmt.Sprintf("file %d contents ", i)), 1000+i)
			_, mediaID := mc.mustUpload(data, "application/octet-stream", fmt.Sprintf("f%d.bin", i))
			files[mediaID] = data
		}

		// Back up.
		backup := t.TempDir()
		dump := filepath.Join(backup, "enclave.dump")
		// The audit key and anchor live beside the data directory. With
		// PostgreSQL the anchor is copied before the online dump: a head
		// exported after the dump would be ahead of the restored log, and
		// the server refuses to start on a log shorter than its anchor.
		// With SQLite everything is copied after the stop.
		sides := func() {
			for _, side := range []string{".audit.key", ".audit-anchor.jsonl"} {
				if _, err := os.Stat(dir + side); err == nil {
					copyTree(t, dir+side, filepath.Join(backup, "data"+side))
				}
			}
		}
		if d == storage.Postgres {
			sides()
			if b, err := exec.Command("pg_dump", "--format=custom", "--file="+dump, "--dbname="+dbURL).CombinedOutput(); err != nil {
				t.Fatalf("pg_dump: %v\n%s", err, b)
			}
		}
		stop(t, p)
		if d == storage.SQLite {
			sides()
		}
		copyTree(t, dir, filepath.Join(backup, "data"))

		// Wipe: the data directory, its neighbours and the database.
		if err := os.RemoveAll(root); err != nil {
			t.Fatal(err)
		}
		newURL := "sqlite:enclave.db"
		if d == storage.Postgres {
			dropDatabase(t, dbURL)
			newURL = storagetest.NewURL(t, d)
		}

		// Restore onto a fresh data directory (another path) and database.
		fresh := filepath.Join(t.TempDir(), "restored")
		copyTree(t, filepath.Join(backup, "data"), fresh)
		for _, side := range []string{".audit.key", ".audit-anchor.jsonl"} {
			if _, err := os.Stat(filepath.Join(backup, "data"+side)); err == nil {
				copyTree(t, filepath.Join(backup, "data"+side), fresh+side)
			}
		}
		if d == storage.Postgres {
			if b, err := exec.Command("pg_restore", "--no-owner", "--exit-on-error", "--dbname="+newURL, dump).CombinedOutput(); err != nil {
				t.Fatalf("pg_restore: %v\n%s", err, b)
			}
		}
		p = startBinary(t, bin, fresh, newURL)
		cli = rebase(t, cli, p.URL) // the access token was restored too
		var got []string
		for _, ev := range pageAll(t, cli, room.RoomID, "", "", mautrix.DirectionForward, 7) {
			if ev.Type == event.EventMessage {
				body, _ := ev.Content.Raw["body"].(string)
				got = append(got, body)
			}
		}
		if strings.Join(got, "|") != strings.Join(sent, "|") {
			t.Errorf("messages after the restore:\n%q\nwant\n%q", got, sent)
		}
		mc.base = p.URL
		for mediaID, want := range files {
			res := mc.get("/_matrix/client/v1/media/download/localhost/" + mediaID)
			if res.Status != 200 || !bytes.Equal(res.Body, want) {
				t.Errorf("media %s after the restore: %d, %d bytes (want %d)", mediaID, res.Status, len(res.Body), len(want))
			}
		}
		stop(t, p)
		verify := exec.Command(bin, "audit", "verify", "--data", fresh)
		verify.Env = append(os.Environ(), "ENCLAVE_DATABASE_URL="+newURL)
		if b, err := verify.CombinedOutput(); err != nil {
			t.Errorf("audit verify on the restored data: %v\n%s", err, b)
		}
	})
}

// stop sends SIGTERM, as systemctl stop does, and waits for the exit.
func stop(t testing.TB, p *proc) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("enclave did not stop on SIGTERM")
	}
}

// copyTree copies a file or a directory tree, keeping modes.
func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, info.Mode().Perm()|0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		return os.WriteFile(dst, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// dropDatabase drops the PostgreSQL database dbURL names.
func dropDatabase(t testing.TB, dbURL string) {
	t.Helper()
	rest, _, _ := strings.Cut(dbURL, "?")
	name := rest[strings.LastIndex(rest, "/")+1:]
	admin, err := sql.Open("pgx", storagetest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
}
