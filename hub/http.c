/*
 * http.c - the operations listener (--http): /metrics (Prometheus text,
 * summed over every worker from shared memory), /healthz, /readyz, the
 * status page (GET /, /app.js, /app.css, compiled in from hub/status/) and
 * its read-only JSON API:
 *
 *   /api/v1/status                               hub, workers, broker, rates
 *   /api/v1/devices?online=&q=&limit=&after=     paged by id
 *   /api/v1/devices/{id}
 *   /api/v1/events?device=&limit=&before=        newest first, paged by seq
 *
 * Every worker listens on it (SO_REUSEPORT); any one can answer.
 *
 * Design: the service thread never touches SQLite. An API request becomes a
 * struct ops_req (http_int.h) handed to this vhost's reader thread
 * (http_api.c), which owns a read-only registry connection
 * (registry_query.h), builds the JSON body and hands it back through a
 * second queue, then wakes the service thread with lws_cancel_service(). On
 * LWS_CALLBACK_EVENT_WAIT_CANCELLED the service thread asks for WRITEABLE on
 * each answered connection and writes the answer there. A client that leaves
 * first is forgotten on LWS_CALLBACK_CLOSED_HTTP: its request's wsi is cleared
 * and the answer dropped when it comes back.
 *
 * --http-token FILE: every request except the static page files,
 * /healthz and /readyz (probes; they tell nothing about devices) needs
 * "Authorization: Bearer <token>" (compared in constant time); the page asks
 * for the token itself. Every answer carries nosniff, a content security policy
 * allowing only this origin, no framing, no referrer and no caching.
 *
 * Threads: everything in this file runs on the lws service thread
 * (asserted in debug builds: HUB_ASSERT_THREAD(&w->service)); the reader
 * thread's side is http_api.c. The todo and done queues are under struct
 * ops_vh's lock; ops_req.wsi and the inflight list belong to the service
 * thread.
 */
#include "http_int.h"
#include "hub_log.h"
#include "hub_version.h"
#include "proto.h"
#include "status_assets.h"

#include <cjson/cJSON.h>
#include <mbedtls/version.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char csp[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'";

static int
add_hdr(struct lws *wsi, const char *name, const char *value, unsigned char **p,
	unsigned char *end)
{
	return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
					   (const unsigned char *)value,
					   (int)strlen(value), p, end);
}

int
hub__http_answer(struct lws *wsi, int status, const char *ctype,
		 const char *body, size_t len, unsigned retry_after)
{
	unsigned char hdr[LWS_PRE + 2048], *start = hdr + LWS_PRE, *p = start,
					   *end = hdr + sizeof(hdr) - 1;
	char ra[16];
	unsigned char *b;
	int n;

	if (lws_add_http_common_headers(wsi, (unsigned)status, ctype,
					(lws_filepos_t)len, &p, end))
		return -1;
	if (retry_after) {
		n = snprintf(ra, sizeof(ra), "%u", retry_after);
		if (lws_add_http_header_by_name(
			wsi, (const unsigned char *)"retry-after:",
			(unsigned char *)ra, n, &p, end))
			return -1;
	}
	if (status == 401 && lws_add_http_header_by_token(
				 wsi, WSI_TOKEN_HTTP_WWW_AUTHENTICATE,
				 (const unsigned char *)"Bearer", 6, &p, end))
		return -1;
	/* RFC 6455 4.4: say which version and protocol to upgrade to */
	if (status == 426 &&
	    (lws_add_http_header_by_token(wsi, WSI_TOKEN_UPGRADE,
					  (const unsigned char *)"websocket", 9,
					  &p, end) ||
	     lws_add_http_header_by_token(wsi, WSI_TOKEN_VERSION,
					  (const unsigned char *)"13", 2, &p,
					  end)))
		return -1;
	if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
					 (const unsigned char *)"no-store", 8,
					 &p, end))
		return -1;
	/* what a browser page should get: no sniffing, only our own
	 * scripts and styles, no framing, no referrer */
	if (add_hdr(wsi, "x-content-type-options:", "nosniff", &p, end) ||
	    add_hdr(wsi, "content-security-policy:", csp, &p, end) ||
	    add_hdr(wsi, "x-frame-options:", "DENY", &p, end) ||
	    add_hdr(wsi, "referrer-policy:", "no-referrer", &p, end))
		return -1;
	if (lws_finalize_http_header(wsi, &p, end))
		return -1;
	if (lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_HEADERS) <
	    0)
		return -1;
	if (!len)
		return 0;
	b = malloc(LWS_PRE + len);
	if (!b)
		return -1;
	memcpy(b + LWS_PRE, body, len);
	n = lws_write(wsi, b + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
	free(b);
	return n < 0 ? -1 : 0;
}

