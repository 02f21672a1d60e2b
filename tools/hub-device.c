/*
 * hub-device - the reference device client, the example device developers
 * copy. It connects to a hub over wss (or ws), authenticates with a token
 * or a client certificate, publishes, prints every downlink message on
 * stdout (one JSON line each) and acks the ones with an id.
 *
 *   hub-device --url wss://HOST:8443 --id ID --token TOKEN [options]
 *
 * What it shows (docs/protocol.md):
 *   - frames are parsed as JSON (cJSON); a frame is an ack only when its
 *     "op" is "ack";
 *   - QoS 1 messages stay in an in-flight list until the hub's ack (the
 *     only proof the broker has them); after a reconnect they are resent
 *     first, in order, then whatever was still queued;
 *   - the close-code and HTTP-status table decides whether to reconnect:
 *     after 401, 403, 1007, 1008, 1009, 4001, 4003 it stops with a message
 *     and an exit code of its own (below); otherwise it reconnects with
 *     exponential backoff and full jitter. One exception: a 401 before it
 *     was ever connected is tried once more after 2 s, since a hub loads
 *     a device added a moment ago within ~2 s;
 *   - a dead-server timeout of its own: an app-level ping after a third of
 *     --idle-timeout without traffic, and a reconnect when nothing at all
 *     came for --idle-timeout (a silent proxy or a hung hub).
 *
 * Exit status: 0 done (--exit-after reached, or Ctrl-C); 1 gave up (a
 * connect failure with --no-reconnect); 2 bad usage; 3 refused: unknown
 * device or bad token (HTTP 401); 4 device disabled (HTTP 403 or close
 * 4003); 5 replaced by another instance of this device (4001); 6
 * credentials revoked (1008); 7 the hub rejected our frames (1007, 1009).
 *
 * Single-threaded: everything runs in lws's service loop.
 */
#include "hub_err.h"
#include "hub_util.h"
#include "proto.h"
#include "hub_version.h"

#include <cjson/cJSON.h>
#include <libwebsockets.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

enum {
	EXIT_DONE = 0,
	EXIT_GAVE_UP = 1,
	EXIT_USAGE = 2,
	EXIT_UNAUTHORIZED = 3,
	EXIT_DISABLED = 4,
	EXIT_REPLACED = 5,
	EXIT_REVOKED = 6,
	EXIT_REJECTED = 7,
};

struct opts {
	char url[512], id[HUB_ID_MAX + 1], token[PROTO_TOKEN_MAX + 1];
	char topic[257];
	char payload[4096], ca[512], servername[256], cert[512], key[512];
	int insecure, qos, quiet, verbose, no_reconnect, query_token;
	long count, interval_ms, exit_after, idle_s;
};

/* One outbound text frame; pubs at QoS 1 carry their id. */
struct frame {
	struct frame *next;
	uint32_t qos1_id; /* 0: not a QoS 1 pub */
	int is_pub;
	size_t len;
	unsigned char buf[]; /* LWS_PRE + len */
};

struct fifo {
	struct frame *head, *tail;
	long n;
};

#define OUT_MAX 10000 /* frames queued while the hub is away */

struct dev {
	struct opts o;
	struct lws_context *ctx;
	struct lws *wsi;
	char host[256], path[HUB_ID_MAX + PROTO_TOKEN_MAX + 32];
	int port, tls;
	lws_sorted_usec_list_t sul_pub, sul_conn, sul_watch, sul_retry;
	unsigned attempt;
	long sent, acked, received;
	uint32_t next_id;
	int connected, stop, exit_code, publishing;
	int ever_connected, retried_401;
	int64_t last_rx_ms, last_tx_ms;
	struct fifo out;	/* not yet written */
	struct fifo inflight;	/* QoS 1 written, awaiting the hub's ack */
	unsigned char *scratch; /* LWS_PRE + the frame being written */
	size_t scratch_cap;
};

