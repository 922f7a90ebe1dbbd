package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strings"

	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/server"
	"enclave/storage"
)

const auditUsage = `usage:
  enclave audit export [--data DIR] [--since T] [--until T] [--format jsonl|cef] > FILE
  enclave audit verify FILE [--pubkey KEY] [--head HEADFILE]     (offline: needs only the server's public key)
  enclave audit verify --data DIR [--head HEADFILE]              (the store itself, and the exported head)
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

// openForAudit loads the config, the server key and the store.
func openForAudit(dataDir string) (*config.Config, string, ed25519.PrivateKey, *storage.DB, error) {
	cfg, _, _, err := loadConfig(dataDir)
	if err != nil {
		return nil, "", nil, nil, err
	}
	if _, err := os.Stat(cfg.SigningKey); err != nil {
		return nil, "", nil, nil, fmt.Errorf("server signing key %s: %w", cfg.SigningKey, err)
	}
	keyID, key, _, err := config.LoadOrCreateSigningKey(cfg.SigningKey)
	if err != nil {
		return nil, "", nil, nil, err
	}
	db, err := storage.Open(context.Background(), cfg.Database.URL, storage.Options{MaxOpenConns: 2})
	if err != nil {
		return nil, "", nil, nil, err
	}
	return cfg, keyID, key, db, nil
}

func cmdAuditExport(args []string) error {
	fl := flag.NewFlagSet("audit export", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	sinceS := fl.String("since", "", "first time to export")
	untilS := fl.String("until", "", "last time to export")
	format := fl.String("format", auditapi.FormatJSONL, "jsonl (verifiable) or cef (for SIEMs)")
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
	cfg, keyID, key, db, err := openForAudit(*dataDir)
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

func readPubKey(s string) (ed25519.PublicKey, error) {
	if strings.HasPrefix(s, "@") {
		b, err := os.ReadFile(s[1:])
		if err != nil {
			return nil, err
		}
		s = string(b)
	}
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if f := strings.Fields(s); len(f) > 0 {
		s = f[len(f)-1] // accept "ed25519:ID KEY" too
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawURLEncoding.DecodeString(s)
	}
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("--pubkey must be a 32-byte ed25519 public key in base64")
	}
	return ed25519.PublicKey(b), nil
}

func cmdAuditVerify(args []string) error {
	fl := flag.NewFlagSet("audit verify", flag.ExitOnError)
	dataDir := fl.String("data", "", "verify the store of this data directory")
	pubS := fl.String("pubkey", "", "server public key (base64, or @FILE); default: the one in the export header")
	headPath := fl.String("head", "", "exported head file to check truncation against (default: audit.head_export_path with --data)")
	pos, err := parseMixed(fl, args)
	if err != nil {
		return err
	}
	var head *auditapi.Head
	if *headPath != "" {
		if head, err = auditapi.ReadHead(*headPath); err != nil {
			return err
		}
	}
	if len(pos) == 1 && *dataDir == "" {
		var pub ed25519.PublicKey
		if *pubS != "" {
			if pub, err = readPubKey(*pubS); err != nil {
				return err
			}
		}
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		res, fromFile, err := auditapi.VerifyExport(f, pub, head)
		if err != nil {
			return err
		}
		if fromFile {
			fmt.Fprintln(os.Stderr, "note: checked against the public key in the file itself; pass --pubkey to pin the server's key")
		}
		if !res.OK() {
			return errors.New(res.String())
		}
		fmt.Println(res.String())
		return nil
	}
	if len(pos) != 0 || *dataDir == "" {
		return errors.New(auditUsage)
	}
	cfg, keyID, key, db, err := openForAudit(*dataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	if head == nil && cfg.Audit.HeadExportPath != "" {
		head, err = auditapi.ReadHead(cfg.Audit.HeadExportPath)
		if errors.Is(err, fs.ErrNotExist) {
			head = nil
			fmt.Fprintf(os.Stderr, "note: no exported head at %s yet; truncation of the tail cannot be checked\n", cfg.Audit.HeadExportPath)
		} else if err != nil {
			return err
		}
	}
	ctx := cliContext()
	res, err := auditapi.VerifyStore(ctx, db, keyID, key.Public().(ed25519.PublicKey), head)
	if err != nil {
		return err
	}
	outcome := auditapi.OutcomeSuccess
	if !res.OK() {
		outcome = auditapi.OutcomeFailure
	}
	if err := auditapi.RecordDetached(ctx, db, auditapi.Entry{Action: auditapi.ActionAuditVerify, Outcome: outcome,
		Details: map[string]any{"verified": res.Verified, "result": res.String(), "via": "cli"}}); err != nil {
		fmt.Fprintln(os.Stderr, "warning: could not record this verification:", err)
	}
	if !res.OK() {
		return errors.New(res.String())
	}
	fmt.Println(res.String())
	return nil
}
