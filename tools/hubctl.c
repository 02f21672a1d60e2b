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
 * expiry for offline commands), or MQTT 3.1.1 with --mqtt-version 3 (a
 * broker such as NATS that speaks only 3.1.1: no expiry, so no offline
 * commands), connect with a 10 s timeout and wait for the PUBACK of QoS 1.
 * Output: human tables by default, cJSON with --json (lists are streamed, one
 * object per line, so 100k devices need no tree). A new token is printed once
 * and never anywhere else.
 *
 * Exit: 0 success, 1 failed operation, 2 bad usage. Errors are one line on
 * stderr starting "hubctl: ".
 *
 * Threads: one (Paho's sync client runs its network I/O in our calls).
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <MQTTClient.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "hub_err.h"
#include "hub_util.h"
#include "hub_version.h"
#include "bridge.h"
#include "proto.h"
#include "registry.h"
#include "fleet.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define DEFAULT_DB "var/registry.db"
#define DEFAULT_BROKER "tcp://127.0.0.1:1883"
#define DEFAULT_PREFIX "devices"
#define MQTT_TIMEOUT_MS 10000
#define TOPIC_MAX 256		/* relative device topics (DESIGN.md) */
#define IMPORT_MAX (256u << 20) /* bytes of an import file */
#define MAX_POS 1024		/* command words (group add G ID...) */

/* Command options, as bits: each command says which it accepts. */
enum {
	O_NAME = 1 << 0,
	O_ONLINE = 1 << 1,
	O_DEVICE = 1 << 2,
	O_LIMIT = 1 << 3,
	O_QOS = 1 << 4,
	O_RETAIN = 1 << 5,
	O_TTL = 1 << 6,
	O_FORCE = 1 << 7,
	O_QUIET = 1 << 8,
	O_DIR = 1 << 9,
	O_SIGNED = 1 << 10,
	O_TTL_DAYS = 1 << 11,
	O_GROUP = 1 << 12,
	O_ALL = 1 << 13,
};

#define DEFAULT_FLEET_DIR "var/fleet"
#define DEFAULT_TTL_DAYS 365

struct opts {
	const char *db, *broker, *user, *password, *prefix;
	int json;
	const char *name, *device;
	long limit, qos;
	long long ttl;
	int online, retain, force, quiet;
	const char *dir; /* fleet key directory */
	int is_signed, broker_set;
	int mqtt_version; /* 5, or 3 for an MQTT 3.1.1-only broker */
	long ttl_days;
	const char *groups[FLEET_GROUPS_MAX];
	int ngroups;
	int all;
	const char *group_prefix, *fleet_prefix;
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
    "registry commands (--db; read commands never create the file):\n"
    "  init                         create an empty registry at --db\n"
    "  device add ID [--name N]     add a device (creates the registry if\n"
    "                               missing); prints its token once\n"
    "  device import FILE           ids one per line (or id,name; - = "
    "stdin);\n"
    "                               prints id,token lines; all or nothing\n"
    "  device list [--online]       the devices (default: all)\n"
    "  device show ID               one device and its live session\n"
    "  device disable ID | enable ID | delete ID\n"
    "  device rotate-token ID       a new token; the old one stops "
    "working\n"
    "\n"
    "signed fleet tokens (accepted by every hub with --token-key):\n"
    "  fleet init [--dir DIR]       create the fleet's signing key pair in\n"
    "                               DIR (default " DEFAULT_FLEET_DIR "): "
    "fleet.key (0600),\n"
    "                               fleet.pub (hubd --token-key)\n"
    "  device add ID --signed [--ttl-days N] [--group G]... [--dir DIR]\n"
    "                               add a device and print a signed token\n"
    "                               (JWT ES256, default 365 days)\n"
    "  device rotate-token ID --signed [...]   a new signed token\n"
    "  with --broker given, device disable, delete and rotate-token also\n"
    "  publish the retained hub/revoked/ID (older signed tokens are void on\n"
    "  every hub); enable clears it\n"
    "  group add G ID... | group remove G ID... | group list\n"
    "                               device groups (device show lists a\n"
    "                               device's)\n"
    "  events [--device ID] [--limit N]   newest first (default: all\n"
    "                               devices, limit 100)\n"
    "\n"
    "broker commands (--broker):\n"
    "  kick ID [--force]            close the device's live session (4004)\n"
    "  send ID TOPIC PAYLOAD [--qos 0|1] [--retain --ttl SECS] [--force]\n"
    "       [--quiet]               publish PREFIX/ID/cmd/TOPIC (default\n"
    "                               QoS 1, not retained, no expiry);\n"
    "                               --retain keeps it for an offline device\n"
    "                               for SECS; prints what was published\n"
    "                               unless --quiet\n"
    "  send --group G TOPIC PAYLOAD | send --all TOPIC PAYLOAD\n"
    "                               publish groups/G/cmd/TOPIC or\n"
    "                               fleet/cmd/TOPIC (--group-prefix,\n"
    "                               --fleet-prefix): live, to the connected\n"
    "                               devices of the group / of the fleet\n"
    "  watch [--device ID]          live presence from the broker, one line\n"
    "                               per transition (default: every device);\n"
    "                               Ctrl-C stops\n"
    "  kick and send refuse a device the registry does not know; --force\n"
    "  sends anyway (a device held by a hub with another registry).\n"
    "\n"
    "options:\n"
    "  --db FILE                    registry file (default " DEFAULT_DB ")\n"
    "  --broker URI[,URI...]        MQTT broker, tcp:// or ssl://, tried in\n"
    "                               order (default " DEFAULT_BROKER ")\n"
    "  --broker-user U, --broker-password P   broker credentials (default\n"
    "                               none)\n"
    "  --mqtt-version 5|3           MQTT version (default 5); 3 for a broker\n"
    "                               that speaks only 3.1.1 (NATS, RabbitMQ):\n"
    "                               no message expiry, so no --ttl/--retain\n"
    "  --prefix P                   MQTT topic prefix (default " DEFAULT_PREFIX
    ")\n"
    "  --json                       JSON output (default: tables)\n"
    "  -h, --help                   this text\n"
    "  --version                    the version\n"
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
	OPT_FORCE,
	OPT_QUIET,
	OPT_VERSION,
	OPT_DIR,
	OPT_SIGNED,
	OPT_TTL_DAYS,
	OPT_GROUP,
	OPT_ALL,
	OPT_GROUP_PREFIX,
	OPT_FLEET_PREFIX,
	OPT_MQTT_VERSION,
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
    {"force", A_NONE, OPT_FORCE},
    {"quiet", A_NONE, OPT_QUIET},
    {"version", A_NONE, OPT_VERSION},
    {"dir", A_VALUE, OPT_DIR},
    {"signed", A_NONE, OPT_SIGNED},
    {"ttl-days", A_VALUE, OPT_TTL_DAYS},
    {"group", A_VALUE, OPT_GROUP},
    {"all", A_NONE, OPT_ALL},
    {"group-prefix", A_VALUE, OPT_GROUP_PREFIX},
    {"fleet-prefix", A_VALUE, OPT_FLEET_PREFIX},
    {"mqtt-version", A_VALUE, OPT_MQTT_VERSION},
};

/* One option; returns 0, EXIT_USAGE, -1 for --help, -2 for --version. */
static int
set_opt(struct opts *o, const struct optdef *d, const char *v)
{
	switch (d->id) {
	case OPT_DB:
		o->db = v;
		break;
	case OPT_BROKER:
		o->broker = v;
		o->broker_set = 1;
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
	case OPT_FORCE:
		o->force = 1;
		o->seen |= O_FORCE;
		break;
	case OPT_QUIET:
		o->quiet = 1;
		o->seen |= O_QUIET;
		break;
	case OPT_VERSION:
		return -2;
	case OPT_DIR:
		o->dir = v;
		o->seen |= O_DIR;
		break;
	case OPT_SIGNED:
		o->is_signed = 1;
		o->seen |= O_SIGNED;
		break;
	case OPT_TTL_DAYS:
		if (parse_long(v, 1, 36500, &o->ttl_days))
			return usage_err("--ttl-days wants 1..36500, not '%s'",
					 v);
		o->seen |= O_TTL_DAYS;
		break;
	case OPT_GROUP:
		if (!fleet_group_valid(v, strnlen(v, FLEET_GROUP_MAX + 1)))
			return usage_err("invalid group '%s' (want "
					 "[A-Za-z0-9_-]{1,%d})",
					 v, FLEET_GROUP_MAX);
		if (o->ngroups == FLEET_GROUPS_MAX)
			return usage_err("at most %d --group",
					 FLEET_GROUPS_MAX);
		o->groups[o->ngroups++] = v;
		o->seen |= O_GROUP;
		break;
	case OPT_ALL:
		o->all = 1;
		o->seen |= O_ALL;
		break;
	case OPT_GROUP_PREFIX:
		o->group_prefix = v;
		break;
	case OPT_FLEET_PREFIX:
		o->fleet_prefix = v;
		break;
	case OPT_MQTT_VERSION: {
		long ver;

		if (parse_long(v, 3, 5, &ver) || ver == 4)
			return usage_err(
			    "--mqtt-version wants 5 or 3, not '%s'", v);
		o->mqtt_version = (int)ver;
		break;
	}
	}
	return 0;
}

/* Parses argv into o; 0, EXIT_USAGE, -1 for --help, -2 for --version. */
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
	static const char *const names[] = {
	    "--name",	"--online",   "--device", "--limit", "--qos",
	    "--retain", "--ttl",      "--force",  "--quiet", "--dir",
	    "--signed", "--ttl-days", "--group",  "--all"};
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
	if (!proto_id_valid(id, strnlen(id, HUB_ID_MAX + 1)))
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

/*
 * Opens the registry. Only commands that create (init, device add, device
 * import) pass create = 1; every other command fails on a missing file
 * rather than leave an empty registry (and its directories) behind in the
 * wrong place.
 */
static int
open_db(const struct opts *o, int create, struct registry **reg)
{
	struct stat st;
	char err[512];
	int rc;

	if (strcmp(o->db, ":memory:")) {
		if (stat(o->db, &st) != 0) {
			if (errno != ENOENT || !create) {
				errf("no registry at %s: %s (create one with "
				     "'hubctl --db %s init', or point --db "
				     "at the hub's registry)",
				     o->db, strerror(errno), o->db);
				return EXIT_FAIL;
			}
			make_parent(o->db);
		} else if (!S_ISREG(st.st_mode)) {
			errf("registry %s is not a file", o->db);
			return EXIT_FAIL;
		}
	}
	rc = registry_open(o->db, reg, err, sizeof(err));
	if (rc != HUB_OK) {
		errf("cannot open registry %s: %s", o->db, err);
		return EXIT_FAIL;
	}
	return 0;
}

static int
cmd_init(const struct opts *o)
{
	struct registry *reg = NULL;
	struct stat st;
	int rc;

	if (strcmp(o->db, ":memory:") && stat(o->db, &st) == 0) {
		errf("registry %s already exists; left unchanged", o->db);
		return 0;
	}
	rc = open_db(o, 1, &reg);
	if (rc)
		return rc;
	registry_close(reg);
	if (o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "db", o->db);
		cJSON_AddBoolToObject(j, "created", 1);
		json_print(j);
	} else if (!o->quiet) {
		printf("created registry %s\n", o->db);
	}
	return 0;
}

