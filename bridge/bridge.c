/*
 * bridge.c - the MQTT bridge of one worker: the bridge thread, the Paho
 * client, the reliable FIFO and the link state machine.
 *
 * Threads and ownership
 *   - Any thread: bridge_submit() appends to the inbox (b->in, under
 *     b->lock) and signals the bridge thread; bridge_has_room(),
 *     bridge_connected() and stats read atomics.
 *   - Paho's threads run the callbacks. They never block and never touch
 *     bridge-thread state: a completion (publish done, connect result, link
 *     lost) becomes a two-int record in the callback ring (b->cbs, under
 *     b->lock). The ring grows when full, and by construction holds at most
 *     one record per send slot plus a few link records, so it stays small.
 *     messageArrived is the exception: it builds the bridge_ev itself and
 *     pushes it straight to the event queue (a copy, no shared state); if
 *     that queue is full it returns 0 and Paho delivers the message again
 *     later, which is Paho's own back-pressure.
 *   - The bridge thread owns everything else: the FIFO (messages waiting to
 *     be handed to Paho), the in-flight list, the send slots, the link state
 *     and reconnect timer, the subscription set (bridge_subs.c), and the
 *     list of acked device messages whose event has not been queued yet.
 *   - The service thread calls bridge_poll(); the event queue is bounded
 *     (65536). Acks are produced on the bridge thread, which keeps the acked
 *     message until its event fits in the queue (retrying every 2 ms), so
 *     an ack is never lost, only delayed, and memory stays bounded by
 *     max_pending. Wakes are coalesced: the first event after the service
 *     thread found the queue empty calls wake(), the rest of a burst don't.
 *
 * Reliability
 *   Every QoS 1 message is held from intake until Paho reports its PUBACK
 *   (onSuccess). The bridge connects with a clean start (with a persistent
 *   session and a broker killed with -9, Paho 1.3 never recovered), so on a
 *   lost link Paho drops what it had; the bridge moves its in-flight list
 *   back to the front of the FIFO, in order, and sends it again after the
 *   reconnect. Each send gets a slot (struct bridge_slot) as Paho's context;
 *   a callback for a send that was given up on finds a detached slot and is
 *   ignored, so a message is acknowledged exactly once, by the completion
 *   of a send it is still attached to.
 *
 * Flow control
 *   At most `window` messages are handed to Paho at once (QoS 0 included,
 *   until their onSuccess), and at most min(window, Receive Maximum from
 *   the CONNACK) QoS 1 ones, so Paho's in-flight window (its 1 s stall) and
 *   maxBufferedMessages (-12) are never reached; when the window is full
 *   the bridge thread waits for a completion. If -12 happens anyway the
 *   message stays at the head of the FIFO and the thread waits.
 *
 * Link
 *   DOWN -> CONNECTING -> UP; a lost link or failed connect goes back to
 *   DOWN and schedules a reconnect with exponential backoff and full jitter
 *   (200 ms base, 10 s cap). Every change of `connected` emits
 *   BRIDGE_EV_LINK. After each connect: TCP_NODELAY on Paho's socket, the
 *   node's retained "online" (when node_status; the last will says
 *   "offline"), and the resubscription of every held device.
 *   Measured: a (re)connect costs about 1 s however fast the broker is.
 *   Paho 1.3's receive thread sees a new socket only when its poll() times
 *   out (1 s); eclipse-paho/paho.mqtt.c #1039, fixed upstream by PR #1642,
 *   not in 1.3.12. Nothing queued is lost meanwhile; it only delays acks.
 */
#include "bridge_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <MQTTProperties.h>

#define PUBACK_PACKET 4 /* MQTT control packet type */

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