static struct dev dev;
static volatile sig_atomic_t interrupted;

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: hub-device --url ws[s]://HOST:PORT --id ID\n"
	    "                  (--token TOKEN | --cert FILE --key FILE) "
	    "[options]\n"
	    "  --topic T          relative topic to publish on (telemetry)\n"
	    "  --payload JSON     payload (default: a counter object)\n"
	    "  --qos 0|1          (0); QoS 1 is resent until the hub acks\n"
	    "  --interval MS      between messages (1000)\n"
	    "  --count N          messages to send (0: forever)\n"
	    "  --exit-after N     exit 0 once N QoS 1 acks (or N QoS 0 sends)\n"
	    "  --ca FILE          CA of the hub's certificate (default: the "
	    "system's)\n"
	    "  --servername NAME  name to check the certificate against "
	    "(default: the URL's host)\n"
	    "  --cert F --key F   client certificate (CN = the device id)\n"
	    "  --insecure         accept any server certificate (tests only)\n"
	    "  --idle-timeout S   reconnect when the hub is silent for S s "
	    "(90)\n"
	    "  --query-token      send the token as ?token= (old clients)\n"
	    "  --no-reconnect     exit 1 instead of reconnecting\n"
	    "  --quiet, --verbose, --version, --help\n"
	    "exit: 0 done, 1 gave up, 2 usage, 3 HTTP 401, 4 disabled "
	    "(403/4003),\n"
	    "      5 replaced (4001), 6 revoked (1008), 7 frames rejected "
	    "(1007/1009)\n");
}

static int
bad_flag(const char *fmt, const char *flag)
{
	fputs("hub-device: ", stderr);
	fprintf(stderr, fmt, flag);
	fputs(" (hub-device --help)\n", stderr);
	return -1;
}

static int
parse_long(const char *s, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(s, &end, 10);
	return errno || end == s || *end || *out < 0 ? -1 : 0;
}

/* 0, -1 after naming the bad flag, or 1 for --help / --version done. */
static int
parse_args(struct opts *o, int argc, char **argv)
{
	static const struct {
		const char *name;
		int *flag;
	} flags[] = {{"--insecure", &dev.o.insecure},
		     {"--quiet", &dev.o.quiet},
		     {"--verbose", &dev.o.verbose},
		     {"--no-reconnect", &dev.o.no_reconnect},
		     {"--query-token", &dev.o.query_token}};
	int i;
	size_t k;

	memset(o, 0, sizeof(*o));
	snprintf(o->topic, sizeof(o->topic), "telemetry");
	o->interval_ms = 1000;
	o->idle_s = 90;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *dst = NULL;
		size_t cap = 0;
		long *num = NULL;
		int found = 0;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(a, "--version")) {
			printf("hub-device %s (libwebsockets %s)\n",
			       HUB_VERSION, LWS_LIBRARY_VERSION);
			return 1;
		}
		for (k = 0; k < sizeof(flags) / sizeof(flags[0]); k++)
			if (!strcmp(a, flags[k].name)) {
				*flags[k].flag = 1;
				found = 1;
			}
		if (found)
			continue;
		if (!strcmp(a, "--url"))
			dst = o->url, cap = sizeof(o->url);
		else if (!strcmp(a, "--id"))
			dst = o->id, cap = sizeof(o->id);
		else if (!strcmp(a, "--token"))
			dst = o->token, cap = sizeof(o->token);
		else if (!strcmp(a, "--topic"))
			dst = o->topic, cap = sizeof(o->topic);
		else if (!strcmp(a, "--payload"))
			dst = o->payload, cap = sizeof(o->payload);
		else if (!strcmp(a, "--ca"))
			dst = o->ca, cap = sizeof(o->ca);
		else if (!strcmp(a, "--servername"))
			dst = o->servername, cap = sizeof(o->servername);
		else if (!strcmp(a, "--cert"))
			dst = o->cert, cap = sizeof(o->cert);
		else if (!strcmp(a, "--key"))
			dst = o->key, cap = sizeof(o->key);
		else if (!strcmp(a, "--count"))
			num = &o->count;
		else if (!strcmp(a, "--interval"))
			num = &o->interval_ms;
		else if (!strcmp(a, "--exit-after"))
			num = &o->exit_after;
		else if (!strcmp(a, "--idle-timeout"))
			num = &o->idle_s;
		else if (!strcmp(a, "--qos")) {
			long q;

			if (!v || parse_long(v, &q) || q > 1)
				return bad_flag("--qos wants 0 or 1", a);
			o->qos = (int)q;
			i++;
			continue;
		} else
			return bad_flag("unknown flag %s", a);
		if (!v)
			return bad_flag("%s needs a value", a);
		if (dst) {
			if (strlen(v) >= cap)
				return bad_flag("value of %s is too long", a);
			memcpy(dst, v, strlen(v) + 1);
		} else if (parse_long(v, num))
			return bad_flag("%s wants a number >= 0", a);
		i++;
	}
	if (!o->url[0])
		return bad_flag("%s is missing", "--url");
	if (!o->id[0])
		return bad_flag("%s is missing", "--id");
	if (!proto_id_valid(o->id, strlen(o->id)))
		return bad_flag("%s: want [A-Za-z0-9_-]{1,64}", "--id");
	if (!o->token[0] && !o->cert[0])
		return bad_flag("%s (or --cert and --key) is missing",
				"--token");
	if (!o->cert[0] != !o->key[0])
		return bad_flag("%s needs both --cert and --key",
				o->cert[0] ? "--cert" : "--key");
	if (o->payload[0]) {
		cJSON *j = cJSON_Parse(o->payload);

		cJSON_Delete(j);
		if (!j)
			return bad_flag("%s is not valid JSON", "--payload");
	}
	if (o->idle_s && o->idle_s < 3)
		return bad_flag("%s wants at least 3 (or 0: off)",
				"--idle-timeout");
	return 0;
}

