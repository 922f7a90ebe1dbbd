package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"enclave/auditapi"
	"enclave/mediaapi"
	"enclave/roomserver"
	"enclave/storage"
)

// SourceField is the content key of an imported event's source record.
const SourceField = auditapi.ImportSourceField

// EditedField marks an edited message: its content is the final text.
const EditedField = "gov.enclave.import.edited"

// Rooms is what the import asks of the room server.
type Rooms interface {
	CreateRoom(ctx context.Context, req roomserver.CreateRoomRequest) (string, error)
	ImportEvents(ctx context.Context, roomID string, n int, next func(i int, prevID string) (roomserver.SendRequest, error), inTx func(tx *storage.Tx, i int, ev *storage.Event) error) ([]*storage.Event, error)
	CurrentState(ctx context.Context, roomID string) (roomserver.StateMap, error)
}

// Media stores the files an export carries.
type Media interface {
	Import(ctx context.Context, user, fileName, contentType string, src io.Reader, inTx func(tx *storage.Tx, m mediaapi.ImportedMedia) error) (mediaapi.ImportedMedia, error)
}

// Options configure one run. With DryRun, Rooms and Media are not used
// and nothing is written: the report says what the import would do.
type Options struct {
	DB         *storage.DB
	Rooms      Rooms
	Media      Media
	Audit      *auditapi.Log
	ServerName string
	DryRun     bool

	// The export file (chain of custody).
	FileName string
	SHA256   string
	Size     int64
	Operator string

	// UsersMap maps a source user ID, username or e-mail (lower case) to
	// a local user (localpart or full user ID).
	UsersMap map[string]string
	// BotLocalpart is the importer's own user: it creates the rooms,
	// invites, and sends bot messages that have no user (default
	// "import").
	BotLocalpart string
	// BatchSize is how many events go in one transaction (default 500).
	BatchSize int
	// OnProgress is called after each batch.
	OnProgress func(Progress)
}

// Progress is the state of a running import.
type Progress struct {
	Messages  int64 // message events stored (or, in a dry run, planned)
	Events    int64 // every event, membership included
	BytesDone int64
	BytesAll  int64
	Elapsed   time.Duration
}

// ImportID names the import of one export file: the same file resumes
// the same import.
func ImportID(sha256Hex string) string {
	if len(sha256Hex) > 16 {
		sha256Hex = sha256Hex[:16]
	}
	return "imp_" + sha256Hex
}

type convState struct {
	conv    Conversation
	roomID  string
	members map[string]bool // Matrix user IDs at export time
	joined  map[string]string
	loaded  bool
	lastTS  int64
	pending []Message
	parts   []part
}

type userRef struct {
	userID string
	name   string
}

type run struct {
	o        Options
	src      Source
	p        string // platform
	importID string
	bot      string
	users    map[string]userRef // source ID -> local
	byName   map[string]userRef // username (lower case) -> local
	convs    map[string]*convState
	convName map[string]string
	roots    map[string]string // thread root message key -> event ID
	planned  map[string]bool   // thread roots queued in this run
	names    map[string]string // local user ID -> display name
	rep      *Report
	start    time.Time
	prog     Progress
	queued   int
}

