/*
 * session.c - device sessions: the lws protocol "hub.v1" of the device
 * vhost. Authentication before the upgrade, protocol v1 frames, per-session
 * outbound queues, the hand-off to the bridge and the registry writer, and
 * the handling of what they send back.
 *
 * Threads: everything here runs on the lws service thread of the worker.
 * Nothing blocks: the broker is behind the bridge's queue, the disk behind
 * the writer's, credentials are an in-memory snapshot.
 *
 * Auth happens in LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, the one place lws lets
 * us answer with an HTTP status before the upgrade (401/403/429/503 with
 * Retry-After, docs/protocol.md). lws re-allocates the session's
 * user data when it binds the ws protocol, so the result is parked in
 * worker->pending and picked up in FILTER_PROTOCOL_CONNECTION, which lws
 * calls from the same stack for the same wsi.
 */
#include "hub_int.h"
#include "proto.h"
#include "hub_log.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A text frame refused by the rate limit is scanned for its id up to this
 * size; larger ones are dropped unread (their err names no id). */
#define RATE_ID_PEEK_MAX 4096

/* ---- the device map -------------------------------------------------- */

int
hub__map_init(struct worker *w, size_t expected)
{
	size_t n = 1024;

	while (n < expected * 2 && n < ((size_t)1 << 24))
		n <<= 1;
	w->map = calloc(n, sizeof(*w->map));
	if (!w->map)
		return HUB_ERR_NOMEM;
	w->map_mask = n - 1;
	return HUB_OK;
}

void
hub__map_free(struct worker *w)
{
	free(w->map);
	w->map = NULL;
}

static struct sess *
map_find(struct worker *w, const char *device)
{
	struct sess *s = w->map[hub_hash_str(device) & w->map_mask];

	while (s && strcmp(s->device, device))
		s = s->hnext;
	return s;
}

static void
map_insert(struct worker *w, struct sess *s)
{
	struct sess **b = &w->map[hub_hash_str(s->device) & w->map_mask];

	s->hnext = *b;
	*b = s;
}

static void
map_remove(struct worker *w, struct sess *s)
{
	struct sess **p = &w->map[hub_hash_str(s->device) & w->map_mask];

	while (*p && *p != s)
		p = &(*p)->hnext;
	if (*p)
		*p = s->hnext;
	s->hnext = NULL;
}

/* ---- outbound ----------------------------------------------------------- */

static uint64_t
mono_ms(void)
{
	return hub_clock_mono_us() / 1000;
}

/*
 * A frame for the device is dropped: counted each time; recorded in the
 * registry as a downlink_dropped event once per episode (until the queue
 * has drained again), so a device that stops reading is one row, not one
 * per message.
 */
static void
sess_dropped(struct sess *s, const char *reason)
{
	struct worker *w = s->w;
	struct writer_item it;

	metrics_add(w->m, M_DROP_DOWNLINK_QUEUE_FULL, 1);
	if (s->dropping)
		return;
	s->dropping = 1;
	hub_log(HUB_LOG_WARN, "HUB-DOWNLINK-DROP",
		"device=%s session=%s reason=%s queued=%zu", s->device,
		s->session, reason, s->out_bytes);
	memset(&it, 0, sizeof(it));
	it.kind = WRITER_DOWNLINK_DROPPED;
	it.ts = hub_clock_ms();
	memcpy(it.device, s->device, sizeof(it.device));
	memcpy(it.session, s->session, sizeof(it.session));
	snprintf(it.reason, sizeof(it.reason), "%s", reason);
	writer_submit(w->writer, &it); /* full: the counter still has it */
}

/*
 * Queues a frame for the device: 0, or -1 when it was dropped (and counted)
 * because the session's queue is at its bound or is closing.
 */
static int
sess_send(struct sess *s, const void *data, size_t len, int binary)
{
	struct outf *f;

	if (s->state != SESS_LIVE)
		return -1;
	if (s->out_count >= SESS_OUTQ_MAX ||
	    s->out_bytes + len > SESS_OUTQ_BYTES) {
		sess_dropped(s, "downlink_queue_full");
		return -1;
	}
	f = malloc(sizeof(*f) + LWS_PRE + len);
	if (!f) {
		sess_dropped(s, "downlink_queue_full");
		return -1;
	}
	f->next = NULL;
	f->len = len;
	f->binary = binary;
	memcpy(f->buf + LWS_PRE, data, len);
	if (s->out_tail)
		s->out_tail->next = f;
	else
		s->out_head = f;
	s->out_tail = f;
	s->out_count++;
	s->out_bytes += len;
	s->w->out_bytes += len;
	lws_callback_on_writable(s->wsi);
	return 0;
}

static void
sess_err(struct sess *s, int has_id, uint32_t id, const char *code,
	 const char *msg)
{
	char buf[768];
	size_t n = proto_frame_err(buf, sizeof(buf), has_id, id, code, msg);

	if (n)
		sess_send(s, buf, n, 0);
}

/* Closes the session with a close frame once its queue is written. */
static void
sess_close(struct sess *s, int code, const char *reason)
{
	if (s->state != SESS_LIVE)
		return;
	s->state = SESS_CLOSING;
	s->close_code = code;
	s->close_reason = reason;
	/* heartbeat.c no longer watches it: a peer that stopped reading gets
	 * the idle timeout to take the rest of its queue and the close */
	lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK,
			s->w->conf->idle_timeout);
	lws_callback_on_writable(s->wsi);
}

static void
free_queues(struct sess *s)
{
	struct outf *f, *fn;
	struct cmd_pending *c, *cn;

	for (f = s->out_head; f; f = fn) {
		fn = f->next;
		free(f);
	}
	if (s->w)
		s->w->out_bytes -= s->out_bytes;
	s->out_head = s->out_tail = NULL;
	s->out_count = 0;
	s->out_bytes = 0;
	for (c = s->cmds; c; c = cn) {
		cn = c->next;
		free(c);
	}
	s->cmds = NULL;
	s->ncmds = 0;
	free(s->rx);
	s->rx = NULL;
	s->rx_len = 0;
	s->rx_cap = 0;
}

/* ---- presence: which session of a device is current ------------------- */

/*
 * The one owner of the question "which session of device X is current, and
 * may this close publish presence?". Every path that learns of a newer
 * session of the device calls sess_supersede(): a new session on this
 * worker (on_established), or the hub/sessions announcement of one on
 * another worker or hub (on_session_ev). It applies in any state: live, or
 * already closing - kicked or disabled with its socket full or its peer
 * dead, which can last until the idle timeout. A superseded session closes
 * as "replaced" and publishes no presence, because its successor already
 * published "online" and an "offline" with a higher seq would override it.
 * on_closed asks sess_publishes_presence(); the registry writer confirms
 * the answer against the registry before it publishes (writer.c,
 * confirm_offline: "is there a newer open session?").
 */
