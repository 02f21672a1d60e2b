/*
 * hub-loadgen - many devices against a hub, for benchmarks and smoke tests.
 *
 *   hub-loadgen --url ws[s]://HOST:PORT --creds FILE [-n N] [options]
 *
 * Design: the parent forks --procs children (each under the per-process
 * open-file limit) and shares one struct lg_stats per child with them
 * through an anonymous shared mapping; it prints a progress line every
 * second, samples per-second rates, and writes the report (a table on
 * stdout, JSON with --json FILE) when every child has ended. A child runs
 * its devices on one libev loop under libwebsockets (our mbedTLS build, the
 * same library hubd uses) and drives them from one coarse 10 ms timer of its
 * own, so there is no per-device timer at all: connects are paced (--ramp
 * per second over all children, at most --max-pending handshakes at once
 * per child), sends are paced per device (--rate), and reconnects use
 * exponential backoff with full jitter.
 *
 * Every device reads from the moment it is connected: lws answers the hub's
 * WebSocket pings in the service loop, so a long ramp never lets the hub
 * close the early devices as idle.
 *
 * Uplink frames carry "ts":<unix ns> in the payload, so an end-to-end latency
 * subscriber (mqttsub) can measure broker delivery.
 *
 * TLS (wss): --tls 1.2|1.3 forces the version (default: negotiate), and
 * --resume makes each device offer its own previous session on every
 * reconnect (a TLS 1.2 ticket, or the TLS 1.3 ticket the hub sent after the
 * handshake). lws 4.3.5's own client session cache keys sessions by vhost,
 * host and port, one entry for a whole fleet, and never sees TLS 1.3
 * tickets, so it is turned off and this file drives mbedTLS directly: the
 * link wraps (tools/CMakeLists.txt, --wrap) lws_tls_client_connect() (to
 * know which device handshakes), SSL_connect() of lws's mbedTLS wrapper
 * (before the first handshake step: version, session; after the last: the
 * TLS 1.2 session kept), mbedtls_ssl_read() (TLS 1.3 NewSessionTicket: kept,
 * then the read goes on, where lws would take the signal for an error) and
 * mbedtls_x509_crt_parse_der{,_nocopy}() (the server sent a certificate:
 * the handshake was a full one; a resumed handshake has none, in both
 * versions). bind() is wrapped too: --src-ips binds without taking a port
 * (see __wrap_bind).
 *
 * Threads: each process is single-threaded; the shared stats of a child are
 * written only by that child (relaxed atomics) and read by the parent.
 */
/* the session's and context's fields below (version, conf) are private in
 * mbedTLS 3; this file reads them only to steer its own client contexts */
#define MBEDTLS_ALLOW_PRIVATE_ACCESS

#include "hub_util.h"
#include "proto.h"

#include <cjson/cJSON.h>
#include <ev.h>
#include <libwebsockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef HUB_VERSION
#define HUB_VERSION "dev"
#endif

#define LG_TICK_S 0.01
#define LG_ACKS_MAX 64 /* downlink ids waiting to be acked, per device */
#define LG_HBUCKETS                                                            \
	512 /* handshake histogram: 4 sub-buckets per power of 2               \
	     */
#define LG_REASONS 12
#define LG_REASON_LEN 64
#define LG_MAX_PROCS 64
#define LG_MAX_SECONDS 7200

/* what a child reports; written by that child only */
struct lg_stats {
	long connected, attempts, failed, closed_unexpected, storm_back;
	long closed_before_storm; /* closed_unexpected when it stormed */
	long sent, acked, err, received, pings_ok;
	long close_codes[8]; /* 1000 1001 1008 1009 4001 4003 4004 other */
	long errs[8];	     /* by err code, see err_names */
	long reason_n[LG_REASONS];
	char reason[LG_REASONS][LG_REASON_LEN];
	unsigned long long hs[LG_HBUCKETS]; /* handshake µs histogram */
	/* wss: established after a full / a resumed TLS handshake, sessions
	 * offered, negotiated version; handshake µs histograms of each kind */
	long tls_full, tls_resumed, tls_offered, tls12, tls13, tls_certs;
	unsigned long long hs_full[LG_HBUCKETS], hs_res[LG_HBUCKETS];
	long peak;	     /* most devices of this process up at once */
	uint64_t t_all_up;   /* monotonic µs: every device of it first up */
	uint64_t t_storm;    /* monotonic µs of the storm */
	uint64_t t_all_back; /* monotonic µs: every stormed device back */
	uint64_t t_first_rx, t_last_rx; /* monotonic µs: downlink msg frames */
	int done;
};

static const char *const err_names[8] = {
    "bad_frame",     "bad_topic",	   "too_large",	       "rate_limited",
    "inflight_full", "broker_unavailable", "downlink_refused", "other"};
static const int close_list[7] = {1000, 1001, 1008, 1009, 4001, 4003, 4004};

struct opts {
	char url[512], creds[512], json[512], ca[512], servername[256];
	char topic[128], src_ips[64], path[256];
	long n, procs, ramp, max_pending, duration, payload, qos, binary;
	long storm_at, storm_after, storm_jitter_ms, reconnect, insecure, quiet;
	long messages;
	long tls;     /* wss (from --url) */
	long tls_ver; /* 0: negotiate, 12, 13 */
	long resume;
	double rate;
};

struct lg_dev {
	struct lws *wsi;
	const char *id, *token;
	uint64_t t_connect, next_send, reconnect_at;
	uint32_t next_id;
	long nsent; /* frames written, toward --messages */
	unsigned attempt;
	unsigned pending; /* uplink frames due, not yet written */
	uint32_t *acks;	  /* downlink ids to ack, in order */
	unsigned nacks;
	mbedtls_ssl_session *sess; /* --resume: the last session, to offer */
	unsigned char offered;	   /* this attempt offered sess */
	unsigned char saw_cert;	   /* this attempt's server sent a cert */
	unsigned char tls_v;	   /* 12 or 13: this attempt's TLS version */
	unsigned char state;	   /* 0 idle, 1 connecting, 2 up, 3 closing */
	unsigned char storm;	   /* counts toward the storm's "back" figure */
};

struct child {
	const struct opts *o;
	struct lg_stats *st;
	const struct lg_stats *fleet; /* every child's, read only */
	long nprocs;
	struct lg_dev *dev;
	long ndev, next_start, pending_hs, up;
	double ramp_credit;
	struct lws_context *ctx;
	struct ev_loop *loop;
	char host[256];
	int port, tls, stopping, storm_done;
	uint64_t t0, t_stop;
	unsigned nsrc; /* --src-ips: addresses, each in srcbuf[] */
	char srcbuf[64][48];
};

static struct child *the_child; /* for lws callbacks */
static volatile sig_atomic_t interrupted;

/* ---- helpers ------------------------------------------------------------ */

static int
parse_long(const char *s, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(s, &end, 10);
	return errno || end == s || *end || *out < 0 ? -1 : 0;
}

static unsigned
hist_bucket(uint64_t us)
{
	unsigned b = 0, lg = 0;

	if (us < 4)
		return (unsigned)us;
	while ((us >> lg) >= 8)
		lg++;
	/* us in [4<<lg, 8<<lg): 4 sub-buckets of width 1<<lg */
	b = 4 + lg * 4 + (unsigned)((us >> lg) - 4);
	return b < LG_HBUCKETS ? b : LG_HBUCKETS - 1;
}

static uint64_t
hist_value(unsigned b)
{
	unsigned lg;

	if (b < 4)
		return b;
	lg = (b - 4) / 4;
	return ((uint64_t)((b - 4) % 4) + 4) << lg;
}

static uint64_t
hist_pct(const unsigned long long *h, double p)
{
	unsigned long long total = 0, acc = 0;
	unsigned b;

	for (b = 0; b < LG_HBUCKETS; b++)
		total += h[b];
	if (!total)
		return 0;
	for (b = 0; b < LG_HBUCKETS; b++) {
		acc += h[b];
		if ((double)acc >= p * (double)total)
			return hist_value(b);
	}
	return hist_value(LG_HBUCKETS - 1);
}

