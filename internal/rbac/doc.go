// Package rbac is Enclave's role-based access control: server roles, the
// permissions (internal/perm) they grant, and the authorizer that checks
// every authenticated request against the requirement its route carries
// (the route tables: clientapi/routes.go and the components' Register).
//
// Separation of duties is built into the fixed roles: admin administers
// but cannot read the audit trail; auditor reads and exports it but holds
// no other permission. Nobody can edit or delete audit entries: no
// permission exists for it because no endpoint does it.
//
// Imports: internal/perm, internal/httpapi, storage (role rows); audit
// entries go out through the Recorder it is given. Called by: the assembly
// (the client API's authorizer), adminapi and auditapi/endpoints (role
// endpoints), cmd/enclave (`user role`).
package rbac
