package server

import (
	"context"
	"sync"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/auditapi/endpoints"
)

// auditLogs maps each Server to its audit trail.
var auditLogs sync.Map // *Server → *auditapi.Log

// Audit: the audit log (sealer, checkpoints, head export), the room event
// hook that records every stored event in its own transaction, the media
// and federation-refusal hooks, the auditor endpoints, and server start
// and stop entries.
func init() {
	addWiring("audit", func(ctx context.Context, s *Server) error {
		c := s.Config.Audit
		l, err := auditapi.Open(ctx, s.DB, auditapi.Options{
			Enabled: c.Enabled, ServerName: s.Config.ServerName, KeyID: s.KeyID, Key: s.Key,
			CheckpointEvery: c.CheckpointEvery, CheckpointInterval: c.CheckpointInterval.Duration,
			HeadExportPath: c.HeadExportPath, HeadSyslog: c.HeadSyslog,
		})
		if err != nil {
			return err
		}
		auditLogs.Store(s, l)
		s.Rooms.AddHook(auditapi.EventHook(s.Config.ServerName))
		(&endpoints.API{DB: s.DB, Client: s.Client, RBAC: s.RBAC(), Log: l, ServerName: s.Config.ServerName,
			Version: Version, HeadPath: c.HeadExportPath}).Register()
		// Media and federation are wired after audit: hook them once
		// everything is wired.
		s.OnStart(func() error {
			if m := s.Media(); m != nil {
				m.SetAuditHook(auditapi.MediaHook(s.DB))
			}
			if f := s.Federation(); f != nil {
				f.SetAuditHook(auditapi.FederationRefusalHook(s.DB))
			}
			return nil
		})
		if err := auditapi.Record(ctx, s.DB, auditapi.Entry{Actor: auditapi.Actor{Server: s.Config.ServerName},
			Action: auditapi.ActionServerStart, Details: map[string]any{"version": Version}}); err != nil {
			l.Close()
			auditLogs.Delete(s)
			return err
		}
		s.OnShutdown(func() {
			if err := auditapi.Record(context.Background(), s.DB, auditapi.Entry{Actor: auditapi.Actor{Server: s.Config.ServerName},
				Action: auditapi.ActionServerStop}); err != nil {
				logrus.WithError(err).Error("audit: recording server stop")
			}
			if err := l.Close(); err != nil {
				logrus.WithError(err).Error("audit: closing the log")
			}
			auditLogs.Delete(s)
		})
		return nil
	})
}

// AuditLog returns the server's audit trail.
func (s *Server) AuditLog() *auditapi.Log {
	if v, ok := auditLogs.Load(s); ok {
		return v.(*auditapi.Log)
	}
	return nil
}

// ConfigReloaded records a configuration reload (SIGHUP) in the audit
// trail of every running server; err is the reload's failure, if any.
func ConfigReloaded(path string, err error) {
	auditLogs.Range(func(k, _ any) bool {
		s := k.(*Server)
		e := auditapi.Entry{Actor: auditapi.Actor{Server: s.Config.ServerName}, Action: auditapi.ActionConfigLoad, Details: map[string]any{"path": path}}
		if err != nil {
			e.Outcome = auditapi.OutcomeFailure
			e.Details["error"] = err.Error()
		}
		if rerr := auditapi.Record(context.Background(), s.DB, e); rerr != nil {
			logrus.WithError(rerr).Error("audit: recording config reload")
		}
		return true
	})
}