/* ---- the outbound queue -------------------------------------------------- */

static void
fifo_push(struct fifo *q, struct frame *f)
{
	f->next = NULL;
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
	q->n++;
}

static struct frame *
fifo_pop(struct fifo *q)
{
	struct frame *f = q->head;

	if (f) {
		q->head = f->next;
		if (!q->head)
			q->tail = NULL;
		f->next = NULL;
		q->n--;
	}
	return f;
}

static void
fifo_free(struct fifo *q)
{
	struct frame *f;

	while ((f = fifo_pop(q)))
		free(f);
}

/* Queues a text frame; pubs survive reconnects, acks and pings do not. */
static void
queue_text(struct dev *d, const char *s, size_t len, int is_pub,
	   uint32_t qos1_id)
{
	struct frame *f = malloc(sizeof(*f) + LWS_PRE + len);

	if (!f)
		return;
	f->qos1_id = qos1_id;
	f->is_pub = is_pub;
	f->len = len;
	memcpy(f->buf + LWS_PRE, s, len);
	fifo_push(&d->out, f);
	if (d->wsi && d->connected)
		lws_callback_on_writable(d->wsi);
}

/*
 * After a close: QoS 1 messages the hub never acked go first, in order,
 * then the frames never written; acks and pings of the old session are
 * dropped (downlink ids belong to the session that sent them).
 */
static void
requeue_after_close(struct dev *d)
{
	struct fifo keep = d->inflight;
	struct frame *f;

	d->inflight.head = d->inflight.tail = NULL;
	d->inflight.n = 0;
	while ((f = fifo_pop(&d->out))) {
		if (f->is_pub)
			fifo_push(&keep, f);
		else
			free(f);
	}
	d->out = keep;
}

static void
check_done(struct dev *d)
{
	long have = d->o.qos ? d->acked : d->sent;

	if (d->o.exit_after && have >= d->o.exit_after) {
		d->stop = 1;
		d->exit_code = EXIT_DONE;
		lws_cancel_service(d->ctx);
	}
}

static void
publish(lws_sorted_usec_list_t *sul)
{
	struct dev *d = lws_container_of(sul, struct dev, sul_pub);
	cJSON *j = cJSON_CreateObject(), *p;
	char *text;
	uint32_t id = 0;

	if (!j || d->stop || (d->o.count && d->sent >= d->o.count))
		goto out;
	if (d->out.n + d->inflight.n >= OUT_MAX) {
		/* the hub is away or slow: skip this one, try on schedule */
		lws_sul_schedule(d->ctx, 0, &d->sul_pub, publish,
				 d->o.interval_ms * LWS_US_PER_MS);
		goto out;
	}
	cJSON_AddStringToObject(j, "op", "pub");
	cJSON_AddStringToObject(j, "topic", d->o.topic);
	if (d->o.qos) {
		id = ++d->next_id;
		cJSON_AddNumberToObject(j, "qos", 1);
		cJSON_AddNumberToObject(j, "id", id);
	}
	if (d->o.payload[0]) {
		p = cJSON_Parse(d->o.payload);
	} else {
		p = cJSON_CreateObject();
		cJSON_AddStringToObject(p, "device", d->o.id);
		cJSON_AddNumberToObject(p, "seq", (double)(d->sent + 1));
		cJSON_AddNumberToObject(p, "ts", (double)hub_clock_ms());
	}
	cJSON_AddItemToObject(j, "payload", p);
	text = cJSON_PrintUnformatted(j);
	if (text) {
		queue_text(d, text, strlen(text), 1, id);
		cJSON_free(text);
		d->sent++;
		check_done(d);
	}
	if (!d->o.count || d->sent < d->o.count)
		lws_sul_schedule(d->ctx, 0, &d->sul_pub, publish,
				 d->o.interval_ms * LWS_US_PER_MS);
out:
	cJSON_Delete(j);
}

