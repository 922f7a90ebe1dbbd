package sealing

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Streams are sealed as a chunked AEAD so that neither sealing nor opening
// ever holds a whole object in memory, and a download can start (or seek,
// for HTTP ranges) anywhere:
//
//	header  = magic "EMS1" | segment size (uint32 BE) | base nonce (12 bytes)
//	segment = AES-256-GCM(data key, nonce_i, plaintext_i, AAD = header | final)
//
// where nonce_i is the base nonce with the segment counter i XORed into its
// last 8 bytes and final is 1 only for the last segment. Every segment but
// the last carries exactly SegmentSize plaintext bytes. The counter in the
// nonce stops reordering; the final flag stops truncation at a segment
// boundary (the new last segment was sealed as not final) and extension.
// An empty object is one empty final segment.

// SegmentSize is the plaintext size of every segment but the last.
const SegmentSize = 64 << 10

const (
	headerSize = 4 + 4 + 12
	tagSize    = 16
)

var magic = [4]byte{'E', 'M', 'S', '1'}

// Writer seals a stream. Close must be called to seal the final segment.
type Writer struct {
	w      io.Writer
	aead   cipher.AEAD
	header [headerSize]byte
	buf    []byte // plaintext of the segment being filled
	out    []byte
	ctr    uint64
	n      int64 // ciphertext bytes written
	closed bool
	err    error
}

// NewWriter starts a sealed stream on w under key (a data key) and writes
// its header.
func NewWriter(w io.Writer, key []byte) (*Writer, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	sw := &Writer{w: w, aead: aead, buf: make([]byte, 0, SegmentSize), out: make([]byte, 0, SegmentSize+tagSize)}
	copy(sw.header[:4], magic[:])
	binary.BigEndian.PutUint32(sw.header[4:8], SegmentSize)
	if _, err := rand.Read(sw.header[8:]); err != nil {
		return nil, err
	}
	if _, err := w.Write(sw.header[:]); err != nil {
		return nil, err
	}
	sw.n = headerSize
	return sw, nil
}

// Write buffers p, sealing each full segment once more data follows it (a
// full segment may yet turn out to be the final one).
func (sw *Writer) Write(p []byte) (int, error) {
	if sw.err != nil {
		return 0, sw.err
	}
	if sw.closed {
		return 0, errors.New("sealing: write after close")
	}
	written := 0
	for len(p) > 0 {
		if len(sw.buf) == SegmentSize {
			if err := sw.flush(false); err != nil {
				return written, err
			}
		}
		n := copy(sw.buf[len(sw.buf):SegmentSize], p)
		sw.buf = sw.buf[:len(sw.buf)+n]
		p = p[n:]
		written += n
	}
	return written, nil
}

func (sw *Writer) flush(final bool) error {
	nonce := segmentNonce(sw.header[8:], sw.ctr)
	sw.out = sw.aead.Seal(sw.out[:0], nonce[:], sw.buf, segmentAAD(sw.header[:], final))
	if _, err := sw.w.Write(sw.out); err != nil {
		sw.err = err
		return err
	}
	sw.n += int64(len(sw.out))
	sw.ctr++
	sw.buf = sw.buf[:0]
	return nil
}

// Close seals the final segment. It does not close the underlying writer.
func (sw *Writer) Close() error {
	if sw.err != nil {
		return sw.err
	}
	if sw.closed {
		return nil
	}
	sw.closed = true
	return sw.flush(true)
}

// Written is the number of sealed bytes written so far.
func (sw *Writer) Written() int64 { return sw.n }

func segmentNonce(base []byte, ctr uint64) [12]byte {
	var n [12]byte
	copy(n[:], base)
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], ctr)
	for i := range 8 {
		n[4+i] ^= c[i]
	}
	return n
}

func segmentAAD(header []byte, final bool) []byte {
	aad := make([]byte, len(header)+1)
	copy(aad, header)
	if final {
		aad[len(header)] = 1
	}
	return aad
}