/* Ready when every live worker has its broker link and registry. */
int
hub__http_ready(const struct metrics *m, char *why, size_t cap)
{
	int i, live = 0, broker = 0, reg = 0;

	for (i = 0; i < m->nworkers; i++) {
		const struct metrics_slot *s = &m->slot[i];

		if (!__atomic_load_n(&s->pid, __ATOMIC_RELAXED))
			continue;
		live++;
		broker += __atomic_load_n(&s->v[M_BROKER_CONNECTED],
					  __ATOMIC_RELAXED) != 0;
		reg += __atomic_load_n(&s->v[M_REGISTRY_OPEN],
				       __ATOMIC_RELAXED) != 0;
	}
	if (live < m->nworkers)
		snprintf(why, cap, "workers: %d of %d live\n", live,
			 m->nworkers);
	else if (broker < live)
		snprintf(why, cap, "broker: %d of %d workers connected\n",
			 broker, live);
	else if (reg < live)
		snprintf(why, cap, "registry: %d of %d workers open\n", reg,
			 live);
	else {
		snprintf(why, cap, "ready\n");
		return 1;
	}
	return 0;
}

/*
 * hub_build_info and the limits the alert rules compare gauges against
 * (conf/prometheus/hub-alerts.yml). Appends at o; returns the new offset.
 */
static size_t
render_extra(const struct worker *w, char *out, size_t o, size_t cap)
{
	int r = snprintf(
	    out + o, cap - o,
	    "# HELP hub_build_info Versions of this hubd and its TLS and "
	    "WebSocket libraries.\n# TYPE hub_build_info gauge\n"
	    "hub_build_info{version=\"%s\",lws=\"%s\",mbedtls=\"%s\"} 1\n"
	    "# HELP hub_bridge_pending_limit Reliable messages the bridge "
	    "holds while the broker is away (--bridge-buffer), summed over "
	    "workers.\n# TYPE hub_bridge_pending_limit gauge\n"
	    "hub_bridge_pending_limit %zu\n"
	    "# HELP hub_max_connections Devices this hub accepts "
	    "(--max-conns).\n# TYPE hub_max_connections gauge\n"
	    "hub_max_connections %d\n",
	    HUB_VERSION, LWS_LIBRARY_VERSION, MBEDTLS_VERSION_STRING,
	    (w->conf->bridge_buffer / (size_t)w->nworkers + 1) *
		(size_t)w->nworkers,
	    w->conf->max_conns);

	if (r < 0 || (size_t)r >= cap - o)
		return o;
	return o + (size_t)r;
}

/* ---- the service thread ------------------------------------------------ */

static void
req_free(struct ops_req *r)
{
	if (r) {
		cJSON_free(r->body);
		free(r);
	}
}

static void
inflight_remove(struct ops_vh *vh, struct ops_req *r)
{
	struct ops_req **pp;

	for (pp = &vh->inflight; *pp; pp = &(*pp)->inflight)
		if (*pp == r) {
			*pp = r->inflight;
			return;
		}
}

static struct ops_req *
inflight_find(struct ops_vh *vh, struct lws *wsi)
{
	struct ops_req *r;

	for (r = vh->inflight; r; r = r->inflight)
		if (r->wsi == wsi)
			return r;
	return NULL;
}

/* Answers picked up from the reader: ask to write them, or drop them. */
static void
collect_done(struct ops_vh *vh)
{
	struct ops_req *r, *next;

	pthread_mutex_lock(&vh->lock);
	r = vh->done;
	vh->done = vh->done_tail = NULL;
	pthread_mutex_unlock(&vh->lock);
	for (; r; r = next) {
		next = r->next;
		r->next = NULL;
		r->answered = 1;
		if (r->wsi) {
			lws_callback_on_writable(r->wsi);
		} else {
			inflight_remove(vh, r);
			req_free(r);
		}
	}
}

