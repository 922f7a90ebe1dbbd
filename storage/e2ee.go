package storage

// End-to-end encryption tables. The server never sees plaintext: it keeps
// public keys, signatures, opaque to-device payloads and encrypted key
// backups, and tells clients whose keys changed.
//
//   - e2ee_device_keys: each device's identity keys as uploaded (without
//     "unsigned"); ed25519 is the device's signing key, kept apart so
//     signature checks need no JSON parsing.
//   - e2ee_one_time_keys / e2ee_fallback_keys: keys for Olm pre-key
//     messages. A one-time key is handed out once (deleted on claim); the
//     fallback key (one per algorithm) is reused once they run out, and
//     marked used.
//   - e2ee_device_list_changes: the device-list stream. One row per change
//     of a user's devices or cross-signing keys at a stream position;
//     device_id is "" for user-level (cross-signing) changes; visible_to
//     limits a row to one viewer ("" = everyone who shares a room).
//   - e2ee_member_changes: joins and leaves (transitions only) at the
//     membership event's stream position, so /sync can report users who
//     became or stopped being room-mates without scanning events.
//   - e2ee_to_device: each device's inbox. pos orders delivery; a message
//     is deleted once a later since-token shows the client has it.
//   - e2ee_stream_mark: the highest stream position ever held by a deleted
//     to-device row, so the stream never reuses a position a client's token
//     has already passed (see streamTables).
//   - e2ee_cross_signing_keys / e2ee_signatures: master, self-signing and
//     user-signing keys, and signatures uploaded after the fact (target_key
//     is a device ID or a cross-signing public key).
//   - e2ee_backup_versions / e2ee_backup_keys: server-side key backup.
//     Versions are never reused: deleting one only flags it.
const e2eeV1 = `
CREATE TABLE e2ee_device_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	ed25519 TEXT NOT NULL DEFAULT '',
	updated_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);
CREATE TABLE e2ee_one_time_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id, key_id)
);
CREATE INDEX e2ee_one_time_keys_alg ON e2ee_one_time_keys(user_id, device_id, algorithm);
CREATE TABLE e2ee_fallback_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	used BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, device_id, algorithm)
);
CREATE TABLE e2ee_device_list_changes (
	id {{serial}},
	pos BIGINT NOT NULL,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL DEFAULT '',
	deleted BOOLEAN NOT NULL DEFAULT FALSE,
	visible_to TEXT NOT NULL DEFAULT ''
);
CREATE INDEX e2ee_device_list_changes_pos ON e2ee_device_list_changes(pos);
CREATE INDEX e2ee_device_list_changes_user ON e2ee_device_list_changes(user_id, pos);
CREATE TABLE e2ee_member_changes (
	pos BIGINT NOT NULL,
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	joined BOOLEAN NOT NULL
);
CREATE INDEX e2ee_member_changes_pos ON e2ee_member_changes(pos);
CREATE TABLE e2ee_to_device (
	id {{serial}},
	pos BIGINT NOT NULL,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	type TEXT NOT NULL,
	content TEXT NOT NULL
);
CREATE INDEX e2ee_to_device_inbox ON e2ee_to_device(user_id, device_id, pos);
CREATE TABLE e2ee_stream_mark (
	id BIGINT PRIMARY KEY,
	pos BIGINT NOT NULL
);
INSERT INTO e2ee_stream_mark (id, pos) VALUES (1, 0);
CREATE TABLE e2ee_cross_signing_keys (
	user_id TEXT NOT NULL,
	key_type TEXT NOT NULL,
	public_key TEXT NOT NULL,
	key_json TEXT NOT NULL,
	updated_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, key_type)
);
CREATE TABLE e2ee_signatures (
	target_user TEXT NOT NULL,
	target_key TEXT NOT NULL,
	signer_user TEXT NOT NULL,
	signer_key TEXT NOT NULL,
	signature TEXT NOT NULL,
	PRIMARY KEY (target_user, target_key, signer_user, signer_key)
);
CREATE TABLE e2ee_backup_versions (
	user_id TEXT NOT NULL,
	version BIGINT NOT NULL,
	algorithm TEXT NOT NULL,
	auth_data TEXT NOT NULL,
	etag BIGINT NOT NULL DEFAULT 0,
	deleted BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, version)
);
CREATE TABLE e2ee_backup_keys (
	user_id TEXT NOT NULL,
	version BIGINT NOT NULL,
	room_id TEXT NOT NULL,
	session_id TEXT NOT NULL,
	first_message_index BIGINT NOT NULL,
	forwarded_count BIGINT NOT NULL,
	is_verified BOOLEAN NOT NULL,
	session_data TEXT NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id)
)`

// valuesRows returns "($1,…,$cols),(…)" for rows of cols arguments each.
func valuesRows(rows, cols int) string {
	var b []byte
	for r := 0; r < rows; r++ {
		if r > 0 {
			b = append(b, ',')
		}
		b = append(b, inPlaceholders(r*cols+1, cols)...)
	}
	return string(b)
}

// inPlaceholders returns "($first,…)" for n arguments numbered from first.
func inPlaceholders(first, n int) string {
	var b []byte
	b = append(b, '(')
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '$')
		b = appendInt(b, first+i)
	}
	return string(append(b, ')'))
}

func appendInt(b []byte, n int) []byte {
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// e2eeV2 records when each one-time key was uploaded: keys are claimed
// oldest first (MSC4225), as a client expects the keys it uploaded first
// (and may discard first) to go first. Keys stored before carry 0, older
// than any new one. (The v1 index stays: released schema objects are not
// dropped, see TestMigrationsKeepOldLedger.)
const e2eeV2 = `
ALTER TABLE e2ee_one_time_keys ADD COLUMN uploaded_ts BIGINT NOT NULL DEFAULT 0;
CREATE INDEX e2ee_one_time_keys_claim ON e2ee_one_time_keys(user_id, device_id, algorithm, uploaded_ts, key_id);
`
