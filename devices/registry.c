/*
 * registry.c - the registry connection: open (pragmas, migrations, prepared
 * statements), close, error mapping, transactions, change counters.
 *
 * Design: one SQLite connection per struct registry, WAL mode with
 * synchronous=NORMAL (a commit is durable at the next checkpoint; a power
 * cut may lose the last few batches but never corrupts) and a 5 s busy
 * timeout, because hubd's workers and hubctl share the file. Migrations
 * (schema/NNN_*.sql, embedded) run in one BEGIN IMMEDIATE transaction that
 * re-reads PRAGMA user_version under the write lock, so two processes
 * opening a fresh file at once do not both migrate. Every statement is
 * prepared once with SQLITE_PREPARE_PERSISTENT and reset after each use.
 * SQLite codes become enum hub_err here (registry__sqlerr) and nowhere else.
 *
 * Threads: a struct registry belongs to one thread at a time; the
 * connection is opened with SQLITE_OPEN_NOMUTEX.
 */
#include "registry_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

#define BUSY_TIMEOUT_MS 5000

/* The device row joined with its newest open session, if any. */
#define DEVICE_SELECT                                                          \
	"SELECT d.id, d.name, d.disabled, d.created, d.last_seen,"             \
	" s.session, s.hub, s.addr FROM devices d LEFT JOIN sessions s"        \
	" ON s.session = (SELECT o.session FROM sessions o"                    \
	" WHERE o.device = d.id AND o.ended IS NULL"                           \
	" ORDER BY o.started DESC LIMIT 1) "
#define EVENT_SELECT                                                           \
	"SELECT seq, device, kind, reason, ts, session, addr, hub FROM "       \
	"events "

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT registry_op",
    [ST_RELEASE] = "RELEASE registry_op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO registry_op",
    [ST_DATA_VERSION] = "PRAGMA data_version",
    [ST_DEVICES_REV] = "SELECT value FROM meta WHERE key = 'devices_rev'",
    [ST_DEV_INSERT] = "INSERT INTO devices(id, name, token_hash, disabled,"
		      " created) VALUES (?1, ?2, ?3, 0, ?4)",
    [ST_DEV_GET] = DEVICE_SELECT "WHERE d.id = ?1",
    [ST_DEV_LIST] =
	DEVICE_SELECT "WHERE ?1 = 0 OR s.session IS NOT NULL ORDER BY d.id",
    [ST_DEV_SET_DISABLED] = "UPDATE devices SET disabled = ?2 WHERE id = ?1",
    [ST_DEV_DELETE] = "DELETE FROM devices WHERE id = ?1",
    [ST_DEV_SET_TOKEN] = "UPDATE devices SET token_hash = ?2 WHERE id = ?1",
    [ST_DEV_PRESENCE] = "UPDATE devices SET"
			" presence_seq = MAX(presence_seq + 1, ?2),"
			" last_seen = MAX(last_seen, ?2)"
			" WHERE id = ?1 RETURNING presence_seq",
    /* a signed fleet token's first session here: a local row whose
     * token hash never verifies ("signed" is not "v1$salt$hash") */
    [ST_DEV_ENSURE] = "INSERT OR IGNORE INTO devices(id, name, token_hash,"
		      " disabled, created) VALUES (?1, '', 'signed', 0, ?2)",
    [ST_DEV_EXISTS] = "SELECT 1 FROM devices WHERE id = ?1",
    [ST_GRP_ADD] = "INSERT OR IGNORE INTO device_groups(grp, device)"
		   " VALUES (?1, ?2)",
    [ST_GRP_REMOVE] = "DELETE FROM device_groups WHERE grp = ?1"
		      " AND device = ?2",
    [ST_GRP_LIST] = "SELECT grp, count(*) FROM device_groups GROUP BY grp"
		    " ORDER BY grp",
    [ST_GRP_OF_DEVICE] = "SELECT grp FROM device_groups WHERE device = ?1"
			 " ORDER BY grp",
    [ST_SES_INSERT] = "INSERT INTO sessions(session, device, hub, worker,"
		      " addr, started) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_SES_CLOSE] = "UPDATE sessions SET ended = ?2, reason = ?3"
		     " WHERE session = ?1 AND ended IS NULL"
		     " RETURNING device, hub, addr",
    [ST_SES_OPEN_FOR_HUB] =
	"SELECT s.session, s.device,"
	" EXISTS(SELECT 1 FROM sessions o"
	"  WHERE o.device = s.device AND o.ended IS NULL"
	"  AND o.session <> s.session AND o.started >= s.started)"
	" FROM sessions s"
	" WHERE s.ended IS NULL AND s.hub = ?1"
	" AND (s.worker = ?2 OR (?3 >= 0 AND s.worker >= ?3))"
	" ORDER BY s.started, s.session",
    [ST_SES_SUPERSEDED] =
	"SELECT EXISTS(SELECT 1 FROM sessions s, sessions o"
	" WHERE s.session = ?1 AND o.device = s.device AND o.ended IS NULL"
	" AND o.session <> s.session AND o.started >= s.started)",
    [ST_EV_INSERT] = "INSERT INTO events(device, kind, reason, ts, session,"
		     " addr, hub) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_EV_ALL] = EVENT_SELECT "ORDER BY seq DESC LIMIT ?1",
    [ST_EV_DEVICE] =
	EVENT_SELECT "WHERE device = ?1 ORDER BY seq DESC LIMIT ?2",
    [ST_CREDS_ALL] = "SELECT d.id, d.token_hash, d.disabled,"
		     " (SELECT group_concat(grp, ',') FROM (SELECT grp FROM"
		     " device_groups g WHERE g.device = d.id ORDER BY grp))"
		     " FROM devices d",
    /* the status outbox (outbox.c): a row only moves to a newer seq */
    [ST_OB_PUT] = "INSERT INTO status_outbox(device, seq, payload, pending,"
		  " hub, worker) VALUES (?1, ?2, ?3, 1, ?4, ?5)"
		  " ON CONFLICT(device) DO UPDATE SET seq = excluded.seq,"
		  " payload = excluded.payload, pending = 1,"
		  " hub = excluded.hub, worker = excluded.worker"
		  " WHERE excluded.seq > status_outbox.seq",
    [ST_OB_GET] = "SELECT seq, payload, pending, hub, worker"
		  " FROM status_outbox WHERE device = ?1",
    [ST_OB_CLEAR] = "UPDATE status_outbox SET pending = 0"
		    " WHERE device = ?1 AND seq = ?2",
    [ST_OB_CLAIM] = "UPDATE status_outbox SET pending = 1, hub = ?3,"
		    " worker = ?4 WHERE device = ?1 AND seq = ?2",
    [ST_OB_PENDING] = "UPDATE status_outbox SET worker = ?2"
		      " WHERE pending = 1 AND hub = ?1"
		      " AND (worker = ?2 OR (?3 >= 0 AND worker >= ?3))"
		      " RETURNING device, seq, payload",
    [ST_OB_COUNT] = "SELECT count(*) FROM status_outbox"
		    " WHERE pending = 1 AND hub = ?1 AND worker = ?2",
};

