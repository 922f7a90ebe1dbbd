package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"strings"
	"time"

	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/server"
	"enclave/storage"
)

const auditUsage = `usage:
  enclave audit export [--data DIR] [--since T] [--until T] [--format jsonl|cef] > FILE
  enclave audit export [--data DIR] --import ID > FILE      (what one import produced)
  enclave audit verify --data DIR [--anchor FILE]... [--head FILE] [--pubkey KEY] [--allow-unanchored]
  enclave audit verify FILE [--anchor FILE]... [--pubkey KEY] [--allow-unanchored]   (an export, offline)
  enclave audit verify-export EXPORT [MANIFEST] (--key KEY | --data DIR)   (a room export and its signed manifest, offline;
      EXPORT may be the zip of ?format=zip, which holds the manifest)
--anchor: exported heads kept off the host: the audit.anchor_file JSONL, a head file, or a syslog file
with "audit head {...}" lines (default with --data: audit.anchor_file). Without an anchor, verify fails
("truncation and rewrite cannot be ruled out") unless --allow-unanchored. Verification needs only the
audit public key (--pubkey, audit.public_key, or the public half of audit.signing_key).
times T: Unix milliseconds, RFC 3339 or YYYY-MM-DD; KEY: unpadded base64 ed25519 public key, or @FILE holding it`

func cmdAudit(args []string) error {
	if len(args) == 0 {
		return errors.New(auditUsage)
	}
	switch args[0] {
	case "export":
		return cmdAuditExport(args[1:])
	case "verify":
		return cmdAuditVerify(args[1:])
	case "verify-export":
		return cmdAuditVerifyExport(args[1:])
	}
	return errors.New(auditUsage)
}

// parseMixed parses flags that may come before or after positional
// arguments, returning the positionals.
func parseMixed(fl *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fl.Parse(args); err != nil {
			return nil, err
		}
		if fl.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fl.Arg(0))
		args = fl.Args()[1:]
	}
}

// cliContext marks audit entries written by the command line.
func cliContext() context.Context {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	return auditapi.WithActor(context.Background(), auditapi.Actor{IP: "local", UserAgent: "enclave-cli (os user " + who + ")"})
}

// openForAudit loads the config and opens the store; keyID and key are
// the audit signing key when it is readable here (nil otherwise: verifying
// needs only the public key).
func openForAudit(dataDir string) (*config.Config, string, ed25519.PrivateKey, *storage.DB, error) {
	cfg, _, _, err := loadConfig(dataDir)
	if err != nil {
		return nil, "", nil, nil, err
	}
	var keyID string
	var key ed25519.PrivateKey
	if ak, err := config.LoadAuditKey(cfg, false); err == nil {
		keyID, key = ak.KeyID, ak.Key
	}
	db, err := openStore(cfg)
	if err != nil {
		return nil, "", nil, nil, err
	}
	return cfg, keyID, key, db, nil
}

// openStore opens the store of cfg for a command.
func openStore(cfg *config.Config) (*storage.DB, error) {
	return storage.Open(context.Background(), cfg.Database.URL, storage.Options{MaxOpenConns: 2})
}

func cmdAuditExport(args []string) error {
	fl := flag.NewFlagSet("audit export", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	sinceS := fl.String("since", "", "first time to export")
	untilS := fl.String("until", "", "last time to export")
	format := fl.String("format", auditapi.FormatJSONL, "jsonl (verifiable) or cef (for SIEMs)")
	importID := fl.String("import", "", "list what one import produced (JSONL: the import, then each source record and what it became)")
	if pos, err := parseMixed(fl, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return errors.New(auditUsage)
	}
	since, err := auditapi.ParseTime(*sinceS)
	if err != nil {
		return err
	}
	until, err := auditapi.ParseTime(*untilS)
	if err != nil {
		return err
	}
	if *format != auditapi.FormatJSONL && *format != auditapi.FormatCEF {
		return fmt.Errorf("--format must be jsonl or cef")
	}
	if *importID != "" {
		return exportImport(*dataDir, *importID)
	}
	cfg, _, _, err := loadConfig(*dataDir)
	if err != nil {
		return err
	}
	// The export header is signed with the audit key, as checkpoints are.
	ak, err := config.LoadAuditKey(cfg, false)
	if err != nil {
		return err
	}
	keyID, key := ak.KeyID, ak.Key
	db, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := cliContext()
	// Recorded before anything leaves the store.
	if err := auditapi.RecordDetached(ctx, db, auditapi.Entry{Action: auditapi.ActionAuditExport,
		Details: map[string]any{"format": *format, "since": since, "until": until, "via": "cli"}}); err != nil {
		return err
	}
	n, err := auditapi.Export(ctx, db, os.Stdout, auditapi.ExportOptions{SinceTS: since, UntilTS: until, Format: *format,
		ServerName: cfg.ServerName, KeyID: keyID, Key: key, Version: server.Version})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "exported %d entries\n", n)
	if un, err := storage.CountUnsealedAudit(ctx, db); err == nil && un > 0 {
		fmt.Fprintf(os.Stderr, "note: %d newer entries are not sealed into the chain yet (the server seals them) and were not exported\n", un)
	}
	return nil
}

