/*
 * bridge_queue.c - the bridge's reliable queue; see bridge_queue.h.
 *
 * Every QoS 1 message is held from intake until the transport reports its
 * PUBACK. On a lost link the in-flight list goes back to the front of the
 * FIFO, in order, and is sent again after the reconnect; each send is
 * attached to a slot, and a completion for a slot whose send was given up
 * on is ignored, so a message is finished exactly once, by the completion
 * of a send it is still attached to.
 *
 * Flow control: at most `window` messages are handed over at once (QoS 0
 * included, until their completion), and at most min(window, Receive
 * Maximum) QoS 1 ones; when the window is full the queue waits for a
 * completion. A transport that says busy anyway leaves the message at the
 * head of the FIFO until a completion or retry_at_us.
 *
 * Coalescing: statuses and session announcements are always taken (they
 * are not the device's data and must not be refused), so while the broker
 * is away a device that connects and disconnects 1000 times would queue
 * 2000 statuses and 1000 announcements. Instead, while the link is down,
 * a newer status (by presence seq) or announcement of a device replaces
 * the one still waiting in the FIFO (an index by kind and device), and is
 * appended at the tail: memory is bounded by the number of devices (plus one
 * status per device message queued, itself bounded by max_pending), and the
 * broker gets the newest status, which is all a retained topic keeps
 * anyway. Order stays right: a device message queued behind a waiting
 * status pins it (it is sent, not replaced), so an online status still
 * precedes the session's messages, and a replacing offline one follows
 * them. With the link up nothing is replaced: every transition reaches
 * the broker, as before.
 *
 * Threads: the one that drives the queue (bridge thread); the counters are
 * atomics.
 */
#include "bridge_queue.h"

#include <stdlib.h>
#include <string.h>

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

void
bridge__list_free(struct bridge_list *l)
{
	struct bridge_msg *m, *next;

	for (m = l->head; m; m = next) {
		next = m->next;
		free(m);
	}
	memset(l, 0, sizeof(*l));
}

int
bridge__is_device_q1(const struct bridge_msg *m)
{
	return m->kind == BRIDGE_PUB && m->qos;
}

/* ---- the STATUS/ANNOUNCE index ------------------------------------- */

static int
coalesces(const struct bridge_msg *m)
{
	return m->kind == BRIDGE_STATUS || m->kind == BRIDGE_ANNOUNCE;
}

static size_t
ckey(const struct bridge_msg *m)
{
	const unsigned char *p = (const unsigned char *)m->device;
	uint64_t h = 1469598103934665603ull ^ (uint64_t)m->kind;

	for (; *p; p++)
		h = (h ^ *p) * 1099511628211ull; /* FNV-1a */
	return (size_t)h;
}

static int
same_key(const struct bridge_msg *a, const struct bridge_msg *b)
{
	return a->kind == b->kind && !strcmp(a->device, b->device);
}

/* 1 if a supersedes b (same key): a status by presence seq, else intake */
static int
newer(const struct bridge_msg *a, const struct bridge_msg *b)
{
	if (a->kind == BRIDGE_STATUS && a->pseq != b->pseq)
		return a->pseq > b->pseq;
	return a->seq > b->seq;
}

static struct bridge_msg **
cidx_slot(struct bridge_rq *q, const struct bridge_msg *m)
{
	struct bridge_msg **pp;

	if (!q->cidx || !q->cidx_n)
		return NULL;
	for (pp = &q->cidx[ckey(m) & q->cidx_mask]; *pp; pp = &(*pp)->cnext)
		if (same_key(*pp, m))
			return pp;
	return NULL;
}

static void
cidx_del(struct bridge_rq *q, struct bridge_msg *m)
{
	struct bridge_msg **pp;

	if (!(m->state & BRIDGE_ST_INDEXED))
		return;
	pp = cidx_slot(q, m);
	if (pp && *pp == m) {
		*pp = m->cnext;
		q->cidx_n--;
	}
	m->cnext = NULL;
	m->state &= ~BRIDGE_ST_INDEXED;
}

