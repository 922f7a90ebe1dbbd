package siem

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"enclave/storage"
)

// fileSink appends one record per line to path, fsyncs before a batch
// counts as delivered, and rotates by size: before a record would take
// the file past maxBytes, path.keep is deleted, path.i becomes path.i+1
// and path becomes path.1 (so path.1 is the newest rotated file). A record
// is never split across files, so the rotated files, oldest first, then
// path, hold every record in order.
type fileSink struct {
	path     string
	maxBytes int64
	keep     int
	f        *os.File
	size     int64
}

func (s *fileSink) name() string { return "file:" + s.path }

func (s *fileSink) open() error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	s.f, s.size = f, st.Size()
	return nil
}

func (s *fileSink) rotate() error {
	if err := s.f.Close(); err != nil {
		return err
	}
	s.f = nil
	old := fmt.Sprintf("%s.%d", s.path, s.keep)
	if err := os.Remove(old); err != nil && !os.IsNotExist(err) {
		return err
	}
	for i := s.keep - 1; i >= 1; i-- {
		if err := os.Rename(fmt.Sprintf("%s.%d", s.path, i), fmt.Sprintf("%s.%d", s.path, i+1)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := os.Rename(s.path, s.path+".1"); err != nil {
		return err
	}
	return s.open()
}

func (s *fileSink) deliver(_ context.Context, _ []*storage.AuditRow, recs [][]byte) (err error) {
	if s.f == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil && s.f != nil {
			s.f.Close()
			s.f = nil
		}
	}()
	w := bufio.NewWriterSize(s.f, 64<<10)
	for _, rec := range recs {
		n := int64(len(rec) + 1)
		if s.size > 0 && s.size+n > s.maxBytes {
			if err := w.Flush(); err != nil {
				return err
			}
			if err := s.f.Sync(); err != nil {
				return err
			}
			if err := s.rotate(); err != nil {
				return err
			}
			w.Reset(s.f)
		}
		if _, err := w.Write(rec); err != nil {
			return err
		}
		if err := w.WriteByte('\n'); err != nil {
			return err
		}
		s.size += n
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return s.f.Sync()
}

func (s *fileSink) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}
