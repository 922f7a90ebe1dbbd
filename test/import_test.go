package test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/importer"
	"enclave/storage"
)

// runImport runs `enclave import` against a stopped server's data
// directory and returns its JSON report.
func runImport(t testing.TB, bin, dataDir, dbURL string, args ...string) (*importer.Report, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"import"}, append(args, "--data", dataDir, "--json")...)...)
	cmd.Env = append(os.Environ(), "ENCLAVE_DATABASE_URL="+dbURL, "ENCLAVE_LOG_LEVEL=error")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("enclave import %v: %v\n%s\n%s", args, err, stdout.String(), stderr.String())
	}
	var rep importer.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, stdout.String())
	}
	return &rep, stderr.String()
}

func cli(t testing.TB, bin, dataDir, dbURL string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, append(args, "--data", dataDir)...)
	cmd.Env = append(os.Environ(), "ENCLAVE_DATABASE_URL="+dbURL, "ENCLAVE_LOG_LEVEL=error")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// allMessages pages /messages backwards to the start and returns the
// room's events oldest first.
func allMessages(t testing.TB, c *mautrix.Client, room id.RoomID) []*event.Event {
	t.Helper()
	var out []*event.Event
	from := ""
	for range 100 {
		resp, err := c.Messages(ctxT(t), room, from, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		out = append(out, resp.Chunk...)
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		from = resp.End
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// source returns an imported event's source record.
func sourceOf(ev *event.Event) map[string]any {
	s, _ := ev.Content.Raw[importer.SourceField].(map[string]any)
	return s
}

// Issue 15, acceptance 1 and 4: a realistic Slack export imports with
// every message's sender, time, thread, reactions, files and mentions
// intact (read back by a real client), the dry run reports exactly what
// the import does, a re-run imports nothing, the audit trail holds the
// export's hash and verifies, and imported history notifies no one.
func TestImportSlack(t *testing.T) {
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dataDir := t.TempDir()
		srv := Start(t, d, Options{DataDir: dataDir})
		dbURL := srv.DBURL
		Register(t, srv.URL, "alice", "alice-pw", false) // an existing account: matched by username
		srv.Stop()

		fx := realisticSlack()
		zipPath := filepath.Join(t.TempDir(), "acme-export.zip")
		fx.write(t, zipPath)

		dry, _ := runImport(t, bin, dataDir, dbURL, "slack", "--dry-run", zipPath)
		if !dry.DryRun {
			t.Fatal("dry run report not marked as such")
		}
		rep, _ := runImport(t, bin, dataDir, dbURL, "slack", zipPath)
		a, _ := json.Marshal(dry.Comparable())
		b, _ := json.Marshal(rep.Comparable())
		if !bytes.Equal(a, b) {
			t.Fatalf("dry run and import differ:\ndry:    %s\nimport: %s", a, b)
		}
		t.Logf("report: %s", b)
		// The fixture's figures (counted from realisticSlack).
		if rep.Users.Total != 5 || rep.Users.Matched != 1 || rep.Users.Created != 4 || rep.Rooms.Public != 2 || rep.Rooms.Private != 1 ||
			rep.Rooms.Direct != 2 || rep.Messages != 18 || rep.Notices != 4 || rep.ThreadReplies != 2 || rep.Edited != 1 || rep.Reactions != 4 ||
			rep.Files != 2 || len(rep.LinkedFiles) != 1 || len(rep.Unmappable) != 1 || !strings.Contains(rep.Unmappable[0].Reason, "U99GHOST") {
			t.Fatalf("report figures: %s", b)
		}
		// The store agrees with the report.
		db, err := storage.Open(ctxT(t), dbURL, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		counts, err := storage.CountImportItems(ctxT(t), db, rep.ImportID)
		if err != nil {
			t.Fatal(err)
		}
		if counts["message"]+counts["file"] != int64(rep.Messages) || counts["reaction"] != int64(rep.Reactions) || counts["media"] != 2 || counts["room"] != 5 || counts["user"] != 5 {
			t.Fatalf("import items %v vs report %s", counts, b)
		}
		for _, u := range []string{"@bob:localhost", "@carol:localhost", "@emile:localhost"} {
			acc, err := storage.GetAccount(ctxT(t), db, u)
			if err != nil || !acc.Deactivated || acc.PasswordHash != "" {
				t.Fatalf("created account %s: %+v %v (want deactivated, no password)", u, acc, err)
			}
		}
		db.Close()

		// Again: nothing new.
		again, _ := runImport(t, bin, dataDir, dbURL, "slack", zipPath)
		if again.Messages != 0 || again.Reactions != 0 || again.Files != 0 || again.Skipped != rep.Messages+rep.Reactions {
			t.Fatalf("re-run imported again: %+v", again)
		}

		// Chain of custody: the import's entries carry the export's hash;
		// every imported event's entry names its source; the chain verifies.
		out, err := cli(t, bin, dataDir, dbURL, "audit", "export", "--import", rep.ImportID)
		if err != nil {
			t.Fatalf("audit export --import: %v\n%s", err, out)
		}
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<20)
		var lines []map[string]any
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines = append(lines, m)
			}
		}
		if len(lines) < 2 {
			t.Fatalf("audit export --import: %s", out)
		}
		head, _ := lines[0]["import"].(map[string]any)
		if head["file_sha256"] != rep.SHA256 || head["file_size"] != float64(rep.Size) || head["operator"] == "" || head["finished_ts"] == float64(0) {
			t.Fatalf("import record: %v (report sha %s size %d)", head, rep.SHA256, rep.Size)
		}
		if got := len(lines) - 1; int64(got) != counts["message"]+counts["file"]+counts["reaction"]+counts["media"]+counts["room"]+counts["user"] {
			t.Fatalf("audit export --import listed %d records, want %v", got, counts)
		}

		srv = Start(t, d, Options{DataDir: dataDir, DBURL: dbURL})
		if err := srv.Audit.Flush(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		rows := allAuditRows(t, srv.DB)
		var starts, finishes, sourced int
		for _, r := range rows {
			if r.Action == "admin.import" && r.Target == rep.ImportID && strings.Contains(r.Details, rep.SHA256) {
				if strings.Contains(r.Details, `"op":"start"`) {
					starts++
				}
				if strings.Contains(r.Details, `"op":"finish"`) {
					finishes++
				}
			}
			if r.Action == "room.message" && strings.Contains(r.Details, `"import_id":"`+rep.ImportID+`"`) && strings.Contains(r.Details, `"platform":"slack"`) {
				sourced++
			}
		}
		if starts != 2 || finishes != 2 || sourced != rep.Messages+rep.Reactions {
			t.Fatalf("audit: %d start and %d finish entries with the hash (want 2 each: two runs), %d sourced event entries (want %d)", starts, finishes, sourced, rep.Messages+rep.Reactions)
		}
		srv.Stop()
		if out, err := verifyEnv(bin, dataDir, dbURL, nil); err != nil {
			t.Fatalf("audit verify after import: %v\n%s", err, out)
		}
		srv = Start(t, d, Options{DataDir: dataDir, DBURL: dbURL})

		// A real client reads the history.
		alice := loginClient(t, srv.URL, "alice", "alice-pw")
		joined, err := alice.JoinedRooms(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(joined.JoinedRooms) != 5 {
			t.Fatalf("alice is in %d rooms, want 5", len(joined.JoinedRooms))
		}
		rooms := map[string]id.RoomID{} // Slack conversation ID -> room
		for _, r := range joined.JoinedRooms {
			var create map[string]any
			if err := alice.StateEvent(ctxT(t), r, event.StateCreate, "", &create); err != nil {
				t.Fatal(err)
			}
			src, _ := create[importer.SourceField].(map[string]any)
			rooms[src["channel"].(string)] = r
		}
		userOf := map[string]string{"U01ALICE": "@alice:localhost", "U02BOB": "@bob:localhost", "U03CAROL": "@carol:localhost",
			"U04EMILE": "@emile:localhost", "U05DEPLOY": "@deploybot:localhost", "": "@import:localhost"}
		convOf := map[string]string{"general": "C01GENERAL", "random": "C02RANDOM", "incident-response": "G01SECRET", "D01AB": "D01AB", "mpdm-alice--bob--emile-1": "G02MPIM"}
		byMsg := map[string]*event.Event{}
		for conv, room := range rooms {
			for _, ev := range allMessages(t, alice, room) {
				if ev.Type != event.EventMessage {
					continue
				}
				src := sourceOf(ev)
				if src == nil || src["channel"] != conv {
					t.Fatalf("message %s without its source: %v", ev.ID, ev.Content.Raw)
				}
				key := conv + "/" + src["message_id"].(string)
				if src["subtype"] == "file" {
					key += "/file"
				}
				if byMsg[key] != nil {
					t.Fatalf("message %s imported twice", key)
				}
				byMsg[key] = ev
			}
		}
		if len(byMsg) != rep.Messages {
			t.Fatalf("%d messages read back, report says %d", len(byMsg), rep.Messages)
		}
		for _, m := range fx.msgs {
			user, _ := m.m["user"].(string)
			if user == "U99GHOST" {
				continue
			}
			ts := m.m["ts"].(string)
			key := convOf[m.conv] + "/" + ts
			if m.m["text"] == "" {
				key += "/file" // a file without text: its file event only
			}
			ev := byMsg[key]
			if ev == nil {
				t.Fatalf("message %s/%s missing", m.conv, ts)
			}
			if ev.Sender.String() != userOf[user] || ev.Timestamp != tsMS(ts) {
				t.Fatalf("message %s/%s: sender %s ts %d, want %s %d", m.conv, ts, ev.Sender, ev.Timestamp, userOf[user], tsMS(ts))
			}
			if st, _ := m.m["subtype"].(string); st != "" && ev.Content.Raw["msgtype"] != "m.notice" {
				t.Fatalf("%s message is %v, want m.notice", st, ev.Content.Raw["msgtype"])
			}
		}
		gen := "C01GENERAL/"
		root := byMsg[gen+slackTS(10, 100)]
		fb, _ := root.Content.Raw["formatted_body"].(string)
		if !strings.Contains(fb, `<a href="https://matrix.to/#/@bob:localhost">Bob Baker</a>`) || !strings.Contains(fb, "<strong>the rules</strong>") ||
			!strings.Contains(fb, "<em>be kind</em>") || !strings.Contains(fb, `<a href="https://intranet.example/rules">the rules page</a>`) ||
			root.Content.Raw["body"] != "Welcome Bob Baker! Read *the rules* and _be kind_ & see the rules page (https://intranet.example/rules)" {
			t.Fatalf("root message: %v", root.Content.Raw)
		}
		if mm, _ := root.Content.Raw["m.mentions"].(map[string]any); mm == nil || len(mm["user_ids"].([]any)) != 1 {
			t.Fatalf("m.mentions: %v", root.Content.Raw)
		}
		if byMsg[gen+slackTS(30, 0)].Content.Raw["body"] != "Grüße aus Köln 🎉 日本語もOK" || byMsg[gen+slackTS(30, 0)].Content.Raw[importer.EditedField] == nil {
			t.Fatalf("edited Unicode message: %v", byMsg[gen+slackTS(30, 0)].Content.Raw)
		}
		// The thread, through /relations.
		th, err := alice.GetRelations(ctxT(t), rooms["C01GENERAL"], root.ID, &mautrix.ReqGetRelations{RelationType: event.RelThread})
		if err != nil {
			t.Fatal(err)
		}
		var replies []string
		for _, ev := range th.Chunk {
			replies = append(replies, ev.Sender.String())
		}
		if len(th.Chunk) != 2 || !strings.Contains(strings.Join(replies, ","), "@bob:localhost") || !strings.Contains(strings.Join(replies, ","), "@emile:localhost") {
			t.Fatalf("thread replies: %v", replies)
		}
		// The reactions, through /relations.
		an, err := alice.GetRelations(ctxT(t), rooms["C01GENERAL"], root.ID, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, ev := range an.Chunk {
			rel, _ := ev.Content.Raw["m.relates_to"].(map[string]any)
			got[ev.Sender.String()+" "+rel["key"].(string)] = true
			if ev.Timestamp != root.Timestamp {
				t.Fatalf("reaction time %d, want the message's %d", ev.Timestamp, root.Timestamp)
			}
		}
		if len(an.Chunk) != 3 || !got["@bob:localhost 👍"] || !got["@emile:localhost 👍"] || !got["@bob:localhost 🎉"] {
			t.Fatalf("reactions: %v", got)
		}
		// The file the export carries, downloaded; the linked one listed.
		fe := byMsg[gen+slackTS(61, 0)+"/file"]
		if fe == nil || fe.Content.Raw["body"] != "report.pdf" || fe.Sender.String() != "@carol:localhost" {
			t.Fatalf("file event: %v", fe)
		}
		uri, err := id.ParseContentURI(fe.Content.Raw["url"].(string))
		if err != nil {
			t.Fatal(err)
		}
		data, err := alice.DownloadBytes(ctxT(t), uri)
		if err != nil || string(data) != "%PDF-1.4 ok" {
			t.Fatalf("download: %q %v", data, err)
		}
		if info, _ := fe.Content.Raw["info"].(map[string]any); info["size"] != float64(11) {
			t.Fatalf("file info: %v", fe.Content.Raw)
		}
		// An image the export carries (Slack's standard attachments
		// layout): an m.image whose thumbnail the media repository makes.
		img := byMsg["C02RANDOM/"+slackTS(14, 0)+"/file"]
		if img == nil || img.Content.Raw["msgtype"] != "m.image" || img.Sender.String() != "@alice:localhost" {
			t.Fatalf("image event: %v", img)
		}
		iu, _ := id.ParseContentURI(img.Content.Raw["url"].(string))
		tn := raw(t, "GET", srv.URL+"/_matrix/client/v1/media/thumbnail/"+iu.Homeserver+"/"+iu.FileID+"?width=32&height=32&method=scale", alice.AccessToken, nil)
		if tn.Status != 200 || len(tn.Raw) < 8 || !bytes.HasPrefix(tn.Raw, []byte("\x89PNG")) && !bytes.HasPrefix(tn.Raw, []byte("\xff\xd8")) {
			t.Fatalf("thumbnail of the imported image: %d %q", tn.Status, tn.Raw[:min(len(tn.Raw), 40)])
		}
		if rep.LinkedFiles[0].Name != "chart.png" || !strings.Contains(rep.LinkedFiles[0].URL, "F02CHART") {
			t.Fatalf("linked files: %+v", rep.LinkedFiles)
		}
		// Membership: carol joined, posted and left; topics; join rules.
		var member map[string]any
		if err := alice.StateEvent(ctxT(t), rooms["C01GENERAL"], event.StateMember, "@carol:localhost", &member); err != nil || member["membership"] != "leave" {
			t.Fatalf("carol's membership: %v %v", member, err)
		}
		topics := map[string]string{"C01GENERAL": "Company-wide announcements", "C02RANDOM": "Off-topic chatter", "G01SECRET": "Private: IR team"}
		for conv, want := range topics {
			var tc map[string]any
			if err := alice.StateEvent(ctxT(t), rooms[conv], event.StateTopic, "", &tc); err != nil || tc["topic"] != want {
				t.Fatalf("topic of %s: %v %v", conv, tc, err)
			}
		}
		for conv, want := range map[string]string{"C01GENERAL": "public", "G01SECRET": "invite", "D01AB": "invite"} {
			var jr map[string]any
			if err := alice.StateEvent(ctxT(t), rooms[conv], event.StateJoinRules, "", &jr); err != nil || jr["join_rule"] != want {
				t.Fatalf("join rule of %s: %v %v", conv, jr, err)
			}
		}
		var direct map[string][]string
		if err := alice.GetAccountData(ctxT(t), "m.direct", &direct); err != nil {
			t.Fatal(err)
		}
		if !contains(direct["@bob:localhost"], rooms["D01AB"].String()) || !contains(direct["@emile:localhost"], rooms["G02MPIM"].String()) {
			t.Fatalf("m.direct: %v", direct)
		}
		// Imported history is not news: no notification for alice, though
		// bob's imported reply mentions her.
		n := mustOK(t, "notifications", raw(t, "GET", cs(srv.URL)+"/notifications", alice.AccessToken, nil))
		if l, _ := n.Body["notifications"].([]any); len(l) != 0 {
			t.Fatalf("imported history notified: %s", n.Raw)
		}
		// The import refuses to run beside the server.
		cmd := exec.Command(bin, "import", "slack", "--data", dataDir, zipPath)
		cmd.Env = append(os.Environ(), "ENCLAVE_DATABASE_URL="+dbURL, "ENCLAVE_LOG_LEVEL=error")
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "stop it") {
			t.Fatalf("import beside a running server: %v\n%s", err, out)
		}
	})
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// importProc runs `enclave import` and returns its wall time, peak RSS
// (KiB) and error; kill, when set, is called with the running process.
func importProc(t testing.TB, bin, dataDir, dbURL string, kill func(*os.Process), args ...string) (time.Duration, int64, string, error) {
	took, rss, _, out, err := importProcCPU(t, bin, dataDir, dbURL, kill, args...)
	return took, rss, out, err
}

// importProcCPU is importProc that also returns the process's CPU time
// (user and system).
func importProcCPU(t testing.TB, bin, dataDir, dbURL string, kill func(*os.Process), args ...string) (time.Duration, int64, time.Duration, string, error) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"import"}, append(args, "--data", dataDir)...)...)
	cmd.Env = append(os.Environ(), "ENCLAVE_DATABASE_URL="+dbURL, "ENCLAVE_LOG_LEVEL=error")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if kill != nil {
		go kill(cmd.Process)
	}
	err := cmd.Wait()
	var rss int64
	var cpu time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return time.Since(start), rss, cpu, out.String(), err
}

