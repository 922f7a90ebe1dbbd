package main

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/importer"
	"enclave/importer/mattermost"
	"enclave/importer/slack"
	"enclave/internal/server"
	"enclave/storage"
)

const importUsage = `usage:
  enclave import slack [--data DIR] [--dry-run] [--workspace NAME] [--users-map CSV] [--operator NAME] [--json] EXPORT.zip
  enclave import mattermost [--data DIR] [--dry-run] [--workspace NAME] [--users-map CSV] [--operator NAME] [--json] EXPORT.jsonl|EXPORT.zip
  enclave import slack|mattermost --server URL --token TOKEN|--token-file F [--dry-run] ... EXPORT   (into a running server)
--dry-run reads the export and the store and prints what the import would do, writing nothing (safe beside a running server).
With --server the running server imports the export (an admin token with manage_users and manage_rooms). Without it the
import needs the store to itself: it refuses while a server runs. It may be interrupted at any point (Ctrl-C, kill -9,
power loss): run the same command again and it imports only what is missing.
--users-map CSV: lines "source,local" (source: the platform's user ID, username or e-mail; local: localpart or @user:server)`

func cmdImport(args []string) error {
	if len(args) == 0 || (args[0] != "slack" && args[0] != "mattermost") {
		return errors.New(importUsage)
	}
	platform := args[0]
	fl := flag.NewFlagSet("import "+platform, flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	dry := fl.Bool("dry-run", false, "report what the import would do; write nothing")
	workspace := fl.String("workspace", "", "workspace name recorded in each event's source (default: the export's file name)")
	usersMap := fl.String("users-map", "", "CSV mapping source users to local users")
	operator := fl.String("operator", "", "who runs the import, for the audit trail (default: the OS user)")
	asJSON := fl.Bool("json", false, "print the report as JSON")
	batch := fl.Int("batch", 500, "events per transaction")
	cpuProfile := fl.String("cpuprofile", "", "write a CPU profile of the import to this file")
	serverURL := fl.String("server", "", "import through this running server (its client URL, e.g. http://127.0.0.1:8008) instead of the stopped store")
	token := fl.String("token", "", "with --server: an access token of an admin who may manage users and rooms")
	tokenFile := fl.String("token-file", "", "with --server: read the access token from this file")
	pos, err := parseMixed(fl, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New(importUsage)
	}
	file := pos[0]
	if *serverURL != "" {
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return err
			}
			*token = strings.TrimSpace(string(b))
		}
		return importRemote(*serverURL, *token, platform, file, *dry, *workspace, *operator, *usersMap, *asJSON)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	cfg, _, _, err := loadConfig(*dataDir)
	if err != nil {
		return err
	}
	setupLogging(cfg)
	if logrus.GetLevel() > logrus.WarnLevel || logrus.GetLevel() == logrus.InfoLevel {
		logrus.SetLevel(logrus.WarnLevel) // the progress line and report are the output
	}
	if *operator == "" {
		*operator = "unknown"
		if u, err := user.Current(); err == nil {
			*operator = u.Username
		}
	}
	if *workspace == "" {
		*workspace = strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	}
	sum, size, err := hashFile(file)
	if err != nil {
		return err
	}
	m, err := readUsersMap(*usersMap)
	if err != nil {
		return err
	}
	var src importer.Source
	switch platform {
	case "slack":
		e, err := slack.Open(file, *workspace)
		if err != nil {
			return err
		}
		defer e.Close()
		src = e
	default:
		e, err := mattermost.Open(file, *workspace)
		if err != nil {
			return err
		}
		defer e.Close()
		src = e
	}
	o := importer.Options{ServerName: cfg.ServerName, DryRun: *dry, FileName: filepath.Base(file), SHA256: sum, Size: size,
		Operator: *operator, UsersMap: m, BatchSize: *batch, OnProgress: newProgress(os.Stderr).update}
	ctx := cliContext()
	var rep *importer.Report
	if *dry {
		// Reads only: the accounts to match and what earlier runs did.
		db, err := openStore(cfg)
		if err != nil {
			return err
		}
		defer db.Close()
		o.DB = db
		rep, err = importer.Run(ctx, src, o)
		if err != nil {
			return err
		}
	} else {
		// The room server, media repository and audit log of a server
		// that does not listen: the import writes through them, with the
		// store's serving lock held, so no server runs beside it.
		srv, err := server.New(ctx, cfg)
		if errors.Is(err, storage.ErrStoreInUse) {
			return fmt.Errorf("%w\nthe server is running on this store: import through it with --server URL --token ADMIN_TOKEN, or stop it, import (it can be interrupted and re-run) and start it again; --dry-run works beside a running server", err)
		}
		if err != nil {
			return err
		}
		o.DB, o.Rooms, o.Media, o.Audit = srv.DB, srv.Rooms, srv.Media, srv.Audit
		rep, err = importer.Run(ctx, src, o)
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		serr := srv.Shutdown(sctx)
		cancel()
		if err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
	}
	fmt.Fprintln(os.Stderr)
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.WriteText(os.Stdout)
	return nil
}

