package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"gopkg.in/natefinch/lumberjack.v2"

	"enclave/auditapi"
	"enclave/clientapi"
	"enclave/config"
	"enclave/internal/server"
	"enclave/storage"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch name := os.Args[1]; {
	case name == "version" || name == "--version" || name == "-v":
		fmt.Println("enclave", server.Version)
	case name == "help" || name == "--help" || name == "-h":
		usage()
	case commands[name] != nil:
		err = commands[name].run(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "enclave: unknown command %q\n", name)
		usage()
		os.Exit(2)
	}
	if errors.Is(err, errLogged) {
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "enclave:", err)
		os.Exit(1)
	}
}

// errLogged is a failure already written to the log (serve's, once the
// log format is set), so main does not repeat it as a plain-text line
// among JSON ones.
var errLogged = errors.New("logged")

// command is one subcommand.
type command struct {
	summary string
	run     func(args []string) error
}

// commands is every subcommand, in one table: adding one (audit, keys,
// room export…) means adding its line here.
var commands = map[string]*command{
	"init":          {"create a data directory without serving: init --data DIR --server-name NAME (writes enclave.yaml and the signing key; never overwrites)", cmdInit},
	"serve":         {"run the homeserver (creates DIR/enclave.yaml, signing key and database on first start)", cmdServe},
	"config":        {"print the effective configuration with each option's environment variable", cmdConfig},
	"generate-keys": {"create the server signing key (--force replaces an existing one)", cmdGenerateKeys},
	"create-user":   {"create a local user: create-user [--admin] USER [PASSWORD]", cmdCreateUser},
	"user":          {"manage users: user role USER [ROLE ...] | user role --add ROLE USER | user role --remove ROLE USER", cmdUser},
	"keys":          {"server keys: keys show (signing key and its fingerprint, for partners) | keys status (media KEK, audit key) | keys rotate [--new-kek-file F | --new-kek-env NAME] (media KEK; audited)", cmdKeys},
	"appservice":    {"application services: appservice register --id ID --sender LOCALPART [--url URL] [--users REGEX] [--aliases REGEX] (prints a registration with fresh tokens)", cmdAppService},
	"audit":         {"audit trail: audit export [--since T] [--until T] [--format jsonl|cef] > FILE | audit verify --data DIR [--anchor FILE] [--allow-unanchored] | audit verify FILE [--pubkey KEY] [--anchor FILE] | audit verify-export EXPORT [MANIFEST] --key KEY", cmdAudit},
	"import":        {"import another platform's history: import slack|mattermost [--dry-run] [--users-map CSV] EXPORT (resumable; see README \"Moving from Slack or Mattermost\")", cmdImport},
}

func usage() {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprint(os.Stderr, "usage: enclave <command> [flags]\n\ncommands:\n")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-15s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(os.Stderr, "  version         print the version\n\ncommon flags:\n  --data DIR      data directory holding enclave.yaml, keys, database and media (default ./data)\n")
}

// loadConfig reads DIR/enclave.yaml. Only serve creates a data directory
// (loadOrCreateConfig): a tool given a wrong --data must say so, not make
// a fresh directory with a new secret beside the real one.
func loadConfig(dataDir string) (*config.Config, string, bool, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, "", false, err
	}
	path := filepath.Join(abs, config.ConfigFileName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, "", false, fmt.Errorf("no Enclave data directory at %s (no %s there): give the right --data, or run `enclave serve --data %s` once to create one", abs, config.ConfigFileName, dataDir)
	} else if err != nil {
		return nil, "", false, err
	}
	cfg, err := config.Load(path, abs)
	return cfg, path, false, err
}

// loadOrCreateConfig is loadConfig that writes a commented default config
// (with a new shared secret) on first use.
func loadOrCreateConfig(dataDir string) (*config.Config, string, bool, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, "", false, err
	}
	path, created, err := config.EnsureDataDir(abs)
	if err != nil {
		return nil, "", false, err
	}
	cfg, err := config.Load(path, abs)
	return cfg, path, created, err
}

// noArgs parses flags given anywhere and refuses stray arguments.
func noArgs(fl *flag.FlagSet, args []string) error {
	pos, err := parseMixed(fl, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fl.Name(), pos[0])
	}
	return nil
}