/* ---- fleet: signing key, signed tokens, revocations ------------------- */

static int mqtt_publish(const struct opts *o, const char *topic,
			const char *payload, size_t len, int qos, int retain,
			long long ttl);

static const char *
fleet_dir(const struct opts *o)
{
	return o->dir ? o->dir : DEFAULT_FLEET_DIR;
}

static int
cmd_fleet_init(const struct opts *o)
{
	char err[256], probe[4096];
	const char *dir = fleet_dir(o);
	int rc;

	if (strlen(dir) > 512)
		return usage_err("--dir is too long");
	/* mkdir -p DIR, the key's own directory private */
	snprintf(probe, sizeof(probe), "%s/x", dir);
	make_parent(probe);
	chmod(dir, 0700);
	rc = fleet_keygen(dir, err, sizeof(err));
	if (rc != HUB_OK) {
		errf("fleet init: %s", err);
		return EXIT_FAIL;
	}
	if (o->json) {
		cJSON *j = cJSON_CreateObject();

		snprintf(probe, sizeof(probe), "%s/fleet.key", dir);
		cJSON_AddStringToObject(j, "private_key", probe);
		snprintf(probe, sizeof(probe), "%s/fleet.pub", dir);
		cJSON_AddStringToObject(j, "public_key", probe);
		json_print(j);
	} else {
		printf("private key: %s/fleet.key (0600; signs device tokens, "
		       "keep it off the hubs)\n"
		       "public key:  %s/fleet.pub (give it to every hub: "
		       "hubd --token-key %s/fleet.pub)\n",
		       dir, dir, dir);
	}
	return 0;
}

