// Package auditapi is Enclave's audit trail: an append-only, hash-chained
// log of security-relevant actions kept in the store, with signed
// checkpoints, an exported head (to detect truncation), offline
// verification and export.
//
// Writing: callers record inside the transaction of the action they
// record, so that no action is stored without its record:
//
//	err := db.WithTx(ctx, func(tx *storage.Tx) error {
//		if err := doTheThing(ctx, tx); err != nil {
//			return err
//		}
//		return log.Record(ctx, tx, auditapi.Entry{
//			Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
//			Action: auditapi.ActionDeviceRemove, Target: deviceID,
//		})
//	})
//
// If the audit write fails, the transaction fails and so does the action.
// Record fills in the actor's IP address and user agent from the request
// context (see WithActor), which the client API attaches to every request.
//
// Chaining: each row gets an entry hash (SHA-256 over a canonical encoding
// of its content) when written; the process's sealer then links committed
// rows, in commit order, into the chain (see storage/audit.go), so writers
// never wait on one another for the chain head.
//
// Imports: storage only. Called by: every component that records an
// action (the assembly hands each the process's *Log), auditapi/endpoints
// (reading), cmd/enclave (verify, export, detached records).
package auditapi