/* topic and payload are copied; payload is followed by a NUL. */
static struct bridge_ev *
ev_new(enum bridge_ev_kind kind, const char *device, const char *topic,
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

/* ---- lists ---------------------------------------------------------- */

void
bridge__list_append(struct bridge_list *l, struct bridge_msg *m)
{
	m->next = NULL;
	m->prev = l->tail;
	if (l->tail)
		l->tail->next = m;
	else
		l->head = m;
	l->tail = m;
	l->n++;
}

void
bridge__list_remove(struct bridge_list *l, struct bridge_msg *m)
{
	if (m->prev)
		m->prev->next = m->next;
	else
		l->head = m->next;
	if (m->next)
		m->next->prev = m->prev;
	else
		l->tail = m->prev;
	m->next = m->prev = NULL;
	l->n--;
}

static void
list_insert_before(struct bridge_list *l, struct bridge_msg *pos,
		   struct bridge_msg *m)
{
	if (!pos) {
		bridge__list_append(l, m);
		return;
	}
	m->next = pos;
	m->prev = pos->prev;
	if (pos->prev)
		pos->prev->next = m;
	else
		l->head = m;
	pos->prev = m;
	l->n++;
}

/* Puts m back into the FIFO in intake order. */
static void
fifo_requeue(struct bridge *b, struct bridge_msg *m)
{
	struct bridge_msg *pos = b->fifo.head;

	while (pos && pos->seq < m->seq)
		pos = pos->next;
	list_insert_before(&b->fifo, pos, m);
}

/* Moves all of src in front of dst, keeping src's order. */
static void
list_splice_front(struct bridge_list *dst, struct bridge_list *src)
{
	if (!src->head)
		return;
	if (dst->head) {
		src->tail->next = dst->head;
		dst->head->prev = src->tail;
	} else {
		dst->tail = src->tail;
	}
	dst->head = src->head;
	dst->n += src->n;
	memset(src, 0, sizeof(*src));
}

static void
list_free(struct bridge_list *l)
{
	struct bridge_msg *m, *next;

	for (m = l->head; m; m = next) {
		next = m->next;
		free(m);
	}
	memset(l, 0, sizeof(*l));
}

/* ---- small helpers -------------------------------------------------- */

static uint64_t
now_us(void)
{
	return hub_clock_mono_us();
}

static uint32_t
rnd32(struct bridge *b)
{
	uint32_t x = b->rnd; /* xorshift32: jitter, not secrets */

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return b->rnd = x;
}

static void
wake_maybe(struct bridge *b)
{
	if (!atomic_exchange(&b->woken, 1) && b->wake)
		b->wake(b->wake_arg);
}

static int
is_device_q1(const struct bridge_msg *m)
{
	return m->kind == BRIDGE_PUB && m->qos;
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

/* ---- Paho callbacks (Paho's threads) -------------------------------- */

static void
cb_push(struct bridge *b, int kind, int val)
{
	pthread_mutex_lock(&b->lock);
	if (b->cb_len == b->cb_cap) {
		size_t nc = b->cb_cap * 2, i;
		struct bridge_cb *n = malloc(nc * sizeof(*n));

		if (!n) {
			/* the bridge thread resets the link: every send in
			 * flight is requeued, nothing is lost */
			b->cb_overflow = 1;
			pthread_cond_signal(&b->cond);
			pthread_mutex_unlock(&b->lock);
			return;
		}
		for (i = 0; i < b->cb_len; i++)
			n[i] = b->cbs[(b->cb_head + i) % b->cb_cap];
		free(b->cbs);
		b->cbs = n;
		b->cb_cap = nc;
		b->cb_head = 0;
	}
	b->cbs[(b->cb_head + b->cb_len) % b->cb_cap] =
	    (struct bridge_cb){.kind = kind, .val = val};
	b->cb_len++;
	pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

static void
slot_cb(void *ctx, int kind)
{
	struct bridge_slot *s = ctx;

	cb_push(s->b, kind, (int)(s - s->b->slots));
}

static void
on_pub_ok5(void *ctx, MQTTAsync_successData5 *r)
{
	slot_cb(ctx, BRIDGE_CB_PUB_OK);
}

static void
on_pub_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
	int rej = r && r->packet_type == PUBACK_PACKET &&
		  r->reasonCode >= MQTTREASONCODE_UNSPECIFIED_ERROR;

	slot_cb(ctx, rej ? BRIDGE_CB_PUB_REJECT : BRIDGE_CB_PUB_FAIL);
}

static void
on_pub_ok3(void *ctx, MQTTAsync_successData *r)
{
	slot_cb(ctx, BRIDGE_CB_PUB_OK);
}

static void
on_pub_fail3(void *ctx, MQTTAsync_failureData *r)
{
	slot_cb(ctx, BRIDGE_CB_PUB_FAIL);
}

static void
on_conn_ok5(void *ctx, MQTTAsync_successData5 *r)
{
	int rm = 65535;

	if (r && MQTTProperties_hasProperty(&r->properties,
					    MQTTPROPERTY_CODE_RECEIVE_MAXIMUM))
		rm = MQTTProperties_getNumericValue(
		    &r->properties, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM);
	cb_push(ctx, BRIDGE_CB_CONN_OK, rm);
}

/* Paho's thread: keeps the words of a failed connect for the log. */
static void
note_conn_err(struct bridge *b, int code, const char *msg, int reason)
{
	char buf[sizeof(b->conn_err)];

	if (msg && *msg)
		snprintf(buf, sizeof(buf), "%s", msg);
	else if (reason > 0)
		snprintf(buf, sizeof(buf), "refused by the broker: %s",
			 MQTTReasonCode_toString((enum MQTTReasonCodes)reason));
	else
		snprintf(buf, sizeof(buf), "%s", MQTTAsync_strerror(code));
	pthread_mutex_lock(&b->lock);
	memcpy(b->conn_err, buf, sizeof(buf));
	pthread_mutex_unlock(&b->lock);
}

static void
on_conn_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
	note_conn_err(ctx, r ? r->code : 0, r ? r->message : NULL,
		      r ? (int)r->reasonCode : 0);
	cb_push(ctx, BRIDGE_CB_CONN_FAIL, r ? r->code : 0);
}

static void
on_conn_ok3(void *ctx, MQTTAsync_successData *r)
{
	cb_push(ctx, BRIDGE_CB_CONN_OK, 65535);
}

static void
on_conn_fail3(void *ctx, MQTTAsync_failureData *r)
{
	note_conn_err(ctx, r ? r->code : 0, r ? r->message : NULL, 0);
	cb_push(ctx, BRIDGE_CB_CONN_FAIL, r ? r->code : 0);
}

static void
on_lost(void *ctx, char *cause)
{
	cb_push(ctx, BRIDGE_CB_LOST, 0);
}

static void
on_disconnected(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
{
	cb_push(ctx, BRIDGE_CB_LOST, (int)rc);
}

static void
on_disc_ok5(void *ctx, MQTTAsync_successData5 *r)
{
	cb_push(ctx, BRIDGE_CB_DISC_DONE, 0);
}

static void
on_disc_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
	cb_push(ctx, BRIDGE_CB_DISC_DONE, 0);
}

static void
on_disc_ok3(void *ctx, MQTTAsync_successData *r)
{
	cb_push(ctx, BRIDGE_CB_DISC_DONE, 0);
}

static void
on_disc_fail3(void *ctx, MQTTAsync_failureData *r)
{
	cb_push(ctx, BRIDGE_CB_DISC_DONE, 0);
}

/*
 * A command or session announcement: copy it into an event for the
 * service thread. 0 tells Paho to deliver it again later (event queue full
 * or no memory); 1 that it was consumed (queued, or not ours and dropped).
 */
static int
on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
	struct bridge *b = ctx;
	char device[HUB_ID_MAX + 1];
	const char *rel = NULL;
	struct bridge_ev *e;
	int is_session = 0, kind;

	if (topic_len > 0 && strlen(topic) != (size_t)topic_len)
		goto consumed; /* a NUL inside the topic: not ours */
	if (bridge__revoked_topic(b, topic, device, sizeof(device)) == HUB_OK) {
		kind = BRIDGE_EV_REVOKED; /* an empty one clears: keep it */
		goto queue;
	}
	if (bridge__group_topic(b, topic, device, sizeof(device), &rel) ==
	    HUB_OK) {
		/* live commands only: a retained or empty one is not one */
		if (msg->retained || msg->payloadlen == 0)
			goto consumed;
		if (!proto_topic_valid(rel, strlen(rel)) ||
		    (size_t)msg->payloadlen > b->max_cmd) {
			atomic_fetch_add(&b->st_cmds_dropped, 1);
			goto consumed;
		}
		kind = BRIDGE_EV_GROUPCMD;
		goto queue;
	}
	if (proto_topic_down(b->prefix, topic, device, sizeof(device), &rel,
			     &is_session) != HUB_OK)
		goto consumed;
	/* a retained zero-length publish deletes a retained command (another
	 * worker clearing an acked offline command): never a command. MQTT 3
	 * has no no-local, so our own clears come back, and not retained */
	if (!is_session && msg->payloadlen == 0 &&
	    (msg->retained || b->mqtt_version == 3))
		goto consumed;
	/* commands obey the same topic rules as the uplink (a clear of a
	 * topic we cannot publish would never happen), and a command larger
	 * than a session's queue could never be delivered: drop both here,
	 * before anything is copied or parsed on the service thread */
	if (!is_session && (!proto_topic_valid(rel, strlen(rel)) ||
			    (size_t)msg->payloadlen > b->max_cmd)) {
		atomic_fetch_add(&b->st_cmds_dropped, 1);
		goto consumed;
	}
	kind = is_session ? BRIDGE_EV_SESSION : BRIDGE_EV_CMD;
queue:
	e = ev_new(
	    kind, device,
	    kind == BRIDGE_EV_CMD || kind == BRIDGE_EV_GROUPCMD ? rel : NULL,
	    msg->payload, msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0);
	if (!e)
		return 0;
	e->qos = msg->qos;
	e->retained = msg->retained;
	e->t_rx_us = now_us();
	if (hub_queue_push(b->evq, e) != HUB_OK) {
		free(e);
		wake_maybe(b);
		return 0;
	}
	if (kind == BRIDGE_EV_CMD || kind == BRIDGE_EV_GROUPCMD)
		atomic_fetch_add(&b->st_cmds_in, 1);
	wake_maybe(b);
consumed:
	MQTTAsync_freeMessage(&msg);
	MQTTAsync_free(topic);
	return 1;
}

