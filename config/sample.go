package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

const fileHeader = `# Enclave homeserver configuration.
#
# Every option is listed below with what it does, its default and the
# environment variable that overrides it (ENCLAVE_ + the YAML path in upper
# case with dots as underscores; lists are comma-separated). Relative paths
# are resolved against the data directory. Unknown keys are rejected.
`

// MarshalAnnotated renders c as a YAML config file in which every option is
// preceded by comments giving its meaning, default and environment variable.
// Secrets are written in clear: the output is meant to be the config file.
func MarshalAnnotated(c *Config) ([]byte, error) {
	var b strings.Builder
	b.WriteString(fileHeader)
	if err := writeSection(&b, reflect.ValueOf(c).Elem(), reflect.ValueOf(Default()).Elem(), "", 0); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// writeSection emits the fields of one struct; def is the matching value
// from Default(), used for the "Default:" line.
func writeSection(b *strings.Builder, v, def reflect.Value, prefix string, depth int) error {
	indent := strings.Repeat("  ", depth)
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		path := prefix + name
		if depth == 0 || i > 0 {
			b.WriteString("\n") // blank line between options, not after a section header
		}
		writeComment(b, indent, f.Tag.Get("doc"))
		if !isLeaf(f.Type) {
			fmt.Fprintf(b, "%s%s:\n", indent, name)
			if err := writeSection(b, v.Field(i), def.Field(i), path+".", depth+1); err != nil {
				return err
			}
			continue
		}
		val, err := yamlValue(v.Field(i))
		if err != nil {
			return fmt.Errorf("config: render %s: %w", path, err)
		}
		dval, err := yamlValue(def.Field(i))
		if err != nil {
			return fmt.Errorf("config: render %s: %w", path, err)
		}
		// Not wrapped: keeps the variable name greppable on one line.
		fmt.Fprintf(b, "%s# Default: %s   Env: %s\n", indent, dval, EnvVar(path))
		fmt.Fprintf(b, "%s%s: %s\n", indent, name, val)
	}
	return nil
}

// writeComment word-wraps text into "# " lines so the file stays readable
// in an 80-column terminal.
func writeComment(b *strings.Builder, indent, text string) {
	const width = 78
	line := ""
	flush := func() {
		if line != "" {
			fmt.Fprintf(b, "%s# %s\n", indent, line)
			line = ""
		}
	}
	for _, word := range strings.Fields(text) {
		if line != "" && len(indent)+2+len(line)+1+len(word) > width {
			flush()
		}
		if line == "" {
			line = word
		} else {
			line += " " + word
		}
	}
	flush()
}

// yamlValue renders one option as a single-line YAML value, letting yaml.v3
// decide on quoting. Lists use flow style ([a, b]) to stay on one line.
func yamlValue(v reflect.Value) (string, error) {
	var n yaml.Node
	if err := n.Encode(v.Interface()); err != nil {
		return "", err
	}
	if n.Kind == yaml.SequenceNode {
		n.Style = yaml.FlowStyle
	}
	out, err := yaml.Marshal(&n)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(out), "\n"), nil
}

// EnsureDataDir creates dataDir (mode 0700) and, if it holds no config file
// yet, writes a fully commented enclave.yaml (mode 0600) with safe defaults:
// registration closed, plus a fresh random registration.shared_secret so the
// operator can still create the first users through the admin API.
// An existing config file is never touched.
func EnsureDataDir(dataDir string) (configPath string, created bool, err error) {
	configPath, err = WriteNewConfig(dataDir, "")
	if errors.Is(err, fs.ErrExist) {
		return configPath, false, nil
	}
	if err != nil {
		return "", false, err
	}
	return configPath, true, nil
}

