package storage

// The media repository's tables. mediaapi owns their queries (see its
// package doc); the schema is here so that it runs in the one ordered list
// of migrations (migrate.go).
//
// Everything that could tell what a file is (its name, content type and
// hash) lives only inside the sealed meta column; the plaintext columns are
// what quotas, ownership and housekeeping need. blob_id is a random name
// unrelated to the media ID, so the file tree reveals nothing either.
const mediaV1 = `
CREATE TABLE media_kek (
	id BIGINT NOT NULL PRIMARY KEY,
	kek_id TEXT NOT NULL,
	canary {{blob}} NOT NULL,
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
	wrapped_key {{blob}},
	meta {{blob}},
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
	wrapped_key {{blob}} NOT NULL,
	meta {{blob}} NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, media_id, width, height, method)
)`
