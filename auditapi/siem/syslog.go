package siem

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"enclave/auditapi"
	"enclave/storage"
)

// syslogSink sends RFC 5424 messages over one TCP (or TLS) connection,
// octet-counting framed ("LEN SP MSG", RFC 6587 3.4.1 / RFC 5425 4.3).
// Syslog has no acknowledgement: a batch counts as delivered when the
// connection took it and the collector had not closed the connection
// right after. A collector that went away is noticed before the next
// batch (its close arrives as end of file), and the batch written into
// the dead connection is sent again on the new one.
type syslogSink struct {
	addr    string
	tlsConf *tls.Config
	host    string
	conn    net.Conn
}

func (s *syslogSink) name() string {
	if s.tlsConf != nil {
		return "syslog-tls:" + s.addr
	}
	return "syslog:" + s.addr
}

const dialTimeout = 10 * time.Second

func (s *syslogSink) dial(ctx context.Context) error {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	if s.tlsConf == nil {
		c, err := d.DialContext(ctx, "tcp", s.addr)
		if err != nil {
			return err
		}
		s.conn = c
		return nil
	}
	td := &tls.Dialer{NetDialer: d, Config: s.tlsConf}
	c, err := td.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return err
	}
	s.conn = c
	return nil
}

// alive reports whether the collector has not closed the connection: a
// read that times out means nothing came (alive); end of file or a reset
// means it is gone. Whatever a collector sends is discarded.
func (s *syslogSink) alive() bool {
	var buf [512]byte
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		_, err := s.conn.Read(buf[:])
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			_ = s.conn.SetReadDeadline(time.Time{})
			return true
		}
		if err != nil {
			return false
		}
	}
}

func (s *syslogSink) drop() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

func (s *syslogSink) deliver(ctx context.Context, rows []*storage.AuditRow, recs [][]byte) error {
	if s.conn != nil && !s.alive() {
		s.drop()
	}
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	for i, r := range rows {
		msg := s.message(r, recs[i])
		buf.WriteString(strconv.Itoa(len(msg)))
		buf.WriteByte(' ')
		buf.Write(msg)
	}
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.conn.SetWriteDeadline(deadline)
	if _, err := s.conn.Write(buf.Bytes()); err != nil {
		s.drop()
		return err
	}
	if !s.alive() {
		s.drop()
		return errors.New("the collector closed the connection")
	}
	return nil
}

func (s *syslogSink) close() { s.drop() }

// Syslog fields: facility auth (4); severity warning (4) for failed and
// denied actions, informational (6) otherwise.
const (
	facilityAuth = 4
	sevWarning   = 4
	sevInfo      = 6
)

// message renders r as an RFC 5424 message:
//
//	<PRI>1 TIMESTAMP HOSTNAME enclave PROCID MSGID [meta sequenceId="n"] MSG
//
// HOSTNAME is the server name, MSGID the action, sequenceId the chain
// index (wrapping as RFC 5424 7.3.1 says, at 2147483647; the record
// itself carries the full n), MSG the JSONL or CEF record.
func (s *syslogSink) message(r *storage.AuditRow, rec []byte) []byte {
	sev := sevInfo
	if r.Outcome == auditapi.OutcomeFailure || r.Outcome == auditapi.OutcomeDenied {
		sev = sevWarning
	}
	seq := (r.N-1)%2147483647 + 1
	var b bytes.Buffer
	b.WriteString("<" + strconv.Itoa(facilityAuth*8+sev) + ">1 ")
	b.WriteString(time.UnixMilli(r.TS).UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	b.WriteByte(' ')
	b.WriteString(headerField(s.host, 255))
	b.WriteString(" enclave ")
	b.WriteString(strconv.Itoa(os.Getpid()))
	b.WriteByte(' ')
	b.WriteString(headerField(r.Action, 32))
	b.WriteString(` [meta sequenceId="` + strconv.FormatInt(seq, 10) + `"] `)
	b.Write(rec)
	return b.Bytes()
}

// headerField makes s a valid RFC 5424 header field: printable US-ASCII
// without spaces, at most n characters, "-" when empty.
func headerField(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 33 || r > 126 {
			return '_'
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n]
	}
	if s == "" {
		return "-"
	}
	return s
}
