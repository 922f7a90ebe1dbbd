package importer

import (
	"context"
	"io"
)

// Kind is what a conversation becomes.
type Kind int

// Conversation kinds.
const (
	Public  Kind = iota // a public channel: a public room in the directory
	Private             // a private channel: an invite-only room
	Direct              // a DM or group DM: a direct room (m.direct)
)

// User is a source platform's account.
type User struct {
	ID          string // the platform's user ID (the key messages use)
	Username    string
	Email       string
	DisplayName string
	Bot         bool
	Deleted     bool
}

// Conversation is a channel, private group, DM or group DM.
type Conversation struct {
	ID        string
	Name      string
	Kind      Kind
	Topic     string
	Creator   string   // source user ID, "" if unknown
	Members   []string // source user IDs, the membership at export time
	CreatedTS int64    // ms
}

// Message is one post, normalised. A format package fills it from its
// export; the core turns it into events.
type Message struct {
	Conv string // conversation ID
	ID   string // unique within the conversation (Slack: ts)
	User string // source user ID; "" for a bot without one
	// BotName names a bot message's sender (shown in the notice).
	BotName string
	TS      int64  // ms
	OrigTS  string // the platform's own timestamp text, kept verbatim
	Text    string // platform markup (Render turns it into body and HTML)
	// ThreadParent is the ID of the thread's root message, "" for a root
	// or a plain message. ThreadRoot marks a message replies point at.
	ThreadParent string
	ThreadRoot   bool
	Edited       *Edit
	Reactions    []Reaction
	Files        []File
	Subtype      Subtype
	// Raw subtype name from the platform, kept in the source record.
	RawSubtype string
}

// Subtype is how a message is shown.
type Subtype int

// Message subtypes.
const (
	Plain  Subtype = iota
	Bot            // a bot's message: m.notice
	Joined         // "joined the channel": m.notice, and a join
	Left           // "left the channel": m.notice, and a leave
	Notice         // other system messages (topic changed, pinned…): m.notice
	Emote          // /me
)

// Edit is a message's last edit.
type Edit struct {
	User string
	TS   int64
}

// Reaction is one emoji and who reacted with it.
type Reaction struct {
	Emoji string // the key as Matrix clients show it (Unicode when known)
	Users []string
	TS    int64 // 0: the message's time
}

// File is an attachment. Path is where the export carries it ("" when the
// export only links to it: listed in the report, never fetched).
type File struct {
	ID       string
	Name     string
	MimeType string
	Size     int64
	Path     string
	URL      string
}

// Resolver answers who a mention names, for Render.
type Resolver interface {
	// Mention resolves a source user ID or username to its Matrix user ID
	// and display name.
	Mention(ref string) (userID, name string, ok bool)
	// Channel resolves a source conversation ID or name to a name.
	Channel(ref string) (name string, ok bool)
}

// Source is one export, read by a format package. Users and
// Conversations are read first (and may be called once each); Messages
// streams every message, each conversation's in order.
type Source interface {
	Platform() string
	Workspace() string
	Users(ctx context.Context, fn func(User) error) error
	Conversations(ctx context.Context, fn func(Conversation) error) error
	Messages(ctx context.Context, fn func(Message) error) error
	// Open returns a file the export carries (File.Path).
	Open(path string) (io.ReadCloser, error)
	// Render turns a message's markup into plain body and HTML, with
	// mentions as Matrix pills; mentions lists the user IDs named.
	Render(text string, r Resolver) (body, html string, mentions []string)
	// Progress is how far Messages has read, of how much (bytes).
	Progress() (done, total int64)
}
