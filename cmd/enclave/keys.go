package main

// enclave keys: media key-encryption key (KEK) management.
//
//	enclave keys show [--data DIR]
//	enclave keys status [--data DIR]
//	enclave keys rotate [--data DIR] [--new-kek-file F | --new-kek-env NAME]
//
// rotate re-wraps every media data key under a new KEK in one database
// transaction; the sealed blobs are not touched. Stop the server first (a
// running server refuses to write media once the key changed, and cannot
// read media until restarted with the new key). The new key comes from:
//
//   - --new-kek-file F: F's key if the file exists (32 random bytes as
//     base64 or hex text, e.g. `head -c 32 /dev/urandom | base64 > F`,
//     or exported from the agency's key store); otherwise a new random key
//     is written to F (mode 0600). Afterwards set media.kek_file to F (or
//     ENCLAVE_MEDIA_KEK_FILE=F) before restarting.
//   - --new-kek-env NAME: the key in environment variable NAME (base64 or
//     hex). Afterwards set media.kek_env to NAME and provide it to the server.
//   - neither, when the current key is a file (media.kek_file or the default
//     DATA/media.kek): a new random key is written to FILE.new, media is
//     re-wrapped, then FILE.new replaces FILE; the config needs no change.
//     If interrupted, run the command again: it finishes the same rotation.
//
// Database backups taken before a rotation hold data keys wrapped by the
// old key: keep the old key as long as such backups are kept.

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/sealing"
	"enclave/mediaapi"
	"enclave/storage"
)

func cmdKeys(args []string) error {
	if len(args) < 1 {
		return errors.New("usage: enclave keys show|status|rotate [--data DIR] [--new-kek-file F | --new-kek-env NAME]")
	}
	switch args[0] {
	case "show":
		return cmdKeysShow(args[1:])
	case "rotate":
		return cmdKeysRotate(args[1:])
	case "status":
		return cmdKeysStatus(args[1:])
	}
	return fmt.Errorf("keys: unknown subcommand %q (want show, status or rotate)", args[0])
}

