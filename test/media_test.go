package test

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/sealing"
	"enclave/internal/server"
	"enclave/mediaapi"
	"enclave/storage"
	"enclave/storage/storagetest"

	_ "golang.org/x/image/webp"
)

// ---- helpers -------------------------------------------------------------

type mediaClient struct {
	t     testing.TB
	base  string
	token string
}

func newMediaClient(t testing.TB, srv *Server, localpart string) *mediaClient {
	t.Helper()
	reg := Register(t, srv.URL, localpart, "password-"+localpart, false)
	return &mediaClient{t: t, base: srv.URL, token: reg.AccessToken}
}

type mediaResult struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r mediaResult) errcode() string {
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.ErrCode
}

func (c *mediaClient) do(method, path, token string, body io.Reader, length int64, hdr map[string]string) mediaResult {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.ContentLength = length
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return mediaResult{resp.StatusCode, resp.Header, b}
}

func (c *mediaClient) get(path string) mediaResult { return c.do("GET", path, c.token, nil, 0, nil) }

// upload posts data and returns the response; on 200 the mxc URI's parts.
func (c *mediaClient) upload(data []byte, contentType, fileName string) (mediaResult, string, string) {
	c.t.Helper()
	p := "/_matrix/media/v3/upload"
	if fileName != "" {
		p += "?filename=" + url.QueryEscape(fileName)
	}
	hdr := map[string]string{}
	if contentType != "" {
		hdr["Content-Type"] = contentType
	}
	res := c.do("POST", p, c.token, bytes.NewReader(data), int64(len(data)), hdr)
	if res.Status != 200 {
		return res, "", ""
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(res.Body, &out); err != nil {
		c.t.Fatal(err)
	}
	rest, ok := strings.CutPrefix(out.ContentURI, "mxc://")
	sn, id, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		c.t.Fatalf("bad content_uri %q", out.ContentURI)
	}
	return res, sn, id
}

func (c *mediaClient) mustUpload(data []byte, contentType, fileName string) (string, string) {
	c.t.Helper()
	res, sn, id := c.upload(data, contentType, fileName)
	if res.Status != 200 {
		c.t.Fatalf("upload: %d %s", res.Status, res.Body)
	}
	return sn, id
}

