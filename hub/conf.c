/*
 * conf.c - defaults, INI file, flags; see conf.h. Main thread, before fork.
 */
#include "conf.h"
#include "hub_err.h"
#include "hub_util.h"
#include "proto.h"

#include <ini.h>

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

enum opt_type { OPT_STR, OPT_INT, OPT_BOOL, OPT_ADDR, OPT_SIZE };

struct opt {
	const char *name;
	enum opt_type type;
	size_t off, len; /* len: buffer size for OPT_STR / host for OPT_ADDR */
	long min, max;
	const char *help;
};

/* OPT_ADDR writes the port into the int that follows the host buffer */
_Static_assert(offsetof(struct conf, listen_port) ==
		   offsetof(struct conf, listen_host) +
		       sizeof(((struct conf *)0)->listen_host),
	       "listen_port must follow listen_host");
_Static_assert(offsetof(struct conf, http_port) ==
		   offsetof(struct conf, http_host) +
		       sizeof(((struct conf *)0)->http_host),
	       "http_port must follow http_host");

#define S(f) offsetof(struct conf, f), sizeof(((struct conf *)0)->f)
#define I(f) offsetof(struct conf, f), 0

static const struct opt opts[] = {
    {"listen", OPT_ADDR, S(listen_host), 0, 0,
     "HOST:PORT device listener (0.0.0.0:8443)"},
    {"tls-cert", OPT_STR, S(tls_cert), 0, 0, "FILE server certificate (PEM)"},
    {"tls-key", OPT_STR, S(tls_key), 0, 0, "FILE server key (PEM)"},
    {"no-tls", OPT_BOOL, I(no_tls), 0, 1,
     "plain ws behind a TLS-terminating proxy"},
    {"device-ca", OPT_STR, S(device_ca), 0, 0,
     "FILE CA for device client certificates"},
    {"ticket-key", OPT_STR, S(ticket_key), 0, 0,
     "FILE TLS session-ticket secret shared by hubs (random per start)"},
    {"token-key", OPT_STR, S(token_key), 0, 0,
     "FILE[,FILE] public key(s) of signed fleet tokens (none)"},
    {"db", OPT_STR, S(db), 0, 0, "FILE registry (var/registry.db)"},
    {"broker", OPT_STR, S(broker), 0, 0,
     "URI MQTT broker (tcp://127.0.0.1:1883)"},
    {"broker-user", OPT_STR, S(broker_user), 0, 0, "NAME broker user"},
    {"broker-password", OPT_STR, S(broker_password), 0, 0,
     "PW broker password"},
    {"mqtt-version", OPT_INT, I(mqtt_version), 3, 5, "5 or 3 (5)"},
    {"hub-id", OPT_STR, S(hub_id), 0, 0, "ID this hub's id (host name)"},
    {"workers", OPT_INT, I(workers), 0, 64, "N worker processes (derived)"},
    {"max-conns", OPT_INT, I(max_conns), 1, 10000000,
     "N devices per hub (100000)"},
    {"prefix", OPT_STR, S(prefix), 0, 0, "TOPIC MQTT topic prefix (devices)"},
    {"group-prefix", OPT_STR, S(group_prefix), 0, 0,
     "TOPIC group commands: TOPIC/G/cmd/# (groups)"},
    {"fleet-prefix", OPT_STR, S(fleet_prefix), 0, 0,
     "TOPIC fleet commands: TOPIC/cmd/# (fleet)"},
    {"http", OPT_ADDR, S(http_host), 0, 0,
     "HOST:PORT metrics/health (127.0.0.1:9100)"},
    {"heartbeat", OPT_INT, I(heartbeat), 1, 3600, "SECS ping interval (30)"},
    {"idle-timeout", OPT_INT, I(idle_timeout), 2, 7200,
     "SECS silence before close (75)"},
    {"max-frame", OPT_INT, I(max_frame), 64, 16777216,
     "BYTES frame cap (65536)"},
    {"rate", OPT_INT, I(rate), 1, 1000000, "N messages/s per device (1000)"},
    {"rate-bytes", OPT_INT, I(rate_bytes), 64, 1073741824,
     "BYTES/s per device (1048576)"},
    {"inflight", OPT_INT, I(inflight), 1, 65535,
     "N unacked QoS 1 per device (256)"},
    {"auth-fail-limit", OPT_INT, I(auth_fail_limit), 1, 1000000,
     "N failures/min per address (20)"},
    {"drain", OPT_INT, I(drain), 0, 3600,
     "SECS spread of closes on SIGTERM (10)"},
    {"max-pending-per-addr", OPT_INT, I(max_pending_per_addr), 1, 1000000,
     "N unauthenticated connections per address (32)"},
    {"handshake-timeout", OPT_INT, I(handshake_timeout), 1, 300,
     "SECS to finish TLS and the upgrade (10)"},
    {"events-retention", OPT_INT, I(events_retention), 1, 36500,
     "DAYS events are kept (30)"},
    {"trusted-proxies", OPT_STR, S(trusted_proxies), 0, 0,
     "CIDR,... peers whose PROXY header or X-Forwarded-For is believed"},
    {"allowed-origins", OPT_STR, S(allowed_origins), 0, 0,
     "ORIGIN,... browser origins accepted (any)"},
    {"log-level", OPT_INT, I(log_level), 0, 3, "0 err .. 3 debug (2)"},
    {"bridge-buffer", OPT_SIZE, I(bridge_buffer), 1, 10000000,
     "N QoS 1 messages held while the broker is away (100000)"},
    {"bridge-window", OPT_INT, I(bridge_window), 1, 16384,
     "N messages in flight to the broker per worker (1000)"},
    {"http-token", OPT_STR, S(http_token), 0, 0,
     "FILE bearer token the ops listener requires (none)"},
};

