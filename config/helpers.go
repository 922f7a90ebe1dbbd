package config

import (
	"net"
	"strconv"
	"strings"

	"enclave/internal/glob"
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
	host, _, _ := splitServerName(name)
	return host
}

// splitServerName splits a server name (or an allow/deny pattern) into
// its host and its port; hasPort says whether a ":port" part was given.
// IPv6 hosts keep their brackets.
func splitServerName(name string) (host, port string, hasPort bool) {
	if strings.HasPrefix(name, "[") {
		if end := strings.IndexByte(name, ']'); end >= 0 {
			if rest := name[end+1:]; strings.HasPrefix(rest, ":") {
				return name[:end+1], rest[1:], true
			}
		}
		return name, "", false
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		return name[:i], name[i+1:], true
	}
	return name, "", false
}

// FederationAllowed reports whether we may federate with serverName under
// federation.enabled, federation.denied_servers (checked first, so a deny
// always wins) and federation.allowed_servers (empty means allow all).
// Patterns match case-insensitively: one without a port matches the host
// on any port; one with a port matches only server names with that port
// (server names are what user IDs carry, "matrix.bravo.gov:8448").
func (c *Config) FederationAllowed(serverName string) bool {
	if !c.Federation.Enabled {
		return false
	}
	host, port, _ := splitServerName(strings.ToLower(serverName))
	matches := func(patterns []string) bool {
		for _, g := range patterns {
			ph, pp, withPort := splitServerName(strings.ToLower(g))
			if (!withPort || glob.Match(pp, port)) && glob.Match(ph, host) {
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

// FederationDestinationAllowed is FederationAllowed for a server we would
// connect to. With an allow-list, a pattern without a port admits only
// server names without one (reached on the port discovery gives, 8448 by
// default): a request claiming origin "allowed-host:1" is then not a
// reason to open a connection to port 1 of allowed-host, so nobody can use
// this server to probe a partner's ports. A pattern with a port admits
// exactly that port.
func (c *Config) FederationDestinationAllowed(serverName string) bool {
	if !c.FederationAllowed(serverName) {
		return false
	}
	if len(c.Federation.AllowedServers) == 0 {
		return true
	}
	host, port, hasPort := splitServerName(strings.ToLower(serverName))
	for _, g := range c.Federation.AllowedServers {
		ph, pp, withPort := splitServerName(strings.ToLower(g))
		if withPort != hasPort || !glob.Match(ph, host) {
			continue
		}
		if !withPort || glob.Match(pp, port) {
			return true
		}
	}
	return false
}

// serverPatternProblem says why an allow/deny entry can never match a
// server name ("" if it can): an operator's typo must fail loudly at
// start, not silently refuse (or admit) a partner.
func serverPatternProblem(g string) string {
	if !validGlob(g) {
		return "invalid glob"
	}
	host, port, withPort := splitServerName(g)
	switch {
	case host == "":
		return "no host part"
	case strings.HasPrefix(host, "[") && !strings.HasSuffix(host, "]"):
		return "unterminated IPv6 bracket"
	case !strings.HasPrefix(host, "[") && strings.ContainsAny(host, "[]"):
		return "brackets only enclose an IPv6 address"
	case !strings.HasPrefix(host, "[") && strings.Contains(host, ":"):
		return "an IPv6 address must be in brackets"
	}
	if !withPort {
		return ""
	}
	if port == "" {
		return "empty port"
	}
	wild := false
	for _, r := range port {
		switch {
		case r == '*' || r == '?':
			wild = true
		case r < '0' || r > '9':
			return "port " + strconv.Quote(port) + " is not a number"
		}
	}
	if !wild {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "port " + port + " is out of range 1-65535"
		}
	}
	return ""
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
