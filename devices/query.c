/*
 * query.c - read-only registry queries for the ops API; see
 * registry_query.h. Its own read-only connection and statements, so the
 * writer's connection and its prepared statements are never shared.
 */
#include "registry_query.h"
#include "proto.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "schema.h"

#define QUERY_BUSY_MS 2000

#define Q_STR_(x) #x
#define Q_STR(x) Q_STR_(x)

/*
 * The device row, its open session (if any) and that session's start,
 * then its groups: the first REGISTRY_QUERY_GROUPS names (by name, from
 * the device_groups(device) index, whose entries are ordered by grp) as
 * "a,b" (group names are [A-Za-z0-9_-], so ',' cannot occur in one) and
 * how many it has in all. Correlated subqueries on that index: one
 * statement per page, no query per device.
 */
#define Q_DEVICE_SELECT(groups)                                                \
	"SELECT d.id, d.name, d.disabled, d.created, d.last_seen,"             \
	" s.session, s.hub, s.addr, s.started, " groups " FROM devices d"      \
	" LEFT JOIN sessions s ON s.session = (SELECT o.session"               \
	" FROM sessions o WHERE o.device = d.id AND o.ended IS NULL"           \
	" ORDER BY o.started DESC LIMIT 1) "
#define Q_GROUPS_LIMIT " LIMIT " Q_STR(REGISTRY_QUERY_GROUPS)
#define Q_GROUPS                                                               \
	"(SELECT group_concat(g.grp, ',') FROM (SELECT grp FROM"               \
	" device_groups WHERE device = d.id ORDER BY grp" Q_GROUPS_LIMIT       \
	") g),"                                                                \
	" (SELECT count(*) FROM device_groups WHERE device = d.id)"
/* a registry older than schema/003_groups.sql has no device_groups */
#define Q_NO_GROUPS "NULL, 0"
#define Q_GROUPS_SINCE 3
#define Q_DEVICES_WHERE                                                        \
	"WHERE (?1 < 0 OR (s.session IS NOT NULL) = ?1)"                       \
	" AND (?2 IS NULL OR instr(lower(d.id), lower(?2)) > 0"                \
	"  OR instr(lower(d.name), lower(?2)) > 0)"                            \
	" AND (?3 IS NULL OR d.id > ?3) ORDER BY d.id LIMIT ?4"
#define Q_DEVICE_WHERE "WHERE d.id = ?1"

enum {
	Q_DEVICES,
	Q_DEVICE,
	Q_EVENTS,
	Q_COUNT,
	Q__N,
};

static const char *const q_sql[Q__N] = {
    [Q_DEVICES] = Q_DEVICE_SELECT(Q_GROUPS) Q_DEVICES_WHERE,
    [Q_DEVICE] = Q_DEVICE_SELECT(Q_GROUPS) Q_DEVICE_WHERE,
    [Q_EVENTS] = "SELECT seq, device, kind, reason, ts, session, addr, hub"
		 " FROM events WHERE (?1 IS NULL OR device = ?1)"
		 " AND (?2 <= 0 OR seq < ?2) ORDER BY seq DESC LIMIT ?3",
    [Q_COUNT] = "SELECT (SELECT count(*) FROM devices),"
		" (SELECT count(DISTINCT device) FROM sessions"
		" WHERE ended IS NULL)",
};

/* The statements that differ on a registry without groups. */
static const char *const q_sql_nogroups[Q__N] = {
    [Q_DEVICES] = Q_DEVICE_SELECT(Q_NO_GROUPS) Q_DEVICES_WHERE,
    [Q_DEVICE] = Q_DEVICE_SELECT(Q_NO_GROUPS) Q_DEVICE_WHERE,
};

struct registry_query {
	sqlite3 *db;
	sqlite3_stmt *st[Q__N];
};

static int
sqlerr(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return HUB_OK;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return HUB_ERR_BUSY;
	case SQLITE_NOMEM:
		return HUB_ERR_NOMEM;
	case SQLITE_CANTOPEN:
	case SQLITE_IOERR:
		return HUB_ERR_IO;
	default:
		return HUB_ERR_DB;
	}
}

