package mediaapi

import (
	"net/http"
	"net/url"
)

// ServeFederation answers another server's request for this server's media
// mediaID (GET /_matrix/federation/v1/media/download and /thumbnail): the
// same lookup, quarantine, pending-upload wait (timeout_ms) and
// thumbnailing (width, height, method from the query) as the anonymous
// client endpoints, written to w as a plain answer that the federation
// component frames as multipart. Only the query keys the client endpoints
// read are kept, and the remote's headers are dropped, so a Range or
// conditional header cannot turn the answer into a 206 or 304 that the
// framing does not carry. The read is audited with the remote's address.
// Federation is not affected by media.legacy_unauthenticated: the request
// is signed by a server the policy admits.
func (r *Repo) ServeFederation(w http.ResponseWriter, req *http.Request, mediaID string, thumb bool) {
	in := req.URL.Query()
	q := url.Values{}
	keep := []string{"timeout_ms"}
	if thumb {
		keep = append(keep, "width", "height", "method", "animated")
	}
	for _, k := range keep {
		if v := in.Get(k); v != "" {
			q.Set(k, v)
		}
	}
	own := req.Clone(req.Context())
	attachRequester(own) // before the headers go: the user agent is the remote server's
	own.Header = http.Header{}
	u := *req.URL
	u.RawQuery = q.Encode()
	own.URL = &u
	if thumb {
		r.serveThumbnail(w, own, r.opts.ServerName, mediaID, "", false)
		return
	}
	r.serveDownload(w, own, r.opts.ServerName, mediaID, "", "", false)
}
