package importer

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Report is what an import did, or, for a dry run, would do: the same
// decisions are made both ways, so a dry run's report on a store is the
// report of the import run on it next.
type Report struct {
	ImportID  string `json:"import_id"`
	Platform  string `json:"platform"`
	Workspace string `json:"workspace"`
	File      string `json:"file"`
	SHA256    string `json:"file_sha256"`
	Size      int64  `json:"file_size"`
	Operator  string `json:"operator"`
	DryRun    bool   `json:"dry_run"`

	Users struct {
		Total   int `json:"total"`
		Matched int `json:"matched"` // existing accounts (same username, users map, earlier import)
		Created int `json:"created"` // new accounts, deactivated with no password until claimed
	} `json:"users"`
	Rooms struct {
		Public  int `json:"public"`
		Private int `json:"private"`
		Direct  int `json:"direct"`
	} `json:"rooms"`
	Messages      int   `json:"messages"` // message events (text, notices, files)
	Notices       int   `json:"notices"`  // of which joins, leaves, bots, system messages
	ThreadReplies int   `json:"thread_replies"`
	Edited        int   `json:"edited"`
	Reactions     int   `json:"reactions"`
	Files         int   `json:"files"` // files the export carries, stored as media
	FileBytes     int64 `json:"file_bytes"`
	Skipped       int   `json:"skipped"` // records an earlier run already imported

	UserMap     []UserMapping `json:"user_map"`
	LinkedFiles []LinkedFile  `json:"linked_files"` // only linked by the export: not fetched
	Unmappable  []Problem     `json:"unmappable"`   // not imported, and why
	Degraded    []Problem     `json:"degraded"`     // imported with a loss, and which
	// Omitted counts list entries left out past maxListed.
	Omitted int `json:"omitted,omitempty"`
}

// UserMapping is where one source user went.
type UserMapping struct {
	Source string `json:"source"`
	Name   string `json:"name"`
	UserID string `json:"user_id"`
	How    string `json:"how"`
}

// LinkedFile is a file the export names but does not carry.
type LinkedFile struct {
	Conversation string `json:"conversation"`
	Message      string `json:"message"`
	Name         string `json:"name"`
	URL          string `json:"url"`
}

// Problem is a record and what went wrong with it.
type Problem struct {
	Item   string `json:"item"`
	Reason string `json:"reason"`
}

// maxListed bounds each list of the report (the counts stay exact).
const maxListed = 10000

func (r *Report) addUser(u User, userID, how string) {
	if len(r.UserMap) >= maxListed {
		r.Omitted++
		return
	}
	r.UserMap = append(r.UserMap, UserMapping{Source: u.ID, Name: u.Username, UserID: userID, How: how})
}

func (r *Report) linked(f LinkedFile) {
	if len(r.LinkedFiles) >= maxListed {
		r.Omitted++
		return
	}
	r.LinkedFiles = append(r.LinkedFiles, f)
}

func (r *Report) unmappable(item, reason string) {
	if len(r.Unmappable) >= maxListed {
		r.Omitted++
		return
	}
	r.Unmappable = append(r.Unmappable, Problem{item, reason})
}

func (r *Report) degraded(item, reason string) {
	if len(r.Degraded) >= maxListed {
		r.Omitted++
		return
	}
	r.Degraded = append(r.Degraded, Problem{item, reason})
}

func (r *Report) sortLists() {
	sort.Slice(r.UserMap, func(i, j int) bool { return r.UserMap[i].Source < r.UserMap[j].Source })
}

// Counts are the report's figures, for the audit entry.
func (r *Report) Counts() map[string]any {
	return map[string]any{"users": r.Users.Total, "users_created": r.Users.Created, "rooms": r.Rooms.Public + r.Rooms.Private + r.Rooms.Direct,
		"messages": r.Messages, "reactions": r.Reactions, "files": r.Files, "linked_files": len(r.LinkedFiles),
		"unmappable": len(r.Unmappable), "skipped": r.Skipped}
}

// Comparable is the report without what differs between a dry run and
// the import it predicts (the mode flag).
func (r Report) Comparable() Report {
	r.DryRun = false
	return r
}

// WriteText prints the report for a person.
func (r *Report) WriteText(w io.Writer) {
	mode := "Import"
	if r.DryRun {
		mode = "Dry run (nothing written)"
	}
	fmt.Fprintf(w, "%s of %s export %q (workspace %s)\n", mode, r.Platform, r.File, r.Workspace)
	fmt.Fprintf(w, "  import ID %s, SHA-256 %s, %d bytes, operator %s\n", r.ImportID, r.SHA256, r.Size, r.Operator)
	fmt.Fprintf(w, "  users:      %d (%d matched to existing accounts, %d created deactivated until claimed)\n", r.Users.Total, r.Users.Matched, r.Users.Created)
	fmt.Fprintf(w, "  rooms:      %d public, %d private (invite only), %d direct\n", r.Rooms.Public, r.Rooms.Private, r.Rooms.Direct)
	fmt.Fprintf(w, "  messages:   %d (%d notices, %d thread replies, %d edited)\n", r.Messages, r.Notices, r.ThreadReplies, r.Edited)
	fmt.Fprintf(w, "  reactions:  %d\n", r.Reactions)
	fmt.Fprintf(w, "  files:      %d stored (%d bytes), %d only linked (listed below, not fetched)\n", r.Files, r.FileBytes, len(r.LinkedFiles))
	if r.Skipped > 0 {
		fmt.Fprintf(w, "  skipped:    %d records imported by an earlier run\n", r.Skipped)
	}
	if len(r.UserMap) > 0 {
		fmt.Fprintln(w, "users:")
		for _, u := range r.UserMap {
			fmt.Fprintf(w, "  %-12s %-20s -> %s (%s)\n", u.Source, u.Name, u.UserID, u.How)
		}
	}
	list := func(title string, ps []Problem) {
		if len(ps) == 0 {
			return
		}
		fmt.Fprintf(w, "%s (%d):\n", title, len(ps))
		for _, p := range ps {
			fmt.Fprintf(w, "  %s: %s\n", p.Item, p.Reason)
		}
	}
	list("not imported", r.Unmappable)
	list("imported with a loss", r.Degraded)
	if len(r.LinkedFiles) > 0 {
		fmt.Fprintf(w, "files only linked (%d):\n", len(r.LinkedFiles))
		for _, f := range r.LinkedFiles {
			fmt.Fprintf(w, "  %s/%s %s %s\n", f.Conversation, f.Message, f.Name, strings.TrimSpace(f.URL))
		}
	}
	if r.Omitted > 0 {
		fmt.Fprintf(w, "(%d list entries omitted; the counts above are complete)\n", r.Omitted)
	}
}
