package federationapi

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"enclave/config"
	"enclave/roomserver"
	"enclave/storage"
	"enclave/storage/storagetest"
)

// fakeRooms is a RoomServer knowing a fixed set of rooms; it records what
// InputRemoteEvents is given and rejects events whose ID is in reject.
type fakeRooms struct {
	RoomServer // unused methods panic
	mu         sync.Mutex
	versions   map[string]gomatrixserverlib.RoomVersion
	reject     map[string]error
	got        []gomatrixserverlib.PDU
}

// CurrentState is empty (no server ACL) for the rooms the fake knows.
func (r *fakeRooms) CurrentState(_ context.Context, roomID string) (roomserver.StateMap, error) {
	if _, ok := r.versions[roomID]; ok {
		return roomserver.StateMap{}, nil
	}
	return nil, roomserver.ErrRoomNotFound
}

func (r *fakeRooms) RoomVersion(_ context.Context, roomID string) (gomatrixserverlib.RoomVersion, error) {
	if v, ok := r.versions[roomID]; ok {
		return v, nil
	}
	return "", roomserver.ErrRoomNotFound
}

func (r *fakeRooms) InputRemoteEvents(_ context.Context, _ spec.ServerName, pdus []gomatrixserverlib.PDU) map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]error{}
	for _, p := range pdus {
		r.got = append(r.got, p)
		if err := r.reject[p.EventID()]; err != nil {
			out[p.EventID()] = err
		}
	}
	return out
}

// testKey is a remote server's signing identity.
type testKey struct {
	name spec.ServerName
	id   gomatrixserverlib.KeyID
	priv ed25519.PrivateKey
}

func newTestKey(t testing.TB, name spec.ServerName) testKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{name: name, id: "ed25519:t1", priv: priv}
}

// trust stores k's public key in f's key cache, as if fetched earlier.
func (k testKey) trust(t testing.TB, f *Federation) {
	t.Helper()
	err := storage.UpsertServerKeys(context.Background(), f.db, []storage.ServerKey{{
		ServerName: string(k.name), KeyID: string(k.id),
		PublicKey:    base64.RawStdEncoding.EncodeToString(k.priv.Public().(ed25519.PublicKey)),
		ValidUntilTS: time.Now().Add(time.Hour).UnixMilli(),
	}})
	if err != nil {
		t.Fatal(err)
	}
}

// event builds a signed message event from sender in roomID (room v10).
func (k testKey) event(t testing.TB, roomID, sender, body string) gomatrixserverlib.PDU {
	t.Helper()
	eb := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: roomID, Type: "m.room.message",
		PrevEvents: []string{"$prev"}, AuthEvents: []string{"$create"}, Depth: 3,
		Content: spec.RawJSON(`{"msgtype":"m.text","body":"` + body + `"}`),
	})
	ev, err := eb.Build(time.Now(), k.name, k.id, k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// newTestFederation builds a Federation named "self.test" on a fresh
// SQLite store, federation enabled and open to all but the given config.
func newTestFederation(t testing.TB, rs RoomServer, mutate func(c *config.Config)) *Federation {
	t.Helper()
	db := storagetest.Open(t, storage.SQLite)
	cfg := config.Default()
	cfg.ServerName = "self.test"
	cfg.DataDir = t.TempDir()
	cfg.SigningKey = filepath.Join(cfg.DataDir, "signing.key")
	cfg.Federation.Enabled = true
	if mutate != nil {
		mutate(cfg)
	}
	keyID, key, _, err := config.LoadOrCreateSigningKey(cfg.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(cfg, db, rs, keyID, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f
}

func queueDepth(f *Federation, dest spec.ServerName) (int, int, error) {
	return storage.QueueDepth(context.Background(), f.db, string(dest))
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