int
registry__sqlerr(struct registry *reg, int rc)
{
	int err;

	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return HUB_OK;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		err = HUB_ERR_BUSY;
		break;
	case SQLITE_CONSTRAINT:
		err = (rc == SQLITE_CONSTRAINT_PRIMARYKEY ||
		       rc == SQLITE_CONSTRAINT_UNIQUE)
			  ? HUB_ERR_EXISTS
			  : HUB_ERR_INVAL;
		break;
	case SQLITE_NOMEM:
		err = HUB_ERR_NOMEM;
		break;
	case SQLITE_IOERR:
	case SQLITE_FULL:
	case SQLITE_CANTOPEN:
	/* a file or file system made read-only under a running hub: a
	 * fault of the disk to retry, like a full one, not a bad row */
	case SQLITE_READONLY:
		err = HUB_ERR_IO;
		break;
	default:
		err = HUB_ERR_DB;
		break;
	}
	if (reg && reg->db)
		snprintf(reg->msg, sizeof(reg->msg), "%s",
			 sqlite3_errmsg(reg->db));
	return err;
}

int
registry__fail(struct registry *reg, int err)
{
	if (reg)
		snprintf(reg->msg, sizeof(reg->msg), "%s", hub_strerror(err));
	return err;
}

sqlite3_stmt *
registry__stmt(struct registry *reg, enum registry_stmt st)
{
	return reg->st[st];
}

void
registry__reset(sqlite3_stmt *s)
{
	if (!s)
		return;
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

int
registry__step_done(struct registry *reg, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_DONE || rc == SQLITE_ROW)
		return HUB_OK;
	return registry__sqlerr(reg, rc);
}

int
registry__bind_opt(sqlite3_stmt *s, int col, const char *v)
{
	if (!v || !*v)
		return sqlite3_bind_null(s, col);
	return sqlite3_bind_text(s, col, v, -1, SQLITE_STATIC);
}

void
registry__col_text(sqlite3_stmt *s, int col, char *out, size_t outlen)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	size_t n = t ? (size_t)sqlite3_column_bytes(s, col) : 0;

	if (outlen == 0)
		return;
	if (n >= outlen)
		n = outlen - 1;
	if (n)
		memcpy(out, t, n);
	out[n] = '\0';
}

