package glob

// Match reports whether s matches pattern, where * matches any run of
// characters and ? any single byte; every other byte matches itself.
// There are no [character classes] (brackets are literal in IPv6 server
// names). It runs in time linear in len(pattern)·len(s) with a single
// backtrack point, so a hostile pattern (a remote room's m.room.server_acl)
// cannot make it explode.
func Match(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0 // last * in pattern, and where in s it began matching
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			// Let the last * swallow one more character and retry.
			mark++
			p, i = star+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
