package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/server"
	"enclave/storage"
)

// syslogCollector is an in-test SIEM: a TCP (or TLS) syslog listener that
// reads octet-counted RFC 5424 messages (RFC 6587 / 5425) and keeps them
// in arrival order. It can go down and come back on the same address.
type syslogCollector struct {
	t    testing.TB
	addr string
	tls  *tls.Config

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	msgs  []syslogMsg
	wg    sync.WaitGroup
}

// syslogMsg is one parsed RFC 5424 message.
type syslogMsg struct {
	Pri                               int
	TS                                time.Time
	Host, App, ProcID, MsgID, SD, Msg string
	Conn                              int // which connection (0, 1, ... in accept order)
}

// rfc5424 is <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG.
var rfc5424 = regexp.MustCompile(`(?s)^<(\d{1,3})>1 (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) (-|(?:\[[^\]]*\])+) (.*)$`)

func newSyslogCollector(t testing.TB, tc *tls.Config) *syslogCollector {
	c := &syslogCollector{t: t, addr: "127.0.0.1:0", tls: tc}
	c.start()
	t.Cleanup(c.stop)
	return c
}

func (c *syslogCollector) start() {
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old socket may linger a moment
		if ln, err = net.Listen("tcp", c.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("collector: %v", err)
	}
	c.addr = ln.Addr().String()
	if c.tls != nil {
		ln = tls.NewListener(ln, c.tls)
	}
	c.mu.Lock()
	c.ln = ln
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			id := len(c.conns)
			c.conns = append(c.conns, conn)
			c.mu.Unlock()
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.read(conn, id)
			}()
		}
	}()
}

// stop closes the listener and every connection (the collector is down).
func (c *syslogCollector) stop() {
	c.mu.Lock()
	if c.ln != nil {
		c.ln.Close()
		c.ln = nil
	}
	for _, conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *syslogCollector) read(conn net.Conn, id int) {
	br := bufio.NewReader(conn)
	for {
		lenS, err := br.ReadString(' ')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSuffix(lenS, " "))
		if err != nil || n <= 0 {
			c.t.Errorf("collector: bad octet count %q", lenS)
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(br, buf); err != nil {
			return // cut by the close: the sender must send it again
		}
		m := rfc5424.FindStringSubmatch(string(buf))
		if m == nil {
			c.t.Errorf("collector: not an RFC 5424 message: %q", buf)
			return
		}
		ts, err := time.Parse(time.RFC3339Nano, m[2])
		if err != nil {
			c.t.Errorf("collector: timestamp %q: %v", m[2], err)
		}
		pri, _ := strconv.Atoi(m[1])
		c.mu.Lock()
		c.msgs = append(c.msgs, syslogMsg{Pri: pri, TS: ts, Host: m[3], App: m[4], ProcID: m[5], MsgID: m[6], SD: m[7], Msg: m[8], Conn: id})
		c.mu.Unlock()
	}
}

func (c *syslogCollector) messages() []syslogMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]syslogMsg(nil), c.msgs...)
}

// jsonlSeq is the chain index of a JSONL record.
func jsonlSeq(t testing.TB, msg string) auditapi.ExportedEntry {
	t.Helper()
	var e auditapi.ExportedEntry
	if err := json.Unmarshal([]byte(msg), &e); err != nil || e.N == 0 {
		t.Fatalf("record %q: %v", msg, err)
	}
	return e
}