static void
sess_supersede(struct sess *s)
{
	s->superseded = 1;
	sess_close(s, 4001, "replaced"); /* a closing one keeps its code */
}

static int
sess_publishes_presence(const struct sess *s)
{
	return !s->superseded;
}

/* ---- authentication (before the upgrade) ------------------------------ */

static int
refuse(struct worker *w, struct lws *wsi, int status, unsigned retry_after,
       const char *body)
{
	(void)w;
	return hub__http_answer(wsi, status, "text/plain", body, strlen(body),
				retry_after)
		   ? -1
		   : 1; /* 1: lws completes the transaction */
}

/*
 * Logs a refused authentication; record: also write an auth_failed event.
 * Events are kept to one per source address and minute (the first; the
 * metrics count them all), so failures cannot grow the registry without
 * bound.
 */
static void
log_auth_failure(struct worker *w, const char *device, const char *addr,
		 int record, const char *reason)
{
	struct writer_item it;

	hub_log(HUB_LOG_INFO, "HUB-AUTH-FAIL", "device=%s addr=%s reason=%s",
		device, addr, reason);
	if (!record)
		return;
	memset(&it, 0, sizeof(it));
	it.kind = WRITER_AUTH_FAILED;
	it.ts = hub_clock_ms();
	snprintf(it.device, sizeof(it.device), "%s", device);
	snprintf(it.addr, sizeof(it.addr), "%s", addr);
	snprintf(it.reason, sizeof(it.reason), "%s", reason);
	writer_submit(w->writer, &it);
}

/*
 * The Sec-WebSocket-Protocol offer: HUB_OK if it is absent or offers
 * hub.v1, with a "bearer.<token>" entry in *tok (browsers cannot set
 * headers); HUB_ERR_INVAL otherwise. buf receives the header.
 */
static int
subprotocols(struct lws *wsi, char *buf, size_t cap, const char **tok,
	     size_t *toklen)
{
	int n = lws_hdr_copy(wsi, buf, (int)cap, WSI_TOKEN_PROTOCOL), v1;

	*tok = NULL;
	*toklen = 0;
	if (n == 0)
		return HUB_OK;
	if (n < 0 || proto_subprotocols(buf, (size_t)n, &v1, tok, toklen) ||
	    !v1)
		return HUB_ERR_INVAL;
	return HUB_OK;
}

/*
 * The token, in the order of docs/protocol.md: Authorization: Bearer, the
 * bearer.<token> subprotocol (already in *tok), ?token=. Every check runs
 * over the length lws reports, so a NUL, CR or LF inside is a refusal
 * (HUB_ERR_INVAL), never a shorter token that still matches. HUB_OK with
 * *tok set, or HUB_ERR_NOTFOUND when none was offered.
 */
static int
find_token(struct lws *wsi, char *auth, size_t authcap, char *arg,
	   size_t argcap, const char **tok, size_t *toklen)
{
	const char *t;
	size_t tl;
	int n, i, rc;

	n = lws_hdr_copy(wsi, auth, (int)authcap, WSI_TOKEN_HTTP_AUTHORIZATION);
	if (n < 0)
		return HUB_ERR_INVAL; /* longer than any token we issue */
	rc = n ? proto_cred_bearer(auth, (size_t)n, &t, &tl) : HUB_ERR_NOTFOUND;
	if (rc == HUB_OK) {
		*tok = t;
		*toklen = tl;
	}
	if (rc != HUB_ERR_NOTFOUND || *tok)
		return rc == HUB_ERR_NOTFOUND ? HUB_OK : rc;
	for (i = 0;
	     (n = lws_hdr_copy_fragment(wsi, arg, (int)argcap,
					WSI_TOKEN_HTTP_URI_ARGS, i)) >= 0;
	     i++) {
		rc = proto_cred_urlarg(arg, (size_t)n, "token", &t, &tl);
		if (rc == HUB_OK) {
			*tok = t;
			*toklen = tl;
		}
		if (rc != HUB_ERR_NOTFOUND)
			return rc;
	}
	return HUB_ERR_NOTFOUND;
}

/*
 * 1 if the TLS peer presented a certificate that chains to --device-ca and
 * whose CN is the device id. lws's mbedTLS backend maps "require a valid
 * client certificate" to MBEDTLS_SSL_VERIFY_OPTIONAL, so a handshake with a
 * bad or missing certificate still succeeds: the verification result has to
 * be checked here, and anything but a verified match falls back to tokens.
 */
static int
cert_matches(struct worker *w, struct lws *wsi, const char *id)
{
	union {
		union lws_tls_cert_info_results r;
		char
		    b[sizeof(union lws_tls_cert_info_results) + HUB_ID_MAX + 8];
	} u;
	size_t idlen = strlen(id);

	if (w->conf->no_tls || !w->conf->device_ca[0])
		return 0;
	memset(&u, 0, sizeof(u));
	if (lws_tls_peer_cert_info(wsi, LWS_TLS_CERT_INFO_VERIFIED, &u.r, 0) ||
	    !u.r.verified)
		return 0;
	memset(&u, 0, sizeof(u));
	if (lws_tls_peer_cert_info(wsi, LWS_TLS_CERT_INFO_COMMON_NAME, &u.r,
				   HUB_ID_MAX + 1))
		return 0;
	return u.r.ns.len == (int)idlen && !memcmp(u.r.ns.name, id, idlen);
}

/*
 * The client's address: the peer's, or, when the peer is one of
 * --trusted-proxies, the one its PROXY protocol header names (proxyproto.c)
 * and else its X-Forwarded-For (else Forwarded). A header naming another
 * trusted proxy (nginx behind HAProxy) lets that one's X-Forwarded-For
 * speak. It feeds the failed-auth limit, events and presence.
 */
static void
client_addr(struct worker *w, struct lws *wsi, char *addr, size_t cap)
{
	char xff[512];
	int n;

	addr[0] = '\0';
	lws_get_peer_simple(wsi, addr, cap);
	if (!w->nproxies ||
	    !proto_cidrs_match(w->proxies, w->nproxies, addr, strlen(addr)))
		return;
	if (hub__proxyproto_addr(w, wsi, addr, cap) &&
	    !proto_cidrs_match(w->proxies, w->nproxies, addr, strlen(addr)))
		return;
	n = lws_hdr_copy(wsi, xff, sizeof(xff), WSI_TOKEN_X_FORWARDED_FOR);
	if (n > 0) {
		proto_forwarded_for(xff, (size_t)n, w->proxies, w->nproxies,
				    addr, cap);
		return;
	}
	n = lws_hdr_custom_copy(wsi, xff, sizeof(xff), "forwarded:", 10);
	if (n > 0)
		proto_forwarded(xff, (size_t)n, w->proxies, w->nproxies, addr,
				cap);
}