/* Indexes m. Without memory to grow the table m is not indexed: it is
 * kept and sent, only not coalesced. */
static void
cidx_put(struct bridge_rq *q, struct bridge_msg *m)
{
	size_t b;

	if (!q->cidx || q->cidx_n >= q->cidx_mask + 1) {
		size_t nb = q->cidx ? 2 * (q->cidx_mask + 1) : 1024, i;
		struct bridge_msg **t = calloc(nb, sizeof(*t)), *e, *next;

		if (!t)
			return;
		for (i = 0; q->cidx && i <= q->cidx_mask; i++)
			for (e = q->cidx[i]; e; e = next) {
				next = e->cnext;
				e->cnext = t[ckey(e) & (nb - 1)];
				t[ckey(e) & (nb - 1)] = e;
			}
		free(q->cidx);
		q->cidx = t;
		q->cidx_mask = nb - 1;
	}
	b = ckey(m) & q->cidx_mask;
	m->cnext = q->cidx[b];
	q->cidx[b] = m;
	q->cidx_n++;
	m->state |= BRIDGE_ST_INDEXED;
}

/* m, in the FIFO and not sent, is replaced by a newer one: gone. */
static void
supersede(struct bridge_rq *q, struct bridge_msg *m)
{
	cidx_del(q, m);
	bridge__list_remove(&q->fifo, m);
	atomic_fetch_sub(&q->st.pending, 1);
	atomic_fetch_add(&q->st.replaced, 1);
	free(m);
}

/*
 * m is in the FIFO, not indexed: it and the waiting one of its key (if
 * any) become one, the newer. A device message queued behind a waiting
 * status pins that status (it leaves the index and will be sent): the
 * status a subscriber sees before the device's data is the one that was
 * true when the data came. m may be freed.
 */
static void
coalesce(struct bridge_rq *q, struct bridge_msg *m)
{
	struct bridge_msg **pp;

	if (m->kind == BRIDGE_PUB && q->cidx_n) {
		struct bridge_msg probe;

		probe.kind = BRIDGE_STATUS;
		memcpy(probe.device, m->device, sizeof(probe.device));
		pp = cidx_slot(q, &probe);
		if (pp)
			cidx_del(q, *pp);
		return;
	}
	/* with the link up every transition is sent, as subscribers expect */
	if (!coalesces(m) || !m->qos || q->up)
		return;
	pp = cidx_slot(q, m);
	if (pp && !newer(m, *pp)) {
		supersede(q, m);
		return;
	}
	if (pp)
		supersede(q, *pp);
	cidx_put(q, m);
}

/*
 * After a lost link put messages back into the FIFO: the index again, as if the
 * FIFO had been taken in its order, so a status sent but not acknowledged meets
 * the newer one queued behind it and only the newer is sent again.
 */
static void
cidx_rebuild(struct bridge_rq *q)
{
	struct bridge_msg *m, *next;

	for (m = q->fifo.head; m; m = m->next) {
		m->cnext = NULL;
		m->state &= ~BRIDGE_ST_INDEXED;
	}
	if (q->cidx)
		memset(q->cidx, 0, (q->cidx_mask + 1) * sizeof(*q->cidx));
	q->cidx_n = 0;
	for (m = q->fifo.head; m; m = next) {
		next = m->next; /* coalesce frees m or an earlier one */
		coalesce(q, m);
	}
}

/* ---- slots ---------------------------------------------------------- */

static int
slot_get(struct bridge_rq *q)
{
	int i = q->free_slot;

	if (i >= 0)
		q->free_slot = q->slots[i].next_free;
	return i;
}

static void
slot_put(struct bridge_rq *q, int i)
{
	q->slots[i].msg = NULL;
	q->slots[i].next_free = q->free_slot;
	q->free_slot = i;
}

