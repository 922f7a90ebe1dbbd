package federationapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"time"

	"enclave/internal/httpapi"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Federated media (spec v1.11): GET /_matrix/federation/v1/media/download
// and /thumbnail serve this server's media to other servers as
// multipart/mixed (an empty JSON metadata part, then the bytes), and
// FetchMedia is the other direction, used by the media repository for
// mxc:// URIs of other servers.
//
// Serving is the media repository's (Local.Media): quarantine, sealing,
// pending uploads and thumbnailing behave exactly as for local clients;
// only the framing differs.

// ErrMediaNotFound is FetchMedia's answer for media the origin lacks.
var ErrMediaNotFound = errors.New("federation: remote media not found")

// mediaErrorLimit bounds an error body relayed from the media handler.
const mediaErrorLimit = 64 << 10

// serveMedia answers a signed media request with the multipart framing.
func (f *media) serveMedia(thumb bool) func(http.ResponseWriter, *http.Request, spec.ServerName) {
	return func(w http.ResponseWriter, r *http.Request, _ spec.ServerName) {
		l := f.local()
		if l == nil || l.Media == nil {
			httpapi.WriteResponse(w, httpapi.NotFound("media not found"))
			return
		}
		mw := &multipartResponse{out: w, header: http.Header{}}
		l.Media.ServeFederation(mw, r, mux.Vars(r)["mediaId"], thumb)
		mw.finish()
	}
}

// multipartResponse wraps a media handler's response in the federation
// framing: a successful answer streams through as the second part; an
// error is relayed as it is.
type multipartResponse struct {
	out     http.ResponseWriter
	header  http.Header
	code    int
	mp      *multipart.Writer
	part    io.Writer
	errBody bytes.Buffer
}

func (m *multipartResponse) Header() http.Header { return m.header }

func (m *multipartResponse) WriteHeader(code int) {
	if m.code != 0 {
		return
	}
	m.code = code
	if code != http.StatusOK {
		return
	}
	m.mp = multipart.NewWriter(m.out)
	m.out.Header().Set("Content-Type", "multipart/mixed; boundary="+m.mp.Boundary())
	m.out.WriteHeader(http.StatusOK)
	meta, err := m.mp.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err == nil {
		_, _ = meta.Write([]byte("{}"))
	}
	ph := textproto.MIMEHeader{}
	for _, k := range []string{"Content-Type", "Content-Disposition"} {
		if v := m.header.Get(k); v != "" {
			ph.Set(k, v)
		}
	}
	if ph.Get("Content-Type") == "" {
		ph.Set("Content-Type", "application/octet-stream")
	}
	m.part, _ = m.mp.CreatePart(ph)
}

func (m *multipartResponse) Write(b []byte) (int, error) {
	if m.code == 0 {
		m.WriteHeader(http.StatusOK)
	}
	if m.code != http.StatusOK {
		if m.errBody.Len()+len(b) <= mediaErrorLimit {
			m.errBody.Write(b)
		}
		return len(b), nil
	}
	if m.part == nil {
		return 0, errors.New("media: multipart framing failed")
	}
	return m.part.Write(b)
}

// finish closes the multipart body, or relays the handler's error.
func (m *multipartResponse) finish() {
	switch {
	case m.code == http.StatusOK:
		_ = m.mp.Close()
	case m.code == 0:
		httpapi.WriteResponse(m.out, httpapi.NotFound("media not found"))
	default:
		body := m.errBody.Bytes()
		if !json.Valid(body) {
			httpapi.WriteResponse(m.out, httpapi.Errf(m.code, "M_UNKNOWN", "media request failed"))
			return
		}
		httpapi.WriteResponse(m.out, httpapi.JSON(m.code, []byte(body)))
	}
}