// setupLogging applies log.*: level, encoding and, with log.file, a
// size-rotated file instead of stderr (lumberjack: rotation by size with
// a bounded count and age of old files, no external logrotate needed).
// The returned function closes the file.
func setupLogging(cfg *config.Config) (closeLog func()) {
	server.RouteStdLog()
	setLogLevelFormat(cfg)
	closeLog = func() {}
	if cfg.Log.File != "" {
		f := &lumberjack.Logger{
			Filename: cfg.Log.File, MaxSize: cfg.Log.MaxSizeMB, MaxBackups: cfg.Log.MaxFiles, MaxAge: cfg.Log.MaxAgeDays,
		}
		logrus.SetOutput(f)
		closeLog = func() { _ = f.Close() }
	}
	return closeLog
}

// setLogLevelFormat applies log.level and log.format (also on SIGHUP; the
// log file is opened once, at start).
func setLogLevelFormat(cfg *config.Config) {
	if lvl, err := logrus.ParseLevel(cfg.Log.Level); err == nil {
		logrus.SetLevel(lvl)
	}
	if cfg.Log.Format == "json" {
		logrus.SetFormatter(&logrus.JSONFormatter{})
	} else {
		logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
}

func cmdServe(args []string) error {
	fl := flag.NewFlagSet("serve", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	if err := noArgs(fl, args); err != nil {
		return err
	}
	cfg, path, created, err := loadOrCreateConfig(*dataDir)
	if err != nil {
		return err
	}
	defer setupLogging(cfg)()
	if created {
		logrus.WithField("config", path).Info("first start: wrote a commented default config")
	}
	ctx := context.Background()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		logrus.WithError(err).Error("enclave did not start")
		return errLogged
	}
	addr, err := srv.Start()
	if err != nil {
		logrus.WithError(err).Error("enclave did not start")
		return errLogged
	}
	logrus.WithFields(logrus.Fields{
		"server_name": cfg.ServerName, "client": addr, "config": path, "database": cfg.DatabaseDialect(), "version": server.Version,
	}).Info("Enclave is serving")
	logrus.Infof("create the first user with: enclave create-user --data %s --admin USER", *dataDir)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			reload(path, cfg, srv)
			continue
		}
		logrus.WithField("signal", sig.String()).Info("shutting down: draining requests")
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := srv.Shutdown(sctx)
		cancel()
		if err != nil {
			logrus.WithError(err).Error("shutdown")
			return errLogged
		}
		return nil
	}
	return nil
}

// reload re-reads the config file on SIGHUP and applies what can change
// without a restart (log level and format, federation policy, appservice
// registrations); the rest, log.file included, needs a restart.
func reload(path string, running *config.Config, srv *server.Server) {
	cfg, err := config.Load(path, running.DataDir)
	if err != nil {
		logrus.WithError(err).Error("SIGHUP: config not reloaded")
		srv.ConfigReloaded(path, err)
		return
	}
	setLogLevelFormat(cfg)
	restart := config.RestartNeeded(running, cfg)
	running.Log.Level, running.Log.Format = cfg.Log.Level, cfg.Log.Format
	srv.ConfigReloaded(path, nil)
	if f := srv.Federation; f != nil {
		// The policy keeps its own copy of the federation settings.
		if err := f.ReloadPolicy(cfg); err != nil {
			logrus.WithError(err).Error("SIGHUP: federation policy not reloaded")
		} else {
			logrus.Info("SIGHUP: federation policy reloaded")
		}
	}
	// The appservice registrations are read again (a bad file keeps the
	// ones in force).
	if err := srv.AppServices.Reload(context.Background(), cfg.AppServices.ConfigFiles); err != nil {
		logrus.WithError(err).Error("SIGHUP: appservice registrations not reloaded")
	} else {
		logrus.WithField("count", len(srv.AppServices.Registrations())).Info("SIGHUP: appservice registrations reloaded")
	}
	if len(restart) > 0 {
		logrus.WithField("needs_restart", strings.Join(restart, ", ")).Warn("SIGHUP: configuration reloaded (log, federation policy and appservices applied); these changed settings take effect only after a restart")
		return
	}
	logrus.Info("SIGHUP: configuration reloaded (log, federation policy and appservices applied)")
}