/*
 * The request itself, before any credential (proto_upgrade_status): 0, or
 * the status to refuse it with. Header copies are bounded; an oversized
 * one reads as malformed.
 */
/* Content-Length and Transfer-Encoding as lws parsed them. */
static void
body_headers(struct lws *wsi, char *cl, size_t cap, struct proto_upgrade *u)
{
	int n = lws_hdr_copy(wsi, cl, (int)cap, WSI_TOKEN_HTTP_CONTENT_LENGTH);

	u->content_length = cl;
	u->content_length_len = n > 0 ? (size_t)n : (size_t)(n < 0);
	n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING);
	u->transfer_encoding_len = n > 0 ? (size_t)n : 0;
}

static int
upgrade_status(struct lws *wsi, const char **why)
{
	char ver[16], key[32], wsv[8], cl[24];
	struct proto_upgrade u;
	int n;

	memset(&u, 0, sizeof(u));
	n = lws_hdr_copy(wsi, ver, sizeof(ver), WSI_TOKEN_HTTP);
	u.version = ver;
	u.version_len = n > 0 ? (size_t)n : 0;
	n = lws_hdr_total_length(wsi, WSI_TOKEN_HOST);
	u.host_len = n > 0 ? (size_t)n : 0;
	n = lws_hdr_copy(wsi, key, sizeof(key), WSI_TOKEN_KEY);
	u.key = key;
	u.key_len = n > 0 ? (size_t)n : 0;
	n = lws_hdr_copy(wsi, wsv, sizeof(wsv), WSI_TOKEN_VERSION);
	u.wsversion = wsv;
	u.wsversion_len = n > 0 ? (size_t)n : (size_t)(n < 0);
	body_headers(wsi, cl, sizeof(cl), &u);
#if defined(LWS_WITH_HTTP_UNCOMMON_HEADERS) || defined(LWS_HTTP_HEADERS_ALL)
	/* lws keeps a PROXY v1 line before the request as a header; one from a
	 * trusted proxy was consumed by proxyproto.c: this one is not HTTP */
	if (lws_hdr_total_length(wsi, WSI_TOKEN_PROXY) > 0) {
		*why = "PROXY header from an untrusted peer\n";
		return 400;
	}
#endif
	return proto_upgrade_status(&u, why);
}

static int
on_confirm_upgrade(struct worker *w, struct lws *wsi, const char *up)
{
	const struct conf *c = w->conf;
	char uri[256], auth[PROTO_TOKEN_MAX + 16], arg[PROTO_TOKEN_MAX + 16];
	char proto[PROTO_TOKEN_MAX + 64], origin[256], addr[REGISTRY_ADDR_MAX];
	const char *id, *token = NULL;
	uint64_t now = mono_ms();
	unsigned wait;
	size_t idlen, toklen = 0;
	const char *why;
	int n, rc, st, first, disabled = 0;

	memset(&w->pending, 0, sizeof(w->pending));
	if (strcasecmp(up, "websocket"))
		return refuse(w, wsi, 400, 0, "only websocket upgrades\n");
	st = upgrade_status(wsi, &why);
	if (st) {
		/* a malformed request: answered, and the connection closed */
		refuse(w, wsi, st, 0, why);
		return -1;
	}
	if (w->draining) {
		metrics_add(w->m, M_REFUSED_DRAINING, 1);
		return refuse(w, wsi, 503, (unsigned)c->drain + 1,
			      "hub is shutting down\n");
	}
	client_addr(w, wsi, addr, sizeof(addr));
	/* the id over the decoded path's full length: "%00" is a byte */
	n = lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI);
	rc = n > 0 ? proto_device_path(uri, (size_t)n, &id, &idlen)
		   : HUB_ERR_NOTFOUND;
	if (rc == HUB_ERR_NOTFOUND)
		return refuse(w, wsi, 404, 0, "no such endpoint\n");
	if (rc != HUB_OK)
		return refuse(w, wsi, 404, 0,
			      "device ids are [A-Za-z0-9_-]{1,64}\n");
	if (subprotocols(wsi, proto, sizeof(proto), &token, &toklen))
		return refuse(w, wsi, 400, 0, "subprotocol must be hub.v1\n");
	/* a browser says where the page came from: --allowed-origins */
	n = lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN);
	if (n < 0 || (n > 0 && !proto_origin_allowed(c->allowed_origins, origin,
						     (size_t)n)))
		return refuse(w, wsi, 403, 0, "origin not allowed\n");
	wait = authlimit_blocked(w->authlimit, addr, now);
	if (wait) {
		metrics_add(w->m, M_AUTH_FAIL_RATE_LIMITED, 1);
		return refuse(w, wsi, 429, wait, "too many failed attempts\n");
	}
	if (w->nsessions >= w->max_sessions) {
		metrics_add(w->m, M_REFUSED_FULL, 1);
		return refuse(w, wsi, 503, 5, "hub is full\n");
	}
	if (cert_matches(w, wsi, id)) {
		if (!registry_creds_fingerprint(w->creds, id, &disabled)) {
			metrics_add(w->m, M_AUTH_FAIL_UNKNOWN_DEVICE, 1);
			first = authlimit_fail(w->authlimit, addr, now);
			log_auth_failure(w, id, addr, first, "unknown_device");
			return refuse(w, wsi, 401, 0,
				      "unknown device or bad token\n");
		}
		rc = disabled ? HUB_ERR_DISABLED : HUB_OK;
		goto checked;
	}
	rc = find_token(wsi, auth, sizeof(auth), arg, sizeof(arg), &token,
			&toklen);
	if (rc == HUB_ERR_NOTFOUND) {
		metrics_add(w->m, M_AUTH_FAIL_NO_CREDENTIALS, 1);
		first = authlimit_fail(w->authlimit, addr, now);
		log_auth_failure(w, id, addr, first, "no_credentials");
		return refuse(w, wsi, 401, 0, "credentials required\n");
	}
	rc = rc ? HUB_ERR_AUTH
		: registry_creds_check(w->creds, id, token, toklen);
	if (rc == HUB_ERR_AUTH) /* maybe a signed fleet token */
		rc = hub__fleet_auth(w, id, token, toklen,
				     &w->pending.token_iat);
