-- 004_status_outbox.sql - the durable status outbox.
--
-- status_outbox: one row per device: the newest retained presence status
--                (devices/{id}/status) the registry has assigned, with its
--                presence seq. It is written in the same transaction as
--                the session row that caused it, by the registry writer of
--                the worker that publishes it (hub, worker: the owner).
--                pending = 1 until a broker PUBACK of exactly that seq
--                clears it; a worker republishes the pending rows it owns
--                when it starts. The row is kept once acknowledged: a late
--                PUBACK of an older seq (another worker's, after a crash)
--                finds the newer status here and publishes it again, so
--                the broker always ends with the newest one.

CREATE TABLE status_outbox (
	device  TEXT PRIMARY KEY NOT NULL,
	seq     INTEGER NOT NULL,
	payload TEXT NOT NULL,
	pending INTEGER NOT NULL DEFAULT 1,
	hub     TEXT NOT NULL,
	worker  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX status_outbox_pending ON status_outbox(hub, worker)
	WHERE pending = 1;