int
registry_query_open(const char *path, struct registry_query **out, char *err,
		    size_t errlen)
{
	struct registry_query *q = NULL;
	sqlite3_stmt *s = NULL;
	struct stat st;
	int rc, ver = -1, i, ret;

	*out = NULL;
	if (!path || stat(path, &st) != 0) {
		snprintf(err, errlen, "no registry at %s", path ? path : "?");
		return HUB_ERR_NOTFOUND;
	}
	q = calloc(1, sizeof(*q));
	if (!q) {
		snprintf(err, errlen, "out of memory");
		return HUB_ERR_NOMEM;
	}
	rc = sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READONLY, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s",
			 q->db ? sqlite3_errmsg(q->db) : "cannot open");
		ret = sqlerr(rc);
		goto fail;
	}
	sqlite3_busy_timeout(q->db, QUERY_BUSY_MS);
	rc = sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &s, NULL);
	if (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		ver = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	/* every column read here exists since migration 1; the groups
	 * table since Q_GROUPS_SINCE (an older file reads as no groups) */
	if (ver < 1 || ver > schema_count) {
		snprintf(err, errlen,
			 "registry schema %d, this hub knows 1..%d", ver,
			 schema_count);
		ret = HUB_ERR_SCHEMA;
		goto fail;
	}
	for (i = 0; i < Q__N; i++) {
		const char *sql = ver < Q_GROUPS_SINCE && q_sql_nogroups[i]
				      ? q_sql_nogroups[i]
				      : q_sql[i];

		rc = sqlite3_prepare_v3(
		    q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &q->st[i], NULL);
		if (rc != SQLITE_OK) {
			snprintf(err, errlen, "%s", sqlite3_errmsg(q->db));
			ret = sqlerr(rc);
			goto fail;
		}
	}
	*out = q;
	return HUB_OK;
fail:
	registry_query_close(q);
	return ret;
}

void
registry_query_close(struct registry_query *q)
{
	int i;

	if (!q)
		return;
	for (i = 0; i < Q__N; i++)
		sqlite3_finalize(q->st[i]);
	sqlite3_close(q->db);
	free(q);
}

static void
col_text(sqlite3_stmt *s, int col, char *out, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	size_t n = t ? (size_t)sqlite3_column_bytes(s, col) : 0;

	if (n >= cap)
		n = cap - 1;
	if (n)
		memcpy(out, t, n);
	out[n] = '\0';
}

static int
cmp_group(const void *a, const void *b)
{
	return strcmp(a, b);
}

/*
 * Splits column col ("a,b", or NULL) into o->groups. Each name is cut to
 * REGISTRY_GROUP_MAX bytes and at most REGISTRY_QUERY_GROUPS are kept
 * (the SQL gives no more). Sorted here because group_concat's order is
 * not promised by SQLite before 3.44; byte order, as SQLite's BINARY.
 */
static void
fill_groups(sqlite3_stmt *s, int col, struct registry_query_device *o)
{
	const char *t = (const char *)sqlite3_column_text(s, col);
	size_t len = t ? (size_t)sqlite3_column_bytes(s, col) : 0, i = 0, n;
	const char *comma;

	while (i < len && o->ngroups < REGISTRY_QUERY_GROUPS) {
		comma = memchr(t + i, ',', len - i);
		n = (comma ? (size_t)(comma - t) : len) - i;
		if (n > 0) {
			char *g = o->groups[o->ngroups++];

			if (n > REGISTRY_GROUP_MAX)
				n = REGISTRY_GROUP_MAX;
			memcpy(g, t + i, n);
			g[n] = '\0';
		}
		if (!comma)
			break;
		i = (size_t)(comma - t) + 1;
	}
	qsort(o->groups, (size_t)o->ngroups, sizeof(o->groups[0]), cmp_group);
}

