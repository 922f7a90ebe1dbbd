package mediaapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/internal/sealing"
	"enclave/storage"
)

// DefaultKEKFile is the key file used when neither media.kek_file nor
// media.kek_env is set; it is created in the data directory on the very
// first start.
const DefaultKEKFile = "media.kek"

// KeySource says where the media KEK comes from.
type KeySource struct {
	File string // key file path (configured, or the default)
	Env  string // environment variable name, if the key comes from one
	// Default is true when File is the built-in default (no key configured).
	Default bool
}

// KeySourceOf resolves the configured source: kek_env, else kek_file,
// else DATA/media.kek.
func KeySourceOf(kekFile, kekEnv, dataDir string) KeySource {
	switch {
	case kekEnv != "":
		return KeySource{Env: kekEnv}
	case kekFile != "":
		return KeySource{File: kekFile}
	default:
		return KeySource{File: filepath.Join(dataDir, DefaultKEKFile), Default: true}
	}
}

// String names the key for operators, never showing it.
func (s KeySource) String() string {
	switch {
	case s.Env != "":
		return fmt.Sprintf("media.kek_env (environment variable %s)", s.Env)
	case s.Default:
		return fmt.Sprintf("the default key file %s (media.kek_file and media.kek_env are unset)", s.File)
	default:
		return fmt.Sprintf("media.kek_file (%s)", s.File)
	}
}

// errNoKeyFile marks a key file that does not exist (as opposed to one that
// exists but is unreadable or malformed).
var errNoKeyFile = errors.New("no such key file")

// Load reads the key. A missing default file wraps errNoKeyFile.
func (s KeySource) Load() (*sealing.KEK, error) {
	var key []byte
	if s.Env != "" {
		v, ok := os.LookupEnv(s.Env)
		if !ok || v == "" {
			return nil, fmt.Errorf("%s is not set", s)
		}
		k, err := sealing.ParseKey([]byte(v))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
		key = k
	} else {
		k, err := sealing.LoadKeyFile(s.File)
		if sealing.IsNotExist(err) {
			return nil, fmt.Errorf("%s: %w", s, errNoKeyFile)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
		if st, err := os.Stat(s.File); err == nil && st.Mode().Perm()&0o077 != 0 {
			logrus.WithField("path", s.File).Warnf("media key file is readable by other users (mode %v); chmod 600 it", st.Mode().Perm())
		}
		key = k
	}
	return sealing.NewKEK(key, s.String())
}

// canaryValue is what the canary seals: opening it proves the KEK is the
// one that sealed the store's media, before any media is touched.
var canaryValue = sha256.Sum256([]byte("enclave media key-encryption key canary v1"))

const canaryObject = "media-kek-canary"

func sealCanary(k *sealing.KEK) ([]byte, error) { return k.Wrap(canaryValue[:], canaryObject) }

func canaryOpens(k *sealing.KEK, c *canary) bool {
	v, err := k.Unwrap(c.Sealed, canaryObject)
	return err == nil && subtle.ConstantTimeCompare(v, canaryValue[:]) == 1
}

// setupKEK loads the KEK at start and checks it against the store's
// canary. On the very first start (no canary, no media) with no key
// configured it creates the default key file; otherwise a missing or wrong
// key is an error that names the key, and nothing is written.
func setupKEK(ctx context.Context, db *storage.DB, src KeySource) (*sealing.KEK, error) {
	c, err := selectCanary(ctx, db)
	if err != nil {
		return nil, err
	}
	kek, err := src.Load()
	if err != nil {
		if c != nil {
			return nil, fmt.Errorf("key-encryption key: %w; this store's media is sealed under key id %s, so the server will not start without that key (no media was changed)", err, c.KEKID)
		}
		if !src.Default || !errors.Is(err, errNoKeyFile) {
			return nil, fmt.Errorf("key-encryption key: %w", err)
		}
		if n, err := countSealedObjects(ctx, db); err != nil {
			return nil, err
		} else if n > 0 {
			return nil, fmt.Errorf("key-encryption key: %s is missing but the store holds sealed media without a key record; restore the key file", src)
		}
		if _, err := sealing.WriteKeyFile(src.File); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("key-encryption key: creating %s: %w", src.File, err)
		}
		if kek, err = src.Load(); err != nil {
			return nil, fmt.Errorf("key-encryption key: %w", err)
		}
		logrus.WithField("path", src.File).WithField("key_id", kek.ID()).Warn("first start: created a media key-encryption key in the data directory. " +
			"Production keys belong on separate storage (set media.kek_file or media.kek_env) and must be backed up: without the key no media can be read")
	}
	if c == nil {
		return kek, installCanary(ctx, db, kek)
	}
	if !canaryOpens(kek, c) {
		msg := fmt.Sprintf("key-encryption key from %s (key id %s) is not the key that sealed this store's media (key id %s); start with that key, or if `enclave keys rotate` moved media to a new key, point media.kek_file or media.kek_env at it. No media was changed", src, kek.ID(), c.KEKID)
		if src.File != "" {
			if k, err := (KeySource{File: src.File + ".new"}).Load(); err == nil && canaryOpens(k, c) {
				msg += fmt.Sprintf(". %s.new holds the right key: an interrupted `enclave keys rotate` left it; run it again to finish", src.File)
			}
		}
		return nil, errors.New(msg)
	}
	return kek, nil
}

