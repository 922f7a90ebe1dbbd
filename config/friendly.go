package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Errors an operator can act on: the YAML path and what is wrong with it
// (`rate_limits.per_second: "many" is not a number`,
// `rate_limits.per_secnd: unknown option (did you mean per_second?)`),
// not a line number and a Go type.

// checkNode walks a decoded YAML document against the Config struct and
// reports unknown keys (with the nearest known one) and values that do not
// parse as their option's type, each by its path.
func checkNode(n *yaml.Node, t reflect.Type, prefix string) []error {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	if n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return nil // an empty file: every option at its default
	}
	if n.Kind != yaml.MappingNode {
		where := strings.TrimSuffix(prefix, ".")
		if where == "" {
			where = "the file"
		}
		return []error{fmt.Errorf("%s: must be a mapping of options (line %d)", where, n.Line)}
	}
	fields := map[string]reflect.StructField{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		if name := yamlName(f); name != "" {
			fields[name] = f
			names = append(names, name)
		}
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i].Value, n.Content[i+1]
		path := prefix + key
		f, ok := fields[key]
		if !ok {
			msg := fmt.Sprintf("%s: unknown option (line %d)", path, n.Content[i].Line)
			if near := nearest(key, names); near != "" {
				msg = fmt.Sprintf("%s: unknown option (did you mean %s?) (line %d)", path, near, n.Content[i].Line)
			}
			errs = append(errs, fmt.Errorf("%s", msg))
			continue
		}
		if isLeaf(f.Type) {
			if err := val.Decode(reflect.New(f.Type).Interface()); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s (line %d)", path, valueProblem(val, f.Type), val.Line))
			}
			continue
		}
		errs = append(errs, checkNode(val, f.Type, path+".")...)
	}
	return errs
}

// valueProblem says in words why val is not a t.
func valueProblem(val *yaml.Node, t reflect.Type) string {
	got := fmt.Sprintf("%q", val.Value)
	if val.Kind != yaml.ScalarNode {
		got = "a " + map[yaml.Kind]string{yaml.SequenceNode: "list", yaml.MappingNode: "mapping"}[val.Kind]
	}
	switch {
	case t == reflect.TypeOf(Duration{}) || t == reflect.TypeOf(time.Duration(0)):
		return got + " is not a duration (like 30s, 5m, 1h)"
	case t.Kind() == reflect.Bool:
		return got + " is not true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return got + " is not a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return got + " is not a number"
	case t.Kind() == reflect.Slice:
		return got + " is not a list"
	case t.Kind() == reflect.String:
		return got + " is not a string"
	}
	return got + " is not a valid " + t.Kind().String()
}

// nearest returns the name closest to s by edit distance, if it is close
// enough to be a typo of it.
func nearest(s string, names []string) string {
	best, bestD := "", len(s)/2+2
	for _, n := range names {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// envPrefix starts every environment variable Enclave reads.
const envPrefix = "ENCLAVE_"

// unknownEnv returns an error naming every ENCLAVE_* variable in environ
// that is no option's (a misspelt override is otherwise silently ignored),
// except the test harness's ENCLAVE_TEST_* and variables the config itself
// names as holding a secret (the *_env options).
func (c *Config) unknownEnv(environ []string) error {
	known := map[string]bool{}
	var names []string
	for _, o := range c.options() {
		name := EnvVar(o.Path)
		known[name] = true
		names = append(names, name)
		if strings.HasSuffix(o.Path, "_env") && o.Value.Kind() == reflect.String && o.Value.String() != "" {
			known[o.Value.String()] = true
		}
	}
	var bad []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || known[name] || strings.HasPrefix(name, envPrefix+"TEST_") {
			continue
		}
		msg := name + " matches no option"
		if near := nearest(name, names); near != "" {
			msg += " (did you mean " + near + "?)"
		}
		bad = append(bad, msg)
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("config: unknown environment variables: %s; `enclave config` lists every option's variable", strings.Join(bad, "; "))
}

// RestartNeeded lists the options that differ between the running config
// and next, other than those applied on SIGHUP (log.*, federation.*): a
// reload names them so the operator knows a restart is due.
func RestartNeeded(running, next *Config) []string {
	a, b := running.options(), next.options()
	var out []string
	for i := range a {
		p := a[i].Path
		if p == "log.level" || p == "log.format" || strings.HasPrefix(p, "federation.") || strings.HasPrefix(p, "app_services.") {
			continue
		}
		if !reflect.DeepEqual(a[i].Value.Interface(), b[i].Value.Interface()) {
			out = append(out, p)
		}
	}
	return out
}
