package accounts

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
)

// Passwords: argon2id in PHC string form.
//
// Parameters follow OWASP's first argon2id recommendation (m=19 MiB, t=2,
// p=1): about 26 ms per hash on the 2-core reference box. Hashes carry
// their parameters, so raising them later keeps old hashes verifiable
// (and login rehashes them).

const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
	// MaxPasswordBytes bounds passwords everywhere: it bounds hashing work
	// per request.
	MaxPasswordBytes = 512
)

// hashSem bounds concurrent hashes so a login flood cannot take
// argonMemory × N of RAM or starve other requests of CPU.
var hashSem = make(chan struct{}, max(2, runtime.NumCPU()))

func acquireHash(ctx context.Context) error {
	select {
	case hashSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func releaseHash() { <-hashSem }

// HashPassword returns the argon2id PHC string of pw.
func HashPassword(ctx context.Context, pw string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	if err := acquireHash(ctx); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	releaseHash()
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

type argonParams struct {
	m, t uint32
	p    uint8
	salt []byte
	key  []byte
}

func parsePHC(s string) (*argonParams, bool) {
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, false
	}
	var p argonParams
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, false
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return nil, false
		}
		switch k {
		case "m":
			p.m = uint32(n)
		case "t":
			p.t = uint32(n)
		case "p":
			if n > 255 {
				return nil, false
			}
			p.p = uint8(n)
		default:
			return nil, false
		}
	}
	var err error
	if p.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil {
		return nil, false
	}
	if p.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(p.key) == 0 {
		return nil, false
	}
	// Refuse absurd parameters from a corrupted or hostile row.
	if p.m == 0 || p.t == 0 || p.p == 0 || p.m > 1<<20 || p.t > 16 || len(p.key) > 128 {
		return nil, false
	}
	return &p, true
}

// VerifyPassword checks pw against a PHC hash in constant time. rehash
// reports that the hash uses other parameters than today's.
func VerifyPassword(ctx context.Context, pw, phc string) (ok, rehash bool, err error) {
	p, valid := parsePHC(phc)
	if !valid {
		// Spend the time anyway so a missing/odd hash is not observable.
		p, _ = parsePHC(dummyHash())
		phc = ""
	}
	if err := acquireHash(ctx); err != nil {
		return false, false, err
	}
	key := argon2.IDKey([]byte(pw), p.salt, p.t, p.m, p.p, uint32(len(p.key)))
	releaseHash()
	if phc == "" {
		return false, false, nil
	}
	ok = subtle.ConstantTimeCompare(key, p.key) == 1
	rehash = ok && (p.m != argonMemory || p.t != argonTime || p.p != argonThreads || len(p.key) != argonKeyLen)
	return ok, rehash, nil
}

var (
	dummyOnce sync.Once
	dummyPHC  string
)

// dummyHash is a valid hash of a random password, verified against for
// unknown users so that their login costs as long as a real one.
func dummyHash() string {
	dummyOnce.Do(func() {
		salt := make([]byte, argonSaltLen)
		pw := make([]byte, 16)
		_, _ = rand.Read(salt)
		_, _ = rand.Read(pw)
		key := argon2.IDKey(pw, salt, argonTime, argonMemory, argonThreads, argonKeyLen)
		b64 := base64.RawStdEncoding
		dummyPHC = fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key))
	})
	return dummyPHC
}