func installCanary(ctx context.Context, db *storage.DB, kek *sealing.KEK) error {
	sealed, err := sealCanary(kek)
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	err = db.WithTx(ctx, func(tx *storage.Tx) error {
		if n, err := countSealedObjects(ctx, tx); err != nil {
			return err
		} else if n > 0 {
			return errors.New("media key-encryption key: the store holds sealed media but no key record; refusing to guess")
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO media_kek (id, kek_id, canary, created_ts, rotated_ts) VALUES (1, $1, $2, $3, $3)`, kek.ID(), sealed, now)
		return err
	})
	if storage.IsUniqueViolation(err) {
		// Another process installed it first: check ours matches.
		c, err := selectCanary(ctx, db)
		if err != nil {
			return err
		}
		if c == nil || !canaryOpens(kek, c) {
			return errors.New("media key-encryption key: another server installed a different key for this store")
		}
		return nil
	}
	return err
}

// ErrAlreadyRotated is returned by RotateKEK when the store is already
// sealed under the new key (a repeated or resumed rotation).
var ErrAlreadyRotated = errors.New("media: the store is already sealed under the new key")

// StoreKeyID returns the key ID recorded in the store, or "" before any key.
func StoreKeyID(ctx context.Context, db *storage.DB) (string, error) {
	c, err := selectCanary(ctx, db)
	if err != nil || c == nil {
		return "", err
	}
	return c.KEKID, nil
}

// CheckKEK reports whether kek opens the store's canary (true, too, when
// the store has no key yet).
func CheckKEK(ctx context.Context, db *storage.DB, kek *sealing.KEK) (bool, error) {
	c, err := selectCanary(ctx, db)
	if err != nil || c == nil {
		return c == nil, err
	}
	return canaryOpens(kek, c), nil
}

const rotateBatch = 500

// RotateKEK re-wraps every data key (media and thumbnails) from oldKEK to
// newKEK and moves the canary, in one transaction: either everything is
// under the new key or nothing changed. Sealed blobs are not touched. It
// returns how many objects were re-wrapped.
func RotateKEK(ctx context.Context, db *storage.DB, oldKEK, newKEK *sealing.KEK) (int, error) {
	if oldKEK.ID() == newKEK.ID() {
		return 0, errors.New("the new key is the same as the current one")
	}
	newCanary, err := sealCanary(newKEK)
	if err != nil {
		return 0, err
	}
	count := 0
	err = db.WithTx(ctx, func(tx *storage.Tx) error {
		c, err := selectCanary(ctx, tx)
		if err != nil {
			return err
		}
		now := time.Now().UnixMilli()
		if c == nil {
			_, err := tx.ExecContext(ctx, `INSERT INTO media_kek (id, kek_id, canary, created_ts, rotated_ts) VALUES (1, $1, $2, $3, $3)`, newKEK.ID(), newCanary, now)
			return err
		}
		if !canaryOpens(oldKEK, c) {
			if canaryOpens(newKEK, c) {
				return ErrAlreadyRotated
			}
			return fmt.Errorf("the current key from %s (key id %s) is not the key that sealed this store's media (key id %s); nothing was changed", oldKEK.Source, oldKEK.ID(), c.KEKID)
		}
		// Lock the canary row first so running servers' writes wait for
		// (and then fail after) this rotation rather than racing it.
		if err := lockKEK(ctx, tx, c.KEKID); err != nil {
			return err
		}
		n, err := rewrapMedia(ctx, tx, oldKEK, newKEK)
		if err != nil {
			return err
		}
		m, err := rewrapThumbs(ctx, tx, oldKEK, newKEK)
		if err != nil {
			return err
		}
		count = n + m
		_, err = tx.ExecContext(ctx, `UPDATE media_kek SET kek_id = $1, canary = $2, rotated_ts = $3 WHERE id = 1`, newKEK.ID(), newCanary, now)
		return err
	})
	return count, err
}

type wrapped struct {
	k1, k2, blob string
	key          []byte
}

func rewrapMedia(ctx context.Context, tx *storage.Tx, oldKEK, newKEK *sealing.KEK) (int, error) {
	total := 0
	lastO, lastM := "", ""
	for {
		rows, err := tx.QueryContext(ctx, `SELECT origin, media_id, blob_id, wrapped_key FROM media
			WHERE wrapped_key IS NOT NULL AND (origin > $1 OR (origin = $1 AND media_id > $2))
			ORDER BY origin, media_id LIMIT `+fmt.Sprint(rotateBatch), lastO, lastM)
		if err != nil {
			return 0, err
		}
		var batch []wrapped
		for rows.Next() {
			var x wrapped
			if err := rows.Scan(&x.k1, &x.k2, &x.blob, &x.key); err != nil {
				rows.Close()
				return 0, err
			}
			batch = append(batch, x)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, err
		}
		for _, x := range batch {
			nk, err := rewrap(oldKEK, newKEK, x.key, x.blob)
			if err != nil {
				return 0, fmt.Errorf("media %s/%s: %w", x.k1, x.k2, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE media SET wrapped_key = $1, kek_id = $2 WHERE origin = $3 AND media_id = $4`, nk, newKEK.ID(), x.k1, x.k2); err != nil {
				return 0, err
			}
		}
		total += len(batch)
		if len(batch) < rotateBatch {
			return total, nil
		}
		lastO, lastM = batch[len(batch)-1].k1, batch[len(batch)-1].k2
	}
}