checked:
	if (rc == HUB_ERR_DISABLED) {
		metrics_add(w->m, M_AUTH_FAIL_DISABLED, 1);
		log_auth_failure(w, id, addr, 1, "disabled");
		return refuse(w, wsi, 403, 0, "device disabled\n");
	}
	if (rc != HUB_OK) {
		int known =
		    registry_creds_fingerprint(w->creds, id, &disabled) != 0;

		metrics_add(w->m,
			    known ? M_AUTH_FAIL_BAD_TOKEN
				  : M_AUTH_FAIL_UNKNOWN_DEVICE,
			    1);
		first = authlimit_fail(w->authlimit, addr, now);
		log_auth_failure(w, id, addr, first,
				 known ? "bad_token" : "unknown_device");
		return refuse(w, wsi, 401, 0, "unknown device or bad token\n");
	}
	w->pending.wsi = wsi;
	memcpy(w->pending.device, id, idlen + 1);
	snprintf(w->pending.addr, sizeof(w->pending.addr), "%s", addr);
	w->pending.fingerprint =
	    registry_creds_fingerprint(w->creds, id, &disabled);
	hub__groups_pending(w, id);
	return 0;
}

/*
 * --max-pending-per-addr: a connection counts from its accept until it is
 * upgraded as an authenticated device or closed. Its slot rides on the wsi
 * (lws's opaque user data survives the protocol binding).
 */
static int
pending_enter(struct worker *w, struct lws *wsi)
{
	char addr[REGISTRY_ADDR_MAX];
	struct pendlimit_slot *slot;
	int refuse;

	addr[0] = '\0';
	lws_get_peer_simple(wsi, addr, sizeof(addr));
	/* a trusted proxy carries many clients: not capped as one, unless
	 * its PROXY header names the client */
	if (w->nproxies &&
	    proto_cidrs_match(w->proxies, w->nproxies, addr, strlen(addr)) &&
	    (!hub__proxyproto_addr(w, wsi, addr, sizeof(addr)) ||
	     proto_cidrs_match(w->proxies, w->nproxies, addr, strlen(addr))))
		return 0;
	slot = pendlimit_enter(w->pending_per_addr, addr, &refuse);
	lws_set_opaque_user_data(wsi, slot);
	return refuse ? -1 : 0; /* -1: lws closes it at once */
}

static void
pending_leave(struct lws *wsi)
{
	pendlimit_leave(lws_get_opaque_user_data(wsi));
	lws_set_opaque_user_data(wsi, NULL);
}

int
hub__sess_send(struct sess *s, const void *data, size_t len, int binary)
{
	return sess_send(s, data, len, binary);
}

/* ---- session life ---------------------------------------------------- */

static void
announce(struct worker *w, struct sess *s)
{
	char json[256];
	struct bridge_msg *m;
	int n;

	m = bridge_msg_new(BRIDGE_SUB, s->device, NULL, NULL, 0);
	if (m && bridge_submit(w->bridge, m) != HUB_OK)
		bridge_msg_free(m);
	n = snprintf(json, sizeof(json),
		     "{\"op\":\"session\",\"session\":\"%s\",\"hub\":\"%s\","
		     "\"ts\":%lld}",
		     s->session, w->conf->hub_id, (long long)s->started_ms);
	m = bridge_msg_new(BRIDGE_ANNOUNCE, s->device, NULL, json, (size_t)n);
	if (!m)
		return;
	m->qos = 1;
	snprintf(m->session, sizeof(m->session), "%s", s->session);
	if (bridge_submit(w->bridge, m) != HUB_OK)
		bridge_msg_free(m);
}

static int
on_established(struct worker *w, struct sess *s, struct lws *wsi)
{
	struct writer_item it;
	struct sess *old;

	if (!s->device[0])
		return -1;
	s->w = w;
	s->wsi = wsi;
	s->handle = ++w->next_handle;
	s->state = SESS_LIVE;
	s->started_ms = hub_clock_ms();
	s->last_rx_ms = mono_ms();
	snprintf(s->session, sizeof(s->session), "%011llx%04x%02x%06x",
		 (unsigned long long)s->started_ms, w->session_salt & 0xffff,
		 (unsigned)w->index & 0xff, ++w->session_counter & 0xffffff);
	uplimit_init(&s->up, &w->upconf, (uint32_t)s->last_rx_ms);
	old = map_find(w, s->device);
	if (old) {
		map_remove(w, old);
		sess_supersede(old);
	}
	map_insert(w, s);
	/* nothing of the device reaches the broker before its online status:
	 * reading resumes once the writer has queued it (on_opened) */
	lws_rx_flow_control(wsi, 0);
	w->nsessions++;
	metrics_add(w->m, M_SESSIONS_ACCEPTED, 1);
	metrics_add(w->m, M_CONNECTIONS, 1);

	memset(&it, 0, sizeof(it));
	it.kind = WRITER_OPEN;
	it.publish = 1;
	it.create_device = s->token_iat != 0;
	it.sess = s->handle;
	it.ts = s->started_ms;
	memcpy(it.device, s->device, sizeof(it.device));
	memcpy(it.session, s->session, sizeof(it.session));
	memcpy(it.addr, s->addr, sizeof(it.addr));
	/* the announcement first: it is what closes an older session
	 * elsewhere, and may travel while the registry commits */
	announce(w, s);
	hub__groups_join(w, s);
	if (writer_submit(w->writer, &it)) {
		hub_log(HUB_LOG_ERR, "HUB-REG-FULL", "session row of %s lost",
			s->device);
		s->online_out = 1;
		lws_rx_flow_control(wsi, 1);
	}
	hub_log(HUB_LOG_DEBUG, "HUB-SESS-OPEN", "device=%s session=%s addr=%s",
		s->device, s->session, s->addr);
	return 0;
}

static const char *
close_reason(struct worker *w, struct sess *s)
{
	if (s->superseded)
		return "replaced";
	if (s->close_reason)
		return s->close_reason;
	if (w->draining)
		return "shutdown";
	if (!s->peer_closed && mono_ms() - s->last_rx_ms + 1500 >=
				   (uint64_t)w->conf->idle_timeout * 1000)
		return "timeout";
	return "closed";
}

static void
count_close(struct worker *w, const char *reason)
{
	static const struct {
		const char *r;
		enum metric m;
	} t[] = {
	    {"closed", M_CLOSED_CLOSED},     {"timeout", M_CLOSED_TIMEOUT},
	    {"kicked", M_CLOSED_KICKED},     {"disabled", M_CLOSED_DISABLED},
	    {"replaced", M_CLOSED_REPLACED}, {"shutdown", M_CLOSED_SHUTDOWN}};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (!strcmp(t[i].r, reason))
			metrics_add(w->m, t[i].m, 1);
}