/* A signed token for id issued at iat (s), into out[FLEET_TOKEN_MAX+1]. */
static int
sign_token(const struct opts *o, const char *id, int64_t iat, char *out,
	   size_t cap)
{
	struct fleet_claims c;
	char key[600], err[256];
	int i;

	memset(&c, 0, sizeof(c));
	snprintf(c.sub, sizeof(c.sub), "%s", id);
	c.iat = iat;
	c.exp = iat +
		(int64_t)(o->ttl_days ? o->ttl_days : DEFAULT_TTL_DAYS) * 86400;
	if (registry_token_new(c.jti) != HUB_OK) {
		errf("no random bytes for the token id");
		return EXIT_FAIL;
	}
	for (i = 0; i < o->ngroups; i++)
		snprintf(c.groups[i], sizeof(c.groups[i]), "%s", o->groups[i]);
	c.ngroups = o->ngroups;
	snprintf(key, sizeof(key), "%s/fleet.key", fleet_dir(o));
	if (fleet_token_sign(key, &c, out, cap, err, sizeof(err)) != HUB_OK) {
		errf("cannot sign a token for %s: %s (create the key with "
		     "'hubctl fleet init --dir %s')",
		     id, err, fleet_dir(o));
		return EXIT_FAIL;
	}
	return 0;
}

/*
 * With --broker given: the retained hub/revoked/{id} that tells every hub
 * "signed tokens of id issued before `before` are void" (before 0: clear
 * it, hubctl device enable). Without --broker, nothing: a single hub has
 * its registry. 0 or EXIT_FAIL.
 */
static int
publish_revocation(const struct opts *o, const char *id, int64_t before,
		   const char *reason)
{
	char topic[32 + HUB_ID_MAX], payload[96];
	int n = 0;

	if (!o->broker_set)
		return 0;
	snprintf(topic, sizeof(topic), "hub/revoked/%s", id);
	if (before)
		n = snprintf(payload, sizeof(payload),
			     "{\"before\":%lld,\"reason\":\"%s\"}",
			     (long long)before, reason);
	if (mqtt_publish(o, topic, payload, (size_t)n, 1, 1, 0)) {
		errf("the registry changed, but %s was not published: hubs "
		     "elsewhere still accept old signed tokens; run the "
		     "command again",
		     topic);
		return EXIT_FAIL;
	}
	return 0;
}

/*
 * The time T of a "rotated" or "added" revocation, which voids tokens
 * issued before T and not the new one, issued at T. Tokens carry whole
 * seconds: wait for the next second to begin (at most 1 s), so every older
 * token has an iat < T and the new one is not dated in the future.
 * ("disabled" and "deleted" void every token of the device, whatever T.)
 */
static int64_t
revoke_time(void)
{
	struct timespec ts;
	time_t t0 = time(NULL);

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec == t0) {
		struct timespec d = {0, 1000000000L - ts.tv_nsec + 1000000L};

		while (nanosleep(&d, &d) && errno == EINTR)
			;
	}
	while (time(NULL) <= t0) {
		struct timespec d = {0, 1000000L};

		nanosleep(&d, NULL);
	}
	return (int64_t)time(NULL);
}

static int
cmd_add(const struct opts *o, struct registry *reg, const char *id)
{
	char token[REGISTRY_TOKEN_LEN + 1], jwt[FLEET_TOKEN_MAX + 1];
	int rc;

	if (o->name && strlen(o->name) > REGISTRY_NAME_MAX)
		return usage_err("--name is longer than %d bytes",
				 REGISTRY_NAME_MAX);
	rc = registry_device_add(reg, id, o->name, token);
	if (rc != HUB_OK)
		return reg_fail(reg, "device add", id, rc);
	if (o->is_signed) {
		/* with a broker: a "deleted" revocation left by an earlier
		 * device of this id must not void the new token; replace it
		 * by one that voids only tokens older than the new one */
		int64_t t = o->broker_set ? revoke_time() : (int64_t)time(NULL);

		rc = sign_token(o, id, t, jwt, sizeof(jwt));
		if (!rc)
			rc = publish_revocation(o, id, t, "added");
		if (rc) {
			registry_device_delete(reg, id); /* all or nothing */
			return rc;
		}
		/* the opaque token is never shown: the signed one is it */
	}
	if (o->is_signed && o->json)
		json_print(id_token_json(id, jwt));
	else if (o->is_signed)
		printf("%s\n", jwt);
	else if (o->json)
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

/*
 * Human tables sized to their content: a first pass over the rows measures
 * each column, a second prints them (two queries, so a fleet of 100k
 * devices is never held in memory).
 */
#define TABLE_MAX_COLS 8

struct table {
	int ncols;
	int measuring;
	size_t w[TABLE_MAX_COLS];
	long rows;
};

static void
table_row(struct table *t, const char *const *cell)
{
	int i;

	if (t->measuring) {
		for (i = 0; i < t->ncols; i++) {
			size_t n = strlen(cell[i]);

			if (n > t->w[i])
				t->w[i] = n;
		}
		return;
	}
	for (i = 0; i < t->ncols; i++) {
		if (i == t->ncols - 1)
			printf("%s\n", cell[i]);
		else
			printf("%-*s  ", (int)t->w[i], cell[i]);
	}
	t->rows++;
}

/*
 * last_seen is the device's last activity: now for a device online (the
 * hub closes a silent session within its idle timeout), else when its last
 * session ended. The registry keeps session starts and ends, not every
 * frame, so that is as close as it knows.
 */
static int64_t
last_activity(const struct registry_device *d)
{
	return d->online ? hub_clock_ms() : d->last_seen;
}

static const char *const list_head[] = {"ID", "NAME", "DISABLED", "ONLINE",
					"LAST_ACTIVE (UTC)"};

struct list_out {
	int json;
	struct jarray ja;
	struct table t;
};

static void
list_cb(void *arg, const struct registry_device *d)
{
	struct list_out *lo = arg;
	const char *cell[5];
	char t[40];

	if (lo->json) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "id", d->id);
		cJSON_AddStringToObject(o, "name", d->name);
		cJSON_AddBoolToObject(o, "disabled", d->disabled);
		cJSON_AddBoolToObject(o, "online", d->online);
		if (last_activity(d) > 0)
			json_int(o, "last_seen", last_activity(d));
		else
			cJSON_AddNullToObject(o, "last_seen");
		jarray_add(&lo->ja, o);
		return;
	}
	cell[0] = d->id;
	cell[1] = d->name[0] ? d->name : "-";
	cell[2] = d->disabled ? "yes" : "no";
	cell[3] = d->online ? "yes" : "no";
	cell[4] = d->online ? "now" : iso_time(d->last_seen, t, sizeof(t));
	table_row(&lo->t, cell);
}

