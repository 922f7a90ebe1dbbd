package server

import (
	"context"

	"enclave/auditapi"
	"enclave/internal/rbac"
	"enclave/storage"
)

// RBACAudit records RBAC's decisions in the audit log l (nil: detached, as
// by a command-line tool). RBAC takes a recorder rather than the log so
// that it imports no component.
func RBACAudit(l *auditapi.Log) rbac.Recorder {
	return func(ctx context.Context, q storage.Querier, e rbac.AuditEntry) error {
		entry := auditapi.Entry{
			Actor:   auditapi.Actor{UserID: e.UserID, DeviceID: e.DeviceID},
			Target:  e.Target,
			Details: e.Details,
		}
		switch e.Action {
		case rbac.AuditRoleChange:
			entry.Action = auditapi.ActionRoleChange
		case rbac.AuditAccessDenied:
			entry.Action, entry.Outcome = auditapi.ActionAccessDenied, auditapi.OutcomeDenied
		}
		return l.Record(ctx, q, entry)
	}
}
