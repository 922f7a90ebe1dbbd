package auditapi

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"enclave/storage"
)

// Export formats.
const (
	FormatJSONL = "jsonl" // header line, then one entry per line; verifiable offline
	FormatCEF   = "cef"   // ArcSight Common Event Format, one entry per line, for SIEMs
)

// ExportHeader is the first line of a JSONL export. It is signed by the
// server key, so an export carries what is needed to verify it offline:
// the chain stretch it covers, where it links in, where it ends, and the
// public key (pin it with `audit verify --pubkey` rather than trusting the
// copy in the file).
type ExportHeader struct {
	Format        string `json:"format"` // "enclave-audit-export"
	Version       int    `json:"version"`
	ServerName    string `json:"server_name"`
	KeyID         string `json:"key_id"`
	PublicKey     string `json:"public_key"`
	ExportedTS    int64  `json:"exported_ts"`
	SinceTS       int64  `json:"since_ts,omitempty"`
	UntilTS       int64  `json:"until_ts,omitempty"`
	FirstN        int64  `json:"first_n"`
	LastN         int64  `json:"last_n"`
	Count         int64  `json:"count"`
	FirstPrevHash string `json:"first_prev_hash"`
	LastChainHash string `json:"last_chain_hash"`
	Signature     string `json:"signature"`
}

const exportFormat = "enclave-audit-export"

func (h *ExportHeader) message() []byte {
	parts := []string{"enclave-audit-export-v1", h.ServerName, h.KeyID, strconv.FormatInt(h.ExportedTS, 10),
		strconv.FormatInt(h.SinceTS, 10), strconv.FormatInt(h.UntilTS, 10), strconv.FormatInt(h.FirstN, 10),
		strconv.FormatInt(h.LastN, 10), strconv.FormatInt(h.Count, 10), h.FirstPrevHash, h.LastChainHash}
	return []byte(strings.Join(parts, "\x00"))
}

// ExportedEntry is one line of a JSONL export. Details is the stored JSON
// text, kept as a string so the bytes the entry hash covers survive.
type ExportedEntry struct {
	N         int64  `json:"n"`
	ID        int64  `json:"id"`
	TS        int64  `json:"ts"`
	Kind      string `json:"kind"`
	Actor     Actor  `json:"actor"`
	Action    string `json:"action"`
	Target    string `json:"target,omitempty"`
	RoomID    string `json:"room_id,omitempty"`
	Outcome   string `json:"outcome"`
	Details   string `json:"details"`
	EntryHash string `json:"entry_hash"`
	PrevHash  string `json:"prev_hash"`
	ChainHash string `json:"chain_hash"`
	KeyID     string `json:"key_id,omitempty"`
	Signature string `json:"signature,omitempty"`
}

// ExportRow converts a stored row to its export form.
func ExportRow(r *storage.AuditRow) ExportedEntry {
	return ExportedEntry{N: r.N, ID: r.ID, TS: r.TS, Kind: r.Kind,
		Actor:  Actor{UserID: r.ActorUser, DeviceID: r.ActorDevice, IP: r.ActorIP, UserAgent: r.ActorUA, Server: r.ActorServer},
		Action: r.Action, Target: r.Target, RoomID: r.RoomID, Outcome: r.Outcome, Details: r.Details,
		EntryHash: r.EntryHash, PrevHash: r.PrevHash, ChainHash: r.ChainHash, KeyID: r.KeyID, Signature: r.Signature}
}

func (e *ExportedEntry) row() *storage.AuditRow {
	return &storage.AuditRow{ID: e.ID, N: e.N, TS: e.TS, Kind: e.Kind, ActorUser: e.Actor.UserID, ActorDevice: e.Actor.DeviceID,
		ActorIP: e.Actor.IP, ActorUA: e.Actor.UserAgent, ActorServer: e.Actor.Server, Action: e.Action, Target: e.Target,
		RoomID: e.RoomID, Outcome: e.Outcome, Details: e.Details, EntryHash: e.EntryHash, PrevHash: e.PrevHash,
		ChainHash: e.ChainHash, KeyID: e.KeyID, Signature: e.Signature}
}

