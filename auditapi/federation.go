package auditapi

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"
)

// FederationRefusalHook returns the federation component's audit callback
// (federationapi.AuditFunc) for traffic refused by the federation policy:
// action is "federation.inbound_refused" or "federation.outbound_refused".
// Refusals change nothing, so the record has its own transaction.
func (l *Log) FederationRefusalHook() func(action string, server spec.ServerName, detail string) {
	return func(action string, server spec.ServerName, detail string) {
		e := Entry{Action: ActionFedRefuse, Outcome: OutcomeDenied, Details: map[string]any{"direction": "inbound", "reason": detail}}
		if action == "federation.outbound_refused" {
			e.Target = string(server)
			e.Details["direction"] = "outbound"
		} else {
			e.Actor.Server = string(server)
		}
		if err := l.Record(context.Background(), l.db, e); err != nil {
			logrus.WithError(err).WithField("server", server).Error("audit: recording a federation refusal")
		}
	}
}
