/*
 * hubctl.c - the operators' command-line tool: device admin against the
 * registry file, and kick/send through the MQTT broker.
 *
 *   hubctl [--db FILE] [--broker URI] [--json] COMMAND
 *
 * Design: options may come anywhere (before or after the command words);
 * the command words are collected, then dispatched to one function per
 * command. Registry access goes only through devices/registry.h (no SQL
 * here). kick and send use Paho's synchronous client with MQTT 5 (message
 * expiry for offline commands), connect with a 10 s timeout and wait for
 * the PUBACK of QoS 1. Output: human tables by default, cJSON with --json
 * (lists are streamed, one object per line, so 100k devices need no tree).
 * A new token is printed once and never anywhere else.
 *
 * Exit: 0 success, 1 failed operation, 2 bad usage. Errors are one line on
 * stderr starting "hubctl: ".
 *
 * Threads: one (Paho's sync client runs its network I/O in our calls).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <MQTTClient.h>
#include <cjson/cJSON.h>

#include "hub_err.h"
#include "hub_util.h"
#include "bridge.h"
#include "registry.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define DEFAULT_DB "var/registry.db"
#define DEFAULT_BROKER "tcp://127.0.0.1:1883"
#define DEFAULT_PREFIX "devices"
#define MQTT_TIMEOUT_MS 10000
#define TOPIC_MAX 256		/* relative device topics (DESIGN.md) */
#define IMPORT_MAX (256u << 20) /* bytes of an import file */
#define MAX_POS 8		/* command words */

/* Command options, as bits: each command says which it accepts. */
enum {
	O_NAME = 1 << 0,
	O_ONLINE = 1 << 1,
	O_DEVICE = 1 << 2,
	O_LIMIT = 1 << 3,
	O_QOS = 1 << 4,
	O_RETAIN = 1 << 5,
	O_TTL = 1 << 6,
};

struct opts {
	const char *db, *broker, *user, *password, *prefix;
	int json;
	const char *name, *device;
	long limit, qos;
	long long ttl;
	int online, retain;
	unsigned seen; /* O_* given */
	const char *pos[MAX_POS];
	int npos;
};

static const char usage_line[] =
    "usage: hubctl [--db FILE] [--broker URI] [--json] COMMAND "
    "(hubctl --help for the commands)\n";

static const char usage_text[] =
    "usage: hubctl [--db FILE] [--broker URI] [--json] COMMAND\n"
    "\n"
    "commands:\n"
    "  device add ID [--name N]     add a device; prints its token\n"
    "  device import FILE           ids one per line (or id,name; - = "
    "stdin);\n"
    "                               prints id,token lines; all or nothing\n"
    "  device list [--online]       the devices\n"
    "  device show ID               one device and its live session\n"
    "  device disable ID | enable ID | delete ID\n"
    "  device rotate-token ID       a new token; the old one stops "
    "working\n"
    "  events [--device ID] [--limit N]   newest first (default 100)\n"
    "  kick ID                      close the device's live session (4004)\n"
    "  send ID TOPIC PAYLOAD [--qos 0|1] [--retain --ttl SECS]\n"
    "                               publish PREFIX/ID/cmd/TOPIC; --retain\n"
    "                               keeps it for an offline device for "
    "SECS\n"
    "\n"
    "options:\n"
    "  --db FILE                    registry file (default " DEFAULT_DB ")\n"
    "  --broker URI                 MQTT broker (default " DEFAULT_BROKER ")\n"
    "  --broker-user U, --broker-password P   broker credentials\n"
    "  --prefix P                   MQTT topic prefix (default " DEFAULT_PREFIX
    ")\n"
    "  --json                       JSON output\n"
    "  -h, --help                   this text\n"
    "\n"
    "exit status: 0 success, 1 failed operation, 2 bad usage\n";

/* ---- messages --------------------------------------------------------- */

