// Package clientapi is the Client-Server API: a thin HTTP face that checks
// who is asking and what they sent, then hands the work to the room server,
// the sync stream and the store.
//
// Every route is a row of the table in routes.go, with the permission it
// needs (internal/perm); the handlers live on handler groups (accounts,
// rooms, keys, events, directory, devices, syncing, social, accountData),
// each holding only its own dependencies.
//
// Imports: roomserver (every room write), syncapi (/sync), storage (the
// tables of accounts, devices, keys, account data), auditapi, the push-rule
// notifier and internal/*. Called by: the assembly only (TestArchitecture).
package clientapi
