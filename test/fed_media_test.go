package test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"enclave/storage"
)

// TestFederationMediaCompat: media of another server reaches a local
// client both ways the spec allows. From an Enclave (authenticated media,
// /_matrix/federation/v1/media/download, multipart) the bytes arrive as
// uploaded; from a server without authenticated media (the test peer
// answers the federation media path 404 M_UNRECOGNIZED) A falls back to
// the legacy /_matrix/media/v3/download with allow_remote=false, caches
// the media (served again after the peer dropped it, without asking it),
// and media the peer lacks is 404.
func TestFederationMediaCompat(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d, d)
			peer := c.AddPeer()
			peer.SetLegacyMedia("OldServerMedia", []byte("bytes from a server before v1.11"))
			c.StartAll()
			a, b := c.Nodes[0], c.Nodes[1]
			alice, bob := fedUser(t, a, "alice"), fedUser(t, b, "bob")
			download := func(server, id string) (int, []byte) {
				t.Helper()
				req, _ := http.NewRequestWithContext(ctxT(t), "GET", a.URL+"/_matrix/client/v1/media/download/"+server+"/"+id, nil)
				req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, body
			}

			content := bytes.Repeat([]byte("authenticated media "), 100)
			up, err := bob.UploadBytes(ctxT(t), content, "application/octet-stream")
			if err != nil {
				t.Fatal(err)
			}
			if code, got := download(b.ServerName, up.ContentURI.FileID); code != 200 || !bytes.Equal(got, content) {
				t.Fatalf("B's media through federation: %d, %d bytes (want %d)", code, len(got), len(content))
			}
			if q := peer.LegacyMediaQueries(); len(q) != 0 {
				t.Fatalf("legacy downloads before any was needed: %v", q)
			}

			want := []byte("bytes from a server before v1.11")
			if code, got := download(string(peer.ServerName), "OldServerMedia"); code != 200 || !bytes.Equal(got, want) {
				t.Fatalf("legacy media: %d %q", code, got)
			}
			q := peer.LegacyMediaQueries()
			if len(q) != 1 || !strings.Contains(q[0], "allow_remote=false") {
				t.Fatalf("legacy requests %v, want one with allow_remote=false", q)
			}
			peer.SetLegacyMedia("OldServerMedia", nil)
			if code, got := download(string(peer.ServerName), "OldServerMedia"); code != 200 || !bytes.Equal(got, want) {
				t.Fatalf("cached legacy media: %d %q", code, got)
			}
			if q := peer.LegacyMediaQueries(); len(q) != 1 {
				t.Fatalf("the cached media was fetched again: %v", q)
			}
			if code, _ := download(string(peer.ServerName), "NoSuchMedia"); code != 404 {
				t.Fatalf("media the peer lacks: %d, want 404", code)
			}
		})
	}
}
