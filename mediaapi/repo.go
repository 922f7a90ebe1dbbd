package mediaapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/internal/sealing"
	"enclave/storage"
)

// Options configure the repository.
type Options struct {
	ServerName string
	// Audit is the process's audit log (set by the assembly; nil writes
	// entries detached).
	Audit *auditapi.Log
	Path  string    // media.path
	Key   KeySource // where the KEK comes from
	// MaxUploadBytes bounds one upload (limits.max_upload_bytes) and a
	// cached remote file.
	MaxUploadBytes int64
	MaxUserBytes   int64 // media.max_user_bytes; 0: no per-user quota
	MaxTotalBytes  int64 // media.max_total_bytes; 0: no total limit
	// LegacyUnauthenticated keeps the token-less legacy download and
	// thumbnail paths (media.legacy_unauthenticated); off, they answer 404.
	LegacyUnauthenticated bool
	// MaxImagePixels bounds the images decoded for thumbnails
	// (media.max_image_pixels: decompression bombs); 0 means
	// DefaultMaxImagePixels. Decodes in flight together may take 4 bytes
	// per allowed pixel.
	MaxImagePixels int64
	// Preview is media.url_preview (off unless Enabled).
	Preview PreviewOptions
}

// DefaultMaxImagePixels is 32 megapixels (a 7000×4500 photo; at 4 bytes a
// pixel, 128 MB decoded).
const DefaultMaxImagePixels = 32_000_000

// OptionsFromConfig maps the server config to Options.
func OptionsFromConfig(cfg *config.Config) Options {
	return Options{
		ServerName:     cfg.ServerName,
		Path:           cfg.Media.Path,
		Key:            KeySourceOf(cfg.Media.KEKFile, cfg.Media.KEKEnv, cfg.DataDir),
		MaxUploadBytes: cfg.Limits.MaxUploadBytes,
		MaxUserBytes:   cfg.Media.MaxUserBytes,
		MaxTotalBytes:  cfg.Media.MaxTotalBytes,

		LegacyUnauthenticated: cfg.Media.LegacyUnauthenticated,
		MaxImagePixels:        cfg.Media.MaxImagePixels,
		Preview: PreviewOptions{Enabled: cfg.Media.URLPreview.Enabled, AllowedHosts: cfg.Media.URLPreview.AllowedHosts,
			MaxBytes: cfg.Media.URLPreview.MaxBytes, Timeout: cfg.Media.URLPreview.Timeout.Duration},
	}
}

// AuditFunc is told of every download, thumbnail and remote fetch: who
// (empty for unauthenticated calls, whose IP and user agent ctx carries,
// see auditapi.WithActor), which media, its size and SHA-256
// (hex, of the plaintext; empty where unknown). Actions: "download",
// "thumbnail", "remote_fetch". Uploads, deletions and (un)quarantines are
// recorded in the transaction that makes them (upload.go, admin.go).
type AuditFunc func(ctx context.Context, user, mediaID string, size int64, sha256, action string)

// RemoteMedia is a file fetched from another server.
type RemoteMedia struct {
	Body        io.ReadCloser
	ContentType string
	FileName    string
}

// ErrRemoteNotFound is what a RemoteFetcher returns for media the origin
// does not have.
var ErrRemoteNotFound = errors.New("media: remote media not found")

// RemoteFetcher fetches media from its origin server over federation
// (GET /_matrix/federation/v1/media/download/{mediaId}). Until one is set,
// remote media answers 404 M_NOT_FOUND. Fetched media is cached sealed,
// like local uploads, under the origin's server name.
type RemoteFetcher interface {
	FetchMedia(ctx context.Context, serverName, mediaID string) (*RemoteMedia, error)
}

// Repo is the media repository.
type Repo struct {
	opts  Options
	db    *storage.DB
	kek   *sealing.KEK
	blobs *blobStore
	api   httpapi.Routes

	thumbSem chan struct{}
	sources  sources // shared thumbnail decodes, within their memory budget
	waiters  waiters
	audit    atomic.Pointer[AuditFunc]
	remote   atomic.Pointer[remoteHolder]
	fetchMu  keyedMutex
	bytes    *prometheus.CounterVec // see newMediaBytes
	preview  *previewer             // nil: URL previews off
}

type remoteHolder struct{ f RemoteFetcher }

// New opens the repository: it checks the KEK against the store (creating
// the default key on the very first start) and prepares media.path.
func New(ctx context.Context, opts Options, db *storage.DB) (*Repo, error) {
	if opts.MaxUserBytes < 0 || opts.MaxTotalBytes < 0 {
		return nil, errors.New("media.max_user_bytes and media.max_total_bytes must not be negative")
	}
	if opts.Path == "" {
		return nil, errors.New("media.path must be set")
	}
	if opts.MaxImagePixels <= 0 {
		opts.MaxImagePixels = DefaultMaxImagePixels
	}
	kek, err := setupKEK(ctx, db, opts.Key)
	if err != nil {
		return nil, err
	}
	blobs, err := newBlobStore(opts.Path)
	if err != nil {
		return nil, err
	}
	return &Repo{opts: opts, db: db, kek: kek, blobs: blobs, thumbSem: make(chan struct{}, 2),
		sources: sources{budget: newDecodeBudget(4 * opts.MaxImagePixels)}, waiters: waiters{m: map[string]chan struct{}{}}, bytes: newMediaBytes(),
		preview: newPreviewer(opts.Preview)}, nil
}

// KEKID is the fingerprint of the key in use.
func (r *Repo) KEKID() string { return r.kek.ID() }