// cmdInit prepares a data directory for a deployment (a package's
// post-install step, a container build) without starting the server, so
// server_name is right before the first start creates anything that
// depends on it.
func cmdInit(args []string) error {
	fl := flag.NewFlagSet("init", flag.ExitOnError)
	dataDir := fl.String("data", "", "data directory to create")
	serverName := fl.String("server-name", "", "the Matrix server name (the part after the colon in user IDs)")
	if err := noArgs(fl, args); err != nil {
		return err
	}
	if *dataDir == "" || *serverName == "" {
		return errors.New("usage: enclave init --data DIR --server-name NAME")
	}
	if err := config.ValidateServerName(*serverName); err != nil {
		return fmt.Errorf("init: --server-name %q: %v", *serverName, err)
	}
	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	path, err := config.WriteNewConfig(abs, *serverName)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("init: %s already exists; not overwriting it (edit it, or remove it to start again)", path)
	}
	if err != nil {
		return err
	}
	cfg, err := config.Load(path, abs)
	if err != nil {
		return err
	}
	keyID, _, err := config.GenerateSigningKey(cfg.SigningKey, false)
	if errors.Is(err, fs.ErrExist) {
		// A key left from an earlier deployment stays: replacing it would
		// make other servers distrust this one's history.
		fmt.Printf("kept the existing signing key %s\n", cfg.SigningKey)
	} else if err != nil {
		return err
	} else {
		fmt.Printf("wrote %s (%s)\n", cfg.SigningKey, keyID)
	}
	fmt.Printf("wrote %s (server_name %s)\nstart with: enclave serve --data %s\n", path, cfg.ServerName, *dataDir)
	return nil
}

// cmdConfig prints the effective configuration; it never writes anything.
func cmdConfig(args []string) error {
	fl := flag.NewFlagSet("config", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	format := fl.String("format", "list", "list (key = value (ENV)) or yaml")
	if err := noArgs(fl, args); err != nil {
		return err
	}
	cfg, path, _, err := loadConfig(*dataDir)
	if err != nil {
		return err
	}
	switch *format {
	case "list":
		fmt.Printf("# effective configuration from %s (secrets masked)\n", path)
		return config.Print(os.Stdout, cfg)
	case "yaml":
		fmt.Printf("# effective configuration from %s (secrets masked)\n", path)
		return config.PrintYAML(os.Stdout, cfg)
	}
	return fmt.Errorf("config: --format is list or yaml, not %q", *format)
}

func cmdGenerateKeys(args []string) error {
	fl := flag.NewFlagSet("generate-keys", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	force := fl.Bool("force", false, "replace an existing key")
	if err := noArgs(fl, args); err != nil {
		return err
	}
	cfg, _, _, err := loadConfig(*dataDir)
	if err != nil {
		return err
	}
	keyID, _, err := config.GenerateSigningKey(cfg.SigningKey, *force)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; use --force to replace it (other servers will then need the new key)", cfg.SigningKey)
	}
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s (%s)\n", cfg.SigningKey, keyID)
	op := "generated"
	if *force {
		op = "replaced"
	}
	recordKeyOp(cfg, auditapi.Entry{Action: auditapi.ActionSigningKey, Target: keyID, Details: map[string]any{"op": op, "path": cfg.SigningKey, "via": "cli"}})
	return nil
}

// recordKeyOp audits a key operation of the command line (best effort: the
// key is already written; a store that cannot be reached is reported).
func recordKeyOp(cfg *config.Config, e auditapi.Entry) {
	db, err := openStore(cfg)
	if err == nil {
		defer db.Close()
		err = auditapi.RecordDetached(cliContext(), db, e)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "warning: could not record this key operation in the audit log:", err)
	}
}

func cmdCreateUser(args []string) error {
	fl := flag.NewFlagSet("create-user", flag.ExitOnError)
	dataDir := fl.String("data", "./data", "data directory")
	admin := fl.Bool("admin", false, "make the user a server administrator")
	// Flags may come before or after the user name; a password that starts
	// with "-" goes after "--" (or at the prompt).
	pos, err := parseMixed(fl, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return errors.New("usage: enclave create-user [--data DIR] [--admin] USER [PASSWORD]")
	}
	// The data directory must exist before a password is asked for.
	cfg, _, _, err := loadConfig(*dataDir)
	if err != nil {
		return err
	}
	localpart := strings.TrimPrefix(pos[0], "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	var password string
	if len(pos) == 2 {
		password = pos[1]
	}
	if password == "" {
		fmt.Fprint(os.Stderr, "password: ")
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return errors.New("no password given")
		}
		password = strings.TrimRight(line, "\r\n")
	}
	ctx := context.Background()
	db, err := storage.Open(ctx, cfg.Database.URL, storage.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer db.Close()
	userID, err := clientapi.CreateUser(ctx, db, cfg.ServerName, localpart, password, *admin)
	if err != nil {
		return err
	}
	fmt.Println("created", userID)
	return nil
}