static void
errf(const char *fmt, ...)
{
	va_list ap;

	fputs("hubctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int
usage_err(const char *fmt, ...)
{
	va_list ap;

	fputs("hubctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fputs(usage_line, stderr);
	return EXIT_USAGE;
}

/* A registry failure: one line, exit code by kind. */
static int
reg_fail(struct registry *reg, const char *what, const char *id, int err)
{
	switch (err) {
	case HUB_ERR_NOTFOUND:
		errf("no such device: %s", id);
		return EXIT_FAIL;
	case HUB_ERR_EXISTS:
		errf("device already exists: %s", id);
		return EXIT_FAIL;
	case HUB_ERR_INVAL:
		return usage_err("%s: invalid argument", what);
	default:
		errf("%s: %s (%s)", what, hub_strerror(err),
		     registry_errmsg(reg));
		return EXIT_FAIL;
	}
}

/* ---- argument parsing ------------------------------------------------- */

static int
parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int
parse_ll(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

enum { A_NONE, A_VALUE };

struct optdef {
	const char *name;
	int arg;
	int id;
};

enum {
	OPT_DB,
	OPT_BROKER,
	OPT_USER,
	OPT_PASSWORD,
	OPT_PREFIX,
	OPT_JSON,
	OPT_HELP,
	OPT_NAME,
	OPT_ONLINE,
	OPT_DEVICE,
	OPT_LIMIT,
	OPT_QOS,
	OPT_RETAIN,
	OPT_TTL,
};

static const struct optdef optdefs[] = {
    {"db", A_VALUE, OPT_DB},
    {"broker", A_VALUE, OPT_BROKER},
    {"broker-user", A_VALUE, OPT_USER},
    {"broker-password", A_VALUE, OPT_PASSWORD},
    {"prefix", A_VALUE, OPT_PREFIX},
    {"json", A_NONE, OPT_JSON},
    {"help", A_NONE, OPT_HELP},
    {"name", A_VALUE, OPT_NAME},
    {"online", A_NONE, OPT_ONLINE},
    {"device", A_VALUE, OPT_DEVICE},
    {"limit", A_VALUE, OPT_LIMIT},
    {"qos", A_VALUE, OPT_QOS},
    {"retain", A_NONE, OPT_RETAIN},
    {"ttl", A_VALUE, OPT_TTL},
};

/* One option; returns 0, EXIT_USAGE, or -1 for --help. */
static int
set_opt(struct opts *o, const struct optdef *d, const char *v)
{
	switch (d->id) {
	case OPT_DB:
		o->db = v;
		break;
	case OPT_BROKER:
		o->broker = v;
		break;
	case OPT_USER:
		o->user = v;
		break;
	case OPT_PASSWORD:
		o->password = v;
		break;
	case OPT_PREFIX:
		o->prefix = v;
		break;
	case OPT_JSON:
		o->json = 1;
		break;
	case OPT_HELP:
		return -1;
	case OPT_NAME:
		o->name = v;
		o->seen |= O_NAME;
		break;
	case OPT_ONLINE:
		o->online = 1;
		o->seen |= O_ONLINE;
		break;
	case OPT_DEVICE:
		o->device = v;
		o->seen |= O_DEVICE;
		break;
	case OPT_LIMIT:
		if (parse_long(v, 1, 1000000, &o->limit))
			return usage_err("--limit wants 1..1000000, not '%s'",
					 v);
		o->seen |= O_LIMIT;
		break;
	case OPT_QOS:
		if (parse_long(v, 0, 1, &o->qos))
			return usage_err("--qos wants 0 or 1, not '%s'", v);
		o->seen |= O_QOS;
		break;
	case OPT_RETAIN:
		o->retain = 1;
		o->seen |= O_RETAIN;
		break;
	case OPT_TTL:
		if (parse_ll(v, 1, UINT32_MAX, &o->ttl))
			return usage_err("--ttl wants seconds, 1..%" PRIu32
					 ", not '%s'",
					 UINT32_MAX, v);
		o->seen |= O_TTL;
		break;
	}
	return 0;
}

/* Parses argv into o; 0, EXIT_USAGE, or -1 for --help. */
static int
parse_args(int argc, char **argv, struct opts *o)
{
	int i, only_pos = 0;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL, *eq;
		const struct optdef *d = NULL;
		size_t n, k;
		int rc;

		if (only_pos || a[0] != '-' || !strcmp(a, "-")) {
			if (o->npos == MAX_POS)
				return usage_err("too many arguments");
			o->pos[o->npos++] = a;
			continue;
		}
		if (!strcmp(a, "--")) {
			only_pos = 1;
			continue;
		}
		if (!strcmp(a, "-h"))
			return -1;
		if (a[1] != '-')
			return usage_err("unknown option: %s", a);
		a += 2;
		eq = strchr(a, '=');
		n = eq ? (size_t)(eq - a) : strlen(a);
		for (k = 0; k < sizeof(optdefs) / sizeof(optdefs[0]); k++)
			if (strlen(optdefs[k].name) == n &&
			    !strncmp(optdefs[k].name, a, n))
				d = &optdefs[k];
		if (!d)
			return usage_err("unknown option: %s", argv[i]);
		if (d->arg == A_VALUE) {
			if (eq)
				val = eq + 1;
			else if (i + 1 < argc)
				val = argv[++i];
			else
				return usage_err("option --%s needs a value",
						 d->name);
		} else if (eq) {
			return usage_err("option --%s takes no value", d->name);
		}
		rc = set_opt(o, d, val);
		if (rc)
			return rc;
	}
	return 0;
}

/* Checks the command word count and that only allowed options came. */
static int
check_cmd(const struct opts *o, const char *cmd, int nargs, unsigned allowed)
{
	static const char *const names[] = {"--name",  "--online", "--device",
					    "--limit", "--qos",	   "--retain",
					    "--ttl"};
	unsigned bad = o->seen & ~allowed;
	int i;

	if (bad) {
		for (i = 0; !(bad & (1u << i)); i++)
			;
		return usage_err("%s does not take %s", cmd, names[i]);
	}
	if (o->npos < nargs)
		return usage_err("%s: missing arguments", cmd);
	if (o->npos > nargs)
		return usage_err("%s: unexpected argument '%s'", cmd,
				 o->pos[nargs]);
	return 0;
}

static int
check_id(const char *id)
{
	if (!hub_id_valid(id, strnlen(id, HUB_ID_MAX + 1)))
		return usage_err("invalid device id '%s' (want "
				 "[A-Za-z0-9_-]{1,%d})",
				 id, HUB_ID_MAX);
	return 0;
}

/* ---- output helpers --------------------------------------------------- */

/* ISO-8601 UTC with ms, or "-" for 0. */
static const char *
iso_time(int64_t ms, char *buf, size_t len)
{
	struct tm tm;
	time_t s;
	size_t n;

	if (ms <= 0)
		return "-";
	s = (time_t)(ms / 1000);
	if (!gmtime_r(&s, &tm))
		return "-";
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03dZ", (int)(ms % 1000));
	return buf;
}

/* Exact int64 (cJSON numbers are doubles). */
static void
json_int(cJSON *o, const char *key, int64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	cJSON_AddRawToObject(o, key, buf);
}

/* A string, or null when empty. */
static void
json_str_opt(cJSON *o, const char *key, const char *v)
{
	if (v && *v)
		cJSON_AddStringToObject(o, key, v);
	else
		cJSON_AddNullToObject(o, key);
}

/* Prints and frees obj. */
static void
json_print(cJSON *obj)
{
	char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;

	if (s)
		printf("%s\n", s);
	else
		errf("out of memory");
	cJSON_free(s);
	cJSON_Delete(obj);
}

/* A JSON array streamed one element per line. */
struct jarray {
	long n;
};

static void
jarray_add(struct jarray *ja, cJSON *obj)
{
	char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;

	if (s) {
		printf("%s%s", ja->n ? ",\n" : "[\n", s);
		ja->n++;
	}
	cJSON_free(s);
	cJSON_Delete(obj);
}

static void
jarray_end(struct jarray *ja)
{
	puts(ja->n ? "\n]" : "[]");
}

static cJSON *
id_token_json(const char *id, const char *token)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "id", id);
	cJSON_AddStringToObject(o, "token", token);
	return o;
}

/* ---- registry --------------------------------------------------------- */

/* mkdir -p of the directory holding path, so a fresh checkout works. */
static void
make_parent(const char *path)
{
	char dir[4096];
	size_t n;
	char *p;

	n = strnlen(path, sizeof(dir));
	if (n >= sizeof(dir) || !strchr(path, '/'))
		return;
	memcpy(dir, path, n + 1);
	p = strrchr(dir, '/');
	*p = '\0';
	for (p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(dir, 0750);
		*p = '/';
	}
	if (dir[0])
		mkdir(dir, 0750);
}

static int
open_db(const struct opts *o, struct registry **reg)
{
	char err[512];
	int rc;

	if (strcmp(o->db, ":memory:"))
		make_parent(o->db);
	rc = registry_open(o->db, reg, err, sizeof(err));
	if (rc != HUB_OK) {
		errf("cannot open registry %s", err);
		return EXIT_FAIL;
	}
	return 0;
}

static int
cmd_add(const struct opts *o, struct registry *reg, const char *id)
{
	char token[REGISTRY_TOKEN_LEN + 1];
	int rc;

	if (o->name && strlen(o->name) > REGISTRY_NAME_MAX)
		return usage_err("--name is longer than %d bytes",
				 REGISTRY_NAME_MAX);
	rc = registry_device_add(reg, id, o->name, token);
	if (rc != HUB_OK)
		return reg_fail(reg, "device add", id, rc);
	if (o->json)
		json_print(id_token_json(id, token));
	else
		printf("%s\n", token);
	return 0;
}

struct import_out {
	int json;
	struct jarray ja;
};

static void
import_cb(void *arg, const char *id, const char *token)
{
	struct import_out *io = arg;

	if (io->json)
		jarray_add(&io->ja, id_token_json(id, token));
	else
		printf("%s,%s\n", id, token);
}

/* Reads all of path ("-" = stdin) into *buf. */
static int
read_all(const char *path, char **buf, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	size_t cap = 0, n = 0, got;
	char *b = NULL, *nb;
	int rc = EXIT_FAIL;

	if (!f) {
		errf("cannot read %s: %s", path, strerror(errno));
		return EXIT_FAIL;
	}
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			if (cap > IMPORT_MAX) {
				errf("%s: larger than %u MB", path,
				     IMPORT_MAX >> 20);
				goto out;
			}
			nb = realloc(b, cap);
			if (!nb) {
				errf("out of memory");
				goto out;
			}
			b = nb;
		}
		got = fread(b + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		errf("cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	*buf = b;
	*len = n;
	b = NULL;
	rc = 0;
out:
	free(b);
	if (f != stdin)
		fclose(f);
	return rc;
}

static int
cmd_import(const struct opts *o, struct registry *reg, const char *path)
{
	struct import_out io = {.json = o->json};
	size_t len = 0, bad = 0;
	char *text = NULL;
	int rc;

	rc = read_all(path, &text, &len);
	if (rc)
		return rc;
	rc = registry_device_import(reg, text, len, import_cb, &io, &bad);
	free(text);
	if (rc == HUB_OK) {
		if (o->json)
			jarray_end(&io.ja);
		return 0;
	}
	if (bad) {
		errf("%s:%zu: %s; nothing imported", path, bad,
		     rc == HUB_ERR_EXISTS  ? "device already exists"
		     : rc == HUB_ERR_INVAL ? "invalid line (want ID or ID,NAME)"
					   : hub_strerror(rc));
		return EXIT_FAIL;
	}
	errf("device import: %s (%s)", hub_strerror(rc), registry_errmsg(reg));
	return EXIT_FAIL;
}

struct list_out {
	int json;
	long n;
	struct jarray ja;
};

static void
list_cb(void *arg, const struct registry_device *d)
{
	struct list_out *lo = arg;
	char t[40];

	if (lo->json) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "id", d->id);
		cJSON_AddStringToObject(o, "name", d->name);
		cJSON_AddBoolToObject(o, "disabled", d->disabled);
		cJSON_AddBoolToObject(o, "online", d->online);
		if (d->last_seen > 0)
			json_int(o, "last_seen", d->last_seen);
		else
			cJSON_AddNullToObject(o, "last_seen");
		jarray_add(&lo->ja, o);
		return;
	}
	if (lo->n++ == 0)
		printf("%-24s %-20s %-8s %-6s %s\n", "ID", "NAME", "DISABLED",
		       "ONLINE", "LAST_SEEN");
	printf("%-24s %-20s %-8s %-6s %s\n", d->id, d->name[0] ? d->name : "-",
	       d->disabled ? "yes" : "no", d->online ? "yes" : "no",
	       iso_time(d->last_seen, t, sizeof(t)));
}