static char usage_buf[4096];

const char *
conf_usage(void)
{
	size_t n = 0;
	size_t i;

	n += (size_t)snprintf(usage_buf, sizeof(usage_buf),
			      "usage: hubd [--config FILE] [flags]\n");
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]) && n < sizeof(usage_buf);
	     i++)
		n += (size_t)snprintf(usage_buf + n, sizeof(usage_buf) - n,
				      "  --%-16s %s\n", opts[i].name,
				      opts[i].help);
	return usage_buf;
}

static void
defaults(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->listen_host, sizeof(c->listen_host), "0.0.0.0");
	c->listen_port = 8443;
	snprintf(c->db, sizeof(c->db), "var/registry.db");
	snprintf(c->broker, sizeof(c->broker), "tcp://127.0.0.1:1883");
	c->mqtt_version = 5;
	if (gethostname(c->hub_id, sizeof(c->hub_id)) != 0 || !c->hub_id[0])
		snprintf(c->hub_id, sizeof(c->hub_id), "hub");
	c->hub_id[sizeof(c->hub_id) - 1] = '\0';
	c->max_conns = 100000;
	snprintf(c->prefix, sizeof(c->prefix), "devices");
	snprintf(c->group_prefix, sizeof(c->group_prefix), "groups");
	snprintf(c->fleet_prefix, sizeof(c->fleet_prefix), "fleet");
	snprintf(c->http_host, sizeof(c->http_host), "127.0.0.1");
	c->http_port = 9100;
	c->heartbeat = 30;
	c->idle_timeout = 75;
	c->max_frame = 65536;
	c->rate = 1000;
	c->rate_bytes = 1048576;
	c->inflight = 256;
	c->max_pending_per_addr = 32;
	c->handshake_timeout = 10;
	c->events_retention = 30;
	c->auth_fail_limit = 20;
	c->drain = 10;
	c->log_level = 2;
	c->bridge_buffer = 100000;
	c->bridge_window = CONF_BRIDGE_WINDOW;
}

static const struct opt *
find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (!strcmp(opts[i].name, name))
			return &opts[i];
	return NULL;
}

static int
parse_long(const char *v, long min, long max, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < min || n > max)
		return HUB_ERR_INVAL;
	*out = n;
	return HUB_OK;
}

