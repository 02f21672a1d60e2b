/*
 * session.c - sessions, presence seq, the event log, crash repair.
 *
 * Design: a session start is three statements (sessions row, devices
 * presence bump, 'online' event), a session end three as well; each call
 * is atomic through registry__op (its own BEGIN IMMEDIATE alone, a
 * SAVEPOINT inside the writer's group-commit transaction). The presence seq
 * is max(seq + 1, ts): it rises with every transition of a device, and
 * across hubs roughly follows the clock. The presence columns are outside
 * the devices_rev triggers, so this constant traffic never makes a hub
 * reload credentials. A deleted device still gets its session and event
 * rows (the record outlives it), with seq = ts.
 *
 * Threads: the calling thread owns the struct registry (registry.h); in
 * hubd that is the registry writer thread. Callbacks run on it.
 */
#include "proto.h"
#include "registry_int.h"

#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {
    [REGISTRY_ONLINE] = "online",
    [REGISTRY_OFFLINE] = "offline",
    [REGISTRY_AUTH_FAILED] = "auth_failed",
    [REGISTRY_DOWNLINK_DROPPED] = "downlink_dropped",
};

const char *
registry_kind_name(enum registry_kind k)
{
	if ((unsigned)k < sizeof(kind_names) / sizeof(kind_names[0]))
		return kind_names[k];
	return "unknown";
}

static enum registry_kind
kind_parse(const char *s)
{
	if (s && !strcmp(s, "online"))
		return REGISTRY_ONLINE;
	if (s && !strcmp(s, "offline"))
		return REGISTRY_OFFLINE;
	if (s && !strcmp(s, "downlink_dropped"))
		return REGISTRY_DOWNLINK_DROPPED;
	return REGISTRY_AUTH_FAILED;
}

/* Optional text: NULL or shorter than max (room for the NUL in out). */
static int
fits(const char *s, size_t max)
{
	return !s || strnlen(s, max) < max;
}

static int
reason_ok(const char *r)
{
	const size_t max = sizeof(((struct registry_event *)0)->reason);

	return r && *r && strnlen(r, max) < max;
}

/* Bumps the device's presence seq; seq = ts if the device is gone. */
static int
presence_bump(struct registry *reg, const char *device, int64_t ts,
	      int64_t *seq)
{
	sqlite3_stmt *s = registry__stmt(reg, ST_DEV_PRESENCE);
	int rc, err = HUB_OK;

	sqlite3_bind_text(s, 1, device, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 2, ts);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*seq = sqlite3_column_int64(s, 0);
	else if (rc == SQLITE_DONE)
		*seq = ts;
	else
		err = registry__sqlerr(reg, rc);
	registry__reset(s);
	return err;
}

static int
event_insert(struct registry *reg, const char *device, enum registry_kind k,
	     const char *reason, int64_t ts, const char *session,
	     const char *addr, const char *hub)
{
	sqlite3_stmt *s = registry__stmt(reg, ST_EV_INSERT);
	int err;

	sqlite3_bind_text(s, 1, device, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, registry_kind_name(k), -1, SQLITE_STATIC);
	registry__bind_opt(s, 3, reason);
	sqlite3_bind_int64(s, 4, ts);
	registry__bind_opt(s, 5, session);
	registry__bind_opt(s, 6, addr);
	registry__bind_opt(s, 7, hub);
	err = registry__step_done(reg, s);
	registry__reset(s);
	return err;
}

int
registry_session_open(struct registry *reg, const struct registry_session *ss,
		      int64_t *seq)
{
	struct registry__op op = {0};
	sqlite3_stmt *s;
	int64_t got = 0;
	int err;

	if (seq)
		*seq = 0;
	if (!reg || !ss || !seq)
		return HUB_ERR_INVAL;
	if (!proto_id_valid(ss->device, strnlen(ss->device, HUB_ID_MAX + 1)) ||
	    !ss->session[0] || !fits(ss->session, sizeof(ss->session)) ||
	    !fits(ss->hub, sizeof(ss->hub)) ||
	    !fits(ss->addr, sizeof(ss->addr)))
		return registry__fail(reg, HUB_ERR_INVAL);
	err = registry__op_begin(reg, &op);
	if (err != HUB_OK)
		goto out;
	if (ss->create_device) {
		s = registry__stmt(reg, ST_DEV_ENSURE);
		sqlite3_bind_text(s, 1, ss->device, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, ss->ts);
		err = registry__step_done(reg, s);
		registry__reset(s);
		if (err != HUB_OK)
			goto out;
	}
	s = registry__stmt(reg, ST_SES_INSERT);
	sqlite3_bind_text(s, 1, ss->session, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, ss->device, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, ss->hub, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 4, ss->worker);
	sqlite3_bind_text(s, 5, ss->addr, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, ss->ts);
	err = registry__step_done(reg, s);
	registry__reset(s);
	if (err != HUB_OK)
		goto out;
	err = presence_bump(reg, ss->device, ss->ts, &got);
	if (err != HUB_OK)
		goto out;
	err = event_insert(reg, ss->device, REGISTRY_ONLINE, NULL, ss->ts,
			   ss->session, ss->addr, ss->hub);
out:
	err = registry__op_end(reg, &op, err);
	if (err == HUB_OK)
		*seq = got;
	return err;
}

