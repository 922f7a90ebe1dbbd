package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a fresh self-signed cert/key pair and returns the
// certificate for comparison.
func writeSelfSigned(t *testing.T, certPath, keyPath, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		DNSNames:              []string{cn},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestServerTLSConfigs(t *testing.T) {
	dir := t.TempDir()
	c := Default()
	c.TLS.Cert, c.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	want := writeSelfSigned(t, c.TLS.Cert, c.TLS.Key, "one.example")

	fed, err := c.FederationTLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	if fed.MinVersion != tls.VersionTLS13 {
		t.Errorf("federation MinVersion = %x, want TLS 1.3", fed.MinVersion)
	}
	cli, err := c.ClientTLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cli.MinVersion != tls.VersionTLS13 {
		t.Errorf("client MinVersion = %x, want TLS 1.3 (the default)", cli.MinVersion)
	}
	c.Listen.ClientTLSMinVersion = "1.2"
	if old, err := c.ClientTLSConfig(); err != nil || old.MinVersion != tls.VersionTLS12 {
		t.Errorf("client_tls_min_version 1.2: MinVersion %x, %v", old.MinVersion, err)
	}
	c.Listen.ClientTLSMinVersion = "1.1"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "listen.client_tls_min_version") {
		t.Errorf("client_tls_min_version 1.1 accepted: %v", err)
	}
	c.Listen.ClientTLSMinVersion = "1.3"
	got, err := fed.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || !got.Leaf.Equal(want) {
		t.Errorf("GetCertificate did not return the configured cert: %v", err)
	}

	missing := Default()
	if _, err := missing.FederationTLSConfig(); err == nil {
		t.Error("no cert configured: want error")
	}
	missing.TLS.Cert, missing.TLS.Key = filepath.Join(dir, "nope.pem"), c.TLS.Key
	if _, err := missing.ClientTLSConfig(); err == nil {
		t.Error("missing cert file: want error")
	}
}

func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeSelfSigned(t, certPath, keyPath, "one.example")
	r := &certReloader{certFile: certPath, keyFile: keyPath}
	if err := r.load(); err != nil {
		t.Fatal(err)
	}

	second := writeSelfSigned(t, certPath, keyPath, "two.example")
	future := time.Now().Add(time.Minute) // mtime granularity may hide the rewrite
	for _, p := range []string{certPath, keyPath} {
		if err := os.Chtimes(p, future, future); err != nil {
			t.Fatal(err)
		}
	}

	// Within the check interval the old cert is still served.
	if got, _ := r.get(nil); !got.Leaf.Equal(first) {
		t.Error("reloaded before the check interval elapsed")
	}
	r.lastCheck = time.Now().Add(-2 * reloadCheckInterval)
	if got, _ := r.get(nil); !got.Leaf.Equal(second) {
		t.Error("renewed certificate not picked up")
	}

	// A broken renewal keeps the last good certificate.
	if err := os.WriteFile(certPath, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := future.Add(time.Minute)
	os.Chtimes(certPath, later, later)
	r.lastCheck = time.Now().Add(-2 * reloadCheckInterval)
	if got, err := r.get(nil); err != nil || !got.Leaf.Equal(second) {
		t.Errorf("broken renewal: got err %v, want last good cert", err)
	}
}

func TestRootCAs(t *testing.T) {
	dir := t.TempDir()
	c := Default()
	if _, err := c.RootCAs(); err != nil {
		t.Fatalf("no bundle: %v", err)
	}

	c.TLS.CABundle = filepath.Join(dir, "ca.pem")
	ca := writeSelfSigned(t, c.TLS.CABundle, filepath.Join(dir, "ca.key"), "private-ca.example")
	pool, err := c.RootCAs()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Verify(x509.VerifyOptions{Roots: pool, DNSName: "private-ca.example"}); err != nil {
		t.Errorf("bundle CA not trusted: %v", err)
	}

	if err := os.WriteFile(c.TLS.CABundle, []byte("nothing here"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RootCAs(); err == nil {
		t.Error("bundle without certificates: want error")
	}
	c.TLS.CABundle = filepath.Join(dir, "missing.pem")
	if _, err := c.RootCAs(); err == nil {
		t.Error("missing bundle: want error")
	}
}