static int
cmd_list(const struct opts *o, struct registry *reg)
{
	struct list_out lo = {.json = o->json};
	int rc, i;

	lo.t.ncols = 5;
	lo.t.measuring = 1;
	for (i = 0; i < 5; i++)
		lo.t.w[i] = strlen(list_head[i]);
	if (!o->json) {
		rc = registry_device_list(reg, o->online, list_cb, &lo);
		if (rc != HUB_OK)
			return reg_fail(reg, "device list", "", rc);
		lo.t.measuring = 0;
		table_row(&lo.t, list_head);
	}
	rc = registry_device_list(reg, o->online, list_cb, &lo);
	if (rc != HUB_OK)
		return reg_fail(reg, "device list", "", rc);
	if (o->json)
		jarray_end(&lo.ja);
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

static void
group_cb(void *arg, const char *group)
{
	cJSON_AddItemToArray(arg, cJSON_CreateString(group));
}

static int
cmd_show(const struct opts *o, struct registry *reg, const char *id)
{
	struct registry_device d;
	struct registry_event drop;
	char t1[40], t2[40];
	cJSON *groups = cJSON_CreateArray();
	int rc, i;

	rc = registry_device_get(reg, id, &d);
	if (rc == HUB_OK)
		rc = registry_device_groups(reg, id, group_cb, groups);
	if (rc != HUB_OK) {
		cJSON_Delete(groups);
		return reg_fail(reg, "device show", id, rc);
	}
	memset(&drop, 0, sizeof(drop));
	registry_events(reg, id, 1000, find_drop, &drop);
	if (o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "id", d.id);
		cJSON_AddStringToObject(j, "name", d.name);
		cJSON_AddBoolToObject(j, "disabled", d.disabled);
		cJSON_AddBoolToObject(j, "online", d.online);
		if (last_activity(&d) > 0)
			json_int(j, "last_seen", last_activity(&d));
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
		cJSON_AddItemToObject(j, "groups", groups);
		json_print(j);
		return 0;
	}
	printf("id:          %s\n", d.id);
	printf("name:        %s\n", d.name[0] ? d.name : "-");
	printf("disabled:    %s\n", d.disabled ? "yes" : "no");
	printf("online:      %s\n", d.online ? "yes" : "no");
	printf("created:     %s\n", iso_time(d.created, t1, sizeof(t1)));
	printf("last active: %s\n",
	       d.online ? "now" : iso_time(d.last_seen, t2, sizeof(t2)));
	printf("session:     %s\n", d.session[0] ? d.session : "-");
	printf("hub:         %s\n", d.hub[0] ? d.hub : "-");
	printf("addr:        %s\n", d.addr[0] ? d.addr : "-");
	if (drop.seq)
		printf("dropped:     %s %s (session %s)\n",
		       iso_time(drop.ts, t1, sizeof(t1)), drop.reason,
		       drop.session[0] ? drop.session : "-");
	printf("groups:      ");
	for (i = 0; i < cJSON_GetArraySize(groups); i++)
		printf("%s%s", i ? ", " : "",
		       cJSON_GetArrayItem(groups, i)->valuestring);
	printf("%s\n", cJSON_GetArraySize(groups) ? "" : "-");
	cJSON_Delete(groups);
	return 0;
}

/* ---- groups ------------------------------------------------------------ */

static void
group_list_cb(void *arg, const char *group, int64_t n)
{
	struct jarray *ja = arg;
	cJSON *j = cJSON_CreateObject();

	cJSON_AddStringToObject(j, "group", group);
	json_int(j, "devices", n);
	jarray_add(ja, j);
}

static void
group_text_cb(void *arg, const char *group, int64_t n)
{
	(void)arg;
	printf("%-24s %lld\n", group, (long long)n);
}

static int
cmd_group(const struct opts *o, struct registry *reg, const char *sub)
{
	const char *g = o->npos > 2 ? o->pos[2] : NULL;
	size_t n = o->npos > 3 ? (size_t)(o->npos - 3) : 0, k = 0;
	int rc;

	if (!strcmp(sub, "list")) {
		if (o->json) {
			struct jarray ja = {0};

			rc = registry_group_list(reg, group_list_cb, &ja);
			if (rc == HUB_OK)
				jarray_end(&ja);
		} else {
			printf("%-24s %s\n", "GROUP", "DEVICES");
			rc = registry_group_list(reg, group_text_cb, NULL);
		}
		return rc == HUB_OK ? 0 : reg_fail(reg, "group list", NULL, rc);
	}
	if (!strcmp(sub, "add")) {
		rc = registry_group_add(reg, g, o->pos + 3, n, &k);
		if (rc == HUB_ERR_NOTFOUND) {
			errf("group add: no device %s in registry %s; nothing "
			     "changed",
			     o->pos[3 + k], o->db);
			return EXIT_FAIL;
		}
		if (rc != HUB_OK)
			return reg_fail(reg, "group add", g, rc);
	} else {
		rc = registry_group_remove(reg, g, o->pos + 3, n, &k);
		if (rc != HUB_OK)
			return reg_fail(reg, "group remove", g, rc);
	}
	if (o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "group", g);
		json_int(j, !strcmp(sub, "add") ? "added" : "removed",
			 (int64_t)(!strcmp(sub, "add") ? n : k));
		json_print(j);
	}
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
	rc = publish_revocation(o, id, disabled ? (int64_t)time(NULL) : 0,
				"disabled");
	if (rc)
		return rc;
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
	rc = publish_revocation(o, id, (int64_t)time(NULL), "deleted");
	if (rc)
		return rc;
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
	char token[REGISTRY_TOKEN_LEN + 1], jwt[FLEET_TOKEN_MAX + 1];
	int64_t t = revoke_time();
	int rc = registry_device_rotate(reg, id, token);

	if (rc != HUB_OK)
		return reg_fail(reg, "device rotate-token", id, rc);
	/* the new signed token is issued at the revocation time: older ones
	 * are void, it is not */
	if (o->is_signed && (rc = sign_token(o, id, t, jwt, sizeof(jwt))))
		return rc;
	rc = publish_revocation(o, id, t, "rotated");
	if (rc)
		return rc;
	if (o->is_signed && o->json)
		json_print(id_token_json(id, jwt));
	else if (o->is_signed)
		printf("%s\n", jwt);
	else if (o->json)
		json_print(id_token_json(id, token));
	else
		printf("%s\n", token);
	return 0;
}

static const char *const events_head[] = {
    "SEQ", "TIME (UTC)", "DEVICE", "KIND", "REASON", "SESSION", "ADDR", "HUB"};

struct events_out {
	int json;
	struct jarray ja;
	struct table t;
};

static void
events_cb(void *arg, const struct registry_event *e)
{
	struct events_out *eo = arg;
	const char *cell[8];
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
	snprintf(seq, sizeof(seq), "%" PRId64, e->seq);
	cell[0] = seq;
	cell[1] = iso_time(e->ts, t, sizeof(t));
	cell[2] = e->device;
	cell[3] = registry_kind_name(e->kind);
	cell[4] = e->reason[0] ? e->reason : "-";
	cell[5] = e->session[0] ? e->session : "-";
	cell[6] = e->addr[0] ? e->addr : "-";
	cell[7] = e->hub[0] ? e->hub : "-";
	table_row(&eo->t, cell);
}