static int
cmd_list(const struct opts *o, struct registry *reg)
{
	struct list_out lo = {.json = o->json};
	int rc;

	rc = registry_device_list(reg, o->online, list_cb, &lo);
	if (rc != HUB_OK)
		return reg_fail(reg, "device list", "", rc);
	if (o->json)
		jarray_end(&lo.ja);
	else if (lo.n == 0)
		printf("%-24s %-20s %-8s %-6s %s\n", "ID", "NAME", "DISABLED",
		       "ONLINE", "LAST_SEEN");
	return 0;
}

/* The newest downlink_dropped event among a device's recent events. */
static void
find_drop(void *arg, const struct registry_event *e)
{
	struct registry_event *out = arg;

	if (e->kind == REGISTRY_DOWNLINK_DROPPED && !out->seq)
		*out = *e;
}

static int
cmd_show(const struct opts *o, struct registry *reg, const char *id)
{
	struct registry_device d;
	struct registry_event drop;
	char t1[40], t2[40];
	int rc;

	rc = registry_device_get(reg, id, &d);
	if (rc != HUB_OK)
		return reg_fail(reg, "device show", id, rc);
	memset(&drop, 0, sizeof(drop));
	registry_events(reg, id, 1000, find_drop, &drop);
	if (o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "id", d.id);
		cJSON_AddStringToObject(j, "name", d.name);
		cJSON_AddBoolToObject(j, "disabled", d.disabled);
		cJSON_AddBoolToObject(j, "online", d.online);
		if (d.last_seen > 0)
			json_int(j, "last_seen", d.last_seen);
		else
			cJSON_AddNullToObject(j, "last_seen");
		json_int(j, "created", d.created);
		json_str_opt(j, "session", d.session);
		json_str_opt(j, "hub", d.hub);
		json_str_opt(j, "addr", d.addr);
		if (drop.seq) {
			cJSON *x =
			    cJSON_AddObjectToObject(j, "downlink_dropped");

			json_int(x, "ts", drop.ts);
			cJSON_AddStringToObject(x, "reason", drop.reason);
			json_str_opt(x, "session", drop.session);
		} else
			cJSON_AddNullToObject(j, "downlink_dropped");
		json_print(j);
		return 0;
	}
	printf("id:        %s\n", d.id);
	printf("name:      %s\n", d.name[0] ? d.name : "-");
	printf("disabled:  %s\n", d.disabled ? "yes" : "no");
	printf("online:    %s\n", d.online ? "yes" : "no");
	printf("created:   %s\n", iso_time(d.created, t1, sizeof(t1)));
	printf("last_seen: %s\n", iso_time(d.last_seen, t2, sizeof(t2)));
	printf("session:   %s\n", d.session[0] ? d.session : "-");
	printf("hub:       %s\n", d.hub[0] ? d.hub : "-");
	printf("addr:      %s\n", d.addr[0] ? d.addr : "-");
	if (drop.seq)
		printf("dropped:   %s %s (session %s)\n",
		       iso_time(drop.ts, t1, sizeof(t1)), drop.reason,
		       drop.session[0] ? drop.session : "-");
	return 0;
}