static void
sample(lws_sorted_usec_list_t *sul)
{
	struct ops_vh *vh = lws_container_of(sul, struct ops_vh, sul_sample);

	metrics_sample_now(vh->w->metrics, hub_clock_ms());
	lws_sul_schedule(vh->w->ctx, 0, &vh->sul_sample, sample,
			 (lws_usec_t)METRICS_HISTORY_MS * LWS_US_PER_MS);
}

int
hub__http_token_read(const char *path, char *out, size_t cap, size_t *len,
		     char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	size_t n;

	*len = 0;
	if (!f) {
		snprintf(err, errlen, "--http-token %s: %s", path,
			 strerror(errno));
		return -1;
	}
	if (!fgets(out, (int)cap, f))
		out[0] = '\0';
	fclose(f);
	n = strcspn(out, "\r\n");
	while (n && (out[n - 1] == ' ' || out[n - 1] == '\t'))
		n--;
	out[n] = '\0';
	if (n < 16) {
		snprintf(err, errlen,
			 "--http-token %s: want a token of at least 16 "
			 "characters on its first line",
			 path);
		return -1;
	}
	*len = n;
	return 0;
}

static int
authorized(struct ops_vh *vh, struct lws *wsi)
{
	char hdr[TOKEN_MAX + 16];
	unsigned char diff = 0;
	size_t i;
	int n;

	if (!vh->token_len)
		return 1;
	n = lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION);
	if (n < 7 || strncasecmp(hdr, "Bearer ", 7) ||
	    (size_t)n - 7 != vh->token_len)
		return 0;
	for (i = 0; i < vh->token_len; i++)
		diff |= (unsigned char)(hdr[7 + i] ^ vh->token[i]);
	return diff == 0;
}

static int
answer_json_error(struct lws *wsi, int status, const char *msg)
{
	char body[256];
	int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", msg);

	return hub__http_answer(wsi, status, "application/json", body,
				(size_t)n, 0);
}

/*
 * The value of query argument name (e.g. "limit=", url-decoded by lws)
 * into buf; 1 if present. lws copies "name=value" and points past the
 * name, so the value is moved to the start of buf.
 */
static int
arg(struct lws *wsi, const char *name, char *buf, int len)
{
	const char *v = lws_get_urlarg_by_name(wsi, name, buf, len);

	if (!v)
		return 0;
	memmove(buf, v, strlen(v) + 1);
	return 1;
}

/*
 * Parses an API request into r; 0, or an HTTP status (the message in
 * *why) for a bad one.
 */
static int
parse_api(struct lws *wsi, const char *uri, struct ops_req *r, const char **why)
{
	char v[1024], *end; /* lws reports a longer value as absent */
	long long n;

	r->limit = API_DEFAULT_LIMIT;
	r->online = -1;
	if (arg(wsi, "limit=", v, sizeof(v))) {
		errno = 0;
		n = strtoll(v, &end, 10);
		if (errno || end == v || *end || n < 1 || n > API_MAX_LIMIT) {
			*why = "limit: want 1..1000";
			return 400;
		}
		r->limit = (int)n;
	}
	if (!strcmp(uri, "/api/v1/status")) {
		r->kind = R_STATUS;
		return 0;
	}
	if (!strcmp(uri, "/api/v1/devices")) {
		r->kind = R_DEVICES;
		if (arg(wsi, "online=", v, sizeof(v)) && v[0]) {
			if (!strcmp(v, "1") || !strcmp(v, "true"))
				r->online = 1;
			else if (!strcmp(v, "0") || !strcmp(v, "false"))
				r->online = 0;
			else {
				*why = "online: want true or false";
				return 400;
			}
		}
		if (arg(wsi, "q=", v, sizeof(v))) {
			if (strlen(v) > API_Q_MAX) {
				*why = "q: at most 128 bytes";
				return 400;
			}
			memcpy(r->q, v, strlen(v) + 1);
		}
		if (arg(wsi, "after=", v, sizeof(v)) && v[0]) {
			if (!proto_id_valid(v, strnlen(v, HUB_ID_MAX + 1))) {
				*why = "after: want a device id";
				return 400;
			}
			memcpy(r->after, v, strlen(v) + 1);
		}
		return 0;
	}
	if (!strncmp(uri, "/api/v1/devices/", 16)) {
		const char *id = uri + 16;

		r->kind = R_DEVICE;
		if (!proto_id_valid(id, strnlen(id, HUB_ID_MAX + 1))) {
			*why = "no such device";
			return 404;
		}
		memcpy(r->id, id, strlen(id) + 1);
		return 0;
	}
	if (!strcmp(uri, "/api/v1/events")) {
		r->kind = R_EVENTS;
		if (arg(wsi, "device=", v, sizeof(v)) && v[0]) {
			if (!proto_id_valid(v, strnlen(v, HUB_ID_MAX + 1))) {
				*why = "device: want a device id";
				return 400;
			}
			memcpy(r->id, v, strlen(v) + 1);
		}
		if (arg(wsi, "before=", v, sizeof(v)) && v[0]) {
			errno = 0;
			n = strtoll(v, &end, 10);
			if (errno || end == v || *end || n < 1) {
				*why = "before: want an event seq";
				return 400;
			}
			r->before = n;
		}
		return 0;
	}
	*why = "not found";
	return 404;
}