// sealedRows seals what is committed and returns every sealed row.
func sealedRows(t testing.TB, srv *Server) []*storage.AuditRow {
	t.Helper()
	// Every entry committed so far becomes visible to the sealer first.
	if err := srv.DB.Stream.Wait(ctxT(t), srv.DB.Stream.Last()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Audit.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows, err := storage.ListAuditRows(context.Background(), srv.DB, storage.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// siemActivity performs audited actions: two registrations, a room, an
// invite, messages.
func siemActivity(t testing.TB, srv *Server, tag string, messages int) (alice, bob RegisterResult, room string) {
	t.Helper()
	alice = Register(t, srv.URL, "alice"+tag, "alice-password", false)
	bob = Register(t, srv.URL, "bob"+tag, "bob-password", false)
	cr := raw(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"preset": "private_chat"})
	room, _ = cr.Body["room_id"].(string)
	if room == "" {
		t.Fatalf("createRoom: %s", cr.Raw)
	}
	mustOK(t, "invite", raw(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+room+"/invite", alice.AccessToken, map[string]any{"user_id": bob.UserID}))
	siemMessages(t, srv, alice, room, tag, messages)
	return alice, bob, room
}

func siemMessages(t testing.TB, srv *Server, u RegisterResult, room, tag string, n int) {
	t.Helper()
	for i := range n {
		mustOK(t, "send", raw(t, "PUT", fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/%s-%d", srv.URL, room, tag, i),
			u.AccessToken, map[string]any{"msgtype": "m.text", "body": "hello"}))
	}
}

// waitCollected waits until the collector holds every sealed entry.
func waitCollected(t testing.TB, srv *Server, c *syslogCollector, seq func(string) int64) []*storage.AuditRow {
	t.Helper()
	var rows []*storage.AuditRow
	waitFor(t, "the collector to receive every sealed audit entry", 30*time.Second, func() bool {
		rows = sealedRows(t, srv)
		got := map[int64]bool{}
		for _, m := range c.messages() {
			got[seq(m.Msg)] = true
		}
		for _, r := range rows {
			if !got[r.N] {
				return false
			}
		}
		return true
	})
	return rows
}

func siemSyslogConfig(addr string, tlsOn bool, caFile, format string) func(*config.Config) {
	return func(c *config.Config) {
		c.Audit.SIEM.Format = format
		c.Audit.SIEM.Syslog = config.AuditSyslogConfig{Address: addr, TLS: tlsOn, CAFile: caFile}
	}
}

// TestSIEMSyslog: every audit entry of a sequence of actions reaches an
// RFC 5424 collector over TCP and TLS (in-test CA), once and in chain
// order, each message parsed and compared with the stored row.
func TestSIEMSyslog(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		for _, tlsOn := range []bool{false, true} {
			t.Run(map[bool]string{false: "tcp", true: "tls"}[tlsOn], func(t *testing.T) {
				var tc *tls.Config
				caFile := ""
				if tlsOn {
					ca := NewFedCluster(t)
					certFile, keyFile := ca.issue("127.0.0.1", 90)
					cert, err := tls.LoadX509KeyPair(certFile, keyFile)
					if err != nil {
						t.Fatal(err)
					}
					tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
					caFile = ca.CAFile
				}
				col := newSyslogCollector(t, tc)
				srv := Start(t, d, Options{Configure: siemSyslogConfig(col.addr, tlsOn, caFile, "jsonl")})
				_, bob, room := siemActivity(t, srv, "", 5)
				seq := func(m string) int64 { return jsonlSeq(t, m).N }
				rows := waitCollected(t, srv, col, seq)
				msgs := col.messages()
				if len(msgs) != len(rows) {
					t.Fatalf("collector got %d messages for %d entries (no outage: want each once)", len(msgs), len(rows))
				}
				for i, m := range msgs {
					r := rows[i]
					e := jsonlSeq(t, m.Msg)
					if e.N != r.N || e.EntryHash != r.EntryHash || e.ChainHash != r.ChainHash || e.Action != r.Action || e.Target != r.Target {
						t.Fatalf("message %d: %+v, stored %+v", i, e, r)
					}
					if m.App != "enclave" || m.Host != "localhost" || m.MsgID != r.Action || m.SD != fmt.Sprintf(`[meta sequenceId="%d"]`, r.N) {
						t.Fatalf("message %d header: %+v", i, m)
					}
					if !m.TS.Equal(time.UnixMilli(r.TS)) || m.Pri/8 != 4 {
						t.Fatalf("message %d: time %v (stored %d), pri %d", i, m.TS, r.TS, m.Pri)
					}
				}
				// The metrics count them, and nothing is left to send.
				streamed, lag := -1.0, -1.0
				waitFor(t, "the metrics to count every entry delivered", 10*time.Second, func() bool {
					mf, err := srv.Registry.Gather()
					if err != nil {
						t.Fatal(err)
					}
					for _, f := range mf {
						for _, m := range f.GetMetric() {
							switch f.GetName() {
							case "enclave_audit_siem_streamed_total":
								streamed = m.GetCounter().GetValue()
							case "enclave_audit_siem_lag_entries":
								lag = m.GetGauge().GetValue()
							}
						}
					}
					return streamed == float64(len(rows)) && lag == 0
				})
				// The actions are all there: the invite by its target user.
				inv := findAudit(t, rows, auditapi.ActionInvite, func(r *storage.AuditRow) bool { return r.Target == bob.UserID && r.RoomID == room })
				if jsonlSeq(t, msgs[inv.N-1].Msg).Target != bob.UserID {
					t.Fatalf("invite record %q", msgs[inv.N-1].Msg)
				}
			})
		}
	})
}