static int
set(struct conf *c, const struct opt *o, const char *v, char *err,
    size_t errlen)
{
	char *base = (char *)c + o->off;
	long n;

	switch (o->type) {
	case OPT_STR:
		if (strlen(v) >= o->len) {
			snprintf(err, errlen, "--%s: too long", o->name);
			return HUB_ERR_INVAL;
		}
		memcpy(base, v, strlen(v) + 1);
		return HUB_OK;
	case OPT_BOOL:
		if (!v || !*v || !strcmp(v, "1") || !strcmp(v, "true") ||
		    !strcmp(v, "yes") || !strcmp(v, "on"))
			*(int *)base = 1;
		else if (!strcmp(v, "0") || !strcmp(v, "false") ||
			 !strcmp(v, "no") || !strcmp(v, "off"))
			*(int *)base = 0;
		else {
			snprintf(err, errlen, "--%s: not a boolean: %s",
				 o->name, v);
			return HUB_ERR_INVAL;
		}
		return HUB_OK;
	case OPT_INT:
	case OPT_SIZE:
		if (parse_long(v, o->min, o->max, &n)) {
			snprintf(err, errlen,
				 "--%s: want a number in %ld..%ld: %s", o->name,
				 o->min, o->max, v);
			return HUB_ERR_INVAL;
		}
		if (o->type == OPT_INT)
			*(int *)base = (int)n;
		else
			*(size_t *)base = (size_t)n;
		return HUB_OK;
	case OPT_ADDR: {
		const char *colon = strrchr(v, ':');
		int *port = (int *)(base + o->len);
		size_t hl;

		/* the port field follows the host buffer in struct conf */
		if (!colon || parse_long(colon + 1, 1, 65535, &n)) {
			snprintf(err, errlen, "--%s: want HOST:PORT: %s",
				 o->name, v);
			return HUB_ERR_INVAL;
		}
		hl = (size_t)(colon - v);
		if (hl && v[0] == '[' && v[hl - 1] == ']') {
			v++;
			hl -= 2;
		}
		if (hl >= o->len) {
			snprintf(err, errlen, "--%s: host too long", o->name);
			return HUB_ERR_INVAL;
		}
		memcpy(base, v, hl);
		base[hl] = '\0';
		if (!hl)
			snprintf(base, o->len, "0.0.0.0");
		*port = (int)n;
		return HUB_OK;
	}
	}
	return HUB_ERR_INVAL;
}

struct ini_ctx {
	struct conf *c;
	char *err;
	size_t errlen;
	int rc;
};

static int
ini_cb(void *arg, const char *section, const char *name, const char *value)
{
	struct ini_ctx *x = arg;
	const struct opt *o = find(name);

	(void)section;
	if (x->rc)
		return 0;
	if (!o) {
		snprintf(x->err, x->errlen, "config: unknown key '%s'", name);
		x->rc = HUB_ERR_INVAL;
		return 0;
	}
	x->rc = set(x->c, o, value, x->err, x->errlen);
	return x->rc ? 0 : 1;
}

/*
 * The session-ticket secret: --ticket-key's bytes (32..1024, a file that
 * only its owner may read: it decrypts every resumable session), or 32
 * random bytes. Runs in the supervisor, before the workers fork.
 */
static int
load_ticket_secret(struct conf *c, char *err, size_t errlen)
{
	size_t cap = sizeof(c->ticket_secret), n = 0;
	struct stat st;
	ssize_t r;
	int fd, rc = HUB_ERR_INVAL;

	if (!c->ticket_key[0]) {
		while (n < 32) {
			r = getrandom(c->ticket_secret + n, 32 - n, 0);
			if (r < 0 && errno != EINTR) {
				snprintf(err, errlen, "getrandom: %s",
					 strerror(errno));
				return HUB_ERR_IO;
			}
			if (r > 0)
				n += (size_t)r;
		}
		c->ticket_secret_len = n;
		return HUB_OK;
	}
	fd = open(c->ticket_key, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "--ticket-key %s: %s", c->ticket_key,
			 strerror(errno));
		return HUB_ERR_INVAL;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "--ticket-key %s: not a regular file",
			 c->ticket_key);
		goto out;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen,
			 "--ticket-key %s: readable or writable by others "
			 "(chmod 600)",
			 c->ticket_key);
		goto out;
	}
	for (;;) {
		r = read(fd, c->ticket_secret + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "--ticket-key %s: %s",
				 c->ticket_key, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == cap) {
			char extra;

			if (read(fd, &extra, 1) != 0) {
				snprintf(
				    err, errlen,
				    "--ticket-key %s: longer than %zu bytes",
				    c->ticket_key, cap);
				goto out;
			}
			break;
		}
	}
	if (n < 32) {
		snprintf(err, errlen,
			 "--ticket-key %s: want at least 32 bytes of secret "
			 "(e.g. head -c 48 /dev/urandom), got %zu",
			 c->ticket_key, n);
		goto out;
	}
	c->ticket_secret_len = n;
	rc = HUB_OK;
out:
	close(fd);
	return rc;
}

