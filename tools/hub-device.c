/*
 * hub-device - the reference device client: connects to a hub over wss (or
 * ws), authenticates with its token, publishes, prints every downlink
 * message on stdout (one JSON line each) and acks the ones with an id, and
 * reconnects with exponential backoff and full jitter.
 *
 *   hub-device --url wss://HOST:8443 --id ID --token TOKEN [options]
 *
 * Single-threaded: everything runs in lws's service loop.
 */
#include "hub_err.h"
#include "hub_util.h"
#include "proto.h"

#include <libwebsockets.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct opts {
	char url[512], id[HUB_ID_MAX + 1], token[256], topic[257];
	char payload[4096], ca[512], servername[256];
	int insecure, qos, quiet, verbose, no_reconnect, query_token;
	long count, interval_ms, exit_after;
};

struct dev {
	struct opts o;
	struct lws_context *ctx;
	struct lws *wsi;
	char host[256], path[700];
	int port, tls;
	lws_sorted_usec_list_t sul_pub, sul_conn;
	unsigned attempt;
	long sent, acked, received;
	uint32_t next_id;
	int connected, stop, exit_code;
	/* outbound frames waiting for WRITEABLE */
	struct frame {
		struct frame *next;
		size_t len;
		unsigned char buf[];
	} * head, *tail;
};

static struct dev dev;
static volatile sig_atomic_t interrupted;

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: hub-device --url ws[s]://HOST:PORT --id ID --token TOKEN\n"
	    "  [--topic T] (telemetry) [--payload JSON] [--qos 0|1] (0)\n"
	    "  [--interval MS] (1000) [--count N] (0: forever)\n"
	    "  [--exit-after N] exit 0 once N QoS 1 acks (or N messages at "
	    "QoS 0) are in\n"
	    "  [--ca FILE] [--insecure] [--query-token] [--no-reconnect] "
	    "[--quiet] [--verbose]\n");
}

static int
parse_long(const char *s, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(s, &end, 10);
	return errno || end == s || *end || *out < 0 ? -1 : 0;
}

static int
parse_args(struct opts *o, int argc, char **argv)
{
	int i;

	memset(o, 0, sizeof(*o));
	snprintf(o->topic, sizeof(o->topic), "telemetry");
	o->interval_ms = 1000;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *dst = NULL;
		size_t cap = 0;
		long *num = NULL;

		if (!strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(a, "--insecure")) {
			o->insecure = 1;
			continue;
		} else if (!strcmp(a, "--quiet")) {
			o->quiet = 1;
			continue;
		} else if (!strcmp(a, "--verbose")) {
			o->verbose = 1;
			continue;
		} else if (!strcmp(a, "--no-reconnect")) {
			o->no_reconnect = 1;
			continue;
		} else if (!strcmp(a, "--query-token")) {
			o->query_token = 1;
			continue;
		}
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
		else if (!strcmp(a, "--count"))
			num = &o->count;
		else if (!strcmp(a, "--interval"))
			num = &o->interval_ms;
		else if (!strcmp(a, "--exit-after"))
			num = &o->exit_after;
		else if (!strcmp(a, "--qos")) {
			long q;
			if (!v || parse_long(v, &q) || q > 1)
				return -1;
			o->qos = (int)q;
			i++;
			continue;
		} else
			return -1;
		if (!v)
			return -1;
		if (dst) {
			if (strlen(v) >= cap)
				return -1;
			memcpy(dst, v, strlen(v) + 1);
		} else if (parse_long(v, num))
			return -1;
		i++;
	}
	if (!o->url[0] || !proto_id_valid(o->id, strlen(o->id)) || !o->token[0])
		return -1;
	return 0;
}

static void
queue_text(struct dev *d, const char *s, size_t len)
{
	struct frame *f = malloc(sizeof(*f) + LWS_PRE + len);

	if (!f)
		return;
	f->next = NULL;
	f->len = len;
	memcpy(f->buf + LWS_PRE, s, len);
	if (d->tail)
		d->tail->next = f;
	else
		d->head = f;
	d->tail = f;
	if (d->wsi)
		lws_callback_on_writable(d->wsi);
}

static void
drop_queue(struct dev *d)
{
	struct frame *f, *n;

	for (f = d->head; f; f = n) {
		n = f->next;
		free(f);
	}
	d->head = d->tail = NULL;
}

static void
check_done(struct dev *d)
{
	long have = d->o.qos ? d->acked : d->sent;

	if (d->o.exit_after && have >= d->o.exit_after) {
		d->stop = 1;
		d->exit_code = 0;
		lws_cancel_service(d->ctx);
	}
}

static void
publish(lws_sorted_usec_list_t *sul)
{
	struct dev *d = lws_container_of(sul, struct dev, sul_pub);
	char buf[4600];
	int n;

	if (!d->connected || d->stop)
		return;
	if (d->o.count && d->sent >= d->o.count)
		return;
	if (d->o.qos)
		n = snprintf(buf, sizeof(buf),
			     "{\"op\":\"pub\",\"topic\":\"%s\",\"qos\":1,"
			     "\"id\":%u,\"payload\":",
			     d->o.topic, ++d->next_id);
	else
		n = snprintf(buf, sizeof(buf),
			     "{\"op\":\"pub\",\"topic\":\"%s\",\"payload\":",
			     d->o.topic);
	if (d->o.payload[0])
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%s}",
			      d->o.payload);
	else
		n += snprintf(buf + n, sizeof(buf) - (size_t)n,
			      "{\"device\":\"%s\",\"seq\":%ld,\"ts\":%lld}}",
			      d->o.id, d->sent + 1, (long long)hub_clock_ms());
	if (n <= 0 || (size_t)n >= sizeof(buf))
		return;
	queue_text(d, buf, (size_t)n);
	d->sent++;
	check_done(d);
	if (!d->o.count || d->sent < d->o.count)
		lws_sul_schedule(d->ctx, 0, &d->sul_pub, publish,
				 d->o.interval_ms * LWS_US_PER_MS);
}