size_t
registry__strnlen(const char *s, size_t max)
{
	return s ? strnlen(s, max) : 0;
}

/* ---- transactions ---------------------------------------------------- */

static int
exec_stmt(struct registry *reg, enum registry_stmt st)
{
	sqlite3_stmt *s = registry__stmt(reg, st);
	int rc = registry__step_done(reg, s);

	registry__reset(s);
	return rc;
}

/* Rolls back whatever is open; quiet if SQLite already did (IOERR, FULL). */
static void
rollback_quiet(struct registry *reg)
{
	if (!sqlite3_get_autocommit(reg->db)) {
		sqlite3_stmt *s = registry__stmt(reg, ST_ROLLBACK);

		sqlite3_step(s);
		sqlite3_reset(s);
	}
}

int
registry__op_begin(struct registry *reg, struct registry__op *op)
{
	int rc;

	if (sqlite3_get_autocommit(reg->db)) {
		rc = exec_stmt(reg, ST_BEGIN);
		op->owned = rc == HUB_OK ? 1 : 0;
	} else {
		rc = exec_stmt(reg, ST_SAVEPOINT);
		op->owned = rc == HUB_OK ? 2 : 0;
	}
	return rc;
}

int
registry__op_end(struct registry *reg, struct registry__op *op, int rc)
{
	if (op->owned == 1) {
		if (rc == HUB_OK)
			rc = exec_stmt(reg, ST_COMMIT);
		if (rc != HUB_OK)
			rollback_quiet(reg);
	} else if (op->owned == 2) {
		if (rc != HUB_OK && !sqlite3_get_autocommit(reg->db)) {
			sqlite3_stmt *s = registry__stmt(reg, ST_ROLLBACK_TO);

			sqlite3_step(s);
			sqlite3_reset(s);
		}
		if (!sqlite3_get_autocommit(reg->db)) {
			int r2 = exec_stmt(reg, ST_RELEASE);

			if (rc == HUB_OK)
				rc = r2;
		}
	}
	op->owned = 0;
	return rc;
}

int
registry_begin(struct registry *reg)
{
	if (!reg)
		return HUB_ERR_INVAL;
	return exec_stmt(reg, ST_BEGIN);
}

int
registry_commit(struct registry *reg)
{
	if (!reg)
		return HUB_ERR_INVAL;
	/* On BUSY the transaction stays open: the caller may retry. */
	return exec_stmt(reg, ST_COMMIT);
}

int
registry_rollback(struct registry *reg)
{
	if (!reg)
		return HUB_ERR_INVAL;
	if (sqlite3_get_autocommit(reg->db))
		return HUB_OK;
	return exec_stmt(reg, ST_ROLLBACK);
}

/* ---- change counters ------------------------------------------------- */

static int
read_int64(struct registry *reg, enum registry_stmt st, int64_t *out)
{
	sqlite3_stmt *s = registry__stmt(reg, st);
	int rc = sqlite3_step(s), err;

	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(s, 0);
		err = HUB_OK;
	} else if (rc == SQLITE_DONE) {
		err = registry__fail(reg, HUB_ERR_DB);
	} else {
		err = registry__sqlerr(reg, rc);
	}
	registry__reset(s);
	return err;
}

int
registry_data_version(struct registry *reg, int64_t *out)
{
	if (!reg || !out)
		return HUB_ERR_INVAL;
	return read_int64(reg, ST_DATA_VERSION, out);
}

uint64_t
registry_memory_used(void)
{
	return (uint64_t)sqlite3_memory_used();
}

int
registry_devices_rev(struct registry *reg, int64_t *out)
{
	if (!reg || !out)
		return HUB_ERR_INVAL;
	return read_int64(reg, ST_DEVICES_REV, out);
}

/* ---- open / close ---------------------------------------------------- */

static int
user_version(struct registry *reg, int *out)
{
	sqlite3_stmt *s = NULL;
	int rc, err;

	rc = sqlite3_prepare_v2(reg->db, "PRAGMA user_version", -1, &s, NULL);
	if (rc != SQLITE_OK) {
		err = registry__sqlerr(reg, rc);
		goto out;
	}
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		err = registry__sqlerr(reg, rc);
		goto out;
	}
	*out = sqlite3_column_int(s, 0);
	err = HUB_OK;
out:
	sqlite3_finalize(s);
	return err;
}

