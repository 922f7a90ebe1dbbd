package slack

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"enclave/importer"
)

// Export is an open Slack workspace export (the zip Slack's "Export data"
// gives: users.json, channels.json, groups.json, dms.json, mpims.json and
// a folder per conversation with a JSON file per day). Files are carried
// when the zip holds them under __uploads/FILEID/NAME or
// CONVERSATION/attachments/FILEID-NAME (the layouts export tools that
// download files write); otherwise they are only linked.
type Export struct {
	zr        *zip.ReadCloser
	workspace string
	entries   map[string]*zip.File
	files     map[string]string // file ID -> entry name
	days      map[string][]string
	convs     []conv
	total     int64
	done      int64
}

type conv struct {
	importer.Conversation
	folder string
}

// Open opens a Slack export zip; workspace names it in each imported
// event's source record.
func Open(name, workspace string) (*Export, error) {
	zr, err := zip.OpenReader(name)
	if err != nil {
		return nil, err
	}
	e := &Export{zr: zr, workspace: workspace, entries: map[string]*zip.File{}, files: map[string]string{}, days: map[string][]string{}}
	prefix := commonPrefix(zr.File)
	for _, f := range zr.File {
		n := strings.TrimPrefix(f.Name, prefix)
		if n == "" || strings.HasSuffix(n, "/") {
			continue
		}
		e.entries[n] = f
		if d := path.Dir(n); d != "." && strings.HasSuffix(n, ".json") {
			e.days[d] = append(e.days[d], n)
		}
		parts := strings.Split(n, "/")
		switch {
		case len(parts) == 3 && parts[0] == "__uploads":
			e.files[parts[1]] = n
		case len(parts) == 3 && parts[1] == "attachments":
			if i := strings.IndexByte(parts[2], '-'); i > 0 {
				e.files[parts[2][:i]] = n
			}
		}
	}
	if e.entries["users.json"] == nil || e.entries["channels.json"] == nil {
		zr.Close()
		return nil, errors.New("not a Slack export: no users.json and channels.json at its top level")
	}
	return e, nil
}

// commonPrefix is the single top folder some zips wrap everything in.
func commonPrefix(fs []*zip.File) string {
	for _, f := range fs {
		if strings.HasSuffix(f.Name, "users.json") {
			return strings.TrimSuffix(f.Name, "users.json")
		}
	}
	return ""
}

// Close closes the zip.
func (e *Export) Close() error { return e.zr.Close() }

// Platform implements importer.Source.
func (e *Export) Platform() string { return "slack" }

// Workspace implements importer.Source.
func (e *Export) Workspace() string { return e.workspace }

// Progress implements importer.Source.
func (e *Export) Progress() (int64, int64) { return e.done, e.total }

func (e *Export) readJSON(name string, v any) error {
	f := e.entries[name]
	if f == nil {
		return fs.ErrNotExist
	}
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := json.NewDecoder(rc).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

type user struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
	IsBot   bool   `json:"is_bot"`
	Real    string `json:"real_name"`
	Profile struct {
		Email       string `json:"email"`
		RealName    string `json:"real_name"`
		DisplayName string `json:"display_name"`
	} `json:"profile"`
}

// Users implements importer.Source.
func (e *Export) Users(ctx context.Context, fn func(importer.User) error) error {
	var us []user
	if err := e.readJSON("users.json", &us); err != nil {
		return err
	}
	for _, u := range us {
		name := u.Profile.RealName
		if name == "" {
			name = u.Real
		}
		if name == "" {
			name = u.Profile.DisplayName
		}
		if err := fn(importer.User{ID: u.ID, Username: u.Name, Email: u.Profile.Email, DisplayName: name, Bot: u.IsBot, Deleted: u.Deleted}); err != nil {
			return err
		}
	}
	return nil
}

type textSet struct {
	Value string `json:"value"`
}

type channel struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Created int64    `json:"created"`
	Creator string   `json:"creator"`
	Members []string `json:"members"`
	User    string   `json:"user"` // dms.json (older exports)
	Topic   textSet  `json:"topic"`
	Purpose textSet  `json:"purpose"`
}

// Conversations implements importer.Source: public channels, private
// channels (groups.json), DMs (dms.json) and group DMs (mpims.json).
func (e *Export) Conversations(ctx context.Context, fn func(importer.Conversation) error) error {
	e.convs = nil
	for _, list := range []struct {
		file   string
		kind   importer.Kind
		byName bool
	}{{"channels.json", importer.Public, true}, {"groups.json", importer.Private, true}, {"dms.json", importer.Direct, false}, {"mpims.json", importer.Direct, true}} {
		var cs []channel
		if err := e.readJSON(list.file, &cs); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return err
		}
		for _, c := range cs {
			topic := c.Topic.Value
			if topic == "" {
				topic = c.Purpose.Value
			}
			folder := c.ID
			if list.byName {
				folder = c.Name
			}
			cv := conv{Conversation: importer.Conversation{ID: c.ID, Name: c.Name, Kind: list.kind, Topic: html.UnescapeString(topic), Creator: c.Creator,
				Members: c.Members, CreatedTS: c.Created * 1000}, folder: folder}
			e.convs = append(e.convs, cv)
		}
	}
	// Progress counts the day files' bytes.
	e.total = 0
	for _, c := range e.convs {
		for _, n := range e.dayFiles(c.folder) {
			e.total += int64(e.entries[n].UncompressedSize64)
		}
	}
	for _, c := range e.convs {
		if err := fn(c.Conversation); err != nil {
			return err
		}
	}
	return nil
}

