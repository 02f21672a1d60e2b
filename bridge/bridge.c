/*
 * bridge.c - the MQTT bridge of one worker: its public API (bridge.h),
 * messages and events.
 *
 * The bridge is four parts:
 *   - bridge.c: creation, bridge_submit (the inbox), bridge_poll, stats,
 *     stop and free;
 *   - bridge_queue.c: the reliable queue (FIFO, in flight, send slots,
 *     the window), behind a transport seam (struct bridge_rq_ops) so it is
 *     unit-tested without a broker;
 *   - bridge_link.c: the bridge thread: the link state machine (connect,
 *     failover, resubscribe), driving the queue, events to the service
 *     thread, the stop sequence;
 *   - bridge_paho.c: Paho's callbacks and calls (publish, connect,
 *     disconnect); bridge_subs.c the subscriptions, bridge_nodelay.c the
 *     broker URIs and TCP_NODELAY.
 *
 * Threads and ownership
 *   - Any thread: bridge_submit() appends to the inbox (b->in, under
 *     b->lock) and signals the bridge thread; bridge_has_room(),
 *     bridge_connected() and stats read atomics.
 *   - Paho's threads run the callbacks (bridge_paho.c): copy, enqueue,
 *     return.
 *   - The bridge thread owns everything else (bridge_int.h).
 *   - The service thread calls bridge_poll().
 */
#include "bridge_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- messages and events ------------------------------------------- */

struct bridge_msg *
bridge_msg_new(enum bridge_kind kind, const char *device, const char *topic,
	       const void *payload, size_t len)
{
	size_t tl = topic ? strlen(topic) : 0, dl = device ? strlen(device) : 0;
	struct bridge_msg *m;

	if (dl > HUB_ID_MAX || (len && !payload) ||
	    len > (size_t)0x7fffffff - tl)
		return NULL;
	m = calloc(1, sizeof(*m) + tl + 1 + len + 1);
	if (!m)
		return NULL;
	m->kind = kind;
	if (dl)
		memcpy(m->device, device, dl);
	if (topic) {
		m->topic = m->data;
		memcpy(m->topic, topic, tl);
	}
	m->payload = m->data + tl + 1;
	if (len)
		memcpy(m->payload, payload, len);
	m->len = len;
	return m;
}

void
bridge_msg_free(struct bridge_msg *m)
{
	free(m);
}

struct bridge_ev *
bridge__ev_new(enum bridge_ev_kind kind, const char *device, const char *topic,
	       const void *payload, size_t len)
{
	size_t tl = topic ? strlen(topic) : 0;
	struct bridge_ev *e;

	if (len > (size_t)0x7fffffff)
		return NULL;
	e = calloc(1, sizeof(*e) + tl + 1 + len + 1);
	if (!e)
		return NULL;
	e->kind = kind;
	if (device)
		memcpy(e->device, device, strnlen(device, HUB_ID_MAX));
	if (topic) {
		e->topic = e->data;
		memcpy(e->topic, topic, tl);
	}
	e->payload = e->data + tl + 1;
	if (len)
		memcpy(e->payload, payload, len);
	e->len = len;
	return e;
}

void
bridge_ev_free(struct bridge_ev *e)
{
	free(e);
}

void
bridge__wake_maybe(struct bridge *b)
{
	if (!atomic_exchange(&b->woken, 1) && b->wake)
		b->wake(b->wake_arg);
}

