// Package perm is the permission vocabulary shared by the routes that
// need permissions (clientapi's table and the components mounted on its
// router) and the role system that grants them (internal/rbac), so that
// neither imports the other for it.
//
// Every route carries a Requirement. There is no "nothing registered"
// default: the zero Requirement is invalid, so a route somebody forgot to
// classify is refused at start instead of being open to every role.
//
// Imports: the standard library only. Called by: clientapi, internal/rbac,
// adminapi, mediaapi, auditapi/endpoints and the assembly.
package perm