static void
add_reason(struct lg_stats *st, const char *why)
{
	int i;

	for (i = 0; i < LG_REASONS; i++) {
		if (!st->reason[i][0])
			snprintf(st->reason[i], LG_REASON_LEN, "%s", why);
		if (!strncmp(st->reason[i], why, LG_REASON_LEN - 1)) {
			st->reason_n[i]++;
			return;
		}
	}
	st->reason_n[LG_REASONS - 1]++; /* the table is full: the last one */
}

static uint32_t
rnd32(void)
{
	uint32_t r;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint32_t)random();
	return r;
}

/* ---- source addresses ---------------------------------------------------- */

/*
 * --src-ips "A.B.C.X-Y" or "A.B.C.X-A.B.C.Y": the addresses X..Y of one /24,
 * at most 64, written into out[] as strings for lws's ci.iface; returns how
 * many, or 0 when spec is not such a range.
 */
static unsigned
src_ips_expand(const char *spec, char out[64][48])
{
	char first[INET_ADDRSTRLEN], last[INET_ADDRSTRLEN];
	const char *dash = strchr(spec, '-');
	struct in_addr a, b;
	uint32_t ha, hb, k;
	unsigned n = 0;

	if (!dash || (size_t)(dash - spec) >= sizeof(first) ||
	    strlen(dash + 1) >= sizeof(last))
		return 0;
	memcpy(first, spec, (size_t)(dash - spec));
	first[dash - spec] = '\0';
	if (inet_pton(AF_INET, first, &a) != 1)
		return 0;
	ha = ntohl(a.s_addr);
	if (strchr(dash + 1, '.')) {
		memcpy(last, dash + 1, strlen(dash + 1) + 1);
		if (inet_pton(AF_INET, last, &b) != 1)
			return 0;
		hb = ntohl(b.s_addr);
	} else {
		long y;

		if (parse_long(dash + 1, &y) || y < 0 || y > 255)
			return 0;
		hb = (ha & ~0xffu) | (uint32_t)y;
	}
	if ((ha & ~0xffu) != (hb & ~0xffu) || hb < ha || hb - ha >= 64)
		return 0;
	for (k = ha; k <= hb; k++) {
		struct in_addr x = {.s_addr = htonl(k)};

		if (!inet_ntop(AF_INET, &x, out[n], 48))
			return 0;
		n++;
	}
	return n;
}

int __real_bind(int fd, const struct sockaddr *sa, socklen_t len);
int __wrap_bind(int fd, const struct sockaddr *sa, socklen_t len);

/*
 * lws binds a client socket to its --src-ips address with port 0 before
 * connecting, and such a bind takes an ephemeral port for that address
 * alone, whatever the destination: the whole fleet then shares the one
 * local port range (32768-60999 by default, 28 232 ports), and every
 * connect past it fails. A 100 000-device run stopped at 28 227 connected,
 * its generators spinning on failed connects. IP_BIND_ADDRESS_NO_PORT
 * defers the port to connect(), which needs it unique only per (source,
 * destination) pair, so each source address adds a whole range.
 */
int
__wrap_bind(int fd, const struct sockaddr *sa, socklen_t len)
{
	if (sa && sa->sa_family == AF_INET &&
	    len >= sizeof(struct sockaddr_in) &&
	    ((const struct sockaddr_in *)(const void *)sa)->sin_port == 0) {
		int one = 1;

		(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
				 sizeof(one));
	}
	return __real_bind(fd, sa, len);
}

/* ---- TLS: version and resumption, through lws's mbedTLS wrapper ---------- */

struct ssl_st; /* SSL of lws's mbedTLS wrapper */
mbedtls_ssl_context *SSL_mbedtls_ssl_context_from_SSL(struct ssl_st *ssl);

/* the wrapped functions (ld --wrap: calls from lws and mbedTLS objects to
 * NAME reach __wrap_NAME; __real_NAME is the original) */
int __real_lws_tls_client_connect(struct lws *wsi, char *errbuf, size_t elen);
int __wrap_lws_tls_client_connect(struct lws *wsi, char *errbuf, size_t elen);
int __real_SSL_connect(struct ssl_st *ssl);
int __wrap_SSL_connect(struct ssl_st *ssl);
int __real_mbedtls_ssl_read(mbedtls_ssl_context *ssl, unsigned char *buf,
			    size_t len);
int __wrap_mbedtls_ssl_read(mbedtls_ssl_context *ssl, unsigned char *buf,
			    size_t len);
int __real_mbedtls_x509_crt_parse_der(mbedtls_x509_crt *chain,
				      const unsigned char *buf, size_t len);
int __wrap_mbedtls_x509_crt_parse_der(mbedtls_x509_crt *chain,
				      const unsigned char *buf, size_t len);
int __real_mbedtls_x509_crt_parse_der_nocopy(mbedtls_x509_crt *chain,
					     const unsigned char *buf,
					     size_t len);
int __wrap_mbedtls_x509_crt_parse_der_nocopy(mbedtls_x509_crt *chain,
					     const unsigned char *buf,
					     size_t len);

static struct lg_dev *tls_dev; /* whose lws_tls_client_connect() runs */
static int tls_in_hs;	       /* inside mbedTLS's handshake steps */

/* keeps the session of ssl as d's next offer; a failure keeps the old one */
static void
keep_session(struct lg_dev *d, mbedtls_ssl_context *ssl)
{
	mbedtls_ssl_session *s = malloc(sizeof(*s));

	if (!s)
		return;
	mbedtls_ssl_session_init(s);
	if (mbedtls_ssl_get_session(ssl, s)) {
		mbedtls_ssl_session_free(s);
		free(s);
		return;
	}
	if (d->sess)
		mbedtls_ssl_session_free(d->sess);
	free(d->sess);
	d->sess = s;
}

int
__wrap_lws_tls_client_connect(struct lws *wsi, char *errbuf, size_t elen)
{
	int n;

	tls_dev = lws_get_opaque_user_data(wsi);
	n = __real_lws_tls_client_connect(wsi, errbuf, elen);
	tls_dev = NULL;
	return n;
}

int
__wrap_SSL_connect(struct ssl_st *s)
{
	mbedtls_ssl_context *ssl = SSL_mbedtls_ssl_context_from_SSL(s);
	struct child *c = the_child;
	struct lg_dev *d = tls_dev;
	int n;

	if (d && c && !mbedtls_ssl_get_user_data_p(ssl)) {
		/* the first step of this connection's handshake: its config
		 * is its own (the wrapper makes one per SSL) */
		mbedtls_ssl_config *conf =
		    (mbedtls_ssl_config *)ssl->MBEDTLS_PRIVATE(conf);
		mbedtls_ssl_protocol_version v =
		    c->o->tls_ver == 12	  ? MBEDTLS_SSL_VERSION_TLS1_2
		    : c->o->tls_ver == 13 ? MBEDTLS_SSL_VERSION_TLS1_3
					  : MBEDTLS_SSL_VERSION_UNKNOWN;

		mbedtls_ssl_set_user_data_p(ssl, d);
		d->offered = 0;
		d->saw_cert = 0;
		if (v != MBEDTLS_SSL_VERSION_UNKNOWN) {
			mbedtls_ssl_conf_min_tls_version(conf, v);
			mbedtls_ssl_conf_max_tls_version(conf, v);
			/* set from the config at mbedtls_ssl_setup() */
			ssl->MBEDTLS_PRIVATE(tls_version) = v;
		}
		if (c->o->resume && v != MBEDTLS_SSL_VERSION_TLS1_2)
			/* TLS 1.3 tickets come after the handshake, through
			 * mbedtls_ssl_read() (below) */
			mbedtls_ssl_conf_tls13_enable_signal_new_session_tickets(
			    conf,
			    MBEDTLS_SSL_TLS1_3_SIGNAL_NEW_SESSION_TICKETS_ENABLED);
		if (c->o->resume && d->sess &&
		    (v == MBEDTLS_SSL_VERSION_UNKNOWN ||
		     d->sess->MBEDTLS_PRIVATE(tls_version) == v) &&
		    !mbedtls_ssl_set_session(ssl, d->sess))
			d->offered = 1;
	}
	tls_in_hs = 1;
	n = __real_SSL_connect(s);
	tls_in_hs = 0;
	if (n == 1 && d && c) {
		d->tls_v = mbedtls_ssl_get_version_number(ssl) ==
				   MBEDTLS_SSL_VERSION_TLS1_2
			       ? 12
			       : 13;
		if (c->o->resume && d->tls_v == 12)
			keep_session(d, ssl); /* its ticket came in the
					       * handshake */
	}
	return n;
}