static char *
dup_str(const char *s)
{
	size_t n;
	char *d;

	if (!s)
		return NULL;
	n = strlen(s) + 1;
	d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

/* ---- public API ----------------------------------------------------- */

static int
fail(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
	return 0;
}

/* Topic text the bridge puts into a topic name: no wildcards, levels. */
static int
name_ok(const char *s, int allow_slash)
{
	size_t n = s ? strlen(s) : 0;

	if (!proto_topic_valid(s, n))
		return 0;
	return allow_slash || !strchr(s, '/');
}

struct bridge *
bridge_new(const struct bridge_config *cfg, void (*wake)(void *arg), void *arg,
	   char *err, size_t errlen)
{
	MQTTAsync_createOptions co5 = MQTTAsync_createOptions_initializer5;
	MQTTAsync_createOptions co3 = MQTTAsync_createOptions_initializer;
	MQTTAsync_createOptions *co;
	pthread_condattr_t ca;
	struct bridge *b = NULL;
	size_t nt;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!cfg || !cfg->broker ||
	    bridge_uri_list_check(cfg->broker, err, errlen) != HUB_OK) {
		if (err && errlen && !err[0])
			fail(err, errlen, "bad broker URI");
		goto fail;
	}
	if (!name_ok(cfg->hub_id, 0)) {
		fail(err, errlen, "bad hub id");
		goto fail;
	}
	if (cfg->prefix && (!name_ok(cfg->prefix, 1) ||
			    strlen(cfg->prefix) > BRIDGE_PREFIX_MAX)) {
		fail(err, errlen, "bad topic prefix");
		goto fail;
	}
	if (cfg->mqtt_version && cfg->mqtt_version != 5 &&
	    cfg->mqtt_version != 3) {
		fail(err, errlen, "mqtt_version must be 5 or 3");
		goto fail;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		fail(err, errlen, "out of memory");
		goto fail;
	}
	pthread_mutex_init(&b->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->cond, &ca);
	pthread_condattr_destroy(&ca);
	b->mqtt_version = cfg->mqtt_version == 3 ? 3 : 5;
	b->fleet = cfg->fleet;
	if (cfg->group_prefix && cfg->fleet_prefix) {
		b->group_prefix = dup_str(cfg->group_prefix);
		b->fleet_prefix = dup_str(cfg->fleet_prefix);
	}
	b->max_pending = cfg->max_pending ? cfg->max_pending : 10000;
	b->max_cmd = cfg->max_cmd ? cfg->max_cmd : (size_t)1 << 20;
	b->window = cfg->window > 0 ? cfg->window : 1000;
	if (b->window > BRIDGE_WINDOW_MAX)
		b->window = BRIDGE_WINDOW_MAX;
	/* a quarter of the window at most: the rest is still with Paho */
	b->lazy_cbs = (size_t)b->window / 4;
	if (b->lazy_cbs > BRIDGE_LAZY_CBS)
		b->lazy_cbs = BRIDGE_LAZY_CBS;
	if (b->lazy_cbs < 1)
		b->lazy_cbs = 1;
	b->wake = wake;
	b->wake_arg = arg;
	b->broker = dup_str(cfg->broker);
	if (b->broker) {
		char *save = NULL, *tok, *copy = dup_str(cfg->broker);

		for (tok = copy ? strtok_r(copy, ", ", &save) : NULL;
		     tok && b->nuris < BRIDGE_URIS_MAX;
		     tok = strtok_r(NULL, ", ", &save))
			b->uris[b->nuris++] = dup_str(tok);
		free(copy);
	}
	b->user = dup_str(cfg->user);
	b->password = dup_str(cfg->password);
	b->hub_id = dup_str(cfg->hub_id);
	b->client_id = dup_str(cfg->client_id ? cfg->client_id : cfg->hub_id);
	b->prefix = dup_str(cfg->prefix ? cfg->prefix : "devices");
	if (cfg->node_status) {
		nt = strlen("hub/nodes//status") + strlen(cfg->hub_id) + 1;
		b->node_topic = malloc(nt);
		if (b->node_topic)
			snprintf(b->node_topic, nt, "hub/nodes/%s/status",
				 cfg->hub_id);
	}
	/* a late callback can hold a slot after its send was given up on:
	 * twice the window leaves room for one lost link's worth of them */
	if (bridge__rq_init(&b->rq, b->window, &bridge__paho_ops, b, b) !=
	    HUB_OK) {
		fail(err, errlen, "out of memory");
		goto fail;
	}
	b->cb_cap = (size_t)b->rq.nslots + 64;
	b->cbs = calloc(b->cb_cap, sizeof(*b->cbs));
	b->evq = hub_queue_new(BRIDGE_EVQ_CAP);
	if (!b->broker || (cfg->user && !b->user) ||
	    (cfg->password && !b->password) || !b->hub_id || !b->client_id ||
	    !b->prefix || !b->nuris || !b->uris[b->nuris - 1] ||
	    (cfg->node_status && !b->node_topic) || !b->cbs || !b->evq ||
	    bridge__subs_init(&b->subs) != HUB_OK) {
		fail(err, errlen, "out of memory");
		goto fail;
	}
	b->rnd = (uint32_t)(hub_clock_mono_us() ^ (uintptr_t)b) | 1u;
	b->phase = BRIDGE_RUN;

	co = b->mqtt_version == 5 ? &co5 : &co3;
	co->sendWhileDisconnected = 0;
	co->maxBufferedMessages = b->rq.nslots + 64;
	co->MQTTVersion =
	    b->mqtt_version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
	co->restoreMessages = 0;
	rc = MQTTAsync_createWithOptions(&b->cli, b->uris[0], b->client_id,
					 MQTTCLIENT_PERSISTENCE_NONE, NULL, co);
	if (rc != MQTTASYNC_SUCCESS) {
		b->cli = NULL;
		if (err && errlen)
			snprintf(err, errlen, "MQTTAsync_create: %d", rc);
		goto fail;
	}
	if (bridge__paho_callbacks(b) != HUB_OK) {
		fail(err, errlen, "MQTTAsync_setCallbacks failed");
		goto fail;
	}
	return b;
fail:
	bridge_free(b);
	return NULL;
}

