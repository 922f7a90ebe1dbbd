package adminapi

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// Retention (MSC1763): rooms whose m.room.retention state sets
// max_lifetime — clamped to the server's allowed bounds — lose their
// timeline events (never state) once older than that; rooms that set none
// use the server-wide default, if any. Rooms under legal hold, or with a
// member under hold, keep everything. Each room's purge and its audit
// record share one transaction.

// RetentionPolicy is the server-wide retention configuration (config
// section retention); zero values are off.
type RetentionPolicy struct {
	// DefaultMaxLifetime applies to rooms whose state sets no max_lifetime.
	DefaultMaxLifetime time.Duration
	// AllowedMin and AllowedMax clamp a room's own max_lifetime.
	AllowedMin, AllowedMax time.Duration
}

// RoomLifetime returns the lifetime in milliseconds applied to a room
// whose m.room.retention sets roomMS (0: none), and where it came from
// ("room" or "default"); 0 means the room keeps everything.
func (p RetentionPolicy) RoomLifetime(roomMS int64) (int64, string) {
	if roomMS <= 0 {
		return p.DefaultMaxLifetime.Milliseconds(), "default"
	}
	if lo := p.AllowedMin.Milliseconds(); lo > 0 && roomMS < lo {
		roomMS = lo
	}
	if hi := p.AllowedMax.Milliseconds(); hi > 0 && roomMS > hi {
		roomMS = hi
	}
	return roomMS, "room"
}

// RunRetention purges expired events now and returns the count per room.
func (a *API) RunRetention(ctx context.Context) (map[string]int64, error) {
	policies, err := storage.RetentionPolicies(ctx, a.DB)
	if err != nil {
		return nil, err
	}
	own := make(map[string]int64, len(policies))
	for _, p := range policies {
		own[p.RoomID] = p.MaxLifetime
	}
	rooms := make([]string, 0, len(policies))
	if a.Retention.DefaultMaxLifetime > 0 {
		if rooms, err = storage.AllRoomIDs(ctx, a.DB); err != nil {
			return nil, err
		}
	} else {
		for _, p := range policies {
			rooms = append(rooms, p.RoomID)
		}
	}
	out := map[string]int64{}
	now := time.Now().UnixMilli()
	for _, roomID := range rooms {
		lifetime, source := a.Retention.RoomLifetime(own[roomID])
		if lifetime <= 0 {
			continue
		}
		held, err := storage.RoomUnderHold(ctx, a.DB, roomID)
		if err != nil {
			return out, err
		}
		if held {
			continue
		}
		before := now - lifetime
		n, err := a.Rooms.PurgeHistory(ctx, roomID, before, func(tx *storage.Tx, n int64) error {
			if n == 0 {
				return nil
			}
			details := map[string]any{"events": n, "before_ts": before, "max_lifetime": lifetime, "policy": source}
			if source == "room" && lifetime != own[roomID] {
				details["room_max_lifetime"] = own[roomID] // clamped by the server's bounds
			}
			return a.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{Server: a.ServerName}, Action: auditapi.ActionRetention,
				Target: roomID, RoomID: roomID, Details: details})
		})
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("retention in %s: %w", roomID, err)
		}
		if n > 0 {
			out[roomID] = n
			a.retentionPurged.Add(float64(n))
		}
	}
	return out, nil
}

// StartRetention runs RunRetention every interval; stop ends it.
func (a *API) StartRetention(interval time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), interval)
			if purged, err := a.RunRetention(ctx); err != nil {
				logrus.WithError(err).Error("retention: purge failed")
			} else if len(purged) > 0 {
				logrus.WithField("rooms", len(purged)).Info("retention: purged expired events")
			}
			cancel()
		}
	}()
	return func() { close(done) }
}

// POST /_enclave/admin/v1/retention/run: run the purge now.
func (a *API) runRetention(r *http.Request, _ *httpapi.Device) httpapi.Response {
	purged, err := a.RunRetention(r.Context())
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"purged": purged})
}