/* Hands an API request to the reader; 0 (answer later) or -1. */
static int
submit_api(struct ops_vh *vh, struct lws *wsi, const char *uri)
{
	struct ops_req *r = calloc(1, sizeof(*r));
	const char *why = "";
	int st;

	if (!r)
		return -1;
	st = parse_api(wsi, uri, r, &why);
	if (st) {
		free(r);
		return answer_json_error(wsi, st, why) ? -1 : 1;
	}
	if (!vh->started) {
		free(r);
		return answer_json_error(wsi, 503, "reader not running") ? -1
									 : 1;
	}
	r->wsi = wsi;
	r->inflight = vh->inflight;
	vh->inflight = r;
	pthread_mutex_lock(&vh->lock);
	if (vh->todo_tail)
		vh->todo_tail->next = r;
	else
		vh->todo = r;
	vh->todo_tail = r;
	pthread_cond_signal(&vh->cond);
	pthread_mutex_unlock(&vh->lock);
	return 0;
}

static int
vh_init(struct ops_vh *vh, struct worker *w)
{
	char err[600];

	vh->w = w;
	pthread_mutex_init(&vh->lock, NULL);
	pthread_cond_init(&vh->cond, NULL);
	if (w->conf->http_token[0] &&
	    hub__http_token_read(w->conf->http_token, vh->token,
				 sizeof(vh->token), &vh->token_len, err,
				 sizeof(err))) {
		/* the supervisor checked it; the file changed since */
		hub_log(HUB_LOG_ERR, "HUB-START", "%s", err);
		return -1;
	}
	if (pthread_create(&vh->thread, NULL, hub__http_reader_main, vh)) {
		hub_log(HUB_LOG_ERR, "HUB-START",
			"cannot start the ops reader");
		return -1;
	}
	vh->started = 1;
	if (w->index == 0) {
		metrics_sample_now(w->metrics, hub_clock_ms());
		lws_sul_schedule(w->ctx, 0, &vh->sul_sample, sample,
				 (lws_usec_t)METRICS_HISTORY_MS *
				     LWS_US_PER_MS);
	}
	return 0;
}

static void
vh_destroy(struct ops_vh *vh)
{
	struct ops_req *r, *next;

	if (!vh || !vh->w)
		return;
	lws_sul_cancel(&vh->sul_sample);
	if (vh->started) {
		pthread_mutex_lock(&vh->lock);
		vh->stop = 1;
		pthread_cond_signal(&vh->cond);
		pthread_mutex_unlock(&vh->lock);
		pthread_join(vh->thread, NULL);
		vh->started = 0;
	}
	/* every request is on the inflight list until answered or dropped */
	for (r = vh->inflight; r; r = next) {
		next = r->inflight;
		req_free(r);
	}
	vh->inflight = NULL;
	vh->todo = vh->todo_tail = vh->done = vh->done_tail = NULL;
	pthread_mutex_destroy(&vh->lock);
	pthread_cond_destroy(&vh->cond);
	vh->w = NULL;
}