func mediaMarker(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// mediaScanFiles fails the test if any marker occurs in any file under dir.
func mediaScanFiles(t *testing.T, dir string, markers ...string) int {
	t.Helper()
	files := 0
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range markers {
			if bytes.Contains(b, []byte(m)) {
				t.Errorf("marker %q found in %s", m, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// mediaScanDB fails the test if a marker is in the store: the SQLite files'
// bytes, or every media table row rendered as text on PostgreSQL.
func mediaScanDB(t *testing.T, d storage.Dialect, dbURL string, markers ...string) {
	t.Helper()
	if d == storage.SQLite {
		path := strings.TrimPrefix(dbURL, "sqlite:")
		n := 0
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			b, err := os.ReadFile(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			n += len(b)
			for _, m := range markers {
				if bytes.Contains(b, []byte(m)) {
					t.Errorf("marker %q found in %s", m, p)
				}
			}
		}
		if n == 0 {
			t.Fatal("no SQLite bytes scanned")
		}
		return
	}
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rowsSeen := 0
	for _, table := range []string{"media", "media_thumbnails", "media_kek"} {
		rows, err := db.Query("SELECT t::text FROM " + table + " t")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			rowsSeen++
			for _, m := range markers {
				if strings.Contains(s, m) || strings.Contains(s, hex.EncodeToString([]byte(m))) {
					t.Errorf("marker %q found in %s row %s", m, table, s)
				}
			}
		}
		rows.Close()
	}
	if rowsSeen == 0 {
		t.Fatal("no media rows scanned")
	}
}

// mediaBlobFiles lists the sealed files under the media directory (not tmp/).
func mediaBlobFiles(t *testing.T, mediaDir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	_ = filepath.Walk(mediaDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		sum := sha256.Sum256(b)
		out[p] = hex.EncodeToString(sum[:])
		return nil
	})
	return out
}

// mediaEnclaveBin builds cmd/enclave into the test's temp dir.
func mediaEnclaveBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "enclave")
	out, err := exec.Command("go", "build", "-tags", "goolm", "-o", bin, "enclave/cmd/enclave").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// mediaRunEnclave runs the built binary against a test server's store.
func mediaRunEnclave(bin, dbURL string, extraEnv []string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "ENCLAVE_DATABASE_URL="+dbURL)
	cmd.Env = append(cmd.Env, extraEnv...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mediaRestart(t *testing.T, d storage.Dialect, srv *Server, configure func(c *config.Config)) *Server {
	t.Helper()
	return Start(t, d, Options{DataDir: srv.DataDir, DBURL: srv.DBURL, Configure: configure})
}

// mediaStartErr starts a server expecting it to fail, returning the error.
func mediaStartErr(t *testing.T, d storage.Dialect, dataDir, dbURL string, configure func(c *config.Config)) error {
	t.Helper()
	cfg := TestConfig(t, d, Options{DataDir: dataDir, DBURL: dbURL, Configure: configure})
	s, err := server.New(context.Background(), cfg)
	if err == nil {
		_ = s.Shutdown(context.Background())
		return nil
	}
	return err
}

// ---- sealed at rest, rotation, wrong keys ---------------------------------

func TestMediaSealedAtRest(t *testing.T) {
	bin := mediaEnclaveBin(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		hook := new(logtest.Hook)
		oldHooks := logrus.StandardLogger().ReplaceHooks(make(logrus.LevelHooks))
		logrus.AddHook(hook)
		defer logrus.StandardLogger().ReplaceHooks(oldHooks)
		srv := Start(t, d, Options{})

		// First start with no key configured: a 0600 key file in the data
		// directory and a warning about production keys.
		kekPath := filepath.Join(srv.DataDir, "media.kek")
		st, err := os.Stat(kekPath)
		if err != nil {
			t.Fatalf("default KEK file: %v", err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("KEK file mode %v, want 0600", st.Mode().Perm())
		}
		warned := false
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "separate storage") {
				warned = true
			}
		}
		if !warned {
			t.Error("no warning that production keys belong on separate storage")
		}

		alice := newMediaClient(t, srv, "alice")
		contentMarker := mediaMarker("CONTENTMARKER")
		nameMarker := mediaMarker("NAMEMARKER")
		typeMarker := mediaMarker("typemarker")
		// ~300 KB: several sealed segments, the marker in each.
		var doc bytes.Buffer
		for doc.Len() < 300_000 {
			fmt.Fprintf(&doc, "line %d of the report: %s\n", doc.Len(), contentMarker)
		}
		docBytes := doc.Bytes()
		docName := "Quarterly report " + nameMarker + ".txt"
		sn, docID := alice.mustUpload(docBytes, "text/plain", docName)
		if sn != "localhost" || len(docID) != 24 {
			t.Fatalf("content URI mxc://%s/%s", sn, docID)
		}
		other := []byte("second file " + contentMarker)
		_, otherID := alice.mustUpload(other, "application/x-"+typeMarker, "")

		check := func(srv *Server, label string) {
			t.Helper()
			c := &mediaClient{t: t, base: srv.URL, token: alice.token}
			res := c.get("/_matrix/client/v1/media/download/localhost/" + docID)
			if res.Status != 200 || !bytes.Equal(res.Body, docBytes) {
				t.Fatalf("%s: v1 download: %d, %d bytes (want %d)", label, res.Status, len(res.Body), len(docBytes))
			}
			if ct := res.Header.Get("Content-Type"); ct != "text/plain" {
				t.Errorf("%s: Content-Type %q", label, ct)
			}
			if cd := res.Header.Get("Content-Disposition"); cd != `inline; filename="Quarterly report `+nameMarker+`.txt"` {
				t.Errorf("%s: Content-Disposition %q", label, cd)
			}
			res = c.get("/_matrix/client/v1/media/download/localhost/" + otherID)
			if res.Status != 200 || !bytes.Equal(res.Body, other) {
				t.Fatalf("%s: second download: %d", label, res.Status)
			}
			if ct, cd := res.Header.Get("Content-Type"), res.Header.Get("Content-Disposition"); ct != "application/x-"+typeMarker || cd != "attachment" {
				t.Errorf("%s: unsafe type served as %q / %q", label, ct, cd)
			}
			// Legacy endpoint, unauthenticated: off by default.
			res = c.do("GET", "/_matrix/media/v3/download/localhost/"+docID, "", nil, 0, nil)
			if res.Status != 404 || bytes.Contains(res.Body, docBytes[:100]) {
				t.Fatalf("%s: legacy download: %d", label, res.Status)
			}
		}
		check(srv, "after upload")

		// Ranges stream from the middle of the sealed file.
		res := alice.do("GET", "/_matrix/client/v1/media/download/localhost/"+docID, alice.token, nil, 0, map[string]string{"Range": "bytes=70000-140099"})
		if res.Status != http.StatusPartialContent || !bytes.Equal(res.Body, docBytes[70000:140100]) {
			t.Errorf("range: %d, %d bytes", res.Status, len(res.Body))
		}
		// v1 download needs a token.
		if res := alice.do("GET", "/_matrix/client/v1/media/download/localhost/"+docID, "", nil, 0, nil); res.Status != 401 || res.errcode() != "M_MISSING_TOKEN" {
			t.Errorf("unauthenticated v1 download: %d %s", res.Status, res.errcode())
		}

		markers := []string{contentMarker, nameMarker, typeMarker}
		if n := mediaScanFiles(t, srv.DataDir, markers...); n < 3 {
			t.Fatalf("scanned only %d files", n)
		}
		mediaScanDB(t, d, srv.DBURL, markers...)

		// Rotate the KEK with the real command, server stopped.
		before := mediaBlobFiles(t, filepath.Join(srv.DataDir, "media"))
		srv.Stop()
		newKEK := filepath.Join(t.TempDir(), "agency.kek")
		out, err := mediaRunEnclave(bin, srv.DBURL, nil, "keys", "rotate", "--data", srv.DataDir, "--new-kek-file", newKEK)
		if err != nil {
			t.Fatalf("enclave keys rotate: %v\n%s", err, out)
		}
		if !strings.Contains(out, "re-wrapped 2 media data keys") || !strings.Contains(out, "media.kek_file: "+newKEK) {
			t.Errorf("rotate output:\n%s", out)
		}
		after := mediaBlobFiles(t, filepath.Join(srv.DataDir, "media"))
		if len(after) != len(before) {
			t.Fatalf("blob files %d → %d", len(before), len(after))
		}
		for p, h := range before {
			if after[p] != h {
				t.Errorf("rotation rewrote %s", p)
			}
		}

		// The old key is now the wrong key: a clear error naming it, and
		// nothing changed.
		err = mediaStartErr(t, d, srv.DataDir, srv.DBURL, nil)
		if err == nil || !strings.Contains(err.Error(), kekPath) || !strings.Contains(err.Error(), "key id") {
			t.Fatalf("start with the old key: %v", err)
		}
		t.Logf("wrong key error: %v", err)
		missing := filepath.Join(t.TempDir(), "missing.kek")
		err = mediaStartErr(t, d, srv.DataDir, srv.DBURL, func(c *config.Config) { c.Media.KEKFile = missing })
		if err == nil || !strings.Contains(err.Error(), "media.kek_file ("+missing+")") {
			t.Fatalf("start with a missing key: %v", err)
		}
		if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
			t.Error("a configured but missing key file was created")
		}
		// Once media exists, a missing default key is an error too, never
		// a fresh key.
		if err := os.Rename(kekPath, kekPath+".moved"); err != nil {
			t.Fatal(err)
		}
		err = mediaStartErr(t, d, srv.DataDir, srv.DBURL, nil)
		if err == nil || !strings.Contains(err.Error(), kekPath) || !strings.Contains(err.Error(), "no such key file") || !strings.Contains(err.Error(), "sealed under key id") {
			t.Fatalf("start with the default key file gone: %v", err)
		}
		if _, err := os.Stat(kekPath); !errors.Is(err, os.ErrNotExist) {
			t.Error("a new default key was created although media exists")
		}

		srv2 := mediaRestart(t, d, srv, func(c *config.Config) { c.Media.KEKFile = newKEK })
		check(srv2, "after rotation")
		mediaScanDB(t, d, srv2.DBURL, markers...)
		srv2.Stop()

		// Rotating again in place (no flag: FILE.new replaces the key file).
		out, err = mediaRunEnclave(bin, srv.DBURL, []string{"ENCLAVE_MEDIA_KEK_FILE=" + newKEK}, "keys", "rotate", "--data", srv.DataDir)
		if err != nil || !strings.Contains(out, "needs no change") {
			t.Fatalf("in-place rotate: %v\n%s", err, out)
		}
		srv3 := mediaRestart(t, d, srv, func(c *config.Config) { c.Media.KEKFile = newKEK })
		check(srv3, "after in-place rotation")
	})
}