/* Takes m off its send: the slot stays busy until the completion. */
static void
detach(struct bridge_rq *q, struct bridge_msg *m)
{
	int s = (m->state & BRIDGE_ST_SLOT_MASK) - 1;

	if (s < 0)
		return;
	q->slots[s].msg = NULL;
	m->state &= ~BRIDGE_ST_SLOT_MASK;
	q->out_all--;
	if (m->qos)
		q->out_q1--;
	bridge__list_remove(&q->inflight, m);
}

/* ---- life ----------------------------------------------------------- */

int
bridge__rq_init(struct bridge_rq *q, int window,
		const struct bridge_rq_ops *ops, void *arg, void *owner)
{
	int i;

	memset(q, 0, sizeof(*q));
	q->ops = ops;
	q->arg = arg;
	q->window = window > 0 ? window : 1;
	q->win_q1 = q->window;
	q->nslots = 2 * q->window + 64;
	q->slots = calloc((size_t)q->nslots, sizeof(*q->slots));
	if (!q->slots)
		return HUB_ERR_NOMEM;
	q->free_slot = -1;
	for (i = q->nslots - 1; i >= 0; i--) {
		q->slots[i].owner = owner;
		slot_put(q, i);
	}
	return HUB_OK;
}

void
bridge__rq_free(struct bridge_rq *q)
{
	bridge__list_free(&q->fifo);
	bridge__list_free(&q->inflight);
	bridge__list_free(&q->acked);
	free(q->slots);
	q->slots = NULL;
	free(q->cidx);
	q->cidx = NULL;
	q->cidx_mask = q->cidx_n = 0;
}

size_t
bridge__rq_held(const struct bridge_rq *q)
{
	return q->fifo.n + q->inflight.n;
}

/* ---- intake --------------------------------------------------------- */

void
bridge__rq_add(struct bridge_rq *q, struct bridge_msg *m)
{
	m->seq = ++q->seq;
	m->state = 0;
	m->cnext = NULL;
	bridge__list_append(&q->fifo, m);
	coalesce(q, m);
}

void
bridge__rq_add_front(struct bridge_rq *q, struct bridge_msg *m)
{
	m->seq = ++q->seq;
	m->state = 0;
	atomic_fetch_add(&q->st.pending, 1);
	list_insert_before(&q->fifo, q->fifo.head, m);
}

/* Puts m back into the FIFO in intake order. */
static void
fifo_requeue(struct bridge_rq *q, struct bridge_msg *m)
{
	struct bridge_msg *pos = q->fifo.head;

	while (pos && pos->seq < m->seq)
		pos = pos->next;
	list_insert_before(&q->fifo, pos, m);
}

/* ---- completion ----------------------------------------------------- */

/* A reliable message leaves the queue (acked or refused). */
static void
finish(struct bridge_rq *q, struct bridge_msg *m, int rejected)
{
	if (m->qos)
		atomic_fetch_sub(&q->st.pending, 1);
	if (rejected)
		atomic_fetch_add(&q->st.rejected, 1);
	else if (m->qos)
		atomic_fetch_add(&q->st.acked, 1);
	if (q->ops->finished)
		q->ops->finished(q->arg, m, rejected);
	if (bridge__is_device_q1(m)) {
		if (rejected)
			m->state |= BRIDGE_ST_REJECTED;
		bridge__list_append(&q->acked, m); /* event later */
		return;
	}
	free(m);
}

void
bridge__rq_drop_qos0(struct bridge_rq *q, struct bridge_msg *m)
{
	atomic_fetch_sub(&q->st.q0_held, 1);
	atomic_fetch_add(&q->st.dropped_qos0, 1);
	free(m);
}

