package test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"testing"
	"time"
)

// A Slack workspace export built for the import tests, as Slack writes
// one (users.json, channels.json, groups.json, dms.json, mpims.json, a
// folder per conversation with a JSON file per day), with the files of
// the messages under __uploads/FILEID/NAME as export tools that download
// them write.

type slackUser struct {
	ID, Name, Real, Email string
	Bot, Deleted          bool
}

type slackMsg struct {
	conv, day string
	m         map[string]any
}

type slackFixture struct {
	users    []slackUser
	channels []map[string]any
	groups   []map[string]any
	dms      []map[string]any
	mpims    []map[string]any
	msgs     []slackMsg
	uploads  map[string][]byte // "__uploads/F/NAME" -> bytes
}

// slackTS is Slack's ts for second s, micro u of a day in 2023.
func slackTS(s int64, u int) string {
	return fmt.Sprintf("%d.%06d", time.Date(2023, 3, 1, 9, 0, 0, 0, time.UTC).Unix()+s, u)
}

func tsMS(ts string) int64 {
	var sec, micro int64
	fmt.Sscanf(ts, "%d.%d", &sec, &micro)
	return sec*1000 + micro/1000
}

func (f *slackFixture) write(t testing.TB, path string) {
	t.Helper()
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(out)
	put := func(name string, v any) {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if b, ok := v.([]byte); ok {
			_, err = w.Write(b)
		} else {
			err = json.NewEncoder(w).Encode(v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var us []map[string]any
	for _, u := range f.users {
		us = append(us, map[string]any{"id": u.ID, "name": u.Name, "real_name": u.Real, "deleted": u.Deleted, "is_bot": u.Bot,
			"profile": map[string]any{"email": u.Email, "real_name": u.Real, "display_name": u.Name}})
	}
	put("users.json", us)
	put("channels.json", f.channels)
	put("groups.json", f.groups)
	put("dms.json", f.dms)
	put("mpims.json", f.mpims)
	// One file per conversation and day, in the order written.
	days := map[string][]map[string]any{}
	var order []string
	for _, m := range f.msgs {
		k := m.conv + "/" + m.day + ".json"
		if _, ok := days[k]; !ok {
			order = append(order, k)
		}
		days[k] = append(days[k], m.m)
	}
	for _, k := range order {
		put(k, days[k])
	}
	for name, b := range f.uploads {
		put(name, b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// realisticSlack is the acceptance fixture: public and private channels,
// a DM, a group DM, threads, an edit, reactions, mentions, files carried
// and only linked, bot messages, Unicode, a user who joined, posted and
// left, and a message from a user the export does not list.
func realisticSlack() *slackFixture {
	f := &slackFixture{uploads: map[string][]byte{}}
	f.users = []slackUser{
		{ID: "U01ALICE", Name: "alice", Real: "Alice Archer", Email: "alice@agency.example"},
		{ID: "U02BOB", Name: "bob", Real: "Bob Baker", Email: "bob@agency.example"},
		{ID: "U03CAROL", Name: "carol", Real: "Carol Cruz", Email: "carol@agency.example", Deleted: true},
		{ID: "U04EMILE", Name: "émile", Real: "Émile Zoë Ñúñez", Email: "emile@agency.example"},
		{ID: "U05DEPLOY", Name: "deploybot", Real: "Deploy Bot", Bot: true},
	}
	created := time.Date(2023, 3, 1, 8, 0, 0, 0, time.UTC).Unix()
	f.channels = []map[string]any{
		{"id": "C01GENERAL", "name": "general", "created": created, "creator": "U01ALICE", "members": []string{"U01ALICE", "U02BOB", "U04EMILE", "U05DEPLOY"},
			"topic": map[string]any{"value": "Company-wide announcements"}, "purpose": map[string]any{"value": "everything"}},
		{"id": "C02RANDOM", "name": "random", "created": created, "creator": "U02BOB", "members": []string{"U01ALICE", "U02BOB"},
			"topic": map[string]any{"value": ""}, "purpose": map[string]any{"value": "Off-topic chatter"}},
	}
	f.groups = []map[string]any{
		{"id": "G01SECRET", "name": "incident-response", "created": created, "creator": "U01ALICE", "members": []string{"U01ALICE", "U02BOB"},
			"topic": map[string]any{"value": "Private: IR team"}},
	}
	f.dms = []map[string]any{{"id": "D01AB", "created": created, "members": []string{"U01ALICE", "U02BOB"}}}
	f.mpims = []map[string]any{{"id": "G02MPIM", "name": "mpdm-alice--bob--emile-1", "created": created, "creator": "U01ALICE",
		"members": []string{"U01ALICE", "U02BOB", "U04EMILE"}}}

	add := func(conv, day string, m map[string]any) {
		m["type"] = "message"
		f.msgs = append(f.msgs, slackMsg{conv, day, m})
	}
	root := slackTS(10, 100)
	add("general", "2023-03-01", map[string]any{"user": "U01ALICE", "ts": root, "thread_ts": root, "reply_count": 2,
		"text":      "Welcome <@U02BOB>! Read *the rules* and _be kind_ &amp; see <https://intranet.example/rules|the rules page>",
		"reactions": []map[string]any{{"name": "+1", "users": []string{"U02BOB", "U04EMILE"}, "count": 2}, {"name": "tada", "users": []string{"U02BOB"}, "count": 1}}})
	add("general", "2023-03-01", map[string]any{"user": "U02BOB", "ts": slackTS(20, 5), "thread_ts": root, "parent_user_id": "U01ALICE", "text": "Thanks <@U01ALICE>, will do"})
	add("general", "2023-03-01", map[string]any{"user": "U04EMILE", "ts": slackTS(30, 0), "text": "Grüße aus Köln 🎉 日本語もOK",
		"edited": map[string]any{"user": "U04EMILE", "ts": slackTS(95, 0)}})
	add("general", "2023-03-01", map[string]any{"user": "U04EMILE", "ts": slackTS(40, 0), "thread_ts": root, "text": "Me too ~maybe~ `code`"})
	add("general", "2023-03-01", map[string]any{"subtype": "bot_message", "bot_id": "B01", "username": "CI", "ts": slackTS(50, 0), "text": "Build #42 passed"})
	add("general", "2023-03-01", map[string]any{"subtype": "bot_message", "user": "U05DEPLOY", "bot_id": "B02", "ts": slackTS(55, 0), "text": "Deployed v1.2 to staging"})
	add("general", "2023-03-01", map[string]any{"subtype": "channel_join", "user": "U03CAROL", "ts": slackTS(60, 0), "text": "<@U03CAROL> has joined the channel"})
	add("general", "2023-03-01", map[string]any{"user": "U03CAROL", "ts": slackTS(61, 0), "text": "Here is the report",
		"files": []map[string]any{
			{"id": "F01REPORT", "name": "report.pdf", "title": "Report", "mimetype": "application/pdf", "size": 11, "url_private": "https://files.slack.com/files-pri/T/F01REPORT/report.pdf"},
			{"id": "F02CHART", "name": "chart.png", "title": "Chart", "mimetype": "image/png", "size": 999, "url_private": "https://files.slack.com/files-pri/T/F02CHART/chart.png"},
		}})
	f.uploads["__uploads/F01REPORT/report.pdf"] = []byte("%PDF-1.4 ok")
	add("random", "2023-03-01", map[string]any{"user": "U01ALICE", "ts": slackTS(14, 0), "text": "",
		"files": []map[string]any{{"id": "F03PHOTO", "name": "photo.png", "mimetype": "image/png", "size": 0}}})
	f.uploads["C02RANDOM/attachments/F03PHOTO-photo.png"] = testPNG()
	add("general", "2023-03-01", map[string]any{"subtype": "channel_leave", "user": "U03CAROL", "ts": slackTS(70, 0), "text": "<@U03CAROL> has left the channel"})
	add("general", "2023-03-01", map[string]any{"user": "U99GHOST", "ts": slackTS(80, 0), "text": "who am I"})
	add("general", "2023-03-02", map[string]any{"user": "U02BOB", "ts": slackTS(86400+5, 0), "text": "Next day, <!here> standup in <#C02RANDOM|random>"})
	add("random", "2023-03-01", map[string]any{"user": "U02BOB", "ts": slackTS(15, 0), "text": "lunch?"})
	add("incident-response", "2023-03-01", map[string]any{"user": "U01ALICE", "ts": slackTS(12, 0), "text": "> quoted line\nplain ```block *not bold*```"})
	add("incident-response", "2023-03-01", map[string]any{"user": "U02BOB", "ts": slackTS(13, 0), "text": "ack", "reactions": []map[string]any{{"name": "eyes", "users": []string{"U01ALICE"}}}})
	add("D01AB", "2023-03-01", map[string]any{"user": "U01ALICE", "ts": slackTS(16, 0), "text": "private word"})
	add("D01AB", "2023-03-01", map[string]any{"user": "U02BOB", "ts": slackTS(17, 0), "text": "sure"})
	add("mpdm-alice--bob--emile-1", "2023-03-01", map[string]any{"user": "U04EMILE", "ts": slackTS(18, 0), "text": "group DM ✔"})
	return f
}

// bulkSlack is n plain messages spread over a few channels (crash test,
// benchmark), with a thread and a reaction every so often.
func bulkSlack(n int) *slackFixture {
	f := &slackFixture{uploads: map[string][]byte{}}
	var ids []string
	for i := range 20 {
		u := slackUser{ID: fmt.Sprintf("U%04d", i), Name: fmt.Sprintf("user%d", i), Real: fmt.Sprintf("User %d", i)}
		f.users = append(f.users, u)
		ids = append(ids, u.ID)
	}
	chans := []string{"alpha", "bravo", "charlie", "delta"}
	for i, c := range chans {
		f.channels = append(f.channels, map[string]any{"id": fmt.Sprintf("C%04d", i), "name": c, "created": int64(1677650000), "creator": ids[0], "members": ids})
	}
	perDay := 1000
	for i := range n {
		c := chans[i%len(chans)]
		k := i / len(chans)
		ts := slackTS(int64(k), i%len(chans))
		m := map[string]any{"type": "message", "user": ids[i%len(ids)], "ts": ts, "text": fmt.Sprintf("message %d in %s: *hello* <@%s>", i, c, ids[(i+1)%len(ids)])}
		if k%50 == 1 { // a reply to the previous message of this channel
			m["thread_ts"] = slackTS(int64(k-1), i%len(chans))
		}
		if k%50 == 0 {
			m["thread_ts"] = ts
			m["reply_count"] = 1
		}
		if i%100 == 7 {
			m["reactions"] = []map[string]any{{"name": "+1", "users": []string{ids[(i+3)%len(ids)]}}}
		}
		f.msgs = append(f.msgs, slackMsg{c, fmt.Sprintf("2023-%02d-%02d", 1+k/perDay/28, 1+(k/perDay)%28), m})
	}
	return f
}

// testPNG is a small gradient image, to be thumbnailed.
func testPNG() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for x := range 64 {
		for y := range 48 {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 5), 128, 255})
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}