/* ---- slots ---------------------------------------------------------- */

static int
slot_get(struct bridge *b)
{
	int i = b->free_slot;

	if (i >= 0)
		b->free_slot = b->slots[i].next_free;
	return i;
}

static void
slot_put(struct bridge *b, int i)
{
	b->slots[i].msg = NULL;
	b->slots[i].next_free = b->free_slot;
	b->free_slot = i;
}

/* Takes m off its send: the slot stays busy until Paho calls back. */
static void
detach(struct bridge *b, struct bridge_msg *m)
{
	int s = (m->state & BRIDGE_ST_SLOT_MASK) - 1;

	if (s < 0)
		return;
	b->slots[s].msg = NULL;
	m->state &= ~BRIDGE_ST_SLOT_MASK;
	b->out_all--;
	if (m->qos)
		b->out_q1--;
	bridge__list_remove(&b->inflight, m);
}

/* ---- completion ----------------------------------------------------- */

static void
push_link(struct bridge *b, int up)
{
	if (b->link_len == sizeof(b->link_ring) / sizeof(b->link_ring[0])) {
		/* keep the latest state; transitions in between are moot */
		b->link_ring[(b->link_head + b->link_len - 1) % 16] = up;
		return;
	}
	b->link_ring[(b->link_head + b->link_len) % 16] = up;
	b->link_len++;
}