// WriteNewConfig is EnsureDataDir for `enclave init`: it writes the default
// config with serverName (the default when empty) and fails with an error
// wrapping fs.ErrExist when a config is already there, because an existing
// deployment's settings and secret must never be replaced silently.
func WriteNewConfig(dataDir, serverName string) (configPath string, err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("config: create data dir: %w", err)
	}
	configPath = filepath.Join(dataDir, ConfigFileName)
	if _, err := os.Stat(configPath); err == nil {
		return configPath, fmt.Errorf("config: %s: %w", configPath, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("config: %w", err)
	}

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", fmt.Errorf("config: generate shared secret: %w", err)
	}
	c := Default()
	if serverName != "" {
		c.ServerName = serverName
	}
	c.Registration.SharedSecret = hex.EncodeToString(secret)
	data, err := MarshalAnnotated(c)
	if err != nil {
		return "", err
	}
	// O_EXCL: if another process created the file since the Stat, keep theirs.
	f, err := os.OpenFile(configPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return configPath, fmt.Errorf("config: %s: %w", configPath, fs.ErrExist)
	}
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(configPath)
		return "", fmt.Errorf("config: write %s: %w", configPath, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(configPath)
		return "", fmt.Errorf("config: write %s: %w", configPath, err)
	}
	return configPath, nil
}

// Mask replaces secret values in Print output.
const Mask = "********"

// Print writes the effective configuration, one option per line as
// "path = value  (ENV_VAR)", for debugging deployments. Secret options are
// shown as Mask when set, and passwords inside database URLs are hidden,
// so the output is safe to paste into a bug report.
func Print(w io.Writer, c *Config) error {
	for _, o := range c.options() {
		val, err := yamlValue(o.Value)
		if err != nil {
			return fmt.Errorf("config: render %s: %w", o.Path, err)
		}
		switch o.Secret {
		case "":
		case "url":
			val = redactURL(o.Value.String(), val)
		default:
			if !o.Value.IsZero() && !(o.Value.Kind() == reflect.Slice && o.Value.Len() == 0) {
				val = Mask
			}
		}
		if _, err := fmt.Fprintf(w, "%s = %s  (%s)\n", o.Path, val, EnvVar(o.Path)); err != nil {
			return err
		}
	}
	return nil
}

// redactURL masks a URL's password, whether in the userinfo or (as libpq
// also accepts) a password= query parameter; rendered is returned unchanged
// when there is nothing to hide.
func redactURL(raw, rendered string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Unparseable URLs might still contain credentials; play safe.
		return Mask
	}
	// url.URL would percent-encode a literal Mask in the userinfo, so insert
	// a URL-safe placeholder and swap it afterwards.
	const placeholder = "ENCLAVE-REDACTED-PASSWORD"
	changed := false
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), placeholder)
		changed = true
	}
	if u.RawQuery != "" {
		params := strings.Split(u.RawQuery, "&")
		for i, p := range params {
			k, _, _ := strings.Cut(p, "=")
			if uk, err := url.QueryUnescape(k); err != nil || strings.EqualFold(uk, "password") {
				params[i] = k + "=" + Mask
				changed = true
			}
		}
		u.RawQuery = strings.Join(params, "&")
	}
	if !changed {
		return rendered
	}
	return strings.Replace(u.String(), placeholder, Mask, 1)
}

// PrintYAML writes the effective configuration as commented YAML (the form
// of the generated file), with secrets masked as Print masks them, so that
// the output can be pasted into a bug report or kept as a template.
func PrintYAML(w io.Writer, c *Config) error {
	cp := *c
	for _, o := range cp.options() {
		switch {
		case o.Secret == "":
		case o.Secret == "url" && o.Value.Kind() == reflect.String:
			if val, err := yamlValue(o.Value); err == nil {
				o.Value.SetString(strings.Trim(redactURL(o.Value.String(), val), `"`))
			}
		case o.Value.Kind() == reflect.String && o.Value.String() != "":
			o.Value.SetString(Mask)
		case o.Value.Type() == reflect.TypeOf([]string(nil)) && o.Value.Len() > 0:
			o.Value.Set(reflect.ValueOf([]string{Mask}))
		}
	}
	data, err := MarshalAnnotated(&cp)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}