/* ---- connection ---------------------------------------------------------- */

static void connect_now(lws_sorted_usec_list_t *sul);

static void
stop_with(struct dev *d, int code, const char *why)
{
	fprintf(stderr, "hub-device: %s; not reconnecting (exit %d)\n", why,
		code);
	d->stop = 1;
	d->exit_code = code;
	lws_cancel_service(d->ctx);
}

static void
schedule_reconnect(struct dev *d)
{
	uint32_t rnd = 0, ms;

	if (d->stop)
		return;
	if (d->o.no_reconnect) {
		stop_with(d, EXIT_GAVE_UP, "connection lost (--no-reconnect)");
		return;
	}
	if (getrandom(&rnd, sizeof(rnd), 0) < 0)
		rnd = (uint32_t)rand();
	ms = hub_backoff_ms(d->attempt++, 500, 30000, rnd);
	if (!d->o.quiet)
		fprintf(stderr, "hub-device: reconnecting in %u ms\n", ms);
	lws_sul_schedule(d->ctx, 0, &d->sul_conn, connect_now,
			 (lws_usec_t)ms * LWS_US_PER_MS);
}

/* The close-code table of docs/protocol.md: 0 = reconnect, else exit. */
static int
close_code_exit(int code, const char **why)
{
	switch (code) {
	case 4001:
		*why = "replaced: another instance of this device connected "
		       "(4001)";
		return EXIT_REPLACED;
	case 4003:
		*why = "the device is disabled (4003)";
		return EXIT_DISABLED;
	case 1008:
		*why = "credentials revoked: device deleted or token rotated "
		       "(1008)";
		return EXIT_REVOKED;
	case 1007:
		*why = "the hub rejected a frame: invalid UTF-8 (1007)";
		return EXIT_REJECTED;
	case 1009:
		*why = "the hub rejected a frame larger than its --max-frame "
		       "(1009)";
		return EXIT_REJECTED;
	default:
		return 0;
	}
}

/* Once a second while connected: the dead-server timeout. */
static void
watchdog(lws_sorted_usec_list_t *sul)
{
	struct dev *d = lws_container_of(sul, struct dev, sul_watch);
	int64_t now = hub_clock_ms(), idle_ms = d->o.idle_s * 1000;
	static const char ping[] = "{\"op\":\"ping\"}";

	if (!d->connected || !d->wsi || !idle_ms)
		return;
	if (now - d->last_rx_ms > idle_ms) {
		fprintf(stderr, "hub-device: nothing from the hub for %ld s\n",
			d->o.idle_s);
		lws_set_timeout(d->wsi, PENDING_TIMEOUT_USER_OK,
				LWS_TO_KILL_ASYNC);
		return;
	}
	if (now - d->last_rx_ms > idle_ms / 3 &&
	    now - d->last_tx_ms > idle_ms / 3) {
		queue_text(d, ping, sizeof(ping) - 1, 0, 0);
		d->last_tx_ms = now;
	}
	lws_sul_schedule(d->ctx, 0, &d->sul_watch, watchdog, LWS_US_PER_SEC);
}

