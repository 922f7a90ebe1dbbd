package syncapi

import (
	"fmt"
	"strconv"
	"strings"
)

// Token is a position in the sync stream: Pos orders every stored row (see
// storage.Stream); Eph counts in-memory ephemeral changes (typing), which
// do not survive a restart and need no durable order.
type Token struct {
	Pos int64
	Eph int64
}

func (t Token) String() string { return fmt.Sprintf("s%d_%d", t.Pos, t.Eph) }

// ParseToken reads a sync or pagination token. "s123" and "s123_4" both
// parse; anything else is an error.
func ParseToken(s string) (Token, error) {
	if !strings.HasPrefix(s, "s") {
		return Token{}, fmt.Errorf("invalid token %q", s)
	}
	parts := strings.Split(s[1:], "_")
	var t Token
	var err error
	// Pagination tokens may be negative (backfilled history).
	if t.Pos, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
		return Token{}, fmt.Errorf("invalid token %q", s)
	}
	if len(parts) > 1 {
		if t.Eph, err = strconv.ParseInt(parts[1], 10, 64); err != nil || t.Eph < 0 {
			return Token{}, fmt.Errorf("invalid token %q", s)
		}
	}
	if len(parts) > 2 {
		return Token{}, fmt.Errorf("invalid token %q", s)
	}
	return t, nil
}