// TestSIEMSyslogUntrustedCollector: over TLS the collector must present a
// certificate from audit.siem.syslog.ca_file: one from another CA gets
// nothing, and the entries wait in the store (the lag counts them).
func TestSIEMSyslogUntrustedCollector(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		trusted, other := NewFedCluster(t), NewFedCluster(t)
		certFile, keyFile := other.issue("127.0.0.1", 91)
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		col := newSyslogCollector(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		srv := Start(t, d, Options{Configure: siemSyslogConfig(col.addr, true, trusted.CAFile, "jsonl")})
		siemActivity(t, srv, "", 1)
		rows := sealedRows(t, srv)
		sink := "syslog-tls:" + col.addr
		waitFor(t, "a failed delivery", 10*time.Second, func() bool {
			mf, _ := srv.Registry.Gather()
			for _, f := range mf {
				if f.GetName() == "enclave_audit_siem_delivery_failures_total" && f.GetMetric()[0].GetCounter().GetValue() > 0 {
					return true
				}
			}
			return false
		})
		if n := len(col.messages()); n != 0 {
			t.Fatalf("an untrusted collector received %d messages", n)
		}
		if lag := srv.SIEM.Lag(context.Background(), sink); lag < int64(len(rows)) {
			t.Fatalf("lag %d, want the %d entries waiting", lag, len(rows))
		}
		if c, err := storage.AuditSIEMCursor(context.Background(), srv.DB, sink); err != nil || c != 0 {
			t.Fatalf("cursor %d, %v: nothing was delivered", c, err)
		}
	})
}

// TestSIEMCollectorOutage: the collector is down while 50 audited actions
// happen, and the server restarts while it is still down; once it is back
// it receives every entry (deduplicated by sequence, none missing), the
// restarted server resuming from the stored cursor rather than from the
// start.
func TestSIEMCollectorOutage(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		col := newSyslogCollector(t, nil)
		cfg := siemSyslogConfig(col.addr, false, "", "jsonl")
		srv := Start(t, d, Options{Configure: cfg})
		alice, _, room := siemActivity(t, srv, "", 2)
		seq := func(m string) int64 { return jsonlSeq(t, m).N }
		before := waitCollected(t, srv, col, seq)
		sink := "syslog:" + col.addr
		// The batch counts once the connection outlived it: wait for the
		// stored cursor, so the restart below resumes from a known place.
		waitFor(t, "the cursor to reach the delivered entries", 10*time.Second, func() bool {
			c, err := storage.AuditSIEMCursor(context.Background(), srv.DB, sink)
			return err == nil && c == before[len(before)-1].N
		})

		col.stop()
		siemMessages(t, srv, alice, room, "outage", 50)
		during := sealedRows(t, srv)
		if len(during)-len(before) < 50 {
			t.Fatalf("%d entries during the outage", len(during)-len(before))
		}
		waitFor(t, "the lag to show the waiting entries", 10*time.Second, func() bool {
			return srv.SIEM.Lag(context.Background(), sink) >= 50
		})

		// Restart mid-outage: the cursor is in the store.
		dataDir, dbURL := srv.DataDir, srv.DBURL
		srv.Stop()
		cursor, err := siemCursor(t, d, dbURL, sink)
		if err != nil {
			t.Fatal(err)
		}
		if cursor < before[len(before)-1].N || cursor >= during[len(during)-1].N {
			t.Fatalf("cursor %d after the outage began (delivered up to %d, stored up to %d)", cursor, before[len(before)-1].N, during[len(during)-1].N)
		}
		srv = Start(t, d, Options{DataDir: dataDir, DBURL: dbURL, Configure: cfg})
		seen := len(col.messages())
		col.start()
		rows := waitCollected(t, srv, col, seq)

		got := map[int64]int{}
		for _, m := range col.messages() {
			got[seq(m.Msg)]++
		}
		for _, r := range rows {
			if got[r.N] == 0 {
				t.Fatalf("entry %d (%s) never reached the collector", r.N, r.Action)
			}
		}
		after := col.messages()[seen:]
		if first := seq(after[0].Msg); first != cursor+1 {
			t.Fatalf("after the restart delivery resumed at %d, want the cursor %d + 1", first, cursor)
		}
		for i := 1; i < len(after); i++ {
			if a, b := seq(after[i-1].Msg), seq(after[i].Msg); b != a+1 {
				t.Fatalf("after the restart: %d followed by %d", a, b)
			}
		}
		msgs := 0
		for _, r := range rows {
			if r.Action == auditapi.ActionMessage && strings.HasPrefix(gjsonString(r.Details, "event_id"), "$") && got[r.N] > 0 {
				msgs++
			}
		}
		if msgs < 52 {
			t.Fatalf("%d message entries delivered, want the 52 sent", msgs)
		}
	})
}