static void
fill(sqlite3_stmt *s, struct registry_query_device *o)
{
	struct registry_device *d = &o->d;

	memset(o, 0, sizeof(*o));
	col_text(s, 0, d->id, sizeof(d->id));
	col_text(s, 1, d->name, sizeof(d->name));
	d->disabled = sqlite3_column_int(s, 2) != 0;
	d->created = sqlite3_column_int64(s, 3);
	d->last_seen = sqlite3_column_int64(s, 4);
	d->online = sqlite3_column_type(s, 5) != SQLITE_NULL;
	col_text(s, 5, d->session, sizeof(d->session));
	col_text(s, 6, d->hub, sizeof(d->hub));
	col_text(s, 7, d->addr, sizeof(d->addr));
	o->since = d->online ? sqlite3_column_int64(s, 8) : 0;
	fill_groups(s, 9, o);
	o->groups_total = sqlite3_column_int64(s, 10);
	if (o->groups_total < o->ngroups) /* one snapshot: cannot be */
		o->groups_total = o->ngroups;
}

static void
bind_opt(sqlite3_stmt *s, int col, const char *v)
{
	if (v && *v)
		sqlite3_bind_text(s, col, v, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(s, col);
}

static int
bad_limit(int limit)
{
	return limit < 1 || limit > 1000;
}

int
registry_query_devices(struct registry_query *q,
		       const struct registry_query_filter *f,
		       void (*cb)(void *arg,
				  const struct registry_query_device *d),
		       void *arg, int *more)
{
	struct registry_query_device d;
	sqlite3_stmt *s;
	int rc, n = 0, err = HUB_OK;

	if (!q || !f || !cb || !more || bad_limit(f->limit))
		return HUB_ERR_INVAL;
	*more = 0;
	s = q->st[Q_DEVICES];
	sqlite3_bind_int(s, 1, f->online);
	bind_opt(s, 2, f->q);
	bind_opt(s, 3, f->after);
	sqlite3_bind_int(s, 4, f->limit + 1); /* one more: is there a page */
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n++ == f->limit) {
			*more = 1;
			break;
		}
		fill(s, &d);
		cb(arg, &d);
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = sqlerr(rc);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return err;
}

int
registry_query_device(struct registry_query *q, const char *id,
		      struct registry_query_device *out)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!q || !id || !out ||
	    !proto_id_valid(id, strnlen(id, HUB_ID_MAX + 1)))
		return HUB_ERR_INVAL;
	s = q->st[Q_DEVICE];
	sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		fill(s, out);
		err = HUB_OK;
	} else {
		err = rc == SQLITE_DONE ? HUB_ERR_NOTFOUND : sqlerr(rc);
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return err;
}

int
registry_query_events(struct registry_query *q, const char *device,
		      int64_t before, int limit,
		      void (*cb)(void *arg, const struct registry_event *e),
		      void *arg, int *more)
{
	struct registry_event e;
	const char *kind;
	sqlite3_stmt *s;
	int rc, n = 0, err = HUB_OK;

	if (!q || !cb || !more || bad_limit(limit))
		return HUB_ERR_INVAL;
	*more = 0;
	s = q->st[Q_EVENTS];
	bind_opt(s, 1, device);
	sqlite3_bind_int64(s, 2, before);
	sqlite3_bind_int(s, 3, limit + 1);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n++ == limit) {
			*more = 1;
			break;
		}
		memset(&e, 0, sizeof(e));
		e.seq = sqlite3_column_int64(s, 0);
		col_text(s, 1, e.device, sizeof(e.device));
		kind = (const char *)sqlite3_column_text(s, 2);
		e.kind = kind && !strcmp(kind, "online") ? REGISTRY_ONLINE
			 : kind && !strcmp(kind, "offline")
			     ? REGISTRY_OFFLINE
			     : REGISTRY_AUTH_FAILED;
		col_text(s, 3, e.reason, sizeof(e.reason));
		e.ts = sqlite3_column_int64(s, 4);
		col_text(s, 5, e.session, sizeof(e.session));
		col_text(s, 6, e.addr, sizeof(e.addr));
		col_text(s, 7, e.hub, sizeof(e.hub));
		cb(arg, &e);
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = sqlerr(rc);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return err;
}

int
registry_query_counts(struct registry_query *q, int64_t *devices,
		      int64_t *online)
{
	sqlite3_stmt *s;
	int rc, err = HUB_OK;

	if (!q || !devices || !online)
		return HUB_ERR_INVAL;
	s = q->st[Q_COUNT];
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*devices = sqlite3_column_int64(s, 0);
		*online = sqlite3_column_int64(s, 1);
	} else {
		err = sqlerr(rc);
	}
	sqlite3_reset(s);
	return err;
}
