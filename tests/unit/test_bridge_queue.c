/*
 * test_bridge_queue.c - the bridge's reliable queue (bridge_queue.c)
 * driven through its transport seam by a fake transport: FIFO order, acks,
 * resends after a lost link, late completions, the windows and the slot
 * bound, and the coalescing of statuses and announcements (one waiting
 * per device, the newest). No broker, no Paho, no threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bridge_queue.h"

#define SENDS_MAX 256

/* The fake transport: records every publish; says what `next_rc` says. */
struct fake {
	struct bridge_msg *sent[SENDS_MAX];
	int slot[SENDS_MAX];
	int n;
	enum bridge_send_rc next_rc;
	int finished, rejected;
	char finished_topics[SENDS_MAX][16];
};

static enum bridge_send_rc
fake_publish(void *arg, struct bridge_msg *m, int slot)
{
	struct fake *f = arg;

	if (f->next_rc != BRIDGE_SEND_OK)
		return f->next_rc;
	assert_true(f->n < SENDS_MAX);
	f->sent[f->n] = m;
	f->slot[f->n] = slot;
	f->n++;
	return BRIDGE_SEND_OK;
}

static void
fake_finished(void *arg, struct bridge_msg *m, int rejected)
{
	struct fake *f = arg;

	snprintf(f->finished_topics[f->finished % SENDS_MAX], 16, "%s",
		 m->topic ? m->topic : "");
	f->finished++;
	f->rejected += rejected;
}

static const struct bridge_rq_ops fake_ops = {
    .publish = fake_publish,
    .finished = fake_finished,
};

/* A reliable (QoS 1) or QoS 0 message to an absolute topic. */
static struct bridge_msg *
msg(struct bridge_rq *q, const char *topic, int qos)
{
	struct bridge_msg *m = bridge_msg_new(BRIDGE_RAW, NULL, topic, "x", 1);

	assert_non_null(m);
	m->qos = qos;
	if (qos)
		atomic_fetch_add(&q->st.pending, 1); /* as bridge_submit */
	else
		atomic_fetch_add(&q->st.q0_held, 1);
	return m;
}

static void
setup_q(struct bridge_rq *q, struct fake *f, int window)
{
	memset(f, 0, sizeof(*f));
	assert_int_equal(bridge__rq_init(q, window, &fake_ops, f, f), HUB_OK);
}

static void
test_fifo_order_and_ack(void **state)
{
	struct bridge_rq q;
	struct fake f;
	char t[16];
	int i;

	setup_q(&q, &f, 100);
	for (i = 0; i < 10; i++) {
		snprintf(t, sizeof(t), "t/%d", i);
		bridge__rq_add(&q, msg(&q, t, 1));
	}
	/* nothing goes while the link is down */
	assert_int_equal(bridge__rq_pump(&q, 0), 0);
	assert_int_equal(f.n, 0);
	bridge__rq_link_up(&q, 0);
	assert_int_equal(bridge__rq_pump(&q, 0), 0);
	assert_int_equal(f.n, 10);
	for (i = 0; i < 10; i++) {
		snprintf(t, sizeof(t), "t/%d", i);
		assert_string_equal(f.sent[i]->topic, t);
	}
	assert_int_equal(q.inflight.n, 10);
	assert_int_equal(atomic_load(&q.st.pending), 10);
	/* acks in any order clear exactly their message */
	bridge__rq_complete(&q, f.slot[3], BRIDGE_DONE_OK, 0);
	assert_int_equal(f.finished, 1);
	assert_string_equal(f.finished_topics[0], "t/3");
	assert_int_equal(atomic_load(&q.st.pending), 9);
	for (i = 0; i < 10; i++)
		if (i != 3)
			bridge__rq_complete(&q, f.slot[i], BRIDGE_DONE_OK, 0);
	assert_int_equal(f.finished, 10);
	assert_int_equal(atomic_load(&q.st.pending), 0);
	assert_int_equal(atomic_load(&q.st.acked), 10);
	assert_int_equal(bridge__rq_held(&q), 0);
	/* a second completion for a slot is ignored */
	bridge__rq_complete(&q, f.slot[0], BRIDGE_DONE_OK, 0);
	bridge__rq_complete(&q, -1, BRIDGE_DONE_OK, 0);
	bridge__rq_complete(&q, q.nslots, BRIDGE_DONE_OK, 0);
	assert_int_equal(f.finished, 10);
	bridge__rq_free(&q);
}

