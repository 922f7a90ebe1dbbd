// Package importer brings another platform's history (Slack, Mattermost)
// into Enclave: users, rooms, messages with their original senders and
// times, threads, reactions and files, each event carrying its source, so
// that where every imported record came from can be proven later.
//
// One shared core (Run) takes a normalised stream of records from a small
// format package per platform (importer/slack, importer/mattermost: a new
// platform is a new Source) and writes through the room server's batch
// path and the media repository. Every source record is recorded in
// import_items in the transaction that stores what it became, so an
// interrupted import resumes with nothing lost or doubled; a dry run makes
// the same decisions without writing and reports them.
//
// Imports: storage, roomserver, mediaapi, auditapi.
//
// Called by: cmd/enclave (enclave import), importer/slack and
// importer/mattermost (the record types).
package importer