static void
on_closed(struct worker *w, struct sess *s)
{
	struct writer_item it;
	const char *reason;

	hub__groups_leave(w, s);
	if (s->state == SESS_NEW) {
		free_queues(s);
		return;
	}
	reason = close_reason(w, s);
	if (map_find(w, s->device) == s) {
		struct bridge_msg *m;

		map_remove(w, s);
		m = bridge_msg_new(BRIDGE_UNSUB, s->device, NULL, NULL, 0);
		if (m && bridge_submit(w->bridge, m) != HUB_OK)
			bridge_msg_free(m);
	}
	memset(&it, 0, sizeof(it));
	it.kind = WRITER_CLOSE;
	it.publish = sess_publishes_presence(s);
	it.ts = hub_clock_ms();
	memcpy(it.device, s->device, sizeof(it.device));
	memcpy(it.session, s->session, sizeof(it.session));
	snprintf(it.reason, sizeof(it.reason), "%s", reason);
	if (writer_submit(w->writer, &it))
		hub_log(HUB_LOG_ERR, "HUB-REG-FULL", "session end of %s lost",
			s->device);
	count_close(w, reason);
	metrics_dec(w->m, M_CONNECTIONS);
	w->nsessions--;
	hub_log(HUB_LOG_DEBUG, "HUB-SESS-CLOSE",
		"device=%s session=%s reason=%s", s->device, s->session,
		reason);
	free_queues(s);
	s->state = SESS_NEW;
}

/* ---- uplink ------------------------------------------------------------ */

static void
uplink(struct worker *w, struct sess *s, const char *topic, const void *payload,
       size_t plen, int qos, int has_id, uint32_t id)
{
	struct bridge_msg *m;
	int rc;

	if (qos == 1) {
		if (s->inflight >= (uint32_t)w->conf->inflight) {
			metrics_add(w->m, M_DROP_INFLIGHT_FULL, 1);
			sess_err(s, 1, id, PROTO_E_INFLIGHT_FULL,
				 "too many unacknowledged QoS 1 messages");
			return;
		}
		if (!bridge_has_room(w->bridge)) {
			metrics_add(w->m, M_DROP_BROKER_UNAVAILABLE, 1);
			sess_err(s, 1, id, PROTO_E_BROKER_UNAVAILABLE,
				 "broker unavailable and buffer full");
			return;
		}
	}
	m = bridge_msg_new(BRIDGE_PUB, s->device, topic, payload, plen);
	if (!m) {
		sess_err(s, has_id, id, PROTO_E_BROKER_UNAVAILABLE,
			 "out of memory");
		return;
	}
	m->qos = qos;
	m->sess = s->handle;
	m->msg_id = id;
	m->t_rx_us = hub_clock_mono_us();
	memcpy(m->session, s->session, sizeof(m->session));
	rc = bridge_submit(w->bridge, m);
	if (rc == HUB_OK) {
		if (qos == 1)
			s->inflight++;
		metrics_add(w->m, qos ? M_PUB_QOS1 : M_PUB_QOS0, 1);
		return;
	}
	bridge_msg_free(m);
	if (qos == 1) {
		metrics_add(w->m, M_DROP_BROKER_UNAVAILABLE, 1);
		sess_err(s, 1, id, PROTO_E_BROKER_UNAVAILABLE,
			 "broker unavailable and buffer full");
	} else
		metrics_add(w->m, M_DROP_QOS0_BROKER_DOWN, 1);
}

static void
on_device_ack(struct worker *w, struct sess *s, uint32_t id)
{
	struct cmd_pending **p = &s->cmds, *c;
	struct bridge_msg *m;

	metrics_add(w->m, M_CMD_ACKS, 1);
	while (*p && (*p)->id != id)
		p = &(*p)->next;
	if (!*p)
		return; /* a live, non-retained command: nothing to clear */
	c = *p;
	*p = c->next;
	s->ncmds--;
	/* the offline command was delivered: take it off the broker */
	m = bridge_msg_new(BRIDGE_CLEAR, s->device, c->topic, NULL, 0);
	if (m) {
		m->qos = 1;
		m->retain = 1;
		if (bridge_submit(w->bridge, m) != HUB_OK)
			bridge_msg_free(m);
	}
	free(c);
}

static int
on_text(struct worker *w, struct sess *s, const char *buf, size_t len)
{
	struct proto_frame in;
	const char *code, *msg;
	char out[64];
	size_t n;

	if (!proto_utf8_valid(buf, len)) {
		lws_close_reason(s->wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD,
				 (unsigned char *)"invalid UTF-8", 13);
		s->close_reason = "closed";
		return -1;
	}
	if (proto_frame_parse_text(buf, len, &in, &code, &msg) != HUB_OK) {
		metrics_add(w->m,
			    strcmp(code, PROTO_E_BAD_TOPIC) ? M_DROP_BAD_FRAME
							    : M_DROP_BAD_TOPIC,
			    1);
		sess_err(s, in.has_id, in.id, code, msg);
		return 0;
	}
	switch (in.op) {
	case PROTO_PING:
		n = proto_frame_pong(out, sizeof(out));
		sess_send(s, out, n, 0);
		break;
	case PROTO_PONG:
		break;
	case PROTO_ACK:
		on_device_ack(w, s, in.id);
		break;
	case PROTO_PUB:
		uplink(w, s, in.topic, in.payload, in.payload_len, in.qos,
		       in.has_id, in.id);
		break;
	}
	proto_frame_release(&in);
	return 0;
}

static void
on_binary(struct worker *w, struct sess *s, const uint8_t *buf, size_t len)
{
	char topic[256];
	const uint8_t *payload;
	const char *code;
	size_t plen;

	if (proto_frame_parse_binary(buf, len, topic, sizeof(topic), &payload,
				     &plen, &code) != HUB_OK) {
		metrics_add(w->m,
			    strcmp(code, PROTO_E_BAD_TOPIC) ? M_DROP_BAD_FRAME
							    : M_DROP_BAD_TOPIC,
			    1);
		sess_err(s, 0, 0, code,
			 "binary frame: byte 0 = topic length 1..255, topic, "
			 "payload");
		return;
	}
	uplink(w, s, topic, payload, plen, 0, 0, 0);
}

/*
 * One complete message. Every message (a ping or an ack as much as a pub)
 * is charged to the device's frames and bytes budget before it is parsed.
 * Over budget it is dropped and answered with err rate_limited; only a
 * small text frame is scanned, for the id the err should name, so a
 * device past its budget costs no more than the bytes it sends.
 */
