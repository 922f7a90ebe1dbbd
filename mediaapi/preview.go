package mediaapi

// URL previews (GET /_matrix/client/v1/media/preview_url, and the legacy
// /_matrix/media/v3 and r0 paths). The server fetches a page a user is
// about to link and answers its OpenGraph properties, with og:image copied
// into the repository (sealed like an upload) as an mxc URI.
//
// It is the one place a user makes the server fetch a URL of their
// choosing, so it is off unless media.url_preview.enabled, and then:
//   - only hosts matching media.url_preview.allowed_hosts are fetched, on
//     the first request and on every redirect (at most previewMaxRedirects);
//   - the address each connection is about to use is checked after DNS
//     resolution, in the dialer's Control hook, so neither a DNS answer
//     that changes between check and use (rebinding) nor a redirect can
//     reach loopback, private, link-local (cloud metadata), ULA or CGNAT
//     addresses, unless the operator listed that exact host;
//   - http and https only, no proxy from the environment, one time limit
//     for the whole preview, at most max_bytes of the page read and
//     limits.max_upload_bytes of its image;
//   - results are cached (bounded LRU, previewCacheTTL) and every preview
//     is audited with who asked and the host.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/glob"
	"enclave/internal/httpapi"
	"enclave/internal/lru"
	"enclave/storage"
)

// PreviewOptions are media.url_preview.
type PreviewOptions struct {
	Enabled      bool
	AllowedHosts []string
	MaxBytes     int64         // of a page; 0: 1 MiB
	Timeout      time.Duration // whole preview; 0: 10 s
	RootCAs      *x509.CertPool
}

const (
	previewMaxRedirects = 3
	previewCacheSize    = 1024
	previewCacheTTL     = time.Hour
	previewMaxURLLen    = 2048
	previewMaxValueLen  = 2048
	previewImagePeek    = 256 << 10 // bytes an image's dimensions are read from
)

var (
	errPreviewHost    = errors.New("url preview: host not allowed")
	errPreviewAddress = errors.New("url preview: address not allowed")
	errPreviewScheme  = errors.New("url preview: only http and https")
	errPreviewHops    = errors.New("url preview: too many redirects")
)

type previewEntry struct {
	body    map[string]any
	fetched time.Time
}

// previewer holds the preview client and cache (nil when disabled).
type previewer struct {
	opts   PreviewOptions
	client *http.Client
	cache  *lru.Cache[string, previewEntry]
}

func newPreviewer(o PreviewOptions) *previewer {
	if !o.Enabled {
		return nil
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 20
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	p := &previewer{opts: o, cache: lru.New[string, previewEntry](previewCacheSize)}
	tr := &http.Transport{
		Proxy:                  nil, // never HTTP(S)_PROXY from the environment: the checks below are the policy
		DialContext:            p.dial,
		TLSClientConfig:        &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    o.Timeout,
		ResponseHeaderTimeout:  o.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		DisableKeepAlives:      true,
	}
	p.client = &http.Client{Transport: tr, Timeout: o.Timeout, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) > previewMaxRedirects {
			return errPreviewHops
		}
		return p.checkURL(req.URL)
	}}
	return p
}

func normHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
}

// allowed says whether host matches one of allowed_hosts; explicit whether
// one of them names it exactly (no wildcard), which also admits private
// addresses.
func (p *previewer) allowed(host string) (allowed, explicit bool) {
	host = normHost(host)
	for _, g := range p.opts.AllowedHosts {
		g = normHost(g)
		if g == host && !strings.ContainsAny(g, "*?[") {
			return true, true
		}
		if glob.Match(g, host) {
			allowed = true
		}
	}
	return allowed, false
}

func (p *previewer) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return errPreviewScheme
	}
	if ok, _ := p.allowed(u.Hostname()); !ok || u.Hostname() == "" {
		return errPreviewHost
	}
	return nil
}

// dial connects to addr (host:port as in the URL) and checks, in Control,
// every address the resolver gave before it is used.
func (p *previewer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ok, explicit := p.allowed(host)
	if !ok {
		return nil, errPreviewHost
	}
	d := net.Dialer{Timeout: p.opts.Timeout, Control: func(_, address string, _ syscall.RawConn) error {
		h, _, err := net.SplitHostPort(address)
		if err != nil {
			return errPreviewAddress
		}
		ip, err := netip.ParseAddr(h)
		if err != nil || (!explicit && internalAddr(ip)) {
			return errPreviewAddress
		}
		return nil
	}}
	return d.DialContext(ctx, network, addr)
}

