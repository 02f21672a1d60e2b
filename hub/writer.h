/*
 * writer.h - the registry writer thread of one worker.
 *
 * It owns the worker's SQLite connection. The service thread hands it
 * session starts/ends and failed authentications (writer_submit, never
 * blocking); it writes them in batches, one transaction per batch (a
 * reconnect storm of 100k devices is a few hundred commits, not 100k
 * fsyncs), and only after the commit hands each transition's retained
 * status (with the seq the registry assigned) to the bridge - so a status
 * on the broker always has its row in the registry.
 *
 * The status outbox (devices/outbox.c): each status is also written, in
 * the transaction of its session row, as the device's newest pending
 * status, owned by this worker. The bridge reports each PUBACK
 * (writer_status_acked); the writer clears the row if it still holds that
 * seq, and publishes the row again if a newer status there may have
 * landed before the acknowledged one (another worker's). At start the
 * writer publishes every pending row this worker owns (a crash, a SIGTERM
 * with the broker away): no status is lost between commit and PUBACK.
 *
 * Once a second it polls PRAGMA data_version and the devices change counter;
 * when an operator changed devices (hubctl) it loads a fresh credential
 * snapshot and hands it to the service thread (writer_take_creds), waking
 * it with the wake function. Session rows written by other workers change
 * data_version but not the counter, so they cost one small query, no reload.
 */
#ifndef WRITER_H
#define WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "registry.h"

struct bridge;
struct metrics_slot;
struct writer;

enum writer_kind {
	WRITER_OPEN,
	WRITER_CLOSE,
	WRITER_AUTH_FAILED,
	WRITER_DOWNLINK_DROPPED, /* an episode of dropped commands began */
	WRITER_STATUS_ACKED,	 /* the broker acked status (device, seq) */
	WRITER_RESTATUS		 /* publish the device's online status again */
};

struct writer_item {
	struct writer_item *next; /* writer_take_opened's list */
	enum writer_kind kind;
	int publish;	   /* publish the retained status (0: replaced) */
	int create_device; /* WRITER_OPEN of a signed-token session */
	uint64_t sess; /* the service thread's session handle, echoed back */
	int64_t ts;
	int64_t seq; /* WRITER_STATUS_ACKED: the presence seq acked */
	char device[HUB_ID_MAX + 1];
	char session[REGISTRY_SESSION_MAX];
	char addr[REGISTRY_ADDR_MAX];
	char reason[REGISTRY_REASON_MAX + 8];
};

struct writer_config {
	const char *db;
	const char *hub_id;
	const char *prefix;
	int worker, nworkers;
	size_t queue_cap;
	int events_retention; /* days; pruned at start and then hourly */
	/* the worker's metrics slot (may be NULL): registry retries and the
	 * registry_failing gauge, written from the writer thread (atomics) */
	struct metrics_slot *m;
};

/*
 * Opens the registry, repairs sessions this hub/worker left open (their
 * offline statuses into the outbox, in the repair's transaction), hands
 * every pending outbox row this worker owns to br, registers for br's
 * status PUBACKs, loads the first credential snapshot. Main thread, before
 * writer_start and bridge_start. NULL on failure, err says why.
 */
struct writer *writer_new(const struct writer_config *cfg, struct bridge *br,
			  void (*wake)(void *), void *wake_arg, char *err,
			  size_t errlen, unsigned *repaired);
int writer_start(struct writer *w);
/*
 * Queues a copy of it. Service thread. HUB_ERR_FULL only if the queue
 * (sized for every session to start and end at once) is full.
 */
int writer_submit(struct writer *w, const struct writer_item *it);
/* A new credential snapshot, or NULL. Service thread; caller frees. */
struct registry_creds *writer_take_creds(struct writer *w);
/*
 * The WRITER_OPEN items whose row is committed and whose online status (if
 * any) is in the bridge's queue, oldest first, linked by ->next; NULL if
 * none. The service thread lets such a session's uplink through only now,
 * so that the status reaches the broker before the device's first message
 * (the bridge keeps the order of its queue). Service thread; free the list
 * with writer_opened_free().
 */
struct writer_item *writer_take_opened(struct writer *w);
void writer_opened_free(struct writer_item *list);
size_t writer_queue_len(struct writer *w);
/*
 * The broker acknowledged the status (device, seq): queued for the
 * writer thread (or, when the queue is full or closed, kept for the next
 * loop or writer_free). The bridge thread, through
 * bridge_on_status_acked.
 */
void writer_status_acked(void *w, const char *device, int64_t seq);
/* Writes what is queued, stops and joins the thread. */
void writer_stop(struct writer *w);
/*
 * Clears the outbox rows of the PUBACKs that came after writer_stop (the
 * bridge's drain), then closes the db. Call it after bridge_stop: the
 * bridge reports PUBACKs here until then. Accepts NULL.
 */
void writer_free(struct writer *w);

#endif