func TestMediaKEKFromEnv(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		t.Setenv("ENCLAVE_TEST_MEDIA_KEK", hex.EncodeToString(key))
		useEnv := func(c *config.Config) { c.Media.KEKEnv = "ENCLAVE_TEST_MEDIA_KEK" }
		srv := Start(t, d, Options{Configure: useEnv})
		if _, err := os.Stat(filepath.Join(srv.DataDir, "media.kek")); !errors.Is(err, os.ErrNotExist) {
			t.Error("a key file was created although media.kek_env is set")
		}
		alice := newMediaClient(t, srv, "alice")
		_, id := alice.mustUpload([]byte("env-sealed"), "text/plain", "")
		srv.Stop()

		t.Setenv("ENCLAVE_TEST_MEDIA_KEK", "")
		err := mediaStartErr(t, d, srv.DataDir, srv.DBURL, useEnv)
		if err == nil || !strings.Contains(err.Error(), "ENCLAVE_TEST_MEDIA_KEK") || !strings.Contains(err.Error(), "not set") {
			t.Fatalf("start without the env key: %v", err)
		}
		other := make([]byte, 32)
		_, _ = rand.Read(other)
		t.Setenv("ENCLAVE_TEST_MEDIA_KEK", hex.EncodeToString(other))
		err = mediaStartErr(t, d, srv.DataDir, srv.DBURL, useEnv)
		if err == nil || !strings.Contains(err.Error(), "ENCLAVE_TEST_MEDIA_KEK") || !strings.Contains(err.Error(), "is not the key") {
			t.Fatalf("start with the wrong env key: %v", err)
		}
		t.Setenv("ENCLAVE_TEST_MEDIA_KEK", hex.EncodeToString(key))
		srv2 := mediaRestart(t, d, srv, useEnv)
		c := &mediaClient{t: t, base: srv2.URL, token: alice.token}
		if res := c.get("/_matrix/client/v1/media/download/localhost/" + id); res.Status != 200 || string(res.Body) != "env-sealed" {
			t.Fatalf("download after restart: %d %q", res.Status, res.Body)
		}
	})
}

// ---- thumbnails ----------------------------------------------------------

var (
	mediaPhotoOnce sync.Once
	mediaPhotoJPEG []byte
)

// mediaPhoto is a 4000×3000 JPEG with structure in it (gradients, stripes).
func mediaPhoto() []byte {
	mediaPhotoOnce.Do(func() {
		img := image.NewYCbCr(image.Rect(0, 0, 4000, 3000), image.YCbCrSubsampleRatio420)
		for y := range 3000 {
			for x := range 4000 {
				img.Y[y*img.YStride+x] = uint8((x/16 + y/16) * 3)
			}
		}
		for y := range 1500 {
			for x := range 2000 {
				img.Cb[y*img.CStride+x] = uint8(x / 8)
				img.Cr[y*img.CStride+x] = uint8(y / 6)
			}
		}
		var buf bytes.Buffer
		_ = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80})
		mediaPhotoJPEG = buf.Bytes()
	})
	return mediaPhotoJPEG
}

func mediaDecode(t *testing.T, b []byte) (image.Image, string) {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("thumbnail does not decode: %v (%d bytes: %.80q)", err, len(b), b)
	}
	return img, format
}

func mediaCountRows(t *testing.T, srv *Server, table string) int {
	t.Helper()
	var n int
	if err := srv.DB.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMediaThumbnails(t *testing.T) {
	photo := mediaPhoto()
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := newMediaClient(t, srv, "alice")
		_, id := alice.mustUpload(photo, "image/jpeg", "IMG_0001.jpg")

		sizes := []struct {
			w, h   int
			method string
		}{{32, 32, "crop"}, {96, 96, "crop"}, {320, 240, "scale"}, {640, 480, "scale"}, {800, 600, "scale"}}
		for _, s := range sizes {
			q := fmt.Sprintf("?width=%d&height=%d&method=%s", s.w, s.h, s.method)
			start := time.Now()
			res := alice.get("/_matrix/client/v1/media/thumbnail/localhost/" + id + q)
			if res.Status != 200 {
				t.Fatalf("%s: %d %s", q, res.Status, res.Body)
			}
			img, format := mediaDecode(t, res.Body)
			gw, gh := img.Bounds().Dx(), img.Bounds().Dy()
			t.Logf("4000x3000 JPEG → %dx%d %s: %dx%d %s, %d bytes, %v", s.w, s.h, s.method, gw, gh, format, len(res.Body), time.Since(start).Round(time.Millisecond))
			if mediaAbs(gw-s.w) > s.w/10 || mediaAbs(gh-s.h) > s.h/10 {
				t.Errorf("%s: got %dx%d, not within 10%% of %dx%d", q, gw, gh, s.w, s.h)
			}
			if ct := res.Header.Get("Content-Type"); ct != "image/"+format || ct != "image/jpeg" {
				t.Errorf("%s: Content-Type %q for a %s", q, ct, format)
			}
			if cd := res.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "inline") {
				t.Errorf("%s: Content-Disposition %q", q, cd)
			}
			// The cached copy is the same image.
			again := alice.get("/_matrix/client/v1/media/thumbnail/localhost/" + id + q)
			if again.Status != 200 || !bytes.Equal(again.Body, res.Body) {
				t.Errorf("%s: cached thumbnail differs (%d)", q, again.Status)
			}
		}
		if n := mediaCountRows(t, srv, "media_thumbnails"); n != len(sizes) {
			t.Errorf("%d cached thumbnails, want %d", n, len(sizes))
		}
		// One sealed file per thumbnail plus the original.
		if n := len(mediaBlobFiles(t, filepath.Join(srv.DataDir, "media"))); n != len(sizes)+1 {
			t.Errorf("%d blob files, want %d", n, len(sizes)+1)
		}

		// Other inputs: PNG with alpha, GIF, WebP; small images are not upscaled.
		small := image.NewNRGBA(image.Rect(0, 0, 60, 40))
		for y := range 40 {
			for x := range 60 {
				small.Set(x, y, color.NRGBA{uint8(x * 4), uint8(y * 6), 80, uint8(100 + x)})
			}
		}
		var pngBuf, gifBuf bytes.Buffer
		_ = png.Encode(&pngBuf, small)
		_ = gif.Encode(&gifBuf, small, nil)
		for _, in := range []struct {
			name, ct string
			data     []byte
			sw, sh   int
		}{
			{"png", "image/png", pngBuf.Bytes(), 60, 40},
			{"gif", "image/gif", gifBuf.Bytes(), 60, 40},
			{"webp", "image/webp", mediaSolidWebP(500, 400, 200, 30, 60, 255), 500, 400},
		} {
			_, mid := alice.mustUpload(in.data, in.ct, "")
			res := alice.get("/_matrix/client/v1/media/thumbnail/localhost/" + mid + "?width=96&height=96&method=crop")
			if res.Status != 200 {
				t.Fatalf("%s crop: %d %s", in.name, res.Status, res.Body)
			}
			img, format := mediaDecode(t, res.Body)
			wantSide := min(96, in.sw, in.sh)
			if format != "png" || img.Bounds().Dx() != wantSide || img.Bounds().Dy() != wantSide {
				t.Errorf("%s crop: %s %v, want png %dx%d", in.name, format, img.Bounds(), wantSide, wantSide)
			}
			res = alice.get("/_matrix/client/v1/media/thumbnail/localhost/" + mid + "?width=320&height=240")
			img, _ = mediaDecode(t, res.Body)
			if in.sw <= 320 && (img.Bounds().Dx() != in.sw || img.Bounds().Dy() != in.sh) {
				t.Errorf("%s scale: upscaled or resized to %v", in.name, img.Bounds())
			}
			if in.sw > 320 && (img.Bounds().Dx() != 300 || img.Bounds().Dy() != 240) {
				t.Errorf("%s scale: %v, want 300x240", in.name, img.Bounds())
			}
		}

		// Errors: bad parameters, non-images.
		if res := alice.get("/_matrix/client/v1/media/thumbnail/localhost/" + id + "?width=0&height=32"); res.Status != 400 {
			t.Errorf("width=0: %d", res.Status)
		}
		if res := alice.get("/_matrix/client/v1/media/thumbnail/localhost/" + id + "?width=32"); res.Status != 400 || res.errcode() != "M_MISSING_PARAM" {
			t.Errorf("no height: %d %s", res.Status, res.errcode())
		}
		if res := alice.get("/_matrix/client/v1/media/thumbnail/localhost/" + id + "?width=32&height=32&method=zoom"); res.Status != 400 {
			t.Errorf("bad method: %d", res.Status)
		}
		_, textID := alice.mustUpload([]byte("just text"), "text/plain", "")
		if res := alice.get("/_matrix/client/v1/media/thumbnail/localhost/" + textID + "?width=32&height=32"); res.Status != 400 {
			t.Errorf("text thumbnail: %d %s", res.Status, res.Body)
		}
		if res := alice.do("GET", "/_matrix/client/v1/media/thumbnail/localhost/"+id+"?width=32&height=32", "", nil, 0, nil); res.Status != 401 {
			t.Errorf("unauthenticated v1 thumbnail: %d", res.Status)
		}
		// A decompression bomb (a tiny file declaring 256 MP) is refused.
		_, bombID := alice.mustUpload(mediaSolidWebP(16000, 16000, 0, 0, 0, 255), "image/webp", "")
		if res := alice.get("/_matrix/client/v1/media/thumbnail/localhost/" + bombID + "?width=32&height=32"); res.Status != 413 || res.errcode() != "M_TOO_LARGE" {
			t.Errorf("bomb: %d %s", res.Status, res.Body)
		}
	})
}