func gjsonString(details, key string) string {
	var m map[string]any
	_ = json.Unmarshal([]byte(details), &m)
	s, _ := m[key].(string)
	return s
}

// siemCursor reads a sink's stored cursor with the server stopped.
func siemCursor(t testing.TB, d storage.Dialect, dbURL, sink string) (int64, error) {
	db, err := storage.Open(context.Background(), dbURL, storage.Options{})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return storage.AuditSIEMCursor(context.Background(), db, sink)
}

// parseCEF splits a CEF:0 record into its seven header fields and its
// extension (keys to unescaped values).
func parseCEF(t testing.TB, line string) ([]string, map[string]string) {
	t.Helper()
	var hdr []string
	var cur strings.Builder
	i := 0
	for ; i < len(line) && len(hdr) < 7; i++ {
		switch ch := line[i]; {
		case ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '|':
			hdr = append(hdr, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(ch)
		}
	}
	if len(hdr) != 7 || hdr[0] != "CEF:0" {
		t.Fatalf("CEF header of %q: %q", line, hdr)
	}
	ext := map[string]string{}
	keyAt := regexp.MustCompile(`(?:^| )([A-Za-z0-9_]+)=`)
	rest := line[i:]
	// Split at every unescaped " key=".
	locs := keyAt.FindAllStringSubmatchIndex(rest, -1)
	var starts [][]int
	for _, l := range locs {
		if l[0] > 0 && rest[l[0]-1] == '\\' {
			continue
		}
		starts = append(starts, l)
	}
	for j, l := range starts {
		end := len(rest)
		if j+1 < len(starts) {
			end = starts[j+1][0]
		}
		v := rest[l[1]:end]
		v = strings.NewReplacer(`\\`, `\`, `\=`, `=`, `\n`, "\n", `\r`, "\r").Replace(v)
		ext[rest[l[2]:l[3]]] = v
	}
	return hdr, ext
}

// TestSIEMCEF: CEF records over syslog map the actor to suser, a target
// user to duser (never a room or event), the room to cs1 (cs1Label
// roomId), the client address to src, the time to rt and the action to
// act.
func TestSIEMCEF(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		col := newSyslogCollector(t, nil)
		srv := Start(t, d, Options{Configure: siemSyslogConfig(col.addr, false, "", "cef")})
		alice, bob, room := siemActivity(t, srv, "", 1)
		seq := func(m string) int64 {
			_, ext := parseCEF(t, m)
			n, _ := strconv.ParseInt(ext["externalId"], 10, 64)
			return n
		}
		rows := waitCollected(t, srv, col, seq)
		recs := map[int64]map[string]string{}
		for _, m := range col.messages() {
			hdr, ext := parseCEF(t, m.Msg)
			n := seq(m.Msg)
			r := rows[n-1]
			if hdr[1] != "Enclave" || hdr[2] != "Enclave" || hdr[4] != r.Action || ext["act"] != r.Action || ext["rt"] != strconv.FormatInt(r.TS, 10) || ext["cn1"] != strconv.FormatInt(r.N, 10) || ext["cn1Label"] != "sequence" {
				t.Fatalf("record %d: %q %v for %+v", n, hdr, ext, r)
			}
			if du, ok := ext["duser"]; ok && !strings.HasPrefix(du, "@") {
				t.Fatalf("record %d: duser %q is not a user ID", n, du)
			}
			if ext["suser"] != r.ActorUser || ext["cs3"] != r.Details {
				t.Fatalf("record %d: suser %q cs3 %q, stored %+v", n, ext["suser"], ext["cs3"], r)
			}
			recs[n] = ext
		}
		inv := findAudit(t, rows, auditapi.ActionInvite, func(r *storage.AuditRow) bool { return r.Target == bob.UserID })
		if e := recs[inv.N]; e["suser"] != alice.UserID || e["duser"] != bob.UserID || e["cs1Label"] != "roomId" || e["cs1"] != room || e["src"] != "127.0.0.1" {
			t.Fatalf("invite record: %v", e)
		}
		cr := findAudit(t, rows, auditapi.ActionRoomCreate, func(r *storage.AuditRow) bool { return r.RoomID == room })
		if e := recs[cr.N]; e["suser"] != alice.UserID || e["cs1"] != room || e["duser"] != "" {
			t.Fatalf("room.create record: %v", e)
		}
		msg := findAudit(t, rows, auditapi.ActionMessage, func(r *storage.AuditRow) bool { return r.RoomID == room })
		if e := recs[msg.N]; e["duser"] != "" || e["cs1"] != room || e["cs5Label"] != "target" || e["cs5"] != msg.Target {
			t.Fatalf("message record: %v", e)
		}
	})
}

// TestSIEMFileRotation: the JSONL file sink rotates by size and keeps
// every record: the rotated files, oldest first, then the current one,
// hold every sealed entry in chain order, each once.
func TestSIEMFileRotation(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		path := t.TempDir() + "/siem/audit.jsonl"
		const maxBytes = 4096
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.Audit.SIEM.File = config.AuditFileConfig{Path: path, MaxSizeMB: float64(maxBytes) / (1 << 20), MaxFiles: 1000}
		}})
		siemActivity(t, srv, "", 30)
		var rows []*storage.AuditRow
		waitFor(t, "the file sink to catch up", 30*time.Second, func() bool {
			rows = sealedRows(t, srv)
			c, err := storage.AuditSIEMCursor(context.Background(), srv.DB, "file:"+path)
			return err == nil && c == rows[len(rows)-1].N
		})
		var files []string
		for i := 1; ; i++ {
			if _, err := os.Stat(fmt.Sprintf("%s.%d", path, i)); err != nil {
				break
			}
			files = append([]string{fmt.Sprintf("%s.%d", path, i)}, files...)
		}
		files = append(files, path)
		if len(files) < 3 {
			t.Fatalf("%d files: want rotation", len(files))
		}
		var all []auditapi.ExportedEntry
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > maxBytes {
				t.Fatalf("%s is %d bytes, over the %d limit", f, len(b), maxBytes)
			}
			for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
				all = append(all, jsonlSeq(t, l))
			}
		}
		if len(all) != len(rows) {
			t.Fatalf("files hold %d records for %d entries", len(all), len(rows))
		}
		for i, e := range all {
			if e.N != rows[i].N || e.EntryHash != rows[i].EntryHash {
				t.Fatalf("record %d is entry %d (%s), want %d", i, e.N, e.Action, rows[i].N)
			}
		}
	})
}

// TestSIEMConfigErrors: SIEM settings that cannot work stop the start
// with the option named, and none connects anywhere unless configured.
func TestSIEMConfigErrors(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		cfg := TestConfig(t, d, Options{Configure: siemSyslogConfig("127.0.0.1:6514", true, "/nonexistent/ca.pem", "jsonl")})
		if _, _, err := config.EnsureDataDir(cfg.DataDir); err != nil {
			t.Fatal(err)
		}
		if s, err := server.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "audit.siem.syslog.ca_file") {
			if s != nil {
				_ = s.Shutdown(context.Background())
			}
			t.Fatalf("missing CA file: %v", err)
		}
		srv := Start(t, d, Options{})
		if srv.SIEM != nil {
			t.Fatalf("a streamer with no sink configured: %v", srv.SIEM.Sinks())
		}
	})
}
