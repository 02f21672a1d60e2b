-- 001_init.sql - the first registry schema.
--
-- devices:  one row per device; token_hash is "v1$<salt hex>$<sha256 hex>".
--           presence_seq and last_seen change on every session transition
--           (from any worker) and must NOT bump devices_rev.
-- sessions: one row per device session; ended/reason NULL while open.
-- events:   append-only log of online / offline / auth_failed.
-- meta:     devices_rev, bumped by triggers when a credential changes, so a
--           hub reloads its credential cache only when it must.

CREATE TABLE devices (
	id           TEXT PRIMARY KEY NOT NULL,
	name         TEXT NOT NULL DEFAULT '',
	token_hash   TEXT NOT NULL,
	disabled     INTEGER NOT NULL DEFAULT 0,
	created      INTEGER NOT NULL,
	presence_seq INTEGER NOT NULL DEFAULT 0,
	last_seen    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE sessions (
	session TEXT PRIMARY KEY NOT NULL,
	device  TEXT NOT NULL,
	hub     TEXT NOT NULL,
	worker  INTEGER NOT NULL,
	addr    TEXT NOT NULL DEFAULT '',
	started INTEGER NOT NULL,
	ended   INTEGER,
	reason  TEXT
);
CREATE INDEX sessions_open_hub ON sessions(hub, worker) WHERE ended IS NULL;
CREATE INDEX sessions_open_device ON sessions(device) WHERE ended IS NULL;

CREATE TABLE events (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	device  TEXT NOT NULL,
	kind    TEXT NOT NULL CHECK (kind IN ('online', 'offline', 'auth_failed')),
	reason  TEXT,
	ts      INTEGER NOT NULL,
	session TEXT,
	addr    TEXT,
	hub     TEXT
);
CREATE INDEX events_device ON events(device, seq);

CREATE TABLE meta (
	key   TEXT PRIMARY KEY NOT NULL,
	value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta(key, value) VALUES ('devices_rev', 0);

CREATE TRIGGER devices_rev_insert AFTER INSERT ON devices
BEGIN
	UPDATE meta SET value = value + 1 WHERE key = 'devices_rev';
END;

CREATE TRIGGER devices_rev_delete AFTER DELETE ON devices
BEGIN
	UPDATE meta SET value = value + 1 WHERE key = 'devices_rev';
END;

CREATE TRIGGER devices_rev_update AFTER UPDATE OF token_hash, disabled ON devices
WHEN OLD.token_hash IS NOT NEW.token_hash OR OLD.disabled IS NOT NEW.disabled
BEGIN
	UPDATE meta SET value = value + 1 WHERE key = 'devices_rev';
END;