func mediaAbs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// mediaSolidWebP builds a lossless (VP8L) WebP of one colour: every prefix code
// is a one-symbol "simple" code, so the pixels take no bits at all (Go has
// no WebP encoder; this is enough to exercise the decoder path).
func mediaSolidWebP(w, h int, r, g, b, a byte) []byte {
	var out []byte
	var acc uint64
	var n uint
	put := func(v uint64, bits uint) {
		acc |= v << n
		n += bits
		for n >= 8 {
			out = append(out, byte(acc))
			acc >>= 8
			n -= 8
		}
	}
	put(0x2f, 8)
	put(uint64(w-1), 14)
	put(uint64(h-1), 14)
	put(1, 1) // alpha used
	put(0, 3) // version
	put(0, 1) // no transform
	put(0, 1) // no colour cache
	put(0, 1) // no meta prefix codes
	for _, sym := range []byte{g, r, b, a, 0} {
		put(1, 1) // simple code
		put(0, 1) // one symbol
		put(1, 1) // 8-bit symbol
		put(uint64(sym), 8)
	}
	if n > 0 {
		out = append(out, byte(acc))
	}
	if len(out)%2 == 1 {
		out = append(out, 0)
	}
	var buf bytes.Buffer
	buf.WriteString("RIFF")
	_ = binary.Write(&buf, binary.LittleEndian, uint32(4+8+len(out)))
	buf.WriteString("WEBPVP8L")
	_ = binary.Write(&buf, binary.LittleEndian, uint32(len(out)))
	buf.Write(out)
	return buf.Bytes()
}

// ---- async upload --------------------------------------------------------

func TestMediaAsyncUpload(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := newMediaClient(t, srv, "alice")
		bob := newMediaClient(t, srv, "bob")

		res := alice.do("POST", "/_matrix/media/v1/create", alice.token, strings.NewReader("{}"), 2, map[string]string{"Content-Type": "application/json"})
		if res.Status != 200 {
			t.Fatalf("create: %d %s", res.Status, res.Body)
		}
		var created struct {
			ContentURI      string `json:"content_uri"`
			UnusedExpiresAt int64  `json:"unused_expires_at"`
		}
		_ = json.Unmarshal(res.Body, &created)
		id := strings.TrimPrefix(created.ContentURI, "mxc://localhost/")
		if len(id) != 24 || created.UnusedExpiresAt < time.Now().Add(23*time.Hour).UnixMilli() {
			t.Fatalf("create: %s", res.Body)
		}
		dl := "/_matrix/client/v1/media/download/localhost/" + id
		if res := alice.get(dl + "?timeout_ms=100"); res.Status != 504 || res.errcode() != "M_NOT_YET_UPLOADED" {
			t.Errorf("pending download: %d %s", res.Status, res.Body)
		}
		put := func(c *mediaClient, mediaID string, body []byte) mediaResult {
			return c.do("PUT", "/_matrix/media/v3/upload/localhost/"+mediaID+"?filename=late.bin", c.token, bytes.NewReader(body), int64(len(body)), map[string]string{"Content-Type": "application/octet-stream"})
		}
		if res := put(bob, id, []byte("bob's")); res.Status != 403 || res.errcode() != "M_FORBIDDEN" {
			t.Errorf("upload by another user: %d %s", res.Status, res.Body)
		}
		// A download waiting for the upload gets it when it lands.
		content := []byte("uploaded later " + mediaMarker(""))
		waited := make(chan mediaResult, 1)
		go func() { waited <- alice.get(dl + "?timeout_ms=10000") }()
		time.Sleep(200 * time.Millisecond)
		if res := put(alice, id, content); res.Status != 200 || string(res.Body) != "{}" {
			t.Fatalf("upload to created ID: %d %s", res.Status, res.Body)
		}
		select {
		case res := <-waited:
			if res.Status != 200 || !bytes.Equal(res.Body, content) {
				t.Errorf("waiting download: %d %q", res.Status, res.Body)
			}
			if cd := res.Header.Get("Content-Disposition"); cd != "attachment; filename=late.bin" {
				t.Errorf("Content-Disposition %q", cd)
			}
		case <-time.After(8 * time.Second):
			t.Fatal("waiting download did not finish")
		}
		if res := put(alice, id, []byte("again")); res.Status != 409 || res.errcode() != "M_CANNOT_OVERWRITE_MEDIA" {
			t.Errorf("second upload: %d %s", res.Status, res.Body)
		}
		if res := put(alice, "NoSuchMediaIdAtAll000000", []byte("x")); res.Status != 404 || res.errcode() != "M_NOT_FOUND" {
			t.Errorf("upload to unknown ID: %d %s", res.Status, res.Body)
		}
		if res := put(alice, "../../etc", []byte("x")); res.Status == 200 {
			t.Errorf("traversal media ID accepted")
		}
		// Pending uploads per user are limited.
		limited := false
		for range 12 {
			res := bob.do("POST", "/_matrix/media/v1/create", bob.token, strings.NewReader("{}"), 2, nil)
			if res.Status == 429 && res.errcode() == "M_LIMIT_EXCEEDED" {
				limited = true
				break
			}
			if res.Status != 200 {
				t.Fatalf("create: %d %s", res.Status, res.Body)
			}
		}
		if !limited {
			t.Error("pending uploads are not limited")
		}
	})
}

