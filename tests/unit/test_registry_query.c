/*
 * test_registry_query.c - unit tests of devices/query.c, the read-only
 * registry queries behind the ops API: no file -> NOTFOUND and nothing
 * created; filters (online, substring of id or name, case-insensitive,
 * LIKE wildcards taken literally); paging by id and by event seq; one
 * device with its open session; a device's groups (none, a few in name
 * order, more than REGISTRY_QUERY_GROUPS: the first by name and the
 * count; a registry from before groups existed); counts; bad arguments;
 * and a writer committing beside an open query connection.
 *
 * Single-threaded; cmocka; a temp file written through registry.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "registry.h"
#include "registry_query.h"

struct fixture {
	char path[64];
	struct registry *reg;
	struct registry_query *q;
};

static void
add(struct registry *reg, const char *id, const char *name)
{
	char tok[REGISTRY_TOKEN_LEN + 1];

	assert_int_equal(registry_device_add(reg, id, name, tok), HUB_OK);
}

static void
open_session(struct registry *reg, const char *dev, const char *sess,
	     int64_t ts)
{
	struct registry_session s;
	int64_t seq;

	memset(&s, 0, sizeof(s));
	snprintf(s.device, sizeof(s.device), "%s", dev);
	snprintf(s.session, sizeof(s.session), "%s", sess);
	snprintf(s.hub, sizeof(s.hub), "h1");
	snprintf(s.addr, sizeof(s.addr), "10.0.0.7");
	s.ts = ts;
	assert_int_equal(registry_session_open(reg, &s, &seq), HUB_OK);
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];
	int64_t seq;
	int fd;

	snprintf(f->path, sizeof(f->path), "/tmp/test_rq_XXXXXX");
	fd = mkstemp(f->path);
	assert_true(fd >= 0);
	close(fd);
	unlink(f->path);
	assert_int_equal(registry_open(f->path, &f->reg, err, sizeof(err)),
			 HUB_OK);
	add(f->reg, "alpha", "Boiler room");
	add(f->reg, "beta", "pump");
	add(f->reg, "gamma_1", "boiler annex");
	add(f->reg, "delta", "50% tank");
	add(f->reg, "epsilon", NULL);
	open_session(f->reg, "beta", "s-beta-1", 1000);
	assert_int_equal(
	    registry_session_close(f->reg, "s-beta-1", "closed", 2000, &seq),
	    HUB_OK);
	open_session(f->reg, "beta", "s-beta-2", 3000);
	open_session(f->reg, "delta", "s-delta-1", 4000);
	assert_int_equal(registry_query_open(f->path, &f->q, err, sizeof(err)),
			 HUB_OK);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	registry_query_close(f->q);
	registry_close(f->reg);
	unlink(f->path);
	free(f);
	return 0;
}

struct ids {
	char buf[512];
	int n;
	int64_t since[16];
};

static void
collect(void *arg, const struct registry_query_device *d)
{
	struct ids *ids = arg;

	if (ids->n < 16)
		ids->since[ids->n] = d->since;
	ids->n++;
	strncat(ids->buf, d->d.id, sizeof(ids->buf) - strlen(ids->buf) - 2);
	strncat(ids->buf, " ", sizeof(ids->buf) - strlen(ids->buf) - 1);
}

static const char *
list(struct registry_query *q, int online, const char *s, const char *after,
     int limit, int *more)
{
	static struct ids ids;
	struct registry_query_filter f = {online, s, after, limit};

	memset(&ids, 0, sizeof(ids));
	assert_int_equal(registry_query_devices(q, &f, collect, &ids, more),
			 HUB_OK);
	return ids.buf;
}

static void
test_missing_file(void **state)
{
	struct registry_query *q = (void *)1;
	struct stat st;
	char err[256];

	(void)state;
	assert_int_equal(registry_query_open("/tmp/no/such/registry.db", &q,
					     err, sizeof(err)),
			 HUB_ERR_NOTFOUND);
	assert_null(q);
	assert_int_not_equal(stat("/tmp/no/such", &st), 0);
}

static void
test_filters(void **state)
{
	struct fixture *f = *state;
	int more;

	assert_string_equal(list(f->q, -1, NULL, NULL, 50, &more),
			    "alpha beta delta epsilon gamma_1 ");
	assert_false(more);
	assert_string_equal(list(f->q, 1, NULL, NULL, 50, &more),
			    "beta delta ");
	assert_string_equal(list(f->q, 0, NULL, NULL, 50, &more),
			    "alpha epsilon gamma_1 ");
	/* substring of id or name, any case */
	assert_string_equal(list(f->q, -1, "BOILER", NULL, 50, &more),
			    "alpha gamma_1 ");
	assert_string_equal(list(f->q, -1, "eta", NULL, 50, &more), "beta ");
	/* LIKE wildcards are plain characters */
	assert_string_equal(list(f->q, -1, "%", NULL, 50, &more), "delta ");
	assert_string_equal(list(f->q, -1, "_", NULL, 50, &more), "gamma_1 ");
	assert_string_equal(list(f->q, 1, "boiler", NULL, 50, &more), "");
}