static void
connect_now(lws_sorted_usec_list_t *sul)
{
	struct dev *d = lws_container_of(sul, struct dev, sul_conn);
	struct lws_client_connect_info ci;

	memset(&ci, 0, sizeof(ci));
	ci.context = d->ctx;
	ci.address = d->host;
	ci.port = d->port;
	ci.path = d->path;
	/* the name the server certificate is checked against (and Host/SNI):
	 * lws's mbedTLS client matches names, not IP addresses */
	ci.host = d->o.servername[0] ? d->o.servername : d->host;
	ci.origin = ci.host;
	ci.protocol = "hub.v1";
	ci.pwsi = &d->wsi;
	if (d->tls) {
		ci.ssl_connection = LCCSCF_USE_SSL;
		if (d->o.insecure)
			ci.ssl_connection |=
			    LCCSCF_ALLOW_SELFSIGNED |
			    LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
			    LCCSCF_ALLOW_INSECURE;
	}
	if (!lws_client_connect_via_info(&ci))
		schedule_reconnect(d);
}

/* ---- frames from the hub --------------------------------------------------
 */

/* Removes QoS 1 message id from the in-flight list; 1 if it was there. */
static int
inflight_take(struct dev *d, uint32_t id, struct frame **out)
{
	struct frame **pp, *prev = NULL;

	for (pp = &d->inflight.head; *pp; prev = *pp, pp = &(*pp)->next) {
		if ((*pp)->qos1_id != id)
			continue;
		*out = *pp;
		*pp = (*pp)->next;
		if (d->inflight.tail == *out)
			d->inflight.tail = prev;
		(*out)->next = NULL;
		d->inflight.n--;
		return 1;
	}
	return 0;
}

/* A refused message goes again with the next write, at the latest in 1 s. */
static void
retry_later(lws_sorted_usec_list_t *sul)
{
	struct dev *d = lws_container_of(sul, struct dev, sul_retry);

	if (d->wsi && d->connected)
		lws_callback_on_writable(d->wsi);
}

static void
on_text(struct dev *d, const char *in, size_t len)
{
	cJSON *j = cJSON_ParseWithLength(in, len);
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "op");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
	int has_id = cJSON_IsNumber(id) && id->valuedouble >= 0 &&
		     id->valuedouble <= 4294967295.0;
	struct frame *f;
	char ack[64];
	int n;

	if (!cJSON_IsString(op)) {
		fprintf(stderr, "hub-device: not a protocol frame: %.*s\n",
			(int)(len > 200 ? 200 : len), in);
		goto out;
	}
	if (!strcmp(op->valuestring, "ack")) {
		if (has_id && inflight_take(d, (uint32_t)id->valuedouble, &f)) {
			free(f);
			d->acked++;
			check_done(d);
		}
		if (d->o.verbose)
			printf("%.*s\n", (int)len, in);
	} else if (!strcmp(op->valuestring, "pong")) {
		if (d->o.verbose)
			printf("%.*s\n", (int)len, in);
	} else if (!strcmp(op->valuestring, "err")) {
		const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
		int transient =
		    cJSON_IsString(code) &&
		    (!strcmp(code->valuestring, "rate_limited") ||
		     !strcmp(code->valuestring, "inflight_full") ||
		     !strcmp(code->valuestring, "broker_unavailable"));

		fprintf(stderr, "hub-device: %.*s\n", (int)len, in);
		/* not accepted: a transient refusal is sent again (at the
		 * queue's tail), a permanent one is dropped */
		if (has_id && inflight_take(d, (uint32_t)id->valuedouble, &f)) {
			if (transient) {
				fifo_push(&d->out, f);
				lws_sul_schedule(d->ctx, 0, &d->sul_retry,
						 retry_later, LWS_US_PER_SEC);
			} else {
				free(f);
			}
		}
	} else {
		d->received++;
		printf("%.*s\n", (int)len, in);
		fflush(stdout);
		/* take a downlink message that carries an id */
		if (!strcmp(op->valuestring, "msg") && has_id) {
			n = snprintf(ack, sizeof(ack),
				     "{\"op\":\"ack\",\"id\":%lu}",
				     (unsigned long)id->valuedouble);
			queue_text(d, ack, (size_t)n, 0, 0);
		}
	}
out:
	cJSON_Delete(j);
}