static int
cmd_set_disabled(const struct opts *o, struct registry *reg, const char *id,
		 int disabled)
{
	int rc = registry_device_set_disabled(reg, id, disabled);

	if (rc != HUB_OK)
		return reg_fail(
		    reg, disabled ? "device disable" : "device enable", id, rc);
	if (o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "id", id);
		cJSON_AddBoolToObject(j, "disabled", disabled);
		json_print(j);
	}
	return 0;
}

static int
cmd_delete(const struct opts *o, struct registry *reg, const char *id)
{
	int rc = registry_device_delete(reg, id);

	if (rc != HUB_OK)
		return reg_fail(reg, "device delete", id, rc);
	if (o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "id", id);
		cJSON_AddBoolToObject(j, "deleted", 1);
		json_print(j);
	}
	return 0;
}

static int
cmd_rotate(const struct opts *o, struct registry *reg, const char *id)
{
	char token[REGISTRY_TOKEN_LEN + 1];
	int rc = registry_device_rotate(reg, id, token);

	if (rc != HUB_OK)
		return reg_fail(reg, "device rotate-token", id, rc);
	if (o->json)
		json_print(id_token_json(id, token));
	else
		printf("%s\n", token);
	return 0;
}

struct events_out {
	int json;
	long n;
	struct jarray ja;
};

