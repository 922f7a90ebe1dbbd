package mattermost

import (
	"archive/zip"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"enclave/importer"
)

// Export is a Mattermost bulk export: a JSONL file (version, team,
// channel, user, post, direct_channel, direct_post lines, in that order),
// alone or in a zip whose data/ folder carries the attachments. It is
// read twice, line by line: once for users and conversations (direct
// channels come after the posts), once for the posts.
type Export struct {
	name      string
	zr        *zip.ReadCloser
	jsonl     *zip.File
	entries   map[string]*zip.File
	dir       string // a plain JSONL's folder, for attachment paths
	workspace string
	users     []importer.User
	convs     []importer.Conversation
	size      int64
	done      int64
}

// Open opens a bulk export (.jsonl, or a .zip holding one).
func Open(name, workspace string) (*Export, error) {
	e := &Export{name: name, workspace: workspace, entries: map[string]*zip.File{}, dir: filepath.Dir(name)}
	if strings.EqualFold(filepath.Ext(name), ".zip") {
		zr, err := zip.OpenReader(name)
		if err != nil {
			return nil, err
		}
		e.zr = zr
		for _, f := range zr.File {
			e.entries[f.Name] = f
			if strings.HasSuffix(f.Name, ".jsonl") && e.jsonl == nil {
				e.jsonl = f
			}
		}
		if e.jsonl == nil {
			zr.Close()
			return nil, errors.New("not a Mattermost bulk export: no .jsonl file in the zip")
		}
		e.size = int64(e.jsonl.UncompressedSize64)
	} else {
		st, err := os.Stat(name)
		if err != nil {
			return nil, err
		}
		e.size = st.Size()
	}
	if err := e.scan(); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close closes the export.
func (e *Export) Close() error {
	if e.zr != nil {
		return e.zr.Close()
	}
	return nil
}

func (e *Export) open() (io.ReadCloser, error) {
	if e.jsonl != nil {
		return e.jsonl.Open()
	}
	return os.Open(e.name)
}

type line struct {
	Type    string `json:"type"`
	Version int    `json:"version"`
	Team    *struct {
		Name        string `json:"name"`
		DisplayName string `json:"display_name"`
	} `json:"team"`
	Channel *struct {
		Team        string `json:"team"`
		Name        string `json:"name"`
		DisplayName string `json:"display_name"`
		Type        string `json:"type"`
		Header      string `json:"header"`
		Purpose     string `json:"purpose"`
	} `json:"channel"`
	User *struct {
		Username  string `json:"username"`
		Email     string `json:"email"`
		Nickname  string `json:"nickname"`
		FirstName string `json:"first_name"`
		LastName  string `json:"last_name"`
		DeleteAt  int64  `json:"delete_at"`
		Teams     []struct {
			Name     string `json:"name"`
			Channels []struct {
				Name string `json:"name"`
			} `json:"channels"`
		} `json:"teams"`
	} `json:"user"`
	Post          *post `json:"post"`
	DirectChannel *struct {
		Members []string `json:"members"`
		Header  string   `json:"header"`
	} `json:"direct_channel"`
	DirectPost *post `json:"direct_post"`
}

type reaction struct {
	User      string `json:"user"`
	EmojiName string `json:"emoji_name"`
	CreateAt  int64  `json:"create_at"`
}

type attachment struct {
	Path string `json:"path"`
}

type reply struct {
	User        string       `json:"user"`
	Message     string       `json:"message"`
	CreateAt    int64        `json:"create_at"`
	EditAt      int64        `json:"edit_at"`
	Type        string       `json:"type"`
	Reactions   []reaction   `json:"reactions"`
	Attachments []attachment `json:"attachments"`
}

type post struct {
	reply
	Team           string   `json:"team"`
	Channel        string   `json:"channel"`
	ChannelMembers []string `json:"channel_members"`
	Replies        []reply  `json:"replies"`
}

// lines calls fn for each line, decoded.
func (e *Export) lines(ctx context.Context, fn func(*line) error) error {
	rc, err := e.open()
	if err != nil {
		return err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 1<<20)
	e.done = 0
	for n := 1; ; n++ {
		b, err := br.ReadBytes('\n')
		e.done += int64(len(b))
		if len(strings.TrimSpace(string(b))) > 0 {
			var l line
			if jerr := json.Unmarshal(b, &l); jerr != nil {
				return fmt.Errorf("line %d: %w", n, jerr)
			}
			if ferr := fn(&l); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if n%1000 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func dmID(members []string) string {
	m := append([]string(nil), members...)
	sort.Strings(m)
	return "dm:" + strings.Join(m, ",")
}

// scan reads users and conversations (the first pass).
func (e *Export) scan() error {
	chans := map[string]*importer.Conversation{}
	var order []string
	add := func(c importer.Conversation) *importer.Conversation {
		if cur := chans[c.ID]; cur != nil {
			return cur
		}
		chans[c.ID] = &c
		order = append(order, c.ID)
		return chans[c.ID]
	}
	sawVersion := false
	err := e.lines(context.Background(), func(l *line) error {
		switch l.Type {
		case "version":
			sawVersion = true
		case "channel":
			c := l.Channel
			kind := importer.Public
			if c.Type == "P" {
				kind = importer.Private
			}
			topic := c.Header
			if topic == "" {
				topic = c.Purpose
			}
			name := c.DisplayName
			if name == "" {
				name = c.Name
			}
			add(importer.Conversation{ID: c.Team + "/" + c.Name, Name: name, Kind: kind, Topic: topic})
		case "user":
			u := l.User
			name := strings.TrimSpace(u.FirstName + " " + u.LastName)
			if name == "" {
				name = u.Nickname
			}
			e.users = append(e.users, importer.User{ID: u.Username, Username: u.Username, Email: u.Email, DisplayName: name, Deleted: u.DeleteAt > 0})
			for _, t := range u.Teams {
				for _, c := range t.Channels {
					id := t.Name + "/" + c.Name
					if cv := chans[id]; cv != nil {
						cv.Members = append(cv.Members, u.Username)
					}
				}
			}
		case "direct_channel":
			c := add(importer.Conversation{ID: dmID(l.DirectChannel.Members), Kind: importer.Direct, Topic: l.DirectChannel.Header, Members: l.DirectChannel.Members})
			if len(c.Members) == 0 {
				c.Members = l.DirectChannel.Members
			}
		case "direct_post":
			add(importer.Conversation{ID: dmID(l.DirectPost.ChannelMembers), Kind: importer.Direct, Members: l.DirectPost.ChannelMembers})
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !sawVersion {
		return errors.New("not a Mattermost bulk export: no version line")
	}
	for _, id := range order {
		e.convs = append(e.convs, *chans[id])
	}
	return nil
}

// Platform implements importer.Source.
func (e *Export) Platform() string { return "mattermost" }

// Workspace implements importer.Source.
func (e *Export) Workspace() string { return e.workspace }

// Progress implements importer.Source.
func (e *Export) Progress() (int64, int64) { return e.done, e.size }

// Users implements importer.Source.
func (e *Export) Users(ctx context.Context, fn func(importer.User) error) error {
	for _, u := range e.users {
		if err := fn(u); err != nil {
			return err
		}
	}
	return nil
}

// Conversations implements importer.Source.
func (e *Export) Conversations(ctx context.Context, fn func(importer.Conversation) error) error {
	for _, c := range e.convs {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// Messages implements importer.Source (the second pass): each post, then
// its replies.
func (e *Export) Messages(ctx context.Context, fn func(importer.Message) error) error {
	return e.lines(ctx, func(l *line) error {
		var p *post
		conv := ""
		switch l.Type {
		case "post":
			p = l.Post
			conv = p.Team + "/" + p.Channel
		case "direct_post":
			p = l.DirectPost
			conv = dmID(p.ChannelMembers)
		default:
			return nil
		}
		root := e.message(conv, p.reply, "")
		root.ThreadRoot = len(p.Replies) > 0
		if err := fn(root); err != nil {
			return err
		}
		for _, r := range p.Replies {
			if err := fn(e.message(conv, r, root.ID)); err != nil {
				return err
			}
		}
		return nil
	})
}

// postID identifies a post as Mattermost's importer does: channel,
// author, time and text (the bulk format carries no post IDs).
func postID(r reply) string {
	h := sha256.Sum256([]byte(r.Message))
	return fmt.Sprintf("%d-%s-%s", r.CreateAt, r.User, hex.EncodeToString(h[:4]))
}

func (e *Export) message(conv string, r reply, parent string) importer.Message {
	m := importer.Message{Conv: conv, ID: postID(r), User: r.User, TS: r.CreateAt, OrigTS: fmt.Sprint(r.CreateAt), Text: r.Message,
		ThreadParent: parent, RawSubtype: r.Type}
	switch {
	case r.Type == "system_join_channel" || r.Type == "system_join_team":
		m.Subtype = importer.Joined
	case r.Type == "system_leave_channel" || r.Type == "system_leave_team":
		m.Subtype = importer.Left
	case r.Type == "me":
		m.Subtype = importer.Emote
	case strings.HasPrefix(r.Type, "system_"):
		m.Subtype = importer.Notice
	}
	if r.EditAt > 0 {
		m.Edited = &importer.Edit{User: r.User, TS: r.EditAt}
	}
	byEmoji := map[string]int{}
	for _, re := range r.Reactions {
		em := importer.Emoji(re.EmojiName)
		i, ok := byEmoji[em]
		if !ok {
			i = len(m.Reactions)
			byEmoji[em] = i
			m.Reactions = append(m.Reactions, importer.Reaction{Emoji: em, TS: re.CreateAt})
		}
		m.Reactions[i].Users = append(m.Reactions[i].Users, re.User)
	}
	for i, a := range r.Attachments {
		f := importer.File{ID: fmt.Sprintf("%s-%d", m.ID, i), Name: path.Base(a.Path), URL: a.Path}
		if p, size, ok := e.find(a.Path); ok {
			f.Path, f.Size = p, size
		}
		m.Files = append(m.Files, f)
	}
	return m
}

// find locates an attachment the export carries.
func (e *Export) find(p string) (string, int64, bool) {
	if e.zr != nil {
		for _, c := range []string{p, "data/" + p, strings.TrimPrefix(p, "/")} {
			if f := e.entries[c]; f != nil {
				return c, int64(f.UncompressedSize64), true
			}
		}
		return "", 0, false
	}
	full := filepath.Join(e.dir, filepath.FromSlash(p))
	if st, err := os.Stat(full); err == nil && st.Mode().IsRegular() {
		return full, st.Size(), true
	}
	return "", 0, false
}

// Open implements importer.Source.
func (e *Export) Open(p string) (io.ReadCloser, error) {
	if e.zr != nil {
		f := e.entries[p]
		if f == nil {
			return nil, fs.ErrNotExist
		}
		return f.Open()
	}
	return os.Open(p)
}

var (
	reMention = regexp.MustCompile(`(^|[^\w@])@([a-z0-9._-]+[a-z0-9_])`)
	reBold    = regexp.MustCompile(`\*\*([^*\n]+)\*\*`)
	reItalic  = regexp.MustCompile(`(^|[\s(])[*_]([^*_\n]+)[*_]`)
	reStrike  = regexp.MustCompile(`~~([^~\n]+)~~`)
	reCode    = regexp.MustCompile("`([^`\n]+)`")
	reFence   = regexp.MustCompile("(?s)```[a-z]*\n?(.*?)```")
)

// Render implements importer.Source for Mattermost's Markdown: @username
// mentions become Matrix pills; bold, italic, strike, code and fenced
// blocks become HTML.
func (e *Export) Render(text string, r importer.Resolver) (string, string, []string) {
	var mentions []string
	seen := map[string]bool{}
	body := reMention.ReplaceAllStringFunc(text, func(s string) string {
		sm := reMention.FindStringSubmatch(s)
		if _, name, ok := r.Mention(sm[2]); ok && name != "" {
			return sm[1] + name
		}
		return s
	})
	h := html.EscapeString(text)
	var blocks []string
	h = reFence.ReplaceAllStringFunc(h, func(s string) string {
		blocks = append(blocks, "<pre><code>"+strings.TrimSuffix(reFence.FindStringSubmatch(s)[1], "\n")+"</code></pre>")
		return fmt.Sprintf("\x00%d\x00", len(blocks)-1)
	})
	h = reMention.ReplaceAllStringFunc(h, func(s string) string {
		sm := reMention.FindStringSubmatch(s)
		uid, name, ok := r.Mention(sm[2])
		if !ok {
			return s
		}
		if name == "" {
			name = uid
		}
		if !seen[uid] {
			seen[uid] = true
			mentions = append(mentions, uid)
		}
		return sm[1] + `<a href="https://matrix.to/#/` + uid + `">` + html.EscapeString(name) + `</a>`
	})
	h = reCode.ReplaceAllString(h, "<code>$1</code>")
	h = reBold.ReplaceAllString(h, "<strong>$1</strong>")
	h = reStrike.ReplaceAllString(h, "<del>$1</del>")
	h = reItalic.ReplaceAllString(h, "$1<em>$2</em>")
	h = strings.ReplaceAll(h, "\n", "<br>")
	for i, b := range blocks {
		h = strings.Replace(h, fmt.Sprintf("\x00%d\x00", i), b, 1)
	}
	return body, h, mentions
}