// GET /_enclave/admin/v1/rooms/{roomId}/export: the room's events as JSON
// lines (federation format, as stored: encrypted rooms stay ciphertext),
// after a header line, for legal discovery, with a signed manifest
// (auditapi.ExportManifest: the body's SHA-256, the exporter, the audit
// chain's head). The export is written to a temporary file first, so that
// its audit entry, recorded before anything is sent, carries its hash and
// the manifest can go out with it: in the Enclave-Export-Manifest header
// (base64 of the JSON) or, with ?format=zip, as manifest.json beside
// export.jsonl in a zip.
func (a *API) exportRoom(w http.ResponseWriter, r *http.Request) {
	dev, resp, ok := a.Client.Authenticate(r)
	if !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	ctx := r.Context() // Authenticate checked the route's use_admin_api + manage_rooms
	roomID := vars(r, "roomId")
	asZip := r.URL.Query().Get("format") == "zip"
	if f := r.URL.Query().Get("format"); f != "" && f != "zip" && f != "jsonl" {
		httpapi.WriteResponse(w, httpapi.InvalidParam("format must be jsonl or zip"))
		return
	}
	last, err := storage.MaxEventPos(ctx, a.DB, roomID)
	if err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	if _, err := storage.GetRoom(ctx, a.DB, roomID); errors.Is(err, storage.ErrNotFound) {
		httpapi.WriteResponse(w, httpapi.NotFound("room not found"))
		return
	}
	tmp, err := os.CreateTemp("", "enclave-export-*.jsonl")
	if err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	m := &auditapi.ExportManifest{Kind: "room", RoomID: roomID, ExportedBy: dev.UserID, ExportedTS: time.Now().UnixMilli()}
	if m.SHA256, m.Size, err = writeRoomExport(ctx, a.DB, tmp, roomID, last, m.ExportedBy, m.ExportedTS); err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	if err := a.Audit.Record(ctx, a.DB, auditapi.Entry{Actor: auditapi.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID},
		Action: auditapi.ActionRoomExport, Target: roomID, RoomID: roomID,
		Details: map[string]any{"up_to_pos": last, "sha256": m.SHA256, "size": m.Size, "format": map[bool]string{false: "jsonl", true: "zip"}[asZip]}}); err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	if err := a.Audit.SignManifest(ctx, m); err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	mj, _ := json.MarshalIndent(m, "", "  ")
	mj = append(mj, '\n')
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	if !asZip {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Enclave-Export-Manifest", base64.StdEncoding.EncodeToString(mj))
		w.Header().Set("Content-Length", strconv.FormatInt(m.Size, 10))
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, tmp)
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="room-export.zip"`)
	w.WriteHeader(http.StatusOK)
	zw := zip.NewWriter(w)
	modified := time.UnixMilli(m.ExportedTS)
	for _, part := range []struct {
		name string
		body io.Reader
	}{{"export.jsonl", tmp}, {"manifest.json", bytes.NewReader(mj)}} {
		pw, err := zw.CreateHeader(&zip.FileHeader{Name: part.name, Method: zip.Deflate, Modified: modified})
		if err != nil {
			return
		}
		if _, err := io.Copy(pw, part.body); err != nil {
			logrus.WithError(err).WithField("room_id", roomID).Error("admin: room export failed midway")
			return
		}
	}
	_ = zw.Close()
}

// writeRoomExport writes the export body (a header line, then the room's
// events up to stream position last) to w and returns its SHA-256 (hex)
// and size.
func writeRoomExport(ctx context.Context, db storage.Querier, w io.Writer, roomID string, last int64, by string, ts int64) (string, int64, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	bw := bufio.NewWriterSize(cw, 64<<10)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(map[string]any{"format": "enclave-room-export", "version": 1, "room_id": roomID, "exported_ts": ts, "exported_by": by}); err != nil {
		return "", 0, err
	}
	from := int64(0)
	for {
		evs, err := storage.RoomEventsRange(ctx, db, roomID, from, last, 500, false)
		if err != nil {
			return "", 0, err
		}
		for _, e := range evs {
			if _, err := bw.Write(append(append([]byte(nil), e.JSON...), '\n')); err != nil {
				return "", 0, err
			}
			from = e.StreamPos
		}
		if len(evs) < 500 {
			break
		}
	}
	if err := bw.Flush(); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
