package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// EnvPrefix starts every override variable.
const EnvPrefix = "ENCLAVE_"

// EnvVar returns the environment variable that overrides the option at the
// given YAML path, e.g. "listen.client" → "ENCLAVE_LISTEN_CLIENT".
func EnvVar(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// option is one leaf setting found by walking Config's yaml tags.
type option struct {
	Path   string // YAML path, e.g. "listen.client"
	Field  reflect.StructField
	Value  reflect.Value // addressable field value
	Secret string        // secret tag value: "" (not secret), "true" or "url"
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// isLeaf reports whether a field is a single option rather than a section.
// Structs that parse themselves from text (Duration) are options.
func isLeaf(t reflect.Type) bool {
	return t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(textUnmarshalerType)
}

// yamlName returns the key a field uses in YAML, or "" if it is not an option.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		// Every option must spell out its key: operators rely on exact paths.
		panic(fmt.Sprintf("config: field %s has no yaml tag", f.Name))
	}
	return name
}

// options lists every leaf option of c in declaration order.
func (c *Config) options() []option {
	var out []option
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			path := prefix + name
			if isLeaf(f.Type) {
				out = append(out, option{Path: path, Field: f, Value: v.Field(i), Secret: f.Tag.Get("secret")})
			} else {
				walk(v.Field(i), path+".")
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// ApplyEnv overrides options from environment variables named by EnvVar.
// lookup is normally os.LookupEnv; it is a parameter so tests need not touch
// the process environment. A variable that is set but empty still overrides
// (clearing a string or list), since that is what the operator wrote.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	for _, o := range c.options() {
		name := EnvVar(o.Path)
		raw, ok := lookup(name)
		if !ok {
			continue
		}
		if err := setFromString(o.Value, raw); err != nil {
			return fmt.Errorf("config: %s: %w", name, err)
		}
	}
	return nil
}

// setFromString parses raw into v according to v's type.
func setFromString(v reflect.Value, raw string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(raw))
	}
	s := strings.TrimSpace(raw)
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw) // untrimmed: secrets may legitimately contain spaces
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q", raw)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", raw)
		}
		v.SetInt(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid number %q", raw)
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported list type %s", v.Type())
		}
		v.Set(reflect.ValueOf(splitList(raw)))
	default:
		return fmt.Errorf("unsupported option type %s", v.Type())
	}
	return nil
}

// splitList parses a comma-separated list, trimming blanks and dropping
// empty items so "a, b," and "" behave as expected.
func splitList(raw string) []string {
	out := []string{}
	for _, item := range strings.Split(raw, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