// ---- limits, quota, headers, auth ---------------------------------------

// mediaChunked hides the length so the client sends Transfer-Encoding: chunked.
type mediaChunked struct{ r io.Reader }

func (c mediaChunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestMediaLimitsAndQuota(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.Limits.MaxUploadBytes = 1000
			c.Media.MaxUserBytes = 1500
			c.Media.MaxTotalBytes = 2500
		}})
		alice := newMediaClient(t, srv, "alice")
		bob := newMediaClient(t, srv, "bob")
		carol := newMediaClient(t, srv, "carol")
		for _, p := range []string{"/_matrix/client/v1/media/config", "/_matrix/media/v3/config"} {
			res := alice.get(p)
			var cfg map[string]int64
			_ = json.Unmarshal(res.Body, &cfg)
			if res.Status != 200 || cfg["m.upload.size"] != 1000 {
				t.Errorf("%s: %d %s", p, res.Status, res.Body)
			}
		}
		if res := alice.do("GET", "/_matrix/client/v1/media/config", "", nil, 0, nil); res.Status != 401 {
			t.Errorf("config without token: %d", res.Status)
		}
		if res, _, _ := alice.upload(make([]byte, 1001), "application/octet-stream", ""); res.Status != 413 || res.errcode() != "M_TOO_LARGE" {
			t.Errorf("1001 bytes: %d %s", res.Status, res.Body)
		}
		// Without a Content-Length the limit is enforced while streaming.
		res := alice.do("POST", "/_matrix/media/v3/upload", alice.token, mediaChunked{bytes.NewReader(make([]byte, 50_000))}, -1, nil)
		if res.Status != 413 || res.errcode() != "M_TOO_LARGE" {
			t.Errorf("chunked 50 kB: %d %s", res.Status, res.Body)
		}
		res = alice.do("POST", "/_matrix/media/v3/upload", alice.token, mediaChunked{bytes.NewReader(make([]byte, 900))}, -1, nil)
		if res.Status != 200 {
			t.Errorf("chunked 900 B: %d %s", res.Status, res.Body)
		}
		if res := alice.do("POST", "/_matrix/media/v3/upload", "", bytes.NewReader([]byte("x")), 1, nil); res.Status != 401 {
			t.Errorf("upload without token: %d", res.Status)
		}
		// Quota: alice has 900 of 1500.
		if res, _, _ := alice.upload(make([]byte, 700), "", ""); res.Status != 403 || res.errcode() != "M_FORBIDDEN" {
			t.Errorf("over user quota: %d %s", res.Status, res.Body)
		}
		alice.mustUpload(make([]byte, 600), "", "")
		bob.mustUpload(make([]byte, 900), "", "") // total 2400 of 2500
		if res, _, _ := carol.upload(make([]byte, 200), "", ""); res.Status != 403 {
			t.Errorf("over total quota: %d %s", res.Status, res.Body)
		}
		carol.mustUpload(make([]byte, 100), "", "")
		// Refused uploads leave nothing behind.
		if n := len(mediaBlobFiles(t, filepath.Join(srv.DataDir, "media"))); n != 4 {
			t.Errorf("%d files under media/, want the 4 accepted uploads", n)
		}
		if used, _ := srv.Media.UsedBytes(context.Background(), ""); used != 2500 {
			t.Errorf("UsedBytes = %d", used)
		}
	})
}

func TestMediaHeadersAndIDs(t *testing.T) {
	srv := Start(t, storage.SQLite, Options{})
	alice := newMediaClient(t, srv, "alice")
	_, htmlID := alice.mustUpload([]byte("<script>alert(1)</script>"), "text/html", "page.html")
	_, binID := alice.mustUpload([]byte{0, 1, 2}, "", "rapport été.pdf")
	for _, tt := range []struct{ path, ct, cd string }{
		{"/_matrix/client/v1/media/download/localhost/" + htmlID, "text/html", "attachment; filename=page.html"},
		{"/_matrix/client/v1/media/download/localhost/" + htmlID + "/other.txt", "text/html", "attachment; filename=other.txt"},
		{"/_matrix/client/v1/media/download/localhost/" + binID, "application/octet-stream", "attachment; filename*=utf-8''rapport%20%C3%A9t%C3%A9.pdf"},
	} {
		res := alice.get(tt.path)
		if res.Status != 200 || res.Header.Get("Content-Type") != tt.ct || res.Header.Get("Content-Disposition") != tt.cd {
			t.Errorf("%s: %d %q %q", tt.path, res.Status, res.Header.Get("Content-Type"), res.Header.Get("Content-Disposition"))
		}
		if !strings.HasPrefix(res.Header.Get("Content-Security-Policy"), "sandbox;") || res.Header.Get("X-Content-Type-Options") != "nosniff" ||
			res.Header.Get("Cross-Origin-Resource-Policy") != "cross-origin" {
			t.Errorf("%s: security headers missing: %v", tt.path, res.Header)
		}
	}
	for _, p := range []string{
		"/_matrix/client/v1/media/download/localhost/NoSuchMedia",
		"/_matrix/client/v1/media/download/localhost/bad.id",
		"/_matrix/client/v1/media/download/localhost/%2e%2e%2fmedia.kek",
		"/_matrix/client/v1/media/download/other.example/" + htmlID,
	} {
		if res := alice.get(p); res.Status != 404 {
			t.Errorf("%s: %d %s", p, res.Status, res.Body)
		}
	}
}

// ---- delete, quarantine, audit -------------------------------------------