#define EVENTS_FMT "%-8s %-24s %-20s %-11s %-11s %-20s %-16s %s\n"

static void
events_cb(void *arg, const struct registry_event *e)
{
	struct events_out *eo = arg;
	char seq[24], t[40];

	if (eo->json) {
		cJSON *o = cJSON_CreateObject();

		json_int(o, "seq", e->seq);
		cJSON_AddStringToObject(o, "device", e->device);
		cJSON_AddStringToObject(o, "kind", registry_kind_name(e->kind));
		json_str_opt(o, "reason", e->reason);
		json_int(o, "ts", e->ts);
		json_str_opt(o, "session", e->session);
		json_str_opt(o, "addr", e->addr);
		json_str_opt(o, "hub", e->hub);
		jarray_add(&eo->ja, o);
		return;
	}
	if (eo->n++ == 0)
		printf(EVENTS_FMT, "SEQ", "TIME", "DEVICE", "KIND", "REASON",
		       "SESSION", "ADDR", "HUB");
	snprintf(seq, sizeof(seq), "%" PRId64, e->seq);
	printf(EVENTS_FMT, seq, iso_time(e->ts, t, sizeof(t)), e->device,
	       registry_kind_name(e->kind), e->reason[0] ? e->reason : "-",
	       e->session[0] ? e->session : "-", e->addr[0] ? e->addr : "-",
	       e->hub[0] ? e->hub : "-");
}