static void
test_device_ack_list(void **state)
{
	struct bridge_rq q;
	struct fake f;
	struct bridge_msg *m;

	setup_q(&q, &f, 10);
	m = bridge_msg_new(BRIDGE_PUB, "dev1", "temp", "1", 1);
	assert_non_null(m);
	m->qos = 1;
	m->msg_id = 7;
	atomic_fetch_add(&q.st.pending, 1);
	atomic_fetch_add(&q.st.dev_held, 1);
	bridge__rq_add(&q, m);
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 1);
	bridge__rq_complete(&q, f.slot[0], BRIDGE_DONE_REJECT, 0);
	/* a device message waits in the acked list for its event */
	assert_int_equal(q.acked.n, 1);
	assert_ptr_equal(q.acked.head, m);
	assert_true(m->state & BRIDGE_ST_REJECTED);
	assert_int_equal(atomic_load(&q.st.rejected), 1);
	assert_int_equal(atomic_load(&q.st.pending), 0);
	assert_int_equal(f.rejected, 1);
	bridge__rq_free(&q);
}

static void
test_resend_after_link_loss(void **state)
{
	struct bridge_rq q;
	struct fake f;
	char t[16];
	int i, old_slot[5];

	setup_q(&q, &f, 100);
	for (i = 0; i < 5; i++) {
		snprintf(t, sizeof(t), "t/%d", i);
		bridge__rq_add(&q, msg(&q, t, 1));
	}
	bridge__rq_add(&q, msg(&q, "q0/in-flight", 0));
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 6);
	for (i = 0; i < 5; i++)
		old_slot[i] = f.slot[i];
	/* t/1 is acked; then the link goes, and two more are queued */
	bridge__rq_complete(&q, f.slot[1], BRIDGE_DONE_OK, 0);
	bridge__rq_link_down(&q);
	bridge__rq_add(&q, msg(&q, "t/5", 1));
	bridge__rq_add(&q, msg(&q, "q0/queued", 0));
	/* the QoS 0 messages are gone (counted), the QoS 1 ones kept */
	assert_int_equal(atomic_load(&q.st.dropped_qos0), 1);
	assert_int_equal(q.inflight.n, 0);
	assert_int_equal(q.fifo.n, 6);
	/* while down, nothing is sent, and the late completions of the old
	 * sends are ignored (their messages will be sent again) */
	f.n = 0;
	assert_int_equal(bridge__rq_pump(&q, 0), 0);
	assert_int_equal(f.n, 0);
	for (i = 0; i < 5; i++)
		if (i != 1)
			bridge__rq_complete(&q, old_slot[i], BRIDGE_DONE_OK, 0);
	assert_int_equal(f.finished, 1);
	assert_int_equal(q.fifo.n, 6);
	/* after the reconnect: resent in their original order, then t/5
	 * (the QoS 0 one queued while down goes out too: the caller drops
	 * QoS 0 at intake while down, the queue does not) */
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 6);
	assert_string_equal(f.sent[0]->topic, "t/0");
	assert_string_equal(f.sent[1]->topic, "t/2");
	assert_string_equal(f.sent[2]->topic, "t/3");
	assert_string_equal(f.sent[3]->topic, "t/4");
	assert_string_equal(f.sent[4]->topic, "t/5");
	assert_string_equal(f.sent[5]->topic, "q0/queued");
	assert_int_equal(atomic_load(&q.st.resent), 4);
	for (i = 0; i < 6; i++)
		bridge__rq_complete(&q, f.slot[i], BRIDGE_DONE_OK, 0);
	/* each reliable message finished exactly once */
	assert_int_equal(f.finished, 6);
	assert_int_equal(atomic_load(&q.st.pending), 0);
	assert_int_equal(bridge__rq_held(&q), 0);
	bridge__rq_free(&q);
}