/* A reliable message leaves the bridge (acked or refused). */
static void
finish(struct bridge *b, struct bridge_msg *m, int rejected)
{
	if (m->qos)
		atomic_fetch_sub(&b->st_pending, 1);
	if (m == b->online_msg)
		b->online_msg = NULL;
	if (m == b->offline_msg)
		b->offline_msg = NULL;
	if (rejected)
		atomic_fetch_add(&b->st_rejected, 1);
	else if (m->qos)
		atomic_fetch_add(&b->st_acked, 1);
	if (m->kind == BRIDGE_ANNOUNCE && !rejected)
		bridge__subs_announced(b, m->device);
	if (is_device_q1(m)) {
		if (rejected)
			m->state |= BRIDGE_ST_REJECTED;
		bridge__list_append(&b->acked, m); /* event in flush_events */
		return;
	}
	free(m);
}

static void
drop_qos0(struct bridge *b, struct bridge_msg *m, int was_queued)
{
	if (was_queued)
		atomic_fetch_sub(&b->q0_held, 1);
	atomic_fetch_add(&b->st_dropped_qos0, 1);
	free(m);
}

/* Queues ack/nack and link events; 1 if the event queue is full. */
static int
flush_events(struct bridge *b)
{
	struct bridge_msg *m;
	struct bridge_ev *e;
	int pushed = 0, blocked = 0;

	if (b->down_report[0]) {
		e = ev_new(BRIDGE_EV_LINK, NULL, NULL, b->down_report,
			   strlen(b->down_report));
		if (e && hub_queue_push(b->evq, e) == HUB_OK) {
			b->down_report[0] = '\0';
			pushed++;
		} else {
			free(e);
			blocked = 1;
		}
	}
	while (!blocked && b->link_len) {
		e = ev_new(BRIDGE_EV_LINK, NULL, NULL, NULL, 0);
		if (!e) {
			blocked = 1;
			break;
		}
		e->up = b->link_ring[b->link_head];
		if (hub_queue_push(b->evq, e) != HUB_OK) {
			free(e);
			blocked = 1;
			break;
		}
		b->link_head = (b->link_head + 1) % 16;
		b->link_len--;
		pushed++;
	}
	while (!blocked && (m = b->acked.head)) {
		e = ev_new(m->state & BRIDGE_ST_REJECTED ? BRIDGE_EV_NACK
							 : BRIDGE_EV_ACK,
			   m->device, NULL, NULL, 0);
		if (!e) {
			blocked = 1;
			break;
		}
		e->sess = m->sess;
		e->msg_id = m->msg_id;
		e->t_rx_us = m->t_rx_us;
		e->qos = 1;
		if (hub_queue_push(b->evq, e) != HUB_OK) {
			free(e);
			blocked = 1;
			break;
		}
		bridge__list_remove(&b->acked, m);
		atomic_fetch_sub(&b->dev_held, 1);
		free(m);
		pushed++;
	}
	if (pushed)
		wake_maybe(b);
	return blocked;
}

/* ---- link ----------------------------------------------------------- */

static void
schedule_reconnect(struct bridge *b)
{
	uint32_t ms = hub_backoff_ms(b->attempt, BRIDGE_BACKOFF_BASE,
				     BRIDGE_BACKOFF_CAP, rnd32(b));

	if (b->attempt < 32)
		b->attempt++;
	b->reconnect_at_us = now_us() + (uint64_t)ms * 1000u;
}

static void
link_lost(struct bridge *b)
{
	struct bridge_msg *m, *next;
	struct bridge_list back = {0};

	if (b->link != BRIDGE_UP)
		return;
	atomic_store(&b->revoked_ok, 0);
	b->link = BRIDGE_DOWN;
	atomic_store(&b->connected, 0);
	push_link(b, 0);
	b->down_since_us = b->down_reported_us = now_us();
	/* Paho forgets what it had (clean start): take every send back; a
	 * QoS 0 message may or may not have been written, and is not kept */
	for (m = b->inflight.head; m; m = next) {
		next = m->next;
		detach(b, m);
		if (m->qos) {
			bridge__list_append(&back, m);
		} else {
			atomic_fetch_add(&b->st_dropped_qos0, 1);
			free(m);
		}
	}
	list_splice_front(&b->fifo, &back); /* in their original order */
	for (m = b->fifo.head; m; m = next) {
		next = m->next;
		if (!m->qos) {
			bridge__list_remove(&b->fifo, m);
			drop_qos0(b, m, 1);
		}
	}
	b->out_all = b->out_q1 = 0;
	b->paho_full = 0;
	b->retry_at_us = 0;
	schedule_reconnect(b);
}

