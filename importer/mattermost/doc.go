// Package mattermost reads a Mattermost bulk export (JSONL, alone or in a
// zip with its attachments) for the importer: users, public and private
// channels, direct and group channels, posts with their replies,
// reactions and attachments; Render turns Markdown into Matrix HTML with
// pills.
//
// Imports: importer (the record types).
//
// Called by: cmd/enclave (enclave import mattermost), test.
package mattermost
