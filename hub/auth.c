/*
 * auth.c - authentication of a device before the WebSocket upgrade: the
 * request's own checks, the device id from the path, the subprotocol and
 * Origin, the credential (client certificate, then token: header,
 * subprotocol, query) and its check against the registry snapshot or a
 * signed fleet token, the failed-auth limit (authlimit.c) and
 * --max-pending-per-addr (pendlimit.c).
 *
 * Auth happens in LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, the one place lws lets
 * us answer with an HTTP status before the upgrade (401/403/429/503 with
 * Retry-After, docs/protocol.md). lws re-allocates the session's
 * user data when it binds the ws protocol, so the result is parked in
 * worker->pending and picked up in FILTER_PROTOCOL_CONNECTION
 * (hub__auth_adopt), which lws calls from the same stack for the same wsi.
 *
 * Threads: the lws service thread of the worker only. Nothing blocks: the
 * credentials are an in-memory snapshot the writer thread hands over
 * (hub__service_wake), the authlimit table is shared memory with its own
 * lock, failures reach the registry through the writer's queue.
 */
#include "session_int.h"
#include "hub_log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

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
 * --trusted-proxies, the one its X-Forwarded-For (else Forwarded) names.
 * It feeds the failed-auth limit, events and presence.
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

/* Content-Length and Transfer-Encoding as lws parsed them. */
void
hub__auth_body_headers(struct lws *wsi, char *cl, size_t cap,
		       struct proto_upgrade *u)
{
	int n = lws_hdr_copy(wsi, cl, (int)cap, WSI_TOKEN_HTTP_CONTENT_LENGTH);

	u->content_length = cl;
	u->content_length_len = n > 0 ? (size_t)n : (size_t)(n < 0);
	n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING);
	u->transfer_encoding_len = n > 0 ? (size_t)n : 0;
}

/*
 * The request itself, before any credential (proto_upgrade_status): 0, or
 * the status to refuse it with. Header copies are bounded; an oversized
 * one reads as malformed.
 */
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
	hub__auth_body_headers(wsi, cl, sizeof(cl), &u);
	return proto_upgrade_status(&u, why);
}

/*
 * One upgrade request while it is checked. The token points into one of
 * the header buffers; the id into uri.
 */
struct upgrade_req {
	char uri[256], origin[256], addr[REGISTRY_ADDR_MAX];
	char auth[PROTO_TOKEN_MAX + 16], arg[PROTO_TOKEN_MAX + 16];
	char proto[PROTO_TOKEN_MAX + 64];
	const char *id, *token;
	size_t idlen, toklen;
	int cert; /* a verified client certificate names the device */
	uint64_t now;
};

/*
 * The request before any credential: a well-formed WebSocket upgrade, to a
 * hub that is not draining, for /v1/devices/{id} with hub.v1 (if a
 * subprotocol is offered) from an allowed Origin. 0 to go on, else what
 * the callback returns (1: refused with an answer, -1: close).
 */
static int
request_read(struct worker *w, struct lws *wsi, const char *up,
	     struct upgrade_req *r)
{
	const char *why;
	int n, rc, st;

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
		return refuse(w, wsi, 503, (unsigned)w->conf->drain + 1,
			      "hub is shutting down\n");
	}
	client_addr(w, wsi, r->addr, sizeof(r->addr));
	/* the id over the decoded path's full length: "%00" is a byte */
	n = lws_hdr_copy(wsi, r->uri, sizeof(r->uri), WSI_TOKEN_GET_URI);
	rc = n > 0 ? proto_device_path(r->uri, (size_t)n, &r->id, &r->idlen)
		   : HUB_ERR_NOTFOUND;
	if (rc == HUB_ERR_NOTFOUND)
		return refuse(w, wsi, 404, 0, "no such endpoint\n");
	if (rc != HUB_OK)
		return refuse(w, wsi, 404, 0,
			      "device ids are [A-Za-z0-9_-]{1,64}\n");
	if (subprotocols(wsi, r->proto, sizeof(r->proto), &r->token,
			 &r->toklen))
		return refuse(w, wsi, 400, 0, "subprotocol must be hub.v1\n");
	/* a browser says where the page came from: --allowed-origins */
	n = lws_hdr_copy(wsi, r->origin, sizeof(r->origin), WSI_TOKEN_ORIGIN);
	if (n < 0 || (n > 0 && !proto_origin_allowed(w->conf->allowed_origins,
						     r->origin, (size_t)n)))
		return refuse(w, wsi, 403, 0, "origin not allowed\n");
	return 0;
}

/*
 * Refusals that spare the credential check: an address over the
 * failed-auth limit (429), a full worker (503). 0 to go on, else what the
 * callback returns.
 */
static int
limits_admit(struct worker *w, struct lws *wsi, const struct upgrade_req *r)
{
	unsigned wait = authlimit_blocked(w->authlimit, r->addr, r->now);

	if (wait) {
		metrics_add(w->m, M_AUTH_FAIL_RATE_LIMITED, 1);
		return refuse(w, wsi, 429, wait, "too many failed attempts\n");
	}
	if (w->nsessions >= w->max_sessions) {
		metrics_add(w->m, M_REFUSED_FULL, 1);
		return refuse(w, wsi, 503, 5, "hub is full\n");
	}
	return 0;
}

/*
 * The credential offered: a verified client certificate naming the device
 * (r->cert), else a token (r->token). HUB_OK, HUB_ERR_NOTFOUND (none), or
 * HUB_ERR_INVAL (a malformed token header or argument).
 */
