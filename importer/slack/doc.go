// Package slack reads a Slack workspace export for the importer: users,
// channels, private channels, DMs and group DMs, messages day file by day
// file, and the files an export carries; Render turns mrkdwn into Matrix
// HTML with pills.
//
// Imports: importer (the record types).
//
// Called by: cmd/enclave (enclave import slack), test.
package slack