static int
cmd_events(const struct opts *o, struct registry *reg)
{
	struct events_out eo = {.json = o->json};
	int limit = (o->seen & O_LIMIT) ? (int)o->limit : 100;
	int rc, i;

	if (o->device && (rc = check_id(o->device)))
		return rc;
	eo.t.ncols = 8;
	eo.t.measuring = 1;
	for (i = 0; i < 8; i++)
		eo.t.w[i] = strlen(events_head[i]);
	if (!o->json) {
		rc = registry_events(reg, o->device, limit, events_cb, &eo);
		if (rc != HUB_OK)
			return reg_fail(reg, "events",
					o->device ? o->device : "", rc);
		eo.t.measuring = 0;
		table_row(&eo.t, events_head);
	}
	rc = registry_events(reg, o->device, limit, events_cb, &eo);
	if (rc != HUB_OK)
		return reg_fail(reg, "events", o->device ? o->device : "", rc);
	if (o->json)
		jarray_end(&eo.ja);
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
 * Splits a broker URI into host and port (default by scheme). 0, or -1
 * with why filled for a URI Paho would refuse or misread.
 */
static int
split_uri(const char *uri, char *host, size_t hcap, char *port, size_t pcap,
	  char *why, size_t wcap)
{
	static const struct {
		const char *scheme, *port;
	} schemes[] = {{"tcp://", "1883"}, {"mqtt://", "1883"},
		       {"ssl://", "8883"}, {"mqtts://", "8883"},
		       {"ws://", "80"},	   {"wss://", "443"}};
	const char *h = NULL, *e, *c;
	size_t k, n;

	for (k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++)
		if (!strncmp(uri, schemes[k].scheme,
			     strlen(schemes[k].scheme))) {
			h = uri + strlen(schemes[k].scheme);
			snprintf(port, pcap, "%s", schemes[k].port);
			break;
		}
	if (!h) {
		snprintf(why, wcap,
			 "bad broker URI '%s': want tcp://HOST[:PORT] or "
			 "ssl://HOST[:PORT]",
			 uri);
		return -1;
	}
	if (*h == '[') { /* [v6]:port */
		e = strchr(h, ']');
		if (!e)
			goto bad;
		n = (size_t)(e - h - 1);
		h++;
		c = e + 1;
	} else {
		c = h + strcspn(h, ":/");
		n = (size_t)(c - h);
	}
	if (n == 0 || n >= hcap)
		goto bad;
	memcpy(host, h, n);
	host[n] = '\0';
	if (*c == ':') {
		n = strspn(c + 1, "0123456789");
		if (n == 0 || n >= pcap || (c[1 + n] && c[1 + n] != '/'))
			goto bad;
		memcpy(port, c + 1, n);
		port[n] = '\0';
	} else if (*c && *c != '/') {
		goto bad;
	}
	return 0;
bad:
	snprintf(why, wcap,
		 "bad broker URI '%s': want SCHEME://HOST[:PORT], e.g. "
		 "tcp://127.0.0.1:1883",
		 uri);
	return -1;
}

/*
 * Paho says only "Failure" when a connect fails: find out what failed
 * (bad URI, unknown host, refused, silent, or a broker that answered TCP
 * but not MQTT/TLS) with a resolver call and a TCP probe. 1 if the broker
 * accepted TCP (the MQTT or TLS handshake failed), else 0.
 */
static int
broker_why(const char *uri, char *why, size_t cap)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256], port[8];
	int rc, fd, err = 0, timed_out = 0;

	if (split_uri(uri, host, sizeof(host), port, sizeof(port), why, cap))
		return 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		snprintf(why, cap, "unknown host '%s' (%s)", host,
			 gai_strerror(rc));
		return 0;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		struct pollfd pfd;
		socklen_t len = sizeof(err);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			err = 0;
		} else if (errno != EINPROGRESS) {
			err = errno;
		} else {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			if (poll(&pfd, 1, 3000) <= 0) {
				timed_out = 1;
				err = ETIMEDOUT;
			} else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err,
					      &len)) {
				err = errno;
			}
		}
		close(fd);
		if (!err)
			break;
	}
	freeaddrinfo(res);
	if (!err) {
		snprintf(why, cap,
			 "%s:%s accepts TCP but the MQTT%s handshake failed "
			 "(wrong port, %s, or the broker refused us)",
			 host, port, is_tls_uri(uri) ? "/TLS" : "",
			 is_tls_uri(uri) ? "certificate"
					 : "a TLS port needs ssl://");
		return 1;
	}
	if (err == ECONNREFUSED)
		snprintf(why, cap,
			 "connection refused by %s:%s (is the broker running "
			 "and listening there?)",
			 host, port);
	else if (timed_out)
		snprintf(why, cap, "no answer from %s:%s within 3 s", host,
			 port);
	else
		snprintf(why, cap, "cannot reach %s:%s: %s", host, port,
			 strerror(err));
	return 0;
}

#define MAX_BROKERS 8

/*
 * Connects an MQTT 5 (or, with --mqtt-version 3, 3.1.1) client to
 * --broker, a URI or a comma list of them (tried in order, like hubd); 0
 * or EXIT_FAIL (said why, per URI).
 */