func TestMediaDeleteAndQuarantine(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		var mu sync.Mutex
		var events []string
		srv.Media.SetAuditHook(func(_ context.Context, user, mediaID string, size int64, sum, action string) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, fmt.Sprintf("%s %s %s %d %s", action, user, mediaID, size, sum))
		})
		alice := newMediaClient(t, srv, "alice")
		img := image.NewRGBA(image.Rect(0, 0, 200, 100))
		var buf bytes.Buffer
		_ = png.Encode(&buf, img)
		data := buf.Bytes()
		sum := sha256.Sum256(data)
		_, id := alice.mustUpload(data, "image/png", "pic.png")
		dl := "/_matrix/client/v1/media/download/localhost/" + id
		th := "/_matrix/client/v1/media/thumbnail/localhost/" + id + "?width=32&height=32&method=crop"
		if res := alice.get(th); res.Status != 200 {
			t.Fatalf("thumbnail: %d", res.Status)
		}
		alice.get(dl)
		mediaDir := filepath.Join(srv.DataDir, "media")
		if n := len(mediaBlobFiles(t, mediaDir)); n != 2 {
			t.Fatalf("%d blob files, want 2", n)
		}
		ctx := context.Background()
		repo := srv.Media

		if err := repo.QuarantineMedia(ctx, "localhost", id); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{dl, th, "/_matrix/media/v3/download/localhost/" + id} {
			if res := alice.get(p); res.Status != 404 || res.errcode() != "M_NOT_FOUND" {
				t.Errorf("quarantined %s: %d", p, res.Status)
			}
		}
		if n := len(mediaBlobFiles(t, mediaDir)); n != 1 {
			t.Errorf("%d blob files after quarantine, want 1 (thumbnails dropped)", n)
		}
		if err := repo.UnquarantineMedia(ctx, "localhost", id); err != nil {
			t.Fatal(err)
		}
		if res := alice.get(dl); res.Status != 200 || !bytes.Equal(res.Body, data) {
			t.Errorf("after unquarantine: %d", res.Status)
		}
		alice.get(th)
		list, err := repo.ListUserMedia(ctx, "@alice:localhost")
		if err != nil || len(list) != 1 || list[0].MediaID != id || list[0].Size != int64(len(data)) {
			t.Errorf("ListUserMedia: %+v %v", list, err)
		}

		if err := repo.DeleteMedia(ctx, "localhost", id); err != nil {
			t.Fatal(err)
		}
		if res := alice.get(dl); res.Status != 404 {
			t.Errorf("deleted download: %d", res.Status)
		}
		if res := alice.get(th); res.Status != 404 {
			t.Errorf("deleted thumbnail: %d", res.Status)
		}
		if n := len(mediaBlobFiles(t, mediaDir)); n != 0 {
			t.Errorf("%d blob files left after delete", n)
		}
		if n := mediaCountRows(t, srv, "media_thumbnails"); n != 0 {
			t.Errorf("%d thumbnail rows left", n)
		}
		if err := repo.DeleteMedia(ctx, "localhost", id); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("second delete: %v", err)
		}
		if err := repo.QuarantineMedia(ctx, "localhost", "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("quarantine unknown: %v", err)
		}

		mu.Lock()
		defer mu.Unlock()
		got := strings.Join(events, "\n")
		for _, w := range []string{"thumbnail @alice:localhost " + id, "download @alice:localhost " + id} {
			if !strings.Contains(got, w) {
				t.Errorf("audit events lack %q:\n%s", w, got)
			}
		}
		// Changes are recorded in their own transactions, not through the hook.
		rows := auditRows(t, srv)
		if up := findAudit(t, rows, auditapi.ActionMediaUpload, target(id)); up.ActorUser != "@alice:localhost" ||
			details(t, up)["sha256"] != hex.EncodeToString(sum[:]) || details(t, up)["size"] != float64(len(data)) {
			t.Errorf("upload entry %+v", up)
		}
		for _, op := range []string{"quarantine", "unquarantine", "delete"} {
			findAudit(t, rows, auditapi.ActionMediaAdmin, func(r *storage.AuditRow) bool { return r.Target == id && details(t, r)["op"] == op })
		}
	})
}

// ---- remote media --------------------------------------------------------

type mediaFakeFetcher struct {
	calls atomic.Int32
	data  map[string][]byte
}

func (f *mediaFakeFetcher) FetchMedia(_ context.Context, serverName, mediaID string) (*mediaapi.RemoteMedia, error) {
	f.calls.Add(1)
	b, ok := f.data[serverName+"/"+mediaID]
	if !ok {
		return nil, mediaapi.ErrRemoteNotFound
	}
	return &mediaapi.RemoteMedia{Body: io.NopCloser(bytes.NewReader(b)), ContentType: "image/png", FileName: "remote.png"}, nil
}

func TestMediaRemote(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{Configure: func(c *config.Config) { c.Media.LegacyUnauthenticated = true }})
		alice := newMediaClient(t, srv, "alice")
		p := "/_matrix/client/v1/media/download/remote.example/RemoteMedia1"
		if res := alice.get(p); res.Status != 404 || res.errcode() != "M_NOT_FOUND" {
			t.Fatalf("remote media without federation: %d %s", res.Status, res.Body)
		}
		var buf bytes.Buffer
		_ = png.Encode(&buf, image.NewGray(image.Rect(0, 0, 300, 200)))
		f := &mediaFakeFetcher{data: map[string][]byte{"remote.example/RemoteMedia1": buf.Bytes()}}
		srv.Media.SetRemoteFetcher(f)
		for range 2 {
			res := alice.get(p)
			if res.Status != 200 || !bytes.Equal(res.Body, buf.Bytes()) || res.Header.Get("Content-Disposition") != "inline; filename=remote.png" {
				t.Fatalf("remote download: %d %v", res.Status, res.Header)
			}
		}
		res := alice.get("/_matrix/client/v1/media/thumbnail/remote.example/RemoteMedia1?width=96&height=96&method=crop")
		if img, _ := mediaDecode(t, res.Body); img.Bounds().Dx() != 96 {
			t.Errorf("remote thumbnail %v", img.Bounds())
		}
		if n := f.calls.Load(); n != 1 {
			t.Errorf("fetched %d times, want once (cached)", n)
		}
		if res := alice.get("/_matrix/client/v1/media/download/remote.example/Missing"); res.Status != 404 {
			t.Errorf("missing remote: %d", res.Status)
		}
		if res := alice.do("GET", "/_matrix/media/v3/download/remote.example/Other?allow_remote=false", "", nil, 0, nil); res.Status != 404 {
			t.Errorf("allow_remote=false: %d", res.Status)
		}
	})
}

// ---- memory during a 200 MB upload ---------------------------------------

// mediaGenReader yields n pseudo-random bytes without holding them, hashing
// what it hands out.
type mediaGenReader struct {
	left int64
	rng  *mrand.ChaCha8
	sum  interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
}

func (g *mediaGenReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	_, _ = g.rng.Read(p)
	g.sum.Write(p)
	g.left -= int64(len(p))
	return len(p), nil
}

// mediaRSS is this process's resident set size in bytes (/proc), for the
// memory-bound tests and benchmarks.
func mediaRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// mediaMemSampler records peak RSS and Go heap while it runs.
type mediaMemSampler struct {
	stop              chan struct{}
	done              chan struct{}
	peakRSS, peakHeap int64
}

