package server

import (
	"context"
	"net/http"
	"sync"
	"time"

	"enclave/adminapi"
	"enclave/clientapi"
	"enclave/internal/rbac"
)

// retentionInterval is how often expired events (MSC1763) are purged.
const retentionInterval = time.Hour

// rbacs maps each Server to its role-based access control.
var rbacs sync.Map // *Server → *rbac.RBAC

// Admin: RBAC on every authenticated client-API request, raw routes
// included (clientapi.Authenticate runs the authorizer; it also attaches
// the requester to the request for the audit trail), the admin API and
// the retention purge job.
func init() {
	addWiring("admin", func(ctx context.Context, s *Server) error {
		z, err := rbac.New(ctx, s.DB, s.Config.ServerName, s.Config.RBAC.Roles, s.Config.RBAC.DefaultRole)
		if err != nil {
			return err
		}
		rbacs.Store(s, z)
		s.OnShutdown(func() { rbacs.Delete(s) })
		s.Client.SetAuthorizer(func(r *http.Request, dev *clientapi.Device, group string) (clientapi.Response, bool) {
			clientapi.AttachActor(r, dev)
			return z.Authorize(r, dev, group)
		})
		admin := adminapi.New(adminapi.Options{
			DB: s.DB, Rooms: s.Rooms, Client: s.Client, RBAC: z, ServerName: s.Config.ServerName, Version: Version,
			Retention: adminapi.RetentionPolicy{
				DefaultMaxLifetime: s.Config.Retention.DefaultMaxLifetime.Duration,
				AllowedMin:         s.Config.Retention.AllowedLifetimeMin.Duration,
				AllowedMax:         s.Config.Retention.AllowedLifetimeMax.Duration,
			},
			Media: func() adminapi.MediaAdmin {
				if m := s.Media(); m != nil {
					return m
				}
				return nil
			},
		})
		admin.Register()
		s.OnStart(func() error {
			s.OnShutdown(admin.StartRetention(retentionInterval))
			return nil
		})
		return nil
	})
}

// RBAC returns the server's access control (roles and permissions).
func (s *Server) RBAC() *rbac.RBAC {
	if v, ok := rbacs.Load(s); ok {
		return v.(*rbac.RBAC)
	}
	return nil
}
