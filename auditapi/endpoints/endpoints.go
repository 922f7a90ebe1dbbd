package endpoints

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/internal/rbac"
	"enclave/storage"
)

// API serves the auditor endpoints.
type API struct {
	DB *storage.DB
	// Client is the client API's listener the endpoints are mounted on.
	Client     httpapi.Routes
	RBAC       *rbac.RBAC
	Log        *auditapi.Log
	ServerName string
	Version    string
	// HeadPath is the exported head file verification compares with.
	HeadPath string
	// AnchorPath is the append-only head export (audit.anchor_file).
	AnchorPath string
}

const prefix = "/_enclave/audit/v1"

// Register mounts the endpoints: reading needs read_audit, exporting
// export_audit (auditors only, by default).
func (a *API) Register() error {
	read, export := perm.Needs(perm.ReadAudit), perm.Needs(perm.ExportAudit)
	return errors.Join(
		a.Client.HandleAuthed("GET", prefix+"/entries", "audit", read, a.entries),
		a.Client.HandleAuthed("GET", prefix+"/head", "audit", read, a.head),
		a.Client.HandleAuthed("GET", prefix+"/public_key", "audit", read, a.publicKey),
		a.Client.HandleAuthed("POST", prefix+"/verify", "audit", read, a.verify),
		a.Client.HandleAuthed("GET", prefix+"/verify", "audit", read, a.verify),
		a.Client.HandleRaw("GET", prefix+"/export", "audit_export", export, a.export),
	)
}

// Entry is an entry as the listing shows it: the export form with its
// details parsed.
type Entry struct {
	auditapi.ExportedEntry
	DetailsJSON json.RawMessage `json:"details_json"`
}

// GET /_enclave/audit/v1/entries?from=N&limit=&actor=&room=&action=&since=&until=
func (a *API) entries(r *http.Request, dev *httpapi.Device) httpapi.Response {
	q := r.URL.Query()
	from, err := strconv.ParseInt(orDefault(q.Get("from"), "1"), 10, 64)
	if err != nil || from < 1 {
		return httpapi.InvalidParam("from must be a chain index (1 or more)")
	}
	limit, err := strconv.Atoi(orDefault(q.Get("limit"), "100"))
	if err != nil || limit < 1 {
		return httpapi.InvalidParam("limit must be a positive integer")
	}
	limit = min(limit, 1000)
	since, err := auditapi.ParseTime(q.Get("since"))
	if err != nil {
		return httpapi.InvalidParam("since: %v", err)
	}
	until, err := auditapi.ParseTime(q.Get("until"))
	if err != nil {
		return httpapi.InvalidParam("until: %v", err)
	}
	if err := a.Log.Seal(r.Context()); err != nil {
		return httpapi.InternalError(r, err)
	}
	rows, err := storage.ListAuditRows(r.Context(), a.DB, storage.AuditFilter{FromN: from, SinceTS: since, UntilTS: until,
		Actor: q.Get("actor"), RoomID: q.Get("room"), Action: q.Get("action"), Limit: limit + 1})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	body := map[string]any{}
	if len(rows) > limit {
		body["next_from"] = rows[limit].N
		rows = rows[:limit]
	}
	out := make([]Entry, 0, len(rows))
	for _, row := range rows {
		out = append(out, Entry{ExportedEntry: auditapi.ExportRow(row), DetailsJSON: json.RawMessage(row.Details)})
	}
	body["entries"] = out
	return httpapi.JSON(http.StatusOK, body)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// GET /_enclave/audit/v1/head
func (a *API) head(r *http.Request, _ *httpapi.Device) httpapi.Response {
	if err := a.Log.Flush(r.Context()); err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, a.Log.CurrentHead())
}

// GET /_enclave/audit/v1/public_key: what offline verification needs.
func (a *API) publicKey(r *http.Request, _ *httpapi.Device) httpapi.Response {
	keyID, pub := a.Log.PublicKey()
	return httpapi.JSON(http.StatusOK, map[string]any{"server_name": a.ServerName, "key_id": keyID, "public_key": base64.RawStdEncoding.EncodeToString(pub)})
}

// GET|POST /_enclave/audit/v1/verify: verify the whole chain (and the
// exported head, if configured) and report the first break.
func (a *API) verify(r *http.Request, dev *httpapi.Device) httpapi.Response {
	ctx := r.Context()
	if err := a.Log.Flush(ctx); err != nil {
		return httpapi.InternalError(r, err)
	}
	keyID, pub := a.Log.PublicKey()
	keys := auditapi.Keys{KeyID: keyID, Pub: pub}
	var heads []*auditapi.Head
	for _, p := range []string{a.HeadPath, a.AnchorPath} {
		if p == "" {
			continue
		}
		an, err := auditapi.ReadAnchor(p, a.ServerName, keys, false)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return httpapi.JSON(http.StatusOK, map[string]any{"ok": false, "result": err.Error()})
		}
		if an.Head != nil {
			heads = append(heads, an.Head)
		}
	}
	res, err := auditapi.VerifyStoreWith(ctx, a.DB, auditapi.VerifyOptions{Keys: keys, Heads: heads})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	outcome := auditapi.OutcomeSuccess
	if !res.OK() {
		outcome = auditapi.OutcomeFailure
	}
	if err := a.Log.Record(ctx, a.DB, auditapi.Entry{
		Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionAuditVerify, Outcome: outcome,
		Details: map[string]any{"verified": res.Verified, "result": res.String(), "via": "api"},
	}); err != nil {
		return httpapi.InternalError(r, err)
	}
	// anchored: the chain holds a head exported off the database (the
	// anchor or head file); without one a truncation would pass.
	return httpapi.JSON(http.StatusOK, map[string]any{"ok": res.OK(), "anchored": res.OK() && res.AnchorN > 0, "result": res.String(), "details": res})
}

// GET /_enclave/audit/v1/export?since=&until=&format=jsonl|cef: streams the
// export (the same format as `enclave audit export`).
func (a *API) export(w http.ResponseWriter, r *http.Request) {
	dev, resp, ok := a.Client.Authenticate(r)
	if !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	ctx := r.Context() // Authenticate checked the route's export_audit
	q := r.URL.Query()
	format := orDefault(q.Get("format"), auditapi.FormatJSONL)
	since, err1 := auditapi.ParseTime(q.Get("since"))
	until, err2 := auditapi.ParseTime(q.Get("until"))
	if err1 != nil || err2 != nil || (format != auditapi.FormatJSONL && format != auditapi.FormatCEF) {
		httpapi.WriteResponse(w, httpapi.InvalidParam("since/until must be times and format jsonl or cef"))
		return
	}
	if err := a.Log.Flush(ctx); err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	// Recorded before any entry leaves the server.
	if err := a.Log.Record(ctx, a.DB, auditapi.Entry{
		Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID}, Action: auditapi.ActionAuditExport,
		Details: map[string]any{"format": format, "since": since, "until": until, "via": "api"},
	}); err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	keyID, _ := a.Log.PublicKey()
	ctype := "application/x-ndjson"
	if format == auditapi.FormatCEF {
		ctype = "text/plain; charset=utf-8"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="enclave-audit-%s.%s"`, time.Now().UTC().Format("20060102T150405Z"), format))
	w.WriteHeader(http.StatusOK)
	ectx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if _, err := auditapi.Export(ectx, a.DB, w, auditapi.ExportOptions{SinceTS: since, UntilTS: until, Format: format,
		ServerName: a.ServerName, KeyID: keyID, Key: a.Log.SigningKey(), Version: a.Version}); err != nil {
		logrus.WithError(err).Error("audit: export over HTTP failed midway")
	}
}
