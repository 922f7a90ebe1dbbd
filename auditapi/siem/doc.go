// Package siem streams every audit entry (checkpoints included) to a
// SIEM: an RFC 5424 syslog collector over TCP or TLS (octet-counting
// framing, RFC 6587 / RFC 5425) and/or an append-only local file with
// size-based rotation, as JSONL (the audit export's entry lines) or CEF.
//
// It is a reader beside the audit write path, which it does not touch:
// each sink keeps its position (the chain index n of the last entry it
// delivered) in the store and reads sealed entries after it. An entry the
// collector has not taken stays in the audit table, so a slow or absent
// collector loses nothing and a restart resumes where delivery stopped.
// Delivery is at least once; every record carries n, by which a
// collector drops duplicates. Nothing connects anywhere unless a sink is
// configured.
//
// Imports: auditapi, storage. Called by: the assembly (internal/server),
// which builds the Streamer from audit.siem and starts and stops it with
// the server.
package siem