// SetAuditHook installs (or, with nil, removes) the audit callback.
func (r *Repo) SetAuditHook(fn AuditFunc) {
	if fn == nil {
		r.audit.Store(nil)
		return
	}
	r.audit.Store(&fn)
}

// SetRemoteFetcher installs the federation fetcher for remote media.
func (r *Repo) SetRemoteFetcher(f RemoteFetcher) {
	if f == nil {
		r.remote.Store(nil)
		return
	}
	r.remote.Store(&remoteHolder{f})
}

func (r *Repo) emit(ctx context.Context, user, mediaID string, size int64, sha, action string) {
	if fn := r.audit.Load(); fn != nil {
		(*fn)(ctx, user, mediaID, size, sha, action)
	}
}

// Register mounts the media endpoints on the client API's listener.
// Uploads need upload_media; the rest any user (the legacy download and
// thumbnail paths take no token).
func (r *Repo) Register(api httpapi.Routes) error {
	r.api = api
	const v1 = "/_matrix/client/v1/media"
	upload := perm.Needs(perm.UploadMedia)
	return errors.Join(
		api.HandleAuthed(http.MethodGet, v1+"/config", "media", perm.AnyUser, r.config),
		api.HandleRaw(http.MethodGet, v1+"/download/{serverName}/{mediaId}", "media_download", perm.AnyUser, r.download(true)),
		api.HandleRaw(http.MethodGet, v1+"/download/{serverName}/{mediaId}/{fileName}", "media_download", perm.AnyUser, r.download(true)),
		api.HandleRaw(http.MethodGet, v1+"/thumbnail/{serverName}/{mediaId}", "media_thumbnail", perm.AnyUser, r.thumbnail(true)),
		api.HandleAuthed(http.MethodGet, v1+"/preview_url", "media_preview", perm.AnyUser, r.previewURL),
		api.HandleAuthed(http.MethodGet, "/_matrix/media/v3/preview_url", "media_preview", perm.AnyUser, r.previewURL),
		api.HandleAuthed(http.MethodGet, "/_matrix/media/r0/preview_url", "media_preview", perm.AnyUser, r.previewURL),

		api.HandleAuthed(http.MethodPost, "/_matrix/media/v1/create", "media_upload", upload, r.create),

		api.HandleAuthed(http.MethodGet, "/_matrix/media/v3/config", "media", perm.AnyUser, r.config),
		api.HandleRaw(http.MethodPost, "/_matrix/media/v3/upload", "media_upload", upload, r.upload),
		api.HandleRaw(http.MethodGet, "/_matrix/media/v3/download/{serverName}/{mediaId}", "media_download", perm.Public, r.download(false)),
		api.HandleRaw(http.MethodGet, "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}", "media_download", perm.Public, r.download(false)),
		api.HandleRaw(http.MethodGet, "/_matrix/media/v3/thumbnail/{serverName}/{mediaId}", "media_thumbnail", perm.Public, r.thumbnail(false)),

		api.HandleAuthed(http.MethodGet, "/_matrix/media/r0/config", "media", perm.AnyUser, r.config),
		api.HandleRaw(http.MethodPost, "/_matrix/media/r0/upload", "media_upload", upload, r.upload),
		api.HandleRaw(http.MethodGet, "/_matrix/media/r0/download/{serverName}/{mediaId}", "media_download", perm.Public, r.download(false)),
		api.HandleRaw(http.MethodGet, "/_matrix/media/r0/download/{serverName}/{mediaId}/{fileName}", "media_download", perm.Public, r.download(false)),
		api.HandleRaw(http.MethodGet, "/_matrix/media/r0/thumbnail/{serverName}/{mediaId}", "media_thumbnail", perm.Public, r.thumbnail(false)),

		api.HandleRaw(http.MethodPut, "/_matrix/media/v3/upload/{serverName}/{mediaId}", "media_upload", upload, r.uploadTo),
	)
}

func (r *Repo) config(_ *http.Request, _ *httpapi.Device) httpapi.Response {
	return httpapi.JSON(http.StatusOK, map[string]any{"m.upload.size": r.opts.MaxUploadBytes})
}

// Media IDs: the spec allows only [A-Za-z0-9_-] (no traversal tricks).
var mediaIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// serverNamePattern is the spec's server name grammar, loosely: a DNS
// name, IPv4 or [IPv6] literal, optional port.
var serverNamePattern = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(:[0-9]{1,5})?$`)

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newMediaID returns 24 random alphanumerics (~143 bits).
func newMediaID() string {
	out := make([]byte, 24)
	buf := make([]byte, 64)
	for i := 0; i < len(out); {
		if _, err := rand.Read(buf); err != nil {
			panic("mediaapi: no randomness: " + err.Error())
		}
		for _, b := range buf {
			// Rejection sampling keeps the distribution uniform.
			if int(b) < 256-256%len(idAlphabet) && i < len(out) {
				out[i] = idAlphabet[int(b)%len(idAlphabet)]
				i++
			}
		}
	}
	return string(out)
}

// waiters lets downloads of a pending upload wait for its content.
type waiters struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (w *waiters) wait(key string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch, ok := w.m[key]
	if !ok {
		ch = make(chan struct{})
		w.m[key] = ch
	}
	return ch
}

func (w *waiters) wake(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.m[key]; ok {
		close(ch)
		delete(w.m, key)
	}
}

// keyedMutex serialises work per key (one remote fetch per media ID).
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

func mediaKey(origin, mediaID string) string { return origin + "/" + mediaID }

func mxc(origin, mediaID string) string { return fmt.Sprintf("mxc://%s/%s", origin, mediaID) }
