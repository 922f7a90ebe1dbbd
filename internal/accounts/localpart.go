package accounts

import "strings"

// ValidLocalpart reports whether s uses only the characters the spec
// allows in new user IDs (lowercase historical set) and is not reserved.
func ValidLocalpart(s string) bool {
	if s == "" || strings.HasPrefix(s, "_") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '=', c == '-', c == '/', c == '+':
		default:
			return false
		}
	}
	return true
}