static void
do_connect(struct bridge *b)
{
	MQTTAsync_connectOptions v5 = MQTTAsync_connectOptions_initializer5;
	MQTTAsync_connectOptions v3 = MQTTAsync_connectOptions_initializer;
	MQTTAsync_connectOptions *co = b->mqtt_version == 5 ? &v5 : &v3;
	MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	char host[256];
	unsigned port;
	int tls = 0;

	if (b->mqtt_version == 5) {
		co->cleanstart = 1;
		co->onSuccess5 = on_conn_ok5;
		co->onFailure5 = on_conn_fail5;
		co->MQTTVersion = MQTTVERSION_5;
	} else {
		co->cleansession = 1;
		co->onSuccess = on_conn_ok3;
		co->onFailure = on_conn_fail3;
		co->MQTTVersion = MQTTVERSION_3_1_1;
	}
	co->context = b;
	co->keepAliveInterval = BRIDGE_KEEPALIVE;
	co->connectTimeout = BRIDGE_CONNECT_TIMEOUT;
	co->maxInflight = 65535;
	co->automaticReconnect = 0;
	co->username = b->user;
	co->password = b->password;
	if (b->node_topic) {
		will.topicName = b->node_topic;
		will.message = "offline";
		will.retained = 1;
		will.qos = 1;
		co->will = &will;
	}
	if (b->nuris > 1) {
		/* failover: Paho tries them in order on each connect */
		co->serverURIs = b->uris;
		co->serverURIcount = b->nuris;
	}
	if (bridge__uri_parse(b->uris[0], host, sizeof(host), &port, &tls) ==
		HUB_OK &&
	    tls) {
		ssl.verify = 1; /* host name check; system trust store */
		co->ssl = &ssl;
	}
	if (MQTTAsync_connect(b->cli, co) == MQTTASYNC_SUCCESS)
		b->link = BRIDGE_CONNECTING;
	else
		schedule_reconnect(b);
}

static struct bridge_msg *
node_status_msg(struct bridge *b, const char *what)
{
	struct bridge_msg *m =
	    bridge_msg_new(BRIDGE_RAW, NULL, b->node_topic, what, strlen(what));

	if (!m)
		return NULL;
	m->qos = 1;
	m->retain = 1;
	m->seq = ++b->seq;
	atomic_fetch_add(&b->st_pending, 1);
	/* ahead of everything queued: it says who holds those devices */
	list_insert_before(&b->fifo, b->fifo.head, m);
	return m;
}

static void
link_up(struct bridge *b, int receive_max)
{
	if (b->link != BRIDGE_CONNECTING)
		return;
	b->link = BRIDGE_UP;
	b->attempt = 0;
	b->win_q1 = receive_max > 0 && receive_max < b->window ? receive_max
							       : b->window;
	atomic_store(&b->connected, 1);
	atomic_fetch_add(&b->st_connects, 1);
	push_link(b, 1);
	b->down_since_us = b->down_reported_us = 0;
	b->down_report[0] = '\0';
	{
		int i;

		for (i = 0; i < b->nuris; i++)
			bridge__set_nodelay(b->uris[i]);
	}
	if (b->node_topic && !b->online_msg && b->phase <= BRIDGE_DRAIN)
		b->online_msg = node_status_msg(b, "online");
	bridge__subs_resubscribe(b);
}

/* ---- sending -------------------------------------------------------- */

static int
send_one(struct bridge *b, struct bridge_msg *m, int slot)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	MQTTAsync_message pm = MQTTAsync_message_initializer;
	char topic[BRIDGE_FULL_TOPIC_MAX], id[16];
	const char *t = topic;
	int rc = HUB_OK;

	switch (m->kind) {
	case BRIDGE_PUB:
	case BRIDGE_CLEAR:
		rc = proto_topic_up(b->prefix, m->device, m->topic, topic,
				    sizeof(topic));
		break;
	case BRIDGE_STATUS:
		rc = proto_topic_up(b->prefix, m->device, "status", topic,
				    sizeof(topic));
		break;
	case BRIDGE_ANNOUNCE:
		rc = proto_topic_up("hub", "sessions", m->device, topic,
				    sizeof(topic));
		break;
	default:
		t = m->topic;
		break;
	}
	if (rc != HUB_OK)
		return MQTTASYNC_BAD_UTF8_STRING; /* cannot be sent: refuse */
	pm.payload = m->payload;
	pm.payloadlen = (int)m->len;
	pm.qos = m->qos;
	pm.retained = m->retain;
	ro.context = &b->slots[slot];
	if (b->mqtt_version == 5) {
		ro.onSuccess5 = on_pub_ok5;
		ro.onFailure5 = on_pub_fail5;
		if (m->kind == BRIDGE_PUB) {
			MQTTProperty p;

			memset(&p, 0, sizeof(p));
			p.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
			if (m->session[0]) {
				p.value.data.data = "session";
				p.value.data.len = 7;
				p.value.value.data = m->session;
				p.value.value.len = (int)strnlen(
				    m->session, sizeof(m->session));
				MQTTProperties_add(&pm.properties, &p);
			}
			if (m->qos) {
				snprintf(id, sizeof(id), "%u", m->msg_id);
				p.value.data.data = "id";
				p.value.data.len = 2;
				p.value.value.data = id;
				p.value.value.len = (int)strlen(id);
				MQTTProperties_add(&pm.properties, &p);
			}
		}
	} else {
		ro.onSuccess = on_pub_ok3;
		ro.onFailure = on_pub_fail3;
	}
	/* Paho copies topic, payload and properties into its command */
	rc = MQTTAsync_sendMessage(b->cli, t, &pm, &ro);
	MQTTProperties_free(&pm.properties);
	return rc;
}