func (e *Export) dayFiles(folder string) []string {
	out := e.days[folder]
	sort.Strings(out) // YYYY-MM-DD.json: in date order
	return out
}

type message struct {
	Type       string `json:"type"`
	Subtype    string `json:"subtype"`
	User       string `json:"user"`
	BotID      string `json:"bot_id"`
	Username   string `json:"username"`
	BotProfile *struct {
		Name string `json:"name"`
	} `json:"bot_profile"`
	Text       string `json:"text"`
	TS         string `json:"ts"`
	ThreadTS   string `json:"thread_ts"`
	ReplyCount int    `json:"reply_count"`
	Edited     *struct {
		User string `json:"user"`
		TS   string `json:"ts"`
	} `json:"edited"`
	Reactions []struct {
		Name  string   `json:"name"`
		Users []string `json:"users"`
	} `json:"reactions"`
	Files []struct {
		ID                 string `json:"id"`
		Name               string `json:"name"`
		Title              string `json:"title"`
		Mimetype           string `json:"mimetype"`
		Size               int64  `json:"size"`
		URLPrivate         string `json:"url_private"`
		URLPrivateDownload string `json:"url_private_download"`
		Mode               string `json:"mode"`
	} `json:"files"`
}

// Messages implements importer.Source: conversation by conversation, day
// file by day file (one day's file in memory at a time), in time order.
func (e *Export) Messages(ctx context.Context, fn func(importer.Message) error) error {
	for _, c := range e.convs {
		for _, n := range e.dayFiles(c.folder) {
			if err := ctx.Err(); err != nil {
				return err
			}
			var ms []message
			if err := e.readJSON(n, &ms); err != nil {
				return err
			}
			sort.SliceStable(ms, func(i, j int) bool { return tsMillis(ms[i].TS) < tsMillis(ms[j].TS) })
			for _, m := range ms {
				if m.Type != "" && m.Type != "message" {
					continue
				}
				if err := fn(e.normalise(c.ID, m)); err != nil {
					return err
				}
			}
			e.done += int64(e.entries[n].UncompressedSize64)
		}
	}
	return nil
}

func (e *Export) normalise(convID string, m message) importer.Message {
	out := importer.Message{Conv: convID, ID: m.TS, User: m.User, TS: tsMillis(m.TS), OrigTS: m.TS, Text: m.Text, RawSubtype: m.Subtype}
	switch m.Subtype {
	case "bot_message":
		out.Subtype = importer.Bot
		out.BotName = m.Username
		if out.BotName == "" && m.BotProfile != nil {
			out.BotName = m.BotProfile.Name
		}
		if out.BotName == "" {
			out.BotName = m.BotID
		}
	case "channel_join", "group_join":
		out.Subtype = importer.Joined
	case "channel_leave", "group_leave":
		out.Subtype = importer.Left
	case "me_message":
		out.Subtype = importer.Emote
	case "", "thread_broadcast", "file_share", "tombstone":
	default:
		out.Subtype = importer.Notice
	}
	if m.ThreadTS != "" && m.ThreadTS != m.TS {
		out.ThreadParent = m.ThreadTS
	}
	if m.ThreadTS == m.TS && m.TS != "" || m.ReplyCount > 0 {
		out.ThreadRoot = true
	}
	if m.Edited != nil {
		out.Edited = &importer.Edit{User: m.Edited.User, TS: tsMillis(m.Edited.TS)}
	}
	for _, r := range m.Reactions {
		out.Reactions = append(out.Reactions, importer.Reaction{Emoji: importer.Emoji(r.Name), Users: r.Users})
	}
	for _, f := range m.Files {
		if f.Mode == "tombstone" || f.ID == "" {
			continue
		}
		name := f.Name
		if name == "" {
			name = f.Title
		}
		url := f.URLPrivateDownload
		if url == "" {
			url = f.URLPrivate
		}
		file := importer.File{ID: f.ID, Name: name, MimeType: f.Mimetype, Size: f.Size, URL: url}
		if p, ok := e.files[f.ID]; ok {
			file.Path = p
			file.Size = int64(e.entries[p].UncompressedSize64)
		}
		out.Files = append(out.Files, file)
	}
	return out
}

// Open implements importer.Source.
func (e *Export) Open(name string) (io.ReadCloser, error) {
	f := e.entries[name]
	if f == nil {
		return nil, fs.ErrNotExist
	}
	return f.Open()
}

// tsMillis turns Slack's "seconds.micros" into milliseconds.
func tsMillis(ts string) int64 {
	sec, frac, _ := strings.Cut(ts, ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return 0
	}
	ms := s * 1000
	if len(frac) >= 3 {
		f, _ := strconv.ParseInt(frac[:3], 10, 64)
		ms += f
	}
	return ms
}