// internalRanges are addresses a preview must not reach unless listed by
// name: besides loopback, RFC 1918, link-local (169.254.169.254 is the
// cloud metadata service) and ULA, which netip knows.
var internalRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64: embeds any IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2002::/16"), // 6to4: likewise
}

func internalAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || !ip.IsValid() {
		return true
	}
	for _, p := range internalRanges {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// GET /_matrix/client/v1/media/preview_url?url=&ts=
func (r *Repo) previewURL(req *http.Request, dev *httpapi.Device) httpapi.Response {
	p := r.preview
	if p == nil {
		return httpapi.Errf(http.StatusNotFound, "M_UNRECOGNIZED", "URL previews are not enabled on this server")
	}
	raw := req.URL.Query().Get("url")
	if raw == "" {
		return httpapi.MissingParam("url is required")
	}
	if len(raw) > previewMaxURLLen {
		return httpapi.InvalidParam("url is longer than %d bytes", previewMaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return httpapi.InvalidParam("url must be an absolute http or https URL")
	}
	u.Fragment = ""
	key := u.String()
	ctx := req.Context()
	audit := func(result string) {
		e := auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionMediaPreview,
			Target: normHost(u.Hostname()), Details: map[string]any{"result": result}}
		if err := r.opts.Audit.Record(context.WithoutCancel(ctx), r.db, e); err != nil {
			logrus.WithError(err).Error("audit: recording a URL preview")
		}
	}
	if err := p.checkURL(u); err != nil {
		audit("refused")
		return httpapi.Forbidden("this server does not preview URLs on %s", u.Hostname())
	}
	unlock := r.fetchMu.lock("preview\x00" + key)
	defer unlock()
	if e, ok := p.cache.Get(key); ok && time.Since(e.fetched) < previewCacheTTL {
		audit("cached")
		return httpapi.JSON(http.StatusOK, e.body)
	}
	fctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	body, err := r.fetchPreview(fctx, dev.UserID, u)
	switch {
	case errors.Is(err, errPreviewHost), errors.Is(err, errPreviewAddress), errors.Is(err, errPreviewScheme), errors.Is(err, errPreviewHops):
		audit("refused")
		return httpapi.Forbidden("this server does not preview that URL (%v)", errors.Unwrap(err))
	case err != nil:
		audit("failed")
		logrus.WithError(err).WithField("host", u.Hostname()).Info("media: URL preview failed")
		return httpapi.Errf(http.StatusBadGateway, "M_UNKNOWN", "could not fetch a preview of that URL")
	}
	p.cache.Put(key, previewEntry{body: body, fetched: time.Now()})
	audit("fetched")
	return httpapi.JSON(http.StatusOK, body)
}

// previewErr keeps the policy error a redirect or dial failed with (the
// http client wraps it) so the handler can answer 403.
func previewErr(err error) error {
	for _, pe := range []error{errPreviewHost, errPreviewAddress, errPreviewScheme, errPreviewHops} {
		if errors.Is(err, pe) {
			return fmt.Errorf("%w", pe)
		}
	}
	return err
}

func (r *Repo) get(ctx context.Context, u *url.URL, accept string) (*http.Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Accept", accept)
	hreq.Header.Set("User-Agent", "Enclave URL preview")
	resp, err := r.preview.client.Do(hreq)
	if err != nil {
		return nil, previewErr(err)
	}
	if resp.StatusCode/100 != 2 {
		resp.Body.Close()
		return nil, fmt.Errorf("%s answered %d", u.Host, resp.StatusCode)
	}
	return resp, nil
}

// fetchPreview fetches u and builds its preview: OpenGraph properties of
// an HTML page (og:title falling back to <title>, og:description to the
// description meta tag), its og:image stored as media; an image is its
// own og:image.
func (r *Repo) fetchPreview(ctx context.Context, user string, u *url.URL) (map[string]any, error) {
	resp, err := r.get(ctx, u, "text/html, application/xhtml+xml, image/*;q=0.9")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	out := map[string]any{}
	switch {
	case strings.HasPrefix(mt, "image/"):
		if err := r.previewImage(ctx, user, resp, out); err != nil {
			return nil, err
		}
		return out, nil
	case mt == "text/html" || mt == "application/xhtml+xml" || mt == "":
	default:
		return out, nil // nothing to show for other types
	}
	props := parseOpenGraph(io.LimitReader(resp.Body, r.preview.opts.MaxBytes), ct)
	for k, v := range props {
		out[k] = v
	}
	if img, _ := props["og:image"].(string); img != "" {
		delete(out, "og:image")
		iu, err := resp.Request.URL.Parse(img) // relative to the page as finally fetched
		if err == nil && (iu.Scheme == "http" || iu.Scheme == "https") {
			if ir, err := r.get(ctx, iu, "image/*"); err == nil {
				err = r.previewImage(ctx, user, ir, out)
				ir.Body.Close()
				if err != nil {
					logrus.WithError(err).WithField("host", iu.Hostname()).Info("media: URL preview image skipped")
				}
			} else {
				logrus.WithError(err).WithField("host", iu.Hostname()).Info("media: URL preview image skipped")
			}
		}
	}
	return out, nil
}

var errPreviewNotImage = errors.New("url preview: not an image")

// previewImage stores an image response as local media and adds its
// og:image (mxc), type, dimensions and matrix:image:size to out.
func (r *Repo) previewImage(ctx context.Context, user string, resp *http.Response, out map[string]any) error {
	ct := normaliseContentType(resp.Header.Get("Content-Type"))
	if !strings.HasPrefix(ct, "image/") {
		return errPreviewNotImage
	}
	if resp.ContentLength > r.opts.MaxUploadBytes {
		return errTooLarge
	}
	peek := make([]byte, previewImagePeek)
	n, err := io.ReadFull(resp.Body, peek)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return err
	}
	peek = peek[:n]
	cfg, _, err := image.DecodeConfig(bytes.NewReader(peek))
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
		return errPreviewNotImage
	}
	blob, err := r.blobs.put(io.MultiReader(bytes.NewReader(peek), resp.Body), r.opts.MaxUploadBytes)
	if err != nil {
		return err
	}
	m := meta{ContentType: ct, SHA256: blob.SHA256}
	if name := path.Base(resp.Request.URL.Path); name != "/" && name != "." && len(name) <= maxFileNameBytes {
		m.FileName = sanitizeFileName(name)
	}
	row, err := r.sealRow(blob, m)
	if err != nil {
		r.blobs.remove(blob.BlobID)
		return err
	}
	now := time.Now().UnixMilli()
	// Owned by the server, not the user: it is not their upload and does
	// not count against their quota.
	row.Origin, row.MediaID, row.CreatedTS, row.UploadedTS = r.opts.ServerName, newMediaID(), now, now
	err = r.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := r.reserve(ctx, tx, "", blob.Size); err != nil {
			return err
		}
		if err := insertMedia(ctx, tx, row); err != nil {
			return err
		}
		return r.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: user}, Action: auditapi.ActionMediaUpload, Target: row.MediaID,
			Details: map[string]any{"size": blob.Size, "sha256": blob.SHA256, "url_preview": normHost(resp.Request.URL.Hostname())}})
	})
	if err != nil {
		r.blobs.remove(blob.BlobID)
		return err
	}
	out["og:image"] = mxc(row.Origin, row.MediaID)
	out["og:image:type"] = ct
	out["og:image:width"] = cfg.Width
	out["og:image:height"] = cfg.Height
	out["matrix:image:size"] = blob.Size
	return nil
}

