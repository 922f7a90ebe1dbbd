package mediaapi

import (
	"net/netip"
	"net/url"
	"testing"
)

func TestPreviewAddressPolicy(t *testing.T) {
	for addr, internal := range map[string]bool{
		"127.0.0.1": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.1.1": true, "169.254.169.254": true,
		"100.64.0.1": true, "0.0.0.0": true, "::1": true, "fe80::1": true, "fd00:ec2::254": true, "::ffff:10.0.0.1": true,
		"64:ff9b::a00:1": true, "224.0.0.1": true, "8.8.8.8": false, "2001:4860:4860::8888": false, "100.128.0.1": false,
	} {
		if got := internalAddr(netip.MustParseAddr(addr)); got != internal {
			t.Errorf("internalAddr(%s) = %v, want %v", addr, got, internal)
		}
	}
	p := newPreviewer(PreviewOptions{Enabled: true, AllowedHosts: []string{"*.example.gov", "intranet.local", "[::1]"}})
	for host, want := range map[string][2]bool{
		"news.example.gov": {true, false}, "example.gov": {false, false}, "INTRANET.local.": {true, true},
		"other.local": {false, false}, "::1": {true, true},
	} {
		if a, e := p.allowed(host); a != want[0] || e != want[1] {
			t.Errorf("allowed(%s) = %v, %v; want %v", host, a, e, want)
		}
	}
	for raw, ok := range map[string]bool{"https://news.example.gov/a": true, "ftp://news.example.gov/a": false, "http://evil.gov/": false, "http://news.example.gov.evil.org/": false} {
		u, _ := url.Parse(raw)
		if err := p.checkURL(u); (err == nil) != ok {
			t.Errorf("checkURL(%s) = %v", raw, err)
		}
	}
}