static void connect_now(lws_sorted_usec_list_t *sul);

static void
schedule_reconnect(struct dev *d)
{
	uint32_t rnd = 0, ms;

	if (d->stop || d->o.no_reconnect) {
		d->stop = 1;
		lws_cancel_service(d->ctx);
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

static void
on_text(struct dev *d, const char *in, size_t len)
{
	const char *id;

	if (len > 10 && strstr(in, "\"op\":\"ack\"")) {
		d->acked++;
		if (d->o.verbose)
			printf("%.*s\n", (int)len, in);
		check_done(d);
		return;
	}
	if (strstr(in, "\"op\":\"pong\"") && !d->o.verbose)
		return;
	d->received++;
	printf("%.*s\n", (int)len, in);
	fflush(stdout);
	/* ack downlink messages that carry an id */
	if (strstr(in, "\"op\":\"msg\"") && (id = strstr(in, "\"id\":"))) {
		char ack[64];
		char *end;
		unsigned long v = strtoul(id + 5, &end, 10);
		int n = snprintf(ack, sizeof(ack),
				 "{\"op\":\"ack\",\"id\":%lu}", v);

		if (end != id + 5)
			queue_text(d, ack, (size_t)n);
	}
}

static int
callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
	 void *in, size_t len)
{
	struct dev *d = &dev;
	struct frame *f;

	(void)user;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
		unsigned char **p = in, *end = *p + len;
		char v[300];
		int n;

		if (d->o.query_token)
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
		d->attempt = 0;
		if (!d->o.quiet)
			fprintf(stderr, "hub-device: connected as %s\n",
				d->o.id);
		lws_sul_schedule(d->ctx, 0, &d->sul_pub, publish, 1);
		if (d->head)
			lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		fprintf(stderr, "hub-device: connect failed: %s\n",
			in ? (const char *)in : "(no detail)");
		d->wsi = NULL;
		d->connected = 0;
		schedule_reconnect(d);
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (lws_frame_is_binary(wsi)) {
			d->received++;
			printf("{\"binary\":%zu}\n", len);
			fflush(stdout);
		} else
			on_text(d, in, len);
		break;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (len >= 2) {
			const unsigned char *c = in;
			int code = c[0] << 8 | c[1];

			fprintf(stderr, "hub-device: closed by hub: %d %.*s\n",
				code, (int)len - 2, (const char *)in + 2);
			if (code == 4001 || code == 4003)
				d->attempt = 6; /* back off harder */
		}
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		f = d->head;
		if (!f)
			break;
		d->head = f->next;
		if (!d->head)
			d->tail = NULL;
		if (lws_write(wsi, f->buf + LWS_PRE, f->len, LWS_WRITE_TEXT) <
		    (int)f->len) {
			free(f);
			return -1;
		}
		free(f);
		if (d->head)
			lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		d->wsi = NULL;
		d->connected = 0;
		lws_sul_cancel(&d->sul_pub);
		drop_queue(d);
		schedule_reconnect(d);
		break;
	default:
		break;
	}
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

	if (parse_args(&d->o, argc, argv)) {
		usage(stderr);
		return 2;
	}
	if ((size_t)snprintf(urlbuf, sizeof(urlbuf), "%s", d->o.url) >=
		sizeof(urlbuf) ||
	    lws_parse_uri(urlbuf, &prot, &addr, &d->port, &path)) {
		fprintf(stderr, "hub-device: bad url %s\n", d->o.url);
		return 2;
	}
	d->tls = !strcmp(prot, "wss") || !strcmp(prot, "https");
	if ((size_t)snprintf(d->host, sizeof(d->host), "%s", addr) >=
		sizeof(d->host) ||
	    (size_t)snprintf(d->path, sizeof(d->path),
			     d->o.query_token ? "/v1/devices/%s?token=%s"
					      : "/v1/devices/%s",
			     d->o.id, d->o.token) >= sizeof(d->path)) {
		fprintf(stderr, "hub-device: url too long\n");
		return 2;
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
	d->ctx = lws_create_context(&info);
	if (!d->ctx) {
		fprintf(stderr, "hub-device: lws init failed\n");
		return 1;
	}
	d->exit_code = 1;
	lws_sul_schedule(d->ctx, 0, &d->sul_conn, connect_now, 1);
	while (!interrupted && !d->stop)
		if (lws_service(d->ctx, 0) < 0)
			break;
	if (interrupted)
		d->exit_code = 0;
	lws_context_destroy(d->ctx);
	drop_queue(d);
	if (!d->o.quiet)
		fprintf(stderr, "hub-device: sent %ld acked %ld received %ld\n",
			d->sent, d->acked, d->received);
	return d->exit_code;
}