static int
callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
	 void *in, size_t len)
{
	struct dev *d = &dev;
	const char *why;
	struct frame *f;
	int code;

	(void)user;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
		unsigned char **p = in, *end = *p + len;
		char v[PROTO_TOKEN_MAX + 16]; /* signed tokens too */
		int n;

		if (d->o.query_token || !d->o.token[0])
			break;
		n = snprintf(v, sizeof(v), "Bearer %s", d->o.token);
		if (lws_add_http_header_by_token(wsi,
						 WSI_TOKEN_HTTP_AUTHORIZATION,
						 (unsigned char *)v, n, p, end))
			return -1;
		break;
	}
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		d->connected = 1;
		d->ever_connected = 1;
		d->attempt = 0;
		d->last_rx_ms = d->last_tx_ms = hub_clock_ms();
		if (!d->o.quiet)
			fprintf(stderr, "hub-device: connected as %s\n",
				d->o.id);
		/* publishing runs across reconnects: messages made while
		 * the hub is away wait in the queue */
		if (!d->publishing) {
			d->publishing = 1;
			lws_sul_schedule(d->ctx, 0, &d->sul_pub, publish, 1);
		}
		lws_sul_schedule(d->ctx, 0, &d->sul_watch, watchdog,
				 LWS_US_PER_SEC);
		if (d->out.head)
			lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		code = (int)lws_http_client_http_response(wsi);
		if (!code && in && strstr((const char *)in, "unauthorized"))
			code = 401;
		fprintf(stderr, "hub-device: connect failed: %s%s%.0d\n",
			in ? (const char *)in : "(no detail)",
			code ? ", HTTP " : "", code);
		d->wsi = NULL;
		d->connected = 0;
		if (code == 401 && !d->ever_connected && !d->retried_401) {
			/* a device added a moment ago: the hub loads new
			 * credentials within ~2 s. One more try, then stop. */
			d->retried_401 = 1;
			fprintf(stderr,
				"hub-device: refused (401); the hub may "
				"not have loaded a new device yet: one "
				"more try in 2 s\n");
			lws_sul_schedule(d->ctx, 0, &d->sul_conn, connect_now,
					 2 * LWS_US_PER_SEC);
		} else if (code == 401)
			stop_with(d, EXIT_UNAUTHORIZED,
				  "refused: unknown device or bad token (401)");
		else if (code == 403)
			stop_with(d, EXIT_DISABLED,
				  "refused: the device is disabled (403)");
		else /* 429, 503 and network faults: try again */
			schedule_reconnect(d);
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		d->last_rx_ms = hub_clock_ms();
		if (lws_frame_is_binary(wsi)) {
			d->received++;
			printf("{\"binary\":%zu}\n", len);
			fflush(stdout);
		} else
			on_text(d, in, len);
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
		d->last_rx_ms = hub_clock_ms();
		break;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (len < 2)
			break;
		code = ((const unsigned char *)in)[0] << 8 |
		       ((const unsigned char *)in)[1];
		fprintf(stderr, "hub-device: closed by hub: %d %.*s\n", code,
			(int)len - 2, (const char *)in + 2);
		if ((code = close_code_exit(code, &why)))
			stop_with(d, code, why);
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		f = fifo_pop(&d->out);
		if (!f)
			break;
		/* lws masks a client frame in place: write a copy, so the
		 * frame stays resendable */
		if (d->scratch_cap < LWS_PRE + f->len) {
			unsigned char *nb =
			    realloc(d->scratch, LWS_PRE + f->len);

			if (!nb)
				return -1;
			d->scratch = nb;
			d->scratch_cap = LWS_PRE + f->len;
		}
		memcpy(d->scratch + LWS_PRE, f->buf + LWS_PRE, f->len);
		if (lws_write(wsi, d->scratch + LWS_PRE, f->len,
			      LWS_WRITE_TEXT) < (int)f->len) {
			/* not sent: first again after the reconnect */
			f->next = d->out.head;
			d->out.head = f;
			if (!d->out.tail)
				d->out.tail = f;
			d->out.n++;
			return -1;
		}
		d->last_tx_ms = hub_clock_ms();
		if (f->qos1_id)
			fifo_push(&d->inflight, f);
		else
			free(f);
		if (d->out.head)
			lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		d->wsi = NULL;
		d->connected = 0;
		lws_sul_cancel(&d->sul_watch);
		requeue_after_close(d);
		schedule_reconnect(d);
		break;
	default:
		break;
	}
	return 0;
}

