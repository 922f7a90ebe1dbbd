package test

import (
	"context"
	"errors"
	"testing"

	"enclave/internal/server"
	"enclave/storage"
)

// TestSecondProcessRefused: a second server on the store another one
// serves must refuse to start (it would drift from the first: a message
// sent through it never reached the first's /sync), and the store is
// usable again once the first stops.
func TestSecondProcessRefused(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		first := Start(t, d, Options{})
		cfg := TestConfig(t, d, Options{DataDir: first.DataDir, DBURL: first.DBURL})
		second, err := server.New(context.Background(), cfg)
		if err == nil {
			second.Shutdown(context.Background())
			t.Fatal("a second server started on a store already being served")
		}
		if !errors.Is(err, storage.ErrStoreInUse) {
			t.Fatalf("second server: %v, want ErrStoreInUse", err)
		}
		// The refused start changed nothing: the first still serves.
		alice := Register(t, first.URL, "alice", "correct horse battery", false)
		if alice.AccessToken == "" {
			t.Fatal("first server stopped answering")
		}
		first.Stop()
		again := StartConfig(t, cfg)
		if r := Register(t, again.URL, "bob", "correct horse battery", false); r.AccessToken == "" {
			t.Fatal("store not usable after the first server stopped")
		}
	})
}