// countImported reads every room of the bulk fixture back as user0 and
// returns how many message events each source message became.
func countImported(t testing.TB, baseURL string) map[string]int {
	t.Helper()
	c := loginClient(t, baseURL, "user0", "user0-pw")
	joined, err := c.JoinedRooms(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range joined.JoinedRooms {
		from := ""
		for {
			resp, err := c.Messages(ctxT(t), r, from, "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Chunk {
				if src := sourceOf(ev); src != nil {
					seen[src["channel"].(string)+"/"+src["message_id"].(string)]++
				}
			}
			if resp.End == "" || len(resp.Chunk) == 0 {
				break
			}
			from = resp.End
		}
	}
	return seen
}

// Issue 15, acceptance 2: kill -9 at random points of an import, run it
// again: exactly the export's messages, none doubled. 5,000 messages by
// default; IMPORT_CRASH_N=50000 for the full figure.
func TestImportCrash(t *testing.T) {
	n := 5000
	if v := os.Getenv("IMPORT_CRASH_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	bin := enclaveBinary(t)
	fx := bulkSlack(n)
	zipPath := filepath.Join(t.TempDir(), "bulk.zip")
	fx.write(t, zipPath)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dataDir := t.TempDir()
		srv := Start(t, d, Options{DataDir: dataDir})
		dbURL := srv.DBURL
		Register(t, srv.URL, "user0", "user0-pw", false)
		srv.Stop()
		// A first run to learn how long a whole import takes here, on a
		// throw-away store, then kills at random points of the real one.
		probeDir := t.TempDir()
		probe := Start(t, d, Options{DataDir: probeDir})
		probeURL := probe.DBURL
		probe.Stop()
		full, _, out, err := importProc(t, bin, probeDir, probeURL, nil, "slack", zipPath)
		if err != nil {
			t.Fatalf("probe import: %v\n%s", err, out)
		}
		// Each run is killed at a random point of what is left (a run
		// resumes, so the remaining work shrinks), until one finishes.
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 15))
		kills := 0
		for i := range 8 {
			at := time.Duration(float64(full) * (0.05 + 0.3*rng.Float64()))
			_, _, out, err := importProc(t, bin, dataDir, dbURL, func(p *os.Process) {
				time.Sleep(at)
				_ = p.Signal(syscall.SIGKILL)
			}, "slack", zipPath)
			if err == nil {
				t.Logf("run %d finished before the kill at %s", i, at)
				break
			}
			kills++
			t.Logf("run %d killed after %s (a full import takes %s): %s", i, at, full, strings.TrimSpace(lastLine(out)))
		}
		if kills == 0 {
			t.Fatal("no run was killed mid-import")
		}
		rep, _ := runImport(t, bin, dataDir, dbURL, "slack", zipPath)
		t.Logf("after %d kills, the last run imported %d messages and skipped %d records", kills, rep.Messages, rep.Skipped)
		srv = Start(t, d, Options{DataDir: dataDir, DBURL: dbURL})
		seen := countImported(t, srv.URL)
		if len(seen) != n {
			t.Fatalf("%d distinct messages imported, want %d", len(seen), n)
		}
		for k, c := range seen {
			if c != 1 {
				t.Fatalf("message %s stored %d times", k, c)
			}
		}
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexAny(s, "\r\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// TestImportBenchmark measures an import of IMPORT_BENCH messages
// (100000 for BENCHMARKS.md) on both stores: messages per second of the
// whole command and its peak RSS. Opt-in: it takes minutes.
func TestImportBenchmark(t *testing.T) {
	v := os.Getenv("IMPORT_BENCH")
	if v == "" {
		t.Skip("set IMPORT_BENCH=100000 to run")
	}
	n, _ := strconv.Atoi(v)
	bin := enclaveBinary(t)
	fx := bulkSlack(n)
	zipPath := filepath.Join(t.TempDir(), "bench.zip")
	fx.write(t, zipPath)
	st, _ := os.Stat(zipPath)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dataDir := t.TempDir()
		srv := Start(t, d, Options{DataDir: dataDir})
		dbURL := srv.DBURL
		srv.Stop()
		var load1 string
		if b, err := os.ReadFile("/proc/loadavg"); err == nil {
			load1 = strings.Fields(string(b))[0]
		}
		took, rss, cpu, out, err := importProcCPU(t, bin, dataDir, dbURL, nil, "slack", "--json", zipPath)
		if err != nil {
			t.Fatalf("import: %v\n%s", err, out)
		}
		var rep importer.Report
		if i := strings.Index(out, "{"); i >= 0 {
			_ = json.Unmarshal([]byte(out[i:]), &rep)
		}
		if rep.Messages != n {
			t.Fatalf("imported %d messages, want %d", rep.Messages, n)
		}
		t.Logf("BENCH %s: %d messages (+%d reactions, export %d bytes) in %s: %.0f messages/s, CPU %.3f ms/message, peak RSS %.1f MiB, load average at start %s",
			d, n, rep.Reactions, st.Size(), took.Round(time.Millisecond), float64(n)/took.Seconds(), float64(cpu.Microseconds())/1000/float64(n), float64(rss)/1024, load1)
	})
}