static void
test_fail_requeues_in_order(void **state)
{
	struct bridge_rq q;
	struct fake f;

	setup_q(&q, &f, 100);
	bridge__rq_add(&q, msg(&q, "a", 1));
	bridge__rq_add(&q, msg(&q, "b", 1));
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	bridge__rq_add(&q, msg(&q, "c", 1));
	/* the transport dropped "a": it goes back before "c", and the queue
	 * waits 50 ms (or a completion) before sending again */
	bridge__rq_complete(&q, f.slot[0], BRIDGE_DONE_FAIL, 1000);
	assert_true(q.blocked);
	assert_string_equal(q.fifo.head->topic, "a");
	assert_string_equal(q.fifo.tail->topic, "c");
	f.n = 0;
	bridge__rq_pump(&q, 1000 + 49999);
	assert_int_equal(f.n, 0);
	bridge__rq_pump(&q, 1000 + 50000);
	assert_int_equal(f.n, 2);
	assert_string_equal(f.sent[0]->topic, "a");
	assert_string_equal(f.sent[1]->topic, "c");
	bridge__rq_free(&q);
}

static void
test_windows_and_slots(void **state)
{
	struct bridge_rq q;
	struct fake f;
	char t[16];
	int i;

	/* the window bounds what is handed over at once */
	setup_q(&q, &f, 4);
	for (i = 0; i < 10; i++) {
		snprintf(t, sizeof(t), "t/%d", i);
		bridge__rq_add(&q, msg(&q, t, 1));
	}
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 4);
	bridge__rq_complete(&q, f.slot[0], BRIDGE_DONE_OK, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 5);
	assert_string_equal(f.sent[4]->topic, "t/4");
	/* the broker's Receive Maximum narrows the QoS 1 window */
	bridge__rq_link_down(&q);
	bridge__rq_link_up(&q, 2);
	f.n = 0;
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 2);
	assert_string_equal(f.sent[0]->topic, "t/1");
	/* stale sends hold slots until their completion: with every slot
	 * held, nothing is sent (2 * window + 64 slots) */
	assert_int_equal(q.nslots, 2 * 4 + 64);
	bridge__rq_free(&q);

	setup_q(&q, &f, 1000);
	q.nslots = 3; /* only three slots: each lost link strands them */
	q.free_slot = -1;
	for (i = 2; i >= 0; i--) {
		q.slots[i].next_free = q.free_slot;
		q.free_slot = i;
	}
	for (i = 0; i < 5; i++)
		bridge__rq_add(&q, msg(&q, "s", 1));
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 3);
	bridge__rq_link_down(&q);
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 3); /* no slot free until a completion */
	bridge__rq_complete(&q, f.slot[0], BRIDGE_DONE_OK, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 4);
	assert_int_equal(f.finished, 0); /* the stale completion: ignored */
	bridge__rq_free(&q);
}

static void
test_transport_says_no(void **state)
{
	struct bridge_rq q;
	struct fake f;

	setup_q(&q, &f, 10);
	bridge__rq_add(&q, msg(&q, "a", 1));
	bridge__rq_add(&q, msg(&q, "b", 0));
	bridge__rq_link_up(&q, 0);
	/* busy: stays at the head; retried after 20 ms */
	f.next_rc = BRIDGE_SEND_BUSY;
	assert_int_equal(bridge__rq_pump(&q, 100), 0);
	assert_true(q.blocked);
	assert_int_equal(q.fifo.n, 2);
	f.next_rc = BRIDGE_SEND_OK;
	bridge__rq_pump(&q, 100 + 19999);
	assert_int_equal(f.n, 0);
	/* down: the caller is told, nothing is lost */
	f.next_rc = BRIDGE_SEND_DOWN;
	assert_int_equal(bridge__rq_pump(&q, 100 + 20000), 1);
	assert_int_equal(q.fifo.n, 2);
	/* refused for good: a reliable message is finished as rejected, a
	 * QoS 0 one dropped and counted */
	f.next_rc = BRIDGE_SEND_REFUSED;
	assert_int_equal(bridge__rq_pump(&q, 100 + 20000), 0);
	assert_int_equal(q.fifo.n, 0);
	assert_int_equal(f.rejected, 1);
	assert_int_equal(atomic_load(&q.st.rejected), 1);
	assert_int_equal(atomic_load(&q.st.dropped_qos0), 1);
	assert_int_equal(atomic_load(&q.st.pending), 0);
	assert_int_equal(atomic_load(&q.st.q0_held), 0);
	bridge__rq_free(&q);
}