/* 1 for a Paho refusal that is about the message, not the moment. */
static int
refused_for_good(int rc)
{
	switch (rc) {
	case MQTTASYNC_BAD_UTF8_STRING:
	case MQTTASYNC_NULL_PARAMETER:
	case MQTTASYNC_TOPICNAME_TRUNCATED:
	case MQTTASYNC_BAD_STRUCTURE:
	case MQTTASYNC_BAD_QOS:
	case MQTTASYNC_BAD_MQTT_OPTION:
	case MQTTASYNC_WRONG_MQTT_VERSION:
		return 1;
	}
	return 0;
}

static void
pump(struct bridge *b)
{
	struct bridge_msg *m;

	while (b->link == BRIDGE_UP && !b->paho_full && (m = b->fifo.head)) {
		int slot, rc;

		if (b->out_all >= b->window ||
		    (m->qos && b->out_q1 >= b->win_q1))
			break;
		slot = slot_get(b);
		if (slot < 0)
			break; /* stale sends hold every slot: wait for them */
		rc = send_one(b, m, slot);
		if (rc == MQTTASYNC_SUCCESS) {
			bridge__list_remove(&b->fifo, m);
			b->slots[slot].msg = m;
			if (m->state & BRIDGE_ST_SENT)
				atomic_fetch_add(&b->st_resent, 1);
			m->state = (m->state & ~BRIDGE_ST_SLOT_MASK) |
				   BRIDGE_ST_SENT | (slot + 1);
			bridge__list_append(&b->inflight, m);
			b->out_all++;
			if (m->qos)
				b->out_q1++;
			else
				atomic_fetch_sub(&b->q0_held, 1);
			atomic_fetch_add(&b->st_sent, 1);
			continue;
		}
		slot_put(b, slot); /* no callback comes for a refused call */
		if (refused_for_good(rc)) {
			bridge__list_remove(&b->fifo, m);
			if (m->qos)
				finish(b, m, 1);
			else
				drop_qos0(b, m, 1);
			continue;
		}
		if (rc == MQTTASYNC_DISCONNECTED &&
		    !MQTTAsync_isConnected(b->cli)) {
			link_lost(b); /* before Paho's own report arrives */
			break;
		}
		/* -12 despite the window, or transient: wait for a
		 * completion, or at most 20 ms */
		b->paho_full = 1;
		b->retry_at_us = now_us() + 20000;
		break;
	}
}

/* ---- callbacks, on the bridge thread -------------------------------- */

/*
 * A connect failed: said at once the first time (at start, or after the
 * link was lost), then every BRIDGE_DOWN_REPORT_S while it lasts, with
 * Paho's reason. The service thread logs it (HUB-BROKER-DOWN).
 */
static void
report_down(struct bridge *b)
{
	uint64_t now = now_us();
	char why[sizeof(b->conn_err)];

	if (!b->down_since_us)
		b->down_since_us = now;
	else if (b->down_reported_us &&
		 now - b->down_reported_us < BRIDGE_DOWN_REPORT_S * 1000000ull)
		return;
	b->down_reported_us = now;
	pthread_mutex_lock(&b->lock);
	memcpy(why, b->conn_err, sizeof(why));
	pthread_mutex_unlock(&b->lock);
	snprintf(b->down_report, sizeof(b->down_report),
		 "%s; unreachable for %llu s", why[0] ? why : "connect failed",
		 (unsigned long long)((now - b->down_since_us) / 1000000u));
}

static void
handle_cb(struct bridge *b, const struct bridge_cb *c)
{
	struct bridge_msg *m;

	switch (c->kind) {
	case BRIDGE_CB_PUB_OK:
	case BRIDGE_CB_PUB_FAIL:
	case BRIDGE_CB_PUB_REJECT:
		if (c->val < 0 || c->val >= b->nslots)
			return;
		m = b->slots[c->val].msg;
		slot_put(b, c->val);
		b->paho_full = 0;
		if (!m)
			return; /* a send given up on: the message moved on */
		m->state &= ~BRIDGE_ST_SLOT_MASK;
		b->out_all--;
		if (m->qos)
			b->out_q1--;
		bridge__list_remove(&b->inflight, m);
		if (c->kind == BRIDGE_CB_PUB_OK) {
			if (m->qos)
				finish(b, m, 0);
			else
				free(m);
		} else if (c->kind == BRIDGE_CB_PUB_REJECT) {
			finish(b, m, 1);
		} else if (m->qos) {
			/* dropped by Paho while the link looks up (the lost
			 * link report follows): send again, not in a loop */
			fifo_requeue(b, m);
			b->paho_full = 1;
			b->retry_at_us = now_us() + 50000;
		} else {
			atomic_fetch_add(&b->st_dropped_qos0, 1);
			free(m);
		}
		break;
	case BRIDGE_CB_CONN_OK:
		link_up(b, c->val);
		break;
	case BRIDGE_CB_CONN_FAIL:
		if (b->link == BRIDGE_CONNECTING) {
			b->link = BRIDGE_DOWN;
			schedule_reconnect(b);
			report_down(b);
		}
		break;
	case BRIDGE_CB_LOST:
		/* a late report of an older connection: Paho says it is up */
		if (b->link == BRIDGE_UP && !MQTTAsync_isConnected(b->cli))
			link_lost(b);
		break;
	case BRIDGE_CB_DISC_DONE:
		b->link = BRIDGE_DOWN;
		atomic_store(&b->connected, 0);
		b->phase = BRIDGE_DONE;
		break;
	}
}

