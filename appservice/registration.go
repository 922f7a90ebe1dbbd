package appservice

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Registration is one appservice's registration file, in the shape every
// bridge writes (Synapse's): the server reads it, it never writes it.
type Registration struct {
	ID              string     `yaml:"id"`
	URL             *string    `yaml:"url"` // null: the appservice only calls in, nothing is pushed
	ASToken         string     `yaml:"as_token"`
	HSToken         string     `yaml:"hs_token"`
	SenderLocalpart string     `yaml:"sender_localpart"`
	Namespaces      Namespaces `yaml:"namespaces"`
	RateLimited     *bool      `yaml:"rate_limited"`
	Protocols       []string   `yaml:"protocols"`
	// Ephemeral events (receipts, typing, presence) in transactions:
	// either key (stable v1.13, or MSC2409's).
	ReceiveEphemeral bool `yaml:"receive_ephemeral"`
	PushEphemeral    bool `yaml:"de.sorunome.msc2409.push_ephemeral"`
	// To-device messages, device lists and key counts in transactions,
	// and device_id masquerading (MSC3202; MSC2409's to-device flag).
	MSC3202      bool `yaml:"org.matrix.msc3202"`
	PushToDevice bool `yaml:"de.sorunome.msc2409.push_to_device"`
	// Device management without login (MSC4190).
	MSC4190 bool `yaml:"io.element.msc4190"`

	file string
}

// Namespaces are the users, aliases and rooms an appservice is interested
// in; an exclusive one is reserved for it.
type Namespaces struct {
	Users   []Namespace `yaml:"users"`
	Aliases []Namespace `yaml:"aliases"`
	Rooms   []Namespace `yaml:"rooms"`
}

// Namespace is one regular expression of a namespace.
type Namespace struct {
	Regex     string `yaml:"regex"`
	Exclusive bool   `yaml:"exclusive"`
	re        *regexp.Regexp
}

// String never shows the tokens: registrations end up in logs and errors.
func (r *Registration) String() string { return fmt.Sprintf("appservice %q (%s)", r.ID, r.file) }

// Sender is the user ID the as_token acts as when no user_id is given.
func (r *Registration) Sender(serverName string) string {
	return "@" + r.SenderLocalpart + ":" + serverName
}

// PushURL is the bridge's base URL, "" when it takes no transactions.
func (r *Registration) PushURL() string {
	if r.URL == nil {
		return ""
	}
	return strings.TrimRight(*r.URL, "/")
}

// IsRateLimited reports whether the appservice's requests are rate
// limited; bridges usually say false, and the spec's default is true.
func (r *Registration) IsRateLimited() bool { return r.RateLimited == nil || *r.RateLimited }

// ASTokenIs compares in constant time, so response timing does not leak
// the token byte by byte.
func (r *Registration) ASTokenIs(token string) bool {
	return subtle.ConstantTimeCompare([]byte(r.ASToken), []byte(token)) == 1
}

// HSTokenIs compares the token a bridge presents as the server's.
func (r *Registration) HSTokenIs(token string) bool {
	return subtle.ConstantTimeCompare([]byte(r.HSToken), []byte(token)) == 1
}

func match(ns []Namespace, s string, exclusiveOnly bool) bool {
	for _, n := range ns {
		if (!exclusiveOnly || n.Exclusive) && n.re.MatchString(s) {
			return true
		}
	}
	return false
}

// OwnsUser reports whether userID is in the user namespace (the sender
// included, which is always the appservice's).
func (r *Registration) OwnsUser(userID, serverName string) bool {
	return userID == r.Sender(serverName) || match(r.Namespaces.Users, userID, false)
}

// ExclusiveUser reports whether an exclusive user namespace holds userID.
func (r *Registration) ExclusiveUser(userID string) bool {
	return match(r.Namespaces.Users, userID, true)
}

// OwnsAlias reports whether alias is in the alias namespace.
func (r *Registration) OwnsAlias(alias string) bool { return match(r.Namespaces.Aliases, alias, false) }

// ExclusiveAlias reports whether an exclusive alias namespace holds alias.
func (r *Registration) ExclusiveAlias(alias string) bool {
	return match(r.Namespaces.Aliases, alias, true)
}