// ExportOptions select what to export and how.
type ExportOptions struct {
	SinceTS, UntilTS int64 // ms; 0 = open
	Format           string
	ServerName       string
	KeyID            string
	Key              ed25519.PrivateKey // signs the JSONL header
	Version          string             // product version for CEF
}

// Export writes the sealed entries between SinceTS and UntilTS to w. The
// time range is widened to one unbroken stretch of the chain (entries are
// chained in commit order, so timestamps at its edges may interleave
// slightly). It returns the number of entries written.
func Export(ctx context.Context, db storage.Querier, w io.Writer, o ExportOptions) (int64, error) {
	if o.Format == "" {
		o.Format = FormatJSONL
	}
	if o.Format != FormatJSONL && o.Format != FormatCEF {
		return 0, fmt.Errorf("unknown export format %q (jsonl or cef)", o.Format)
	}
	first, last, ok, err := storage.AuditNRange(ctx, db, o.SinceTS, o.UntilTS)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	if o.Format == FormatJSONL {
		h := ExportHeader{Format: exportFormat, Version: 1, ServerName: o.ServerName, KeyID: o.KeyID,
			ExportedTS: time.Now().UnixMilli(), SinceTS: o.SinceTS, UntilTS: o.UntilTS, FirstPrevHash: GenesisHash}
		if ok {
			fr, err := storage.AuditRowAt(ctx, db, first)
			if err != nil {
				return 0, fmt.Errorf("reading entry %d: %w", first, err)
			}
			lr, err := storage.AuditRowAt(ctx, db, last)
			if err != nil {
				return 0, fmt.Errorf("reading entry %d: %w", last, err)
			}
			h.FirstN, h.LastN, h.Count, h.FirstPrevHash, h.LastChainHash = first, last, last-first+1, fr.PrevHash, lr.ChainHash
		}
		if o.Key != nil {
			h.PublicKey = base64.RawStdEncoding.EncodeToString(o.Key.Public().(ed25519.PublicKey))
			h.Signature = base64.RawStdEncoding.EncodeToString(ed25519.Sign(o.Key, h.message()))
		}
		if err := writeJSONLine(bw, h); err != nil {
			return 0, err
		}
	}
	var count int64
	if ok {
		err = storage.EachAuditRow(ctx, db, first, last, func(r *storage.AuditRow) error {
			count++
			if o.Format == FormatCEF {
				_, err := bw.WriteString(CEFLine(r, o.Version) + "\n")
				return err
			}
			return writeJSONLine(bw, ExportRow(r))
		})
		if err != nil {
			return count, err
		}
	}
	return count, bw.Flush()
}

func writeJSONLine(w *bufio.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	return w.WriteByte('\n')
}

// CEFLine renders a row as an ArcSight CEF:0 record:
// CEF:0|Enclave|Enclave|version|action|action|severity|extension. The
// extension maps the actor's user ID to suser and a target that is a user
// ID to duser (never a room, event or path: those are cs1 roomId and cs5
// target), the client address to src (only when it is an IP address), the
// time to rt (ms), the action to act and the chain index to externalId
// and cn1 (sequence), by which a collector removes duplicates.
func CEFLine(r *storage.AuditRow, version string) string {
	sev := "3"
	switch {
	case r.Outcome == OutcomeFailure || r.Outcome == OutcomeDenied:
		sev = "6"
	case r.Kind == KindCheckpoint:
		sev = "1"
	case strings.HasPrefix(r.Action, "admin.") || strings.HasPrefix(r.Action, "rbac."):
		sev = "5"
	}
	if version == "" {
		version = "dev"
	}
	hdr := []string{"CEF:0", "Enclave", "Enclave", cefHeader(version), cefHeader(r.Action), cefHeader(r.Action), sev}
	ext := []string{"rt=" + strconv.FormatInt(r.TS, 10)}
	add := func(k, v string) {
		if v != "" {
			ext = append(ext, k+"="+cefValue(v))
		}
	}
	labelled := func(k, label, v string) {
		if v != "" {
			add(k+"Label", label)
			add(k, v)
		}
	}
	add("act", r.Action)
	add("suser", r.ActorUser)
	add("shost", r.ActorServer)
	if ip := strings.Trim(r.ActorIP, "[]"); net.ParseIP(ip) != nil {
		add("src", ip)
	}
	add("requestClientApplication", r.ActorUA)
	room, target := r.RoomID, r.Target
	switch {
	case isUserID(target):
		add("duser", target)
		target = ""
	case room == "" && strings.HasPrefix(target, "!"):
		room, target = target, ""
	case target == room:
		target = ""
	}
	add("outcome", r.Outcome)
	if r.N > 0 {
		add("externalId", strconv.FormatInt(r.N, 10))
	}
	labelled("cs1", "roomId", room)
	labelled("cs2", "deviceId", r.ActorDevice)
	labelled("cs3", "details", r.Details)
	labelled("cs4", "chainHash", r.ChainHash)
	labelled("cs5", "target", target)
	labelled("cn1", "sequence", strconv.FormatInt(r.N, 10))
	return strings.Join(hdr, "|") + "|" + strings.Join(ext, " ")
}