int
__wrap_mbedtls_ssl_read(mbedtls_ssl_context *ssl, unsigned char *buf,
			size_t len)
{
	int n;

	/* only enabled with --resume: keep the ticket, read on */
	while ((n = __real_mbedtls_ssl_read(ssl, buf, len)) ==
	       MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
		struct lg_dev *d = mbedtls_ssl_get_user_data_p(ssl);

		if (d)
			keep_session(d, ssl);
	}
	return n;
}

int
__wrap_mbedtls_x509_crt_parse_der(mbedtls_x509_crt *chain,
				  const unsigned char *buf, size_t len)
{
	if (tls_in_hs && tls_dev)
		tls_dev->saw_cert = 1;
	return __real_mbedtls_x509_crt_parse_der(chain, buf, len);
}

int
__wrap_mbedtls_x509_crt_parse_der_nocopy(mbedtls_x509_crt *chain,
					 const unsigned char *buf, size_t len)
{
	if (tls_in_hs && tls_dev)
		tls_dev->saw_cert = 1;
	return __real_mbedtls_x509_crt_parse_der_nocopy(chain, buf, len);
}

/* ---- one child: its devices on one loop ---------------------------------- */

/* --path with {id} and {token} replaced; -1 if it does not fit */
static int
expand_path(const char *tpl, const struct lg_dev *d, char *out, size_t cap)
{
	size_t n = 0, l;
	const char *v;

	while (*tpl) {
		if (!strncmp(tpl, "{id}", 4))
			v = d->id, tpl += 4;
		else if (!strncmp(tpl, "{token}", 7))
			v = d->token, tpl += 7;
		else {
			if (n + 1 >= cap)
				return -1;
			out[n++] = *tpl++;
			continue;
		}
		l = strlen(v);
		if (n + l >= cap)
			return -1;
		memcpy(out + n, v, l);
		n += l;
	}
	out[n] = 0;
	return 0;
}

/*
 * No lws validity timers: lws's default policy arms one per connection (ping
 * at 300 s, hang up at 310 s) and re-arms it on every frame received, and
 * each arm walks the service thread's one sorted timer list. A child holding
 * ~12 000 devices spent 32 % of its CPU in lws_dll2_add_sorted during a
 * 100 000-device ramp (perf). The hub pings; lws answers in the service loop.
 */
static const lws_retry_bo_t no_validity;

static void
dev_connect(struct child *c, struct lg_dev *d, uint64_t now)
{
	struct lws_client_connect_info ci;
	char path[400];

	if (expand_path(c->o->path, d, path, sizeof(path)))
		return;
	memset(&ci, 0, sizeof(ci));
	ci.context = c->ctx;
	ci.address = c->host;
	ci.port = c->port;
	ci.path = path;
	ci.host = c->o->servername[0] ? c->o->servername : c->host;
	ci.origin = ci.host;
	ci.protocol = "hub.v1";
	/* device i dials from address i % nsrc: a server's per-address caps
	 * (pending handshakes, auth failures) see a spread, not one host */
	ci.iface = c->nsrc ? c->srcbuf[(size_t)(d - c->dev) % c->nsrc] : NULL;
	ci.pwsi = &d->wsi;
	ci.opaque_user_data = d;
	ci.retry_and_idle_policy = &no_validity;
	if (c->tls) {
		ci.ssl_connection = LCCSCF_USE_SSL;
		if (c->o->insecure)
			ci.ssl_connection |=
			    LCCSCF_ALLOW_SELFSIGNED |
			    LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
			    LCCSCF_ALLOW_INSECURE;
	}
	d->state = 1;
	d->t_connect = now;
	c->pending_hs++;
	__atomic_add_fetch(&c->st->attempts, 1, __ATOMIC_RELAXED);
	if (!lws_client_connect_via_info(&ci)) {
		/* failed synchronously: no callback follows */
		d->state = 0;
		d->wsi = NULL;
		c->pending_hs--;
		__atomic_add_fetch(&c->st->failed, 1, __ATOMIC_RELAXED);
		add_reason(c->st, "connect refused locally");
		d->reconnect_at = now + 1000000;
	}
}

static void
dev_down(struct child *c, struct lg_dev *d, uint64_t now)
{
	uint32_t ms;

	if (d->state == 1)
		c->pending_hs--;
	if (d->state == 2 || d->state == 3) {
		c->up--;
		__atomic_sub_fetch(&c->st->connected, 1, __ATOMIC_RELAXED);
	}
	d->state = 0;
	d->wsi = NULL;
	d->pending = 0;
	d->nacks = 0;
	if (d->storm)
		return; /* storm() chose when it comes back */
	if (c->stopping || !c->o->reconnect) {
		d->reconnect_at = UINT64_MAX;
		return;
	}
	ms = hub_backoff_ms(d->attempt++, 200, 30000, rnd32());
	d->reconnect_at = now + (uint64_t)ms * 1000;
}

static int
write_pub(struct child *c, struct lg_dev *d, struct lws *wsi)
{
	unsigned char buf[LWS_PRE + 70000], *p = buf + LWS_PRE;
	size_t cap = sizeof(buf) - LWS_PRE, pad;
	struct timespec ts;
	long long ns;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
	pad = c->o->payload > 40 ? (size_t)c->o->payload - 40 : 0;
	if (pad > 65000)
		pad = 65000;
	if (c->o->binary) {
		size_t tl = strlen(c->o->topic);

		p[0] = (unsigned char)tl;
		memcpy(p + 1, c->o->topic, tl);
		n = snprintf((char *)p + 1 + tl, cap - 1 - tl,
			     "{\"ts\":%lld,\"pad\":\"", ns);
		if (n < 0)
			return -1;
		n += (int)(1 + tl);
		memset(p + n, 'x', pad);
		n += (int)pad;
		memcpy(p + n, "\"}", 2);
		n += 2;
		return lws_write(wsi, p, (size_t)n, LWS_WRITE_BINARY) < n ? -1
									  : 0;
	}
	if (c->o->qos)
		n = snprintf((char *)p, cap,
			     "{\"op\":\"pub\",\"topic\":\"%s\",\"qos\":1,"
			     "\"id\":%u,\"payload\":{\"ts\":%lld,\"pad\":\"",
			     c->o->topic, ++d->next_id, ns);
	else
		n = snprintf((char *)p, cap,
			     "{\"op\":\"pub\",\"topic\":\"%s\",\"payload\":{"
			     "\"ts\":%lld,\"pad\":\"",
			     c->o->topic, ns);
	if (n < 0 || (size_t)n + pad + 3 > cap)
		return -1;
	memset(p + n, 'x', pad);
	n += (int)pad;
	memcpy(p + n, "\"}}", 3);
	n += 3;
	return lws_write(wsi, p, (size_t)n, LWS_WRITE_TEXT) < n ? -1 : 0;
}

static void
on_text(struct child *c, struct lg_dev *d, struct lws *wsi, const char *in,
	size_t len)
{
	cJSON *j = cJSON_ParseWithLength(in, len), *op, *id, *code;
	int i;

	if (!j)
		return;
	op = cJSON_GetObjectItemCaseSensitive(j, "op");
	if (cJSON_IsString(op)) {
		if (!strcmp(op->valuestring, "ack")) {
			__atomic_add_fetch(&c->st->acked, 1, __ATOMIC_RELAXED);
		} else if (!strcmp(op->valuestring, "err")) {
			code = cJSON_GetObjectItemCaseSensitive(j, "code");
			for (i = 0; i < 7; i++)
				if (cJSON_IsString(code) &&
				    !strcmp(code->valuestring, err_names[i]))
					break;
			__atomic_add_fetch(&c->st->errs[i], 1,
					   __ATOMIC_RELAXED);
			__atomic_add_fetch(&c->st->err, 1, __ATOMIC_RELAXED);
		} else if (!strcmp(op->valuestring, "msg")) {
			uint64_t t = hub_clock_mono_us();

			__atomic_add_fetch(&c->st->received, 1,
					   __ATOMIC_RELAXED);
			/* fan-out timing (one writer per stats block) */
			if (!c->st->t_first_rx)
				__atomic_store_n(&c->st->t_first_rx, t,
						 __ATOMIC_RELAXED);
			__atomic_store_n(&c->st->t_last_rx, t,
					 __ATOMIC_RELAXED);
			id = cJSON_GetObjectItemCaseSensitive(j, "id");
			/* acked from WRITEABLE, in order; past
			 * LG_ACKS_MAX waiting the hub resends anyway */
			if (cJSON_IsNumber(id) && id->valuedouble >= 0 &&
			    id->valuedouble <= 4294967295.0) {
				if (!d->acks)
					d->acks = malloc(sizeof(uint32_t) *
							 LG_ACKS_MAX);
				if (d->acks && d->nacks < LG_ACKS_MAX) {
					d->acks[d->nacks++] =
					    (uint32_t)id->valuedouble;
					lws_callback_on_writable(wsi);
				}
			}
		} else if (!strcmp(op->valuestring, "pong")) {
			__atomic_add_fetch(&c->st->pings_ok, 1,
					   __ATOMIC_RELAXED);
		}
	}
	cJSON_Delete(j);
}

