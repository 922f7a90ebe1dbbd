// Package adminapi is the server administration API: the Synapse admin
// API paths and shapes that tools such as synadm and synapse-admin use
// (/_synapse/admin/...), and Enclave's own extensions under
// /_enclave/admin/v1 (roles, legal holds).
//
// Every endpoint is authorised by RBAC (each route's requirement: admin API
// use plus manage_users, manage_rooms or manage_roles). Every call is
// recorded in the audit trail (admin.call, with its outcome), and every
// change also records its own entry inside the transaction that makes it.
//
// Imports: storage (users, tokens, registration tokens, holds), roomserver
// for every change to rooms (purge, retention, notices, deletion through
// its Rooms interface), auditapi, internal/rbac, internal/httpapi,
// internal/perm, internal/accounts. Called by: the assembly, which mounts
// it on the client listener.
package adminapi
