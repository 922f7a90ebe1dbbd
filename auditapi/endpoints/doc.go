// Package endpoints serves the audit trail to auditors under
// /_enclave/audit/v1: paged listing with filters, the signed head, the
// public key, server-side verification and export. Reading needs the
// read_audit permission, exporting export_audit (checked by RBAC's rules
// and again here). Nothing here, or anywhere, edits or deletes entries.
//
// Imports: auditapi, storage, internal/httpapi, internal/perm, internal/rbac.
// Called by: the assembly, which mounts it on the client listener.
package endpoints