void
bridge__rq_complete(struct bridge_rq *q, int slot, enum bridge_done d,
		    uint64_t now_us)
{
	struct bridge_msg *m;

	if (slot < 0 || slot >= q->nslots)
		return;
	m = q->slots[slot].msg;
	slot_put(q, slot);
	q->blocked = 0;
	if (!m)
		return; /* a send given up on: the message moved on */
	m->state &= ~BRIDGE_ST_SLOT_MASK;
	q->out_all--;
	if (m->qos)
		q->out_q1--;
	bridge__list_remove(&q->inflight, m);
	if (d == BRIDGE_DONE_OK) {
		if (m->qos)
			finish(q, m, 0);
		else
			free(m);
	} else if (d == BRIDGE_DONE_REJECT) {
		finish(q, m, 1);
	} else if (m->qos) {
		/* dropped by the transport while the link looks up (the lost
		 * link report follows): send again, not in a loop */
		fifo_requeue(q, m);
		q->blocked = 1;
		q->retry_at_us = now_us + 50000;
	} else {
		atomic_fetch_add(&q->st.dropped_qos0, 1);
		free(m);
	}
}

/* ---- link ----------------------------------------------------------- */

void
bridge__rq_link_up(struct bridge_rq *q, int receive_max)
{
	q->up = 1;
	q->win_q1 = receive_max > 0 && receive_max < q->window ? receive_max
							       : q->window;
}

void
bridge__rq_link_down(struct bridge_rq *q)
{
	struct bridge_msg *m, *next;
	struct bridge_list back = {0};

	q->up = 0;
	/* a QoS 0 message may or may not have been written: not kept */
	for (m = q->inflight.head; m; m = next) {
		next = m->next;
		detach(q, m);
		if (m->qos) {
			bridge__list_append(&back, m);
		} else {
			atomic_fetch_add(&q->st.dropped_qos0, 1);
			free(m);
		}
	}
	list_splice_front(&q->fifo, &back); /* in their original order */
	for (m = q->fifo.head; m; m = next) {
		next = m->next;
		if (!m->qos) {
			bridge__list_remove(&q->fifo, m);
			bridge__rq_drop_qos0(q, m);
		}
	}
	q->out_all = q->out_q1 = 0;
	q->blocked = 0;
	q->retry_at_us = 0;
	cidx_rebuild(q);
}

/* ---- sending -------------------------------------------------------- */

int
bridge__rq_pump(struct bridge_rq *q, uint64_t now_us)
{
	struct bridge_msg *m;

	if (q->blocked && now_us >= q->retry_at_us)
		q->blocked = 0;
	while (q->up && !q->blocked && (m = q->fifo.head)) {
		enum bridge_send_rc rc;
		int slot;

		if (q->out_all >= q->window ||
		    (m->qos && q->out_q1 >= q->win_q1))
			break;
		slot = slot_get(q);
		if (slot < 0)
			break; /* stale sends hold every slot: wait for them */
		rc = q->ops->publish(q->arg, m, slot);
		if (rc == BRIDGE_SEND_OK) {
			cidx_del(q, m);
			bridge__list_remove(&q->fifo, m);
			q->slots[slot].msg = m;
			if (m->state & BRIDGE_ST_SENT)
				atomic_fetch_add(&q->st.resent, 1);
			m->state = (m->state & ~BRIDGE_ST_SLOT_MASK) |
				   BRIDGE_ST_SENT | (slot + 1);
			bridge__list_append(&q->inflight, m);
			q->out_all++;
			if (m->qos)
				q->out_q1++;
			else
				atomic_fetch_sub(&q->st.q0_held, 1);
			atomic_fetch_add(&q->st.sent, 1);
			continue;
		}
		slot_put(q, slot); /* no completion comes for a refusal */
		if (rc == BRIDGE_SEND_REFUSED) {
			cidx_del(q, m);
			bridge__list_remove(&q->fifo, m);
			if (m->qos)
				finish(q, m, 1);
			else
				bridge__rq_drop_qos0(q, m);
			continue;
		}
		if (rc == BRIDGE_SEND_DOWN)
			return 1; /* before the transport's own report */
		/* busy despite the window, or transient: wait for a
		 * completion, or at most 20 ms */
		q->blocked = 1;
		q->retry_at_us = now_us + 20000;
		break;
	}
	return 0;
}