// isUserID reports whether s has the shape of a Matrix user ID.
func isUserID(s string) bool {
	return len(s) > 3 && s[0] == '@' && strings.Contains(s[1:], ":")
}

func cefHeader(s string) string {
	return strings.NewReplacer(`\`, `\\`, `|`, `\|`, "\n", " ", "\r", " ").Replace(s)
}

func cefValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `=`, `\=`, "\n", `\n`, "\r", `\r`).Replace(s)
}

// VerifyExport verifies a JSONL export read from rd. pub pins the server
// key; when nil, the key in the export's header is used (and keyFromFile
// says so: such a result only proves internal consistency). head, when
// given, is compared if its entry falls inside the export.
func VerifyExport(rd io.Reader, pub ed25519.PublicKey, head *Head) (res *Result, keyFromFile bool, err error) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, false, err
		}
		return nil, false, errors.New("empty export")
	}
	var h ExportHeader
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Format != exportFormat {
		return nil, false, errors.New("not an Enclave audit export (bad header line)")
	}
	if h.Version != 1 {
		return nil, false, fmt.Errorf("unsupported export version %d", h.Version)
	}
	if pub == nil {
		b, err := base64.RawStdEncoding.DecodeString(h.PublicKey)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, false, errors.New("export header has no usable public key; pass --pubkey")
		}
		pub, keyFromFile = ed25519.PublicKey(b), true
	}
	sig, err := base64.RawStdEncoding.DecodeString(h.Signature)
	if err != nil || !ed25519.Verify(pub, h.message(), sig) {
		return &Result{Break: &Break{N: h.FirstN, Reason: "export header signature does not verify with the server key"}}, keyFromFile, nil
	}
	v := NewVerifier(h.KeyID, pub, h.FirstN == 1)
	if head != nil && head.N >= h.FirstN && head.N <= h.LastN {
		if err := VerifyHead(head, pub); err != nil {
			return &Result{Break: &Break{N: head.N, Reason: "exported head: " + err.Error()}}, keyFromFile, nil
		}
		v.ExpectHead(head)
	}
	line := 1
	for sc.Scan() {
		line++
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var e ExportedEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return &Result{Break: &Break{N: v.next, Reason: fmt.Sprintf("line %d is not a valid entry: %v", line, err)}}, keyFromFile, nil
		}
		if !v.started && e.PrevHash != h.FirstPrevHash {
			return &Result{Break: &Break{N: e.N, Reason: "first entry does not link to where the export header says the export starts"}}, keyFromFile, nil
		}
		if v.Add(e.row()) != nil {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return nil, keyFromFile, err
	}
	res = v.Finish()
	if res.Break == nil {
		if res.Verified != h.Count || (h.Count > 0 && (res.LastN != h.LastN || res.LastHash != h.LastChainHash)) {
			res.Break = &Break{N: res.LastN + 1, Reason: fmt.Sprintf("the export holds %d entries ending at %d, but its header promises %d ending at %d: entries were removed from the end", res.Verified, res.LastN, h.Count, h.LastN)}
		}
		if h.Count > 0 && res.FirstN != h.FirstN && res.Break == nil {
			res.Break = &Break{N: h.FirstN, Reason: "the export does not start where its header says"}
		}
	}
	return res, keyFromFile, nil
}
