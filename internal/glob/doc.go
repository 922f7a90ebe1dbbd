// Package glob is the one matcher for the Matrix-style globs (* and ?)
// that several parts of the server take from configuration or from rooms:
// the federation allow-list, server ACLs, MSC4155 invite filters and the
// URL-preview host list.
//
// Imports: nothing (no component). Called by: config (federation
// allow-list), federationapi (m.room.server_acl), internal/invitefilter
// (MSC4155) and mediaapi (media.url_preview.allowed_hosts).
package glob