func mediaStartSampler() *mediaMemSampler {
	s := &mediaMemSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			s.peakHeap = max(s.peakHeap, int64(ms.HeapInuse))
			s.peakRSS = max(s.peakRSS, mediaRSS())
			select {
			case <-s.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return s
}

func (s *mediaMemSampler) finish() { close(s.stop); <-s.done }

func TestMediaLargeUploadMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatal("RSS is read from /proc")
	}
	const size = 200 << 20
	// One store suffices: the body never touches the database.
	srv := Start(t, storage.SQLite, Options{Configure: func(c *config.Config) { c.Limits.MaxUploadBytes = 250 << 20 }})
	alice := newMediaClient(t, srv, "alice")

	runtime.GC()
	debug.FreeOSMemory()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	baseRSS := mediaRSS()
	gen := &mediaGenReader{left: size, rng: mrand.NewChaCha8([32]byte{1}), sum: sha256.New()}
	s := mediaStartSampler()
	start := time.Now()
	req, _ := http.NewRequest("POST", srv.URL+"/_matrix/media/v3/upload?filename=big.bin", gen)
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+alice.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s.finish()
	upTime := time.Since(start)
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	want := gen.sum.Sum(nil)
	upRSS, upHeap := s.peakRSS-baseRSS, s.peakHeap-int64(base.HeapInuse)
	t.Logf("200 MiB upload in %v: peak RSS growth %.1f MiB (base %.1f MiB), peak Go heap growth %.1f MiB",
		upTime.Round(time.Millisecond), float64(upRSS)/(1<<20), float64(baseRSS)/(1<<20), float64(upHeap)/(1<<20))

	var up struct {
		ContentURI string `json:"content_uri"`
	}
	_ = json.Unmarshal(body, &up)
	// Stream the download back, hashing it without keeping it.
	runtime.GC()
	debug.FreeOSMemory()
	baseRSS2 := mediaRSS()
	s = mediaStartSampler()
	start = time.Now()
	req, _ = http.NewRequest("GET", srv.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(up.ContentURI, "mxc://"), nil)
	req.Header.Set("Authorization", "Bearer "+alice.token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	s.finish()
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), want) {
		t.Fatalf("download: %d bytes, err %v, hash match %v", n, err, bytes.Equal(h.Sum(nil), want))
	}
	downRSS := s.peakRSS - baseRSS2
	t.Logf("200 MiB download in %v: peak RSS growth %.1f MiB", time.Since(start).Round(time.Millisecond), float64(downRSS)/(1<<20))

	// Bounded: far below the file size (a buffered upload would add ≥ 200 MiB).
	if upRSS > 64<<20 || upHeap > 64<<20 || downRSS > 64<<20 {
		t.Errorf("memory grew with the file: upload RSS +%d MiB, heap +%d MiB, download RSS +%d MiB", upRSS>>20, upHeap>>20, downRSS>>20)
	}
	// One sealed file of about the plaintext's size (no stray copies).
	var sealedSize int64
	files := 0
	_ = filepath.Walk(filepath.Join(srv.DataDir, "media"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files++
			sealedSize = info.Size()
		}
		return err
	})
	if files != 1 || sealedSize < size || sealedSize > size+size/1000 {
		t.Errorf("%d blob files, sealed size %d for %d bytes", files, sealedSize, size)
	}
}

// A media item keeps a bounded number of cached thumbnail sizes; once full,
// new sizes are answered from the nearest cached one, not a fresh decode.
func TestMediaThumbnailCacheBound(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := newMediaClient(t, srv, "alice")
		var buf bytes.Buffer
		_ = png.Encode(&buf, image.NewGray(image.Rect(0, 0, 200, 200)))
		_, id := alice.mustUpload(buf.Bytes(), "image/png", "")
		th := func(w, h int, method string) image.Rectangle {
			res := alice.get(fmt.Sprintf("/_matrix/client/v1/media/thumbnail/localhost/%s?width=%d&height=%d&method=%s", id, w, h, method))
			if res.Status != 200 {
				t.Fatalf("thumbnail %dx%d: %d %s", w, h, res.Status, res.Body)
			}
			img, _ := mediaDecode(t, res.Body)
			return img.Bounds()
		}
		for i := range 16 {
			if b := th(30+i, 30+i, "crop"); b.Dx() != 30+i {
				t.Fatalf("crop %d: %v", 30+i, b)
			}
		}
		if b := th(20, 20, "crop"); b.Dx() != 30 || b.Dy() != 30 {
			t.Errorf("20x20 with a full cache: %v, want the cached 30x30", b)
		}
		if b := th(100, 100, "crop"); b.Dx() != 45 {
			t.Errorf("100x100 with a full cache: %v, want the largest cached crop (45)", b)
		}
		if n := mediaCountRows(t, srv, "media_thumbnails"); n != 16 {
			t.Errorf("%d cached thumbnails, want 16", n)
		}
	})
}

// A rotation while a server runs (which the docs say not to do) cannot
// leave anything wrapped under the retired key: the running server's
// uploads fail until it restarts with the new key.
func TestMediaRotateWhileRunning(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := newMediaClient(t, srv, "alice")
		_, id := alice.mustUpload([]byte("before rotation"), "text/plain", "")
		ctx := context.Background()
		oldKEK, err := mediaapi.KeySourceOf("", "", srv.DataDir).Load()
		if err != nil {
			t.Fatal(err)
		}
		newPath := filepath.Join(t.TempDir(), "new.kek")
		if _, err := sealing.WriteKeyFile(newPath); err != nil {
			t.Fatal(err)
		}
		newKEK, err := (mediaapi.KeySource{File: newPath}).Load()
		if err != nil {
			t.Fatal(err)
		}
		if n, err := mediaapi.RotateKEK(ctx, srv.DB, oldKEK, newKEK); err != nil || n != 1 {
			t.Fatalf("RotateKEK: %d %v", n, err)
		}
		if _, err := mediaapi.RotateKEK(ctx, srv.DB, oldKEK, newKEK); !errors.Is(err, mediaapi.ErrAlreadyRotated) {
			t.Errorf("repeated rotation: %v", err)
		}
		if res, _, _ := alice.upload([]byte("during"), "text/plain", ""); res.Status != 503 {
			t.Errorf("upload on a server with the retired key: %d %s", res.Status, res.Body)
		}
		srv.Stop()
		srv2 := mediaRestart(t, d, srv, func(c *config.Config) { c.Media.KEKFile = newPath })
		c := &mediaClient{t: t, base: srv2.URL, token: alice.token}
		if res := c.get("/_matrix/client/v1/media/download/localhost/" + id); res.Status != 200 || string(res.Body) != "before rotation" {
			t.Errorf("download with the new key: %d %q", res.Status, res.Body)
		}
		if n := mediaCountRows(t, srv2, "media"); n != 1 {
			t.Errorf("%d media rows, want 1", n)
		}
		c.mustUpload([]byte("after"), "text/plain", "")
	})
}