int
conf_load(struct conf *c, int argc, char **argv, char *err, size_t errlen)
{
	const char *file = NULL;
	int i, rc;

	defaults(c);
	/* the file first, so flags win wherever they stand */
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			file = argv[++i];
		else if (!strncmp(argv[i], "--config=", 9))
			file = argv[i] + 9;
	}
	if (file) {
		struct ini_ctx x = {c, err, errlen, 0};
		int line = ini_parse(file, ini_cb, &x);

		if (line < 0) {
			snprintf(err, errlen, "config: cannot read %s", file);
			return HUB_ERR_INVAL;
		}
		if (x.rc)
			return x.rc;
		if (line > 0) {
			snprintf(err, errlen,
				 "config: %s: syntax error on line %d", file,
				 line);
			return HUB_ERR_INVAL;
		}
	}
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		char name[64];
		const struct opt *o;
		const char *eq;

		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			return HUB_ERR_EXISTS;
		if (strncmp(a, "--", 2)) {
			snprintf(err, errlen, "unexpected argument: %s", a);
			return HUB_ERR_INVAL;
		}
		a += 2;
		eq = strchr(a, '=');
		if (eq) {
			if ((size_t)(eq - a) >= sizeof(name)) {
				snprintf(err, errlen, "unknown flag: --%s", a);
				return HUB_ERR_INVAL;
			}
			memcpy(name, a, (size_t)(eq - a));
			name[eq - a] = '\0';
			v = eq + 1;
		} else {
			snprintf(name, sizeof(name), "%s", a);
		}
		if (!strcmp(name, "config")) {
			if (!eq)
				i++;
			continue;
		}
		o = find(name);
		if (!o) {
			snprintf(err, errlen, "unknown flag: --%s", name);
			return HUB_ERR_INVAL;
		}
		if (!v && o->type != OPT_BOOL) {
			if (i + 1 >= argc) {
				snprintf(err, errlen, "--%s needs a value",
					 name);
				return HUB_ERR_INVAL;
			}
			v = argv[++i];
		}
		rc = set(c, o, v ? v : "1", err, errlen);
		if (rc)
			return rc;
	}
	if (!c->no_tls && (!c->tls_cert[0] || !c->tls_key[0])) {
		snprintf(err, errlen,
			 "--tls-cert and --tls-key are required (or --no-tls)");
		return HUB_ERR_INVAL;
	}
	if (c->idle_timeout <= c->heartbeat) {
		snprintf(err, errlen,
			 "--idle-timeout must be longer than --heartbeat");
		return HUB_ERR_INVAL;
	}
	if (c->mqtt_version != 3 && c->mqtt_version != 5) {
		snprintf(err, errlen, "--mqtt-version must be 3 or 5");
		return HUB_ERR_INVAL;
	}
	if (!proto_id_valid(c->hub_id, strlen(c->hub_id))) {
		snprintf(err, errlen,
			 "--hub-id must match [A-Za-z0-9_-]{1,64}");
		return HUB_ERR_INVAL;
	}
	{
		struct proto_cidr cidrs[CONF_PROXIES_MAX];
		size_t n;

		if (proto_cidrs_parse(c->trusted_proxies, cidrs,
				      CONF_PROXIES_MAX, &n)) {
			snprintf(err, errlen,
				 "--trusted-proxies: want up to %d CIDRs "
				 "(10.0.0.0/8,fd00::/8)",
				 CONF_PROXIES_MAX);
			return HUB_ERR_INVAL;
		}
	}
	if (!proto_prefix_valid(c->prefix)) {
		snprintf(err, errlen,
			 "--prefix must be a plain topic outside the hub's "
			 "own hub/, groups/ and fleet/");
		return HUB_ERR_INVAL;
	}
	if (!proto_topic_valid(c->group_prefix, strlen(c->group_prefix)) ||
	    !proto_topic_valid(c->fleet_prefix, strlen(c->fleet_prefix)) ||
	    !strcmp(c->group_prefix, c->fleet_prefix)) {
		snprintf(err, errlen,
			 "--group-prefix and --fleet-prefix must be two "
			 "different plain topics");
		return HUB_ERR_INVAL;
	}
	if (!c->no_tls)
		return load_ticket_secret(c, err, errlen);
	return HUB_OK;
}

int
conf_workers(const struct conf *c, long fd_limit, long cores)
{
	/* each session is one fd; keep ~10% headroom for the db, broker, logs
	 */
	long per = fd_limit > 1000 ? fd_limit * 9 / 10 : 900;
	long n;

	if (c->workers > 0)
		return c->workers;
	n = (c->max_conns + per - 1) / per;
	if (n < cores)
		n = cores;
	if (n < 1)
		n = 1;
	if (n > 64)
		n = 64;
	return (int)n;
}