static int
on_message(struct worker *w, struct sess *s, const unsigned char *buf,
	   size_t len)
{
	struct proto_frame f;
	const char *code, *msg;

	metrics_add(w->m, M_MSG_IN, 1);
	if (!uplimit_charge(&s->up, &w->upconf, len, (uint32_t)mono_ms())) {
		metrics_add(w->m, M_DROP_RATE_LIMITED, 1);
		memset(&f, 0, sizeof(f));
		if (!s->rx_binary && len <= RATE_ID_PEEK_MAX &&
		    proto_utf8_valid(buf, len) &&
		    !proto_frame_parse_text((const char *)buf, len, &f, &code,
					    &msg))
			proto_frame_release(&f);
		sess_err(s, f.has_id, f.id, PROTO_E_RATE_LIMITED,
			 "over --rate messages or --rate-bytes bytes per "
			 "second");
		return 0;
	}
	if (s->rx_binary) {
		on_binary(w, s, buf, len);
		return 0;
	}
	return on_text(w, s, (const char *)buf, len);
}

static int
on_receive(struct worker *w, struct sess *s, struct lws *wsi,
	   const unsigned char *in, size_t len)
{
	int first = lws_is_first_fragment(wsi),
	    final = lws_is_final_fragment(wsi);
	size_t cap = (size_t)w->conf->max_frame;
	int rc = 0;

	if (s->state != SESS_LIVE)
		return 0;
	/* RFC 6455 5.2: no extension is negotiated, so RSV1-3 must be 0 (lws
	 * built without extensions lets RSV1 through) */
	if (lws_get_reserved_bits(wsi) & 0x70) {
		lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR,
				 (unsigned char *)"reserved bits", 13);
		s->close_reason = "closed";
		return -1;
	}
	s->last_rx_ms = mono_ms();
	if (first) {
		s->rx_len = 0;
		s->rx_binary = lws_frame_is_binary(wsi);
	}
	if (s->rx_len + len > cap) {
		metrics_add(w->m, M_DROP_TOO_LARGE, 1);
		lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
				 (unsigned char *)"frame too large", 15);
		s->close_reason = "closed";
		return -1;
	}
	metrics_add(w->m, M_BYTES_IN, len);
	if (first && final)
		return on_message(w, s, in, len);
	if (s->rx_len + len > s->rx_cap) {
		/* grow as the message does (a device that stops half-way holds
		 * what it sent, not --max-frame) */
		size_t ncap = s->rx_cap ? s->rx_cap : 4096;
		unsigned char *n;

		while (ncap < s->rx_len + len)
			ncap *= 2;
		if (ncap > cap)
			ncap = cap;
		n = realloc(s->rx, ncap);
		if (!n)
			return -1;
		s->rx = n;
		s->rx_cap = ncap;
	}
	memcpy(s->rx + s->rx_len, in, len);
	s->rx_len += len;
	if (!final)
		return 0;
	rc = on_message(w, s, s->rx, s->rx_len);
	free(s->rx);
	s->rx = NULL;
	s->rx_len = 0;
	s->rx_cap = 0;
	return rc;
}

/*
 * Writes queued frames while the socket takes them: lws sends at most
 * rx_buffer_size (4 KiB) per POLLOUT and keeps the rest of a frame in its
 * own buffer, so one frame per callback cannot keep up with a burst of
 * small commands to a device that reads. lws_send_pipe_choked() says when
 * the kernel (or lws's leftover of a partial send) is full: stop there and
 * wait for the next POLLOUT.
 */
