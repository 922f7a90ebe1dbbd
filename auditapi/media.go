package auditapi

import (
	"context"

	"github.com/sirupsen/logrus"
)

// MediaHook returns the media repository's audit callback
// (mediaapi.AuditFunc): uploads, downloads, thumbnails and administrative
// changes, with size and the content's SHA-256, never content.
//
// The repository calls it after its own transaction has committed, so a
// failing audit write is logged here rather than failing the request; to
// make media records transactional the repository would call Record in
// its transaction instead.
func (l *Log) MediaHook() func(ctx context.Context, user, mediaID string, size int64, sha256, action string) {
	return func(ctx context.Context, user, mediaID string, size int64, sha256, action string) {
		e := Entry{Actor: Actor{UserID: user}, Target: mediaID, Details: map[string]any{"size": size}}
		if sha256 != "" {
			e.Details["sha256"] = sha256
		}
		switch action {
		case "upload":
			e.Action = ActionMediaUpload
		case "download", "thumbnail", "remote_fetch":
			e.Action = ActionMediaDownload
			e.Details["kind"] = action
		default:
			e.Action = ActionMediaAdmin
			e.Details["op"] = action
		}
		if err := l.Record(context.WithoutCancel(ctx), l.db, e); err != nil {
			logrus.WithError(err).WithField("media_id", mediaID).Error("audit: recording media access")
		}
	}
}
