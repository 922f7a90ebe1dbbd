package glob

import (
	"strings"
	"testing"
	"time"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"", "", true}, {"", "a", false}, {"*", "", true}, {"*", "anything", true},
		{"matrix.*.gov", "matrix.bravo.gov", true}, {"matrix.*.gov", "matrix.bravo.org", false},
		{"?.example", "a.example", true}, {"?.example", "ab.example", false},
		{"*.example", "example", false}, {"a*b*c", "aXbYc", true}, {"a*b*c", "aXbY", false},
		{"[::1]", "[::1]", true}, {"[ab]", "a", false}, // brackets are literal
	} {
		if got := Match(c.p, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}

// A pattern of many stars against a long near-miss must not take
// exponential time (the recursive matcher it replaced did).
func TestMatchHostilePattern(t *testing.T) {
	p := strings.Repeat("*a", 30) + "b"
	s := strings.Repeat("a", 250)
	start := time.Now()
	if Match(p, s) {
		t.Fatal("matched")
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("took %v", d)
	}
}