// exportImport lists one import's record (the export file's hash, size,
// operator, times, report) and every source record it turned into a user,
// room, event or media object, as JSONL.
func exportImport(dataDir, id string) error {
	cfg, _, _, err := loadConfig(dataDir)
	if err != nil {
		return err
	}
	db, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := cliContext()
	im, err := storage.GetImport(ctx, db, id)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("no import %s", id)
	} else if err != nil {
		return err
	}
	if err := auditapi.RecordDetached(ctx, db, auditapi.Entry{Action: auditapi.ActionAuditExport, Target: id,
		Details: map[string]any{"import": id, "via": "cli"}}); err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(w)
	var report any
	_ = json.Unmarshal([]byte(im.Report), &report)
	if err := enc.Encode(map[string]any{"import": map[string]any{"import_id": im.ImportID, "platform": im.Platform, "workspace": im.Workspace,
		"file": im.FileName, "file_sha256": im.FileSHA256, "file_size": im.FileSize, "operator": im.Operator,
		"started_ts": im.StartedTS, "finished_ts": im.FinishedTS, "report": report}}); err != nil {
		return err
	}
	n := 0
	err = storage.ImportItems(ctx, db, id, "", func(it storage.ImportItem) error {
		n++
		return enc.Encode(map[string]any{"source": it.SourceKey, "kind": it.Kind, "value": it.Value, "ts": it.CreatedTS})
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "import %s: %d records\n", id, n)
	return nil
}

func readPubKey(s string) (ed25519.PublicKey, error) {
	if strings.HasPrefix(s, "@") {
		b, err := os.ReadFile(s[1:])
		if err != nil {
			return nil, err
		}
		s = string(b)
	}
	pub, err := config.ParsePublicKey(s)
	if err != nil {
		return nil, errors.New("--pubkey must be a 32-byte ed25519 public key in base64")
	}
	return pub, nil
}

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

const unanchoredMsg = "truncation and rewrite cannot be ruled out"

