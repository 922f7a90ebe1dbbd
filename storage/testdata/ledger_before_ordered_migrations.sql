CREATE TABLE schema_migrations (
		component TEXT NOT NULL,
		version BIGINT NOT NULL,
		applied_ts BIGINT NOT NULL,
		PRIMARY KEY (component, version));
CREATE TABLE account_data (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL DEFAULT '',
	type TEXT NOT NULL,
	content TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_user_pos ON account_data(user_id, stream_pos);
CREATE TABLE accounts (
	user_id TEXT PRIMARY KEY,
	localpart TEXT NOT NULL,
	password_hash TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	is_admin BOOLEAN NOT NULL DEFAULT FALSE,
	is_guest BOOLEAN NOT NULL DEFAULT FALSE,
	deactivated BOOLEAN NOT NULL DEFAULT FALSE,
	displayname TEXT,
	avatar_url TEXT
);
CREATE UNIQUE INDEX accounts_localpart ON accounts(localpart);
CREATE TABLE devices (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	display_name TEXT,
	created_ts BIGINT NOT NULL,
	last_seen_ts BIGINT NOT NULL DEFAULT 0,
	last_seen_ip TEXT NOT NULL DEFAULT '',
	last_seen_ua TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (user_id, device_id)
);
CREATE TABLE access_tokens (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	token_hash TEXT NOT NULL UNIQUE,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL DEFAULT 0,
	refresh_token_id BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX access_tokens_device ON access_tokens(user_id, device_id);
CREATE TABLE refresh_tokens (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	token_hash TEXT NOT NULL UNIQUE,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	used BOOLEAN NOT NULL DEFAULT FALSE,
	next_id BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_device ON refresh_tokens(user_id, device_id);
CREATE INDEX refresh_tokens_next ON refresh_tokens(next_id);
CREATE TABLE login_tokens (
	token_hash TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE TABLE registration_tokens (
	token TEXT PRIMARY KEY,
	uses_allowed BIGINT,
	pending BIGINT NOT NULL DEFAULT 0,
	completed BIGINT NOT NULL DEFAULT 0,
	expiry_time BIGINT
);
CREATE TABLE uia_sessions (
	session_id TEXT PRIMARY KEY,
	created_ts BIGINT NOT NULL,
	user_id TEXT NOT NULL DEFAULT '',
	op TEXT NOT NULL DEFAULT '',
	completed TEXT NOT NULL DEFAULT '[]',
	params TEXT NOT NULL DEFAULT '{}',
	data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX uia_sessions_created ON uia_sessions(created_ts);
CREATE TABLE room_blocks (
	room_id TEXT PRIMARY KEY,
	blocked_by TEXT NOT NULL DEFAULT '',
	blocked_ts BIGINT NOT NULL,
	purged BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE legal_holds (
	scope TEXT NOT NULL,
	target TEXT NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	created_by TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (scope, target)
);
CREATE TABLE server_notice_rooms (
	user_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL
);
CREATE TABLE audit_log (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	pos BIGINT NOT NULL DEFAULT 0,
	n BIGINT UNIQUE,
	ts BIGINT NOT NULL,
	kind TEXT NOT NULL,
	actor_user TEXT NOT NULL DEFAULT '',
	actor_device TEXT NOT NULL DEFAULT '',
	actor_ip TEXT NOT NULL DEFAULT '',
	actor_ua TEXT NOT NULL DEFAULT '',
	actor_server TEXT NOT NULL DEFAULT '',
	action TEXT NOT NULL,
	target TEXT NOT NULL DEFAULT '',
	room_id TEXT NOT NULL DEFAULT '',
	outcome TEXT NOT NULL DEFAULT '',
	details TEXT NOT NULL DEFAULT '{}',
	entry_hash TEXT NOT NULL,
	prev_hash TEXT NOT NULL DEFAULT '',
	chain_hash TEXT NOT NULL DEFAULT '',
	key_id TEXT NOT NULL DEFAULT '',
	signature TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_unsealed ON audit_log(pos, id) WHERE n IS NULL;
CREATE INDEX audit_log_ts ON audit_log(ts);
CREATE INDEX audit_log_actor ON audit_log(actor_user);
CREATE INDEX audit_log_room ON audit_log(room_id);
CREATE TABLE room_directory_stats (
	room_id TEXT PRIMARY KEY,
	name TEXT NOT NULL DEFAULT '',
	topic TEXT NOT NULL DEFAULT '',
	canonical_alias TEXT NOT NULL DEFAULT '',
	avatar_url TEXT NOT NULL DEFAULT '',
	join_rule TEXT NOT NULL DEFAULT '',
	history_visibility TEXT NOT NULL DEFAULT '',
	guest_access TEXT NOT NULL DEFAULT '',
	room_type TEXT NOT NULL DEFAULT '',
	encryption TEXT NOT NULL DEFAULT '',
	joined_members BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX room_directory_stats_join_rule ON room_directory_stats(join_rule);
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
	id INTEGER PRIMARY KEY AUTOINCREMENT,
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
	id INTEGER PRIMARY KEY AUTOINCREMENT,
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
);
CREATE TABLE fed_device_list_streams (
	user_id TEXT PRIMARY KEY,
	stream_id BIGINT NOT NULL
);
CREATE TABLE fed_inbound_todevice (
	origin TEXT NOT NULL,
	sender TEXT NOT NULL,
	message_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, sender, message_id)
);
CREATE INDEX fed_inbound_todevice_ts ON fed_inbound_todevice(created_ts);
CREATE TABLE openid_tokens (
	token_hash TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expires ON openid_tokens(expires_ts);
CREATE TABLE federation_server_keys (
	server_name TEXT NOT NULL,
	key_id TEXT NOT NULL,
	public_key TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	expired_ts BIGINT NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
CREATE TABLE federation_key_responses (
	server_name TEXT PRIMARY KEY,
	response TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	fetched_ts BIGINT NOT NULL
);
CREATE TABLE federation_own_keys (
	key_id TEXT PRIMARY KEY,
	public_key TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expired_ts BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE federation_inbound_txns (
	origin TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	response TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns(created_ts);
CREATE TABLE federation_queue_pdus (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	destination TEXT NOT NULL,
	json TEXT NOT NULL,
	txn_id TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL
);
CREATE INDEX federation_queue_pdus_dest ON federation_queue_pdus(destination, id);
CREATE TABLE federation_queue_edus (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	destination TEXT NOT NULL,
	edu_type TEXT NOT NULL,
	coalesce_key TEXT NOT NULL DEFAULT '',
	json TEXT NOT NULL,
	txn_id TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL
);
CREATE INDEX federation_queue_edus_dest ON federation_queue_edus(destination, id);
CREATE INDEX federation_queue_edus_coalesce ON federation_queue_edus(destination, edu_type, coalesce_key);
CREATE TABLE federation_catchup (
	destination TEXT NOT NULL,
	room_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (destination, room_id)
);
CREATE TABLE filters (
	filter_id INTEGER PRIMARY KEY AUTOINCREMENT,
	user_id TEXT NOT NULL,
	filter TEXT NOT NULL
);
CREATE TABLE media_kek (
	id BIGINT NOT NULL PRIMARY KEY,
	kek_id TEXT NOT NULL,
	canary BLOB NOT NULL,
	created_ts BIGINT NOT NULL,
	rotated_ts BIGINT NOT NULL
);
CREATE TABLE media (
	origin TEXT NOT NULL,
	media_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL DEFAULT 0,
	uploaded_ts BIGINT NOT NULL DEFAULT 0,
	blob_id TEXT,
	size BIGINT NOT NULL DEFAULT 0,
	kek_id TEXT,
	wrapped_key BLOB,
	meta BLOB,
	quarantined_ts BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_user_idx ON media (user_id);
CREATE TABLE media_thumbnails (
	origin TEXT NOT NULL,
	media_id TEXT NOT NULL,
	width BIGINT NOT NULL,
	height BIGINT NOT NULL,
	method TEXT NOT NULL,
	blob_id TEXT NOT NULL,
	size BIGINT NOT NULL,
	kek_id TEXT NOT NULL,
	wrapped_key BLOB NOT NULL,
	meta BLOB NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, media_id, width, height, method)
);
CREATE TABLE notifications (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	event_pos BIGINT NOT NULL,
	thread_id TEXT NOT NULL DEFAULT 'main',
	highlight BOOLEAN NOT NULL DEFAULT FALSE,
	actions TEXT NOT NULL DEFAULT '[]',
	ts BIGINT NOT NULL,
	unread BOOLEAN NOT NULL DEFAULT TRUE,
	stream_pos BIGINT NOT NULL
);
CREATE UNIQUE INDEX notifications_user_event ON notifications(user_id, event_id);
CREATE INDEX notifications_user_unread ON notifications(user_id, unread, room_id);
CREATE INDEX notifications_user_id ON notifications(user_id, id);
CREATE TABLE presence (
	user_id TEXT PRIMARY KEY,
	state TEXT NOT NULL,
	status_msg TEXT,
	last_active_ts BIGINT NOT NULL,
	currently_active BOOLEAN NOT NULL DEFAULT FALSE,
	stream_pos BIGINT NOT NULL
);
CREATE INDEX presence_pos ON presence(stream_pos);
CREATE TABLE push_rules (
	user_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	rule_id TEXT NOT NULL,
	position BIGINT NOT NULL DEFAULT 0,
	body TEXT,
	enabled BOOLEAN,
	PRIMARY KEY (user_id, kind, rule_id)
);
CREATE TABLE pushers (
	user_id TEXT NOT NULL,
	app_id TEXT NOT NULL,
	pushkey TEXT NOT NULL,
	kind TEXT NOT NULL,
	app_display_name TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag TEXT NOT NULL DEFAULT '',
	lang TEXT NOT NULL,
	data TEXT NOT NULL,
	device_id TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers(user_id, device_id);
CREATE TABLE receipts (
	room_id TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	user_id TEXT NOT NULL,
	thread_id TEXT NOT NULL DEFAULT '',
	event_id TEXT NOT NULL,
	event_pos BIGINT NOT NULL,
	ts BIGINT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_pos ON receipts(stream_pos);
CREATE INDEX receipts_room_pos ON receipts(room_id, stream_pos);
CREATE TABLE event_relations (
	event_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	relates_to TEXT NOT NULL,
	rel_type TEXT NOT NULL,
	type TEXT NOT NULL,
	sender TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	aggregation_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX event_relations_parent ON event_relations(relates_to, stream_pos);
CREATE INDEX event_relations_room_type ON event_relations(room_id, rel_type, stream_pos);
CREATE TABLE content_reports (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	kind TEXT NOT NULL,
	reporter TEXT NOT NULL,
	room_id TEXT NOT NULL DEFAULT '',
	event_id TEXT NOT NULL DEFAULT '',
	target_user TEXT NOT NULL DEFAULT '',
	reason TEXT NOT NULL DEFAULT '',
	score BIGINT,
	created_ts BIGINT NOT NULL,
	resolved BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX content_reports_created ON content_reports(created_ts);
CREATE TABLE user_roles (
	user_id TEXT NOT NULL,
	role TEXT NOT NULL,
	granted_by TEXT NOT NULL DEFAULT '',
	granted_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, role)
);
CREATE TABLE rooms (
	room_id TEXT PRIMARY KEY,
	room_version TEXT NOT NULL,
	creator TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	is_public BOOLEAN NOT NULL DEFAULT FALSE,
	forward_extremities TEXT NOT NULL DEFAULT '[]',
	current_snapshot BIGINT NOT NULL DEFAULT 0,
	max_depth BIGINT NOT NULL DEFAULT 0,
	last_pos BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE events (
	nid INTEGER PRIMARY KEY AUTOINCREMENT,
	stream_pos BIGINT UNIQUE,
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	room_version TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT,
	sender TEXT NOT NULL,
	depth BIGINT NOT NULL,
	origin_ts BIGINT NOT NULL,
	received_ts BIGINT NOT NULL,
	json TEXT NOT NULL,
	membership TEXT NOT NULL DEFAULT '',
	redacted BOOLEAN NOT NULL DEFAULT FALSE,
	redacted_because TEXT NOT NULL DEFAULT '',
	rejected BOOLEAN NOT NULL DEFAULT FALSE,
	soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
	outlier BOOLEAN NOT NULL DEFAULT FALSE,
	snapshot_before BIGINT NOT NULL DEFAULT 0,
	snapshot_after BIGINT NOT NULL DEFAULT 0,
	txn_id TEXT NOT NULL DEFAULT '',
	txn_device TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_room_pos ON events(room_id, stream_pos);
CREATE INDEX events_member_pos ON events(state_key, type, stream_pos);
CREATE TABLE state_snapshots (
	snapshot_id INTEGER PRIMARY KEY AUTOINCREMENT,
	room_id TEXT NOT NULL,
	parent_id BIGINT NOT NULL DEFAULT 0,
	chain_len BIGINT NOT NULL DEFAULT 0,
	delta TEXT NOT NULL
);
CREATE TABLE current_state (
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_id TEXT NOT NULL,
	membership TEXT NOT NULL DEFAULT '',
	stream_pos BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_member ON current_state(state_key, type, membership);
CREATE TABLE room_aliases (
	alias TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases(room_id);
CREATE TABLE transaction_ids (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	result TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, kind, txn_id)
);
CREATE TABLE room_forgotten (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	PRIMARY KEY (user_id, room_id)
);
CREATE TABLE event_search (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	key TEXT NOT NULL,
	body TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	origin_ts BIGINT NOT NULL
);
CREATE INDEX event_search_room_pos ON event_search(room_id, stream_pos);
CREATE TABLE unread_counts (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	notifs BIGINT NOT NULL DEFAULT 0,
	highlights BIGINT NOT NULL DEFAULT 0,
	stream_pos BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, room_id, thread_id)
);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('account_data', 1, 1796673067261);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('accounts', 1, 1796673067262);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('admin', 1, 1796673067263);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('audit', 1, 1796673067264);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('directory', 1, 1796673067264);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('e2ee', 1, 1796673067265);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('fed_e2ee', 1, 1796673067266);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('fed_openid', 1, 1796673067266);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('federation', 1, 1796673067267);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('federation', 2, 1796673067267);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('filters', 1, 1796673067268);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('media', 1, 1796673067268);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('notifications', 1, 1796673067269);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('notifications', 2, 1796673067269);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('presence', 1, 1796673067269);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('pushrules', 1, 1796673067269);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('receipts', 1, 1796673067270);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('relations', 1, 1796673067270);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('reports', 1, 1796673067271);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('roles', 1, 1796673067271);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('rooms', 1, 1796673067272);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('search', 1, 1796673067272);
INSERT INTO schema_migrations (component, version, applied_ts) VALUES ('unread_counts', 1, 1796673067273);
INSERT INTO e2ee_stream_mark (id, pos) VALUES (1, 0);
