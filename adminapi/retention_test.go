package adminapi

import (
	"testing"
	"time"
)

func TestRetentionRoomLifetime(t *testing.T) {
	const h = int64(time.Hour / time.Millisecond)
	off := RetentionPolicy{}
	def := RetentionPolicy{DefaultMaxLifetime: 720 * time.Hour}
	bounds := RetentionPolicy{DefaultMaxLifetime: 720 * time.Hour, AllowedMin: 24 * time.Hour, AllowedMax: 8760 * time.Hour}
	onlyMax := RetentionPolicy{AllowedMax: time.Hour}
	for _, tt := range []struct {
		name   string
		p      RetentionPolicy
		room   int64
		want   int64
		source string
	}{
		{"nothing set keeps everything", off, 0, 0, "default"},
		{"room policy, no bounds", off, 5 * h, 5 * h, "room"},
		{"default for a room without policy", def, 0, 720 * h, "default"},
		{"room policy beats default", def, 2 * h, 2 * h, "room"},
		{"raised to the minimum", bounds, 2 * h, 24 * h, "room"},
		{"lowered to the maximum", bounds, 100000 * h, 8760 * h, "room"},
		{"within bounds unchanged", bounds, 48 * h, 48 * h, "room"},
		{"bounds do not touch the default", bounds, 0, 720 * h, "default"},
		{"max alone clamps, no default", onlyMax, 5 * h, h, "room"},
		{"max alone, room without policy keeps everything", onlyMax, 0, 0, "default"},
	} {
		got, src := tt.p.RoomLifetime(tt.room)
		if got != tt.want || src != tt.source {
			t.Errorf("%s: got %d (%s), want %d (%s)", tt.name, got, src, tt.want, tt.source)
		}
	}
}