func hashFile(name string) (string, int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func readUsersMap(name string) (map[string]string, error) {
	m := map[string]string{}
	if name == "" {
		return m, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.Comment = '#'
	for line := 1; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(rec) < 2 {
			return nil, fmt.Errorf("%s line %d: want source,local", name, line)
		}
		src, dst := strings.ToLower(strings.TrimSpace(rec[0])), strings.TrimSpace(rec[1])
		if line == 1 && src == "source" {
			continue
		}
		m[src] = dst
	}
}

// progress prints the import's progress: a redrawn bar with rate and ETA
// on a terminal, a plain line every few seconds otherwise (logs, CI).
type progress struct {
	w     *os.File
	tty   bool
	last  time.Time
	start time.Time
}

func newProgress(w *os.File) *progress {
	st, err := w.Stat()
	return &progress{w: w, tty: err == nil && st.Mode()&os.ModeCharDevice != 0, start: time.Now()}
}

func (p *progress) update(pr importer.Progress) {
	now := time.Now()
	every := 5 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	done := pr.BytesAll > 0 && pr.BytesDone >= pr.BytesAll
	if now.Sub(p.last) < every && !done {
		return
	}
	p.last = now
	rate := 0.0
	if s := pr.Elapsed.Seconds(); s > 0 {
		rate = float64(pr.Messages) / s
	}
	frac := 0.0
	if pr.BytesAll > 0 {
		frac = float64(pr.BytesDone) / float64(pr.BytesAll)
	}
	eta := "?"
	if frac > 0 && frac < 1 {
		eta = (time.Duration(float64(pr.Elapsed)/frac) - pr.Elapsed).Round(time.Second).String()
	} else if frac >= 1 {
		eta = "0s"
	}
	if p.tty {
		bar := strings.Repeat("#", int(frac*30)) + strings.Repeat(" ", 30-int(frac*30))
		fmt.Fprintf(p.w, "\r[%s] %3.0f%% %d messages, %.0f msg/s, ETA %s   ", bar, frac*100, pr.Messages, rate, eta)
		return
	}
	fmt.Fprintf(p.w, "import: %.0f%% %d messages %d events %.0f msg/s elapsed %s eta %s\n", frac*100, pr.Messages, pr.Events, rate, pr.Elapsed.Round(time.Second), eta)
}

// importRemote sends the export to a running server's import endpoint
// and prints the report it answers.
func importRemote(base, token, platform, file string, dry bool, workspace, operator, usersMap string, asJSON bool) error {
	if token == "" {
		return errors.New("--server needs --token or --token-file (an admin's access token)")
	}
	m, err := readUsersMap(usersMap)
	if err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	q := url.Values{"file_name": {filepath.Base(file)}}
	if dry {
		q.Set("dry_run", "true")
	}
	if workspace != "" {
		q.Set("workspace", workspace)
	}
	if operator != "" {
		q.Set("operator", operator)
	}
	if len(m) > 0 {
		b, _ := json.Marshal(m)
		q.Set("users_map", string(b))
	}
	req, err := http.NewRequest(http.MethodPost, strings.TrimRight(base, "/")+"/_enclave/admin/v1/import/"+platform+"?"+q.Encode(), f)
	if err != nil {
		return err
	}
	req.ContentLength = st.Size()
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	fmt.Fprintf(os.Stderr, "sending %s (%d bytes) to %s; the server imports it and answers the report\n", file, st.Size(), base)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var rep importer.Report
	if err := json.Unmarshal(body, &rep); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(&rep)
	}
	rep.WriteText(os.Stdout)
	return nil
}
