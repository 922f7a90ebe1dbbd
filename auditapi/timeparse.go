package auditapi

import (
	"fmt"
	"strconv"
	"time"
)

// ParseTime reads a time bound given as Unix milliseconds, RFC 3339
// (2025-01-31T12:00:00Z) or a UTC date (2025-01-31). "" is 0 (open).
func ParseTime(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("time %q is negative", s)
		}
		return n, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UnixMilli(), nil
		}
	}
	return 0, fmt.Errorf("cannot read time %q: use Unix milliseconds, RFC 3339 or YYYY-MM-DD", s)
}
