/*
 * hub_queue.h - a bounded multi-producer queue of pointers.
 *
 * The hand-off between threads: service thread -> bridge (uplink),
 * bridge -> service thread (downlink, acks), service thread -> registry
 * writer. A mutex and a condition variable around a ring: the queues carry
 * thousands of items a second, not millions, and a lock held for a pointer
 * copy is not where time goes. Items are owned by the queue between push and
 * pop; the queue never frees them.
 *
 * Any thread may push or pop. hub_queue_wait() blocks; the rest never do.
 */
#ifndef HUB_QUEUE_H
#define HUB_QUEUE_H

#include <stddef.h>

struct hub_queue;

/* A queue holding at most cap items. NULL on allocation failure. */
struct hub_queue *hub_queue_new(size_t cap);
/* Frees the queue, not the items still in it. Accepts NULL. */
void hub_queue_free(struct hub_queue *q);

/* HUB_OK, or HUB_ERR_FULL when cap items wait, HUB_ERR_CLOSED after close. */
int hub_queue_push(struct hub_queue *q, void *item);
/* Up to max items into out; returns how many (0 when empty). */
size_t hub_queue_pop_many(struct hub_queue *q, void **out, size_t max);
/*
 * Like pop_many, but waits up to timeout_ms (-1: forever) for the first
 * item. Returns 0 on time-out or when the queue is closed and empty.
 */
size_t hub_queue_wait(struct hub_queue *q, void **out, size_t max,
		      int timeout_ms);
size_t hub_queue_len(struct hub_queue *q);
size_t hub_queue_cap(struct hub_queue *q);
/* Refuse further pushes and wake every waiter. */
void hub_queue_close(struct hub_queue *q);

#endif