static void
test_add_front(void **state)
{
	struct bridge_rq q;
	struct fake f;

	setup_q(&q, &f, 10);
	bridge__rq_add(&q, msg(&q, "later", 1));
	bridge__rq_add_front(
	    &q, bridge_msg_new(BRIDGE_RAW, NULL, "first", "online", 6));
	q.fifo.head->qos = 1;
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_string_equal(f.sent[0]->topic, "first");
	assert_string_equal(f.sent[1]->topic, "later");
	assert_int_equal(atomic_load(&q.st.pending), 2);
	bridge__rq_free(&q);
}

/* A status of device with presence seq pseq (counted as bridge_submit). */
static struct bridge_msg *
status(struct bridge_rq *q, const char *device, int64_t pseq)
{
	char json[64];
	struct bridge_msg *m;
	int n = snprintf(json, sizeof(json), "{\"seq\":%lld}", (long long)pseq);

	m = bridge_msg_new(BRIDGE_STATUS, device, "status", json, (size_t)n);
	assert_non_null(m);
	m->qos = 1;
	m->retain = 1;
	m->pseq = pseq;
	atomic_fetch_add(&q->st.pending, 1);
	return m;
}

/* A device's QoS 1 message. */
static struct bridge_msg *
data(struct bridge_rq *q, const char *device, const char *topic)
{
	struct bridge_msg *m =
	    bridge_msg_new(BRIDGE_PUB, device, topic, "1", 1);

	assert_non_null(m);
	m->qos = 1;
	atomic_fetch_add(&q->st.pending, 1);
	return m;
}

static struct bridge_msg *
announce(struct bridge_rq *q, const char *device)
{
	struct bridge_msg *m =
	    bridge_msg_new(BRIDGE_ANNOUNCE, device, NULL, "{}", 2);

	assert_non_null(m);
	m->qos = 1;
	atomic_fetch_add(&q->st.pending, 1);
	return m;
}

static void
test_statuses_bounded_by_devices(void **state)
{
	struct bridge_rq q;
	struct fake f;
	char dev[16];
	int64_t seq;
	int d, i;

	/* the link is down: 1000 transitions of each of 50 devices, each an
	 * announcement and a status */
	setup_q(&q, &f, 100);
	for (seq = 1; seq <= 1000; seq++)
		for (d = 0; d < 50; d++) {
			snprintf(dev, sizeof(dev), "dev%d", d);
			bridge__rq_add(&q, announce(&q, dev));
			bridge__rq_add(&q, status(&q, dev, seq));
		}
	assert_int_equal(q.fifo.n, 100);
	assert_int_equal(atomic_load(&q.st.pending), 100);
	assert_int_equal(atomic_load(&q.st.replaced), 2 * 50 * 999);
	/* an older status arriving late does not replace the newer */
	bridge__rq_add(&q, status(&q, "dev7", 3));
	assert_int_equal(q.fifo.n, 100);
	/* sent: the newest of each, in the order of their last transition */
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 100);
	for (i = 0; i < 100; i++) {
		snprintf(dev, sizeof(dev), "dev%d", i / 2);
		assert_string_equal(f.sent[i]->device, dev);
		if (i % 2) {
			assert_int_equal(f.sent[i]->kind, BRIDGE_STATUS);
			assert_int_equal(f.sent[i]->pseq, 1000);
		} else {
			assert_int_equal(f.sent[i]->kind, BRIDGE_ANNOUNCE);
		}
	}
	for (i = 0; i < 100; i++)
		bridge__rq_complete(&q, f.slot[i], BRIDGE_DONE_OK, 0);
	assert_int_equal(atomic_load(&q.st.pending), 0);
	assert_int_equal(q.cidx_n, 0);
	/* with the link up every transition is sent */
	bridge__rq_add(&q, status(&q, "up", 1));
	bridge__rq_add(&q, status(&q, "up", 2));
	bridge__rq_add(&q, announce(&q, "up"));
	bridge__rq_add(&q, announce(&q, "up"));
	assert_int_equal(q.fifo.n, 4);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 104);
	bridge__rq_free(&q);
}

