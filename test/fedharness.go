package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"enclave/config"
	"enclave/federationapi"
	"enclave/internal/server"
	"enclave/storage"
	"enclave/storage/storagetest"
	"enclave/test/fedpeer"
)

// Multi-server federation tests. A FedCluster is a private PKI (a test CA
// and one certificate per server) plus planned servers, each on its own
// loopback address 127.0.0.K (Linux routes all of 127/8 to lo without
// setup) with server_name "127.0.0.K:PORT". An explicit IP:port name
// resolves without any DNS, and the certificates carry the IP as SAN, so
// the servers federate over real TLS 1.3 exactly as in production.
//
// Ports are chosen before a server starts (server_name must be known
// first), so a server can be stopped and restarted on the same name with
// the same data directory and database.

// FedCluster is a set of federating test servers sharing one CA.
type FedCluster struct {
	t      testing.TB
	CAFile string // PEM, used as every server's tls.ca_bundle
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	dir    string
	Nodes  []*FedNode
	hosts  int      // loopback addresses handed out (nodes and peers)
	peers  []string // hosts of test peers (AddPeer), allowed like nodes
}

// FedNode is one planned server; Server is nil while it is stopped.
type FedNode struct {
	*Server
	Index      int
	Dialect    storage.Dialect
	IP         string
	ServerName string // "127.0.0.K:PORT", also its federation listen address
	DataDir    string
	DBURL      string
	CertFile   string
	KeyFile    string
	// Outsider nodes are left off the other nodes' allow-lists.
	Outsider bool
	// Configure adjusts the node's config on every start.
	Configure func(c *config.Config)
	// BeforeStart runs after the server is built and before it listens
	// (e.g. to register EDU handlers that must see the first request).
	BeforeStart func(s *server.Server)

	c *FedCluster
}

// NewFedCluster creates the CA and plans one node per dialect given, on
// 127.0.0.2, 127.0.0.3, …. Nodes are started with Start or StartAll.
func NewFedCluster(t testing.TB, dialects ...storage.Dialect) *FedCluster {
	t.Helper()
	c := &FedCluster{t: t, dir: t.TempDir()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Enclave test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if c.caCert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	c.caKey = key
	c.CAFile = filepath.Join(c.dir, "ca.pem")
	writePEM(t, c.CAFile, "CERTIFICATE", der)
	for _, d := range dialects {
		c.AddNode(d)
	}
	return c
}

// AddNode plans another server of dialect d on the next loopback address.
func (c *FedCluster) AddNode(d storage.Dialect) *FedNode {
	t := c.t
	t.Helper()
	i := len(c.Nodes)
	ip := c.nextHost()
	n := &FedNode{
		Index: i, Dialect: d, IP: ip,
		ServerName: net.JoinHostPort(ip, fmt.Sprint(FreePort(t, ip))),
		DataDir:    t.TempDir(),
		DBURL:      storagetest.NewURL(t, d),
		c:          c,
	}
	n.CertFile, n.KeyFile = c.issue(ip, c.hosts)
	c.Nodes = append(c.Nodes, n)
	t.Cleanup(n.Stop)
	return n
}

// nextHost hands out the next loopback address: 127.0.0.2, 127.0.0.3, ….
func (c *FedCluster) nextHost() string {
	c.hosts++
	return fmt.Sprintf("127.0.0.%d", c.hosts+1)
}

// AddPeer starts a test federation peer (test/fedpeer) on the next
// loopback address with a certificate from the cluster CA. It is on every
// node's allow-list: add peers before starting the nodes.
func (c *FedCluster) AddPeer() *fedpeer.Peer {
	t := c.t
	t.Helper()
	ip := c.nextHost()
	certFile, keyFile := c.issue(ip, c.hosts)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.caCert)
	name := net.JoinHostPort(ip, fmt.Sprint(FreePort(t, ip)))
	// The host admits the peer; its full name is what keys are fetched from.
	c.peers = append(c.peers, ip, name)
	return fedpeer.New(t, fedpeer.Config{
		ServerName: name,
		Cert:       cert,
		RootCAs:    pool,
	})
}

// FreePort returns a TCP port that was free on ip a moment ago.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("no free port on %s: %v", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// issue writes a server certificate for ip signed by the CA.
func (c *FedCluster) issue(ip string, i int) (certFile, keyFile string) {
	t := c.t
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(100 + i)),
		Subject:      pkix.Name{CommonName: ip},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.caCert, &key.PublicKey, c.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(c.dir, fmt.Sprintf("server%d.pem", i))
	keyFile = filepath.Join(c.dir, fmt.Sprintf("server%d.key", i))
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kb)
	return certFile, keyFile
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// StartAll starts every node that is not running.
func (c *FedCluster) StartAll() {
	for _, n := range c.Nodes {
		if n.Server == nil {
			n.Start()
		}
	}
}

// allowList is every non-outsider node's host.
func (c *FedCluster) allowList() []string {
	out := append([]string(nil), c.peers...)
	for _, n := range c.Nodes {
		if !n.Outsider {
			// The host admits the node on any port; keys are fetched only
			// from full server names the list gives exactly.
			out = append(out, n.IP, n.ServerName)
		}
	}
	return out
}

// Config returns the node's config: federation on, TLS from the test PKI,
// the cluster's (non-outsider) servers allowed.
func (n *FedNode) Config() *config.Config {
	return TestConfig(n.c.t, n.Dialect, Options{
		ServerName: n.ServerName,
		DataDir:    n.DataDir,
		DBURL:      n.DBURL,
		Configure: func(c *config.Config) {
			c.Listen.Federation = n.ServerName
			c.TLS.Cert, c.TLS.Key, c.TLS.CABundle = n.CertFile, n.KeyFile, n.c.CAFile
			c.Federation.Enabled = true
			c.Federation.AllowedServers = n.c.allowList()
			if n.Configure != nil {
				n.Configure(c)
			}
		},
	})
}

// Start runs the node (again, after Stop: same name, data and database).
func (n *FedNode) Start() {
	t := n.c.t
	t.Helper()
	if n.Server != nil {
		t.Fatalf("%s already running", n.ServerName)
	}
	cfg := n.Config()
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting %s: %v", n.ServerName, err)
	}
	if n.BeforeStart != nil {
		n.BeforeStart(srv)
	}
	addr, err := srv.Start()
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
		t.Fatalf("listening %s: %v", n.ServerName, err)
	}
	n.Server = &Server{Server: srv, URL: "http://" + addr, DataDir: cfg.DataDir, DBURL: cfg.Database.URL, t: t}
}

// Stop shuts the node down (idempotent).
func (n *FedNode) Stop() {
	if n.Server != nil {
		n.Server.Stop()
		n.Server = nil
	}
}

// Fed is the running node's federation component.
func (n *FedNode) Fed() *federationapi.Federation {
	if n.Server == nil {
		n.c.t.Fatalf("%s is not running", n.ServerName)
	}
	return n.Server.Server.Federation
}

// FedURL is the https URL of path on the node's federation listener.
func (n *FedNode) FedURL(path string) string {
	return "https://" + n.ServerName + path
}

// HTTPClient is an HTTPS client trusting the cluster CA (TLS 1.3), for
// driving federation endpoints directly.
func (c *FedCluster) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(c.caCert)
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}},
	}
}