// Run imports (or, with DryRun, plans) src. It returns the report of what
// it did (or would do); an error stops the import where it is, and a
// second run resumes.
func Run(ctx context.Context, src Source, o Options) (*Report, error) {
	if o.BotLocalpart == "" {
		o.BotLocalpart = "import"
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	r := &run{o: o, src: src, p: src.Platform(), importID: ImportID(o.SHA256), bot: "@" + o.BotLocalpart + ":" + o.ServerName,
		users: map[string]userRef{}, byName: map[string]userRef{}, convs: map[string]*convState{}, convName: map[string]string{},
		roots: map[string]string{}, planned: map[string]bool{}, names: map[string]string{}, start: time.Now()}
	r.rep = &Report{ImportID: r.importID, Platform: r.p, Workspace: src.Workspace(), File: o.FileName, SHA256: o.SHA256, Size: o.Size, DryRun: o.DryRun, Operator: o.Operator}
	if !o.DryRun {
		if err := r.begin(ctx); err != nil {
			return nil, err
		}
	}
	if err := src.Users(ctx, func(u User) error { return r.user(ctx, u) }); err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	var order []string
	if err := src.Conversations(ctx, func(c Conversation) error {
		order = append(order, c.ID)
		return r.conversation(ctx, c)
	}); err != nil {
		return nil, fmt.Errorf("conversations: %w", err)
	}
	if err := src.Messages(ctx, func(m Message) error { return r.message(ctx, m) }); err != nil {
		return nil, fmt.Errorf("messages: %w", err)
	}
	for _, id := range order {
		cs := r.convs[id]
		if err := r.flushConv(ctx, cs); err != nil {
			return nil, err
		}
		if err := r.finishConv(ctx, cs); err != nil {
			return nil, err
		}
	}
	r.rep.sortLists()
	if !o.DryRun {
		if err := r.finish(ctx); err != nil {
			return nil, err
		}
	}
	r.progress()
	return r.rep, nil
}

// begin records the import (resumed or new) and its audit entry.
func (r *run) begin(ctx context.Context) error {
	now := time.Now().UnixMilli()
	_, err := storage.StartImport(ctx, r.o.DB, &storage.Import{ImportID: r.importID, Platform: r.p, Workspace: r.src.Workspace(),
		FileName: r.o.FileName, FileSHA256: r.o.SHA256, FileSize: r.o.Size, Operator: r.o.Operator, StartedTS: now})
	if err != nil {
		return err
	}
	if err := r.audit(ctx, map[string]any{"op": "start"}); err != nil {
		return err
	}
	// The importer's own user sends what no imported user can: room
	// creation, invites, bot messages. It has no password.
	_, err = storage.CreateAccount(ctx, r.o.DB, &storage.Account{UserID: r.bot, Localpart: r.o.BotLocalpart, CreatedTS: now, DisplayName: "Import"})
	return err
}

func (r *run) audit(ctx context.Context, extra map[string]any) error {
	d := map[string]any{"platform": r.p, "workspace": r.src.Workspace(), "file": r.o.FileName, "file_sha256": r.o.SHA256,
		"file_size": r.o.Size, "operator": r.o.Operator}
	for k, v := range extra {
		d[k] = v
	}
	return r.o.Audit.Record(ctx, r.o.DB, auditapi.Entry{Actor: auditapi.Actor{UserID: r.bot}, Action: auditapi.ActionImport, Target: r.importID, Details: d})
}

func (r *run) finish(ctx context.Context) error {
	b, _ := json.Marshal(r.rep)
	if err := storage.FinishImport(ctx, r.o.DB, r.importID, time.Now().UnixMilli(), string(b)); err != nil {
		return err
	}
	return r.audit(ctx, map[string]any{"op": "finish", "counts": r.rep.Counts()})
}

func (r *run) key(parts ...string) string { return r.p + "|" + strings.Join(parts, "|") }

// accented letters and their plain forms, for localparts (Matrix user
// IDs are ASCII): "émile" becomes "emile".
const (
	accented = "àáâãäåāèéêëēìíîïīòóôõöøōùúûüūñçćčšžýÿłß"
	plain    = "aaaaaaaeeeeeiiiiiooooooouuuuuncccszyyls"
)

// localpartOf makes a valid localpart of a source username.
func localpartOf(s, fallback string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if i := strings.IndexRune(accented, c); i >= 0 {
			c = rune(plain[len([]rune(accented[:i]))])
		}
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '=', c == '-', c == '/', c == '+':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return localpartOf(fallback, "user")
	}
	return b.String()
}

