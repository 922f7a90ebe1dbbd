package auditapi

import (
	"encoding/json"
	"log/syslog"
	"sync"

	"github.com/sirupsen/logrus"
)

// headSyslog sends exported heads to the local syslog daemon or a SIEM
// collector (facility auth), so that a copy of the chain's end leaves the host through the
// usual log forwarding. A missing daemon is reported once and retried on
// the next export.
type headSyslog struct {
	// network and addr name a remote collector ("udp", "HOST:PORT");
	// empty for the local daemon.
	network, addr string

	mu     sync.Mutex
	w      *syslog.Writer
	warned bool
}

func (s *headSyslog) send(h *Head) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		w, err := syslog.Dial(s.network, s.addr, syslog.LOG_AUTH|syslog.LOG_INFO, "enclave-audit")
		if err != nil {
			if !s.warned {
				logrus.WithError(err).Warn("audit: cannot reach syslog for audit.head_syslog")
				s.warned = true
			}
			return
		}
		s.w = w
	}
	b, _ := json.Marshal(h)
	if err := s.w.Info("audit head " + string(b)); err != nil {
		s.w.Close()
		s.w = nil
	}
}

func (s *headSyslog) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != nil {
		s.w.Close()
		s.w = nil
	}
}