static int
mqtt_connect(const struct opts *o, MQTTClient *out)
{
	MQTTClient c = NULL;
	MQTTClient_createOptions co = MQTTClient_createOptions_initializer;
	MQTTClient_connectOptions conn5 =
	    MQTTClient_connectOptions_initializer5;
	MQTTClient_connectOptions conn3 = MQTTClient_connectOptions_initializer;
	MQTTClient_connectOptions *conn =
	    o->mqtt_version == 3 ? &conn3 : &conn5;
	MQTTClient_SSLOptions ssl = MQTTClient_SSLOptions_initializer;
	MQTTResponse r = MQTTResponse_initializer;
	char cid[64], rnd[REGISTRY_TOKEN_LEN + 1], why[512], host[256], port[8],
	    list[1024], *uris[MAX_BROKERS], *save = NULL, *u;
	int rc, n = 0, i, tls = 0;

	*out = NULL;
	if ((size_t)snprintf(list, sizeof(list), "%s", o->broker) >=
	    sizeof(list)) {
		errf("--broker is too long");
		return EXIT_FAIL;
	}
	for (u = strtok_r(list, ",", &save); u;
	     u = strtok_r(NULL, ",", &save)) {
		while (*u == ' ')
			u++;
		if (n == MAX_BROKERS) {
			errf("--broker: at most %d URIs", MAX_BROKERS);
			return EXIT_FAIL;
		}
		if (split_uri(u, host, sizeof(host), port, sizeof(port), why,
			      sizeof(why))) {
			errf("%s", why);
			return EXIT_FAIL;
		}
		tls |= is_tls_uri(u);
		uris[n++] = u;
	}
	if (n == 0) {
		errf("--broker is empty");
		return EXIT_FAIL;
	}
	if (registry_token_new(rnd) != HUB_OK)
		snprintf(rnd, sizeof(rnd), "%lx",
			 (unsigned long)hub_clock_mono_us());
	rnd[8] = '\0';
	snprintf(cid, sizeof(cid), "hubctl-%ld-%s", (long)getpid(), rnd);

	co.MQTTVersion =
	    o->mqtt_version == 3 ? MQTTVERSION_3_1_1 : MQTTVERSION_5;
	rc = MQTTClient_createWithOptions(
	    &c, uris[0], cid, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
	if (rc != MQTTCLIENT_SUCCESS) {
		errf("bad broker URI %s: %s", uris[0], MQTTClient_strerror(rc));
		return EXIT_FAIL;
	}
	if (o->mqtt_version == 5)
		MQTTClient_setPublished(c, NULL, on_published);
	conn->keepAliveInterval = 30;
	if (o->mqtt_version == 3) {
		conn->MQTTVersion = MQTTVERSION_3_1_1;
		conn->cleansession = 1;
	} else {
		conn->cleanstart = 1;
	}
	conn->connectTimeout = MQTT_TIMEOUT_MS / 1000;
	conn->username = o->user;
	conn->password = o->password;
	if (n > 1) {
		conn->serverURIs = uris;
		conn->serverURIcount = n;
	}
	if (tls)
		ssl.verify = 1; /* check the broker's host name too */
	conn->ssl = &ssl;
	if (o->mqtt_version == 3) {
		/* 3.1.1 CONNACK codes 1..5 come back as rc > 0 */
		rc = MQTTClient_connect(c, conn);
		r.reasonCode = rc == MQTTCLIENT_SUCCESS
				   ? MQTTREASONCODE_SUCCESS
				   : (enum MQTTReasonCodes)rc;
	} else {
		r = MQTTClient_connect5(c, conn, NULL, NULL);
	}
	if (r.reasonCode != MQTTREASONCODE_SUCCESS) {
		if ((int)r.reasonCode > 0 && (int)r.reasonCode < 0x80 &&
		    o->mqtt_version == 5) {
			/* an MQTT 5 CONNACK refuses with >= 0x80: 1..5 is a
			 * 3.1.1 broker's CONNACK (1: unacceptable protocol
			 * version; NATS answers so), which Paho names as v5
			 * codes ("Granted QoS 1") */
			errf("cannot connect to broker %s: it answered with "
			     "an MQTT 3.1.1 refusal (code %d): a broker that "
			     "speaks only 3.1.1 (NATS, RabbitMQ) needs "
			     "--mqtt-version 3",
			     o->broker, (int)r.reasonCode);
		} else if ((int)r.reasonCode > 0 && o->mqtt_version == 3) {
			errf("cannot connect to broker %s: the broker "
			     "refused: MQTT 3.1.1 CONNACK code %d",
			     o->broker, (int)r.reasonCode);
		} else if ((int)r.reasonCode >= 0) {
			errf("cannot connect to broker %s: the broker "
			     "refused: %s",
			     o->broker, MQTTReasonCode_toString(r.reasonCode));
		} else {
			int tcp = 0;

			for (i = 0; i < n; i++) {
				tcp |= broker_why(uris[i], why, sizeof(why));
				errf("cannot connect to broker %s: %s", uris[i],
				     why);
			}
			if (tcp && o->mqtt_version == 5)
				errf("(if the broker speaks only MQTT 3.1.1 - "
				     "NATS, RabbitMQ - add --mqtt-version 3)");
		}
		MQTTResponse_free(r);
		MQTTClient_destroy(&c);
		return EXIT_FAIL;
	}
	MQTTResponse_free(r);
	*out = c;
	return 0;
}

static void
mqtt_close(const struct opts *o, MQTTClient c)
{
	if (!c)
		return;
	if (o->mqtt_version == 3)
		MQTTClient_disconnect(c, 1000);
	else
		MQTTClient_disconnect5(c, 1000, MQTTREASONCODE_SUCCESS, NULL);
	MQTTClient_destroy(&c);
}

/*
 * Publishes one message and waits for its PUBACK (QoS 1). ttl > 0 adds a
 * message expiry interval (MQTT 5 only: the callers refuse a ttl with
 * --mqtt-version 3). Returns 0 or EXIT_FAIL.
 */
static int
mqtt_publish(const struct opts *o, const char *topic, const char *payload,
	     size_t len, int qos, int retain, long long ttl)
{
	MQTTClient c = NULL;
	MQTTProperties props = MQTTProperties_initializer;
	MQTTClient_deliveryToken tok = 0;
	MQTTResponse r = MQTTResponse_initializer;
	int rc, ret = EXIT_FAIL, pr;

	if (len > 268435455u) {
		errf("payload larger than MQTT allows");
		return EXIT_FAIL;
	}
	if (ttl > 0 && o->mqtt_version == 3) {
		errf("MQTT 3.1.1 has no message expiry");
		return EXIT_FAIL;
	}
	if (mqtt_connect(o, &c))
		return EXIT_FAIL;
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
	if (o->mqtt_version == 3) {
		rc = MQTTClient_publish(c, topic, (int)len, payload, qos,
					retain, &tok);
	} else {
		r = MQTTClient_publish5(c, topic, (int)len, payload, qos,
					retain, &props, &tok);
		rc = r.reasonCode;
		MQTTResponse_free(r);
	}
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
		/* 3.1.1's PUBACK has no reason code: a broker that drops
		 * the message (an ACL) acknowledges it all the same */
		pr = o->mqtt_version == 5 ? atomic_load(&puback_rc) : 0;
		if (pr >= 0x80) {
			errf("broker refused %s: %s", topic,
			     MQTTReasonCode_toString((enum MQTTReasonCodes)pr));
			goto out;
		}
	}
	ret = 0;
out:
	mqtt_close(o, c);
	MQTTProperties_free(&props);
	return ret;
}

/*
 * kick and send act on a device by id through the broker: a typo would be
 * published into the void. Refuse an id the registry does not know, unless
 * --force (a device held by a hub with another registry).
 */
static int
check_known(const struct opts *o, const char *cmd, const char *id)
{
	struct registry *reg = NULL;
	struct registry_device d;
	int rc;

	if (o->force)
		return 0;
	rc = open_db(o, 0, &reg);
	if (rc) {
		errf("%s: cannot check that %s exists; --force sends without "
		     "checking",
		     cmd, id);
		return rc;
	}
	rc = registry_device_get(reg, id, &d);
	if (rc == HUB_ERR_NOTFOUND)
		errf("%s: no device %s in registry %s (--force sends anyway, "
		     "for a device held by a hub with another registry)",
		     cmd, id, o->db);
	else if (rc != HUB_OK)
		reg_fail(reg, cmd, id, rc);
	registry_close(reg);
	return rc == HUB_OK ? 0 : EXIT_FAIL;
}