func cmdAuditVerify(args []string) error {
	fl := flag.NewFlagSet("audit verify", flag.ExitOnError)
	dataDir := fl.String("data", "", "verify the store of this data directory")
	pubS := fl.String("pubkey", "", "audit public key (base64, or @FILE); default: audit.public_key, or the public half of the audit key")
	legacyS := fl.String("legacy-pubkey", "", "key that signed checkpoints before the audit key existed (the federation key of earlier releases), accepted until the first audit-key checkpoint")
	headPath := fl.String("head", "", "on-host head file (default: audit.head_export_path with --data); it must not be older than the anchor")
	var anchors repeated
	fl.Var(&anchors, "anchor", "exported heads kept off the host: JSONL anchor, head file or syslog file (repeatable; default with --data: audit.anchor_file)")
	allowUnanchored := fl.Bool("allow-unanchored", false, "accept a verification with no external head (truncation and rewrite cannot be ruled out)")
	pos, err := parseMixed(fl, args)
	if err != nil {
		return err
	}
	var keys auditapi.Keys
	if *pubS != "" {
		if keys.Pub, err = readPubKey(*pubS); err != nil {
			return err
		}
		keys.KeyID = config.AuditKeyID(keys.Pub)
	}
	if *legacyS != "" {
		if keys.Legacy, err = readPubKey(*legacyS); err != nil {
			return err
		}
	}
	if len(pos) == 1 && *dataDir == "" {
		return verifyExportFile(pos[0], keys, anchors, *headPath, *allowUnanchored)
	}
	if len(pos) != 0 || *dataDir == "" {
		return errors.New(auditUsage)
	}
	cfg, _, _, err := loadConfig(*dataDir)
	if err != nil {
		return err
	}
	if keys.Pub == nil {
		if keys.KeyID, keys.Pub, err = config.AuditPublicKey(cfg); err != nil {
			return fmt.Errorf("audit public key: %w (give --pubkey or audit.public_key)", err)
		}
	}
	legacyOK := keys.Legacy != nil
	// The anchors: given, or the configured anchor file.
	var heads []*auditapi.Head
	var anchored []*auditapi.Anchor
	if len(anchors) == 0 {
		if p := cfg.AuditAnchorPath(); p != "" {
			if _, err := os.Stat(p); err == nil {
				anchors = append(anchors, p)
			} else {
				fmt.Fprintf(os.Stderr, "note: no anchor file at %s (audit.anchor_file)\n", p)
			}
		}
	}
	for _, p := range anchors {
		a, err := auditapi.ReadAnchor(p, cfg.ServerName, keys, legacyOK)
		if err != nil {
			return fmt.Errorf("anchor: %w", err)
		}
		if a.Head == nil {
			fmt.Fprintf(os.Stderr, "note: %s holds no head for %s\n", p, cfg.ServerName)
			continue
		}
		anchored = append(anchored, a)
		heads = append(heads, a.Head)
	}
	if *headPath == "" {
		*headPath = cfg.Audit.HeadExportPath
	}
	if *headPath != "" {
		a, err := auditapi.ReadAnchor(*headPath, cfg.ServerName, keys, true)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(os.Stderr, "note: no on-host head file at %s\n", *headPath)
		case err != nil:
			return fmt.Errorf("head file: %w", err)
		case a.Head != nil:
			for _, an := range anchored {
				if a.Head.N < an.Head.N {
					return fmt.Errorf("the on-host head %s (entry %d) is older than the last exported one in %s (entry %d): a head older than the last exported one (rolled back)", *headPath, a.Head.N, an.Source, an.Head.N)
				}
			}
			heads = append(heads, a.Head)
		}
	}
	db, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := cliContext()
	res, err := auditapi.VerifyStoreWith(ctx, db, auditapi.VerifyOptions{Keys: keys, Heads: heads,
		CheckpointInterval: cfg.Audit.CheckpointInterval.Duration, AllowLegacy: legacyOK})
	if err != nil {
		return err
	}
	text := res.String()
	isAnchored := false
	if res.OK() {
		text, isAnchored = anchorText(res, anchored)
	}
	outcome := auditapi.OutcomeSuccess
	if !res.OK() || !isAnchored {
		outcome = auditapi.OutcomeFailure
	}
	if err := auditapi.RecordDetached(ctx, db, auditapi.Entry{Action: auditapi.ActionAuditVerify, Outcome: outcome,
		Details: map[string]any{"verified": res.Verified, "result": text, "anchored": isAnchored, "via": "cli"}}); err != nil {
		fmt.Fprintln(os.Stderr, "warning: could not record this verification:", err)
	}
	return verifyOutcome(res, text, isAnchored, *allowUnanchored)
}

// anchorText describes the anchoring of a passing result.
func anchorText(res *auditapi.Result, anchored []*auditapi.Anchor) (string, bool) {
	for _, a := range anchored {
		if res.AnchorN >= a.Head.N && a.Head.N > 0 {
			note := ""
			if a.KeyFromFile {
				note = " (checked with the public key in the anchor itself; pass --pubkey to pin the audit key)"
			}
			return fmt.Sprintf("%s; anchored: the chain holds the exported head of entry %d from %s%s", res.String(), a.Head.N, a.Source, note), true
		}
	}
	return res.String() + "; UNANCHORED: no external head checked, " + unanchoredMsg, false
}

func verifyOutcome(res *auditapi.Result, text string, anchored, allowUnanchored bool) error {
	if !res.OK() {
		return errors.New(text)
	}
	if !anchored && !allowUnanchored {
		return fmt.Errorf("%s\nunanchored: give the exported head kept off the host (--anchor FILE: audit.anchor_file, a head file, or the syslog export); without it %s (pass --allow-unanchored to accept)", text, unanchoredMsg)
	}
	fmt.Println(text)
	return nil
}