static int
callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
	 void *in, size_t len)
{
	struct child *c = the_child;
	struct lg_dev *d = lws_get_opaque_user_data(wsi);
	uint64_t now;
	int i;

	(void)user;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
		unsigned char **p = in, *end = *p + len;
		char v[300];
		int n;

		if (!d)
			return -1;
		n = snprintf(v, sizeof(v), "Bearer %s", d->token);
		if (n < 0 || (size_t)n >= sizeof(v) ||
		    lws_add_http_header_by_token(wsi,
						 WSI_TOKEN_HTTP_AUTHORIZATION,
						 (unsigned char *)v, n, p, end))
			return -1;
		break;
	}
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		if (!d)
			return -1;
		now = hub_clock_mono_us();
		c->pending_hs--;
		c->up++;
		d->state = 2;
		d->attempt = 0;
		__atomic_add_fetch(&c->st->hs[hist_bucket(now - d->t_connect)],
				   1, __ATOMIC_RELAXED);
		if (c->tls) {
			/* resumed: no certificate from the server */
			int res = d->offered && !d->saw_cert;

			__atomic_add_fetch(
			    res ? &c->st
				       ->hs_res[hist_bucket(now - d->t_connect)]
				: &c->st->hs_full[hist_bucket(now -
							      d->t_connect)],
			    1, __ATOMIC_RELAXED);
			__atomic_add_fetch(res ? &c->st->tls_resumed
					       : &c->st->tls_full,
					   1, __ATOMIC_RELAXED);
			if (d->offered)
				__atomic_add_fetch(&c->st->tls_offered, 1,
						   __ATOMIC_RELAXED);
			if (d->saw_cert)
				__atomic_add_fetch(&c->st->tls_certs, 1,
						   __ATOMIC_RELAXED);
			__atomic_add_fetch(d->tls_v == 12 ? &c->st->tls12
							  : &c->st->tls13,
					   1, __ATOMIC_RELAXED);
		}
		__atomic_add_fetch(&c->st->connected, 1, __ATOMIC_RELAXED);
		if (c->up > c->st->peak)
			__atomic_store_n(&c->st->peak, c->up, __ATOMIC_RELAXED);
		if (c->up == c->ndev && !c->st->t_all_up)
			__atomic_store_n(&c->st->t_all_up, now,
					 __ATOMIC_RELAXED);
		if (d->storm) {
			d->storm = 0;
			if (__atomic_add_fetch(&c->st->storm_back, 1,
					       __ATOMIC_RELAXED) == c->ndev)
				__atomic_store_n(&c->st->t_all_back, now,
						 __ATOMIC_RELAXED);
		}
		if (c->o->rate > 0)
			d->next_send =
			    now + rnd32() % (uint64_t)(1e6 / c->o->rate + 1);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (!d)
			break;
		__atomic_add_fetch(&c->st->failed, 1, __ATOMIC_RELAXED);
		{
			/* a refused upgrade: lws says "not 101"; the status
			 * says why (401, 429, 503, ...) */
			unsigned st =
			    wsi ? lws_http_client_http_response(wsi) : 0;
			char why[96];

			if (st && st != 101) {
				snprintf(why, sizeof(why), "HTTP %u", st);
				add_reason(c->st, why);
			} else
				add_reason(c->st, in ? (const char *)in
						     : "(no detail)");
		}
		dev_down(c, d, hub_clock_mono_us());
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (d && !lws_frame_is_binary(wsi))
			on_text(c, d, wsi, in, len);
		else if (d)
			__atomic_add_fetch(&c->st->received, 1,
					   __ATOMIC_RELAXED);
		break;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (len >= 2) {
			const unsigned char *cc = in;
			int code = cc[0] << 8 | cc[1];

			for (i = 0; i < 7; i++)
				if (close_list[i] == code)
					break;
			__atomic_add_fetch(&c->st->close_codes[i], 1,
					   __ATOMIC_RELAXED);
		}
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (!d || d->state != 2 || c->stopping)
			return -1; /* a storm or the end: drop at once */
		if (d->nacks) {
			unsigned char ab[LWS_PRE + 48];
			int n =
			    snprintf((char *)ab + LWS_PRE, 48,
				     "{\"op\":\"ack\",\"id\":%u}", d->acks[0]);

			memmove(d->acks, d->acks + 1,
				--d->nacks * sizeof(uint32_t));
			if (lws_write(wsi, ab + LWS_PRE, (size_t)n,
				      LWS_WRITE_TEXT) < n)
				return -1;
			if (d->nacks || d->pending)
				lws_callback_on_writable(wsi);
		} else if (d->pending) {
			d->pending--;
			if (write_pub(c, d, wsi))
				return -1;
			d->nsent++;
			__atomic_add_fetch(&c->st->sent, 1, __ATOMIC_RELAXED);
			if (d->pending)
				lws_callback_on_writable(wsi);
		}
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		if (!d)
			break;
		if (!c->stopping && d->state == 2)
			__atomic_add_fetch(&c->st->closed_unexpected, 1,
					   __ATOMIC_RELAXED);
		dev_down(c, d, hub_clock_mono_us());
		break;
	default:
		break;
	}
	return 0;
}

