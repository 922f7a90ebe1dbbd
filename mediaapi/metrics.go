package mediaapi

import (
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// mediaBytes counts media bytes stored (uploads, after their row commits)
// and served (downloads and thumbnails, as written to the client), the
// figures an operator sizes disks and links by.
func newMediaBytes() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "enclave", Subsystem: "media", Name: "bytes_total",
		Help: "Media bytes stored (direction=stored: uploads) and served (direction=served: downloads and thumbnails).",
	}, []string{"direction"})
}

// RegisterMetrics registers the media repository's metrics on reg.
func (r *Repo) RegisterMetrics(reg prometheus.Registerer) error { return reg.Register(r.bytes) }

// countingWriter counts the body bytes written to a client.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// serveContent is http.ServeContent (ranges, conditional requests),
// counting the bytes served.
func (r *Repo) serveContent(w http.ResponseWriter, req *http.Request, mod time.Time, body io.ReadSeeker) {
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, req, "", mod, body)
	r.bytes.WithLabelValues("served").Add(float64(cw.n))
}