static int
cmd_events(const struct opts *o, struct registry *reg)
{
	struct events_out eo = {.json = o->json};
	int rc;

	if (o->device && (rc = check_id(o->device)))
		return rc;
	rc = registry_events(reg, o->device,
			     (o->seen & O_LIMIT) ? (int)o->limit : 100,
			     events_cb, &eo);
	if (rc != HUB_OK)
		return reg_fail(reg, "events", o->device ? o->device : "", rc);
	if (o->json)
		jarray_end(&eo.ja);
	else if (eo.n == 0)
		printf(EVENTS_FMT, "SEQ", "TIME", "DEVICE", "KIND", "REASON",
		       "SESSION", "ADDR", "HUB");
	return 0;
}

/* ---- MQTT ------------------------------------------------------------- */

static atomic_int puback_rc = -1;

/* Paho: the PUBACK of our QoS 1 message, with its MQTT 5 reason code. */
static void
on_published(void *ctx, int dt, int packet_type, MQTTProperties *props,
	     enum MQTTReasonCodes reason)
{
	(void)ctx;
	(void)dt;
	(void)packet_type;
	(void)props;
	atomic_store(&puback_rc, (int)reason);
}

static int
is_tls_uri(const char *uri)
{
	return !strncmp(uri, "ssl://", 6) || !strncmp(uri, "mqtts://", 8) ||
	       !strncmp(uri, "wss://", 6);
}

/*
 * Publishes one message with MQTT 5 and waits for its PUBACK (QoS 1).
 * ttl > 0 adds a message expiry interval. Returns 0 or EXIT_FAIL.
 */