static void
test_status_order_with_data(void **state)
{
	struct bridge_rq q;
	struct fake f;

	/* online(1), data of that session, offline(2), online(3), data:
	 * online(1) is pinned by the data behind it (a subscriber must see it
	 * before that data); 3 replaces 2 at the tail, after the old
	 * session's data and before the new one's */
	setup_q(&q, &f, 100);
	bridge__rq_add(&q, status(&q, "d", 1));
	bridge__rq_add(&q, data(&q, "d", "data/1"));
	bridge__rq_add(&q, status(&q, "d", 2));
	bridge__rq_add(&q, status(&q, "d", 3));
	bridge__rq_add(&q, data(&q, "d", "data/3"));
	/* another device's data pins nothing of "d" */
	bridge__rq_add(&q, status(&q, "d", 4));
	bridge__rq_add(&q, data(&q, "e", "data/e"));
	bridge__rq_add(&q, status(&q, "d", 5));
	assert_int_equal(atomic_load(&q.st.replaced), 2);
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 6);
	assert_int_equal(f.sent[0]->pseq, 1);
	assert_string_equal(f.sent[1]->topic, "data/1");
	assert_int_equal(f.sent[2]->pseq, 3);
	assert_string_equal(f.sent[3]->topic, "data/3");
	assert_string_equal(f.sent[4]->topic, "data/e");
	assert_int_equal(f.sent[5]->pseq, 5);
	/* a status in flight is never replaced: a newer one is sent after */
	bridge__rq_add(&q, status(&q, "d", 6));
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 7);
	assert_int_equal(f.sent[6]->pseq, 6);
	/* the link goes with 5 and 6 unacknowledged, and 7 is queued: only
	 * 7 is sent again */
	for (int i = 0; i < 5; i++)
		bridge__rq_complete(&q, f.slot[i], BRIDGE_DONE_OK, 0);
	bridge__rq_link_down(&q);
	bridge__rq_add(&q, status(&q, "d", 7));
	assert_int_equal(q.fifo.n, 1);
	assert_int_equal(q.fifo.head->pseq, 7);
	assert_int_equal(atomic_load(&q.st.pending), 1);
	/* a send the transport dropped meets the newer status queued
	 * meanwhile: one remains */
	bridge__rq_link_up(&q, 0);
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 8);
	/* with the link up nothing is replaced: a send the transport
	 * dropped goes back before the newer status queued meanwhile */
	bridge__rq_add(&q, status(&q, "d", 8));
	bridge__rq_complete(&q, f.slot[7], BRIDGE_DONE_FAIL, 0);
	assert_int_equal(q.fifo.n, 2);
	assert_int_equal(q.fifo.head->pseq, 7);
	assert_int_equal(q.fifo.tail->pseq, 8);
	/* after a lost link, data that was in flight behind a status still
	 * pins it; the older statuses in flight are replaced */
	q.blocked = 0;
	bridge__rq_pump(&q, 0);
	bridge__rq_add(&q, data(&q, "d", "data/8"));
	bridge__rq_pump(&q, 0);
	assert_int_equal(f.n, 11);
	bridge__rq_add(&q, status(&q, "d", 9));
	bridge__rq_link_down(&q);
	assert_int_equal(q.fifo.n, 3);
	assert_int_equal(q.fifo.head->pseq, 8);
	assert_int_equal(q.fifo.tail->pseq, 9);
	/* a device's data is never coalesced */
	bridge__rq_add(&q, msg(&q, "data/x", 1));
	bridge__rq_add(&q, msg(&q, "data/x", 1));
	assert_int_equal(q.fifo.n, 5);
	bridge__rq_free(&q);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fifo_order_and_ack),
	    cmocka_unit_test(test_device_ack_list),
	    cmocka_unit_test(test_resend_after_link_loss),
	    cmocka_unit_test(test_fail_requeues_in_order),
	    cmocka_unit_test(test_windows_and_slots),
	    cmocka_unit_test(test_transport_says_no),
	    cmocka_unit_test(test_add_front),
	    cmocka_unit_test(test_statuses_bounded_by_devices),
	    cmocka_unit_test(test_status_order_with_data),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
