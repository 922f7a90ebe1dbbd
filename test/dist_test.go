package test

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// TestDist runs `make dist` and checks the release tarball as an operator
// installing it would: its checksum, every file's line in SHA256SUMS, the
// expected files, a binary that runs, a systemd unit that systemd accepts
// (when systemd-analyze is on the machine) and carries the hardening, and
// that the unpacked binary initialises a data directory and serves
// (issue 16).
func TestDist(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not on PATH")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	out := t.TempDir()
	cmd := exec.Command("make", "dist", "DIST_OUT="+out, "VERSION=9.9.9-test")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make dist: %v\n%s", err, b)
	}
	name := "enclave-9.9.9-test-" + runtime.GOOS + "-" + runtime.GOARCH
	tarball := filepath.Join(out, name+".tar.gz")
	data, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	side, err := os.ReadFile(tarball + ".sha256")
	if err != nil || string(side) != hex.EncodeToString(sum[:])+"  "+name+".tar.gz\n" {
		t.Fatalf("%s.sha256: %q, %v", name, side, err)
	}

	// Unpack.
	dest := t.TempDir()
	f, _ := os.Open(tarball)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{} // path inside the package → sha256
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rel, ok := strings.CutPrefix(h.Name, name+"/")
		if !ok && h.Name != name+"/" {
			t.Fatalf("%s lies outside %s/", h.Name, name)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s is owned by %d:%d, want 0:0", h.Name, h.Uid, h.Gid)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, _ := io.ReadAll(tr)
		s := sha256.Sum256(b)
		files[rel] = hex.EncodeToString(s[:])
		p := filepath.Join(dest, rel)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, os.FileMode(h.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for p := range files {
		got = append(got, p)
	}
	sort.Strings(got)
	for _, want := range []string{"bin/enclave", "enclave.service", "Containerfile", "README.md", "LICENSE", "NOTICE", "CHANGELOG.md", "docs/OPERATIONS.md", "docs/FEDERATION.md", "SHA256SUMS"} {
		if files[want] == "" {
			t.Errorf("the tarball lacks %s (has %v)", want, got)
		}
	}
	sums, _ := os.ReadFile(filepath.Join(dest, "SHA256SUMS"))
	listed := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(sums)))
	for sc.Scan() {
		sum, path, ok := strings.Cut(sc.Text(), "  ")
		if !ok || files[path] != sum {
			t.Errorf("SHA256SUMS line %q does not match the file (%s)", sc.Text(), files[path])
		}
		listed[path] = true
	}
	for _, p := range got {
		if p != "SHA256SUMS" && !listed[p] {
			t.Errorf("SHA256SUMS does not list %s", p)
		}
	}

	bin := filepath.Join(dest, "bin", "enclave")
	if b, err := exec.Command(bin, "version").CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "enclave 9.9.9-test" {
		t.Errorf("bin/enclave version: %q, %v", b, err)
	}

	t.Run("systemd unit", func(t *testing.T) {
		unit, _ := os.ReadFile(filepath.Join(dest, "enclave.service"))
		keys := map[string][]string{}
		for _, line := range strings.Split(string(unit), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(line, "#") {
				keys[k] = append(keys[k], v)
			}
		}
		for k, want := range map[string]string{
			"NoNewPrivileges": "true", "ProtectSystem": "strict", "PrivateTmp": "true",
			"LimitNOFILE": "65536", "Restart": "on-failure", "User": "enclave",
			"ReadWritePaths": "/var/lib/enclave /var/lib/enclave-audit", "ExecStart": "/usr/local/bin/enclave serve --data /var/lib/enclave",
		} {
			if len(keys[k]) != 1 || keys[k][0] != want {
				t.Errorf("%s=%v, want %s", k, keys[k], want)
			}
		}
		// Every ENCLAVE_* the unit sets must name an option (an unknown one
		// is an error at start, so this catches a renamed option).
		cfgDir := filepath.Join(t.TempDir(), "data")
		if b, err := exec.Command(bin, "init", "--data", cfgDir, "--server-name", "localhost").CombinedOutput(); err != nil {
			t.Fatalf("init: %v\n%s", err, b)
		}
		check := exec.Command(bin, "config", "--data", cfgDir)
		check.Env = os.Environ()
		check.Env = append(check.Env, keys["Environment"]...)
		if len(keys["Environment"]) == 0 {
			t.Error("the unit sets no Environment")
		}
		if b, err := check.CombinedOutput(); err != nil {
			t.Errorf("the unit's Environment %v: %v\n%s", keys["Environment"], err, b)
		}
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			t.Log("systemd-analyze is not on PATH: the unit was only parsed")
			return
		}
		// verify insists that ExecStart's binary exists: point it at the
		// unpacked one.
		dir := t.TempDir()
		patched := strings.ReplaceAll(string(unit), "/usr/local/bin/enclave", bin)
		if err := os.WriteFile(filepath.Join(dir, "enclave.service"), []byte(patched), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(dir, "enclave.service")).CombinedOutput(); err != nil || len(strings.TrimSpace(string(b))) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, b)
		}
	})

	t.Run("Containerfile", func(t *testing.T) {
		// No container engine runs on the test machines: check the
		// properties the image promises instead of building it.
		cf, _ := os.ReadFile(filepath.Join(dest, "Containerfile"))
		var final []string // the last stage's instructions
		for _, line := range strings.Split(string(cf), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "FROM ") {
				final = nil
			}
			if line != "" && !strings.HasPrefix(line, "#") {
				final = append(final, line)
			}
		}
		stage := strings.Join(final, "\n")
		for _, want := range []string{"FROM scratch", "USER 65532:65532", `VOLUME ["/data"]`, `CMD ["serve", "--data", "/data"]`} {
			if !strings.Contains(stage, want) {
				t.Errorf("the final stage lacks %q:\n%s", want, stage)
			}
		}
		if !strings.Contains(string(cf), "CGO_ENABLED=0 go build") {
			t.Error("the binary is not built static (CGO_ENABLED=0)")
		}
		if strings.Contains(stage, "USER root") || strings.Contains(stage, "USER 0") {
			t.Error("the image runs as root")
		}
	})

	t.Run("the unpacked binary initialises and serves", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "enclave")
		if b, err := exec.Command(bin, "init", "--data", dir, "--server-name", "localhost").CombinedOutput(); err != nil {
			t.Fatalf("init: %v\n%s", err, b)
		}
		p := startBinary(t, bin, dir, "sqlite:"+filepath.Join(dir, "enclave.db"))
		Register(t, p.URL, "first", "first-pw", true)
	})
}