static int
mqtt_publish(const struct opts *o, const char *topic, const char *payload,
	     size_t len, int qos, int retain, long long ttl)
{
	MQTTClient c = NULL;
	MQTTClient_createOptions co = MQTTClient_createOptions_initializer;
	MQTTClient_connectOptions conn = MQTTClient_connectOptions_initializer5;
	MQTTClient_SSLOptions ssl = MQTTClient_SSLOptions_initializer;
	MQTTProperties props = MQTTProperties_initializer;
	MQTTClient_deliveryToken tok = 0;
	MQTTResponse r = MQTTResponse_initializer;
	char cid[64], rnd[REGISTRY_TOKEN_LEN + 1];
	int rc, ret = EXIT_FAIL, connected = 0, pr;

	if (len > 268435455u) {
		errf("payload larger than MQTT allows");
		return EXIT_FAIL;
	}
	if (registry_token_new(rnd) != HUB_OK)
		snprintf(rnd, sizeof(rnd), "%lx",
			 (unsigned long)hub_clock_mono_us());
	rnd[8] = '\0';
	snprintf(cid, sizeof(cid), "hubctl-%ld-%s", (long)getpid(), rnd);

	co.MQTTVersion = MQTTVERSION_5;
	rc = MQTTClient_createWithOptions(
	    &c, o->broker, cid, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
	if (rc != MQTTCLIENT_SUCCESS) {
		errf("bad broker URI %s: %s", o->broker,
		     MQTTClient_strerror(rc));
		c = NULL;
		goto out;
	}
	MQTTClient_setPublished(c, NULL, on_published);
	conn.keepAliveInterval = 30;
	conn.cleanstart = 1;
	conn.connectTimeout = MQTT_TIMEOUT_MS / 1000;
	conn.username = o->user;
	conn.password = o->password;
	if (is_tls_uri(o->broker))
		ssl.verify = 1; /* check the broker's host name too */
	conn.ssl = &ssl;
	r = MQTTClient_connect5(c, &conn, NULL, NULL);
	if (r.reasonCode != MQTTREASONCODE_SUCCESS) {
		errf("cannot connect to broker %s: %s", o->broker,
		     (int)r.reasonCode < 0
			 ? MQTTClient_strerror((int)r.reasonCode)
			 : MQTTReasonCode_toString(r.reasonCode));
		MQTTResponse_free(r);
		goto out;
	}
	MQTTResponse_free(r);
	connected = 1;

	if (ttl > 0) {
		MQTTProperty p;

		memset(&p, 0, sizeof(p));
		p.identifier = MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL;
		p.value.integer4 = (unsigned int)ttl;
		if (MQTTProperties_add(&props, &p) != 0) {
			errf("cannot set the message expiry");
			goto out;
		}
	}
	r = MQTTClient_publish5(c, topic, (int)len, payload, qos, retain,
				&props, &tok);
	rc = r.reasonCode;
	MQTTResponse_free(r);
	if (rc != MQTTCLIENT_SUCCESS) {
		errf("publish to %s failed: %s", topic,
		     rc < 0
			 ? MQTTClient_strerror(rc)
			 : MQTTReasonCode_toString((enum MQTTReasonCodes)rc));
		goto out;
	}
	if (qos > 0) {
		rc = MQTTClient_waitForCompletion(c, tok, MQTT_TIMEOUT_MS);
		if (rc != MQTTCLIENT_SUCCESS) {
			errf("broker did not acknowledge %s within %d s: %s",
			     topic, MQTT_TIMEOUT_MS / 1000,
			     MQTTClient_strerror(rc));
			goto out;
		}
		pr = atomic_load(&puback_rc);
		if (pr >= 0x80) {
			errf("broker refused %s: %s", topic,
			     MQTTReasonCode_toString((enum MQTTReasonCodes)pr));
			goto out;
		}
	}
	ret = 0;
out:
	if (connected)
		MQTTClient_disconnect5(c, 1000, MQTTREASONCODE_SUCCESS, NULL);
	MQTTProperties_free(&props);
	if (c)
		MQTTClient_destroy(&c);
	return ret;
}

static int
cmd_kick(const struct opts *o, const char *id)
{
	static const char payload[] = "{\"op\":\"kick\"}";
	char topic[32 + HUB_ID_MAX];
	int rc;

	snprintf(topic, sizeof(topic), "hub/sessions/%s", id);
	rc = mqtt_publish(o, topic, payload, sizeof(payload) - 1, 1, 0, 0);
	if (rc == 0 && o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "id", id);
		cJSON_AddBoolToObject(j, "kicked", 1);
		json_print(j);
	}
	return rc;
}

static int
cmd_send(const struct opts *o, const char *id, const char *rel,
	 const char *payload)
{
	char sub[TOPIC_MAX + 8], topic[TOPIC_MAX + HUB_ID_MAX + 256];
	long qos = (o->seen & O_QOS) ? o->qos : 1;
	size_t n;
	int rc;

	if (o->retain && !(o->seen & O_TTL))
		return usage_err(
		    "--retain needs --ttl SECS (a retained command "
		    "must expire)");
	/* the device sees "cmd/TOPIC": that is what must be valid */
	n = (size_t)snprintf(sub, sizeof(sub), "cmd/%s", rel);
	if (n >= sizeof(sub) || !bridge_topic_valid(sub, n))
		return usage_err(
		    "invalid topic '%s' (no '+', '#', empty levels, "
		    "leading '/' or '$', control characters; at "
		    "most %d bytes)",
		    rel, TOPIC_MAX - 4);
	if (!o->prefix[0] || strchr(o->prefix, '+') || strchr(o->prefix, '#'))
		return usage_err("invalid --prefix '%s'", o->prefix);
	n = (size_t)snprintf(topic, sizeof(topic), "%s/%s/%s", o->prefix, id,
			     sub);
	if (n >= sizeof(topic))
		return usage_err("--prefix too long");
	rc = mqtt_publish(o, topic, payload, strlen(payload), (int)qos,
			  o->retain, (o->seen & O_TTL) ? o->ttl : 0);
	if (rc == 0 && o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "topic", topic);
		cJSON_AddNumberToObject(j, "qos", (double)qos);
		cJSON_AddBoolToObject(j, "retain", o->retain);
		if (o->seen & O_TTL)
			json_int(j, "ttl", o->ttl);
		json_print(j);
	}
	return rc;
}