// verifyExportFile verifies an export (offline) against the anchor.
func verifyExportFile(path string, keys auditapi.Keys, anchors []string, headPath string, allowUnanchored bool) error {
	if headPath != "" {
		anchors = append(anchors, headPath)
	}
	var anchored []*auditapi.Anchor
	for _, p := range anchors {
		a, err := auditapi.ReadAnchor(p, "", keys, keys.Legacy != nil)
		if err != nil {
			return fmt.Errorf("anchor: %w", err)
		}
		if a.Head != nil {
			anchored = append(anchored, a)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var head *auditapi.Head
	if len(anchored) > 0 {
		head = anchored[len(anchored)-1].Head
	}
	res, fromFile, err := auditapi.VerifyExport(f, keys.Pub, head)
	if err != nil {
		return err
	}
	if fromFile {
		fmt.Fprintln(os.Stderr, "note: checked against the public key in the file itself; pass --pubkey to pin the audit key")
	}
	text, isAnchored := res.String(), false
	if res.OK() {
		text, isAnchored = anchorText(res, anchored)
	}
	return verifyOutcome(res, text, isAnchored, allowUnanchored)
}

// cmdAuditVerifyExport checks a discovery export against its signed
// manifest with the server's audit public key (pinned: --key, or the
// config of --data; never the key the manifest carries), offline.
func cmdAuditVerifyExport(args []string) error {
	fl := flag.NewFlagSet("audit verify-export", flag.ExitOnError)
	keyS := fl.String("key", "", "the server's audit public key: base64, @FILE or a file holding it (e.g. the audit key's .pub)")
	dataDir := fl.String("data", "", "take the audit public key from this data directory's config (audit.public_key or the audit key)")
	pos, err := parseMixed(fl, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return errors.New(auditUsage)
	}
	var pub ed25519.PublicKey
	switch {
	case *keyS != "":
		s := *keyS
		if _, err := os.Stat(s); err == nil && !strings.HasPrefix(s, "@") {
			s = "@" + s
		}
		if pub, err = readPubKey(s); err != nil {
			return fmt.Errorf("--key: %w", err)
		}
	case *dataDir != "":
		cfg, _, _, err := loadConfig(*dataDir)
		if err != nil {
			return err
		}
		if _, pub, err = config.AuditPublicKey(cfg); err != nil {
			return fmt.Errorf("audit public key: %w (give --key)", err)
		}
	default:
		return errors.New("verify-export needs the server's audit public key: --key KEY or --data DIR (the key inside the manifest proves nothing: a forger puts their own there)")
	}
	body, manifest, err := readExportAndManifest(pos)
	if err != nil {
		return err
	}
	var m auditapi.ExportManifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return fmt.Errorf("manifest: not valid JSON: %w", err)
	}
	if err := auditapi.CheckExport(bytes.NewReader(body), &m, pub); err != nil {
		return fmt.Errorf("export NOT verified: %w", err)
	}
	fmt.Printf("export verified: %d bytes, SHA-256 %s; %s export of %s by %s at %s on %s, signed by audit key %s; audit chain at entry %d (%s)\n",
		m.Size, m.SHA256, m.Kind, m.RoomID, m.ExportedBy, time.UnixMilli(m.ExportedTS).UTC().Format(time.RFC3339), m.ServerName, m.KeyID, m.AuditN, m.AuditChainHash)
	return nil
}

// readExportAndManifest reads EXPORT and MANIFEST, or the export.jsonl
// and manifest.json members of a zip given alone.
func readExportAndManifest(pos []string) (body, manifest []byte, err error) {
	body, err = os.ReadFile(pos[0])
	if err != nil {
		return nil, nil, err
	}
	if len(pos) == 2 {
		if manifest, err = os.ReadFile(pos[1]); err != nil {
			return nil, nil, err
		}
		return body, manifest, nil
	}
	zr, err := zip.NewReader(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		return nil, nil, fmt.Errorf("%s is not a zip export; give the manifest file too: %w", pos[0], err)
	}
	read := func(name string) ([]byte, error) {
		f, err := zr.Open(name)
		if err != nil {
			return nil, fmt.Errorf("%s: no %s in the zip", pos[0], name)
		}
		defer f.Close()
		return io.ReadAll(f)
	}
	if body, err = read("export.jsonl"); err != nil {
		return nil, nil, err
	}
	if manifest, err = read("manifest.json"); err != nil {
		return nil, nil, err
	}
	return body, manifest, nil
}
