/*
 * bridge_link.c - the bridge thread: the link state machine (connect,
 * failover, resubscribe), the reliable queue's driver, the hand-off of
 * events to the service thread and the stop sequence.
 *
 * Link
 *   DOWN -> CONNECTING -> UP; a lost link or failed connect goes back to
 *   DOWN and schedules a reconnect with exponential backoff and full jitter
 *   (200 ms base, 10 s cap); with several --broker URIs Paho tries them in
 *   order on each connect (failover). Every change of `connected` emits
 *   BRIDGE_EV_LINK. After each connect: TCP_NODELAY on Paho's socket, the
 *   node's retained "online" (when node_status; the last will says
 *   "offline"), and the resubscription of every held device.
 *   Measured: a (re)connect costs about 1 s however fast the broker is.
 *   Paho 1.3's receive thread sees a new socket only when its poll() times
 *   out (1 s); eclipse-paho/paho.mqtt.c #1039, fixed upstream by PR #1642,
 *   not in 1.3.12. Nothing queued is lost meanwhile; it only delays acks.
 *
 * Reliability
 *   The bridge connects with a clean start (with a persistent session and
 *   a broker killed with -9, Paho 1.3 never recovered), so on a lost link
 *   Paho drops what it had; the reliable queue (bridge_queue.c) takes its
 *   sends back and sends them again after the reconnect.
 *
 * Events
 *   The event queue to the service thread is bounded (65536). Acks are
 *   produced here; the acked message stays in the queue's acked list until
 *   its event fits (retried every 2 ms), so an ack is never lost, only
 *   delayed, and memory stays bounded by max_pending. Wakes are coalesced:
 *   the first event after the service thread found the queue empty calls
 *   wake(), the rest of a burst don't.
 *
 * Threads: everything here runs on the bridge thread, except that
 * b->lock guards the inbox and the callback ring it drains.
 */
#include "bridge_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Queues ack/nack and link events; 1 if the event queue is full. */
static int
flush_events(struct bridge *b)
{
	struct bridge_msg *m;
	struct bridge_ev *e;
	int pushed = 0, blocked = 0;

	HUB_ASSERT_THREAD(&b->thread);
	if (b->down_report[0]) {
		e = bridge__ev_new(BRIDGE_EV_LINK, NULL, NULL, b->down_report,
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
		e = bridge__ev_new(BRIDGE_EV_LINK, NULL, NULL, NULL, 0);
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
	while (!blocked && (m = b->rq.acked.head)) {
		e = bridge__ev_new(m->state & BRIDGE_ST_REJECTED
				       ? BRIDGE_EV_NACK
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
		bridge__list_remove(&b->rq.acked, m);
		atomic_fetch_sub(&b->rq.st.dev_held, 1);
		free(m);
		pushed++;
	}
	if (pushed)
		bridge__wake_maybe(b);
	return blocked;
}

void
bridge__schedule_reconnect(struct bridge *b)
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
	HUB_ASSERT_THREAD(&b->thread);
	if (b->link != BRIDGE_UP)
		return;
	atomic_store(&b->revoked_ok, 0);
	b->link = BRIDGE_DOWN;
	atomic_store(&b->connected, 0);
	push_link(b, 0);
	b->down_since_us = b->down_reported_us = now_us();
	/* Paho forgets what it had (clean start): the queue takes it back */
	bridge__rq_link_down(&b->rq);
	bridge__schedule_reconnect(b);
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
	/* ahead of everything queued: it says who holds those devices */
	bridge__rq_add_front(&b->rq, m);
	return m;
}

static void
link_up(struct bridge *b, int receive_max)
{
	HUB_ASSERT_THREAD(&b->thread);
	if (b->link != BRIDGE_CONNECTING)
		return;
	b->link = BRIDGE_UP;
	b->attempt = 0;
	bridge__rq_link_up(&b->rq, receive_max);
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
	HUB_ASSERT_THREAD(&b->thread);
	switch (c->kind) {
	case BRIDGE_CB_PUB_OK:
		bridge__rq_complete(&b->rq, c->val, BRIDGE_DONE_OK, now_us());
		break;
	case BRIDGE_CB_PUB_FAIL:
		bridge__rq_complete(&b->rq, c->val, BRIDGE_DONE_FAIL, now_us());
		break;
	case BRIDGE_CB_PUB_REJECT:
		bridge__rq_complete(&b->rq, c->val, BRIDGE_DONE_REJECT,
				    now_us());
		break;
	case BRIDGE_CB_CONN_OK:
		link_up(b, c->val);
		break;
	case BRIDGE_CB_CONN_FAIL:
		if (b->link == BRIDGE_CONNECTING) {
			b->link = BRIDGE_DOWN;
			bridge__schedule_reconnect(b);
			report_down(b);
		}
		break;
	case BRIDGE_CB_LOST:
		/* a late report of an older connection: Paho says it is up */
		if (b->link == BRIDGE_UP && !bridge__paho_is_connected(b))
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

	HUB_ASSERT_THREAD(&b->thread);
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
			bridge__rq_drop_qos0(&b->rq, m);
			continue;
		}
		bridge__rq_add(&b->rq, m);
	}
	bridge__subs_flush(b);
}

static void
stop_step(struct bridge *b, uint64_t now)
{
	HUB_ASSERT_THREAD(&b->thread);
	switch (b->phase) {
	case BRIDGE_RUN:
	case BRIDGE_DONE:
		break;
	case BRIDGE_DRAIN:
		if (atomic_load(&b->rq.st.pending) && now < b->stop_deadline_us)
			break;
		if (atomic_load(&b->rq.st.pending))
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
		if (b->link == BRIDGE_DOWN ||
		    bridge__paho_disconnect(b) != HUB_OK) {
			b->phase = BRIDGE_DONE;
			break;
		}
		b->phase = BRIDGE_DISC;
		b->stop_deadline_us = now_us() + 3000000u;
		break;
	case BRIDGE_DISC:
		if (now >= b->stop_deadline_us)
			b->phase = BRIDGE_DONE;
		break;
	}
}

static uint64_t
min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

void *
bridge__main(void *arg)
{
	struct bridge *b = arg;
	struct bridge_cb cbs[256];
	uint64_t next_check = 0;

	hub_thread_claim(&b->thread, "bridge");
	b->link = BRIDGE_DOWN;
	b->reconnect_at_us = 0;
	for (;;) {
		struct bridge_list in = {0};
		uint64_t now = now_us(), deadline;
		size_t ncb = 0, i;
		int blocked, overflow;

		if (b->link == BRIDGE_DOWN && b->phase < BRIDGE_OFFLINE &&
		    now >= b->reconnect_at_us)
			bridge__paho_connect(b);
		if (now >= next_check) {
			/* a lost link Paho did not report through a callback */
			if (b->link == BRIDGE_UP &&
			    !bridge__paho_is_connected(b))
				link_lost(b);
			bridge__revoked_retry(b);
			next_check = now + 1000000u;
		}
		if (bridge__rq_pump(&b->rq, now))
			link_lost(b); /* before Paho's own report arrives */
		blocked = flush_events(b);
		stop_step(b, now);
		if (b->phase == BRIDGE_DONE)
			break;

		deadline = next_check;
		if (b->link == BRIDGE_DOWN && b->phase < BRIDGE_OFFLINE)
			deadline = min_u64(deadline, b->reconnect_at_us);
		if (b->rq.blocked)
			deadline = min_u64(deadline, b->rq.retry_at_us);
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
			/* a completion was lost: start over on a new link */
			link_lost(b);
			bridge__paho_drop(b);
		}
		intake(b, &in);
	}
	flush_events(b);
	atomic_store(&b->connected, 0);
	hub_thread_release(&b->thread);
	return NULL;
}

