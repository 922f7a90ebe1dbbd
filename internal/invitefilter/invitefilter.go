package invitefilter

import (
	"encoding/json"
	"strings"

	"enclave/internal/glob"
)

// Type is the (unstable) account data type holding the config.
const Type = "org.matrix.msc4155.invite_permission_config"

// CapabilityEnforced is the /capabilities key telling clients that the
// server enforces the config (so they need not).
const CapabilityEnforced = "org.matrix.msc4155.invite_permission_config_enforced"

// Verdict is what happens to an invite.
type Verdict int

const (
	Allow  Verdict = iota // deliver it
	Ignore                // accept it, never show it to the invitee
	Block                 // refuse it (403)
)

type config struct {
	AllowedUsers   []string `json:"allowed_users"`
	IgnoredUsers   []string `json:"ignored_users"`
	BlockedUsers   []string `json:"blocked_users"`
	AllowedServers []string `json:"allowed_servers"`
	IgnoredServers []string `json:"ignored_servers"`
	BlockedServers []string `json:"blocked_servers"`
}

// Decide applies the config content (nil or invalid: allow all) to an
// invite from inviter: allow, then ignore, then block, first for the
// user's own rules and only then for their server's, so a user can be
// let in from a blocked server and shut out of an allowed one.
func Decide(content json.RawMessage, inviter string) Verdict {
	var c config
	if len(content) == 0 || json.Unmarshal(content, &c) != nil {
		return Allow
	}
	server := ""
	if i := strings.IndexByte(inviter, ':'); i >= 0 {
		server = inviter[i+1:]
	}
	switch {
	case anyGlob(c.AllowedUsers, inviter):
		return Allow
	case anyGlob(c.IgnoredUsers, inviter):
		return Ignore
	case anyGlob(c.BlockedUsers, inviter):
		return Block
	case anyGlob(c.AllowedServers, server):
		return Allow
	case anyGlob(c.IgnoredServers, server):
		return Ignore
	case anyGlob(c.BlockedServers, server):
		return Block
	}
	return Allow
}

func anyGlob(patterns []string, s string) bool {
	if s == "" {
		return false
	}
	for _, p := range patterns {
		if glob.Match(p, s) {
			return true
		}
	}
	return false
}