static int
credential_find(struct worker *w, struct lws *wsi, struct upgrade_req *r)
{
	r->cert = cert_matches(w, wsi, r->id);
	if (r->cert)
		return HUB_OK;
	return find_token(wsi, r->auth, sizeof(r->auth), r->arg, sizeof(r->arg),
			  &r->token, &r->toklen);
}

/*
 * Does the credential found (found: credential_find's code) hold? HUB_OK
 * (a signed fleet token's iat in w->pending.token_iat), HUB_ERR_DISABLED,
 * or HUB_ERR_AUTH (unknown device, bad token).
 */
static int
credential_check(struct worker *w, const struct upgrade_req *r, int found)
{
	int disabled = 0, rc;

	if (r->cert) {
		if (!registry_creds_fingerprint(w->creds, r->id, &disabled))
			return HUB_ERR_AUTH;
		return disabled ? HUB_ERR_DISABLED : HUB_OK;
	}
	rc = found ? HUB_ERR_AUTH
		   : registry_creds_check(w->creds, r->id, r->token, r->toklen);
	if (rc == HUB_ERR_AUTH) /* maybe a signed fleet token */
		rc = hub__fleet_auth(w, r->id, r->token, r->toklen,
				     &w->pending.token_iat);
	return rc == HUB_OK || rc == HUB_ERR_DISABLED ? rc : HUB_ERR_AUTH;
}

/*
 * A credential that is missing (rc HUB_ERR_NOTFOUND), of a disabled device
 * (HUB_ERR_DISABLED) or wrong: counted, logged, charged to the failed-auth
 * limit (a disabled device's is always recorded, not charged) and refused.
 * What the callback returns.
 */
static int
credential_refuse(struct worker *w, struct lws *wsi,
		  const struct upgrade_req *r, int rc)
{
	int first, known, disabled = 0;

	if (rc == HUB_ERR_NOTFOUND) {
		metrics_add(w->m, M_AUTH_FAIL_NO_CREDENTIALS, 1);
		first = authlimit_fail(w->authlimit, r->addr, r->now);
		log_auth_failure(w, r->id, r->addr, first, "no_credentials");
		return refuse(w, wsi, 401, 0, "credentials required\n");
	}
	if (rc == HUB_ERR_DISABLED) {
		metrics_add(w->m, M_AUTH_FAIL_DISABLED, 1);
		log_auth_failure(w, r->id, r->addr, 1, "disabled");
		return refuse(w, wsi, 403, 0, "device disabled\n");
	}
	known = registry_creds_fingerprint(w->creds, r->id, &disabled) != 0;
	metrics_add(w->m,
		    known ? M_AUTH_FAIL_BAD_TOKEN : M_AUTH_FAIL_UNKNOWN_DEVICE,
		    1);
	first = authlimit_fail(w->authlimit, r->addr, r->now);
	log_auth_failure(w, r->id, r->addr, first,
			 known ? "bad_token" : "unknown_device");
	return refuse(w, wsi, 401, 0, "unknown device or bad token\n");
}

/* The device is in: parked for FILTER_PROTOCOL_CONNECTION (auth_adopt). */
static void
result_park(struct worker *w, struct lws *wsi, const struct upgrade_req *r)
{
	int disabled = 0;

	w->pending.wsi = wsi;
	memcpy(w->pending.device, r->id, r->idlen + 1);
	snprintf(w->pending.addr, sizeof(w->pending.addr), "%s", r->addr);
	w->pending.fingerprint =
	    registry_creds_fingerprint(w->creds, r->id, &disabled);
	hub__groups_pending(w, r->id);
}

int
hub__auth_confirm_upgrade(struct worker *w, struct lws *wsi, const char *up)
{
	struct upgrade_req r;
	int rc;

	memset(&w->pending, 0, sizeof(w->pending));
	memset(&r, 0, sizeof(r));
	r.now = hub__mono_ms();
	rc = request_read(w, wsi, up, &r);
	if (rc)
		return rc;
	rc = limits_admit(w, wsi, &r);
	if (rc)
		return rc;
	rc = credential_find(w, wsi, &r);
	if (rc != HUB_ERR_NOTFOUND)
		rc = credential_check(w, &r, rc);
	if (rc != HUB_OK)
		return credential_refuse(w, wsi, &r, rc);
	result_park(w, wsi, &r);
	return 0;
}

int
hub__auth_adopt(struct worker *w, struct lws *wsi, struct sess *s)
{
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
}

/*
 * --max-pending-per-addr: a connection counts from its accept until it is
 * upgraded as an authenticated device or closed. Its slot rides on the wsi
 * (lws's opaque user data survives the protocol binding).
 */
int
hub__pending_enter(struct worker *w, struct lws *wsi)
{
	char addr[REGISTRY_ADDR_MAX];
	struct pendlimit_slot *slot;
	int refuse;

	addr[0] = '\0';
	lws_get_peer_simple(wsi, addr, sizeof(addr));
	/* a trusted proxy carries many clients: not capped as one */
	if (w->nproxies &&
	    proto_cidrs_match(w->proxies, w->nproxies, addr, strlen(addr)))
		return 0;
	slot = pendlimit_enter(w->pending_per_addr, addr, &refuse);
	lws_set_opaque_user_data(wsi, slot);
	return refuse ? -1 : 0; /* -1: lws closes it at once */
}

void
hub__pending_leave(struct lws *wsi)
{
	pendlimit_leave(lws_get_opaque_user_data(wsi));
	lws_set_opaque_user_data(wsi, NULL);
}
