-- 002: a 'downlink_dropped' event kind: one row per episode of commands
-- dropped for a device (its outbound queue at its bound), with the reason.
-- SQLite cannot change a CHECK constraint in place: the events table is
-- rebuilt with its rows, seq values and index (the AUTOINCREMENT counter
-- follows the rename).
CREATE TABLE events_new (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	device  TEXT NOT NULL,
	kind    TEXT NOT NULL CHECK (kind IN ('online', 'offline', 'auth_failed',
	                                      'downlink_dropped')),
	reason  TEXT,
	ts      INTEGER NOT NULL,
	session TEXT,
	addr    TEXT,
	hub     TEXT
);
INSERT INTO events_new(seq, device, kind, reason, ts, session, addr, hub)
	SELECT seq, device, kind, reason, ts, session, addr, hub FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_device ON events(device, seq);