// Issue 15: a Mattermost bulk export (JSONL in a zip with its
// attachments) imports through the same core: channels public and
// private, a group DM, a thread, reactions, an @mention pill, an
// attachment downloaded back; its dry run matches the import.
func TestImportMattermost(t *testing.T) {
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		dataDir := t.TempDir()
		srv := Start(t, d, Options{DataDir: dataDir})
		dbURL := srv.DBURL
		Register(t, srv.URL, "mia", "mia-pw", false)
		srv.Stop()

		const t0 = int64(1690000000000)
		lines := []map[string]any{
			{"type": "version", "version": 1},
			{"type": "team", "team": map[string]any{"name": "ops", "display_name": "Operations", "type": "O"}},
			{"type": "channel", "channel": map[string]any{"team": "ops", "name": "town-square", "display_name": "Town Square", "type": "O", "header": "Welcome all"}},
			{"type": "channel", "channel": map[string]any{"team": "ops", "name": "sec", "display_name": "Security", "type": "P", "purpose": "closed group"}},
			{"type": "user", "user": map[string]any{"username": "mia", "email": "mia@agency.example", "first_name": "Mia", "last_name": "Moss",
				"teams": []any{map[string]any{"name": "ops", "channels": []any{map[string]any{"name": "town-square"}, map[string]any{"name": "sec"}}}}}},
			{"type": "user", "user": map[string]any{"username": "noah", "email": "noah@agency.example", "first_name": "Noah", "last_name": "Nash",
				"teams": []any{map[string]any{"name": "ops", "channels": []any{map[string]any{"name": "town-square"}, map[string]any{"name": "sec"}}}}}},
			{"type": "user", "user": map[string]any{"username": "olga", "email": "olga@agency.example", "nickname": "Olga",
				"teams": []any{map[string]any{"name": "ops", "channels": []any{map[string]any{"name": "town-square"}}}}}},
			{"type": "post", "post": map[string]any{"team": "ops", "channel": "town-square", "user": "mia", "message": "Hello @noah, **welcome**", "create_at": t0,
				"reactions": []any{map[string]any{"user": "noah", "emoji_name": "thumbsup", "create_at": t0 + 500}, map[string]any{"user": "olga", "emoji_name": "thumbsup", "create_at": t0 + 600}},
				"replies":   []any{map[string]any{"user": "noah", "message": "thanks!", "create_at": t0 + 1000}, map[string]any{"user": "olga", "message": "hi from Zürich", "create_at": t0 + 2000}}}},
			{"type": "post", "post": map[string]any{"team": "ops", "channel": "sec", "user": "noah", "message": "see the attached log", "create_at": t0 + 3000,
				"attachments": []any{map[string]any{"path": "data/logs/audit.log"}}}},
			{"type": "direct_channel", "direct_channel": map[string]any{"members": []string{"mia", "noah", "olga"}}},
			{"type": "direct_post", "direct_post": map[string]any{"channel_members": []string{"mia", "noah", "olga"}, "user": "olga", "message": "group chat", "create_at": t0 + 4000}},
		}
		zipPath := filepath.Join(t.TempDir(), "mm-export.zip")
		f, err := os.Create(zipPath)
		if err != nil {
			t.Fatal(err)
		}
		zw := zip.NewWriter(f)
		w, _ := zw.Create("export.jsonl")
		for _, l := range lines {
			b, _ := json.Marshal(l)
			w.Write(append(b, '\n'))
		}
		w, _ = zw.Create("data/logs/audit.log")
		w.Write([]byte("2023-07-22 login ok\n"))
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()

		dry, _ := runImport(t, bin, dataDir, dbURL, "mattermost", "--dry-run", zipPath)
		rep, _ := runImport(t, bin, dataDir, dbURL, "mattermost", zipPath)
		a, _ := json.Marshal(dry.Comparable())
		b, _ := json.Marshal(rep.Comparable())
		if !bytes.Equal(a, b) {
			t.Fatalf("dry run and import differ:\ndry:    %s\nimport: %s", a, b)
		}
		if rep.Users.Total != 3 || rep.Users.Matched != 1 || rep.Rooms.Public != 1 || rep.Rooms.Private != 1 || rep.Rooms.Direct != 1 ||
			rep.Messages != 6 || rep.ThreadReplies != 2 || rep.Reactions != 2 || rep.Files != 1 || len(rep.Unmappable) != 0 {
			t.Fatalf("report: %s", b)
		}
		srv = Start(t, d, Options{DataDir: dataDir, DBURL: dbURL})
		mia := loginClient(t, srv.URL, "mia", "mia-pw")
		joined, err := mia.JoinedRooms(ctxT(t))
		if err != nil || len(joined.JoinedRooms) != 3 {
			t.Fatalf("mia's rooms: %v %v", joined, err)
		}
		var root, file *event.Event
		for _, r := range joined.JoinedRooms {
			for _, ev := range allMessages(t, mia, r) {
				if ev.Type != event.EventMessage {
					continue
				}
				switch ev.Content.Raw["body"] {
				case "Hello Noah Nash, **welcome**":
					root = ev
				case "audit.log":
					file = ev
				}
			}
		}
		if root == nil || root.Timestamp != t0 || root.Sender != "@mia:localhost" ||
			!strings.Contains(root.Content.Raw["formatted_body"].(string), `<a href="https://matrix.to/#/@noah:localhost">Noah Nash</a>, <strong>welcome</strong>`) {
			t.Fatalf("root post: %v", root)
		}
		th, err := mia.GetRelations(ctxT(t), root.RoomID, root.ID, &mautrix.ReqGetRelations{RelationType: event.RelThread})
		if err != nil || len(th.Chunk) != 2 {
			t.Fatalf("thread: %v %v", th, err)
		}
		for _, ev := range th.Chunk {
			if ev.Content.Raw["body"] == "hi from Zürich" && (ev.Sender != "@olga:localhost" || ev.Timestamp != t0+2000) {
				t.Fatalf("reply: %v", ev)
			}
		}
		an, err := mia.GetRelations(ctxT(t), root.RoomID, root.ID, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation})
		if err != nil || len(an.Chunk) != 2 || an.Chunk[0].Content.Raw["m.relates_to"].(map[string]any)["key"] != "👍" {
			t.Fatalf("reactions: %v %v", an, err)
		}
		if file == nil || file.Sender != "@noah:localhost" {
			t.Fatalf("attachment event: %v", file)
		}
		uri, _ := id.ParseContentURI(file.Content.Raw["url"].(string))
		if data, err := mia.DownloadBytes(ctxT(t), uri); err != nil || string(data) != "2023-07-22 login ok\n" {
			t.Fatalf("attachment: %q %v", data, err)
		}
	})
}