int
bridge_uri_list_check(const char *list, char *err, size_t errlen)
{
	const char *p = list, *end;
	char one[300], host[256];
	unsigned port;
	int tls, n = 0;

	if (err && errlen)
		err[0] = '\0';
	if (!list || !*list) {
		fail(err, errlen, "no broker URI");
		return HUB_ERR_INVAL;
	}
	for (; *p; p = *end ? end + 1 : end) {
		size_t l;

		while (*p == ' ')
			p++;
		end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		l = (size_t)(end - p);
		while (l && p[l - 1] == ' ')
			l--;
		if (!l || l >= sizeof(one)) {
			fail(err, errlen,
			     "an empty or overlong URI in the list");
			return HUB_ERR_INVAL;
		}
		memcpy(one, p, l);
		one[l] = '\0';
		if (++n > BRIDGE_URIS_MAX) {
			fail(err, errlen, "more than 8 broker URIs");
			return HUB_ERR_INVAL;
		}
		/* a scheme is required: "bogus" is not a broker */
		if (!strstr(one, "://") ||
		    bridge__uri_parse(one, host, sizeof(host), &port, &tls) !=
			HUB_OK ||
		    !host[0]) {
			if (err && errlen)
				snprintf(err, errlen,
					 "'%s' is not a broker URI "
					 "(tcp://HOST[:PORT], mqtt://, ssl:// "
					 "or mqtts://)",
					 one);
			return HUB_ERR_INVAL;
		}
	}
	return HUB_OK;
}

void
bridge_on_status_acked(struct bridge *b,
		       void (*fn)(void *arg, const char *device, int64_t seq),
		       void *arg)
{
	if (!b || b->started)
		return;
	b->status_acked = fn;
	b->status_arg = arg;
}

int
bridge_start(struct bridge *b)
{
	if (!b || b->started)
		return HUB_ERR_INVAL;
	if (pthread_create(&b->thr, NULL, bridge__main, b) != 0)
		return HUB_ERR_IO;
	b->started = 1;
	return HUB_OK;
}

int
bridge_submit(struct bridge *b, struct bridge_msg *m)
{
	int dev_q1 = 0, q0 = 0, reliable;

	if (!b || !m)
		return HUB_ERR_INVAL;
	switch (m->kind) {
	case BRIDGE_PUB:
	case BRIDGE_CLEAR:
		if (!m->topic ||
		    !proto_id_valid(m->device, strlen(m->device)) ||
		    !proto_topic_valid(m->topic, strlen(m->topic)))
			return HUB_ERR_INVAL;
		if (m->kind == BRIDGE_CLEAR) {
			m->qos = 1;
			m->retain = 1;
			m->len = 0;
		}
		break;
	case BRIDGE_STATUS:
	case BRIDGE_ANNOUNCE:
	case BRIDGE_SUB:
	case BRIDGE_UNSUB:
	case BRIDGE_GSUB:
	case BRIDGE_GUNSUB:
		if (!proto_id_valid(m->device, strlen(m->device)))
			return HUB_ERR_INVAL;
		m->qos = 1;
		/* announcements are retained too: a worker whose bridge was
		 * reconnecting, or whose SUBSCRIBE reached the broker after the
		 * announcement, still gets it and closes its older session */
		m->retain =
		    m->kind == BRIDGE_STATUS || m->kind == BRIDGE_ANNOUNCE;
		break;
	case BRIDGE_RAW:
		if (!m->topic || !m->topic[0])
			return HUB_ERR_INVAL;
		break;
	default:
		return HUB_ERR_INVAL;
	}
	if (m->qos < 0 || m->qos > 1)
		m->qos = 1; /* the bridge does not do QoS 2 */
	if (m->len > 268435455u)
		return HUB_ERR_TOOBIG; /* MQTT's packet limit */
	if (m->kind == BRIDGE_PUB || m->kind == BRIDGE_RAW) {
		dev_q1 = m->kind == BRIDGE_PUB && m->qos;
		q0 = !m->qos;
	}
	if (q0) {
		if (!atomic_load(&b->connected)) {
			atomic_fetch_add(&b->rq.st.dropped_qos0, 1);
			return HUB_ERR_BROKER;
		}
		if (atomic_fetch_add(&b->rq.st.q0_held, 1) >= b->max_pending) {
			atomic_fetch_sub(&b->rq.st.q0_held, 1);
			atomic_fetch_add(&b->rq.st.dropped_qos0, 1);
			return HUB_ERR_FULL;
		}
	}
	if (dev_q1 &&
	    atomic_fetch_add(&b->rq.st.dev_held, 1) >= b->max_pending) {
		atomic_fetch_sub(&b->rq.st.dev_held, 1);
		return HUB_ERR_FULL;
	}
	m->state = 0;
	reliable = m->qos && m->kind != BRIDGE_SUB && m->kind != BRIDGE_UNSUB &&
		   m->kind != BRIDGE_GSUB && m->kind != BRIDGE_GUNSUB;
	if (reliable) /* before the push: its PUBACK may come first */
		atomic_fetch_add(&b->rq.st.pending, 1);
	pthread_mutex_lock(&b->lock);
	if (atomic_load(&b->closing)) {
		pthread_mutex_unlock(&b->lock);
		if (dev_q1)
			atomic_fetch_sub(&b->rq.st.dev_held, 1);
		if (q0)
			atomic_fetch_sub(&b->rq.st.q0_held, 1);
		if (reliable)
			atomic_fetch_sub(&b->rq.st.pending, 1);
		return HUB_ERR_CLOSED;
	}
	bridge__list_append(&b->in, m);
	if (b->in.n == 1)
		pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->lock);
	return HUB_OK;
}

