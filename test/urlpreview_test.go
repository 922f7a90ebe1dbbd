package test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"enclave/config"
	"enclave/storage"
)

// previewSite is the page server a preview test fetches from, on
// 127.0.0.1, counting the hits on each path.
type previewSite struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func (s *previewSite) count(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[p]
}

func newPreviewSite(t *testing.T, png []byte) *previewSite {
	s := &previewSite{hits: map[string]int{}}
	mux := http.NewServeMux()
	page := `<!doctype html><html prefix="og: http://ogp.me/ns#"><head>
<title>The Rock (1996)</title>
<meta property="og:title" content="The Rock" />
<meta property="og:type" content="video.movie" />
<meta property="og:url" content="http://www.imdb.com/title/tt0117500/" />
<meta property="og:image" content="img/rock.png" />
<meta name="description" content="A film about an island prison" />
<meta property="og:site_name" content="Movies &amp; more" />
</head><body><p>hello</p></body></html>`
	mux.HandleFunc("/page.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, page)
	})
	mux.HandleFunc("/img/rock.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(png)
	})
	mux.HandleFunc("/plain.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<html><head><title> Plain page </title><meta name="description" content="only a description"></head></html>`)
	})
	mux.HandleFunc("/big.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<html><head><title>Big</title><!--`)
		pad := strings.Repeat("x", 64<<10)
		for i := 0; i < 64; i++ { // 4 MiB before the tag below
			if _, err := io.WriteString(w, pad); err != nil {
				return
			}
		}
		io.WriteString(w, `--><meta property="og:description" content="after the limit"></head></html>`)
	})
	mux.HandleFunc("/to-localhost", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(s.URL, "127.0.0.1", "localhost", 1)+"/page.html", http.StatusFound)
	})
	mux.HandleFunc("/to-other-loopback", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(s.URL, "127.0.0.1", "127.0.0.2", 1)+"/page.html", http.StatusFound)
	})
	mux.HandleFunc("/to-page", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/plain.html", http.StatusMovedPermanently)
	})
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.Host+r.URL.Path]++
		s.hits[r.URL.Path]++
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// TestUrlPreview: previews are off by default; on, only allowed hosts are
// fetched, loopback only when listed exactly (at every redirect and
// connection), the page read is bounded, og:image is stored as media that
// downloads with the same bytes, results are cached and every preview is
// audited.
func TestUrlPreview(t *testing.T) {
	png := ccPNG()
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		site := newPreviewSite(t, png)
		preview := func(base, token, target string) rawResp {
			return raw(t, "GET", base+"/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(target)+"&ts=1700000000000", token, nil)
		}

		// Off by default: nothing is fetched.
		off := Start(t, d, Options{})
		u := Register(t, off.URL, "alice", "alice-pw", false)
		preview(off.URL, u.AccessToken, site.URL+"/page.html").wantErr(t, "preview while disabled", 404, "M_UNRECOGNIZED")
		raw(t, "GET", off.URL+"/_matrix/media/v3/preview_url?url="+url.QueryEscape(site.URL+"/page.html"), u.AccessToken, nil).wantErr(t, "legacy preview while disabled", 404, "M_UNRECOGNIZED")
		if n := site.count("/page.html"); n != 0 {
			t.Fatalf("disabled server fetched the page %d times", n)
		}
		off.Stop()

		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.Media.URLPreview.Enabled = true
			// 127.0.0.1 exactly; the glob admits other loopback addresses
			// by name only, which the address check then refuses.
			c.Media.URLPreview.AllowedHosts = []string{"127.0.0.1", "127.0.0.*"}
			c.Media.URLPreview.MaxBytes = 64 << 10
		}})
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		tok := alice.AccessToken

		raw(t, "GET", srv.URL+"/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(site.URL+"/page.html"), "", nil).wantErr(t, "no token", 401, "M_MISSING_TOKEN")
		raw(t, "GET", srv.URL+"/_matrix/client/v1/media/preview_url", tok, nil).wantErr(t, "no url", 400, "M_MISSING_PARAM")
		preview(srv.URL, tok, "ftp://127.0.0.1/file").wantErr(t, "ftp URL", 400, "M_INVALID_PARAM")
		preview(srv.URL, tok, "http://partner.example.org/page.html").wantErr(t, "host not allowed", 403, "M_FORBIDDEN")
		other := strings.Replace(site.URL, "127.0.0.1", "127.0.0.2", 1) + "/page.html"
		preview(srv.URL, tok, other).wantErr(t, "loopback address not listed exactly", 403, "M_FORBIDDEN")
		preview(srv.URL, tok, site.URL+"/to-localhost").wantErr(t, "redirect to a host not allowed", 403, "M_FORBIDDEN")
		preview(srv.URL, tok, site.URL+"/to-other-loopback").wantErr(t, "redirect to a loopback address not listed", 403, "M_FORBIDDEN")
		if n := site.count("/page.html"); n != 0 {
			t.Fatalf("refused previews reached the page %d times", n)
		}

		res := mustOK(t, "preview", preview(srv.URL, tok, site.URL+"/page.html"))
		want := map[string]any{"og:title": "The Rock", "og:type": "video.movie", "og:url": "http://www.imdb.com/title/tt0117500/",
			"og:description": "A film about an island prison", "og:site_name": "Movies & more",
			"og:image:type": "image/png", "og:image:width": float64(64), "og:image:height": float64(48), "matrix:image:size": float64(len(png))}
		for k, v := range want {
			if res.Body[k] != v {
				t.Errorf("%s = %v, want %v (%s)", k, res.Body[k], v, res.Raw)
			}
		}
		mxc, _ := res.Body["og:image"].(string)
		if !strings.HasPrefix(mxc, "mxc://"+srv.Config.ServerName+"/") {
			t.Fatalf("og:image is not local media: %s", res.Raw)
		}
		dl := rawBytes(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(mxc, "mxc://"), tok)
		if dl.status != 200 || !bytes.Equal(dl.body, png) {
			t.Fatalf("og:image download: %d, %d bytes (want %d)", dl.status, len(dl.body), len(png))
		}

		// Cached: asking again (also on the legacy path) fetches nothing.
		for _, p := range []string{"/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url", "/_matrix/media/r0/preview_url"} {
			again := mustOK(t, "cached preview", raw(t, "GET", srv.URL+p+"?url="+url.QueryEscape(site.URL+"/page.html"), tok, nil))
			if again.Body["og:image"] != mxc || again.Body["og:title"] != "The Rock" {
				t.Fatalf("cached preview differs: %s", again.Raw)
			}
		}
		if p, i := site.count("/page.html"), site.count("/img/rock.png"); p != 1 || i != 1 {
			t.Fatalf("page fetched %d times, image %d times; want once each", p, i)
		}

		// Fallbacks to <title> and the description tag, through a redirect.
		plain := mustOK(t, "plain preview", preview(srv.URL, tok, site.URL+"/to-page"))
		if plain.Body["og:title"] != "Plain page" || plain.Body["og:description"] != "only a description" || plain.Body["og:image"] != nil {
			t.Fatalf("plain preview: %s", plain.Raw)
		}

		// Only max_bytes of a page are read: what comes after is not seen.
		big := mustOK(t, "big preview", preview(srv.URL, tok, site.URL+"/big.html"))
		if big.Body["og:title"] != "Big" || big.Body["og:description"] != nil {
			t.Fatalf("big page preview: %s", big.Raw)
		}

		// An image URL is its own og:image.
		img := mustOK(t, "image preview", preview(srv.URL, tok, site.URL+"/img/rock.png"))
		if m, _ := img.Body["og:image"].(string); !strings.HasPrefix(m, "mxc://") || m == mxc || img.Body["og:image:width"] != float64(64) || img.Body["matrix:image:size"] != float64(len(png)) {
			t.Fatalf("image preview: %s", img.Raw)
		}

		// Audited: who asked and which host, with the outcome.
		rows := auditRows(t, srv)
		results := map[string]int{}
		for _, r := range rows {
			if r.Action == "media.preview" {
				if r.ActorUser != alice.UserID {
					t.Fatalf("preview audited for %q", r.ActorUser)
				}
				results[r.Target+" "+fmt.Sprint(details(t, r)["result"])]++
			}
		}
		wantAudit := map[string]int{"127.0.0.1 fetched": 4, "127.0.0.1 cached": 3, "127.0.0.1 refused": 2, "127.0.0.2 refused": 1, "partner.example.org refused": 1}
		for k, n := range wantAudit {
			if results[k] != n {
				t.Errorf("audit %q: %d entries, want %d (all: %v)", k, results[k], n, results)
			}
		}
	})
}

type bytesResp struct {
	status int
	body   []byte
}

func rawBytes(t *testing.T, method, u, token string) bytesResp {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return bytesResp{resp.StatusCode, b}
}
