package config

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration that reads and writes as a Go duration string
// ("90s", "5m", "1h30m", or a bare "0"), so config files stay human-readable
// instead of holding nanosecond integers.
type Duration struct {
	time.Duration
}

// String renders the shortest conventional form ("5m" rather than "5m0s",
// "0" rather than "0s"), which is what operators write and what the
// generated config shows.
func (d Duration) String() string {
	if d.Duration == 0 {
		return "0"
	}
	s := d.Duration.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// UnmarshalText parses a Go duration string. It serves environment overrides
// (the env code handles any encoding.TextUnmarshaler generically).
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(text)))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 30s, 5m, 1h, or 0)", string(text))
	}
	d.Duration = v
	return nil
}

// MarshalText is the inverse of UnmarshalText.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// UnmarshalYAML accepts any scalar, including a bare integer 0 which YAML
// would otherwise refuse to place into a text-unmarshalled field.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: duration must be a string such as \"5m\"", n.Line)
	}
	if err := d.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// MarshalYAML writes the short string form, and zero as a bare 0 rather
// than a quoted "0".
func (d Duration) MarshalYAML() (any, error) {
	if d.Duration == 0 {
		return 0, nil
	}
	return d.String(), nil
}