/* The body of a session close, inside the caller's op. */
static int
close_one(struct registry *reg, const char *session, const char *reason,
	  int64_t ts, int64_t *seq)
{
	char dev[HUB_ID_MAX + 1], hub[REGISTRY_HUB_MAX + 1];
	char addr[REGISTRY_ADDR_MAX];
	sqlite3_stmt *s = registry__stmt(reg, ST_SES_CLOSE);
	int rc, err;

	sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, ts);
	sqlite3_bind_text(s, 3, reason, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		registry__col_text(s, 0, dev, sizeof(dev));
		registry__col_text(s, 1, hub, sizeof(hub));
		registry__col_text(s, 2, addr, sizeof(addr));
		err = HUB_OK;
	} else if (rc == SQLITE_DONE) {
		err = registry__fail(reg, HUB_ERR_NOTFOUND);
	} else {
		err = registry__sqlerr(reg, rc);
	}
	registry__reset(s);
	if (err != HUB_OK)
		return err;
	err = presence_bump(reg, dev, ts, seq);
	if (err != HUB_OK)
		return err;
	return event_insert(reg, dev, REGISTRY_OFFLINE, reason, ts, session,
			    addr, hub);
}

int
registry_session_close(struct registry *reg, const char *session,
		       const char *reason, int64_t ts, int64_t *seq)
{
	struct registry__op op = {0};
	int64_t got = 0;
	int err;

	if (seq)
		*seq = 0;
	if (!reg || !seq)
		return HUB_ERR_INVAL;
	if (!session || !*session || !fits(session, REGISTRY_SESSION_MAX) ||
	    !reason_ok(reason))
		return registry__fail(reg, HUB_ERR_INVAL);
	err = registry__op_begin(reg, &op);
	if (err != HUB_OK)
		goto out;
	err = close_one(reg, session, reason, ts, &got);
out:
	err = registry__op_end(reg, &op, err);
	if (err == HUB_OK)
		*seq = got;
	return err;
}

int
registry_session_superseded(struct registry *reg, const char *session,
			    int *newer)
{
	sqlite3_stmt *s;
	int rc, err = HUB_OK;

	if (newer)
		*newer = 0;
	if (!reg || !newer || !session || !fits(session, REGISTRY_SESSION_MAX))
		return HUB_ERR_INVAL;
	s = registry__stmt(reg, ST_SES_SUPERSEDED);
	sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*newer = sqlite3_column_int(s, 0) != 0;
	else
		err = registry__sqlerr(reg, rc);
	registry__reset(s);
	return err;
}

int
registry_downlink_dropped(struct registry *reg, const char *device,
			  const char *session, const char *hub,
			  const char *reason, int64_t ts)
{
	if (!reg)
		return HUB_ERR_INVAL;
	if (!device ||
	    !proto_id_valid(device, strnlen(device, HUB_ID_MAX + 1)) ||
	    !reason_ok(reason) || !fits(session, REGISTRY_SESSION_MAX) ||
	    !fits(hub, REGISTRY_HUB_MAX + 1))
		return registry__fail(reg, HUB_ERR_INVAL);
	return event_insert(reg, device, REGISTRY_DOWNLINK_DROPPED, reason, ts,
			    session, NULL, hub);
}

int
registry_auth_failed(struct registry *reg, const char *device, const char *addr,
		     const char *hub, const char *reason, int64_t ts)
{
	if (!reg)
		return HUB_ERR_INVAL;
	if (!device ||
	    !proto_id_valid(device, strnlen(device, HUB_ID_MAX + 1)) ||
	    !reason_ok(reason) || !fits(addr, REGISTRY_ADDR_MAX) ||
	    !fits(hub, REGISTRY_HUB_MAX + 1))
		return registry__fail(reg, HUB_ERR_INVAL);
	/* One statement: atomic alone, and fine inside a batch. */
	return event_insert(reg, device, REGISTRY_AUTH_FAILED, reason, ts, NULL,
			    addr, hub);
}