// FetchMedia downloads media from its origin over federation. The body is
// the media part of the multipart answer (or, when the origin redirects,
// the body at the given https Location); the caller closes it.
func (f *Federation) FetchMedia(ctx context.Context, server, mediaID string) (io.ReadCloser, string, string, error) {
	dest := spec.ServerName(server)
	resp, err := f.fedDo(ctx, dest, http.MethodGet, "/_matrix/federation/v1/media/download/"+url.PathEscape(mediaID), nil)
	if err != nil {
		return nil, "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			ErrCode string `json:"errcode"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, mediaErrorLimit)).Decode(&e)
		resp.Body.Close()
		switch {
		case e.ErrCode == "M_UNRECOGNIZED" || resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented:
			// A server without authenticated media (before spec v1.11).
			return fetchLegacyMedia(ctx, f.transport, f.serverName, dest, mediaID)
		case resp.StatusCode == http.StatusNotFound:
			return nil, "", "", ErrMediaNotFound
		}
		return nil, "", "", &RemoteError{Code: resp.StatusCode}
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		resp.Body.Close()
		return nil, "", "", fmt.Errorf("media from %s is not multipart/mixed", server)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		resp.Body.Close()
		return nil, "", "", fmt.Errorf("media from %s: reading metadata: %w", server, err)
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(meta, mediaErrorLimit)); err != nil {
		resp.Body.Close()
		return nil, "", "", err
	}
	part, err := mr.NextPart()
	if err != nil {
		resp.Body.Close()
		return nil, "", "", fmt.Errorf("media from %s: no content part: %w", server, err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		resp.Body.Close()
		return f.fetchLocation(ctx, loc)
	}
	ct := part.Header.Get("Content-Type")
	return readCloser{part, resp.Body}, ct, fileNameOf(part.Header.Get("Content-Disposition")), nil
}

// fetchLegacyMedia downloads from a server that does not serve the
// federation media endpoints, through its legacy, unauthenticated
// /_matrix/media/v3/download (allow_remote=false: the media is its own, it
// must not fetch it from elsewhere). The spec keeps this fallback for
// servers older than v1.11; the body is the media itself.
func fetchLegacyMedia(ctx context.Context, transport http.RoundTripper, origin, dest spec.ServerName, mediaID string) (io.ReadCloser, string, string, error) {
	path := "/_matrix/media/v3/download/" + url.PathEscape(string(dest)) + "/" + url.PathEscape(mediaID) + "?allow_remote=false"
	fr := fclient.NewFederationRequest(http.MethodGet, origin, dest, path)
	req, err := fr.HTTPRequest()
	if err != nil {
		return nil, "", "", err
	}
	req.Header.Set("User-Agent", "Enclave")
	resp, err := (&http.Client{Transport: transport}).Do(req.WithContext(ctx))
	if err != nil {
		return nil, "", "", err
	}
	if resp.StatusCode == http.StatusNotFound {
		resp.Body.Close()
		return nil, "", "", ErrMediaNotFound
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, "", "", &RemoteError{Code: resp.StatusCode}
	}
	return resp.Body, resp.Header.Get("Content-Type"), fileNameOf(resp.Header.Get("Content-Disposition")), nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

func fileNameOf(disposition string) string {
	if _, params, err := mime.ParseMediaType(disposition); err == nil {
		return params["filename"]
	}
	return ""
}

// fetchLocation follows a media redirect: https only, the federation
// trust roots, a few redirects at most.
func (f *Federation) fetchLocation(ctx context.Context, loc string) (io.ReadCloser, string, string, error) {
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, "", "", fmt.Errorf("media redirect to %q refused: https only", loc)
	}
	client := &http.Client{
		Timeout: 5 * time.Minute,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: f.transport.roots},
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 || req.URL.Scheme != "https" {
				return errors.New("too many or insecure media redirects")
			}
			return nil
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", "", err
	}
	if resp.StatusCode == http.StatusNotFound {
		resp.Body.Close()
		return nil, "", "", ErrMediaNotFound
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, "", "", &RemoteError{Code: resp.StatusCode}
	}
	return resp.Body, resp.Header.Get("Content-Type"), fileNameOf(resp.Header.Get("Content-Disposition")), nil
}