static void
intake(struct bridge *b, struct bridge_list *l)
{
	struct bridge_msg *m;

	while ((m = l->head)) {
		bridge__list_remove(l, m);
		if (m->kind == BRIDGE_SUB || m->kind == BRIDGE_UNSUB) {
			bridge__subs_request(b, m->kind, m->device);
			free(m);
			continue;
		}
		if (m->kind == BRIDGE_GSUB || m->kind == BRIDGE_GUNSUB) {
			bridge__groups_request(b, m->kind, m->device);
			free(m);
			continue;
		}
		if (!m->qos && b->link != BRIDGE_UP) {
			drop_qos0(b, m, 1);
			continue;
		}
		m->seq = ++b->seq;
		m->state = 0;
		bridge__list_append(&b->fifo, m);
	}
	bridge__subs_flush(b);
}

/* ---- stop sequence -------------------------------------------------- */

static void
disconnect(struct bridge *b)
{
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;

	if (b->mqtt_version == 5) {
		d.onSuccess5 = on_disc_ok5;
		d.onFailure5 = on_disc_fail5;
	} else {
		d.onSuccess = on_disc_ok3;
		d.onFailure = on_disc_fail3;
	}
	d.context = b;
	d.timeout = 1000;
	if (b->link == BRIDGE_DOWN ||
	    MQTTAsync_disconnect(b->cli, &d) != MQTTASYNC_SUCCESS) {
		b->phase = BRIDGE_DONE;
		return;
	}
	b->phase = BRIDGE_DISC;
	b->stop_deadline_us = now_us() + 3000000u;
}

static void
stop_step(struct bridge *b, uint64_t now)
{
	switch (b->phase) {
	case BRIDGE_RUN:
	case BRIDGE_DONE:
		break;
	case BRIDGE_DRAIN:
		if (atomic_load(&b->st_pending) && now < b->stop_deadline_us)
			break;
		if (atomic_load(&b->st_pending))
			b->stop_rc = HUB_ERR_BUSY;
		b->phase = BRIDGE_OFFLINE;
		/* bounded, but not zero: the offline status matters */
		if (b->stop_deadline_us < now + 500000u)
			b->stop_deadline_us = now + 500000u;
		if (b->node_topic && b->link == BRIDGE_UP)
			b->offline_msg = node_status_msg(b, "offline");
		/* fall through */
	case BRIDGE_OFFLINE:
		if (b->offline_msg && b->link == BRIDGE_UP &&
		    now < b->stop_deadline_us)
			break;
		disconnect(b);
		break;
	case BRIDGE_DISC:
		if (now >= b->stop_deadline_us)
			b->phase = BRIDGE_DONE;
		break;
	}
}

/* ---- the bridge thread ---------------------------------------------- */