static const struct lws_protocols protocols[] = {
    {"hub.v1", callback, 0, 70000, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

static void
storm(struct child *c, uint64_t now)
{
	long i;

	/* every live connection drops at once; each comes back after its own
	 * backoff with full jitter (--storm-jitter), like a fleet whose hub
	 * vanished */
	for (i = 0; i < c->ndev; i++) {
		struct lg_dev *d = &c->dev[i];

		if (d->state != 2)
			continue;
		d->storm = 1;
		d->state = 3;
		lws_callback_on_writable(d->wsi); /* WRITEABLE closes it */
		d->reconnect_at =
		    now +
		    (uint64_t)(c->o->storm_jitter_ms
				   ? rnd32() % (uint32_t)c->o->storm_jitter_ms
				   : 0) *
			1000;
	}
	c->storm_done = 1;
	__atomic_store_n(
	    &c->st->closed_before_storm,
	    __atomic_load_n(&c->st->closed_unexpected, __ATOMIC_RELAXED),
	    __ATOMIC_RELAXED);
	__atomic_store_n(&c->st->t_storm, now, __ATOMIC_RELAXED);
}

/* monotonic µs when the last process had all its devices up; 0: not yet */
static uint64_t
fleet_up(const struct child *c)
{
	uint64_t up = 0, t;
	long p;

	for (p = 0; p < c->nprocs; p++) {
		t = __atomic_load_n(&c->fleet[p].t_all_up, __ATOMIC_RELAXED);
		if (!t)
			return 0;
		if (t > up)
			up = t;
	}
	return up;
}

static void
on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct child *c = the_child;
	uint64_t now = hub_clock_mono_us(), gap;
	long i, starts;

	(void)t;
	(void)revents;
	if (interrupted || (c->t_stop && now >= c->t_stop)) {
		if (!c->t_stop || c->t_stop > now)
			c->t_stop = now;
		if (!c->stopping) {
			c->stopping = 1;
			for (i = 0; i < c->ndev; i++)
				if (c->dev[i].wsi && c->dev[i].state == 2)
					/* WRITEABLE closes it */
					lws_callback_on_writable(c->dev[i].wsi);
		}
		if ((c->up == 0 && c->pending_hs == 0) ||
		    now > c->t_stop + 10000000) /* 10 s to close, at most */
			ev_break(loop, EVBREAK_ALL);
		return;
	}
	/* --messages: done once every device sent its share and, at QoS 1,
	 * every frame was answered (ack or err) */
	if (c->o->messages && !c->stopping) {
		long want = c->ndev * c->o->messages;
		long sent = __atomic_load_n(&c->st->sent, __ATOMIC_RELAXED);
		long answered =
		    __atomic_load_n(&c->st->acked, __ATOMIC_RELAXED) +
		    __atomic_load_n(&c->st->err, __ATOMIC_RELAXED);

		if (sent >= want && (!c->o->qos || answered >= want)) {
			c->t_stop = now;
			return;
		}
	}
	/* the storm waits until every device of this process is up, so a
	 * slow ramp still storms the whole fleet; --storm-after counts from
	 * the moment every process had all its devices up. Without
	 * --duration the run ends once every stormed device is back */
	if (!c->storm_done && c->up == c->ndev) {
		if (c->o->storm_at &&
		    now >= c->t0 + (uint64_t)c->o->storm_at * 1000000)
			storm(c, now);
		else if (c->o->storm_after) {
			uint64_t up = fleet_up(c);

			if (up &&
			    now >= up + (uint64_t)c->o->storm_after * 1000000)
				storm(c, now);
		}
	}
	if (c->storm_done && !c->o->duration && c->up == c->ndev &&
	    __atomic_load_n(&c->st->storm_back, __ATOMIC_RELAXED) >= c->ndev) {
		c->t_stop = now;
		return;
	}

	/* paced first connects */
	c->ramp_credit += (double)c->o->ramp * LG_TICK_S;
	if (c->ramp_credit > (double)c->o->max_pending)
		c->ramp_credit = (double)c->o->max_pending;
	starts = 0;
	while (c->next_start < c->ndev && c->ramp_credit >= 1 &&
	       c->pending_hs < c->o->max_pending) {
		dev_connect(c, &c->dev[c->next_start++], now);
		c->ramp_credit -= 1;
		starts++;
	}
	/* reconnects and sends: one walk, only when something can be due */
	gap = c->o->rate > 0 ? (uint64_t)(1e6 / c->o->rate) : 0;
	for (i = 0; i < c->next_start; i++) {
		struct lg_dev *d = &c->dev[i];

		if (d->state == 0 && d->reconnect_at <= now &&
		    c->pending_hs < c->o->max_pending) {
			dev_connect(c, d, now);
		} else if (d->state == 2 && gap && d->next_send <= now) {
			/* catch up at most one second of sends */
			while (d->next_send <= now && d->pending < 1000 &&
			       (!c->o->messages ||
				d->nsent + d->pending < c->o->messages)) {
				d->pending++;
				d->next_send += gap;
			}
			if (d->next_send + 1000000 < now)
				d->next_send = now;
			lws_callback_on_writable(d->wsi);
		}
	}
}

static void
on_signal(struct ev_loop *loop, ev_signal *sw, int revents)
{
	(void)loop;
	(void)sw;
	(void)revents;
	interrupted = 1;
}

static int
child_run(const struct opts *o, struct lg_stats *fleet, long nprocs,
	  struct lg_dev *dev, long ndev, int index, const char *host, int port,
	  int tls)
{
	struct lws_context_creation_info info;
	struct child c;
	ev_timer tick;
	ev_signal sig_term, sig_int;
	void *foreign[1];

	memset(&c, 0, sizeof(c));
	c.o = o;
	c.st = &fleet[index];
	c.fleet = fleet;
	c.nprocs = nprocs;
	c.dev = dev;
	c.ndev = ndev;
	c.port = port;
	c.tls = tls;
	snprintf(c.host, sizeof(c.host), "%s", host);
	/* every process uses all of them, device by device (checked by
	 * parse_opts, so this cannot fail) */
	if (o->src_ips[0])
		c.nsrc = src_ips_expand(o->src_ips, c.srcbuf);
	the_child = &c;
	c.loop = ev_loop_new(EVFLAG_AUTO | EVBACKEND_EPOLL);
	if (!c.loop)
		return 1;
	foreign[0] = c.loop;
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	/* lws's session cache would offer one session for the whole fleet:
	 * --resume keeps one per device instead (see the top) */
	info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
		       LWS_SERVER_OPTION_LIBEV |
		       LWS_SERVER_OPTION_DISABLE_TLS_SESSION_CACHE;
	info.foreign_loops = foreign;
	/* no fd_limit_per_thread: below the open-file limit it makes lws find
	 * a connection from its fd by a linear search instead of its direct
	 * table, on every event (43 % of a child's CPU at ~12 000 devices,
	 * perf); the limit (20 000 here) is what lws sizes the table by */
	info.retry_and_idle_policy = &no_validity;
	/* a handshake queued behind a busy server is not a failure yet */
	info.timeout_secs = 60;
	if (o->ca[0])
		info.client_ssl_ca_filepath = o->ca;
	lws_set_log_level(0, NULL);
	c.ctx = lws_create_context(&info);
	if (!c.ctx)
		return 1;
	c.t0 = hub_clock_mono_us();
	if (o->duration)
		c.t_stop = c.t0 + (uint64_t)o->duration * 1000000;
	ev_signal_init(&sig_term, on_signal, SIGTERM);
	ev_signal_start(c.loop, &sig_term);
	ev_signal_init(&sig_int, on_signal, SIGINT);
	ev_signal_start(c.loop, &sig_int);
	ev_timer_init(&tick, on_tick, LG_TICK_S, LG_TICK_S);
	ev_timer_start(c.loop, &tick);
	ev_run(c.loop, 0);
	ev_timer_stop(c.loop, &tick);
	ev_signal_stop(c.loop, &sig_term);
	ev_signal_stop(c.loop, &sig_int);
	lws_context_destroy(c.ctx);
	for (long i = 0; i < ndev; i++) {
		free(dev[i].acks);
		if (dev[i].sess)
			mbedtls_ssl_session_free(dev[i].sess);
		free(dev[i].sess);
	}
	__atomic_store_n(&c.st->done, 1, __ATOMIC_RELEASE);
	return 0;
}

/* ---- the parent: slices, progress, report -------------------------------- */

struct creds {
	char *buf;
	const char **id, **token;
	long n;
};

static int
load_creds(const char *path, long want, struct creds *cr)
{
	FILE *f = fopen(path, "r");
	char line[512];
	long cap = 1024;

	memset(cr, 0, sizeof(*cr));
	if (!f)
		return -1;
	cr->id = malloc(sizeof(char *) * (size_t)cap);
	cr->token = malloc(sizeof(char *) * (size_t)cap);
	while (cr->id && cr->token && (!want || cr->n < want) &&
	       fgets(line, sizeof(line), f)) {
		char *comma = strchr(line, ','), *nl;

		if (!comma)
			continue;
		*comma = 0;
		if ((nl = strpbrk(comma + 1, "\r\n")))
			*nl = 0;
		if (!proto_id_valid(line, strlen(line)) || !comma[1])
			continue;
		if (cr->n == cap) {
			cap *= 2;
			const char **a =
			    realloc(cr->id, sizeof(char *) * (size_t)cap);
			if (!a)
				break;
			cr->id = a;
			a = realloc(cr->token, sizeof(char *) * (size_t)cap);
			if (!a)
				break;
			cr->token = a;
		}
		cr->id[cr->n] = strdup(line);
		cr->token[cr->n] = strdup(comma + 1);
		if (!cr->id[cr->n] || !cr->token[cr->n])
			break;
		cr->n++;
	}
	fclose(f);
	return cr->n > 0 ? 0 : -1;
}

static void
free_creds(struct creds *cr)
{
	long i;

	for (i = 0; i < cr->n; i++) {
		free((char *)cr->id[i]);
		free((char *)cr->token[i]);
	}
	free(cr->id);
	free(cr->token);
}

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: hub-loadgen --url ws[s]://HOST:PORT --creds FILE "
	    "[options]\n"
	    "  --creds FILE       id,token lines (hubctl device import)\n"
	    "  -n N               devices (default: every line of FILE)\n"
	    "  --procs P          processes (default: enough for 16000 "
	    "devices each)\n"
	    "  --src-ips A.B.C.X-Y  dial device i from A.B.C.(X + i %% "
	    "(Y-X+1)), at most 64\n"
	    "  --ramp R           new connections per second, all "
	    "processes (1000)\n"
	    "  --max-pending K    handshakes in flight per process (64): more\n"
	    "                     only queues in the server and times out\n"
	    "  --rate M           messages per second per device (0)\n"
	    "  --qos 0|1 --payload BYTES (64) --binary --topic T "
	    "(telemetry)\n"
	    "  --duration S       stop after S seconds from start (0: "
	    "until SIGINT)\n"
	    "  --messages M       each device sends M messages, then the "
	    "run ends\n"
	    "                     (at QoS 1 once every one is answered)\n"
	    "  --no-reconnect     do not reconnect a dropped device\n"
	    "  --storm-at S       at S seconds (once all are up) drop "
	    "every connection\n"
	    "                     and reconnect; without --duration the "
	    "run ends when all are back\n"
	    "  --storm-after S    the same, S seconds after every device of "
	    "every process\n"
	    "                     was up (a hold of S seconds)\n"
	    "  --storm-jitter MS  within MS milliseconds, uniformly (5000)\n"
	    "  --tls 1.2|1.3      wss: force this TLS version (default: "
	    "negotiate)\n"
	    "  --resume           wss: every reconnect (after a storm too) "
	    "offers the\n"
	    "                     device's previous TLS session (1.2 ticket "
	    "or 1.3 PSK)\n"
	    "  --ca FILE --servername NAME --insecure\n"
	    "  --json FILE        write the report as JSON too\n"
	    "  --quiet            no progress lines\n");
}

