package server

import (
	"log"
	"strings"

	"github.com/sirupsen/logrus"
)

// logrusWriter turns the lines Go's net/http writes to its ErrorLog
// ("http: TLS handshake error from …", "http: panic serving …") into
// logrus entries, so that with log.format json every line on stderr is
// JSON and a log shipper never meets a plain-text line.
type logrusWriter struct{ component string }

func (w logrusWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if msg != "" {
		logrus.WithField("component", w.component).Warn(msg)
	}
	return len(p), nil
}

// httpErrorLog is the ErrorLog of every listener.
func httpErrorLog() *log.Logger { return log.New(logrusWriter{component: "http"}, "", 0) }

// RouteStdLog sends the standard library's default logger (used by
// dependencies that log with package log) through logrus too.
func RouteStdLog() {
	log.SetFlags(0)
	log.SetOutput(logrusWriter{component: "stdlog"})
}
