/*
 * test_registry.c - unit tests of devices/ (the registry library): schema
 * and migrations, device admin and import, tokens, the credential
 * snapshot, sessions and presence seq, events, crash repair, and the two
 * change counters. Most run on ":memory:"; the multi-connection cases
 * (data_version, schema refusal) on a temp file.
 *
 * Single-threaded; cmocka.
 */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "registry.h"
#include "registry_int.h" /* the connection, to interrupt its reads */

/* ---- helpers ---------------------------------------------------------- */

static struct registry *
open_mem(void)
{
	struct registry *reg = NULL;
	char err[256];

	assert_int_equal(registry_open(":memory:", &reg, err, sizeof(err)),
			 HUB_OK);
	assert_non_null(reg);
	return reg;
}

struct tmpdb {
	char path[64];
};

static void
tmpdb_make(struct tmpdb *t)
{
	int fd;

	snprintf(t->path, sizeof(t->path), "/tmp/test_registry_XXXXXX");
	fd = mkstemp(t->path);
	assert_true(fd >= 0);
	close(fd);
	unlink(t->path); /* let SQLite create it */
}

static void
tmpdb_remove(struct tmpdb *t)
{
	char p[80];

	unlink(t->path);
	snprintf(p, sizeof(p), "%s-wal", t->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", t->path);
	unlink(p);
}

static void
count_dev(void *arg, const struct registry_device *d)
{
	(void)d;
	(*(int *)arg)++;
}

static int
device_count(struct registry *reg, int online_only)
{
	int n = 0;

	assert_int_equal(registry_device_list(reg, online_only, count_dev, &n),
			 HUB_OK);
	return n;
}

static int64_t
rev(struct registry *reg)
{
	int64_t v = -1;

	assert_int_equal(registry_devices_rev(reg, &v), HUB_OK);
	return v;
}

static void
add(struct registry *reg, const char *id, char *token)
{
	char tok[REGISTRY_TOKEN_LEN + 1];

	assert_int_equal(
	    registry_device_add(reg, id, NULL, token ? token : tok), HUB_OK);
}

static struct registry_session
mk_session(const char *device, const char *session, const char *hub, int worker,
	   int64_t ts)
{
	struct registry_session s;

	memset(&s, 0, sizeof(s));
	snprintf(s.device, sizeof(s.device), "%s", device);
	snprintf(s.session, sizeof(s.session), "%s", session);
	snprintf(s.hub, sizeof(s.hub), "%s", hub);
	snprintf(s.addr, sizeof(s.addr), "127.0.0.%d", worker + 1);
	s.worker = worker;
	s.ts = ts;
	return s;
}

static int64_t
open_ses(struct registry *reg, const char *device, const char *session,
	 const char *hub, int worker, int64_t ts)
{
	struct registry_session s =
	    mk_session(device, session, hub, worker, ts);
	int64_t seq = -1;

	assert_int_equal(registry_session_open(reg, &s, &seq), HUB_OK);
	return seq;
}

static int
is_b64url(const char *t)
{
	size_t i;

	for (i = 0; t[i]; i++)
		if (!((t[i] >= 'a' && t[i] <= 'z') ||
		      (t[i] >= 'A' && t[i] <= 'Z') ||
		      (t[i] >= '0' && t[i] <= '9') || t[i] == '-' ||
		      t[i] == '_'))
			return 0;
	return 1;
}

/* ---- schema ----------------------------------------------------------- */

static int
raw_user_version(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	int v = -1;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL),
	    SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

static void
raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void
test_migrations(void **state)
{
	struct tmpdb t;
	struct registry *reg = NULL;
	char err[256] = "", sql[64];
	int v;

	(void)state;
	tmpdb_make(&t);
	assert_int_equal(registry_open(t.path, &reg, err, sizeof(err)), HUB_OK);
	add(reg, "dev1", NULL);
	registry_close(reg);
	reg = NULL;

	v = raw_user_version(t.path);
	assert_true(v >= 1);

	/* Reopening applies nothing and keeps the data. */
	assert_int_equal(registry_open(t.path, &reg, err, sizeof(err)), HUB_OK);
	assert_int_equal(device_count(reg, 0), 1);
	registry_close(reg);
	reg = NULL;
	assert_int_equal(raw_user_version(t.path), v);

	/* A file from a newer program is refused. */
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
	raw_exec(t.path, sql);
	reg = (struct registry *)&t; /* must be reset to NULL */
	assert_int_equal(registry_open(t.path, &reg, err, sizeof(err)),
			 HUB_ERR_SCHEMA);
	assert_null(reg);
	assert_non_null(strstr(err, "newer"));
	tmpdb_remove(&t);
}

static void
test_wal_mode(void **state)
{
	struct tmpdb t;
	struct registry *reg = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;

	(void)state;
	tmpdb_make(&t);
	assert_int_equal(registry_open(t.path, &reg, NULL, 0), HUB_OK);
	assert_int_equal(sqlite3_open(t.path, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	sqlite3_close(db);
	registry_close(reg);
	tmpdb_remove(&t);
}

static void
test_open_bad_path(void **state)
{
	struct registry *reg = NULL;
	char err[256] = "";

	(void)state;
	assert_int_not_equal(
	    registry_open("/nonexistent-dir/x/reg.db", &reg, err, sizeof(err)),
	    HUB_OK);
	assert_null(reg);
	assert_true(err[0] != '\0');
	registry_close(NULL); /* accepts NULL */
}

/* ---- devices ---------------------------------------------------------- */

struct collected {
	int n;
	char ids[8][HUB_ID_MAX + 1];
	char names[8][REGISTRY_NAME_MAX + 1];
};

static void
collect_dev(void *arg, const struct registry_device *d)
{
	struct collected *c = arg;

	if (c->n < 8) {
		snprintf(c->ids[c->n], sizeof(c->ids[0]), "%s", d->id);
		snprintf(c->names[c->n], sizeof(c->names[0]), "%s", d->name);
	}
	c->n++;
}

static void
test_device_add_get_list(void **state)
{
	struct registry *reg = open_mem();
	struct registry_device d;
	struct collected c = {0};
	char tok[REGISTRY_TOKEN_LEN + 1], tok2[REGISTRY_TOKEN_LEN + 1];
	char longid[HUB_ID_MAX + 2];
	int64_t before = hub_clock_ms();

	(void)state;
	assert_int_equal(registry_device_add(reg, "zeta", "Zeta sensor", tok),
			 HUB_OK);
	assert_int_equal(strlen(tok), REGISTRY_TOKEN_LEN);
	assert_true(is_b64url(tok));
	assert_int_equal(registry_device_add(reg, "alpha", NULL, tok2), HUB_OK);
	assert_string_not_equal(tok, tok2);

	assert_int_equal(registry_device_get(reg, "zeta", &d), HUB_OK);
	assert_string_equal(d.id, "zeta");
	assert_string_equal(d.name, "Zeta sensor");
	assert_int_equal(d.disabled, 0);
	assert_int_equal(d.online, 0);
	assert_int_equal(d.last_seen, 0);
	assert_true(d.created >= before && d.created <= hub_clock_ms());
	assert_string_equal(d.session, "");

	assert_int_equal(registry_device_list(reg, 0, collect_dev, &c), HUB_OK);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ids[0], "alpha"); /* id order */
	assert_string_equal(c.ids[1], "zeta");
	assert_string_equal(c.names[0], "");

	/* duplicates and bad ids */
	assert_int_equal(registry_device_add(reg, "zeta", NULL, tok),
			 HUB_ERR_EXISTS);
	assert_string_equal(tok, "");
	assert_int_equal(registry_device_add(reg, "bad id", NULL, tok),
			 HUB_ERR_INVAL);
	assert_int_equal(registry_device_add(reg, "", NULL, tok),
			 HUB_ERR_INVAL);
	assert_int_equal(registry_device_add(reg, "a/b", NULL, tok),
			 HUB_ERR_INVAL);
	memset(longid, 'a', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0'; /* 65 chars */
	assert_int_equal(registry_device_add(reg, longid, NULL, tok),
			 HUB_ERR_INVAL);
	longid[HUB_ID_MAX] = '\0'; /* 64 chars: fine */
	assert_int_equal(registry_device_add(reg, longid, NULL, tok), HUB_OK);
	assert_int_equal(registry_device_add(reg, "ctl", "bad\nname", tok),
			 HUB_ERR_INVAL);
	assert_int_equal(device_count(reg, 0), 3);

	assert_int_equal(registry_device_get(reg, "nobody", &d),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(registry_device_get(reg, "no body", &d),
			 HUB_ERR_INVAL);
	registry_close(reg);
}

static void
test_device_disable_delete(void **state)
{
	struct registry *reg = open_mem();
	struct registry_device d;

	(void)state;
	add(reg, "d1", NULL);
	assert_int_equal(registry_device_set_disabled(reg, "d1", 1), HUB_OK);
	assert_int_equal(registry_device_get(reg, "d1", &d), HUB_OK);
	assert_int_equal(d.disabled, 1);
	assert_int_equal(registry_device_set_disabled(reg, "d1", 0), HUB_OK);
	assert_int_equal(registry_device_get(reg, "d1", &d), HUB_OK);
	assert_int_equal(d.disabled, 0);
	assert_int_equal(registry_device_set_disabled(reg, "nope", 1),
			 HUB_ERR_NOTFOUND);

	assert_int_equal(registry_device_delete(reg, "d1"), HUB_OK);
	assert_int_equal(registry_device_get(reg, "d1", &d), HUB_ERR_NOTFOUND);
	assert_int_equal(registry_device_delete(reg, "d1"), HUB_ERR_NOTFOUND);
	assert_int_equal(device_count(reg, 0), 0);
	registry_close(reg);
}

/* ---- import ----------------------------------------------------------- */

struct imported {
	int n;
	char ids[8][HUB_ID_MAX + 1];
	char tokens[8][REGISTRY_TOKEN_LEN + 1];
};

static void
collect_import(void *arg, const char *id, const char *token)
{
	struct imported *im = arg;

	if (im->n < 8) {
		snprintf(im->ids[im->n], sizeof(im->ids[0]), "%s", id);
		snprintf(im->tokens[im->n], sizeof(im->tokens[0]), "%s", token);
	}
	im->n++;
}

static void
test_import(void **state)
{
	static const char text[] = "# devices of floor 2\r\n"
				   "\n"
				   "s1\r\n"
				   "  s2 , Second sensor \r\n"
				   "   \n"
				   "s3,\n"
				   "s4"; /* no final newline */
	struct registry *reg = open_mem();
	struct imported im = {0};
	struct registry_creds *c = NULL;
	struct registry_device d;
	size_t bad = 99;
	int i;

	(void)state;
	assert_int_equal(registry_device_import(reg, text, strlen(text),
						collect_import, &im, &bad),
			 HUB_OK);
	assert_int_equal(bad, 0);
	assert_int_equal(im.n, 4);
	assert_string_equal(im.ids[0], "s1");
	assert_string_equal(im.ids[1], "s2");
	assert_string_equal(im.ids[3], "s4");
	assert_int_equal(registry_device_get(reg, "s2", &d), HUB_OK);
	assert_string_equal(d.name, "Second sensor");
	assert_int_equal(registry_device_get(reg, "s3", &d), HUB_OK);
	assert_string_equal(d.name, "");

	/* every printed token works */
	assert_int_equal(registry_creds_load(reg, &c), HUB_OK);
	for (i = 0; i < 4; i++)
		assert_int_equal(registry_creds_check(c, im.ids[i],
						      im.tokens[i],
						      strlen(im.tokens[i])),
				 HUB_OK);
	registry_creds_free(c);
	registry_close(reg);
}

static void
test_import_all_or_nothing(void **state)
{
	static const char bad_id[] = "a1\na2\n# c\nbad id\na3\n";
	static const char dup_in_file[] = "b1\nb2\nb1\n";
	static const char dup_in_db[] = "c1\n\nexisting\n";
	struct registry *reg = open_mem();
	struct imported im = {0};
	int64_t r0;
	size_t bad = 0;

	(void)state;
	add(reg, "existing", NULL);
	r0 = rev(reg);

	assert_int_equal(registry_device_import(reg, bad_id, strlen(bad_id),
						collect_import, &im, &bad),
			 HUB_ERR_INVAL);
	assert_int_equal(bad, 4);
	assert_int_equal(im.n, 0); /* no token was handed out */
	assert_int_equal(device_count(reg, 0), 1);

	assert_int_equal(registry_device_import(reg, dup_in_file,
						strlen(dup_in_file),
						collect_import, &im, &bad),
			 HUB_ERR_EXISTS);
	assert_int_equal(bad, 3);
	assert_int_equal(im.n, 0);

	assert_int_equal(registry_device_import(reg, dup_in_db,
						strlen(dup_in_db),
						collect_import, &im, &bad),
			 HUB_ERR_EXISTS);
	assert_int_equal(bad, 3);
	assert_int_equal(im.n, 0);
	assert_int_equal(device_count(reg, 0), 1);
	assert_int_equal(rev(reg), r0); /* rolled back, triggers included */

	/* and the connection is usable afterwards (no dangling transaction) */
	add(reg, "after", NULL);
	assert_int_equal(device_count(reg, 0), 2);
	registry_close(reg);
}

/* ---- tokens and credentials ------------------------------------------ */

static void
test_token_hash_verify(void **state)
{
	char t1[REGISTRY_TOKEN_LEN + 1], t2[REGISTRY_TOKEN_LEN + 1];
	char h1[104], h2[104];

	(void)state;
	assert_int_equal(registry_token_new(t1), HUB_OK);
	assert_int_equal(registry_token_new(t2), HUB_OK);
	assert_int_equal(strlen(t1), REGISTRY_TOKEN_LEN);
	assert_string_not_equal(t1, t2);
	assert_true(is_b64url(t1));

	assert_int_equal(registry_token_hash(t1, strlen(t1), h1, sizeof(h1)),
			 HUB_OK);
	assert_int_equal(strlen(h1), 100);
	assert_memory_equal(h1, "v1$", 3);
	assert_int_equal(h1[35], '$');
	assert_null(strstr(h1, t1)); /* the token itself is not stored */
	/* salted: the same token hashes differently each time */
	assert_int_equal(registry_token_hash(t1, strlen(t1), h2, sizeof(h2)),
			 HUB_OK);
	assert_string_not_equal(h1, h2);

	assert_int_equal(registry_token_verify(h1, t1, strlen(t1)), 1);
	assert_int_equal(registry_token_verify(h2, t1, strlen(t1)), 1);
	assert_int_equal(registry_token_verify(h1, t2, strlen(t2)), 0);
	assert_int_equal(registry_token_verify(h1, t1, strlen(t1) - 1), 0);
	t1[5] ^= 1;
	assert_int_equal(registry_token_verify(h1, t1, strlen(t1)), 0);
	assert_int_equal(registry_token_verify("v1$zz", t1, strlen(t1)), 0);
	assert_int_equal(registry_token_verify("", t1, strlen(t1)), 0);
	assert_int_equal(registry_token_hash(t1, strlen(t1), h1, 50),
			 HUB_ERR_INVAL);
}

static void
test_creds_check(void **state)
{
	struct registry *reg = open_mem();
	struct registry_creds *c = NULL;
	char ta[REGISTRY_TOKEN_LEN + 1], tb[REGISTRY_TOKEN_LEN + 1];
	int dis = -1;

	(void)state;
	add(reg, "a", ta);
	add(reg, "b", tb);
	assert_int_equal(registry_creds_load(reg, &c), HUB_OK);
	assert_int_equal(registry_creds_count(c), 2);
	assert_int_equal(registry_creds_check(c, "a", ta, strlen(ta)), HUB_OK);
	assert_int_equal(registry_creds_check(c, "b", tb, strlen(tb)), HUB_OK);
	/* another device's token, a wrong token, an unknown id */
	assert_int_equal(registry_creds_check(c, "a", tb, strlen(tb)),
			 HUB_ERR_AUTH);
	assert_int_equal(registry_creds_check(c, "a", "x", 1), HUB_ERR_AUTH);
	assert_int_equal(registry_creds_check(c, "a", ta, strlen(ta) - 1),
			 HUB_ERR_AUTH);
	assert_int_equal(registry_creds_check(c, "zz", ta, strlen(ta)),
			 HUB_ERR_AUTH);
	assert_int_equal(registry_creds_check(c, NULL, ta, strlen(ta)),
			 HUB_ERR_AUTH);
	assert_int_equal(registry_creds_check(c, "a", NULL, 0), HUB_ERR_AUTH);

	assert_true(registry_creds_fingerprint(c, "a", &dis) != 0);
	assert_int_equal(dis, 0);
	assert_true(registry_creds_fingerprint(c, "a", NULL) !=
		    registry_creds_fingerprint(c, "b", NULL));
	assert_int_equal(registry_creds_fingerprint(c, "zz", &dis), 0);
	registry_creds_free(c);
	registry_creds_free(NULL);
	assert_int_equal(registry_creds_count(NULL), 0);
	registry_close(reg);
}

static void
test_rotate(void **state)
{
	struct registry *reg = open_mem();
	struct registry_creds *c1 = NULL, *c2 = NULL;
	char old[REGISTRY_TOKEN_LEN + 1], neu[REGISTRY_TOKEN_LEN + 1];
	int64_t r0;

	(void)state;
	add(reg, "r1", old);
	assert_int_equal(registry_creds_load(reg, &c1), HUB_OK);
	r0 = rev(reg);
	assert_int_equal(registry_device_rotate(reg, "r1", neu), HUB_OK);
	assert_int_equal(strlen(neu), REGISTRY_TOKEN_LEN);
	assert_string_not_equal(old, neu);
	assert_true(rev(reg) > r0);
	assert_int_equal(registry_creds_load(reg, &c2), HUB_OK);
	assert_int_equal(registry_creds_check(c2, "r1", old, strlen(old)),
			 HUB_ERR_AUTH);
	assert_int_equal(registry_creds_check(c2, "r1", neu, strlen(neu)),
			 HUB_OK);
	/* the old snapshot is immutable: still the old token */
	assert_int_equal(registry_creds_check(c1, "r1", old, strlen(old)),
			 HUB_OK);
	assert_true(registry_creds_fingerprint(c1, "r1", NULL) !=
		    registry_creds_fingerprint(c2, "r1", NULL));
	assert_int_equal(registry_device_rotate(reg, "ghost", neu),
			 HUB_ERR_NOTFOUND);
	assert_string_equal(neu, "");
	registry_creds_free(c1);
	registry_creds_free(c2);
	registry_close(reg);
}

static void
test_creds_disabled_deleted(void **state)
{
	struct registry *reg = open_mem();
	struct registry_creds *c = NULL;
	char t[REGISTRY_TOKEN_LEN + 1], other[REGISTRY_TOKEN_LEN + 1];
	uint64_t fp;
	int dis = 0;

	(void)state;
	add(reg, "d", t);
	assert_int_equal(registry_creds_load(reg, &c), HUB_OK);
	fp = registry_creds_fingerprint(c, "d", NULL);
	registry_creds_free(c);

	assert_int_equal(registry_device_set_disabled(reg, "d", 1), HUB_OK);
	assert_int_equal(registry_creds_load(reg, &c), HUB_OK);
	assert_int_equal(registry_creds_check(c, "d", t, strlen(t)),
			 HUB_ERR_DISABLED);
	assert_int_equal(registry_token_new(other), HUB_OK);
	/* a wrong token on a disabled device says AUTH, not DISABLED */
	assert_int_equal(registry_creds_check(c, "d", other, strlen(other)),
			 HUB_ERR_AUTH);
	assert_int_equal(registry_creds_fingerprint(c, "d", &dis), fp);
	assert_int_equal(dis, 1);
	registry_creds_free(c);

	assert_int_equal(registry_device_delete(reg, "d"), HUB_OK);
	assert_int_equal(registry_creds_load(reg, &c), HUB_OK);
	assert_int_equal(registry_creds_count(c), 0);
	assert_int_equal(registry_creds_check(c, "d", t, strlen(t)),
			 HUB_ERR_AUTH);
	assert_int_equal(registry_creds_fingerprint(c, "d", &dis), 0);
	registry_creds_free(c);
	registry_close(reg);
}

/* ---- sessions --------------------------------------------------------- */

static void
test_session_seq(void **state)
{
	struct registry *reg = open_mem();
	struct registry_device d;
	int64_t s1, s2, s3, s4;

	(void)state;
	add(reg, "p", NULL);
	s1 = open_ses(reg, "p", "sess-1", "hubA", 0, 1000);
	assert_true(s1 >= 1000);
	assert_int_equal(registry_device_get(reg, "p", &d), HUB_OK);
	assert_int_equal(d.online, 1);
	assert_string_equal(d.session, "sess-1");
	assert_string_equal(d.hub, "hubA");
	assert_string_equal(d.addr, "127.0.0.1");
	assert_int_equal(d.last_seen, 1000);
	assert_int_equal(device_count(reg, 1), 1);

	/* same ms: still strictly rising */
	assert_int_equal(
	    registry_session_close(reg, "sess-1", "closed", 1000, &s2), HUB_OK);
	assert_true(s2 > s1);
	assert_int_equal(registry_device_get(reg, "p", &d), HUB_OK);
	assert_int_equal(d.online, 0);
	assert_string_equal(d.session, "");
	assert_int_equal(device_count(reg, 1), 0);

	/* a clock that jumps back (another hub) still rises */
	s3 = open_ses(reg, "p", "sess-2", "hubB", 1, 500);
	assert_true(s3 > s2);
	/* a clock far ahead: seq follows time */
	assert_int_equal(
	    registry_session_close(reg, "sess-2", "timeout", 900000, &s4),
	    HUB_OK);
	assert_int_equal(s4, 900000);
	assert_int_equal(registry_device_get(reg, "p", &d), HUB_OK);
	assert_int_equal(d.last_seen, 900000);
	registry_close(reg);
}

static void
test_session_close_errors(void **state)
{
	struct registry *reg = open_mem();
	struct registry_session s;
	int64_t seq = 7;

	(void)state;
	add(reg, "q", NULL);
	assert_int_equal(registry_session_close(reg, "nope", "closed", 1, &seq),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(seq, 0);
	open_ses(reg, "q", "s-q", "h", 0, 10);
	assert_int_equal(registry_session_close(reg, "s-q", "closed", 20, &seq),
			 HUB_OK);
	/* closed already */
	assert_int_equal(registry_session_close(reg, "s-q", "closed", 30, &seq),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(registry_session_close(reg, "s-q", "", 30, &seq),
			 HUB_ERR_INVAL);
	/* the same session id twice */
	s = mk_session("q", "s-q", "h", 0, 40);
	assert_int_equal(registry_session_open(reg, &s, &seq), HUB_ERR_EXISTS);
	s = mk_session("bad id", "s-x", "h", 0, 40);
	assert_int_equal(registry_session_open(reg, &s, &seq), HUB_ERR_INVAL);
	registry_close(reg);
}

static void
test_session_deleted_device(void **state)
{
	struct registry *reg = open_mem();
	int64_t seq;

	(void)state;
	/* the device was deleted while connecting: the record is kept */
	seq = open_ses(reg, "gone", "s-g", "h", 0, 12345);
	assert_int_equal(seq, 12345);
	assert_int_equal(
	    registry_session_close(reg, "s-g", "disabled", 12350, &seq),
	    HUB_OK);
	assert_int_equal(seq, 12350);
	registry_close(reg);
}

static void
test_group_commit(void **state)
{
	struct registry *reg = open_mem();
	struct registry_session s;
	int64_t seq;

	(void)state;
	add(reg, "g1", NULL);
	add(reg, "g2", NULL);
	assert_int_equal(registry_begin(reg), HUB_OK);
	open_ses(reg, "g1", "s-1", "h", 0, 100);
	/* a failing call inside the batch does not spoil the batch */
	s = mk_session("g1", "s-1", "h", 0, 100);
	assert_int_equal(registry_session_open(reg, &s, &seq), HUB_ERR_EXISTS);
	open_ses(reg, "g2", "s-2", "h", 0, 100);
	assert_int_equal(registry_session_close(reg, "nope", "closed", 1, &seq),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(
	    registry_auth_failed(reg, "g3", "10.0.0.1", "h", "bad_token", 100),
	    HUB_OK);
	assert_int_equal(registry_commit(reg), HUB_OK);
	assert_int_equal(device_count(reg, 1), 2);

	assert_int_equal(registry_begin(reg), HUB_OK);
	assert_int_equal(
	    registry_session_close(reg, "s-1", "closed", 200, &seq), HUB_OK);
	assert_int_equal(registry_rollback(reg), HUB_OK);
	assert_int_equal(device_count(reg, 1), 2); /* rolled back */
	registry_close(reg);
}

/* ---- events ----------------------------------------------------------- */

struct evs {
	int n;
	struct registry_event e[16];
};

static void
collect_ev(void *arg, const struct registry_event *e)
{
	struct evs *v = arg;

	if (v->n < 16)
		v->e[v->n] = *e;
	v->n++;
}

static void
test_events(void **state)
{
	struct registry *reg = open_mem();
	struct evs v = {0};
	int64_t seq;
	int i;

	(void)state;
	add(reg, "e1", NULL);
	add(reg, "e2", NULL);
	open_ses(reg, "e1", "s-a", "hubX", 2, 100);
	open_ses(reg, "e2", "s-b", "hubX", 2, 110);
	assert_int_equal(
	    registry_session_close(reg, "s-a", "kicked", 120, &seq), HUB_OK);
	assert_int_equal(registry_auth_failed(reg, "e1", "10.1.2.3", "hubX",
					      "bad_token", 130),
			 HUB_OK);
	assert_int_equal(registry_auth_failed(reg, "bad id", "a", "h", "x", 1),
			 HUB_ERR_INVAL);

	assert_int_equal(registry_events(reg, NULL, 0, collect_ev, &v), HUB_OK);
	assert_int_equal(v.n, 4);
	for (i = 1; i < v.n; i++) /* newest first */
		assert_true(v.e[i - 1].seq > v.e[i].seq);
	assert_int_equal(v.e[0].kind, REGISTRY_AUTH_FAILED);
	assert_string_equal(v.e[0].reason, "bad_token");
	assert_string_equal(v.e[0].addr, "10.1.2.3");
	assert_string_equal(v.e[0].session, "");
	assert_int_equal(v.e[0].ts, 130);
	assert_int_equal(v.e[1].kind, REGISTRY_OFFLINE);
	assert_string_equal(v.e[1].reason, "kicked");
	assert_string_equal(v.e[1].session, "s-a");
	assert_string_equal(v.e[1].hub, "hubX");
	assert_int_equal(v.e[3].kind, REGISTRY_ONLINE);
	assert_string_equal(v.e[3].reason, "");
	assert_string_equal(v.e[3].addr, "127.0.0.3");

	memset(&v, 0, sizeof(v));
	assert_int_equal(registry_events(reg, NULL, 2, collect_ev, &v), HUB_OK);
	assert_int_equal(v.n, 2);
	assert_int_equal(v.e[0].kind, REGISTRY_AUTH_FAILED);

	memset(&v, 0, sizeof(v));
	assert_int_equal(registry_events(reg, "e2", 10, collect_ev, &v),
			 HUB_OK);
	assert_int_equal(v.n, 1);
	assert_string_equal(v.e[0].device, "e2");
	assert_string_equal(v.e[0].session, "s-b");

	assert_string_equal(registry_kind_name(REGISTRY_ONLINE), "online");
	assert_string_equal(registry_kind_name(REGISTRY_OFFLINE), "offline");
	assert_string_equal(registry_kind_name(REGISTRY_AUTH_FAILED),
			    "auth_failed");
	registry_close(reg);
}

/* ---- repair ----------------------------------------------------------- */

struct rep {
	int n;
	char sessions[8][REGISTRY_SESSION_MAX];
	int64_t seq[8];
};

static void
collect_rep(void *arg, const char *device, const char *session, int64_t seq)
{
	struct rep *r = arg;

	(void)device;
	if (r->n < 8) {
		snprintf(r->sessions[r->n], sizeof(r->sessions[0]), "%s",
			 session);
		r->seq[r->n] = seq;
	}
	r->n++;
}

/* Index of session among the repaired ones, or -1. */
static int
find_rep(const struct rep *r, const char *session)
{
	int i;

	for (i = 0; i < r->n && i < 8; i++)
		if (!strcmp(r->sessions[i], session))
			return i;
	return -1;
}

static int
has(const struct rep *r, const char *session)
{
	return find_rep(r, session) >= 0;
}

static int
has_at(const struct rep *r, const char *session)
{
	int i = find_rep(r, session);

	if (i < 0)
		fail_msg("session %s not repaired", session);
	return i < 0 ? 0 : i;
}

static void
test_repair(void **state)
{
	struct registry *reg = open_mem();
	struct rep r = {0};
	struct evs v = {0};
	int64_t s0;

	(void)state;
	add(reg, "w0", NULL);
	add(reg, "w1", NULL);
	add(reg, "w2", NULL);
	add(reg, "w3", NULL);
	add(reg, "o0", NULL);
	s0 = open_ses(reg, "w0", "A0", "hubA", 0, 100);
	open_ses(reg, "w1", "A1", "hubA", 1, 100);
	open_ses(reg, "w2", "A2", "hubA", 2, 100);
	open_ses(reg, "w3", "A3", "hubA", 3, 100);
	open_ses(reg, "o0", "B0", "hubB", 0, 100);

	assert_int_equal(registry_repair(reg, "hubA", 0, -1, collect_rep, &r),
			 HUB_OK);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.sessions[0], "A0");
	assert_true(r.seq[0] > s0);
	assert_int_equal(device_count(reg, 1), 4);

	/* worker 1 restarts, and workers >= 2 no longer exist */
	memset(&r, 0, sizeof(r));
	assert_int_equal(registry_repair(reg, "hubA", 1, 2, collect_rep, &r),
			 HUB_OK);
	assert_int_equal(r.n, 3);
	assert_true(has(&r, "A1") && has(&r, "A2") && has(&r, "A3"));
	assert_int_equal(device_count(reg, 1), 1); /* hubB's is untouched */

	/* nothing left: a second repair is a no-op */
	memset(&r, 0, sizeof(r));
	assert_int_equal(registry_repair(reg, "hubA", 0, 0, collect_rep, &r),
			 HUB_OK);
	assert_int_equal(r.n, 0);

	assert_int_equal(registry_events(reg, "w2", 1, collect_ev, &v), HUB_OK);
	assert_int_equal(v.e[0].kind, REGISTRY_OFFLINE);
	assert_string_equal(v.e[0].reason, "hub_restart");
	registry_close(reg);
}

/* A device that reconnected to another worker before the crashed worker's
 * repair: its old row is closed, but no offline status is due (seq 0). */
static void
test_repair_superseded(void **state)
{
	struct registry *reg = open_mem();
	struct rep r = {0};

	(void)state;
	add(reg, "d", NULL);
	add(reg, "e", NULL);
	open_ses(reg, "d", "OLD", "hubA", 1, 100);
	open_ses(reg, "d", "NEW", "hubA", 0, 200);
	open_ses(reg, "e", "E1", "hubA", 1, 100);
	assert_int_equal(registry_repair(reg, "hubA", 1, -1, collect_rep, &r),
			 HUB_OK);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.seq[has_at(&r, "OLD")], 0);
	assert_true(r.seq[has_at(&r, "E1")] > 0);
	/* the row is closed all the same, and the new session stays open */
	assert_int_equal(device_count(reg, 1), 1);
	registry_close(reg);
}

/* A session that closes after its device reconnected (kicked, then slow to
 * close): the writer asks whether a newer session is open before it
 * publishes the offline status. */
static void
test_session_superseded(void **state)
{
	struct registry *reg = open_mem();
	int64_t seq;
	int newer = -1;

	(void)state;
	add(reg, "d", NULL);
	open_ses(reg, "d", "OLD", "hubA", 0, 100);
	assert_int_equal(registry_session_superseded(reg, "OLD", &newer),
			 HUB_OK);
	assert_int_equal(newer, 0);
	open_ses(reg, "d", "NEW", "hubA", 0, 200);
	assert_int_equal(registry_session_superseded(reg, "OLD", &newer),
			 HUB_OK);
	assert_int_equal(newer, 1);
	/* closed rows are asked about too: the writer asks after the close */
	assert_int_equal(
	    registry_session_close(reg, "OLD", "kicked", 300, &seq), HUB_OK);
	assert_int_equal(registry_session_superseded(reg, "OLD", &newer),
			 HUB_OK);
	assert_int_equal(newer, 1);
	/* the newest one is superseded by nobody */
	assert_int_equal(registry_session_superseded(reg, "NEW", &newer),
			 HUB_OK);
	assert_int_equal(newer, 0);
	/* once the newer one is closed too, the old one is current again in
	 * the sense that matters: no open successor */
	assert_int_equal(
	    registry_session_close(reg, "NEW", "closed", 400, &seq), HUB_OK);
	assert_int_equal(registry_session_superseded(reg, "OLD", &newer),
			 HUB_OK);
	assert_int_equal(newer, 0);
	/* an unknown session has no successor */
	assert_int_equal(registry_session_superseded(reg, "NOPE", &newer),
			 HUB_OK);
	assert_int_equal(newer, 0);
	registry_close(reg);
}

/* Dropped commands are an event kind of their own (schema 002). */
static void
test_downlink_dropped_event(void **state)
{
	struct registry *reg = open_mem();
	struct evs v = {0};

	(void)state;
	add(reg, "d", NULL);
	assert_int_equal(registry_downlink_dropped(reg, "d", "S1", "hubA",
						   "downlink_queue_full", 500),
			 HUB_OK);
	assert_int_equal(registry_events(reg, "d", 5, collect_ev, &v), HUB_OK);
	assert_int_equal(v.n, 1);
	assert_int_equal(v.e[0].kind, REGISTRY_DOWNLINK_DROPPED);
	assert_string_equal(registry_kind_name(v.e[0].kind),
			    "downlink_dropped");
	assert_string_equal(v.e[0].reason, "downlink_queue_full");
	assert_string_equal(v.e[0].session, "S1");
	assert_string_equal(v.e[0].hub, "hubA");
	assert_int_equal(registry_downlink_dropped(reg, "bad id", "S1", "hubA",
						   "downlink_queue_full", 500),
			 HUB_ERR_INVAL);
	registry_close(reg);
}

/* ---- change counters -------------------------------------------------- */

static int
interrupt_reads(void *arg)
{
	return *(int *)arg;
}

/* A reload that fails (here: interrupted mid-scan) must not skip the
 * change: the marks advance only with a snapshot that loaded. */
static void
test_creds_refresh_retries_after_failure(void **state)
{
	struct tmpdb t;
	struct registry *poller = NULL, *admin = NULL;
	struct registry_creds *c = NULL;
	char err[256], id[16];
	int64_t dv, rev;
	int stop = 1, i;

	(void)state;
	tmpdb_make(&t);
	assert_int_equal(registry_open(t.path, &poller, err, sizeof(err)),
			 HUB_OK);
	assert_int_equal(registry_open(t.path, &admin, err, sizeof(err)),
			 HUB_OK);
	assert_int_equal(registry_data_version(poller, &dv), HUB_OK);
	assert_int_equal(registry_devices_rev(poller, &rev), HUB_OK);
	/* nothing changed: no snapshot */
	assert_int_equal(registry_creds_refresh(poller, &dv, &rev, &c), HUB_OK);
	assert_null(c);

	for (i = 0; i < 300; i++) {
		snprintf(id, sizeof(id), "d%03d", i);
		add(admin, id, NULL);
	}
	/* the small reads (data_version, the counter) pass; the scan of 300
	 * devices runs past 200 VM steps and is interrupted */
	sqlite3_progress_handler(poller->db, 200, interrupt_reads, &stop);
	{
		int64_t x;

		assert_int_equal(registry_data_version(poller, &x), HUB_OK);
		assert_int_equal(registry_devices_rev(poller, &x), HUB_OK);
		assert_int_not_equal(registry_creds_load(poller, &c), HUB_OK);
		assert_null(c);
	}
	assert_int_not_equal(registry_creds_refresh(poller, &dv, &rev, &c),
			     HUB_OK);
	assert_null(c);
	sqlite3_progress_handler(poller->db, 0, NULL, NULL);
	/* no write since: the next poll still loads the change */
	assert_int_equal(registry_creds_refresh(poller, &dv, &rev, &c), HUB_OK);
	assert_non_null(c);
	assert_int_equal(registry_creds_count(c), 300);
	registry_creds_free(c);
	c = NULL;
	assert_int_equal(registry_creds_refresh(poller, &dv, &rev, &c), HUB_OK);
	assert_null(c);
	registry_close(admin);
	registry_close(poller);
	tmpdb_remove(&t);
}

static void
test_devices_rev(void **state)
{
	struct registry *reg = open_mem();
	char tok[REGISTRY_TOKEN_LEN + 1];
	int64_t r, seq;

	(void)state;
	r = rev(reg);
	add(reg, "v", NULL);
	assert_true(rev(reg) > r);
	r = rev(reg);
	assert_int_equal(registry_device_set_disabled(reg, "v", 1), HUB_OK);
	assert_true(rev(reg) > r);
	r = rev(reg);
	/* no change, no bump */
	assert_int_equal(registry_device_set_disabled(reg, "v", 1), HUB_OK);
	assert_int_equal(rev(reg), r);
	assert_int_equal(registry_device_rotate(reg, "v", tok), HUB_OK);
	assert_true(rev(reg) > r);
	r = rev(reg);
	/* presence traffic must not cause credential reloads */
	open_ses(reg, "v", "s-v", "h", 0, 100);
	assert_int_equal(
	    registry_session_close(reg, "s-v", "closed", 200, &seq), HUB_OK);
	assert_int_equal(
	    registry_auth_failed(reg, "v", "a", "h", "bad_token", 300), HUB_OK);
	assert_int_equal(rev(reg), r);
	assert_int_equal(registry_device_delete(reg, "v"), HUB_OK);
	assert_true(rev(reg) > r);
	registry_close(reg);
}

static void
test_data_version(void **state)
{
	struct tmpdb t;
	struct registry *a = NULL, *b = NULL;
	int64_t v0, v1, v2;

	(void)state;
	tmpdb_make(&t);
	assert_int_equal(registry_open(t.path, &a, NULL, 0), HUB_OK);
	assert_int_equal(registry_open(t.path, &b, NULL, 0), HUB_OK);
	assert_int_equal(registry_data_version(a, &v0), HUB_OK);
	assert_int_equal(registry_data_version(a, &v1), HUB_OK);
	assert_int_equal(v0, v1); /* stable while nobody writes */

	add(b, "x", NULL); /* another connection commits */
	assert_int_equal(registry_data_version(a, &v1), HUB_OK);
	assert_true(v1 != v0);
	/* and a sees the new device right away */
	assert_int_equal(device_count(a, 0), 1);

	assert_int_equal(registry_device_set_disabled(b, "x", 1), HUB_OK);
	assert_int_equal(registry_data_version(a, &v2), HUB_OK);
	assert_true(v2 != v1);
	registry_close(a);
	registry_close(b);
	tmpdb_remove(&t);
}

/* ---- scale ------------------------------------------------------------ */

#define BIG_N 100000

static void
count_import(void *arg, const char *id, const char *token)
{
	struct imported *im = arg;

	/* keep one token to check with */
	if (!strcmp(id, "dev-77777"))
		snprintf(im->tokens[0], sizeof(im->tokens[0]), "%s", token);
	im->n++;
}

static void
test_creds_100k(void **state)
{
	struct registry *reg = open_mem();
	struct registry_creds *c = NULL;
	struct imported im = {0};
	struct mallinfo2 m0, m1;
	size_t cap = (size_t)BIG_N * 16, len = 0, bad = 0;
	char *text = malloc(cap);
	uint64_t t0, t1, t2;
	size_t grown;
	int i;

	(void)state;
	assert_non_null(text);
	for (i = 0; i < BIG_N; i++)
		len += (size_t)snprintf(text + len, cap - len, "dev-%05d\n", i);
	t0 = hub_clock_mono_us();
	assert_int_equal(
	    registry_device_import(reg, text, len, count_import, &im, &bad),
	    HUB_OK);
	free(text);
	assert_int_equal(im.n, BIG_N);

	t1 = hub_clock_mono_us();
	m0 = mallinfo2();
	assert_int_equal(registry_creds_load(reg, &c), HUB_OK);
	m1 = mallinfo2();
	t2 = hub_clock_mono_us();
	assert_int_equal(registry_creds_count(c), BIG_N);
	grown = m1.uordblks > m0.uordblks ? m1.uordblks - m0.uordblks : 0;
	/* 0 under ASan, whose allocator mallinfo2 does not see */
	assert_true(grown < 20u * 1024 * 1024);
	print_message("    100k: import %.2f s, creds load %.0f ms, %.1f MB\n",
		      (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e3,
		      (double)grown / (1024.0 * 1024.0));

	assert_int_equal(registry_creds_check(c, "dev-77777", im.tokens[0],
					      strlen(im.tokens[0])),
			 HUB_OK);
	assert_int_equal(registry_creds_check(c, "dev-77778", im.tokens[0],
					      strlen(im.tokens[0])),
			 HUB_ERR_AUTH);
	assert_int_equal(registry_creds_check(c, "dev-100000", im.tokens[0],
					      strlen(im.tokens[0])),
			 HUB_ERR_AUTH);
	for (i = 0; i < BIG_N; i += 997) {
		char id[16];

		snprintf(id, sizeof(id), "dev-%05d", i);
		assert_true(registry_creds_fingerprint(c, id, NULL) != 0);
	}
	registry_creds_free(c);
	registry_close(reg);
}

/* --events-retention: old events go, oldest first, in batches; new stay */
static void
test_events_prune(void **state)
{
	struct registry *reg = open_mem();
	struct evs v = {0};
	int64_t deleted;
	int i;

	(void)state;
	for (i = 0; i < 25; i++)
		assert_int_equal(registry_auth_failed(reg, "d1", "10.0.0.1",
						      "h", "bad_token",
						      1000 + i),
				 HUB_OK);
	for (i = 0; i < 3; i++)
		assert_int_equal(registry_auth_failed(reg, "d1", "10.0.0.1",
						      "h", "bad_token",
						      90000 + i),
				 HUB_OK);
	assert_int_equal(registry_events_prune(reg, 50000, 10, &deleted),
			 HUB_OK);
	assert_int_equal(deleted, 25);
	assert_int_equal(registry_events(reg, NULL, 100, collect_ev, &v),
			 HUB_OK);
	assert_int_equal(v.n, 3);
	assert_int_equal(registry_events_prune(reg, 50000, 10, &deleted),
			 HUB_OK);
	assert_int_equal(deleted, 0);
	assert_int_equal(registry_events_prune(reg, 50000, 0, &deleted),
			 HUB_ERR_INVAL);
	registry_close(reg);
}

/* A signed fleet token's first session on a hub whose registry does not
 * know the device creates its row; the row has no opaque credential. */
static void
test_session_creates_signed_device(void **st)
{
	struct registry *reg = open_mem();
	struct registry_session s = mk_session("fl1", "S1", "hubB", 0, 1000);
	struct registry_creds *c = NULL;
	struct registry_device d;
	char tok[REGISTRY_TOKEN_LEN + 1];
	int64_t seq = 0;
	int disabled = 1;

	(void)st;
	assert_int_equal(registry_device_get(reg, "fl1", &d), HUB_ERR_NOTFOUND);
	/* without the flag an unknown device gets no row */
	s.create_device = 0;
	assert_int_equal(registry_session_open(reg, &s, &seq), HUB_OK);
	assert_int_equal(registry_device_get(reg, "fl1", &d), HUB_ERR_NOTFOUND);
	s = mk_session("fl1", "S2", "hubB", 0, 2000);
	s.create_device = 1;
	assert_int_equal(registry_session_open(reg, &s, &seq), HUB_OK);
	assert_int_equal(registry_device_get(reg, "fl1", &d), HUB_OK);
	assert_true(d.online);
	assert_false(d.disabled);
	/* no token opens it: not the marker, not anything else */
	assert_int_equal(registry_creds_load(reg, &c), HUB_OK);
	assert_int_not_equal(registry_creds_fingerprint(c, "fl1", &disabled),
			     0);
	assert_int_equal(registry_creds_check(c, "fl1", "signed", 6),
			 HUB_ERR_AUTH);
	assert_int_equal(registry_creds_check(c, "fl1", "", 0), HUB_ERR_AUTH);
	registry_creds_free(c);
	/* a known device keeps its row and token */
	assert_int_equal(registry_device_add(reg, "op1", NULL, tok), HUB_OK);
	s = mk_session("op1", "S3", "hubB", 0, 3000);
	s.create_device = 1;
	assert_int_equal(registry_session_open(reg, &s, &seq), HUB_OK);
	assert_int_equal(registry_creds_load(reg, &c), HUB_OK);
	assert_int_equal(registry_creds_check(c, "op1", tok, strlen(tok)),
			 HUB_OK);
	registry_creds_free(c);
	registry_close(reg);
}

static void
grp_count_cb(void *arg, const char *group, int64_t n)
{
	char *out = arg;
	size_t l = strlen(out);

	snprintf(out + l, 256 - l, "%s=%lld;", group, (long long)n);
}

static void
grp_name_cb(void *arg, const char *group)
{
	char *out = arg;
	size_t l = strlen(out);

	snprintf(out + l, 256 - l, "%s;", group);
}

static void
test_groups(void **st)
{
	struct registry *reg = open_mem();
	char tok[REGISTRY_TOKEN_LEN + 1], out[256];
	const char *ab[] = {"a", "b"}, *bad[] = {"a", "nosuch"},
		   *badid[] = {"a/b"};
	struct registry_creds *c = NULL;
	int64_t rev0 = 0, rev1 = 0;
	size_t k = 0, len;
	const char *g;

	(void)st;
	assert_int_equal(registry_device_add(reg, "a", NULL, tok), HUB_OK);
	assert_int_equal(registry_device_add(reg, "b", NULL, tok), HUB_OK);
	assert_int_equal(registry_devices_rev(reg, &rev0), HUB_OK);
	assert_int_equal(registry_group_add(reg, "north", ab, 2, &k), HUB_OK);
	assert_int_equal(registry_group_add(reg, "pumps", ab, 1, &k), HUB_OK);
	/* again: members stay members */
	assert_int_equal(registry_group_add(reg, "north", ab, 2, &k), HUB_OK);
	/* membership changes reload the hubs' snapshots */
	assert_int_equal(registry_devices_rev(reg, &rev1), HUB_OK);
	assert_true(rev1 > rev0);
	/* all or nothing: an unknown id names its index, nothing added */
	assert_int_equal(registry_group_add(reg, "south", bad, 2, &k),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(k, 1);
	assert_int_equal(registry_group_add(reg, "bad group", ab, 1, &k),
			 HUB_ERR_INVAL);
	assert_int_equal(registry_group_add(reg, "g", badid, 1, &k),
			 HUB_ERR_INVAL);
	out[0] = '\0';
	assert_int_equal(registry_group_list(reg, grp_count_cb, out), HUB_OK);
	assert_string_equal(out, "north=2;pumps=1;");
	out[0] = '\0';
	assert_int_equal(registry_device_groups(reg, "a", grp_name_cb, out),
			 HUB_OK);
	assert_string_equal(out, "north;pumps;");
	/* the snapshot carries them */
	assert_int_equal(registry_creds_load(reg, &c), HUB_OK);
	g = registry_creds_groups(c, "a", &len);
	assert_non_null(g);
	assert_int_equal(len, 11);
	assert_memory_equal(g, "north,pumps", 11);
	assert_null(registry_creds_groups(c, "zz", &len));
	assert_int_equal(len, 0);
	registry_creds_free(c);
	/* remove counts what it removed; delete drops memberships */
	assert_int_equal(registry_group_remove(reg, "north", ab, 2, &k),
			 HUB_OK);
	assert_int_equal(k, 2);
	assert_int_equal(registry_group_remove(reg, "north", ab, 2, &k),
			 HUB_OK);
	assert_int_equal(k, 0);
	assert_int_equal(registry_device_delete(reg, "a"), HUB_OK);
	out[0] = '\0';
	assert_int_equal(registry_group_list(reg, grp_count_cb, out), HUB_OK);
	assert_string_equal(out, "");
	registry_close(reg);
}

/* ---- the status outbox ---------------------------------------------- */

struct pending_seen {
	int n;
	struct registry_status last;
};

static void
collect_pending(void *arg, const struct registry_status *st)
{
	struct pending_seen *p = arg;

	p->n++;
	p->last = *st;
}

static int64_t
outbox_pending_of(struct registry *reg, const char *device)
{
	sqlite3_stmt *s;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(reg->db,
					    "SELECT pending FROM status_outbox "
					    "WHERE device = ?1",
					    -1, &s, NULL),
			 SQLITE_OK);
	sqlite3_bind_text(s, 1, device, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static void
test_status_outbox(void **state)
{
	struct registry *reg = open_mem();
	struct registry_status st;
	struct pending_seen seen;
	int stored = -1, again = -1;
	int64_t n = -1;

	/* a row only moves to a newer seq */
	assert_int_equal(
	    registry_outbox_put(reg, "d1", 5, "{\"s\":5}", "hubA", 0, &stored),
	    HUB_OK);
	assert_int_equal(stored, 1);
	assert_int_equal(
	    registry_outbox_put(reg, "d1", 4, "{\"s\":4}", "hubA", 0, &stored),
	    HUB_OK);
	assert_int_equal(stored, 0);
	assert_int_equal(
	    registry_outbox_put(reg, "d1", 5, "{\"s\":5}", "hubA", 0, &stored),
	    HUB_OK);
	assert_int_equal(stored, 0);
	/* worker 1 writes the newer status (the device moved there) */
	assert_int_equal(
	    registry_outbox_put(reg, "d1", 6, "{\"s\":6}", "hubA", 1, &stored),
	    HUB_OK);
	assert_int_equal(stored, 1);
	assert_int_equal(registry_outbox_count(reg, "hubA", 1, &n), HUB_OK);
	assert_int_equal(n, 1);

	/* worker 1's PUBACK of 6 clears it */
	assert_int_equal(
	    registry_outbox_acked(reg, "d1", 6, "hubA", 1, &st, &again),
	    HUB_OK);
	assert_int_equal(again, 0);
	assert_int_equal(outbox_pending_of(reg, "d1"), 0);
	/* then worker 0's PUBACK of 5 lands: 6 may have arrived before it,
	 * so worker 0 claims 6 and publishes it again */
	assert_int_equal(
	    registry_outbox_acked(reg, "d1", 5, "hubA", 0, &st, &again),
	    HUB_OK);
	assert_int_equal(again, 1);
	assert_string_equal(st.device, "d1");
	assert_int_equal(st.seq, 6);
	assert_string_equal(st.payload, "{\"s\":6}");
	assert_int_equal(outbox_pending_of(reg, "d1"), 1);
	assert_int_equal(registry_outbox_count(reg, "hubA", 0, &n), HUB_OK);
	assert_int_equal(n, 1);
	/* its PUBACK clears it; a repeated old PUBACK claims it again */
	assert_int_equal(
	    registry_outbox_acked(reg, "d1", 6, "hubA", 0, &st, &again),
	    HUB_OK);
	assert_int_equal(again, 0);
	assert_int_equal(outbox_pending_of(reg, "d1"), 0);

	/* a newer status pending on the same worker is already queued behind
	 * the acknowledged one: nothing to publish again */
	assert_int_equal(
	    registry_outbox_put(reg, "d1", 7, "{\"s\":7}", "hubA", 0, &stored),
	    HUB_OK);
	assert_int_equal(
	    registry_outbox_acked(reg, "d1", 6, "hubA", 0, &st, &again),
	    HUB_OK);
	assert_int_equal(again, 0);
	assert_int_equal(outbox_pending_of(reg, "d1"), 1);
	/* but pending on another hub's worker 0: claimed */
	assert_int_equal(
	    registry_outbox_acked(reg, "d1", 6, "hubB", 0, &st, &again),
	    HUB_OK);
	assert_int_equal(again, 1);
	assert_int_equal(st.seq, 7);

	/* a PUBACK of a seq newer than the row, or of an unknown device:
	 * nothing */
	assert_int_equal(
	    registry_outbox_acked(reg, "d1", 99, "hubA", 0, &st, &again),
	    HUB_OK);
	assert_int_equal(again, 0);
	assert_int_equal(
	    registry_outbox_acked(reg, "zz", 1, "hubA", 0, &st, &again),
	    HUB_OK);
	assert_int_equal(again, 0);

	/* a start claims the pending rows it owns, and (worker 0) those of
	 * workers past the configured count */
	assert_int_equal(
	    registry_outbox_put(reg, "d2", 3, "{\"s\":3}", "hubA", 5, &stored),
	    HUB_OK);
	assert_int_equal(
	    registry_outbox_put(reg, "d3", 3, "{\"s\":3}", "hubA", 1, &stored),
	    HUB_OK);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(
	    registry_outbox_pending(reg, "hubA", 0, 2, collect_pending, &seen),
	    HUB_OK);
	assert_int_equal(seen.n, 1); /* d2 of worker 5; d1 is hubB's now */
	assert_string_equal(seen.last.device, "d2");
	assert_int_equal(registry_outbox_count(reg, "hubA", 0, &n), HUB_OK);
	assert_int_equal(n, 1);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(
	    registry_outbox_pending(reg, "hubA", 1, -1, collect_pending, &seen),
	    HUB_OK);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.last.device, "d3");

	/* arguments */
	assert_int_equal(
	    registry_outbox_put(reg, "bad id", 1, "{}", "hubA", 0, &stored),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    registry_outbox_put(reg, "d1", 0, "{}", "hubA", 0, &stored),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    registry_outbox_put(reg, "d1", 9, NULL, "hubA", 0, &stored),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    registry_outbox_put(reg, "d1", 9, "{}", "", 0, &stored),
	    HUB_ERR_INVAL);
	registry_close(reg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_migrations),
	    cmocka_unit_test(test_session_creates_signed_device),
	    cmocka_unit_test(test_groups),
	    cmocka_unit_test(test_wal_mode),
	    cmocka_unit_test(test_open_bad_path),
	    cmocka_unit_test(test_device_add_get_list),
	    cmocka_unit_test(test_device_disable_delete),
	    cmocka_unit_test(test_import),
	    cmocka_unit_test(test_import_all_or_nothing),
	    cmocka_unit_test(test_token_hash_verify),
	    cmocka_unit_test(test_creds_check),
	    cmocka_unit_test(test_rotate),
	    cmocka_unit_test(test_creds_disabled_deleted),
	    cmocka_unit_test(test_session_seq),
	    cmocka_unit_test(test_session_close_errors),
	    cmocka_unit_test(test_session_deleted_device),
	    cmocka_unit_test(test_group_commit),
	    cmocka_unit_test(test_events),
	    cmocka_unit_test(test_events_prune),
	    cmocka_unit_test(test_repair),
	    cmocka_unit_test(test_repair_superseded),
	    cmocka_unit_test(test_status_outbox),
	    cmocka_unit_test(test_session_superseded),
	    cmocka_unit_test(test_downlink_dropped_event),
	    cmocka_unit_test(test_creds_refresh_retries_after_failure),
	    cmocka_unit_test(test_devices_rev),
	    cmocka_unit_test(test_data_version),
	    cmocka_unit_test(test_creds_100k),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