static void
test_paging(void **state)
{
	struct fixture *f = *state;
	int more;

	assert_string_equal(list(f->q, -1, NULL, NULL, 2, &more),
			    "alpha beta ");
	assert_true(more);
	assert_string_equal(list(f->q, -1, NULL, "beta", 2, &more),
			    "delta epsilon ");
	assert_true(more);
	assert_string_equal(list(f->q, -1, NULL, "epsilon", 2, &more),
			    "gamma_1 ");
	assert_false(more);
	/* exactly a page: no "more" */
	assert_string_equal(list(f->q, 1, NULL, NULL, 2, &more), "beta delta ");
	assert_false(more);
}

static void
test_device(void **state)
{
	struct fixture *f = *state;
	struct registry_query_device d;

	assert_int_equal(registry_query_device(f->q, "beta", &d), HUB_OK);
	assert_true(d.d.online);
	assert_int_equal(d.since, 3000);
	assert_string_equal(d.d.session, "s-beta-2");
	assert_string_equal(d.d.addr, "10.0.0.7");
	assert_string_equal(d.d.name, "pump");
	assert_int_equal(registry_query_device(f->q, "alpha", &d), HUB_OK);
	assert_false(d.d.online);
	assert_int_equal(d.since, 0);
	assert_int_equal(registry_query_device(f->q, "nope", &d),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(registry_query_device(f->q, "bad id", &d),
			 HUB_ERR_INVAL);
}

static void
group_add(struct registry *reg, const char *group, const char *id)
{
	size_t bad;

	assert_int_equal(registry_group_add(reg, group, &id, 1, &bad), HUB_OK);
}

/* The device's groups as "a b ", then "+N" when truncated. */
static const char *
groups_str(const struct registry_query_device *d)
{
	static char buf[REGISTRY_QUERY_GROUPS * (REGISTRY_GROUP_MAX + 1) + 32];
	size_t n = 0;
	int i;

	buf[0] = '\0';
	for (i = 0; i < d->ngroups; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s ",
				      d->groups[i]);
	if (d->groups_total > d->ngroups)
		snprintf(buf + n, sizeof(buf) - n, "+%lld",
			 (long long)(d->groups_total - d->ngroups));
	return buf;
}

struct grouped {
	char line[8][REGISTRY_QUERY_GROUPS * (REGISTRY_GROUP_MAX + 1) + 128];
	int n;
};

static void
collect_groups(void *arg, const struct registry_query_device *d)
{
	struct grouped *g = arg;

	if (g->n < 8)
		snprintf(g->line[g->n], sizeof(g->line[0]), "%s: %s", d->d.id,
			 groups_str(d));
	g->n++;
}

static void
test_groups(void **state)
{
	struct fixture *f = *state;
	struct registry_query_filter flt = {-1, NULL, NULL, 50};
	struct registry_query_device d;
	char name[REGISTRY_GROUP_MAX + 1], want[128];
	struct grouped g;
	size_t n = 0;
	int more, i;

	/* none */
	assert_int_equal(registry_query_device(f->q, "alpha", &d), HUB_OK);
	assert_int_equal(d.ngroups, 0);
	assert_int_equal(d.groups_total, 0);
	/* a few, listed by name (byte order) whatever the insertion order */
	group_add(f->reg, "zulu", "beta");
	group_add(f->reg, "alpha-team", "beta");
	group_add(f->reg, "Mid_1", "beta");
	group_add(f->reg, "zulu", "delta");
	assert_int_equal(registry_query_device(f->q, "beta", &d), HUB_OK);
	assert_string_equal(groups_str(&d), "Mid_1 alpha-team zulu ");
	assert_int_equal(d.groups_total, 3);
	/* more than the bound: the first REGISTRY_QUERY_GROUPS by name and
	 * the count of all, added last to first */
	for (i = REGISTRY_QUERY_GROUPS + 4; i-- > 0;) {
		snprintf(name, sizeof(name), "g%02d", i);
		group_add(f->reg, name, "gamma_1");
	}
	/* the longest name a group may have fits */
	memset(name, 'x', REGISTRY_GROUP_MAX);
	name[REGISTRY_GROUP_MAX] = '\0';
	group_add(f->reg, name, "epsilon");
	for (i = 0; i < REGISTRY_QUERY_GROUPS; i++)
		n += (size_t)snprintf(want + n, sizeof(want) - n, "g%02d ", i);
	snprintf(want + n, sizeof(want) - n, "+4");
	assert_int_equal(registry_query_device(f->q, "gamma_1", &d), HUB_OK);
	assert_int_equal(d.ngroups, REGISTRY_QUERY_GROUPS);
	assert_int_equal(d.groups_total, REGISTRY_QUERY_GROUPS + 4);
	assert_string_equal(groups_str(&d), want);
	/* the list gives the same, each device with its own */
	memset(&g, 0, sizeof(g));
	assert_int_equal(
	    registry_query_devices(f->q, &flt, collect_groups, &g, &more),
	    HUB_OK);
	assert_int_equal(g.n, 5);
	assert_string_equal(g.line[0], "alpha: ");
	assert_string_equal(g.line[1], "beta: Mid_1 alpha-team zulu ");
	assert_string_equal(g.line[2], "delta: zulu ");
	snprintf(g.line[7], sizeof(g.line[7]), "epsilon: %s ", name);
	assert_string_equal(g.line[3], g.line[7]);
	snprintf(g.line[7], sizeof(g.line[7]), "gamma_1: %s", want);
	assert_string_equal(g.line[4], g.line[7]);
	/* a device deleted with its groups; the others keep theirs */
	assert_int_equal(registry_device_delete(f->reg, "beta"), HUB_OK);
	assert_int_equal(registry_query_device(f->q, "delta", &d), HUB_OK);
	assert_string_equal(groups_str(&d), "zulu ");
}

static void
test_groups_old_schema(void **state)
{
	struct fixture *f = *state;
	struct registry_query_device d;
	struct registry_query *q = NULL;
	sqlite3 *db = NULL;
	char err[256];
	size_t bad;
	const char *id = "beta";

	/* a registry from before schema/003_groups.sql: no device_groups;
	 * its devices read as having none */
	assert_int_equal(registry_group_add(f->reg, "g1", &id, 1, &bad),
			 HUB_OK);
	registry_close(f->reg);
	f->reg = NULL;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "DROP TABLE device_groups;"
				      "PRAGMA user_version = 2",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(registry_query_open(f->path, &q, err, sizeof(err)),
			 HUB_OK);
	assert_int_equal(registry_query_device(q, "beta", &d), HUB_OK);
	assert_true(d.d.online);
	assert_int_equal(d.ngroups, 0);
	assert_int_equal(d.groups_total, 0);
	registry_query_close(q);
}

struct seqs {
	int64_t seq[16];
	char kinds[128];
	int n;
};

static void
collect_ev(void *arg, const struct registry_event *e)
{
	struct seqs *s = arg;

	if (s->n < 16)
		s->seq[s->n] = e->seq;
	s->n++;
	strncat(s->kinds, registry_kind_name(e->kind),
		sizeof(s->kinds) - strlen(s->kinds) - 2);
	strncat(s->kinds, " ", sizeof(s->kinds) - strlen(s->kinds) - 1);
}

static void
test_events(void **state)
{
	struct fixture *f = *state;
	struct seqs s, p;
	int more, i;

	memset(&s, 0, sizeof(s));
	assert_int_equal(
	    registry_query_events(f->q, NULL, 0, 100, collect_ev, &s, &more),
	    HUB_OK);
	assert_int_equal(s.n, 4);
	assert_false(more);
	for (i = 1; i < s.n; i++)
		assert_true(s.seq[i] < s.seq[i - 1]);
	memset(&p, 0, sizeof(p));
	assert_int_equal(
	    registry_query_events(f->q, NULL, 0, 3, collect_ev, &p, &more),
	    HUB_OK);
	assert_int_equal(p.n, 3);
	assert_true(more);
	memset(&p, 0, sizeof(p));
	assert_int_equal(registry_query_events(f->q, NULL, s.seq[2], 3,
					       collect_ev, &p, &more),
			 HUB_OK);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.seq[0], s.seq[3]);
	assert_false(more);
	memset(&p, 0, sizeof(p));
	assert_int_equal(
	    registry_query_events(f->q, "beta", 0, 10, collect_ev, &p, &more),
	    HUB_OK);
	assert_string_equal(p.kinds, "online offline online ");
	assert_int_equal(
	    registry_query_events(f->q, NULL, 0, 0, collect_ev, &p, &more),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    registry_query_events(f->q, NULL, 0, 1001, collect_ev, &p, &more),
	    HUB_ERR_INVAL);
}