// cmdKeysShow prints this server's federation signing key as partners see
// it at /_matrix/key/v2/server, and a SHA-256 fingerprint of it short enough
// to read out over the phone when the agencies compare keys out of band.
// It reads only the key file: it needs no store and writes nothing.
func cmdKeysShow(args []string) error {
	fl := flag.NewFlagSet("keys show", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	if err := noArgs(fl, args); err != nil {
		return err
	}
	cfg, _, _, err := loadConfig(*dataDir)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(cfg.SigningKey)
	if err != nil {
		return fmt.Errorf("signing key: %w (the server creates it on first start, or run enclave generate-keys)", err)
	}
	keyID, priv, err := config.ParseSigningKey(data)
	if err != nil {
		return fmt.Errorf("signing key %s: %w", cfg.SigningKey, err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	fmt.Printf("server name: %s\n", cfg.ServerName)
	fmt.Printf("key id:      %s\n", keyID)
	fmt.Printf("public key:  %s\n", base64.RawStdEncoding.EncodeToString(pub))
	fmt.Printf("fingerprint: %s\n", keyFingerprint(pub))
	return nil
}

// keyFingerprint is the SHA-256 of an ed25519 public key, as colon-separated
// hex pairs: what `enclave keys show` prints and what docs/FEDERATION.md has
// partners compare with the key their server fetched.
func keyFingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func cmdKeysStatus(args []string) error {
	fl := flag.NewFlagSet("keys status", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	_ = fl.Parse(args)
	cfg, _, _, err := loadConfig(*dataDir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	db, err := storage.Open(ctx, cfg.Database.URL, storage.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer db.Close()
	src := mediaapi.KeySourceOf(cfg.Media.KEKFile, cfg.Media.KEKEnv, cfg.DataDir)
	storeID, err := mediaapi.StoreKeyID(ctx, db)
	if err != nil {
		return err
	}
	if storeID == "" {
		storeID = "(none yet: no server has started on this store)"
	}
	if keyID, pub, err := config.AuditPublicKey(cfg); err != nil {
		fmt.Printf("audit signing key: %v\n", err)
	} else {
		where := "audit.signing_key_env " + cfg.Audit.SigningKeyEnv
		if cfg.Audit.SigningKeyEnv == "" {
			where = cfg.AuditKeyPath()
			if cfg.InsideDataDir(where) {
				where += " (inside the data directory: move it)"
			}
		}
		fmt.Printf("audit signing key: %s, public key %s, from %s\n", keyID, base64.RawStdEncoding.EncodeToString(pub), where)
	}
	fmt.Printf("store sealed under key id: %s\n", storeID)
	kek, err := src.Load()
	if err != nil {
		fmt.Printf("configured key: %v\n", err)
		return nil
	}
	ok, err := mediaapi.CheckKEK(ctx, db, kek)
	if err != nil {
		return err
	}
	fmt.Printf("configured key: %s, key id %s, opens the store: %v\n", src, kek.ID(), ok)
	return nil
}

const rotateHelp = `usage: enclave keys rotate [--data DIR] [--new-kek-file F | --new-kek-env NAME]

Re-wraps every media data key under a new key-encryption key in one
transaction; sealed media files are not rewritten. Stop the server first.

  --new-kek-file F   use the key in F (base64 or hex of 32 random bytes), or
                     write a new random key to F (mode 0600) if F is missing;
                     then set media.kek_file: F (or ENCLAVE_MEDIA_KEK_FILE=F)
  --new-kek-env NAME use the key in environment variable NAME; then set
                     media.kek_env: NAME and give NAME to the server
  (neither)          when the current key is a file: write a new key to
                     FILE.new, re-wrap, then replace FILE with it (no config
                     change); re-run after an interruption to finish

Keep the old key while database backups from before the rotation exist.

`

func cmdKeysRotate(args []string) error {
	fl := flag.NewFlagSet("keys rotate", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	newFile := fl.String("new-kek-file", "", "file holding the new key (created with a random key if missing)")
	newEnv := fl.String("new-kek-env", "", "environment variable holding the new key")
	fl.Usage = func() {
		fmt.Fprint(os.Stderr, rotateHelp)
		fl.PrintDefaults()
	}
	_ = fl.Parse(args)
	if *newFile != "" && *newEnv != "" {
		return errors.New("keys rotate: give at most one of --new-kek-file and --new-kek-env")
	}
	cfg, _, _, err := loadConfig(*dataDir)
	if err != nil {
		return err
	}
	src := mediaapi.KeySourceOf(cfg.Media.KEKFile, cfg.Media.KEKEnv, cfg.DataDir)
	oldKEK, err := src.Load()
	if err != nil {
		return fmt.Errorf("keys rotate: current key: %w", err)
	}

	// Pick (and if need be create) the new key.
	var newSrc mediaapi.KeySource
	replaceInPlace := false
	switch {
	case *newEnv != "":
		newSrc = mediaapi.KeySource{Env: *newEnv}
	case *newFile != "":
		newSrc = mediaapi.KeySource{File: *newFile}
	case src.Env != "":
		return fmt.Errorf("keys rotate: the current key comes from %s; give the new one with --new-kek-env NAME or --new-kek-file F", src)
	default:
		newSrc = mediaapi.KeySource{File: src.File + ".new"}
		replaceInPlace = true
	}
	created := false
	if newSrc.File != "" {
		if _, err := os.Stat(newSrc.File); sealing.IsNotExist(err) {
			if _, err := sealing.WriteKeyFile(newSrc.File); err != nil {
				return fmt.Errorf("keys rotate: writing the new key: %w", err)
			}
			created = true
		}
	}
	newKEK, err := newSrc.Load()
	if err != nil {
		return fmt.Errorf("keys rotate: new key: %w", err)
	}

	ctx := cliContext()
	db, err := storage.Open(ctx, cfg.Database.URL, storage.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := mediaapi.RotateKEK(ctx, db, oldKEK, newKEK)
	resumed := errors.Is(err, mediaapi.ErrAlreadyRotated)
	// Every rotation attempt is audited, failed ones too.
	entry := auditapi.Entry{Action: auditapi.ActionKEKRotate, Target: newKEK.ID(), Details: map[string]any{
		"op": "rotated", "from": oldKEK.ID(), "to": newKEK.ID(), "rewrapped": n, "resumed": resumed, "new_key": newSrc.String(), "via": "cli"}}
	if err != nil && !resumed {
		entry.Outcome, entry.Details["error"] = auditapi.OutcomeFailure, err.Error()
	}
	if aerr := auditapi.RecordDetached(ctx, db, entry); aerr != nil {
		fmt.Fprintln(os.Stderr, "warning: could not record the rotation in the audit log:", aerr)
	}
	if err != nil && !resumed {
		if created {
			os.Remove(newSrc.File) // never used: nothing is sealed under it
		}
		return fmt.Errorf("keys rotate: %w (nothing was changed)", err)
	}
	if replaceInPlace {
		if err := os.Rename(newSrc.File, src.File); err != nil {
			return fmt.Errorf("keys rotate: media is now sealed under the key in %s, but replacing %s failed: %w; move it into place by hand", newSrc.File, src.File, err)
		}
		sealing.SyncDir(filepath.Dir(src.File))
	}
	if resumed {
		fmt.Printf("the store was already sealed under key id %s: finished the interrupted rotation\n", newKEK.ID())
	} else {
		fmt.Printf("re-wrapped %d media data keys: key id %s → %s\n", n, oldKEK.ID(), newKEK.ID())
	}
	switch {
	case replaceInPlace:
		fmt.Printf("the new key replaced the old one in %s; the configuration needs no change. Back the new key up.\n", src.File)
	case newSrc.Env != "":
		fmt.Printf("now set media.kek_env: %s (or ENCLAVE_MEDIA_KEK_ENV=%s), clear media.kek_file, provide %s to the server and restart it.\n", newSrc.Env, newSrc.Env, newSrc.Env)
	default:
		if created {
			fmt.Printf("wrote a new random key to %s (mode 0600); back it up on separate storage.\n", newSrc.File)
		}
		fmt.Printf("now set media.kek_file: %s (or ENCLAVE_MEDIA_KEK_FILE=%s), clear media.kek_env, and restart the server: the old key no longer opens media.\n", newSrc.File, newSrc.File)
	}
	return nil
}
