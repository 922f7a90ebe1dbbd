package config

import (
	"net"
	"strings"
)

// ClientBaseURL is the homeserver base URL advertised to clients (no
// trailing slash). Without well_known.client_base_url it is derived as
// scheme://host[:port]: https if listen.client_tls, the host part of
// server_name, and listen.client's port unless it is the scheme default.
// This suits direct serving; behind a reverse proxy set the option.
func (c *Config) ClientBaseURL() string {
	if u := c.WellKnown.ClientBaseURL; u != "" {
		return strings.TrimRight(u, "/")
	}
	scheme, defaultPort := "http", "80"
	if c.Listen.ClientTLS {
		scheme, defaultPort = "https", "443"
	}
	host := serverHost(c.ServerName)
	if _, port, err := net.SplitHostPort(c.Listen.Client); err == nil && port != defaultPort && port != "" {
		host += ":" + port
	}
	return scheme + "://" + host
}

// serverHost strips an optional :port from a server name, keeping IPv6
// brackets so the result can go straight into a URL.
func serverHost(name string) string {
	if strings.HasPrefix(name, "[") {
		if end := strings.IndexByte(name, ']'); end >= 0 {
			return name[:end+1]
		}
		return name
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		return name[:i]
	}
	return name
}

// FederationAllowed reports whether we may federate with serverName under
// federation.enabled, federation.denied_servers (checked first, so a deny
// always wins) and federation.allowed_servers (empty means allow all).
// Globs match the lower-cased host part, ignoring any port.
func (c *Config) FederationAllowed(serverName string) bool {
	if !c.Federation.Enabled {
		return false
	}
	host := strings.ToLower(serverHost(serverName))
	matches := func(globs []string) bool {
		for _, g := range globs {
			if globMatch(strings.ToLower(g), host) {
				return true
			}
		}
		return false
	}
	if matches(c.Federation.DeniedServers) {
		return false
	}
	return len(c.Federation.AllowedServers) == 0 || matches(c.Federation.AllowedServers)
}

// globMatch matches s against pattern, where * matches any run of
// characters and ? any single character. Unlike path.Match there are no
// [character classes], because brackets are literal in IPv6 server names.
func globMatch(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0 // last * position in pattern, and where in s it began matching
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			// Let the last * swallow one more character and retry.
			mark++
			p, i = star+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// validGlob accepts non-empty patterns made of server-name characters plus
// the wildcards * and ?.
func validGlob(g string) bool {
	if g == "" {
		return false
	}
	for _, r := range g {
		if !isAlnum(r) && !strings.ContainsRune(".-:[]*?", r) {
			return false
		}
	}
	return true
}