static int
cmd_kick(const struct opts *o, const char *id)
{
	static const char payload[] = "{\"op\":\"kick\"}";
	char topic[32 + HUB_ID_MAX];
	int rc;

	if ((rc = check_known(o, "kick", id)))
		return rc;
	snprintf(topic, sizeof(topic), "hub/sessions/%s", id);
	rc = mqtt_publish(o, topic, payload, sizeof(payload) - 1, 1, 0, 0);
	if (rc == 0 && o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "id", id);
		cJSON_AddBoolToObject(j, "kicked", 1);
		json_print(j);
	} else if (rc == 0 && !o->quiet) {
		printf("kick for %s published to %s (QoS 1, broker "
		       "acknowledged)\n",
		       id, topic);
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
	if ((o->seen & O_TTL) && o->mqtt_version == 3)
		return usage_err("--ttl needs MQTT 5 (message expiry): with "
				 "--mqtt-version 3 commands are live only");
	/* the device sees "cmd/TOPIC": that is what must be valid */
	n = (size_t)snprintf(sub, sizeof(sub), "cmd/%s", rel);
	if (n >= sizeof(sub) || !proto_topic_valid(sub, n))
		return usage_err(
		    "invalid topic '%s' (no '+', '#', empty levels, "
		    "leading '/' or '$', control characters; at "
		    "most %d bytes)",
		    rel, TOPIC_MAX - 4);
	if (!o->prefix[0] || strchr(o->prefix, '+') || strchr(o->prefix, '#'))
		return usage_err("invalid --prefix '%s'", o->prefix);
	if (o->all || o->ngroups) {
		/* group and fleet commands are live: nothing waits for an
		 * offline member, so --retain would only mislead */
		const char *pre = o->all ? o->fleet_prefix : o->group_prefix;

		if (o->retain)
			return usage_err("send --group/--all: live only, no "
					 "--retain");
		if (!pre[0] || strchr(pre, '+') || strchr(pre, '#'))
			return usage_err("invalid topic prefix '%s'", pre);
		if (o->all)
			n = (size_t)snprintf(topic, sizeof(topic), "%s/%s", pre,
					     sub);
		else
			n = (size_t)snprintf(topic, sizeof(topic), "%s/%s/%s",
					     pre, o->groups[0], sub);
		if (n >= sizeof(topic))
			return usage_err("topic prefix too long");
	} else {
		n = (size_t)snprintf(topic, sizeof(topic), "%s/%s/%s",
				     o->prefix, id, sub);
		if (n >= sizeof(topic))
			return usage_err("--prefix too long");
		if ((rc = check_known(o, "send", id)))
			return rc;
	}
	rc = mqtt_publish(o, topic, payload, strlen(payload), (int)qos,
			  o->retain, (o->seen & O_TTL) ? o->ttl : 0);
	if (rc == 0 && o->json) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "topic", topic);
		cJSON_AddNumberToObject(j, "qos", (double)qos);
		cJSON_AddBoolToObject(j, "retain", o->retain);
		if (o->seen & O_TTL)
			json_int(j, "ttl", o->ttl);
		else
			cJSON_AddNullToObject(j, "ttl");
		json_print(j);
	} else if (rc == 0 && !o->quiet) {
		printf("published %s (%zu bytes): QoS %ld%s, ", topic,
		       strlen(payload), qos,
		       qos ? " (broker acknowledged)"
			   : " (no acknowledgement)");
		if (o->retain)
			printf("retained, expires in %lld s (waits for an "
			       "offline device)\n",
			       o->ttl);
		else if (o->seen & O_TTL)
			printf("not retained, expires in %lld s (reaches the "
			       "device only if it is online now)\n",
			       o->ttl);
		else if (o->all || o->ngroups)
			printf("not retained (reaches the %s connected now)\n",
			       o->all ? "devices" : "group's devices");
		else
			printf("not retained, no expiry (reaches the device "
			       "only if it is online now)\n");
	}
	return rc;
}

/* ---- watch ------------------------------------------------------------ */

static volatile sig_atomic_t watch_stop;

static void
on_watch_signal(int sig)
{
	(void)sig;
	watch_stop = 1;
}

/* One line for one status message: time, device, online/offline, details. */
static void
watch_line(const struct opts *o, const char *topic, const char *payload,
	   size_t len, int retained)
{
	const char *dev = topic + strlen(o->prefix) + 1, *slash;
	cJSON *j = cJSON_ParseWithLength(payload, len), *v;
	char t[40], id[HUB_ID_MAX + 1];
	size_t n;

	slash = strchr(dev, '/');
	n = slash ? (size_t)(slash - dev) : strlen(dev);
	if (n > HUB_ID_MAX)
		n = HUB_ID_MAX;
	memcpy(id, dev, n);
	id[n] = '\0';
	if (o->json) {
		cJSON *out = cJSON_CreateObject();

		cJSON_AddStringToObject(out, "device", id);
		cJSON_AddBoolToObject(out, "retained", retained);
		if (j)
			cJSON_AddItemToObject(out, "status", j);
		else
			cJSON_AddNullToObject(out, "status");
		j = NULL;
		json_print(out);
		fflush(stdout);
		return;
	}
	if (!j || !cJSON_IsObject(j)) {
		printf("%s %s ? %.*s\n", iso_time(hub_clock_ms(), t, sizeof(t)),
		       id, (int)(len > 200 ? 200 : len), payload);
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(j, "ts");
	printf("%s %s %s",
	       iso_time(cJSON_IsNumber(v) ? (int64_t)v->valuedouble
					  : hub_clock_ms(),
			t, sizeof(t)),
	       id,
	       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "online"))
		   ? "online"
		   : "offline");
	{
		static const char *const keys[] = {"reason", "addr", "hub",
						   "session"};
		size_t k;

		for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			v = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
			if (cJSON_IsString(v))
				printf(" %s=%s", keys[k], v->valuestring);
		}
	}
	printf("%s\n", retained ? " (retained: state before watch began)" : "");
out:
	fflush(stdout);
	cJSON_Delete(j);
}