// parseOpenGraph reads the og:* meta properties of an HTML document (the
// first of each wins), with <title> and the description meta tag as
// fallbacks for og:title and og:description.
func parseOpenGraph(body io.Reader, contentType string) map[string]any {
	if r, err := charset.NewReader(body, contentType); err == nil {
		body = r
	}
	z := html.NewTokenizer(body)
	props := map[string]any{}
	var title, description string
	inTitle := false
	clip := func(s string) string { return truncateUTF8(strings.TrimSpace(s), previewMaxValueLen) }
	for {
		switch z.Next() {
		case html.ErrorToken:
			if _, ok := props["og:title"]; !ok && title != "" {
				props["og:title"] = title
			}
			if _, ok := props["og:description"]; !ok && description != "" {
				props["og:description"] = description
			}
			return props
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = title == ""
			case "meta":
				var prop, nameAttr, content string
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					switch string(k) {
					case "property":
						prop = strings.ToLower(string(v))
					case "name":
						nameAttr = strings.ToLower(string(v))
					case "content":
						content = string(v)
					}
				}
				if prop == "" && strings.HasPrefix(nameAttr, "og:") {
					prop = nameAttr
				}
				if strings.HasPrefix(prop, "og:") && len(prop) <= 64 {
					if _, seen := props[prop]; !seen {
						props[prop] = clip(content)
					}
				}
				if nameAttr == "description" && description == "" {
					description = clip(content)
				}
			}
		case html.TextToken:
			if inTitle {
				title = clip(string(z.Text()))
				inTitle = false
			}
		case html.EndTagToken:
			inTitle = false
		}
	}
}