static uint64_t
min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void *
bridge_main(void *arg)
{
	struct bridge *b = arg;
	struct bridge_cb cbs[256];
	uint64_t next_check = 0;

	b->link = BRIDGE_DOWN;
	b->reconnect_at_us = 0;
	for (;;) {
		struct bridge_list in = {0};
		uint64_t now = now_us(), deadline;
		size_t ncb = 0, i;
		int blocked, overflow;

		if (b->link == BRIDGE_DOWN && b->phase < BRIDGE_OFFLINE &&
		    now >= b->reconnect_at_us)
			do_connect(b);
		if (b->paho_full && now >= b->retry_at_us)
			b->paho_full = 0;
		if (now >= next_check) {
			/* a lost link Paho did not report through a callback */
			if (b->link == BRIDGE_UP &&
			    !MQTTAsync_isConnected(b->cli))
				link_lost(b);
			bridge__revoked_retry(b);
			next_check = now + 1000000u;
		}
		pump(b);
		blocked = flush_events(b);
		stop_step(b, now);
		if (b->phase == BRIDGE_DONE)
			break;

		deadline = next_check;
		if (b->link == BRIDGE_DOWN && b->phase < BRIDGE_OFFLINE)
			deadline = min_u64(deadline, b->reconnect_at_us);
		if (b->paho_full)
			deadline = min_u64(deadline, b->retry_at_us);
		if (b->phase != BRIDGE_RUN)
			deadline = min_u64(deadline, b->stop_deadline_us);
		if (blocked)
			deadline = min_u64(deadline, now + 2000);

		pthread_mutex_lock(&b->lock);
		while (!b->in.n && !b->cb_len && !b->cb_overflow &&
		       !(b->stop_req && b->phase == BRIDGE_RUN)) {
			struct timespec ts;

			now = now_us();
			if (now >= deadline)
				break;
			ts.tv_sec = (time_t)(deadline / 1000000u);
			ts.tv_nsec = (long)(deadline % 1000000u) * 1000;
			if (pthread_cond_timedwait(&b->cond, &b->lock, &ts) ==
			    ETIMEDOUT)
				break;
		}
		in = b->in;
		memset(&b->in, 0, sizeof(b->in));
		while (ncb < sizeof(cbs) / sizeof(cbs[0]) && b->cb_len) {
			cbs[ncb++] = b->cbs[b->cb_head];
			b->cb_head = (b->cb_head + 1) % b->cb_cap;
			b->cb_len--;
		}
		overflow = b->cb_overflow;
		b->cb_overflow = 0;
		if (b->stop_req && b->phase == BRIDGE_RUN) {
			b->phase = BRIDGE_DRAIN;
			/* stop_deadline_us was set by bridge_stop */
		}
		pthread_mutex_unlock(&b->lock);

		for (i = 0; i < ncb; i++)
			handle_cb(b, &cbs[i]);
		if (overflow && b->link == BRIDGE_UP) {
			MQTTAsync_disconnectOptions d =
			    MQTTAsync_disconnectOptions_initializer;

			/* a completion was lost: start over on a new link */
			link_lost(b);
			MQTTAsync_disconnect(b->cli, &d);
		}
		intake(b, &in);
	}
	flush_events(b);
	atomic_store(&b->connected, 0);
	return NULL;
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
	int i, rc;
	size_t nt;

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
	b->win_q1 = b->window;
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
	b->nslots = 2 * b->window + 64;
	b->slots = calloc((size_t)b->nslots, sizeof(*b->slots));
	b->cb_cap = (size_t)b->nslots + 64;
	b->cbs = calloc(b->cb_cap, sizeof(*b->cbs));
	b->evq = hub_queue_new(BRIDGE_EVQ_CAP);
	if (!b->broker || (cfg->user && !b->user) ||
	    (cfg->password && !b->password) || !b->hub_id || !b->client_id ||
	    !b->prefix || !b->nuris || !b->uris[b->nuris - 1] ||
	    (cfg->node_status && !b->node_topic) || !b->slots || !b->cbs ||
	    !b->evq || bridge__subs_init(&b->subs) != HUB_OK) {
		fail(err, errlen, "out of memory");
		goto fail;
	}
	b->free_slot = -1;
	for (i = b->nslots - 1; i >= 0; i--) {
		b->slots[i].b = b;
		slot_put(b, i);
	}
	b->rnd = (uint32_t)(now_us() ^ (uintptr_t)b) | 1u;
	b->phase = BRIDGE_RUN;

	co = b->mqtt_version == 5 ? &co5 : &co3;
	co->sendWhileDisconnected = 0;
	co->maxBufferedMessages = b->nslots + 64;
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
	if (MQTTAsync_setCallbacks(b->cli, b, on_lost, on_message, NULL) !=
		MQTTASYNC_SUCCESS ||
	    (b->mqtt_version == 5 &&
	     MQTTAsync_setDisconnected(b->cli, b, on_disconnected) !=
		 MQTTASYNC_SUCCESS)) {
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

int
bridge_start(struct bridge *b)
{
	if (!b || b->started)
		return HUB_ERR_INVAL;
	if (pthread_create(&b->thr, NULL, bridge_main, b) != 0)
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
			atomic_fetch_add(&b->st_dropped_qos0, 1);
			return HUB_ERR_BROKER;
		}
		if (atomic_fetch_add(&b->q0_held, 1) >= b->max_pending) {
			atomic_fetch_sub(&b->q0_held, 1);
			atomic_fetch_add(&b->st_dropped_qos0, 1);
			return HUB_ERR_FULL;
		}
	}
	if (dev_q1 && atomic_fetch_add(&b->dev_held, 1) >= b->max_pending) {
		atomic_fetch_sub(&b->dev_held, 1);
		return HUB_ERR_FULL;
	}
	m->state = 0;
	reliable = m->qos && m->kind != BRIDGE_SUB && m->kind != BRIDGE_UNSUB &&
		   m->kind != BRIDGE_GSUB && m->kind != BRIDGE_GUNSUB;
	if (reliable) /* before the push: its PUBACK may come first */
		atomic_fetch_add(&b->st_pending, 1);
	pthread_mutex_lock(&b->lock);
	if (atomic_load(&b->closing)) {
		pthread_mutex_unlock(&b->lock);
		if (dev_q1)
			atomic_fetch_sub(&b->dev_held, 1);
		if (q0)
			atomic_fetch_sub(&b->q0_held, 1);
		if (reliable)
			atomic_fetch_sub(&b->st_pending, 1);
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
	return b && atomic_load(&b->dev_held) < b->max_pending &&
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
	out->sent = atomic_load(&b->st_sent);
	out->acked = atomic_load(&b->st_acked);
	out->dropped_qos0 = atomic_load(&b->st_dropped_qos0);
	out->resent = atomic_load(&b->st_resent);
	out->connects = atomic_load(&b->st_connects);
	out->cmds_in = atomic_load(&b->st_cmds_in);
	out->cmds_dropped = atomic_load(&b->st_cmds_dropped);
	out->pending = atomic_load(&b->st_pending);
	out->connected = atomic_load(&b->connected);
	out->rejected = atomic_load(&b->st_rejected);
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
	    now_us() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000u;
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
	list_free(&b->in);
	list_free(&b->fifo);
	list_free(&b->inflight);
	list_free(&b->acked);
	bridge__subs_free(&b->subs);
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->cond);
	free(b->slots);
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