// WantsRoom reports whether the room namespace holds roomID.
func (r *Registration) WantsRoom(roomID string) bool { return match(r.Namespaces.Rooms, roomID, false) }

// LoadFiles reads and checks every registration file. The first problem
// fails the start, named by file and field; tokens never appear in it.
func LoadFiles(paths []string) ([]*Registration, error) {
	var out []*Registration
	ids, tokens := map[string]string{}, map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("appservice registration %s: %w", p, err)
		}
		r, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("appservice registration %s: %w", p, err)
		}
		r.file = p
		if prev, dup := ids[r.ID]; dup {
			return nil, fmt.Errorf("appservice registration %s: id: %q is already registered by %s", p, r.ID, prev)
		}
		ids[r.ID] = p
		for field, tok := range map[string]string{"as_token": r.ASToken, "hs_token": r.HSToken} {
			if prev, dup := tokens[tok]; dup {
				return nil, fmt.Errorf("appservice registration %s: %s: the same token is already used by %s", p, field, prev)
			}
			tokens[tok] = p
		}
		out = append(out, r)
	}
	return out, nil
}

// Parse reads one registration and checks every field the server relies
// on. Unknown keys are allowed: bridges add their own.
func Parse(b []byte) (*Registration, error) {
	var r Registration
	if err := yaml.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("not a registration file: %w", err)
	}
	req := []struct{ field, v string }{{"id", r.ID}, {"as_token", r.ASToken}, {"hs_token", r.HSToken}, {"sender_localpart", r.SenderLocalpart}}
	for _, f := range req {
		if strings.TrimSpace(f.v) == "" {
			return nil, fmt.Errorf("%s: required", f.field)
		}
	}
	if r.ASToken == r.HSToken {
		return nil, errors.New("hs_token: must differ from as_token")
	}
	if r.SenderLocalpart != strings.ToLower(r.SenderLocalpart) || strings.ContainsAny(r.SenderLocalpart, ":@ ") {
		return nil, fmt.Errorf("sender_localpart: %q is not a valid localpart", r.SenderLocalpart)
	}
	if r.URL != nil && *r.URL != "" {
		u, err := url.Parse(*r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("url: %q is not an http(s) URL", *r.URL)
		}
	} else {
		r.URL = nil
	}
	for _, g := range []struct {
		name string
		ns   []Namespace
	}{{"users", r.Namespaces.Users}, {"aliases", r.Namespaces.Aliases}, {"rooms", r.Namespaces.Rooms}} {
		for i := range g.ns {
			if g.ns[i].Regex == "" {
				return nil, fmt.Errorf("namespaces.%s[%d].regex: required", g.name, i)
			}
			re, err := regexp.Compile(g.ns[i].Regex)
			if err != nil {
				return nil, fmt.Errorf("namespaces.%s[%d].regex: %v", g.name, i, err)
			}
			g.ns[i].re = re
		}
	}
	return &r, nil
}

// NewRegistration makes a registration with fresh random tokens, for an
// operator to hand to a bridge (enclave appservice register). userRegex
// and aliasRegex, when set, are exclusive namespaces.
func NewRegistration(id, pushURL, senderLocalpart, userRegex, aliasRegex string) (*Registration, error) {
	r := &Registration{ID: id, ASToken: randomToken(), HSToken: randomToken(), SenderLocalpart: senderLocalpart, RateLimited: new(bool)}
	if pushURL != "" {
		r.URL = &pushURL
	}
	if userRegex != "" {
		r.Namespaces.Users = []Namespace{{Regex: userRegex, Exclusive: true}}
	}
	if aliasRegex != "" {
		r.Namespaces.Aliases = []Namespace{{Regex: aliasRegex, Exclusive: true}}
	}
	b, err := r.YAML()
	if err != nil {
		return nil, err
	}
	// Checked as the server will check it at start.
	return Parse(b)
}

// YAML renders the registration as a registration file. It holds the
// tokens: write it only where the operator asked.
func (r *Registration) YAML() ([]byte, error) { return yaml.Marshal(r) }

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b)
}