static int
parse_args(struct opts *o, int argc, char **argv)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->ramp = 1000;
	o->max_pending = 64;
	o->payload = 64;
	o->reconnect = 1;
	o->storm_jitter_ms = 5000;
	snprintf(o->topic, sizeof(o->topic), "telemetry");
	snprintf(o->path, sizeof(o->path), "/v1/devices/{id}");
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *s = NULL;
		size_t cap = 0;
		long *num = NULL;

		if (!strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(a, "--version")) {
			printf("hub-loadgen %s (libwebsockets %s)\n",
			       HUB_VERSION, lws_get_library_version());
			exit(0);
		} else if (!strcmp(a, "--binary")) {
			o->binary = 1;
			continue;
		} else if (!strcmp(a, "--insecure")) {
			o->insecure = 1;
			continue;
		} else if (!strcmp(a, "--quiet")) {
			o->quiet = 1;
			continue;
		} else if (!strcmp(a, "--no-reconnect")) {
			o->reconnect = 0;
			continue;
		} else if (!strcmp(a, "--resume")) {
			o->resume = 1;
			continue;
		} else if (!strcmp(a, "--tls")) {
			if (!v)
				goto missing;
			if (!strcmp(v, "1.2"))
				o->tls_ver = 12;
			else if (!strcmp(v, "1.3"))
				o->tls_ver = 13;
			else {
				fprintf(stderr,
					"hub-loadgen: --tls 1.2 or 1.3, not "
					"%s\n",
					v);
				return -1;
			}
			i++;
			continue;
		}
		if (!strcmp(a, "--url"))
			s = o->url, cap = sizeof(o->url);
		else if (!strcmp(a, "--creds"))
			s = o->creds, cap = sizeof(o->creds);
		else if (!strcmp(a, "--json"))
			s = o->json, cap = sizeof(o->json);
		else if (!strcmp(a, "--ca"))
			s = o->ca, cap = sizeof(o->ca);
		else if (!strcmp(a, "--servername"))
			s = o->servername, cap = sizeof(o->servername);
		else if (!strcmp(a, "--path"))
			s = o->path, cap = sizeof(o->path);
		else if (!strcmp(a, "--topic"))
			s = o->topic, cap = sizeof(o->topic);
		else if (!strcmp(a, "--src-ips"))
			s = o->src_ips, cap = sizeof(o->src_ips);
		else if (!strcmp(a, "-n"))
			num = &o->n;
		else if (!strcmp(a, "--procs"))
			num = &o->procs;
		else if (!strcmp(a, "--ramp"))
			num = &o->ramp;
		else if (!strcmp(a, "--max-pending"))
			num = &o->max_pending;
		else if (!strcmp(a, "--duration"))
			num = &o->duration;
		else if (!strcmp(a, "--payload"))
			num = &o->payload;
		else if (!strcmp(a, "--qos"))
			num = &o->qos;
		else if (!strcmp(a, "--messages"))
			num = &o->messages;
		else if (!strcmp(a, "--storm-at"))
			num = &o->storm_at;
		else if (!strcmp(a, "--storm-after"))
			num = &o->storm_after;
		else if (!strcmp(a, "--storm-jitter"))
			num = &o->storm_jitter_ms;
		else if (!strcmp(a, "--rate")) {
			char *end;

			if (!v)
				goto missing;
			o->rate = strtod(v, &end);
			if (end == v || *end || o->rate < 0) {
				fprintf(stderr, "hub-loadgen: bad --rate %s\n",
					v);
				return -1;
			}
			i++;
			continue;
		} else {
			fprintf(stderr, "hub-loadgen: unknown option %s\n", a);
			return -1;
		}
		if (!v)
			goto missing;
		if (s) {
			if (strlen(v) >= cap) {
				fprintf(stderr, "hub-loadgen: %s too long\n",
					a);
				return -1;
			}
			memcpy(s, v, strlen(v) + 1);
		} else if (parse_long(v, num)) {
			fprintf(stderr, "hub-loadgen: bad %s %s\n", a, v);
			return -1;
		}
		i++;
		continue;
	missing:
		fprintf(stderr, "hub-loadgen: %s needs a value\n", a);
		return -1;
	}
	if (!o->url[0] || !o->creds[0]) {
		fprintf(stderr,
			"hub-loadgen: --url and --creds are required\n");
		return -1;
	}
	if (o->qos > 1 || o->payload > 65000 || o->procs > LG_MAX_PROCS ||
	    (o->binary && o->qos)) {
		fprintf(stderr, "hub-loadgen: --qos 0|1 (binary frames are "
				"QoS 0), --payload <= 65000, --procs <= 64\n");
		return -1;
	}
	if (o->src_ips[0]) {
		static char check[64][48];

		if (!src_ips_expand(o->src_ips, check)) {
			fprintf(stderr,
				"hub-loadgen: bad --src-ips %s (A.B.C.X-Y or "
				"A.B.C.X-A.B.C.Y, at most 64 addresses)\n",
				o->src_ips);
			return -1;
		}
	}
	if (o->storm_at && o->storm_after) {
		fprintf(stderr,
			"hub-loadgen: --storm-at or --storm-after, not both\n");
		return -1;
	}
	if (o->messages && o->rate <= 0) {
		fprintf(stderr, "hub-loadgen: --messages needs --rate\n");
		return -1;
	}
	if (!o->ramp)
		o->ramp = 1;
	if (!o->max_pending)
		o->max_pending = 1;
	return 0;
}

