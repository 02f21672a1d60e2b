/*
 * bridge_queue.h - private to the bridge module: the reliable queue.
 *
 * The queue holds every message from intake until the transport reports it
 * done: the FIFO (waiting to be sent, in intake order), the in-flight list
 * (handed to the transport, in send order) and the acked list (device
 * messages whose ack event has not been handed to the service thread yet).
 * It knows nothing about Paho or sockets: sending goes through
 * struct bridge_rq_ops, so tests/unit/test_bridge_queue.c drives it with a
 * fake transport and no broker.
 *
 * Send slots: each send gets a slot, the context the transport hands back
 * with its completion. Slots live in one array that never moves, so a late
 * completion for a send the queue has given up on (link lost, message
 * requeued and perhaps acknowledged through a later send) finds a slot with
 * msg == NULL and is ignored, instead of touching a freed message. A slot
 * is reused only after the transport has called back for it.
 *
 * Threads: the counters in struct bridge_rq_stats are atomics any thread
 * may read (bridge_submit also moves pending, dev_held and q0_held); every
 * other field belongs to the one thread that drives the queue (the bridge
 * thread in hubd, the test's thread in the unit test).
 */
#ifndef BRIDGE_QUEUE_H
#define BRIDGE_QUEUE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge.h"

/* m->state: which send slot holds it (0: none) and flags. */
#define BRIDGE_ST_SLOT_MASK 0x00ffffff
#define BRIDGE_ST_SENT 0x01000000     /* handed over before: a resend */
#define BRIDGE_ST_REJECTED 0x02000000 /* broker refused it (PUBACK >= 0x80) */
#define BRIDGE_ST_INDEXED 0x04000000  /* in the FIFO's STATUS/ANNOUNCE index */

/* A list of messages through their next/prev links. */
struct bridge_list {
	struct bridge_msg *head, *tail;
	size_t n;
};

struct bridge_slot {
	void *owner;		/* immutable: set by the queue's user */
	struct bridge_msg *msg; /* NULL once detached */
	int next_free;
};

/* What the transport says to one publish. */
enum bridge_send_rc {
	BRIDGE_SEND_OK,	     /* taken: a completion will come for the slot */
	BRIDGE_SEND_REFUSED, /* never sendable (bad topic...): refuse it */
	BRIDGE_SEND_DOWN,    /* the link is gone: requeue, reconnect */
	BRIDGE_SEND_BUSY,    /* transient (transport buffers full): retry */
};

/* A transport completion for one slot. */
enum bridge_done {
	BRIDGE_DONE_OK,	    /* PUBACK (QoS 1) or written (QoS 0) */
	BRIDGE_DONE_FAIL,   /* dropped by the transport (lost connection) */
	BRIDGE_DONE_REJECT, /* PUBACK with a failure reason code */
};

struct bridge_rq_ops {
	/* Hands m to the transport with send slot `slot`; no completion
	 * comes unless BRIDGE_SEND_OK. */
	enum bridge_send_rc (*publish)(void *arg, struct bridge_msg *m,
				       int slot);
	/* A reliable message left the queue: acknowledged (rejected 0) or
	 * refused. Called before the message is freed or, for a device QoS 1
	 * message, moved to the acked list. May be NULL. */
	void (*finished)(void *arg, struct bridge_msg *m, int rejected);
};

struct bridge_rq_stats {
	atomic_uint_fast64_t sent, acked, dropped_qos0, resent, pending,
	    rejected;
	atomic_uint_fast64_t replaced; /* superseded before being sent */
	atomic_size_t dev_held; /* device QoS 1 msgs not yet acked+reported */
	atomic_size_t q0_held;	/* QoS 0 msgs accepted, not yet sent */
};

struct bridge_rq {
	const struct bridge_rq_ops *ops;
	void *arg;
	struct bridge_rq_stats st;
	struct bridge_list fifo;     /* waiting to be sent */
	struct bridge_list inflight; /* handed to the transport */
	struct bridge_list acked;    /* device msgs whose event waits */
	struct bridge_slot *slots;
	int nslots, free_slot;
	int window;	      /* messages handed over at once */
	int out_all, out_q1;  /* attached slots (this connection) */
	int win_q1;	      /* min(window, receive maximum) */
	int up;		      /* the link is up: pump may send */
	int blocked;	      /* the transport said busy: wait */
	uint64_t retry_at_us; /* ... until then, or a completion */
	uint64_t seq;	      /* order of intake */
	/* STATUS and ANNOUNCE messages in the FIFO by (kind, device): at
	 * most one of each per device waits, the newest */
	struct bridge_msg **cidx;
	size_t cidx_mask, cidx_n;
};

/* A message of the device uplink that needs an ack event. */
int bridge__is_device_q1(const struct bridge_msg *m);

void bridge__list_append(struct bridge_list *l, struct bridge_msg *m);
void bridge__list_remove(struct bridge_list *l, struct bridge_msg *m);
/* Frees every message of l. */
void bridge__list_free(struct bridge_list *l);

/*
 * Sets up q with `window` messages handed over at once and 2 * window + 64
 * slots (a late completion can hold a slot after its send was given up
 * on); slot owners are `owner`. HUB_OK or HUB_ERR_NOMEM.
 */
int bridge__rq_init(struct bridge_rq *q, int window,
		    const struct bridge_rq_ops *ops, void *arg, void *owner);
/* Frees every message and the slots. Accepts a zeroed q. */
void bridge__rq_free(struct bridge_rq *q);
/*
 * Takes m (pending already counted for a reliable one) at the tail. While
 * the link is down, a BRIDGE_STATUS or BRIDGE_ANNOUNCE replaces the one of
 * the same device
 * still waiting in the FIFO (if m is newer: a status by its presence seq
 * pseq, an announcement by intake), which is freed without a `finished`
 * call; if the waiting one is newer, m is the one freed. Either way
 * st.replaced counts it. Sends already handed over are never replaced,
 * nor is a status with a BRIDGE_PUB of its device queued behind it.
 */
void bridge__rq_add(struct bridge_rq *q, struct bridge_msg *m);
/* Takes m ahead of everything queued (a reliable one, counted here). */
void bridge__rq_add_front(struct bridge_rq *q, struct bridge_msg *m);
/*
 * Sends from the FIFO while the link is up and the window allows. Returns
 * 1 if the transport said the link is gone (the caller takes it down),
 * else 0.
 */
int bridge__rq_pump(struct bridge_rq *q, uint64_t now_us);
/* The transport's completion for slot. */
void bridge__rq_complete(struct bridge_rq *q, int slot, enum bridge_done d,
			 uint64_t now_us);
/* The link is up; receive_max is the broker's (<= 0: none said). */
void bridge__rq_link_up(struct bridge_rq *q, int receive_max);
/*
 * The link is gone and the transport forgot what it had (clean start):
 * every send is taken back to the front of the FIFO in its order; QoS 0
 * messages are dropped and counted.
 */
void bridge__rq_link_down(struct bridge_rq *q);
/* Drops a QoS 0 message that was counted in q0_held; counts it. */
void bridge__rq_drop_qos0(struct bridge_rq *q, struct bridge_msg *m);
/* Reliable messages the queue holds (FIFO and in flight). */
size_t bridge__rq_held(const struct bridge_rq *q);

#endif
