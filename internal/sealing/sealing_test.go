package sealing

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func seal(t *testing.T, key, pt []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, key)
	if err != nil {
		t.Fatal(err)
	}
	// Odd write sizes exercise the segment boundaries.
	for p := pt; len(p) > 0; {
		n := min(len(p), 1000+len(p)%7777)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != w.Written() || int64(buf.Len()) != SealedSize(int64(len(pt))) {
		t.Fatalf("sealed %d bytes, Written %d, SealedSize %d", buf.Len(), w.Written(), SealedSize(int64(len(pt))))
	}
	return buf.Bytes()
}

func open(key, sealed []byte) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(sealed), int64(len(sealed)), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestStreamRoundTrip(t *testing.T) {
	key := NewDataKey()
	for _, n := range []int{0, 1, SegmentSize - 1, SegmentSize, SegmentSize + 1, 3 * SegmentSize, 3*SegmentSize + 12345} {
		pt := make([]byte, n)
		_, _ = rand.Read(pt)
		sealed := seal(t, key, pt)
		if n >= 16 && bytes.Contains(sealed, pt[:16]) {
			t.Fatalf("n=%d: plaintext visible in sealed stream", n)
		}
		got, err := open(key, sealed)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("n=%d: round trip differs", n)
		}
	}
}

func TestStreamSeek(t *testing.T) {
	key := NewDataKey()
	pt := make([]byte, 5*SegmentSize+777)
	_, _ = rand.Read(pt)
	sealed := seal(t, key, pt)
	r, err := NewReader(bytes.NewReader(sealed), int64(len(sealed)), key)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != int64(len(pt)) {
		t.Fatalf("Size %d, want %d", r.Size(), len(pt))
	}
	for _, off := range []int64{0, 1, SegmentSize - 3, SegmentSize, 2*SegmentSize + 5, int64(len(pt)) - 10} {
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 10)
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("off %d: %v", off, err)
		}
		if !bytes.Equal(got, pt[off:off+10]) {
			t.Fatalf("off %d: wrong bytes", off)
		}
	}
	if end, _ := r.Seek(0, io.SeekEnd); end != int64(len(pt)) {
		t.Fatalf("SeekEnd = %d", end)
	}
}

func TestStreamRejectsTampering(t *testing.T) {
	key := NewDataKey()
	pt := make([]byte, 3*SegmentSize+100)
	_, _ = rand.Read(pt)
	sealed := seal(t, key, pt)
	full := SegmentSize + tagSize

	cases := map[string][]byte{
		"flipped byte":          flip(sealed, headerSize+SegmentSize+10),
		"flipped header":        flip(sealed, 10),
		"truncated at boundary": sealed[:headerSize+3*full],
		"truncated mid":         sealed[:len(sealed)-5],
		"extended":              append(append([]byte(nil), sealed...), make([]byte, full)...),
		"segments swapped":      swap(sealed, headerSize, headerSize+full, full),
	}
	for name, bad := range cases {
		if _, err := open(key, bad); err == nil {
			t.Errorf("%s: opened without error", name)
		} else if !errors.Is(err, ErrOpen) {
			t.Errorf("%s: error %v is not ErrOpen", name, err)
		}
	}
	if _, err := open(NewDataKey(), sealed); !errors.Is(err, ErrOpen) {
		t.Errorf("wrong key: %v", err)
	}
	// Truncating an empty object's only segment away.
	empty := seal(t, key, nil)
	if _, err := open(key, empty[:headerSize]); err == nil {
		t.Error("header-only stream opened")
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}

func swap(b []byte, i, j, n int) []byte {
	c := append([]byte(nil), b...)
	copy(c[i:i+n], b[j:j+n])
	copy(c[j:j+n], b[i:i+n])
	return c
}

func TestWrap(t *testing.T) {
	kek, err := NewKEK(NewDataKey(), "test")
	if err != nil {
		t.Fatal(err)
	}
	dk := NewDataKey()
	w, err := kek.Wrap(dk, "obj1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := kek.Unwrap(w, "obj1")
	if err != nil || !bytes.Equal(got, dk) {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := kek.Unwrap(w, "obj2"); !errors.Is(err, ErrOpen) {
		t.Error("wrapped key opened for another object")
	}
	other, _ := NewKEK(NewDataKey(), "other")
	if _, err := other.Unwrap(w, "obj1"); !errors.Is(err, ErrOpen) {
		t.Error("wrapped key opened under another KEK")
	}
	if other.ID() == kek.ID() || len(kek.ID()) != 16 {
		t.Errorf("key IDs %q %q", kek.ID(), other.ID())
	}
	sealed, _ := Seal(dk, []byte("meta"), []byte("aad"))
	if pt, err := Open(dk, sealed, []byte("aad")); err != nil || string(pt) != "meta" {
		t.Fatalf("Open: %q %v", pt, err)
	}
	if _, err := Open(dk, sealed, []byte("other")); !errors.Is(err, ErrOpen) {
		t.Error("sealed value opened with other AAD")
	}
}

func TestParseKeyAndFiles(t *testing.T) {
	k := NewDataKey()
	for name, in := range map[string][]byte{
		"base64": []byte(base64.StdEncoding.EncodeToString(k) + "\n"),
		"raw64":  []byte(base64.RawURLEncoding.EncodeToString(k)),
		"hex":    []byte("  " + hex.EncodeToString(k) + "\r\n"),
		"raw":    k,
	} {
		got, err := ParseKey(in)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ParseKey([]byte("too short")); err == nil {
		t.Error("short key accepted")
	}
	p := filepath.Join(t.TempDir(), "sub", "kek")
	written, err := WriteKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode().Perm())
	}
	read, err := LoadKeyFile(p)
	if err != nil || !bytes.Equal(read, written) {
		t.Fatalf("LoadKeyFile: %v", err)
	}
	if _, err := WriteKeyFile(p); err == nil {
		t.Error("WriteKeyFile overwrote an existing key")
	}
}