static void
sum_stats(struct lg_stats *all, const struct lg_stats *st, long procs)
{
	long p;
	int i, k;

	memset(all, 0, sizeof(*all));
	for (p = 0; p < procs; p++) {
		const struct lg_stats *s = &st[p];

#define ADD(f) all->f += __atomic_load_n(&s->f, __ATOMIC_RELAXED)
		ADD(connected);
		ADD(attempts);
		ADD(failed);
		ADD(closed_unexpected);
		ADD(closed_before_storm);
		ADD(storm_back);
		ADD(sent);
		ADD(acked);
		ADD(err);
		ADD(received);
		ADD(pings_ok);
		ADD(tls_full);
		ADD(tls_resumed);
		ADD(tls_offered);
		ADD(tls12);
		ADD(tls13);
		ADD(tls_certs);
		for (i = 0; i < LG_HBUCKETS; i++) {
			ADD(hs_full[i]);
			ADD(hs_res[i]);
		}
		for (i = 0; i < 8; i++) {
			ADD(close_codes[i]);
			ADD(errs[i]);
		}
		for (i = 0; i < LG_HBUCKETS; i++)
			ADD(hs[i]);
#undef ADD
		{
			uint64_t f = __atomic_load_n(&s->t_first_rx,
						     __ATOMIC_RELAXED),
				 l = __atomic_load_n(&s->t_last_rx,
						     __ATOMIC_RELAXED);

			if (f && (!all->t_first_rx || f < all->t_first_rx))
				all->t_first_rx = f;
			if (l > all->t_last_rx)
				all->t_last_rx = l;
		}
		for (i = 0; i < LG_REASONS; i++) {
			if (!s->reason[i][0])
				continue;
			for (k = 0; k < LG_REASONS; k++) {
				if (!all->reason[k][0])
					snprintf(all->reason[k], LG_REASON_LEN,
						 "%s", s->reason[i]);
				if (!strcmp(all->reason[k], s->reason[i])) {
					all->reason_n[k] += s->reason_n[i];
					break;
				}
			}
		}
	}
}

struct sample {
	double t;
	long connected, sent, acked, received;
};

static void
report(const struct opts *o, const struct lg_stats *a, const struct sample *s,
       int ns, double elapsed, double t_all_up, double storm_back_s, long peak,
       uint64_t storm0)
{
	cJSON *j = cJSON_CreateObject(), *x, *arr;
	char *txt;
	int i;

	printf("\nhub-loadgen report (%ld devices, %.1f s)\n", o->n, elapsed);
	printf("  %-28s %ld\n", "connect attempts", a->attempts);
	printf("  %-28s %ld\n", "connected at most", peak);
	printf("  %-28s %.2f s\n", "all connected after",
	       t_all_up >= 0 ? t_all_up : -1.0);
	printf("  %-28s %ld\n", "failed connects", a->failed);
	for (i = 0; i < LG_REASONS; i++)
		if (a->reason[i][0])
			printf("    %-40s %ld\n", a->reason[i], a->reason_n[i]);
	printf("  %-28s %ld\n", "unexpected disconnects", a->closed_unexpected);
	for (i = 0; i < 8; i++)
		if (a->close_codes[i] && i < 7)
			printf("    close %-20d %ld\n", close_list[i],
			       a->close_codes[i]);
		else if (a->close_codes[i])
			printf("    close %-20s %ld\n", "other",
			       a->close_codes[i]);
	printf("  %-28s p50 %.2f  p99 %.2f  max %.2f ms\n", "handshake",
	       hist_pct(a->hs, 0.5) / 1000.0, hist_pct(a->hs, 0.99) / 1000.0,
	       hist_pct(a->hs, 1.0) / 1000.0);
	if (o->tls) {
		printf("  %-28s %ld full, %ld resumed (%ld offered); TLS 1.2 "
		       "%ld, 1.3 %ld\n",
		       "TLS handshakes", a->tls_full, a->tls_resumed,
		       a->tls_offered, a->tls12, a->tls13);
		printf("  %-28s p50 %.2f  p99 %.2f  max %.2f ms\n",
		       "  full handshake", hist_pct(a->hs_full, 0.5) / 1000.0,
		       hist_pct(a->hs_full, 0.99) / 1000.0,
		       hist_pct(a->hs_full, 1.0) / 1000.0);
		printf("  %-28s p50 %.2f  p99 %.2f  max %.2f ms\n",
		       "  resumed handshake", hist_pct(a->hs_res, 0.5) / 1000.0,
		       hist_pct(a->hs_res, 0.99) / 1000.0,
		       hist_pct(a->hs_res, 1.0) / 1000.0);
	}
	printf("  %-28s %ld\n", "sent", a->sent);
	printf("  %-28s %ld\n", "acked", a->acked);
	printf("  %-28s %ld\n", "errors", a->err);
	for (i = 0; i < 8; i++)
		if (a->errs[i])
			printf("    %-26s %ld\n", err_names[i], a->errs[i]);
	printf("  %-28s %ld\n", "downlink received", a->received);
	if (o->storm_at || o->storm_after) {
		printf("  %-28s %ld\n", "  of which before the storm",
		       a->closed_before_storm);
		printf("  %-28s %.2f s (%ld back)\n", "storm: all back after",
		       storm_back_s, a->storm_back);
	}

	cJSON_AddNumberToObject(j, "devices", (double)o->n);
	cJSON_AddNumberToObject(j, "elapsed_s", elapsed);
	cJSON_AddNumberToObject(j, "attempts", (double)a->attempts);
	cJSON_AddNumberToObject(j, "connected_peak", (double)peak);
	cJSON_AddNumberToObject(j, "all_connected_s", t_all_up);
	cJSON_AddNumberToObject(j, "failed", (double)a->failed);
	x = cJSON_AddObjectToObject(j, "failed_by_reason");
	for (i = 0; i < LG_REASONS; i++)
		if (a->reason[i][0])
			cJSON_AddNumberToObject(x, a->reason[i],
						(double)a->reason_n[i]);
	cJSON_AddNumberToObject(j, "unexpected_disconnects",
				(double)a->closed_unexpected);
	x = cJSON_AddObjectToObject(j, "close_codes");
	for (i = 0; i < 8; i++) {
		char k[16];

		if (!a->close_codes[i])
			continue;
		if (i < 7)
			snprintf(k, sizeof(k), "%d", close_list[i]);
		else
			snprintf(k, sizeof(k), "other");
		cJSON_AddNumberToObject(x, k, (double)a->close_codes[i]);
	}
	x = cJSON_AddObjectToObject(j, "handshake_ms");
	cJSON_AddNumberToObject(x, "p50", hist_pct(a->hs, 0.5) / 1000.0);
	cJSON_AddNumberToObject(x, "p99", hist_pct(a->hs, 0.99) / 1000.0);
	cJSON_AddNumberToObject(x, "max", hist_pct(a->hs, 1.0) / 1000.0);
	if (o->tls) {
		cJSON *tl = cJSON_AddObjectToObject(j, "tls");

		if (o->tls_ver)
			cJSON_AddStringToObject(tl, "version_forced",
						o->tls_ver == 12 ? "1.2"
								 : "1.3");
		else
			cJSON_AddNullToObject(tl, "version_forced");
		cJSON_AddBoolToObject(tl, "resume", o->resume != 0);
		cJSON_AddNumberToObject(tl, "handshakes_full",
					(double)a->tls_full);
		cJSON_AddNumberToObject(tl, "handshakes_resumed",
					(double)a->tls_resumed);
		cJSON_AddNumberToObject(tl, "sessions_offered",
					(double)a->tls_offered);
		/* handshakes in which the server sent its certificate: each
		 * full one, none of the resumed */
		cJSON_AddNumberToObject(tl, "server_certificates",
					(double)a->tls_certs);
		x = cJSON_AddObjectToObject(tl, "negotiated");
		cJSON_AddNumberToObject(x, "1.2", (double)a->tls12);
		cJSON_AddNumberToObject(x, "1.3", (double)a->tls13);
		x = cJSON_AddObjectToObject(tl, "full_ms");
		cJSON_AddNumberToObject(x, "p50",
					hist_pct(a->hs_full, 0.5) / 1000.0);
		cJSON_AddNumberToObject(x, "p99",
					hist_pct(a->hs_full, 0.99) / 1000.0);
		cJSON_AddNumberToObject(x, "max",
					hist_pct(a->hs_full, 1.0) / 1000.0);
		x = cJSON_AddObjectToObject(tl, "resumed_ms");
		cJSON_AddNumberToObject(x, "p50",
					hist_pct(a->hs_res, 0.5) / 1000.0);
		cJSON_AddNumberToObject(x, "p99",
					hist_pct(a->hs_res, 0.99) / 1000.0);
		cJSON_AddNumberToObject(x, "max",
					hist_pct(a->hs_res, 1.0) / 1000.0);
	}
	cJSON_AddNumberToObject(j, "sent", (double)a->sent);
	cJSON_AddNumberToObject(j, "acked", (double)a->acked);
	cJSON_AddNumberToObject(j, "errors", (double)a->err);
	x = cJSON_AddObjectToObject(j, "errors_by_code");
	for (i = 0; i < 8; i++)
		if (a->errs[i])
			cJSON_AddNumberToObject(x, err_names[i],
						(double)a->errs[i]);
	cJSON_AddNumberToObject(j, "downlink_received", (double)a->received);
	/* CLOCK_MONOTONIC µs, to compare with a publisher on this host */
	cJSON_AddNumberToObject(j, "downlink_first_rx_mono_us",
				(double)a->t_first_rx);
	cJSON_AddNumberToObject(j, "downlink_last_rx_mono_us",
				(double)a->t_last_rx);
	if (o->storm_at || o->storm_after) {
		cJSON_AddNumberToObject(j,
					"unexpected_disconnects_before_storm",
					(double)a->closed_before_storm);
		/* CLOCK_MONOTONIC µs of the first process's storm; 0: none */
		cJSON_AddNumberToObject(j, "storm_mono_us", (double)storm0);
		cJSON_AddNumberToObject(j, "storm_all_back_s", storm_back_s);
		cJSON_AddNumberToObject(j, "storm_back", (double)a->storm_back);
	}
	arr = cJSON_AddArrayToObject(j, "per_second");
	for (i = 0; i < ns; i++) {
		x = cJSON_CreateObject();
		cJSON_AddNumberToObject(x, "t", s[i].t);
		cJSON_AddNumberToObject(x, "connected", (double)s[i].connected);
		cJSON_AddNumberToObject(x, "sent", (double)s[i].sent);
		cJSON_AddNumberToObject(x, "acked", (double)s[i].acked);
		cJSON_AddNumberToObject(x, "received", (double)s[i].received);
		cJSON_AddItemToArray(arr, x);
	}
	if (o->json[0]) {
		FILE *f = strcmp(o->json, "-") ? fopen(o->json, "w") : stdout;

		txt = cJSON_PrintUnformatted(j);
		if (f && txt) {
			fprintf(f, "%s\n", txt);
			if (f != stdout)
				fclose(f);
		} else
			fprintf(stderr, "hub-loadgen: cannot write %s\n",
				o->json);
		free(txt);
	}
	cJSON_Delete(j);
}

