/*
 * http.c - the operations listener (--http): /metrics (Prometheus text,
 * summed over every worker from shared memory), /healthz, /readyz.
 * Every worker listens on it (SO_REUSEPORT); any one can answer.
 *
 * Threads: the lws service thread.
 */
#include "hub_int.h"
#include "hub_version.h"

#include <mbedtls/version.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
hub__http_answer(struct lws *wsi, int status, const char *ctype,
		 const char *body, size_t len, unsigned retry_after)
{
	unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start,
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

/* Ready when every live worker has its broker link and registry. */
static int
ready(const struct metrics *m, char *why, size_t cap)
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

int
hub__http_callback(struct lws *wsi, enum lws_callback_reasons reason,
		   void *user, void *in, size_t len)
{
	struct worker *w = lws_context_user(lws_get_context(wsi));
	const char *uri = in;
	char msg[128];
	int rc;

	if (reason != LWS_CALLBACK_HTTP)
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	if (!strcmp(uri, "/metrics")) {
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
	} else if (!strcmp(uri, "/healthz")) {
		rc = hub__http_answer(wsi, 200, "text/plain", "ok\n", 3, 0);
	} else if (!strcmp(uri, "/readyz")) {
		int ok;

		hub__sample_gauges(w);
		ok = ready(w->metrics, msg, sizeof(msg));
		rc = hub__http_answer(wsi, ok ? 200 : 503, "text/plain", msg,
				      strlen(msg), ok ? 0 : 1);
	} else {
		rc = hub__http_answer(wsi, 404, "text/plain", "not found\n", 10,
				      0);
	}
	if (rc)
		return -1;
	return lws_http_transaction_completed(wsi);
}
