// Package service runs imports inside a running server: POST
// /_enclave/admin/v1/import/{platform} takes an export as the request
// body, spools it to the data directory while hashing it, and imports it
// through the server's own room server, media repository and audit log
// (so `enclave import --server` needs no downtime), answering the report.
//
// Imports: importer, importer/slack, importer/mattermost, internal/httpapi,
// internal/perm, storage, auditapi.
//
// Called by: internal/server (the assembly).
package service