// Issue 11 §2: the legacy /_matrix/media/v3 and r0 download and thumbnail
// paths take no token. By default they answer 404 M_NOT_FOUND (token or
// not) while the authenticated paths serve; with
// media.legacy_unauthenticated they serve again and each read is audited
// with the requester's IP and user agent. Authenticated reads name the
// user and the IP.
func TestMediaLegacyUnauthenticated(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		var img bytes.Buffer
		_ = png.Encode(&img, image.NewGray(image.Rect(0, 0, 64, 64)))
		legacy := func(id string) []string {
			var out []string
			for _, v := range []string{"v3", "r0"} {
				p := "/_matrix/media/" + v
				out = append(out, p+"/download/localhost/"+id, p+"/download/localhost/"+id+"/name.png",
					p+"/thumbnail/localhost/"+id+"?width=32&height=32&method=scale")
			}
			return out
		}
		ua := map[string]string{"User-Agent": "legacy-client/1"}

		srv := Start(t, d, Options{})
		alice := newMediaClient(t, srv, "alice")
		_, id := alice.mustUpload(img.Bytes(), "image/png", "private.png")
		for _, p := range legacy(id) {
			for _, tok := range []string{"", alice.token} {
				if res := alice.do("GET", p, tok, nil, 0, ua); res.Status != 404 || res.errcode() != "M_NOT_FOUND" {
					t.Errorf("default config, %s (token %v): %d %s, want 404 M_NOT_FOUND", p, tok != "", res.Status, res.Body)
				}
			}
		}
		for _, p := range []string{"/download/localhost/" + id, "/thumbnail/localhost/" + id + "?width=32&height=32"} {
			if res := alice.get("/_matrix/client/v1/media" + p); res.Status != 200 {
				t.Errorf("authenticated %s: %d %s", p, res.Status, res.Body)
			}
			if res := alice.do("GET", "/_matrix/client/v1/media"+p, "", nil, 0, nil); res.Status != 401 {
				t.Errorf("authenticated path without a token %s: %d", p, res.Status)
			}
		}
		rows := auditRows(t, srv)
		for _, e := range auditMatching(rows, auditapi.ActionMediaDownload, id) {
			if e.ActorUser != "@alice:localhost" || e.ActorIP != "127.0.0.1" {
				t.Errorf("authenticated read audited as user %q IP %q", e.ActorUser, e.ActorIP)
			}
		}
		if n := len(auditMatching(rows, auditapi.ActionMediaDownload, id)); n != 2 {
			t.Errorf("%d media read entries, want 2 (the refused legacy reads serve nothing)", n)
		}
		srv.Stop()

		srv = Start(t, d, Options{Configure: func(c *config.Config) { c.Media.LegacyUnauthenticated = true }})
		alice = newMediaClient(t, srv, "alice")
		_, id = alice.mustUpload(img.Bytes(), "image/png", "private.png")
		for _, p := range legacy(id) {
			if res := alice.do("GET", p, "", nil, 0, ua); res.Status != 200 {
				t.Errorf("legacy_unauthenticated, %s: %d %s", p, res.Status, res.Body)
			}
		}
		reads := auditMatching(auditRows(t, srv), auditapi.ActionMediaDownload, id)
		if len(reads) != len(legacy(id)) {
			t.Errorf("%d media read entries, want %d", len(reads), len(legacy(id)))
		}
		for _, e := range reads {
			if e.ActorUser != "" || e.ActorIP != "127.0.0.1" || e.ActorUA != "legacy-client/1" {
				t.Errorf("anonymous read audited as user %q IP %q UA %q", e.ActorUser, e.ActorIP, e.ActorUA)
			}
		}
	})
}

// mediaBlankPNG writes a w×h fully transparent RGBA PNG by hand (the rows
// compress about 1000:1, so a 7000×7000 image is some 190 KB), without the
// test holding the decoded image.
func mediaBlankPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(data)))
		out.Write(n[:])
		c := crc32.NewIEEE()
		c.Write([]byte(typ))
		c.Write(data)
		out.WriteString(typ)
		out.Write(data)
		binary.BigEndian.PutUint32(n[:], c.Sum32())
		out.Write(n[:])
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk("IHDR", ihdr)
	var idat bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&idat, zlib.BestCompression)
	row := make([]byte, 1+4*w) // filter 0, then transparent black
	for range h {
		if _, err := zw.Write(row); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	chunk("IDAT", idat.Bytes())
	chunk("IEND", nil)
	return out.Bytes()
}

// mediaProcStatus reads a /proc/PID/status field in bytes.
func mediaProcStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// Issue 11 §4, thumbnail memory: a 190 KB PNG declaring 7000×7000 and 40
// concurrent thumbnail sizes of it grew the server from 58 MB to 1.55 GB.
// Now it is over media.max_image_pixels (413 M_TOO_LARGE from its header,
// never decoded), and 40 concurrent sizes of an admissible 4000×4000 PNG
// share one decode: the real binary's peak RSS (VmHWM) grows by less than
// 200 MB over both attacks, and the memory is handed back afterwards.
func TestMediaThumbnailMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatal("RSS is read from /proc")
	}
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dir := t.TempDir()
		dbURL := storagetest.NewURL(t, d)
		if d == storage.SQLite {
			dbURL = "sqlite:" + filepath.Join(dir, "enclave.db")
		}
		p := startBinary(t, bin, dir, dbURL)
		pid := p.cmd.Process.Pid
		alice := &mediaClient{t: t, base: p.URL, token: Register(t, p.URL, "alice", "password-alice", false).AccessToken}
		bomb := mediaBlankPNG(t, 7000, 7000)
		t.Logf("7000x7000 PNG: %d KB", len(bomb)>>10)
		_, bombID := alice.mustUpload(bomb, "image/png", "")
		_, bigID := alice.mustUpload(mediaBlankPNG(t, 4000, 4000), "image/png", "")

		base := mediaProcStatus(t, pid, "VmHWM")
		attack := func(id string) map[int]int {
			var mu sync.Mutex
			statuses := map[int]int{}
			var wg sync.WaitGroup
			for i := range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					method := "scale"
					if i%2 == 1 {
						method = "crop"
					}
					res := alice.get(fmt.Sprintf("/_matrix/client/v1/media/thumbnail/localhost/%s?width=%d&height=%d&method=%s", id, 32+i*20, 32+i*15, method))
					mu.Lock()
					statuses[res.Status]++
					mu.Unlock()
					if res.Status == 413 && res.errcode() != "M_TOO_LARGE" {
						t.Errorf("413 with %s", res.Body)
					}
				}()
			}
			wg.Wait()
			return statuses
		}
		if st := attack(bombID); st[413] != 40 {
			t.Errorf("7000x7000: statuses %v, want 40 × 413 M_TOO_LARGE", st)
		}
		afterBomb := mediaProcStatus(t, pid, "VmHWM")
		start := time.Now()
		if st := attack(bigID); st[200] != 40 {
			t.Errorf("4000x4000: statuses %v, want 40 × 200", st)
		}
		peak := mediaProcStatus(t, pid, "VmHWM")
		t.Logf("VmHWM %d MiB at start, %d MiB after the 7000x7000 attack, %d MiB after 40 sizes of 4000x4000 (%v)",
			base>>20, afterBomb>>20, peak>>20, time.Since(start).Round(time.Millisecond))
		if peak-base >= 200<<20 {
			t.Errorf("peak RSS grew by %d MiB, want < 200", (peak-base)>>20)
		}
		// The decoded image is released and its memory returned.
		deadline := time.Now().Add(10 * time.Second)
		for rss := mediaProcStatus(t, pid, "VmRSS"); rss-base > 64<<20; rss = mediaProcStatus(t, pid, "VmRSS") {
			if time.Now().After(deadline) {
				t.Errorf("RSS still %d MiB above the start's peak 10 s after the attack", (rss-base)>>20)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
