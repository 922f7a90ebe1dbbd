package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// FederationTLSConfig returns the server TLS config for the federation
// listener. Federation is server-to-server, so there are no legacy clients
// to accommodate and TLS 1.3 is the minimum.
func (c *Config) FederationTLSConfig() (*tls.Config, error) {
	return c.serverTLS(tls.VersionTLS13)
}

// ClientTLSConfig returns the server TLS config for the client listener
// (when listen.client_tls is set), at listen.client_tls_min_version.
func (c *Config) ClientTLSConfig() (*tls.Config, error) {
	if c.Listen.ClientTLSMinVersion == "1.2" {
		return c.serverTLS(tls.VersionTLS12)
	}
	return c.serverTLS(tls.VersionTLS13)
}

func (c *Config) serverTLS(minVersion uint16) (*tls.Config, error) {
	if c.TLS.Cert == "" || c.TLS.Key == "" {
		return nil, errors.New("config: tls.cert and tls.key must be set")
	}
	r := &certReloader{certFile: c.TLS.Cert, keyFile: c.TLS.Key}
	if err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: minVersion, GetCertificate: r.get}, nil
}

// certReloader re-reads the key pair when either file changes, so renewed
// certificates (e.g. from an ACME client) are picked up without a restart.
// Files are checked at most once per reloadCheckInterval; if a reload fails
// (say, mid-renewal with only one file replaced) the previous pair is kept.
type certReloader struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	modTimes  [2]time.Time
	lastCheck time.Time
}

const reloadCheckInterval = 30 * time.Second

func (r *certReloader) load() error {
	mt, err := r.stat()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("config: load tls.cert/tls.key: %w", err)
	}
	r.cert, r.modTimes, r.lastCheck = &cert, mt, time.Now()
	return nil
}

func (r *certReloader) stat() ([2]time.Time, error) {
	var mt [2]time.Time
	for i, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return mt, fmt.Errorf("config: %w", err)
		}
		mt[i] = fi.ModTime()
	}
	return mt, nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastCheck) >= reloadCheckInterval {
		r.lastCheck = time.Now()
		if mt, err := r.stat(); err == nil && mt != r.modTimes {
			_ = r.load() // on failure keep serving the previous certificate
		}
	}
	return r.cert, nil
}

// RootCAs returns the system roots plus tls.ca_bundle, for outbound TLS
// (federation requests, URL previews). With no bundle configured it returns
// the system pool unchanged.
func (c *Config) RootCAs() (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool() // e.g. minimal containers without a system store
	}
	if c.TLS.CABundle == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(c.TLS.CABundle)
	if err != nil {
		return nil, fmt.Errorf("config: tls.ca_bundle: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("config: tls.ca_bundle: no PEM certificates in %s", c.TLS.CABundle)
	}
	return pool, nil
}

// SIEMSyslogTLSConfig returns the client TLS config for the SIEM syslog
// collector (audit.siem.syslog with tls), or nil for plain TCP: the
// collector's certificate must chain to ca_file (or the system pool) and
// name the address's host; cert_file/key_file are presented when set.
func (c *Config) SIEMSyslogTLSConfig() (*tls.Config, error) {
	y := c.Audit.SIEM.Syslog
	if !y.TLS {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(y.Address)
	if err != nil {
		return nil, &FieldError{Path: "audit.siem.syslog.address", Msg: err.Error()}
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if y.CAFile != "" {
		pem, err := os.ReadFile(y.CAFile)
		if err != nil {
			return nil, &FieldError{Path: "audit.siem.syslog.ca_file", Msg: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &FieldError{Path: "audit.siem.syslog.ca_file", Msg: fmt.Sprintf("%s holds no PEM certificate", y.CAFile)}
		}
		tc.RootCAs = pool
	}
	if y.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(y.CertFile, y.KeyFile)
		if err != nil {
			return nil, &FieldError{Path: "audit.siem.syslog.cert_file", Msg: err.Error()}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