static int
cmd_watch(const struct opts *o)
{
	MQTTClient c = NULL;
	MQTTSubscribe_options so = MQTTSubscribe_options_initializer;
	MQTTResponse r = MQTTResponse_initializer;
	char filter[TOPIC_MAX + HUB_ID_MAX + 64];
	struct sigaction sa;
	int rc, ret = EXIT_FAIL;

	if (o->device && (rc = check_id(o->device)))
		return rc;
	if (!o->prefix[0] || strchr(o->prefix, '+') || strchr(o->prefix, '#'))
		return usage_err("invalid --prefix '%s'", o->prefix);
	snprintf(filter, sizeof(filter), "%s/%s/status", o->prefix,
		 o->device ? o->device : "+");
	if (mqtt_connect(o, &c))
		return EXIT_FAIL;
	if (o->mqtt_version == 3) {
		/* 3.1.1 marks retained exactly the messages a new
		 * subscription brings: the state before watch began */
		rc = MQTTClient_subscribe(c, filter, 1);
		if (rc == MQTTCLIENT_SUCCESS)
			rc = 1;
	} else {
		/* tell live transitions from old state */
		so.retainAsPublished = 1;
		r = MQTTClient_subscribe5(c, filter, 1, &so, NULL);
		rc = r.reasonCode;
		MQTTResponse_free(r);
	}
	if (rc != 1 && rc != 0) {
		errf("cannot subscribe to %s: %s", filter,
		     rc < 0
			 ? MQTTClient_strerror(rc)
			 : MQTTReasonCode_toString((enum MQTTReasonCodes)rc));
		goto out;
	}
	if (!o->quiet && !o->json)
		fprintf(stderr, "hubctl: watching %s on %s (Ctrl-C stops)\n",
			filter, o->broker);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_watch_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	while (!watch_stop) {
		MQTTClient_message *m = NULL;
		char *topic = NULL;
		int tlen = 0;

		rc = MQTTClient_receive(c, &topic, &tlen, &m, 500);
		if (rc != MQTTCLIENT_SUCCESS &&
		    rc != MQTTCLIENT_TOPICNAME_TRUNCATED) {
			if (watch_stop)
				break;
			errf("lost the broker %s: %s", o->broker,
			     MQTTClient_strerror(rc));
			goto out;
		}
		if (m && topic) {
			if (m->payloadlen > 0)
				watch_line(o, topic, m->payload,
					   (size_t)m->payloadlen, m->retained);
		}
		if (m)
			MQTTClient_freeMessage(&m);
		if (topic)
			MQTTClient_free(topic);
		if (!MQTTClient_isConnected(c)) {
			errf("lost the broker %s", o->broker);
			goto out;
		}
	}
	ret = 0;
out:
	mqtt_close(o, c);
	return ret;
}

/* Paho's own version string ("1.3.12"), from MQTTClient_getVersionInfo. */
static const char *
paho_version(void)
{
	MQTTClient_nameValue *nv = MQTTClient_getVersionInfo();

	for (; nv && nv->name; nv++)
		if (!strcmp(nv->name, "Version"))
			return nv->value;
	return "?";
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
	} else if (!strcmp(sub, "add") || !strcmp(sub, "rotate-token")) {
		unsigned sig = O_SIGNED | O_TTL_DAYS | O_GROUP | O_DIR;

		rc = check_cmd(o,
			       !strcmp(sub, "add") ? "device add"
						   : "device rotate-token",
			       3, (!strcmp(sub, "add") ? O_NAME : 0) | sig);
		if (!rc && (o->seen & (sig & ~O_SIGNED)) && !o->is_signed)
			rc = usage_err("--ttl-days, --group and --dir go with "
				       "--signed");
	} else if (!strcmp(sub, "import") || !strcmp(sub, "show") ||
		   !strcmp(sub, "disable") || !strcmp(sub, "enable") ||
		   !strcmp(sub, "delete")) {
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
	rc = open_db(o, !strcmp(sub, "add") || !strcmp(sub, "import"), &reg);
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
		rc = open_db(o, 0, &reg);
		if (rc)
			return rc;
		rc = cmd_events(o, reg);
		registry_close(reg);
		return rc;
	}
	if (!strcmp(cmd, "kick")) {
		rc = check_cmd(o, "kick", 2, O_FORCE | O_QUIET);
		if (rc || (rc = check_id(o->pos[1])))
			return rc;
		return cmd_kick(o, o->pos[1]);
	}
	if (!strcmp(cmd, "send") && (o->all || o->ngroups)) {
		rc = check_cmd(o, "send --group/--all", 3,
			       O_QOS | O_TTL | O_RETAIN | O_QUIET | O_GROUP |
				   O_ALL);
		if (!rc && (o->ngroups > 1 || (o->all && o->ngroups)))
			rc = usage_err("send: one --group G, or --all");
		return rc ? rc : cmd_send(o, NULL, o->pos[1], o->pos[2]);
	}
	if (!strcmp(cmd, "send")) {
		rc = check_cmd(o, "send", 4,
			       O_QOS | O_RETAIN | O_TTL | O_FORCE | O_QUIET);
		if (rc || (rc = check_id(o->pos[1])))
			return rc;
		return cmd_send(o, o->pos[1], o->pos[2], o->pos[3]);
	}
	if (!strcmp(cmd, "group")) {
		const char *sub = o->npos > 1 ? o->pos[1] : "";

		if (!strcmp(sub, "list"))
			rc = check_cmd(o, "group list", 2, 0);
		else if (!strcmp(sub, "add") || !strcmp(sub, "remove"))
			rc = o->npos < 4 ? usage_err("group %s G ID...", sub)
					 : check_cmd(o, "group", o->npos, 0);
		else
			return usage_err("group: add, remove or list");
		if (rc)
			return rc;
		for (int i = 3; i < o->npos; i++)
			if ((rc = check_id(o->pos[i])))
				return rc;
		rc = open_db(o, 0, &reg);
		if (rc)
			return rc;
		rc = cmd_group(o, reg, sub);
		registry_close(reg);
		return rc;
	}
	if (!strcmp(cmd, "watch")) {
		rc = check_cmd(o, "watch", 1, O_DEVICE | O_QUIET);
		return rc ? rc : cmd_watch(o);
	}
	if (!strcmp(cmd, "fleet")) {
		if (o->npos < 2 || strcmp(o->pos[1], "init"))
			return usage_err("fleet: the subcommand is init");
		rc = check_cmd(o, "fleet init", 2, O_DIR);
		return rc ? rc : cmd_fleet_init(o);
	}
	if (!strcmp(cmd, "init")) {
		rc = check_cmd(o, "init", 1, O_QUIET);
		return rc ? rc : cmd_init(o);
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
	    .group_prefix = "groups",
	    .fleet_prefix = "fleet",
	    .mqtt_version = 5,
	};
	int rc;

	rc = parse_args(argc, argv, &o);
	if (rc == -2) {
		printf("hubctl %s (Paho MQTT C %s, SQLite %s)\n", HUB_VERSION,
		       paho_version(), sqlite3_libversion());
		return 0;
	}
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
