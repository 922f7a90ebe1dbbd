package mediaapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"enclave/internal/sealing"
)

// blobStore keeps sealed objects as files named by random blob IDs under
// root/xx/yy/, written to root/tmp first and renamed into place once
// complete and synced, so a crash never leaves a partial blob behind a row.
type blobStore struct {
	root string
}

func newBlobStore(root string) (*blobStore, error) {
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("media.path: %w", err)
	}
	// Leftovers of uploads interrupted by a crash.
	if ents, err := os.ReadDir(filepath.Join(root, "tmp")); err == nil {
		for _, e := range ents {
			_ = os.Remove(filepath.Join(root, "tmp", e.Name()))
		}
	}
	return &blobStore{root: root}, nil
}

func newBlobID() string { return randomHex(16) }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("mediaapi: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b)
}

func (s *blobStore) path(blobID string) string {
	return filepath.Join(s.root, blobID[:2], blobID[2:4], blobID[4:])
}

// errTooLarge is returned by put when the source exceeds its limit.
var errTooLarge = errors.New("media: content exceeds the size limit")

// sealedBlob is an object sealed on disk but not yet recorded in the store.
type sealedBlob struct {
	BlobID  string
	DataKey []byte
	Size    int64
	SHA256  string
}

// put seals src into a new blob under a fresh data key, streaming: memory
// use is a few segments whatever the size. More than limit bytes (limit > 0)
// fails with errTooLarge and leaves nothing behind.
func (s *blobStore) put(src io.Reader, limit int64) (*sealedBlob, error) {
	b := &sealedBlob{BlobID: newBlobID(), DataKey: sealing.NewDataKey()}
	tmp, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "up-*")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	sw, err := sealing.NewWriter(tmp, b.DataKey)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if limit > 0 {
		src = io.LimitReader(src, limit+1)
	}
	buf := make([]byte, sealing.SegmentSize)
	n, err := io.CopyBuffer(hashWriter{sw, h}, src, buf)
	if err != nil {
		return nil, err
	}
	if limit > 0 && n > limit {
		return nil, errTooLarge
	}
	if err := sw.Close(); err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	dst := s.path(b.BlobID)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return nil, err
	}
	sealing.SyncDir(filepath.Dir(dst))
	ok = true
	b.Size, b.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	return b, nil
}

type hashWriter struct {
	w io.Writer
	h hash.Hash
}

func (hw hashWriter) Write(p []byte) (int, error) {
	hw.h.Write(p)
	return hw.w.Write(p)
}

// open returns a reader of the blob's plaintext; close the file when done.
func (s *blobStore) open(blobID string, dataKey []byte) (*sealing.Reader, *os.File, error) {
	f, err := os.Open(s.path(blobID))
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	r, err := sealing.NewReader(f, st.Size(), dataKey)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return r, f, nil
}

func (s *blobStore) remove(blobID string) {
	if blobID != "" {
		_ = os.Remove(s.path(blobID))
	}
}

// meta is what gets sealed beside an object: everything that would tell
// what it is.
type meta struct {
	ContentType string `json:"ct,omitempty"`
	FileName    string `json:"fn,omitempty"`
	SHA256      string `json:"sha,omitempty"`
	Width       int    `json:"w,omitempty"` // thumbnails
	Height      int    `json:"h,omitempty"`
}

func metaAAD(blobID string) []byte { return append([]byte("enclave/media/meta/v1\x00"), blobID...) }

func sealMeta(dataKey []byte, blobID string, m meta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return sealing.Seal(dataKey, b, metaAAD(blobID))
}

func openMeta(dataKey []byte, blobID string, sealed []byte) (meta, error) {
	var m meta
	b, err := sealing.Open(dataKey, sealed, metaAAD(blobID))
	if err != nil {
		return m, err
	}
	err = json.Unmarshal(b, &m)
	return m, err
}