static const struct status_asset *
find_asset(const char *uri)
{
	int i;

	for (i = 0; i < status_asset_count; i++)
		if (!strcmp(uri, status_assets[i].path) ||
		    (!strcmp(status_assets[i].path, "/") &&
		     !strcmp(uri, "/index.html")))
			return &status_assets[i];
	return NULL;
}

int
hub__http_callback(struct lws *wsi, enum lws_callback_reasons reason,
		   void *user, void *in, size_t len)
{
	struct worker *w = lws_context_user(lws_get_context(wsi));
	struct ops_vh *vh = NULL;
	const struct status_asset *asset;
	const char *uri = in;
	struct ops_req *r;
	char msg[128];
	int rc;

	HUB_ASSERT_THREAD(&w->service);
	if (lws_get_vhost(wsi) && lws_get_protocol(wsi))
		vh = lws_protocol_vh_priv_get(lws_get_vhost(wsi),
					      lws_get_protocol(wsi));
	switch (reason) {
	case LWS_CALLBACK_PROTOCOL_INIT:
		vh = lws_protocol_vh_priv_zalloc(
		    lws_get_vhost(wsi), lws_get_protocol(wsi), sizeof(*vh));
		if (!vh || vh_init(vh, w))
			return -1;
		return 0;
	case LWS_CALLBACK_PROTOCOL_DESTROY:
		vh_destroy(vh);
		return 0;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		if (vh && vh->w)
			collect_done(vh);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (!vh || !(r = inflight_find(vh, wsi)) || !r->answered)
			return 0;
		inflight_remove(vh, r);
		rc = hub__http_answer(wsi, r->status, "application/json",
				      r->body, r->len, 0);
		req_free(r);
		if (rc)
			return -1;
		return lws_http_transaction_completed(wsi);
	case LWS_CALLBACK_CLOSED_HTTP:
		/* the client left: its request, if any, is answered into
		 * the void */
		if (vh && (r = inflight_find(vh, wsi))) {
			r->wsi = NULL;
			if (r->answered) {
				inflight_remove(vh, r);
				req_free(r);
			}
		}
		break;
	case LWS_CALLBACK_HTTP:
		break;
	default:
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	}
	if (reason != LWS_CALLBACK_HTTP)
		return lws_callback_http_dummy(wsi, reason, user, in, len);

	/* the page itself holds no data: served without the token */
	if ((asset = find_asset(uri))) {
		rc = hub__http_answer(wsi, 200, asset->ctype,
				      (const char *)asset->data, asset->len, 0);
	} else if (!strcmp(uri, "/healthz")) {
		rc = hub__http_answer(wsi, 200, "text/plain", "ok\n", 3, 0);
	} else if (!strcmp(uri, "/readyz")) {
		int ok;

		hub__sample_gauges(w);
		ok = hub__http_ready(w->metrics, msg, sizeof(msg));
		rc = hub__http_answer(wsi, ok ? 200 : 503, "text/plain", msg,
				      strlen(msg), ok ? 0 : 1);
	} else if (!vh || !authorized(vh, wsi)) {
		rc = hub__http_answer(wsi, 401, "text/plain",
				      "bearer token required\n", 22, 0);
	} else if (!strcmp(uri, "/metrics")) {
		size_t cap = 64 * 1024, n;
		char *out = malloc(cap);

		if (!out)
			return -1;
		hub__sample_gauges(w);
		n = metrics_render(w->metrics, out, cap);
		n = metrics_render_process(w->metrics, getppid(), out, n, cap);
		n = render_extra(w, out, n, cap);
		rc = hub__http_answer(
		    wsi, 200, "text/plain; version=0.0.4; charset=utf-8", out,
		    n, 0);
		free(out);
	} else if (!strncmp(uri, "/api/", 5)) {
		rc = submit_api(vh, wsi, uri);
		if (rc == 0)
			return 0; /* answered from HTTP_WRITEABLE */
		rc = rc < 0 ? -1 : 0;
	} else {
		rc = hub__http_answer(wsi, 404, "text/plain", "not found\n", 10,
				      0);
	}
	if (rc)
		return -1;
	return lws_http_transaction_completed(wsi);
}
