/*
 * lifecycle.c - a device session from its upgrade to its close: the device
 * map (device id -> current session of this worker), the session id, the
 * hub/sessions announcement and the registry rows, which session of a device
 * is current (supersede; only the current one publishes presence), kicks,
 * revocations and disabled devices, and the SIGTERM drain.
 *
 * Threads: the lws service thread of the worker only. The bridge thread
 * (announcements, kicks, revocations) and the registry writer thread (the
 * online status queued, new credentials) reach it through their queues,
 * read in hub__service_wake (session.c).
 */
#include "session_int.h"
#include "hub_log.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the device map -------------------------------------------------- */

int
hub__map_init(struct worker *w, size_t expected)
{
	size_t n = 1024;

	HUB_ASSERT_THREAD(&w->service);
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

struct sess *
hub__map_find(struct worker *w, const char *device)
{
	struct sess *s = w->map[hub_hash_str(device) & w->map_mask];

	HUB_ASSERT_THREAD(&w->service);
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

/* ---- session life ---------------------------------------------------- */

/* Closes the session with a close frame once its queue is written. */
void
hub__sess_close(struct sess *s, int code, const char *reason)
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

/* ---- presence: which session of a device is current ------------------- */

/*
 * The one owner of the question "which session of device X is current, and
 * may this close publish presence?". Every path that learns of a newer
 * session of the device calls sess_supersede(): a new session on this
 * worker (hub__sess_established), or the hub/sessions announcement of one
 * on another worker or hub (hub__sess_session_ev). It applies in any
 * state: live, or already closing - kicked or disabled with its socket full
 * or its peer dead, which can last until the idle timeout. A superseded
 * session closes as "replaced" and publishes no presence, because its
 * successor already published "online" and an "offline" with a higher seq
 * would override it. hub__sess_closed asks sess_publishes_presence(); the
 * registry writer confirms the answer against the registry before it
 * publishes (writer.c, confirm_offline: "is there a newer open session?").
 */
static void
sess_supersede(struct sess *s)
{
	s->superseded = 1;
	hub__sess_close(s, 4001, "replaced"); /* a closing one keeps its code */
}

static int
sess_publishes_presence(const struct sess *s)
{
	return !s->superseded;
}

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

int
hub__sess_established(struct worker *w, struct sess *s, struct lws *wsi)
{
	struct writer_item it;
	struct sess *old;

	HUB_ASSERT_THREAD(&w->service);
	if (!s->device[0])
		return -1;
	s->w = w;
	s->wsi = wsi;
	s->handle = ++w->next_handle;
	s->state = SESS_LIVE;
	s->started_ms = hub_clock_ms();
	s->last_rx_ms = hub__mono_ms();
	snprintf(s->session, sizeof(s->session), "%011llx%04x%02x%06x",
		 (unsigned long long)s->started_ms, w->session_salt & 0xffff,
		 (unsigned)w->index & 0xff, ++w->session_counter & 0xffffff);
	uplimit_init(&s->up, &w->upconf, (uint32_t)s->last_rx_ms);
	old = hub__map_find(w, s->device);
	if (old) {
		map_remove(w, old);
		sess_supersede(old);
	}
	map_insert(w, s);
	/* nothing of the device reaches the broker before its online status:
	 * reading resumes once the writer has queued it (hub__sess_opened) */
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

/* LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: 0, or -1 to fail a malformed close. */
int
hub__sess_peer_close(struct sess *s, struct lws *wsi, const void *in,
		     size_t len)
{
	int rc;

	s->peer_closed = 1;
	/* a malformed close is failed, not echoed (RFC 6455 7.4) */
	rc = proto_ws_close_status(in, len);
	if (rc)
		lws_close_reason(wsi, (enum lws_close_status)rc,
				 (unsigned char *)"bad close", 9);
	return rc ? -1 : 0;
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
	if (!s->peer_closed && hub__mono_ms() - s->last_rx_ms + 1500 >=
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

void
hub__sess_closed(struct worker *w, struct sess *s)
{
	struct writer_item it;
	const char *reason;

	HUB_ASSERT_THREAD(&w->service);
	hub__groups_leave(w, s);
	if (s->state == SESS_NEW) {
		hub__sess_free_queues(s);
		return;
	}
	reason = close_reason(w, s);
	if (hub__map_find(w, s->device) == s) {
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
	hub__sess_free_queues(s);
	s->state = SESS_NEW;
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

void
hub__sess_session_ev(struct worker *w, struct bridge_ev *e)
{
	struct sess *s = hub__map_find(w, e->device);
	const cJSON *op, *sid;
	cJSON *root;

	HUB_ASSERT_THREAD(&w->service);
	/* a closing session too: a newer one elsewhere supersedes it */
	if (!s || s->state == SESS_NEW)
		return;
	root = cJSON_ParseWithLength(e->payload, e->len);
	if (!root)
		return;
	op = cJSON_GetObjectItemCaseSensitive(root, "op");
	if (cJSON_IsString(op) && !strcmp(op->valuestring, "kick")) {
		hub_log(HUB_LOG_INFO, "HUB-KICK", "device=%s", s->device);
		hub__sess_close(s, 4004, "kicked");
	} else if (cJSON_IsString(op) && !strcmp(op->valuestring, "restatus")) {
		const cJSON *hub =
		    cJSON_GetObjectItemCaseSensitive(root, "hub");

		/* an offline of the device's older session on another hub was
		 * acknowledged: ours goes out again after it. From this hub's
		 * own workers it needs no answer: they share the registry,
		 * whose outbox already orders their statuses. */
		if (s->state == SESS_LIVE && cJSON_IsString(hub) &&
		    strcmp(hub->valuestring, w->conf->hub_id)) {
			struct writer_item it;

			memset(&it, 0, sizeof(it));
			it.kind = WRITER_RESTATUS;
			snprintf(it.device, sizeof(it.device), "%s", s->device);
			if (writer_submit(w->writer, &it) != HUB_OK)
				hub_log(HUB_LOG_WARN, "HUB-STATUS-LATE",
					"device=%s: no room to restate its "
					"online status",
					s->device);
		}
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

void
hub__sess_revalidate(struct worker *w)
{
	size_t b;

	HUB_ASSERT_THREAD(&w->service);
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
				hub__sess_close(s, 1008, "disabled");
			} else if (disabled) {
				hub_log(HUB_LOG_INFO, "HUB-DISABLED",
					"device=%s", s->device);
				hub__sess_close(s, 4003, "disabled");
			}
		}
	}
}

/* hub/revoked/{id}: a signed session whose token is older closes. */
void
hub__sess_revoked_ev(struct worker *w, const struct bridge_ev *e)
{
	int code;
	struct sess *s = hub__fleet_revoked(w, e, &code)
			     ? hub__map_find(w, e->device)
			     : NULL;

	HUB_ASSERT_THREAD(&w->service);
	if (s && s->state == SESS_LIVE && s->token_iat &&
	    hub__fleet_session_void(w, s->device, s->token_iat)) {
		hub_log(HUB_LOG_INFO, "HUB-AUTH-REVOKED", "device=%s signed",
			s->device);
		hub__sess_close(s, code, "disabled");
	}
}

/* The online statuses the writer queued: let those sessions' uplink flow. */
void
hub__sess_opened(struct worker *w)
{
	struct writer_item *l = writer_take_opened(w->writer), *it;

	HUB_ASSERT_THREAD(&w->service);
	for (it = l; it; it = it->next) {
		struct sess *s = hub__map_find(w, it->device);

		if (s && s->handle == it->sess && !s->online_out) {
			s->online_out = 1;
			if (s->state == SESS_LIVE)
				lws_rx_flow_control(s->wsi, 1);
		}
	}
	writer_opened_free(l);
}

void
hub__drain_step(struct worker *w)
{
	uint64_t elapsed = hub__mono_ms() - w->drain_start_ms;
	uint64_t span = (uint64_t)w->conf->drain * 1000;
	int target;
	size_t b;

	HUB_ASSERT_THREAD(&w->service);
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
				hub__sess_close(s, 1001, "shutdown");
				w->drain_closed++;
			}
	}
}