int
bridge_has_room(struct bridge *b)
{
	return b && atomic_load(&b->rq.st.dev_held) < b->max_pending &&
	       !atomic_load(&b->closing);
}

int
bridge_connected(struct bridge *b)
{
	return b && atomic_load(&b->connected);
}

struct bridge_ev *
bridge_poll(struct bridge *b)
{
	void *e;

	if (!b)
		return NULL;
	if (hub_queue_pop_many(b->evq, &e, 1))
		return e;
	/* empty: the next event must wake us; re-check after re-arming */
	atomic_store(&b->woken, 0);
	if (hub_queue_pop_many(b->evq, &e, 1))
		return e;
	return NULL;
}

void
bridge_get_stats(struct bridge *b, struct bridge_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!b)
		return;
	out->sent = atomic_load(&b->rq.st.sent);
	out->acked = atomic_load(&b->rq.st.acked);
	out->dropped_qos0 = atomic_load(&b->rq.st.dropped_qos0);
	out->resent = atomic_load(&b->rq.st.resent);
	out->connects = atomic_load(&b->st_connects);
	out->cmds_in = atomic_load(&b->st_cmds_in);
	out->cmds_dropped = atomic_load(&b->st_cmds_dropped);
	out->pending = atomic_load(&b->rq.st.pending);
	out->connected = atomic_load(&b->connected);
	out->rejected = atomic_load(&b->rq.st.rejected);
	out->replaced = atomic_load(&b->rq.st.replaced);
}

int
bridge_stop(struct bridge *b, int timeout_ms)
{
	if (!b)
		return HUB_ERR_INVAL;
	if (!b->started || b->joined)
		return b->stop_rc;
	pthread_mutex_lock(&b->lock);
	atomic_store(&b->closing, 1);
	b->stop_req = 1;
	b->stop_deadline_us =
	    hub_clock_mono_us() +
	    (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000u;
	pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->lock);
	pthread_join(b->thr, NULL);
	b->joined = 1;
	return b->stop_rc;
}

void
bridge_free(struct bridge *b)
{
	void *e;
	int i;

	if (!b)
		return;
	if (b->started && !b->joined)
		bridge_stop(b, 0);
	if (b->cli)
		MQTTAsync_destroy(&b->cli); /* no callback runs after this */
	if (b->evq) {
		while (hub_queue_pop_many(b->evq, &e, 1))
			bridge_ev_free(e);
		hub_queue_free(b->evq);
	}
	bridge__list_free(&b->in);
	bridge__rq_free(&b->rq);
	bridge__subs_free(&b->subs);
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->cond);
	free(b->cbs);
	free(b->broker);
	for (i = 0; i < b->nuris; i++)
		free(b->uris[i]);
	free(b->user);
	free(b->password);
	free(b->hub_id);
	free(b->client_id);
	free(b->prefix);
	free(b->group_prefix);
	free(b->fleet_prefix);
	free(b->node_topic);
	free(b);
}