int
registry_events_prune(struct registry *reg, int64_t before_ts, int batch,
		      int64_t *deleted)
{
	/* events are written in time order, so the old ones are the first
	 * rows: look only at the oldest batch, never scan the table */
	static const char sql[] =
	    "DELETE FROM events WHERE seq IN "
	    "(SELECT seq FROM events ORDER BY seq LIMIT ?1) AND ts < ?2";
	sqlite3_stmt *s = NULL;
	int rc, err = HUB_OK, n;

	if (!reg || !deleted || batch < 1)
		return HUB_ERR_INVAL;
	*deleted = 0;
	rc = sqlite3_prepare_v2(reg->db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return registry__sqlerr(reg, rc);
	do {
		sqlite3_bind_int(s, 1, batch);
		sqlite3_bind_int64(s, 2, before_ts);
		rc = sqlite3_step(s);
		sqlite3_reset(s);
		if (rc != SQLITE_DONE) {
			err = registry__sqlerr(reg, rc);
			break;
		}
		n = sqlite3_changes(reg->db);
		*deleted += n;
	} while (n == batch);
	sqlite3_finalize(s);
	return err;
}

/* ---- repair ----------------------------------------------------------- */

struct repaired {
	char device[HUB_ID_MAX + 1];
	char session[REGISTRY_SESSION_MAX];
	int64_t seq;
	int superseded; /* the device has a newer open session */
};

int
registry_repair(struct registry *reg, const char *hub, int worker,
		int also_from_worker,
		void (*cb)(void *arg, const char *device, const char *session,
			   int64_t seq),
		void *arg)
{
	struct registry__op op = {0};
	struct repaired *rows = NULL, *grown;
	size_t n = 0, cap = 0, i;
	int64_t now = hub_clock_ms();
	sqlite3_stmt *s;
	int rc, err;

	if (!reg || !hub || !fits(hub, REGISTRY_HUB_MAX + 1))
		return HUB_ERR_INVAL;
	err = registry__op_begin(reg, &op);
	if (err != HUB_OK)
		goto out;
	/* Collect first: the close statements update the rows scanned here. */
	s = registry__stmt(reg, ST_SES_OPEN_FOR_HUB);
	sqlite3_bind_text(s, 1, hub, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, worker);
	sqlite3_bind_int(s, 3, also_from_worker);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			grown = realloc(rows, cap * sizeof(*rows));
			if (!grown) {
				err = registry__fail(reg, HUB_ERR_NOMEM);
				break;
			}
			rows = grown;
		}
		registry__col_text(s, 0, rows[n].session,
				   sizeof(rows[n].session));
		registry__col_text(s, 1, rows[n].device,
				   sizeof(rows[n].device));
		rows[n].superseded = sqlite3_column_int(s, 2);
		n++;
	}
	if (err == HUB_OK && rc != SQLITE_DONE)
		err = registry__sqlerr(reg, rc);
	registry__reset(s);
	for (i = 0; err == HUB_OK && i < n; i++)
		err = close_one(reg, rows[i].session, "hub_restart", now,
				&rows[i].seq);
	err = registry__op_end(reg, &op, err);
	/* Committed: the caller may now publish the offline statuses. */
	for (i = 0; err == HUB_OK && cb && i < n; i++)
		cb(arg, rows[i].device, rows[i].session,
		   rows[i].superseded ? 0 : rows[i].seq);
out:
	free(rows);
	return err;
}

/* ---- events ----------------------------------------------------------- */

int
registry_events(struct registry *reg, const char *device, int limit,
		void (*cb)(void *arg, const struct registry_event *e),
		void *arg)
{
	struct registry_event e;
	char kind[24]; /* the longest: "downlink_dropped" */
	sqlite3_stmt *s;
	int rc, err = HUB_OK;

	if (!reg || !cb)
		return HUB_ERR_INVAL;
	if (limit <= 0)
		limit = 100;
	if (device) {
		if (!proto_id_valid(device, strnlen(device, HUB_ID_MAX + 1)))
			return registry__fail(reg, HUB_ERR_INVAL);
		s = registry__stmt(reg, ST_EV_DEVICE);
		sqlite3_bind_text(s, 1, device, -1, SQLITE_STATIC);
		sqlite3_bind_int(s, 2, limit);
	} else {
		s = registry__stmt(reg, ST_EV_ALL);
		sqlite3_bind_int(s, 1, limit);
	}
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		memset(&e, 0, sizeof(e));
		e.seq = sqlite3_column_int64(s, 0);
		registry__col_text(s, 1, e.device, sizeof(e.device));
		registry__col_text(s, 2, kind, sizeof(kind));
		e.kind = kind_parse(kind);
		registry__col_text(s, 3, e.reason, sizeof(e.reason));
		e.ts = sqlite3_column_int64(s, 4);
		registry__col_text(s, 5, e.session, sizeof(e.session));
		registry__col_text(s, 6, e.addr, sizeof(e.addr));
		registry__col_text(s, 7, e.hub, sizeof(e.hub));
		cb(arg, &e);
	}
	if (rc != SQLITE_DONE)
		err = registry__sqlerr(reg, rc);
	registry__reset(s);
	return err;
}