/* Appends the file at path to *buf (NUL-terminated); 0 or -1 (said). */
static int
append_file(const char *path, unsigned char **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *nb;
	long n;

	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || n > 1 << 20 ||
	    fseek(f, 0, SEEK_SET)) {
		fprintf(stderr, "hub-device: cannot read %s: %s\n", path,
			strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	nb = realloc(*buf, *len + (size_t)n + 2);
	if (!nb || fread(nb + *len, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "hub-device: cannot read %s\n", path);
		if (nb)
			*buf = nb;
		fclose(f);
		return -1;
	}
	fclose(f);
	*buf = nb;
	*len += (size_t)n;
	nb[(*len)++] = '\n';
	nb[*len] = '\0';
	return 0;
}

/* --cert and --key as one PEM buffer, length including its NUL. */
static int __attribute__((unused))
load_pems(const char *cert, const char *key, unsigned char **out, size_t *len)
{
	*out = NULL;
	*len = 0;
	if (append_file(cert, out, len) || append_file(key, out, len))
		return -1;
	(*len)++; /* the NUL: mbedTLS parses PEM only with it counted */
	return 0;
}

static const struct lws_protocols protocols[] = {
    {"hub.v1", callback, 0, 65536, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

static void
on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

int
main(int argc, char **argv)
{
	struct lws_context_creation_info info;
	const char *prot, *addr, *path;
	char urlbuf[512];
	struct dev *d = &dev;
	unsigned char *pem = NULL;
	size_t pem_len = 0;
	int rc;

	rc = parse_args(&d->o, argc, argv);
	if (rc)
		return rc > 0 ? 0 : EXIT_USAGE;
	if ((size_t)snprintf(urlbuf, sizeof(urlbuf), "%s", d->o.url) >=
		sizeof(urlbuf) ||
	    lws_parse_uri(urlbuf, &prot, &addr, &d->port, &path) ||
	    (strcmp(prot, "wss") && strcmp(prot, "ws"))) {
		fprintf(stderr,
			"hub-device: bad --url %s (want wss://HOST:PORT or "
			"ws://HOST:PORT)\n",
			d->o.url);
		return EXIT_USAGE;
	}
	d->tls = !strcmp(prot, "wss");
	if ((size_t)snprintf(d->host, sizeof(d->host), "%s", addr) >=
		sizeof(d->host) ||
	    (size_t)snprintf(d->path, sizeof(d->path),
			     d->o.query_token ? "/v1/devices/%s?token=%s"
					      : "/v1/devices/%s",
			     d->o.id, d->o.token) >= sizeof(d->path)) {
		fprintf(stderr, "hub-device: --url too long\n");
		return EXIT_USAGE;
	}
	signal(SIGINT, on_sigint);
	signal(SIGTERM, on_sigint);
	lws_set_log_level(d->o.verbose ? LLL_ERR | LLL_WARN : 0, NULL);

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	if (d->o.ca[0])
		info.client_ssl_ca_filepath = d->o.ca;
	if (d->o.cert[0]) {
#if LWS_LIBRARY_VERSION_NUMBER < 4002000
		/* lws 4.1 with mbedTLS ignores the key file and reads the key
		 * from the certificate file, one byte past its buffer: hand it
		 * both PEMs in one NUL-terminated buffer instead */
		if (load_pems(d->o.cert, d->o.key, &pem, &pem_len)) {
			free(pem);
			return EXIT_USAGE;
		}
		info.client_ssl_cert_mem = pem;
		info.client_ssl_cert_mem_len = (unsigned int)pem_len;
#else
		(void)pem_len;
		info.client_ssl_cert_filepath = d->o.cert;
		info.client_ssl_private_key_filepath = d->o.key;
#endif
	}
	d->ctx = lws_create_context(&info);
	if (!d->ctx) {
		fprintf(stderr, "hub-device: cannot start (unreadable --ca, "
				"--cert or --key?)\n");
		free(pem);
		return EXIT_GAVE_UP;
	}
	d->exit_code = EXIT_GAVE_UP;
	lws_sul_schedule(d->ctx, 0, &d->sul_conn, connect_now, 1);
	while (!interrupted && !d->stop)
		if (lws_service(d->ctx, 0) < 0)
			break;
	if (interrupted)
		d->exit_code = EXIT_DONE;
	lws_context_destroy(d->ctx);
	free(pem);
	free(d->scratch);
	fifo_free(&d->out);
	fifo_free(&d->inflight);
	if (!d->o.quiet)
		fprintf(stderr, "hub-device: sent %ld acked %ld received %ld\n",
			d->sent, d->acked, d->received);
	return d->exit_code;
}