// user maps one source user: recorded before, given in the users map,
// an existing account with the same username, or a new account,
// deactivated with no password until someone claims it.
func (r *run) user(ctx context.Context, u User) error {
	key := r.key("user", u.ID)
	name := u.DisplayName
	if name == "" {
		name = u.Username
	}
	set := func(uid string) {
		ref := userRef{userID: uid, name: name}
		r.users[u.ID] = ref
		r.names[uid] = name
		if u.Username != "" {
			r.byName[strings.ToLower(u.Username)] = ref
		}
	}
	r.rep.Users.Total++
	if v, err := storage.GetImportItem(ctx, r.o.DB, key); err == nil {
		set(v)
		r.rep.Users.Matched++
		r.rep.addUser(u, v, "imported before")
		return nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	target, how := "", "users map"
	for _, k := range []string{u.ID, u.Username, u.Email} {
		if v := r.o.UsersMap[strings.ToLower(k)]; k != "" && v != "" {
			target = v
			break
		}
	}
	if target == "" {
		lp := localpartOf(u.Username, u.ID)
		if a, err := storage.AccountByLocalpart(ctx, r.o.DB, lp); err == nil {
			target, how = a.UserID, "same username"
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		} else {
			target, how = lp, "created"
		}
	}
	if !strings.HasPrefix(target, "@") {
		target = "@" + strings.ToLower(target) + ":" + r.o.ServerName
	}
	if !strings.HasSuffix(target, ":"+r.o.ServerName) {
		r.rep.unmappable("user "+u.ID, "mapped to "+target+", which is not a local user")
		return nil
	}
	exists, err := storage.AccountExists(ctx, r.o.DB, target)
	if err != nil {
		return err
	}
	if exists {
		r.rep.Users.Matched++
	} else {
		r.rep.Users.Created++
		how = "created"
	}
	r.rep.addUser(u, target, how)
	set(target)
	if r.o.DryRun {
		return nil
	}
	return r.o.DB.WithTx(ctx, func(tx *storage.Tx) error {
		if !exists {
			lp := strings.TrimPrefix(strings.SplitN(target, ":", 2)[0], "@")
			if _, err := storage.CreateAccount(ctx, tx, &storage.Account{UserID: target, Localpart: lp, CreatedTS: time.Now().UnixMilli(),
				Deactivated: true, DisplayName: name}); err != nil {
				return err
			}
		}
		_, err := storage.PutImportItem(ctx, tx, storage.ImportItem{SourceKey: key, ImportID: r.importID, Kind: "user", Value: target, CreatedTS: time.Now().UnixMilli()})
		return err
	})
}

// Mention implements Resolver.
func (r *run) Mention(ref string) (string, string, bool) {
	if u, ok := r.users[ref]; ok {
		return u.userID, u.name, true
	}
	if u, ok := r.byName[strings.ToLower(ref)]; ok {
		return u.userID, u.name, true
	}
	return "", "", false
}

// Channel implements Resolver.
func (r *run) Channel(ref string) (string, bool) {
	if n, ok := r.convName[ref]; ok {
		return n, true
	}
	for _, n := range r.convName {
		if n == ref {
			return n, true
		}
	}
	return "", false
}

// conversation creates the room of a conversation (or finds the one a
// previous run made) and queues its members' joins.
func (r *run) conversation(ctx context.Context, c Conversation) error {
	cs := &convState{conv: c, members: map[string]bool{}, joined: map[string]string{}, lastTS: c.CreatedTS}
	r.convs[c.ID] = cs
	r.convName[c.ID] = c.Name
	for _, m := range c.Members {
		if u, ok := r.users[m]; ok {
			cs.members[u.userID] = true
		}
	}
	switch c.Kind {
	case Public:
		r.rep.Rooms.Public++
	case Private:
		r.rep.Rooms.Private++
	default:
		r.rep.Rooms.Direct++
	}
	key := r.key("room", c.ID)
	if v, err := storage.GetImportItem(ctx, r.o.DB, key); err == nil {
		cs.roomID = v
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if cs.roomID == "" && !r.o.DryRun {
		id, err := r.o.Rooms.CreateRoom(ctx, r.createRequest(cs, key))
		if err != nil {
			return fmt.Errorf("room for %s: %w", c.ID, err)
		}
		cs.roomID = id
	}
	if cs.roomID == "" {
		cs.loaded = true // a dry run's new room: nobody yet
	}
	// Members in the order the export lists them.
	for _, m := range c.Members {
		if u, ok := r.users[m]; ok {
			if err := r.ensureMember(ctx, cs, u.userID, c.CreatedTS); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *run) createRequest(cs *convState, key string) roomserver.CreateRoomRequest {
	c := cs.conv
	empty := ""
	joinRule := "invite"
	if c.Kind == Public {
		joinRule = "public"
	}
	users := map[string]any{r.bot: 100}
	if u, ok := r.users[c.Creator]; ok && c.Kind != Direct {
		users[u.userID] = 100
	}
	bot := r.bot
	evs := []roomserver.InitialEvent{
		{Type: "m.room.member", StateKey: &bot, Content: map[string]any{"membership": "join", "displayname": "Import"}},
		{Type: "m.room.power_levels", StateKey: &empty, Content: map[string]any{"users": users, "users_default": 0, "events_default": 0,
			"state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0}},
		{Type: "m.room.join_rules", StateKey: &empty, Content: map[string]any{"join_rule": joinRule}},
		{Type: "m.room.history_visibility", StateKey: &empty, Content: map[string]any{"history_visibility": "shared"}},
	}
	if c.Kind != Direct && c.Name != "" {
		evs = append(evs, roomserver.InitialEvent{Type: "m.room.name", StateKey: &empty, Content: map[string]any{"name": c.Name}})
	}
	if c.Topic != "" {
		evs = append(evs, roomserver.InitialEvent{Type: "m.room.topic", StateKey: &empty, Content: map[string]any{"topic": c.Topic}})
	}
	ts := c.CreatedTS
	if ts <= 0 {
		ts = 0
	}
	return roomserver.CreateRoomRequest{
		Creator: r.bot, RoomVersion: roomserver.DefaultRoomVersion, TS: ts, Imported: true,
		CreateContent: map[string]any{SourceField: r.source(c.ID, "", "", "")},
		Events:        evs, Public: c.Kind == Public,
		InTx: func(tx *storage.Tx, roomID string) error {
			_, err := storage.PutImportItem(context.Background(), tx, storage.ImportItem{SourceKey: key, ImportID: r.importID, Kind: "room", Value: roomID, CreatedTS: time.Now().UnixMilli()})
			return err
		},
	}
}

func (r *run) source(conv, msgID, origTS, subtype string) map[string]any {
	s := map[string]any{"platform": r.p, "workspace": r.src.Workspace(), "channel": conv, "import_id": r.importID}
	if n := r.convName[conv]; n != "" {
		s["channel_name"] = n
	}
	if msgID != "" {
		s["message_id"] = msgID
	}
	if origTS != "" {
		s["ts"] = origTS
	}
	if subtype != "" {
		s["subtype"] = subtype
	}
	return s
}

// loadMembers reads who is in the room now (a resumed import's room).
func (r *run) loadMembers(ctx context.Context, cs *convState) error {
	if cs.loaded {
		return nil
	}
	cs.loaded = true
	if r.o.DryRun {
		return nil
	}
	st, err := r.o.Rooms.CurrentState(ctx, cs.roomID)
	if err != nil {
		return err
	}
	for k, ev := range st {
		if k.Type == "m.room.member" {
			m, _ := ev.Membership()
			cs.joined[k.StateKey] = m
		}
	}
	return nil
}

// part is one event to store in a batch: key (if any) is recorded with
// it; build makes its request once the events before it are stored.
type part struct {
	key   string
	kind  string
	build func() (roomserver.SendRequest, error)
	done  func(eventID string)
}

// ensureMember queues the invite (rooms that are not public) and join
// that let userID post.
func (r *run) ensureMember(ctx context.Context, cs *convState, userID string, ts int64) error {
	if err := r.loadMembers(ctx, cs); err != nil {
		return err
	}
	if cs.joined[r.bot] == "" {
		cs.joined[r.bot] = "join" // the creator
	}
	if cs.joined[userID] == "join" {
		return nil
	}
	direct := cs.conv.Kind == Direct
	if cs.conv.Kind != Public && cs.joined[userID] != "invite" {
		c := map[string]any{"membership": "invite"}
		if direct {
			c["is_direct"] = true
		}
		r.queue(cs, part{build: stateReq(r.bot, userID, ts, c)})
	}
	c := map[string]any{"membership": "join"}
	if u := r.nameOf(userID); u != "" {
		c["displayname"] = u
	}
	r.queue(cs, part{build: stateReq(userID, userID, ts, c)})
	cs.joined[userID] = "join"
	return nil
}

func (r *run) leave(cs *convState, userID string, ts int64) {
	if cs.joined[userID] != "join" {
		return
	}
	r.queue(cs, part{build: stateReq(userID, userID, ts, map[string]any{"membership": "leave"})})
	cs.joined[userID] = "leave"
}

func (r *run) nameOf(userID string) string { return r.names[userID] }

func stateReq(sender, stateKey string, ts int64, content map[string]any) func() (roomserver.SendRequest, error) {
	return func() (roomserver.SendRequest, error) {
		b, err := json.Marshal(content)
		sk := stateKey
		return roomserver.SendRequest{Sender: sender, Type: "m.room.member", StateKey: &sk, Content: b, TS: ts, Imported: true}, err
	}
}

// queued parts of the conversation being flushed.
func (r *run) queue(cs *convState, p part) {
	cs.parts = append(cs.parts, p)
}

// message buffers m; a conversation's buffer is resolved and stored
// once it holds a batch.
func (r *run) message(ctx context.Context, m Message) error {
	cs := r.convs[m.Conv]
	if cs == nil {
		r.rep.unmappable("message "+m.Conv+"/"+m.ID, "conversation "+m.Conv+" is not in the export's channel lists")
		return nil
	}
	cs.pending = append(cs.pending, m)
	r.queued++
	if len(cs.pending) >= r.o.BatchSize {
		return r.flushConv(ctx, cs)
	}
	if r.queued >= 20*r.o.BatchSize {
		for _, c := range r.convs {
			if err := r.flushConv(ctx, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// flushConv turns a conversation's buffered messages into parts, skipping
// what an earlier run imported, and stores them.
func (r *run) flushConv(ctx context.Context, cs *convState) error {
	msgs := cs.pending
	cs.pending = nil
	r.queued -= len(msgs)
	var keys []string
	for _, m := range msgs {
		keys = append(keys, r.key("msg", m.Conv, m.ID))
		for _, f := range m.Files {
			keys = append(keys, r.key("file", m.Conv, m.ID, f.ID), r.key("media", f.ID))
		}
		for _, re := range m.Reactions {
			for _, u := range re.Users {
				keys = append(keys, r.key("react", m.Conv, m.ID, re.Emoji, u))
			}
		}
		if m.ThreadParent != "" {
			keys = append(keys, r.key("msg", m.Conv, m.ThreadParent))
		}
	}
	done := map[string]string{}
	if len(keys) > 0 {
		var err error
		if done, err = storage.ImportItemsIn(ctx, r.o.DB, keys); err != nil {
			return err
		}
	}
	for _, m := range msgs {
		if err := r.plan(ctx, cs, m, done); err != nil {
			return err
		}
	}
	return r.store(ctx, cs)
}

// plan queues the parts of one message.
func (r *run) plan(ctx context.Context, cs *convState, m Message, done map[string]string) error {
	if m.TS > cs.lastTS {
		cs.lastTS = m.TS
	}
	where := "message " + m.Conv + "/" + m.ID
	sender := r.bot
	if m.User != "" {
		u, ok := r.users[m.User]
		if !ok {
			r.rep.unmappable(where, "sender "+m.User+" is not in the export's user list")
			return nil
		}
		sender = u.userID
	} else if m.Subtype != Bot {
		r.rep.unmappable(where, "no sender")
		return nil
	}
	if strings.TrimSpace(m.Text) == "" && len(m.Files) == 0 && m.Subtype != Joined && m.Subtype != Left {
		r.rep.unmappable(where, "empty message (subtype "+orNone(m.RawSubtype)+")")
		return nil
	}
	msgKey := r.key("msg", m.Conv, m.ID)
	// The thread root: stored earlier (this run or before) or missing.
	thread := ""
	if m.ThreadParent != "" && m.ThreadParent != m.ID {
		pk := r.key("msg", m.Conv, m.ThreadParent)
		thread = r.roots[pk]
		if thread == "" {
			thread = done[pk]
		}
		if thread == "" && r.planned[pk] {
			thread = plannedRoot // stored earlier in this batch: resolved when built
		}
		if thread == "" {
			r.rep.degraded(where, "thread root "+m.ThreadParent+" is not in the export: imported outside the thread")
		}
	}
	if sender != r.bot || m.Subtype == Joined {
		if err := r.ensureMember(ctx, cs, sender, m.TS); err != nil {
			return err
		}
	}
	var textEvent string
	textEvent = done[msgKey]
	if textEvent != "" {
		r.rep.Skipped++
		if m.ThreadRoot {
			r.roots[msgKey] = textEvent
		}
	}
	if textEvent == "" && (strings.TrimSpace(m.Text) != "" || m.Subtype == Joined || m.Subtype == Left) {
		r.rep.Messages++
		switch m.Subtype {
		case Bot, Joined, Left, Notice:
			r.rep.Notices++
		}
		if thread != "" {
			r.rep.ThreadReplies++
		}
		if m.Edited != nil {
			r.rep.Edited++
		}
		msg := m
		th := thread
		r.queue(cs, part{key: msgKey, kind: "message", build: func() (roomserver.SendRequest, error) {
			if th == plannedRoot {
				th = r.roots[r.key("msg", msg.Conv, msg.ThreadParent)]
			}
			return r.textRequest(msg, sender, th)
		}, done: func(id string) {
			textEvent = id
			if msg.ThreadRoot {
				r.roots[msgKey] = id
			}
		}})
		if m.ThreadRoot {
			r.planned[msgKey] = true
		}
	}
	for _, f := range m.Files {
		if err := r.planFile(ctx, cs, m, f, sender, thread, done); err != nil {
			return err
		}
	}
	for _, re := range m.Reactions {
		for _, uid := range re.Users {
			rk := r.key("react", m.Conv, m.ID, re.Emoji, uid)
			if done[rk] != "" {
				r.rep.Skipped++
				continue
			}
			u, ok := r.users[uid]
			if !ok {
				r.rep.unmappable(where+" reaction "+re.Emoji, "reactor "+uid+" is not in the export's user list")
				continue
			}
			if textEvent == "" && done[msgKey] == "" && !(strings.TrimSpace(m.Text) != "" || m.Subtype == Joined || m.Subtype == Left) {
				r.rep.unmappable(where+" reaction "+re.Emoji, "the message has no text to react to")
				continue
			}
			if err := r.ensureMember(ctx, cs, u.userID, m.TS); err != nil {
				return err
			}
			r.rep.Reactions++
			ts := re.TS
			if ts <= 0 {
				ts = m.TS
			}
			emoji, reactor := re.Emoji, u.userID
			msg := m
			r.queue(cs, part{key: rk, kind: "reaction", build: func() (roomserver.SendRequest, error) {
				target := textEvent
				if target == "" {
					target = done[msgKey]
				}
				c := map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": target, "key": emoji},
					SourceField: r.source(msg.Conv, msg.ID, msg.OrigTS, "reaction")}
				b, err := json.Marshal(c)
				return roomserver.SendRequest{Sender: reactor, Type: "m.reaction", Content: b, TS: ts, Imported: true}, err
			}})
		}
	}
	switch m.Subtype {
	case Left:
		if sender != r.bot {
			r.leave(cs, sender, m.TS)
		}
	}
	return nil
}

// plannedRoot stands for a thread root queued in this run, not stored yet.
const plannedRoot = "$planned"

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// maxBody bounds an imported message's text (events are at most 64 KiB).
const maxBody = 24 << 10

func (r *run) textRequest(m Message, sender, thread string) (roomserver.SendRequest, error) {
	body, htm, mentions := r.src.Render(m.Text, r)
	msgtype := "m.text"
	switch m.Subtype {
	case Bot:
		msgtype = "m.notice"
		if m.BotName != "" {
			body = m.BotName + ": " + body
			htm = "<strong>" + html.EscapeString(m.BotName) + "</strong>: " + htm
		}
	case Joined, Left, Notice:
		msgtype = "m.notice"
		if strings.TrimSpace(body) == "" {
			verb := "joined"
			if m.Subtype == Left {
				verb = "left"
			}
			body = r.nameOf(sender) + " " + verb + " the conversation"
			htm = html.EscapeString(body)
		}
	case Emote:
		msgtype = "m.emote"
	}
	if len(body) > maxBody || len(htm) > maxBody {
		body, htm = truncate(body, maxBody), ""
		r.rep.degraded("message "+m.Conv+"/"+m.ID, "text over 24 KiB: truncated, HTML dropped")
	}
	c := map[string]any{"msgtype": msgtype, "body": body}
	if htm != "" && htm != html.EscapeString(body) {
		c["format"] = "org.matrix.custom.html"
		c["formatted_body"] = htm
	}
	c["m.mentions"] = map[string]any{"user_ids": nonNil(mentions)}
	src := r.source(m.Conv, m.ID, m.OrigTS, m.RawSubtype)
	if m.User != "" {
		src["user"] = m.User
	}
	c[SourceField] = src
	if m.Edited != nil {
		e := map[string]any{"ts": m.Edited.TS}
		if u, ok := r.users[m.Edited.User]; ok {
			e["user_id"] = u.userID
		}
		c[EditedField] = e
	}
	if thread != "" {
		c["m.relates_to"] = map[string]any{"rel_type": "m.thread", "event_id": thread, "is_falling_back": true,
			"m.in_reply_to": map[string]any{"event_id": thread}}
	}
	b, err := json.Marshal(c)
	return roomserver.SendRequest{Sender: sender, Type: "m.room.message", Content: b, TS: m.TS, Imported: true}, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// planFile stores a file the export carries as media (once, keyed by its
// source ID) and queues its m.file/m.image event; a file the export only
// links to is listed in the report, never fetched.
func (r *run) planFile(ctx context.Context, cs *convState, m Message, f File, sender, thread string, done map[string]string) error {
	where := "message " + m.Conv + "/" + m.ID
	fk := r.key("file", m.Conv, m.ID, f.ID)
	if done[fk] != "" {
		r.rep.Skipped++
		return nil
	}
	if f.Path == "" {
		r.rep.linked(LinkedFile{Conversation: m.Conv, Message: m.ID, Name: f.Name, URL: f.URL})
		return nil
	}
	mk := r.key("media", f.ID)
	uri := done[mk]
	size := f.Size
	if uri == "" && !r.o.DryRun {
		rc, err := r.src.Open(f.Path)
		if err != nil {
			r.rep.unmappable(where+" file "+f.Name, "cannot read "+f.Path+" in the export: "+err.Error())
			return nil
		}
		im, err := r.o.Media.Import(ctx, sender, f.Name, f.MimeType, rc, func(tx *storage.Tx, im mediaapi.ImportedMedia) error {
			_, err := storage.PutImportItem(ctx, tx, storage.ImportItem{SourceKey: mk, ImportID: r.importID, Kind: "media", Value: im.URI, CreatedTS: time.Now().UnixMilli()})
			return err
		})
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: file %s: %w", where, f.Name, err)
		}
		uri, size = im.URI, im.Size
		done[mk] = uri
	}
	r.rep.Files++
	r.rep.FileBytes += size
	r.rep.Messages++
	if thread != "" {
		r.rep.ThreadReplies++
	}
	th := thread
	r.queue(cs, part{key: fk, kind: "file", build: func() (roomserver.SendRequest, error) {
		if th == plannedRoot {
			th = r.roots[r.key("msg", m.Conv, m.ThreadParent)]
		}
		msgtype := "m.file"
		switch {
		case strings.HasPrefix(f.MimeType, "image/"):
			msgtype = "m.image"
		case strings.HasPrefix(f.MimeType, "video/"):
			msgtype = "m.video"
		case strings.HasPrefix(f.MimeType, "audio/"):
			msgtype = "m.audio"
		}
		info := map[string]any{"size": size}
		if f.MimeType != "" {
			info["mimetype"] = f.MimeType
		}
		src := r.source(m.Conv, m.ID, m.OrigTS, "file")
		src["file_id"] = f.ID
		c := map[string]any{"msgtype": msgtype, "body": f.Name, "filename": f.Name, "url": uri, "info": info, SourceField: src}
		if th != "" {
			c["m.relates_to"] = map[string]any{"rel_type": "m.thread", "event_id": th, "is_falling_back": true,
				"m.in_reply_to": map[string]any{"event_id": th}}
		}
		b, err := json.Marshal(c)
		return roomserver.SendRequest{Sender: sender, Type: "m.room.message", Content: b, TS: m.TS, Imported: true}, err
	}})
	return nil
}

// store writes the conversation's queued parts, a batch per transaction.
func (r *run) store(ctx context.Context, cs *convState) error {
	for len(cs.parts) > 0 {
		n := min(len(cs.parts), r.o.BatchSize)
		batch := cs.parts[:n]
		if r.o.DryRun {
			for _, p := range batch {
				if p.kind != "" {
					r.prog.Messages++
				}
			}
		} else {
			// A part's done runs once its event is built (on the room
			// server's building goroutine, before the next part is built).
			out, err := r.o.Rooms.ImportEvents(ctx, cs.roomID, n, func(i int, prevID string) (roomserver.SendRequest, error) {
				if i > 0 && batch[i-1].done != nil {
					batch[i-1].done(prevID)
				}
				return batch[i].build()
			}, func(tx *storage.Tx, i int, ev *storage.Event) error {
				p := batch[i]
				if p.key != "" {
					if _, err := storage.PutImportItem(ctx, tx, storage.ImportItem{SourceKey: p.key, ImportID: r.importID, Kind: p.kind,
						Value: ev.EventID, CreatedTS: time.Now().UnixMilli()}); err != nil {
						return err
					}
					r.prog.Messages++
				}
				return nil
			})
			if err == nil && batch[n-1].done != nil {
				batch[n-1].done(out[n-1].EventID)
			}
			if err != nil {
				return fmt.Errorf("storing %d events in %s (%s): %w", n, cs.roomID, cs.conv.ID, err)
			}
		}
		r.prog.Events += int64(n)
		cs.parts = cs.parts[n:]
		r.progress()
	}
	cs.parts = nil
	return nil
}

func (r *run) progress() {
	if r.o.OnProgress == nil {
		return
	}
	r.prog.BytesDone, r.prog.BytesAll = r.src.Progress()
	r.prog.Elapsed = time.Since(r.start)
	r.o.OnProgress(r.prog)
}

// finishConv leaves the room for those who are no longer members at
// export time, and marks direct rooms in each member's m.direct.
func (r *run) finishConv(ctx context.Context, cs *convState) error {
	if err := r.loadMembers(ctx, cs); err != nil {
		return err
	}
	var leavers []string
	for uid, m := range cs.joined {
		if m == "join" && uid != r.bot && !cs.members[uid] {
			leavers = append(leavers, uid)
		}
	}
	sort.Strings(leavers)
	for _, uid := range leavers {
		r.leave(cs, uid, cs.lastTS)
	}
	if err := r.store(ctx, cs); err != nil {
		return err
	}
	if cs.conv.Kind != Direct || r.o.DryRun {
		return nil
	}
	for uid := range cs.members {
		if err := r.markDirect(ctx, uid, cs); err != nil {
			return err
		}
	}
	return nil
}

// markDirect adds the room to userID's m.direct under each other member.
func (r *run) markDirect(ctx context.Context, userID string, cs *convState) error {
	return r.o.DB.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.LockAccountData(ctx, tx, userID, "", "m.direct"); err != nil {
			return err
		}
		cur := map[string][]string{}
		if raw, err := storage.GetAccountData(ctx, tx, userID, "", "m.direct"); err == nil {
			_ = json.Unmarshal(raw, &cur)
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		changed := false
		for other := range cs.members {
			if other == userID {
				continue
			}
			if !contains(cur[other], cs.roomID) {
				cur[other] = append(cur[other], cs.roomID)
				changed = true
			}
		}
		if !changed {
			return nil
		}
		b, _ := json.Marshal(cur)
		_, err := storage.PutAccountData(ctx, tx, userID, "", "m.direct", b)
		return err
	})
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