/* ---- dispatch --------------------------------------------------------- */

static int
run_device(const struct opts *o)
{
	struct registry *reg = NULL;
	const char *sub = o->npos > 1 ? o->pos[1] : NULL, *arg;
	int rc;

	if (!sub)
		return usage_err("device: missing subcommand (add, import, "
				 "list, show, disable, enable, delete, "
				 "rotate-token)");
	if (!strcmp(sub, "list")) {
		rc = check_cmd(o, "device list", 2, O_ONLINE);
	} else if (!strcmp(sub, "add")) {
		rc = check_cmd(o, "device add", 3, O_NAME);
	} else if (!strcmp(sub, "import") || !strcmp(sub, "show") ||
		   !strcmp(sub, "disable") || !strcmp(sub, "enable") ||
		   !strcmp(sub, "delete") || !strcmp(sub, "rotate-token")) {
		char what[32];

		snprintf(what, sizeof(what), "device %s", sub);
		rc = check_cmd(o, what, 3, 0);
	} else {
		return usage_err("device: unknown subcommand '%s'", sub);
	}
	if (rc)
		return rc;
	arg = o->npos > 2 ? o->pos[2] : NULL;
	if (arg && strcmp(sub, "import") && (rc = check_id(arg)))
		return rc;
	rc = open_db(o, &reg);
	if (rc)
		return rc;
	if (!strcmp(sub, "list"))
		rc = cmd_list(o, reg);
	else if (!strcmp(sub, "add"))
		rc = cmd_add(o, reg, arg);
	else if (!strcmp(sub, "import"))
		rc = cmd_import(o, reg, arg);
	else if (!strcmp(sub, "show"))
		rc = cmd_show(o, reg, arg);
	else if (!strcmp(sub, "disable"))
		rc = cmd_set_disabled(o, reg, arg, 1);
	else if (!strcmp(sub, "enable"))
		rc = cmd_set_disabled(o, reg, arg, 0);
	else if (!strcmp(sub, "delete"))
		rc = cmd_delete(o, reg, arg);
	else
		rc = cmd_rotate(o, reg, arg);
	registry_close(reg);
	return rc;
}

static int
run(const struct opts *o)
{
	const char *cmd = o->pos[0];
	struct registry *reg = NULL;
	int rc;

	if (!strcmp(cmd, "device"))
		return run_device(o);
	if (!strcmp(cmd, "events")) {
		rc = check_cmd(o, "events", 1, O_DEVICE | O_LIMIT);
		if (rc)
			return rc;
		rc = open_db(o, &reg);
		if (rc)
			return rc;
		rc = cmd_events(o, reg);
		registry_close(reg);
		return rc;
	}
	if (!strcmp(cmd, "kick")) {
		rc = check_cmd(o, "kick", 2, 0);
		if (rc || (rc = check_id(o->pos[1])))
			return rc;
		return cmd_kick(o, o->pos[1]);
	}
	if (!strcmp(cmd, "send")) {
		rc = check_cmd(o, "send", 4, O_QOS | O_RETAIN | O_TTL);
		if (rc || (rc = check_id(o->pos[1])))
			return rc;
		return cmd_send(o, o->pos[1], o->pos[2], o->pos[3]);
	}
	return usage_err("unknown command '%s'", cmd);
}

int
main(int argc, char **argv)
{
	struct opts o = {
	    .db = DEFAULT_DB,
	    .broker = DEFAULT_BROKER,
	    .prefix = DEFAULT_PREFIX,
	    .qos = 1,
	};
	int rc;

	rc = parse_args(argc, argv, &o);
	if (rc < 0 || (rc == 0 && o.npos > 0 && !strcmp(o.pos[0], "help"))) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (rc)
		return rc;
	if (o.npos == 0)
		return usage_err("missing command");
	rc = run(&o);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		errf("cannot write the output: %s", strerror(errno));
		return EXIT_FAIL;
	}
	return rc;
}