func rewrapThumbs(ctx context.Context, tx *storage.Tx, oldKEK, newKEK *sealing.KEK) (int, error) {
	total := 0
	lastBlob := ""
	for {
		rows, err := tx.QueryContext(ctx, `SELECT blob_id, wrapped_key FROM media_thumbnails WHERE blob_id > $1 ORDER BY blob_id LIMIT `+fmt.Sprint(rotateBatch), lastBlob)
		if err != nil {
			return 0, err
		}
		var batch []wrapped
		for rows.Next() {
			var x wrapped
			if err := rows.Scan(&x.blob, &x.key); err != nil {
				rows.Close()
				return 0, err
			}
			batch = append(batch, x)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, err
		}
		for _, x := range batch {
			nk, err := rewrap(oldKEK, newKEK, x.key, x.blob)
			if err != nil {
				return 0, fmt.Errorf("thumbnail %s: %w", x.blob, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE media_thumbnails SET wrapped_key = $1, kek_id = $2 WHERE blob_id = $3`, nk, newKEK.ID(), x.blob); err != nil {
				return 0, err
			}
		}
		total += len(batch)
		if len(batch) < rotateBatch {
			return total, nil
		}
		lastBlob = batch[len(batch)-1].blob
	}
}

func rewrap(oldKEK, newKEK *sealing.KEK, w []byte, objectID string) ([]byte, error) {
	dk, err := oldKEK.Unwrap(w, objectID)
	if err != nil {
		return nil, err
	}
	return newKEK.Wrap(dk, objectID)
}