static void
test_counts_and_fresh_data(void **state)
{
	struct fixture *f = *state;
	int64_t devices, online;

	assert_int_equal(registry_query_counts(f->q, &devices, &online),
			 HUB_OK);
	assert_int_equal(devices, 5);
	assert_int_equal(online, 2);
	/* the writer's new rows are seen by the next query */
	add(f->reg, "zeta", NULL);
	open_session(f->reg, "zeta", "s-zeta", 5000);
	assert_int_equal(registry_query_counts(f->q, &devices, &online),
			 HUB_OK);
	assert_int_equal(devices, 6);
	assert_int_equal(online, 3);
}

static void
test_writer_beside_reader(void **state)
{
	struct fixture *f = *state;
	int64_t d, o;

	/* the query connection takes no write lock: the writer's
	 * transaction commits while it is open, and the next query sees it */
	assert_int_equal(registry_query_counts(f->q, &d, &o), HUB_OK);
	assert_int_equal(registry_begin(f->reg), HUB_OK);
	add(f->reg, "eta", NULL);
	assert_int_equal(registry_query_counts(f->q, &d, &o), HUB_OK);
	assert_int_equal(d, 5); /* not committed yet */
	assert_int_equal(registry_commit(f->reg), HUB_OK);
	assert_int_equal(registry_query_counts(f->q, &d, &o), HUB_OK);
	assert_int_equal(d, 6);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_missing_file),
	    cmocka_unit_test_setup_teardown(test_filters, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_paging, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_device, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_groups, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_groups_old_schema, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_events, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_counts_and_fresh_data, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_writer_beside_reader, setup,
					    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
