// Package mediaapi is the media repository: uploads, downloads and
// thumbnails (authenticated /_matrix/client/v1/media and the legacy
// /_matrix/media endpoints), with every object sealed at rest.
//
// Each blob and thumbnail is sealed with AES-256-GCM under its own data key
// (internal/sealing, chunked so uploads and downloads stream), and each data
// key is stored wrapped by the agency's key-encryption key (KEK). The file
// name, content type and hash are sealed beside the content; the disk holds
// only randomly named ciphertext.
//
// Its queries (schema.go, keys.go, admin.go) stay here rather than in
// storage: the media tables are read and written by nothing else, and a
// key rotation rewraps rows in step with the repository's KEK handling
// inside one transaction. Their schema is in storage (media.go) so that it
// runs in the store's one ordered list of migrations.
//
// URL previews (preview.go) are the one outbound fetch a user can ask for:
// off unless configured, and then held to allowed hosts and public
// addresses at every connection.
//
// Imports: storage, auditapi, config, internal/sealing, internal/httpapi,
// internal/perm, internal/lru, internal/glob, golang.org/x/net/html. Called by: the
// assembly (mounted on the client listener) and federationapi (ServeFederation, through its LocalMedia interface);
// cmd/enclave for `keys rotate`.
package mediaapi
