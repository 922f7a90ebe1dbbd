package auditapi

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Anchoring: a chain that lives only in the database proves nothing to
// whoever can rewrite the database, because the hashes are unkeyed and a
// consistent rewrite recomputes them. Each signed head is therefore also
// appended to an append-only JSONL file (audit.anchor_file) and sent to
// syslog; a head kept where the database's administrators cannot reach it
// pins the chain up to its entry, and the heads after it pin the tail.

// Keys are the public keys heads and checkpoints are checked against: the
// audit key, and optionally a legacy key that signed them before the audit
// key existed (the federation key of earlier releases).
type Keys struct {
	KeyID    string
	Pub      ed25519.PublicKey
	LegacyID string
	Legacy   ed25519.PublicKey
}

// verifyHead checks h against the audit key or, when allowed, the legacy key.
func (k Keys) verifyHead(h *Head, legacyOK bool) error {
	switch {
	case h.KeyID == k.KeyID || k.KeyID == "":
		return VerifyHead(h, k.Pub)
	case legacyOK && k.Legacy != nil && (k.LegacyID == "" || h.KeyID == k.LegacyID):
		return VerifyHead(h, k.Legacy)
	}
	return fmt.Errorf("head signed with key %q, not the audit key %q", h.KeyID, k.KeyID)
}

// Anchor is what one source of exported heads says about the chain's end.
type Anchor struct {
	Source string // the file read
	Head   *Head  // the newest head for this server (highest n); nil if none
	Heads  int    // heads read
	// KeyFromFile: no key was given, so heads were checked against the
	// public key in the first head (internal consistency only).
	KeyFromFile bool
}

// ReadAnchor reads exported heads from path: a head file (one JSON object,
// as head_export_path is written), a JSONL anchor (one head per line, as
// anchor_file is written) or a syslog file with "audit head {...}" lines.
// Heads of other servers are skipped. Every head must verify with keys
// (with keys.Pub nil: with the key in the first head) and none may be older
// than one before it: an append-only record never goes back.
func ReadAnchor(path, serverName string, keys Keys, legacyOK bool) (*Anchor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	a := &Anchor{Source: path}
	var heads []*Head
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' && json.Valid(t) {
		var h Head
		if err := json.Unmarshal(t, &h); err != nil {
			return nil, fmt.Errorf("audit anchor %s: %w", path, err)
		}
		heads = append(heads, &h)
	} else {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		line := 0
		for sc.Scan() {
			line++
			s := sc.Text()
			i := strings.Index(s, "audit head {")
			switch {
			case i >= 0:
				s = s[i+len("audit head "):]
			case strings.HasPrefix(strings.TrimSpace(s), "{"):
				s = strings.TrimSpace(s)
			default:
				continue
			}
			var h Head
			if err := json.Unmarshal([]byte(s), &h); err != nil {
				return nil, fmt.Errorf("audit anchor %s line %d is not a head: %v", path, line, err)
			}
			heads = append(heads, &h)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("audit anchor %s: %w", path, err)
		}
	}
	for _, h := range heads {
		if serverName != "" && h.ServerName != serverName {
			continue
		}
		if keys.Pub == nil {
			pb, err := base64.RawStdEncoding.DecodeString(h.PublicKey)
			if err != nil || len(pb) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("audit anchor %s: a head carries no usable public key; give the audit public key", path)
			}
			keys = Keys{KeyID: h.KeyID, Pub: pb}
			a.KeyFromFile = true
		}
		if err := keys.verifyHead(h, legacyOK); err != nil {
			return nil, fmt.Errorf("audit anchor %s: the head for entry %d: %v (forged, or signed with another key)", path, h.N, err)
		}
		if a.Head != nil && h.N < a.Head.N {
			return nil, fmt.Errorf("audit anchor %s: a head for entry %d follows one for entry %d: a head older than the last exported one (the log was rolled back and the server restarted over it)", path, h.N, a.Head.N)
		}
		a.Head = h
		a.Heads++
	}
	return a, nil
}

// anchorFile appends heads to the JSONL anchor, one line per head, synced
// before the head is considered exported.
type anchorFile struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func openAnchorFile(path string) (*anchorFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &anchorFile{path: path, f: f}, nil
}

func (a *anchorFile) append(h *Head) error {
	b, _ := json.Marshal(h)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return errors.New("anchor file closed")
	}
	if _, err := a.f.Write(append(b, '\n')); err != nil {
		return err
	}
	return a.f.Sync()
}

func (a *anchorFile) close() {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f != nil {
		a.f.Close()
		a.f = nil
	}
}