int
main(int argc, char **argv)
{
	static struct opts o;
	struct lg_stats *st, all;
	struct sample *samples;
	struct creds cr;
	struct lg_dev *dev;
	const char *prot, *addr, *path;
	char urlbuf[512];
	pid_t pids[LG_MAX_PROCS];
	struct rlimit rl;
	uint64_t t0;
	double t_all_up = -1, storm_back_s = -1;
	uint64_t storm0 = 0;
	long peak = 0;
	int port, tls, ns = 0, alive, rc = 0;
	long p, per, i;

	if (parse_args(&o, argc, argv)) {
		usage(stderr);
		return 2;
	}
	snprintf(urlbuf, sizeof(urlbuf), "%s", o.url);
	if (lws_parse_uri(urlbuf, &prot, &addr, &port, &path)) {
		fprintf(stderr, "hub-loadgen: bad --url %s\n", o.url);
		return 2;
	}
	tls = !strcmp(prot, "wss");
	o.tls = tls;
	if (!tls && (o.tls_ver || o.resume)) {
		fprintf(stderr, "hub-loadgen: --tls and --resume need a "
				"wss:// --url\n");
		return 2;
	}
	if (load_creds(o.creds, o.n, &cr)) {
		fprintf(stderr, "hub-loadgen: no id,token lines in %s\n",
			o.creds);
		return 2;
	}
	if (!o.n || o.n > cr.n)
		o.n = cr.n;
	if (!o.procs)
		o.procs = (o.n + 15999) / 16000;
	if (o.procs > o.n)
		o.procs = o.n;
	per = (o.n + o.procs - 1) / o.procs;
	if (!getrlimit(RLIMIT_NOFILE, &rl)) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		if ((rlim_t)per + 64 > rl.rlim_cur) {
			fprintf(stderr,
				"hub-loadgen: %ld devices per process exceed "
				"the open-file limit %lu: use more --procs\n",
				per, (unsigned long)rl.rlim_cur);
			return 2;
		}
	}
	st = mmap(NULL, sizeof(*st) * (size_t)o.procs, PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	dev = calloc((size_t)o.n, sizeof(*dev));
	samples = calloc(LG_MAX_SECONDS, sizeof(*samples));
	if (st == MAP_FAILED || !dev || !samples) {
		fprintf(stderr, "hub-loadgen: out of memory\n");
		return 1;
	}
	memset(st, 0, sizeof(*st) * (size_t)o.procs);
	for (i = 0; i < o.n; i++) {
		dev[i].id = cr.id[i];
		dev[i].token = cr.token[i];
	}
	/* the ramp is for all processes together */
	o.ramp = (o.ramp + o.procs - 1) / o.procs;
	signal(SIGINT, SIG_IGN); /* children stop on it; we report */
	for (p = 0; p < o.procs; p++) {
		long first = p * per, n = first + per > o.n ? o.n - first : per;

		pids[p] = fork();
		if (pids[p] < 0) {
			fprintf(stderr, "hub-loadgen: fork: %s\n",
				strerror(errno));
			o.procs = p;
			break;
		}
		if (!pids[p]) {
			signal(SIGINT, SIG_DFL);
			_exit(child_run(&o, st, o.procs, dev + first, n, (int)p,
					addr, port, tls));
		}
	}
	t0 = hub_clock_mono_us();
	for (;;) {
		double t;
		struct sample *s;

		alive = 0;
		for (p = 0; p < o.procs; p++)
			if (!__atomic_load_n(&st[p].done, __ATOMIC_ACQUIRE))
				alive++;
		sum_stats(&all, st, o.procs);
		t = (double)(hub_clock_mono_us() - t0) / 1e6;
		/* exact times from the children's clocks (one monotonic
		 * clock for every process) */
		{
			uint64_t up = 0, back = 0;
			int all_up = 1, all_back = 1;

			peak = 0;
			storm0 = UINT64_MAX;
			for (p = 0; p < o.procs; p++) {
				peak += st[p].peak;
				if (!st[p].t_all_up)
					all_up = 0;
				else if (st[p].t_all_up > up)
					up = st[p].t_all_up;
				if (!st[p].t_all_back)
					all_back = 0;
				else if (st[p].t_all_back > back)
					back = st[p].t_all_back;
				if (st[p].t_storm && st[p].t_storm < storm0)
					storm0 = st[p].t_storm;
			}
			if (all_up && up > t0)
				t_all_up = (double)(up - t0) / 1e6;
			if (storm0 == UINT64_MAX)
				storm0 = 0;
			if (all_back && storm0 && back > storm0)
				storm_back_s = (double)(back - storm0) / 1e6;
		}
		if (ns < LG_MAX_SECONDS) {
			s = &samples[ns++];
			s->t = t;
			s->connected = all.connected;
			s->sent = all.sent;
			s->acked = all.acked;
			s->received = all.received;
		}
		if (!o.quiet && isatty(2))
			fprintf(stderr,
				"\r%6.0fs  up %ld/%ld  failed %ld  sent %ld  "
				"acked %ld  err %ld  rx %ld   ",
				t, all.connected, o.n, all.failed, all.sent,
				all.acked, all.err, all.received);
		else if (!o.quiet && ns % 10 == 1)
			fprintf(stderr,
				"%.0fs up %ld/%ld failed %ld sent %ld acked "
				"%ld err %ld rx %ld\n",
				t, all.connected, o.n, all.failed, all.sent,
				all.acked, all.err, all.received);
		if (!alive)
			break;
		usleep(1000000 -
		       (useconds_t)((hub_clock_mono_us() - t0) % 1000000));
	}
	for (p = 0; p < o.procs; p++) {
		int status;

		if (waitpid(pids[p], &status, 0) == pids[p] &&
		    (!WIFEXITED(status) || WEXITSTATUS(status)))
			rc = 1;
	}
	sum_stats(&all, st, o.procs);
	report(&o, &all, samples, ns, (double)(hub_clock_mono_us() - t0) / 1e6,
	       t_all_up, storm_back_s, peak, storm0);
	free_creds(&cr);
	free(samples);
	free(dev);
	munmap(st, sizeof(*st) * (size_t)o.procs);
	return rc;
}