/*
 * An offline status was acknowledged: whoever holds the device now (a
 * newer session, maybe on another hub with its own registry, whose online
 * may have reached the broker before this offline) is asked to publish its
 * status again, after this one: hub/sessions/{id} {"op":"restatus"}, not
 * retained. Holders subscribe to that topic once the broker has their own
 * announcement (which follows their online); only an offline acknowledged
 * in the few milliseconds between a holder's online and its subscription
 * can still land after that online unanswered (docs/protocol.md).
 */
static void
restatus_request(struct bridge *b, const struct bridge_msg *m)
{
	char topic[BRIDGE_FULL_TOPIC_MAX], body[160];
	struct bridge_msg *r;
	int n;

	if (m->len < 15 || memcmp(m->payload, "{\"online\":false", 15))
		return;
	/* hub ids are ids (proto_id_valid): nothing to escape */
	n = snprintf(body, sizeof(body), "{\"op\":\"restatus\",\"hub\":\"%s\"}",
		     b->hub_id ? b->hub_id : "");
	if (n <= 0 || (size_t)n >= sizeof(body))
		return;
	if (proto_topic_up("hub", "sessions", m->device, topic,
			   sizeof(topic)) != HUB_OK)
		return;
	r = bridge_msg_new(BRIDGE_RAW, m->device, topic, body, (size_t)n);
	if (!r)
		return;
	r->qos = 1;
	r->retain = 0;
	if (bridge_submit(b, r) != HUB_OK)
		bridge_msg_free(r);
}

void
bridge__msg_finished(void *arg, struct bridge_msg *m, int rejected)
{
	struct bridge *b = arg;

	if (m == b->online_msg)
		b->online_msg = NULL;
	if (m == b->offline_msg)
		b->offline_msg = NULL;
	if (m->kind == BRIDGE_ANNOUNCE && !rejected)
		bridge__subs_announced(b, m->device);
	/* the registry writer clears the status's outbox row */
	if (m->kind == BRIDGE_STATUS && !rejected && b->status_acked)
		b->status_acked(b->status_arg, m->device, m->pseq);
	if (m->kind == BRIDGE_STATUS && !rejected)
		restatus_request(b, m);
}