// SealedSize is the size of the sealed form of a plaintext of n bytes.
func SealedSize(n int64) int64 {
	segs := (n + SegmentSize - 1) / SegmentSize
	if segs == 0 {
		segs = 1
	}
	return headerSize + n + segs*tagSize
}

// Reader opens a sealed stream with random access. It implements
// io.ReadSeeker (for http.ServeContent) over an io.ReaderAt of known size,
// authenticating each segment before returning any of its bytes.
type Reader struct {
	r        io.ReaderAt
	aead     cipher.AEAD
	header   [headerSize]byte
	segments int64
	size     int64 // plaintext size
	off      int64 // read position in plaintext
	cur      int64 // index of the segment held in plain, -1 if none
	plain    []byte
	ct       []byte
}

// NewReader checks the header of the sealed stream r (sealedSize bytes
// long) and prepares to open it under key.
func NewReader(r io.ReaderAt, sealedSize int64, key []byte) (*Reader, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	sr := &Reader{r: r, aead: aead, cur: -1}
	if sealedSize < headerSize+tagSize {
		return nil, fmt.Errorf("%w: sealed stream too short", ErrOpen)
	}
	if _, err := r.ReadAt(sr.header[:], 0); err != nil {
		return nil, err
	}
	if [4]byte(sr.header[:4]) != magic || binary.BigEndian.Uint32(sr.header[4:8]) != SegmentSize {
		return nil, fmt.Errorf("%w: not a sealed media stream", ErrOpen)
	}
	body := sealedSize - headerSize
	const full = SegmentSize + tagSize
	sr.segments = (body + full - 1) / full
	last := body - (sr.segments-1)*full
	if last < tagSize {
		return nil, fmt.Errorf("%w: sealed stream truncated", ErrOpen)
	}
	sr.size = (sr.segments-1)*SegmentSize + last - tagSize
	sr.ct = make([]byte, full)
	return sr, nil
}

// Size is the plaintext size (trusted once the last segment has opened;
// a truncated or extended stream fails when read to its end).
func (sr *Reader) Size() int64 { return sr.size }

func (sr *Reader) load(i int64) error {
	if sr.cur == i {
		return nil
	}
	const full = SegmentSize + tagSize
	n := int64(full)
	if i == sr.segments-1 {
		n = sr.size - i*SegmentSize + tagSize
	}
	ct := sr.ct[:n]
	if _, err := sr.r.ReadAt(ct, headerSize+i*full); err != nil && !(errors.Is(err, io.EOF) && i == sr.segments-1) {
		return err
	}
	nonce := segmentNonce(sr.header[8:], uint64(i))
	pt, err := sr.aead.Open(sr.plain[:0], nonce[:], ct, segmentAAD(sr.header[:], i == sr.segments-1))
	if err != nil {
		sr.cur = -1
		return fmt.Errorf("%w: segment %d", ErrOpen, i)
	}
	sr.plain, sr.cur = pt, i
	return nil
}

// Read implements io.Reader.
func (sr *Reader) Read(p []byte) (int, error) {
	if sr.off >= sr.size {
		// An empty object still has its (empty, final) segment to check.
		if sr.size == 0 {
			if err := sr.load(0); err != nil {
				return 0, err
			}
		}
		return 0, io.EOF
	}
	i := sr.off / SegmentSize
	if err := sr.load(i); err != nil {
		return 0, err
	}
	n := copy(p, sr.plain[sr.off-i*SegmentSize:])
	sr.off += int64(n)
	return n, nil
}

// Seek implements io.Seeker over the plaintext.
func (sr *Reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = sr.off + offset
	case io.SeekEnd:
		abs = sr.size + offset
	default:
		return 0, errors.New("sealing: bad whence")
	}
	if abs < 0 {
		return 0, errors.New("sealing: negative position")
	}
	sr.off = abs
	return abs, nil
}
