package accounts

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

func TestPasswordHash(t *testing.T) {
	ctx := context.Background()
	h, err := HashPassword(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("unexpected PHC %q", h)
	}
	if ok, rehash, err := VerifyPassword(ctx, "correct horse", h); err != nil || !ok || rehash {
		t.Fatalf("verify: %v %v %v", ok, rehash, err)
	}
	if ok, _, _ := VerifyPassword(ctx, "wrong", h); ok {
		t.Fatal("wrong password verified")
	}
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdA$aGFzaA", h + "$"} {
		if ok, _, err := VerifyPassword(ctx, "correct horse", bad); ok || err != nil {
			t.Fatalf("bad hash %q verified: %v", bad, err)
		}
	}
	// A hash with other parameters verifies and asks for a rehash.
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte("old pw"), salt, 1, 1024, 1, 32)
	old := "$argon2id$v=19$m=1024,t=1,p=1$" + base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(key)
	if ok, rehash, err := VerifyPassword(ctx, "old pw", old); err != nil || !ok || !rehash {
		t.Fatalf("old params: %v %v %v", ok, rehash, err)
	}
}

func TestPasswordHashTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	ctx := context.Background()
	const n = 5
	start := time.Now()
	for range n {
		if _, err := HashPassword(ctx, "benchmark password"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("argon2id m=%d KiB t=%d p=%d: %v per hash", argonMemory, argonTime, argonThreads, time.Since(start)/n)
}

func TestLocalparts(t *testing.T) {
	for _, ok := range []string{"alice", "a.b_c=d-e/f+g", "0123"} {
		if !ValidLocalpart(ok) {
			t.Errorf("%q should be valid", ok)
		}
	}
	for _, bad := range []string{"", "Alice", "al ice", "al:ice", "_bridge", "ålice", "a@b"} {
		if ValidLocalpart(bad) {
			t.Errorf("%q should be invalid", bad)
		}
	}
}