// Issue 15, "safe to run on a live server": enclave import --server sends
// the export to the running server, which imports it through its own room
// server while clients are connected; the dry run over the same path
// matches; a re-run imports nothing; a user without the admin
// permissions is refused.
func TestImportLive(t *testing.T) {
	bin := enclaveBinary(t)
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		admin := Register(t, srv.URL, "alice", "alice-pw", true)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		fx := realisticSlack()
		zipPath := filepath.Join(t.TempDir(), "live-export.zip")
		fx.write(t, zipPath)
		remote := func(token string, args ...string) (*importer.Report, string, error) {
			cmd := exec.Command(bin, append([]string{"import", "slack", "--server", srv.URL, "--token", token, "--json", zipPath}, args...)...)
			cmd.Env = append(os.Environ(), "ENCLAVE_LOG_LEVEL=error")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var rep importer.Report
			if err == nil {
				err = json.Unmarshal(stdout.Bytes(), &rep)
			}
			return &rep, stderr.String(), err
		}
		if _, out, err := remote(bob.AccessToken); err == nil || !strings.Contains(out, "403") {
			t.Fatalf("a non-admin's import: %v %s", err, out)
		}
		dry, out, err := remote(admin.AccessToken, "--dry-run")
		if err != nil {
			t.Fatalf("dry run: %v %s", err, out)
		}
		rep, out, err := remote(admin.AccessToken)
		if err != nil {
			t.Fatalf("import: %v %s", err, out)
		}
		a, _ := json.Marshal(dry.Comparable())
		b, _ := json.Marshal(rep.Comparable())
		if !bytes.Equal(a, b) || rep.Messages == 0 || rep.Operator != "@alice:localhost" {
			t.Fatalf("dry run and import differ or are empty:\ndry:    %s\nimport: %s", a, b)
		}
		again, _, err := remote(admin.AccessToken)
		if err != nil || again.Messages != 0 || again.Skipped != rep.Messages+rep.Reactions {
			t.Fatalf("re-run: %+v %v", again, err)
		}
		// The running server's clients see the history at once; bob (the
		// pre-existing account matched by username) is in his rooms.
		bc := sessionClient(t, srv.URL, bob)
		joined, err := bc.JoinedRooms(ctxT(t))
		if err != nil || len(joined.JoinedRooms) != 5 {
			t.Fatalf("bob's rooms: %v %v", joined, err)
		}
		total := 0
		for _, r := range joined.JoinedRooms {
			for _, ev := range allMessages(t, bc, r) {
				if ev.Type == event.EventMessage && sourceOf(ev) != nil {
					total++
				}
			}
		}
		if total != rep.Messages {
			t.Fatalf("bob reads %d imported messages, report says %d", total, rep.Messages)
		}
		n := mustOK(t, "notifications", raw(t, "GET", cs(srv.URL)+"/notifications", bob.AccessToken, nil))
		if l, _ := n.Body["notifications"].([]any); len(l) != 0 {
			t.Fatalf("imported history notified bob: %s", n.Raw)
		}
	})
}