static int
on_writeable(struct worker *w, struct sess *s, struct lws *wsi)
{
	char reason[32];
	int wrote = 0;

	if (s->ping_due && s->state == SESS_LIVE) {
		/* a payload: lws passes an empty PONG to no callback, and
		 * LWS_CALLBACK_RECEIVE_PONG is what tells us the peer lives */
		unsigned char ping[LWS_PRE + 2] = {0};

		s->ping_due = 0;
		ping[LWS_PRE] = 'h';
		ping[LWS_PRE + 1] = 'b';
		if (lws_write(wsi, ping + LWS_PRE, 2, LWS_WRITE_PING) < 0)
			return -1;
		wrote++;
	}
	while (s->out_head && (!wrote || !lws_send_pipe_choked(wsi))) {
		struct outf *f = s->out_head;
		int n =
		    lws_write(wsi, f->buf + LWS_PRE, f->len,
			      f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);

		s->out_head = f->next;
		if (!s->out_head)
			s->out_tail = NULL;
		s->out_count--;
		s->out_bytes -= f->len;
		w->out_bytes -= f->len;
		free(f);
		if (n < 0)
			return -1;
		wrote++;
		metrics_add(w->m, M_MSG_OUT, 1);
		metrics_add(w->m, M_BYTES_OUT, (uint64_t)n);
	}
	if (wrote) {
		if (!s->out_head)
			s->dropping = 0; /* drained: the next drop is news */
		if (s->out_head || s->state == SESS_CLOSING)
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (s->state == SESS_CLOSING && s->close_code) {
		int n = snprintf(reason, sizeof(reason), "%s", s->close_reason);

		lws_close_reason(wsi, (enum lws_close_status)s->close_code,
				 (unsigned char *)reason, (size_t)n);
		return -1;
	}
	return 0;
}

/* ---- events from the other threads ----------------------------------- */

static void
on_cmd(struct worker *w, struct bridge_ev *e)
{
	struct sess *s = map_find(w, e->device);
	enum proto_pl kind;
	int64_t id = -1;
	size_t cap, n;
	char *buf;

	if (!s || s->state != SESS_LIVE)
		return; /* retained ones wait in the broker */
	kind = proto_payload_kind(e->payload, e->len);
	if (kind == PROTO_PL_BINARY) {
		cap = 1 + strlen(e->topic) + e->len;
		buf = malloc(cap);
		if (!buf)
			return;
		n = proto_frame_binary((uint8_t *)buf, cap, e->topic,
				       e->payload, e->len);
		if (n && sess_send(s, buf, n, 1))
			n = 0;
		free(buf);
		/* binary frames carry no id: clear an offline one on delivery
		 */
		if (n && e->retained)
			id = -2;
	} else {
		if (e->qos > 0)
			id = ++s->next_cmd_id;
		cap = proto_frame_msg_bound(e->topic, e->len);
		buf = malloc(cap);
		if (!buf)
			return;
		n = proto_frame_msg(buf, cap, e->topic, e->payload, e->len,
				    kind, id);
		if (n && sess_send(s, buf, n, 0))
			n = 0;
		free(buf);
	}
	if (!n)
		return;
	metrics_add(w->m, M_CMDS_DELIVERED, 1);
	if (!e->retained)
		return;
	if (id == -2 || id < 0) {
		struct bridge_msg *m =
		    bridge_msg_new(BRIDGE_CLEAR, s->device, e->topic, NULL, 0);
		if (m) {
			m->qos = 1;
			m->retain = 1;
			if (bridge_submit(w->bridge, m) != HUB_OK)
				bridge_msg_free(m);
		}
		return;
	}
	if (s->ncmds < SESS_CMD_PENDING_MAX) {
		struct cmd_pending *c = calloc(1, sizeof(*c));

		if (!c)
			return;
		c->id = (uint32_t)id;
		snprintf(c->topic, sizeof(c->topic), "%s", e->topic);
		c->next = s->cmds;
		s->cmds = c;
		s->ncmds++;
	}
}

/*
 * 1 if an announcement names a session this worker created. Such a one is
 * never newer than the current session: the device map replaced it here
 * already. It still arrives when the retained announcement of an older
 * session is delivered by a subscription made for it just before the
 * device reconnected to this same worker (seen: test_takeover_same_hub,
 * the new session closed as "replaced" by the old one). One hubd per hub
 * id, so hub id + worker index name this worker (or an earlier run of it,
 * whose sessions are older still).
 */
static int
own_session(const struct worker *w, const cJSON *root, const char *sid)
{
	const cJSON *hub = cJSON_GetObjectItemCaseSensitive(root, "hub");
	char idx[3];

	if (!cJSON_IsString(hub) || strcmp(hub->valuestring, w->conf->hub_id))
		return 0;
	/* %011llx%04x%02x%06x: ms, salt, worker index, counter */
	if (strlen(sid) != 23)
		return 0;
	snprintf(idx, sizeof(idx), "%02x", (unsigned)w->index & 0xff);
	return !memcmp(sid + 15, idx, 2);
}

static void
on_session_ev(struct worker *w, struct bridge_ev *e)
{
	struct sess *s = map_find(w, e->device);
	const cJSON *op, *sid;
	cJSON *root;

	/* a closing session too: a newer one elsewhere supersedes it */
	if (!s || s->state == SESS_NEW)
		return;
	root = cJSON_ParseWithLength(e->payload, e->len);
	if (!root)
		return;
	op = cJSON_GetObjectItemCaseSensitive(root, "op");
	if (cJSON_IsString(op) && !strcmp(op->valuestring, "kick")) {
		hub_log(HUB_LOG_INFO, "HUB-KICK", "device=%s", s->device);
		sess_close(s, 4004, "kicked");
	} else if (cJSON_IsString(op) && !strcmp(op->valuestring, "session")) {
		/* The bridge subscribes to these only after the broker acked
		 * this worker's own announcement of the device: whatever comes
		 * now is newer in the broker's order, whatever the clocks of
		 * the hubs say (bridge_subs.c). */
		sid = cJSON_GetObjectItemCaseSensitive(root, "session");
		if (cJSON_IsString(sid) &&
		    strcmp(sid->valuestring, s->session) &&
		    !own_session(w, root, sid->valuestring)) {
			hub_log(HUB_LOG_INFO, "HUB-SESS-REPLACED",
				"device=%s session=%s by=%s", s->device,
				s->session, sid->valuestring);
			sess_supersede(s);
		}
	}
	cJSON_Delete(root);
}

static void
revalidate(struct worker *w)
{
	size_t b;

	for (b = 0; b <= w->map_mask; b++) {
		struct sess *s;

		for (s = w->map[b]; s; s = s->hnext) {
			int disabled = 0;
			uint64_t fp = registry_creds_fingerprint(
			    w->creds, s->device, &disabled);

			if (s->state != SESS_LIVE)
				continue;
			/* a signed token is not the registry's credential:
			 * revocations come as hub/revoked/{id} */
			if (fp != s->fingerprint && !s->token_iat) {
				hub_log(HUB_LOG_INFO, "HUB-AUTH-REVOKED",
					"device=%s", s->device);
				sess_close(s, 1008, "disabled");
			} else if (disabled) {
				hub_log(HUB_LOG_INFO, "HUB-DISABLED",
					"device=%s", s->device);
				sess_close(s, 4003, "disabled");
			}
		}
	}
}

/* hub/revoked/{id}: a signed session whose token is older closes. */
static void
on_revoked_ev(struct worker *w, const struct bridge_ev *e)
{
	int code;
	struct sess *s =
	    hub__fleet_revoked(w, e, &code) ? map_find(w, e->device) : NULL;

	if (s && s->state == SESS_LIVE && s->token_iat &&
	    hub__fleet_session_void(w, s->device, s->token_iat)) {
		hub_log(HUB_LOG_INFO, "HUB-AUTH-REVOKED", "device=%s signed",
			s->device);
		sess_close(s, code, "disabled");
	}
}

/* The online statuses the writer queued: let those sessions' uplink flow. */
static void
on_opened(struct worker *w)
{
	struct writer_item *l = writer_take_opened(w->writer), *it;

	for (it = l; it; it = it->next) {
		struct sess *s = map_find(w, it->device);

		if (s && s->handle == it->sess && !s->online_out) {
			s->online_out = 1;
			if (s->state == SESS_LIVE)
				lws_rx_flow_control(s->wsi, 1);
		}
	}
	writer_opened_free(l);
}

#define WAKE_BATCH 256 /* bridge events handled per wake */

void
hub__service_wake(struct worker *w)
{
	struct registry_creds *c;
	struct bridge_ev *e;
	struct sess *s;
	int batch;

	__atomic_store_n(&w->wake_pending, 0, __ATOMIC_RELEASE);
	on_opened(w);
	batch = 0;
	c = writer_take_creds(w->writer);
	if (c) {
		registry_creds_free(w->creds);
		w->creds = c;
		metrics_set(w->m, M_DEVICES_KNOWN, registry_creds_count(c));
		revalidate(w);
	}
	/* a bounded batch, then the loop writes before taking more: a burst
	 * of commands drains into the sockets as it arrives instead of piling
	 * up in the sessions' queues */
	while (batch++ < WAKE_BATCH && (e = bridge_poll(w->bridge))) {
		switch (e->kind) {
		case BRIDGE_EV_ACK:
			s = map_find(w, e->device);
			if (e->t_rx_us)
				metrics_latency(w->m, hub_clock_mono_us() -
							  e->t_rx_us);
			if (s && s->handle == e->sess) {
				char out[64];
				size_t n = proto_frame_ack(out, sizeof(out),
							   e->msg_id);

				if (s->inflight)
					s->inflight--;
				sess_send(s, out, n, 0);
				metrics_add(w->m, M_ACKS_SENT, 1);
			}
			break;
		case BRIDGE_EV_NACK:
			/* the broker refused it (e.g. an ACL): never resent */
			s = map_find(w, e->device);
			if (s && s->handle == e->sess) {
				if (s->inflight)
					s->inflight--;
				metrics_add(w->m, M_DROP_BROKER_UNAVAILABLE, 1);
				sess_err(s, 1, e->msg_id,
					 PROTO_E_BROKER_UNAVAILABLE,
					 "the broker refused the message");
			}
			break;
		case BRIDGE_EV_CMD:
			on_cmd(w, e);
			break;
		case BRIDGE_EV_SESSION:
			on_session_ev(w, e);
			break;
		case BRIDGE_EV_REVOKED:
			on_revoked_ev(w, e);
			break;
		case BRIDGE_EV_GROUPCMD:
			hub__group_cmd(w, e);
			break;
		case BRIDGE_EV_LINK:
			if (e->up)
				hub_log(HUB_LOG_INFO, "HUB-BROKER-UP", "%s",
					w->conf->broker);
			else
				hub_log(HUB_LOG_WARN, "HUB-BROKER-DOWN",
					"%s: %.*s", w->conf->broker,
					(int)(e->len < 300 ? e->len : 300),
					e->len ? (const char *)e->payload
					       : "connection lost");
			break;
		}
		bridge_ev_free(e);
	}
	if (batch > WAKE_BATCH) {
		/* more may wait: come back after this loop's writes (the one
		 * lws call allowed from any thread, fine from this one) */
		__atomic_store_n(&w->wake_pending, 1, __ATOMIC_RELEASE);
		lws_cancel_service(w->ctx);
	}
}

void
hub__drain_step(struct worker *w)
{
	uint64_t elapsed = mono_ms() - w->drain_start_ms;
	uint64_t span = (uint64_t)w->conf->drain * 1000;
	int target;
	size_t b;

	target = span == 0 || elapsed >= span
		     ? w->drain_total
		     : (int)((uint64_t)w->drain_total * elapsed / span) + 1;
	for (b = 0; b <= w->map_mask && w->drain_closed < target; b++) {
		struct sess *s;

		for (s = w->map[b]; s && w->drain_closed < target; s = s->hnext)
			/* a session awaiting PUBACKs gets its acks first (until
			 * the drain period is over): the device need not send
			 * again what the broker has */
			if (s->state == SESS_LIVE &&
			    (!s->inflight || elapsed >= span)) {
				sess_close(s, 1001, "shutdown");
				w->drain_closed++;
			}
	}
}

/*
 * Adds what a bridge counter gained since the last sample. The slot in
 * shared memory outlives the worker process; the bridge's counters start
 * at 0 in each new one, so copying them would make the totals go back.
 */
static void
add_delta(struct worker *w, enum metric k, uint64_t now, uint64_t *seen)
{
	if (now > *seen)
		metrics_add(w->m, k, now - *seen);
	*seen = now;
}

void
hub__sample_gauges(struct worker *w)
{
	struct bridge_stats st;

	bridge_get_stats(w->bridge, &st);
	metrics_set(w->m, M_BRIDGE_PENDING, st.pending);
	metrics_set(w->m, M_BROKER_CONNECTED, (uint64_t) !!st.connected);
	metrics_set(w->m, M_WRITER_QUEUE, writer_queue_len(w->writer));
	metrics_set(w->m, M_DOWNLINK_QUEUED, w->out_bytes);
	add_delta(w, M_BRIDGE_SENT, st.sent, &w->seen.sent);
	add_delta(w, M_BRIDGE_ACKED, st.acked, &w->seen.acked);
	add_delta(w, M_BRIDGE_RESENT, st.resent, &w->seen.resent);
	add_delta(w, M_BRIDGE_CONNECTS, st.connects, &w->seen.connects);
	add_delta(w, M_CMDS_REFUSED, st.cmds_dropped, &w->seen.cmds_dropped);
}

/* ---- the lws protocol callback ---------------------------------------- */

int
hub__device_callback(struct lws *wsi, enum lws_callback_reasons reason,
		     void *user, void *in, size_t len)
{
	struct worker *w = lws_context_user(lws_get_context(wsi));
	struct sess *s = user;
	int rc;

	switch (reason) {
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		return on_confirm_upgrade(w, wsi, in);
	case LWS_CALLBACK_HTTP: {
		struct proto_upgrade u;
		char cl[24];

		/* a request with a body is answered 400 and the connection
		 * closed: nothing after it is read as another request */
		memset(&u, 0, sizeof(u));
		body_headers(wsi, cl, sizeof(cl), &u);
		if (proto_body_status(u.content_length, u.content_length_len,
				      u.transfer_encoding_len)) {
			hub__http_answer(wsi, 400, "text/plain",
					 "no request body here\n", 21, 0);
			return -1;
		}
	}
		/* a plain request on the device port */
		if (in && !strncmp(in, "/v1/devices/", 12))
			return hub__http_answer(wsi, 426, "text/plain",
						"websocket upgrade required\n",
						27, 0)
				   ? -1
				   : lws_http_transaction_completed(wsi);
		return hub__http_answer(wsi, 404, "text/plain",
					"no such endpoint\n", 17, 0)
			   ? -1
			   : lws_http_transaction_completed(wsi);
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		if (w->pending.wsi != wsi)
			return 1;
		memset(s, 0, sizeof(*s));
		memcpy(s->device, w->pending.device, sizeof(s->device));
		memcpy(s->addr, w->pending.addr, sizeof(s->addr));
		s->fingerprint = w->pending.fingerprint;
		s->token_iat = w->pending.token_iat;
		memcpy(s->groups, w->pending.groups, sizeof(s->groups));
		w->pending.wsi = NULL;
		return 0;
	case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
		return hub__proxyproto_filter(w, wsi, user);
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
		return pending_enter(w, wsi);
	case LWS_CALLBACK_WSI_DESTROY:
		pending_leave(wsi);
		break;
	case LWS_CALLBACK_ESTABLISHED:
		pending_leave(wsi);
		return on_established(w, s, wsi);
	case LWS_CALLBACK_RECEIVE:
		return on_receive(w, s, wsi, in, len);
	case LWS_CALLBACK_RECEIVE_PONG:
		if (s->state == SESS_LIVE)
			s->last_rx_ms = mono_ms();
		return 0;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		s->peer_closed = 1;
		/* a malformed close is failed, not echoed (RFC 6455 7.4) */
		rc = proto_ws_close_status(in, len);
		if (rc)
			lws_close_reason(wsi, (enum lws_close_status)rc,
					 (unsigned char *)"bad close", 9);
		return rc ? -1 : 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return on_writeable(w, s, wsi);
	case LWS_CALLBACK_CLOSED:
		on_closed(w, s);
		return 0;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		hub__service_wake(w);
		return 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}