static int
exec_sql(struct registry *reg, const char *sql)
{
	int rc = sqlite3_exec(reg->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? HUB_OK : registry__sqlerr(reg, rc);
}

/* Applies the migrations this file lacks, all in one transaction. */
static int
migrate(struct registry *reg)
{
	char sql[64];
	int v, i, err, in_tx = 0;

	err = user_version(reg, &v);
	if (err != HUB_OK)
		goto out;
	if (v == schema_count)
		goto out;
	if (v > schema_count) {
		err = HUB_ERR_SCHEMA;
		goto out;
	}
	err = exec_sql(reg, "BEGIN IMMEDIATE");
	if (err != HUB_OK)
		goto out;
	in_tx = 1;
	/* Another process may have migrated while we waited for the lock. */
	err = user_version(reg, &v);
	if (err != HUB_OK)
		goto out;
	if (v > schema_count) {
		err = HUB_ERR_SCHEMA;
		goto out;
	}
	for (i = v; i < schema_count; i++) {
		err = exec_sql(reg, schema_migrations[i]);
		if (err != HUB_OK)
			goto out;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", i + 1);
		err = exec_sql(reg, sql);
		if (err != HUB_OK)
			goto out;
	}
	err = exec_sql(reg, "COMMIT");
	if (err == HUB_OK)
		in_tx = 0;
out:
	if (in_tx)
		sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
	if (err == HUB_ERR_SCHEMA)
		snprintf(reg->msg, sizeof(reg->msg),
			 "database schema version %d is newer than this "
			 "program's %d",
			 v, schema_count);
	return err;
}

/* journal_mode=WAL needs a lock: only ask when the file is not WAL yet. */
static int
set_wal(struct registry *reg)
{
	sqlite3_stmt *s = NULL;
	const unsigned char *mode;
	int rc, err = HUB_OK;

	rc = sqlite3_prepare_v2(reg->db, "PRAGMA journal_mode", -1, &s, NULL);
	if (rc != SQLITE_OK) {
		err = registry__sqlerr(reg, rc);
		goto out;
	}
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		err = registry__sqlerr(reg, rc);
		goto out;
	}
	mode = sqlite3_column_text(s, 0);
	/* ":memory:" answers "memory" and cannot do WAL. */
	if (mode && (!strcmp((const char *)mode, "wal") ||
		     !strcmp((const char *)mode, "memory")))
		goto out;
	sqlite3_finalize(s);
	s = NULL;
	err = exec_sql(reg, "PRAGMA journal_mode = WAL");
out:
	sqlite3_finalize(s);
	return err;
}

static int
prepare_all(struct registry *reg)
{
	int i, rc;

	for (i = 0; i < ST__COUNT; i++) {
		rc = sqlite3_prepare_v3(reg->db, stmt_sql[i], -1,
					SQLITE_PREPARE_PERSISTENT, &reg->st[i],
					NULL);
		if (rc != SQLITE_OK)
			return registry__sqlerr(reg, rc);
	}
	return HUB_OK;
}

int
registry_open(const char *path, struct registry **out, char *err, size_t errlen)
{
	struct registry *reg = NULL;
	int rc, e;

	if (out)
		*out = NULL;
	if (!path || !out) {
		e = HUB_ERR_INVAL;
		if (err && errlen)
			snprintf(err, errlen, "%s", hub_strerror(e));
		return e;
	}
	reg = calloc(1, sizeof(*reg));
	if (!reg) {
		e = HUB_ERR_NOMEM;
		if (err && errlen)
			snprintf(err, errlen, "%s", hub_strerror(e));
		return e;
	}
	rc = sqlite3_open_v2(path, &reg->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				 SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc != SQLITE_OK) {
		e = registry__sqlerr(reg, rc);
		goto out;
	}
	sqlite3_extended_result_codes(reg->db, 1);
	sqlite3_busy_timeout(reg->db, BUSY_TIMEOUT_MS);
	e = set_wal(reg);
	if (e != HUB_OK)
		goto out;
	/* No foreign keys: sessions and events outlive their device. */
	e = exec_sql(reg, "PRAGMA synchronous = NORMAL");
	if (e != HUB_OK)
		goto out;
	e = migrate(reg);
	if (e != HUB_OK)
		goto out;
	e = prepare_all(reg);
	if (e != HUB_OK)
		goto out;
	reg->msg[0] = '\0';
	*out = reg;
	reg = NULL;
out:
	if (reg) {
		if (err && errlen)
			snprintf(err, errlen, "%s: %s", path,
				 reg->msg[0] ? reg->msg : hub_strerror(e));
		registry_close(reg);
	}
	return e;
}

void
registry_close(struct registry *reg)
{
	int i;

	if (!reg)
		return;
	for (i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(reg->st[i]);
	/* close_v2: never leaves the handle open because of a missed finalize
	 */
	sqlite3_close_v2(reg->db);
	free(reg);
}

const char *
registry_errmsg(struct registry *reg)
{
	if (!reg)
		return "no registry";
	if (reg->msg[0])
		return reg->msg;
	return sqlite3_errmsg(reg->db);
}
