/*
 * writer.c - the registry writer thread; see writer.h.
 *
 * Threads: writer_new/start/stop/free on the worker's main (service) thread;
 * the loop and every registry call on the writer thread (writer_new and
 * writer_free use the registry before the thread starts and after it was
 * joined); writer_submit and writer_take_creds on the service thread;
 * writer_status_acked on the bridge thread (the queue, and creds_lock
 * around the lists, are the only shared state).
 */
#include "writer.h"
#include "bridge.h"
#include "hub_log.h"
#include "hub_queue.h"
#include "hub_thread.h"
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_MAX 4096

struct writer {
	struct writer_config cfg;
	char hub_id[64], prefix[64];
	struct registry *reg;
	struct bridge *br;
	struct hub_queue *q;
	pthread_t thread;
	struct hub_thread_owner owner; /* the writer thread, from its start */
	int started;
	void (*wake)(void *);
	void *wake_arg;

	int64_t seq[BATCH_MAX]; /* per batch item: presence seq assigned */
	/* per batch item: an outbox row to publish again (STATUS_ACKED) */
	struct registry_status *repub[BATCH_MAX];
	int running;

	pthread_mutex_t creds_lock;
	struct registry_creds *new_creds;	   /* guarded by creds_lock */
	struct writer_item *opened, **opened_tail; /* guarded by creds_lock */
	/* PUBACKs the queue did not take (full, or closed at stop) */
	struct writer_item *late_acks; /* guarded by creds_lock */
	int64_t data_version, devices_rev;
};

/* The retained status JSON of a transition; its length, or 0. */
static size_t
status_json(const struct writer *w, const struct writer_item *it, int online,
	    int64_t seq, char *json, size_t cap)
{
	int n;

	if (online)
		n = snprintf(
		    json, cap,
		    "{\"online\":true,\"seq\":%lld,\"ts\":%lld,"
		    "\"hub\":\"%s\",\"session\":\"%s\",\"addr\":\"%s\"}",
		    (long long)seq, (long long)it->ts, w->hub_id, it->session,
		    it->addr);
	else
		n = snprintf(json, cap,
			     "{\"online\":false,\"seq\":%lld,\"ts\":%lld,"
			     "\"reason\":\"%s\"}",
			     (long long)seq, (long long)it->ts, it->reason);
	if (n <= 0 || (size_t)n >= cap)
		return 0;
	return (size_t)n;
}

/*
 * Hands a status to the bridge. If the bridge refuses it (stopping), the
 * outbox row stays pending and the next start publishes it.
 */
static void
publish_status(struct writer *w, const char *device, int64_t seq,
	       const char *json)
{
	struct bridge_msg *m;

	m = bridge_msg_new(BRIDGE_STATUS, device, "status", json, strlen(json));
	if (!m) {
		hub_log(HUB_LOG_ERR, "HUB-STATUS-LATE",
			"out of memory for the status of %s: it stays in the "
			"outbox until the next start",
			device);
		return;
	}
	m->qos = 1;
	m->retain = 1;
	m->pseq = seq;
	if (bridge_submit(w->br, m) != HUB_OK) {
		hub_log(HUB_LOG_WARN, "HUB-STATUS-LATE",
			"bridge stopping: the status of %s (seq %lld) stays in "
			"the outbox until the next start",
			device, (long long)seq);
		bridge_msg_free(m);
	}
}

/* Writes the status of a committed-to-be transition into the outbox, in
 * the batch's transaction; *seq = 0 if there is nothing to publish. */
static int
outbox_put(struct writer *w, const struct writer_item *it, int online,
	   int64_t *seq)
{
	char json[REGISTRY_STATUS_MAX];
	int stored = 0, rc;

	if (!*seq)
		return HUB_OK;
	if (!status_json(w, it, online, *seq, json, sizeof(json))) {
		*seq = 0;
		return HUB_ERR_TOOBIG;
	}
	rc = registry_outbox_put(w->reg, it->device, *seq, json, w->hub_id,
				 w->cfg.worker, &stored);
	if (rc == HUB_OK && !stored)
		*seq = 0; /* the outbox already has a newer status */
	return rc;
}

struct repair_ctx {
	struct writer *w;
	unsigned n;
	int64_t ts;
	int rc;
};

/* Inside the repair's transaction: the offline status into the outbox. */
static void
repair_cb(void *arg, const char *device, const char *session, int64_t seq)
{
	struct repair_ctx *x = arg;
	struct writer_item it;

	if (!seq || x->rc != HUB_OK) /* online again elsewhere: no offline */
		return;
	memset(&it, 0, sizeof(it));
	snprintf(it.device, sizeof(it.device), "%s", device);
	snprintf(it.session, sizeof(it.session), "%s", session);
	snprintf(it.reason, sizeof(it.reason), "hub_restart");
	it.ts = x->ts;
	x->rc = outbox_put(x->w, &it, 0, &seq);
	x->n++;
}

static void
republish_cb(void *arg, const struct registry_status *st)
{
	publish_status(arg, st->device, st->seq, st->payload);
}

/*
 * Crash repair and the outbox's pending rows, at start: one transaction
 * closes the sessions this worker left open and writes their offline
 * statuses; then every pending row this worker owns (those, and any a
 * crash or a stop with the broker away left) goes to the bridge.
 */
static int
repair(struct writer *w, unsigned *repaired, char *err, size_t errlen)
{
	struct repair_ctx rx;
	int also = w->cfg.worker == 0 ? w->cfg.nworkers : -1, rc;

	memset(&rx, 0, sizeof(rx));
	rx.w = w;
	rx.ts = hub_clock_ms();
	rc = registry_begin(w->reg);
	if (rc == HUB_OK)
		rc = registry_repair(w->reg, w->hub_id, w->cfg.worker, also,
				     repair_cb, &rx);
	if (rc == HUB_OK)
		rc = rx.rc;
	if (rc == HUB_OK)
		rc = registry_commit(w->reg);
	if (rc != HUB_OK) {
		snprintf(err, errlen, "repair: %s: %s", hub_strerror(rc),
			 registry_errmsg(w->reg));
		registry_rollback(w->reg);
		return rc;
	}
	*repaired = rx.n;
	rc = registry_outbox_pending(w->reg, w->hub_id, w->cfg.worker, also,
				     republish_cb, w);
	if (rc != HUB_OK)
		snprintf(err, errlen, "status outbox: %s: %s", hub_strerror(rc),
			 registry_errmsg(w->reg));
	return rc;
}

struct writer *
writer_new(const struct writer_config *cfg, struct bridge *br,
	   void (*wake)(void *), void *wake_arg, char *err, size_t errlen,
	   unsigned *repaired)
{
	struct writer *w;
	int rc;

	*repaired = 0;
	w = calloc(1, sizeof(*w));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	w->cfg = *cfg;
	snprintf(w->hub_id, sizeof(w->hub_id), "%s", cfg->hub_id);
	snprintf(w->prefix, sizeof(w->prefix), "%s", cfg->prefix);
	w->br = br;
	w->wake = wake;
	w->wake_arg = wake_arg;
	w->opened_tail = &w->opened;
	pthread_mutex_init(&w->creds_lock, NULL);
	w->q = hub_queue_new(cfg->queue_cap);
	if (!w->q) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	rc = registry_open(cfg->db, &w->reg, err, errlen);
	if (rc)
		goto fail;
	if (repair(w, repaired, err, errlen) != HUB_OK)
		goto fail;
	bridge_on_status_acked(br, writer_status_acked, w);
	if (registry_data_version(w->reg, &w->data_version) ||
	    registry_devices_rev(w->reg, &w->devices_rev) ||
	    registry_creds_load(w->reg, &w->new_creds)) {
		snprintf(err, errlen, "loading credentials: %s",
			 registry_errmsg(w->reg));
		goto fail;
	}
	return w;
fail:
	writer_free(w);
	return NULL;
}

static int
transient(int rc)
{
	return rc == HUB_ERR_BUSY || rc == HUB_ERR_IO || rc == HUB_ERR_NOMEM;
}

/*
 * The service thread decided this close may publish presence (no newer
 * session of the device known to it); the registry has the last word: if
 * another session of the device is open and newer (another worker of this
 * hub took it while this one was closing), the offline status would
 * override that session's online one, so none is published (*seq = 0).
 */
static int
confirm_offline(struct writer *w, const struct writer_item *it, int64_t *seq)
{
	int newer = 0, rc;

	rc = registry_session_superseded(w->reg, it->session, &newer);
	if (rc == HUB_OK && newer) {
		hub_log(HUB_LOG_DEBUG, "HUB-SESS-SUPERSEDED",
			"device=%s session=%s: a newer session is open, no "
			"offline status",
			it->device, it->session);
		*seq = 0;
	}
	return rc;
}

/*
 * A PUBACK of (device, seq): the outbox row is cleared if it still holds
 * seq; if it holds a newer status that may have landed before this one,
 * *repub gets it, to publish again after the commit.
 */
static int
status_acked(struct writer *w, const struct writer_item *it,
	     struct registry_status **repub)
{
	struct registry_status st;
	int again = 0, rc;

	rc = registry_outbox_acked(w->reg, it->device, it->seq, w->hub_id,
				   w->cfg.worker, &st, &again);
	if (rc == HUB_OK && again) {
		*repub = malloc(sizeof(st));
		if (!*repub)
			return HUB_ERR_NOMEM; /* transient: the batch again */
		**repub = st;
		hub_log(HUB_LOG_INFO, "HUB-STATUS-AGAIN",
			"device=%s: seq %lld acknowledged after the newer "
			"%lld was written: publishing %lld again",
			it->device, (long long)it->seq, (long long)st.seq,
			(long long)st.seq);
	}
	return rc;
}

/*
 * Another hub published an offline status of a device this worker now
 * holds, and that offline was acknowledged after our online may have been
 * (hub/sessions/{id} "restatus", docs/protocol.md): the device's newest
 * status, if it is an online one, goes out again, so the retained status
 * ends with it whatever the order the two hubs' statuses reached the
 * broker in.
 */
static int
restatus(struct writer *w, const struct writer_item *it,
	 struct registry_status **repub)
{
	struct registry_status st;
	int found = 0, rc;

	rc = registry_outbox_get(w->reg, it->device, &st, &found);
	if (rc != HUB_OK || !found ||
	    strncmp(st.payload, "{\"online\":true", 14))
		return rc;
	*repub = malloc(sizeof(st));
	if (!*repub)
		return HUB_ERR_NOMEM; /* transient: the batch again */
	**repub = st;
	return HUB_OK;
}

/*
 * Writes one batch in one transaction. Each registry call runs in its own
 * savepoint, so an item that fails for good (a malformed row) is logged and
 * skipped without undoing the others; a busy or failing disk is retried
 * until it works, because every item is a session transition that must not
 * be lost.
 */
static void
apply(struct writer *w, struct writer_item **items, size_t n)
{
	unsigned attempts = 0;
	uint64_t first_us = 0, next_log_us = 0;
	size_t i;
	int rc;

	HUB_ASSERT_THREAD(&w->owner);
	for (;;) {
		rc = registry_begin(w->reg);
		for (i = 0; i < n; i++) {
			free(w->repub[i]); /* a rolled back attempt's */
			w->repub[i] = NULL;
		}
		for (i = 0; rc == HUB_OK && i < n; i++) {
			struct writer_item *it = items[i];
			struct registry_session s;

			w->seq[i] = 0;
			switch (it->kind) {
			case WRITER_OPEN:
				memset(&s, 0, sizeof(s));
				snprintf(s.device, sizeof(s.device), "%s",
					 it->device);
				snprintf(s.session, sizeof(s.session), "%s",
					 it->session);
				snprintf(s.hub, sizeof(s.hub), "%s", w->hub_id);
				snprintf(s.addr, sizeof(s.addr), "%s",
					 it->addr);
				s.worker = w->cfg.worker;
				s.ts = it->ts;
				s.create_device = it->create_device;
				rc = registry_session_open(w->reg, &s,
							   &w->seq[i]);
				if (rc == HUB_OK && it->publish)
					rc = outbox_put(w, it, 1, &w->seq[i]);
				break;
			case WRITER_CLOSE:
				rc = registry_session_close(w->reg, it->session,
							    it->reason, it->ts,
							    &w->seq[i]);
				if (rc == HUB_ERR_NOTFOUND)
					rc = HUB_OK; /* repaired meanwhile */
				else if (rc == HUB_OK && it->publish)
					rc = confirm_offline(w, it, &w->seq[i]);
				if (rc == HUB_OK && it->publish)
					rc = outbox_put(w, it, 0, &w->seq[i]);
				break;
			case WRITER_AUTH_FAILED:
				rc = registry_auth_failed(w->reg, it->device,
							  it->addr, w->hub_id,
							  it->reason, it->ts);
				break;
			case WRITER_DOWNLINK_DROPPED:
				rc = registry_downlink_dropped(
				    w->reg, it->device, it->session, w->hub_id,
				    it->reason, it->ts);
				break;
			case WRITER_STATUS_ACKED:
				rc = status_acked(w, it, &w->repub[i]);
				break;
			case WRITER_RESTATUS:
				rc = restatus(w, it, &w->repub[i]);
				break;
			}
			if (rc != HUB_OK && !transient(rc)) {
				hub_log(HUB_LOG_ERR, "HUB-REG-SKIP",
					"device=%s session=%s: %s: %s",
					it->device, it->session,
					hub_strerror(rc),
					registry_errmsg(w->reg));
				w->seq[i] = 0;
				free(w->repub[i]);
				w->repub[i] = NULL;
				rc = HUB_OK;
			}
		}
		if (rc == HUB_OK)
			rc = registry_commit(w->reg);
		if (rc == HUB_OK && w->cfg.m) {
			metrics_add(w->cfg.m, M_REGISTRY_ROWS, n);
			metrics_add(w->cfg.m, M_REGISTRY_COMMITS, 1);
		}
		if (rc == HUB_OK) {
			if (attempts) {
				hub_log(
				    HUB_LOG_INFO, "HUB-REG-OK",
				    "registry writable again: batch of "
				    "%zu written after %u retries, %.1f s",
				    n, attempts,
				    (double)(hub_clock_mono_us() - first_us) /
					1e6);
				if (w->cfg.m)
					metrics_set(w->cfg.m,
						    M_REGISTRY_FAILING, 0);
			}
			return;
		}
		/* a lock held by another process (past the busy timeout), a
		 * full disk, a read-only file: every attempt counts, the log
		 * says it at once and then every 10 s */
		if (!attempts) {
			first_us = hub_clock_mono_us();
			if (w->cfg.m)
				metrics_set(w->cfg.m, M_REGISTRY_FAILING, 1);
		}
		if (w->cfg.m)
			metrics_add(w->cfg.m, M_REGISTRY_RETRIES, 1);
		if (hub_clock_mono_us() >= next_log_us) {
			hub_log(HUB_LOG_WARN, "HUB-REG-RETRY",
				"batch of %zu: %s: %s (retrying every 0.1 s, "
				"%u so far)",
				n, hub_strerror(rc), registry_errmsg(w->reg),
				attempts + 1);
			next_log_us = hub_clock_mono_us() + 10000000;
		}
		registry_rollback(w->reg);
		/* shutting down: retry for 10 s, then give up so that the
		 * bridge still gets to flush the statuses it holds */
		++attempts;
		if (!__atomic_load_n(&w->running, __ATOMIC_ACQUIRE) &&
		    attempts > 100) {
			hub_log(HUB_LOG_ERR, "HUB-REG-LOST",
				"registry unwritable at exit: %zu rows lost",
				n);
			for (i = 0; i < n; i++) {
				w->seq[i] = 0;
				free(w->repub[i]);
				w->repub[i] = NULL;
			}
			return;
		}
		usleep(100000);
	}
}

static void
poll_devices(struct writer *w)
{
	struct registry_creds *c;

	HUB_ASSERT_THREAD(&w->owner);
	/* a failed read moves no mark: tried again in a second */
	if (registry_creds_refresh(w->reg, &w->data_version, &w->devices_rev,
				   &c)) {
		hub_log(HUB_LOG_ERR, "HUB-CREDS-LOAD", "%s",
			registry_errmsg(w->reg));
		return;
	}
	if (!c)
		return;
	pthread_mutex_lock(&w->creds_lock);
	registry_creds_free(w->new_creds);
	w->new_creds = c;
	pthread_mutex_unlock(&w->creds_lock);
	hub_log(HUB_LOG_INFO, "HUB-CREDS-RELOAD", "%zu devices",
		registry_creds_count(c));
	w->wake(w->wake_arg);
}

/* --events-retention: one worker prunes, at start and then hourly. */
static void
prune_events(struct writer *w)
{
	int64_t before = hub_clock_ms() -
			 (int64_t)w->cfg.events_retention * 86400 * 1000,
		deleted = 0;

	HUB_ASSERT_THREAD(&w->owner);
	int rc;

	rc = registry_events_prune(w->reg, before, 1000, &deleted);
	if (rc != HUB_OK)
		hub_log(HUB_LOG_WARN, "HUB-REG-PRUNE", "events: %s",
			hub_strerror(rc));
	else if (deleted)
		hub_log(HUB_LOG_INFO, "HUB-REG-PRUNE",
			"%lld events older than %d days deleted",
			(long long)deleted, w->cfg.events_retention);
}

/* After the commit: the status an item's transaction wrote, if any. */
static void
publish_item(struct writer *w, const struct writer_item *it, size_t i)
{
	char json[REGISTRY_STATUS_MAX];

	if ((it->kind == WRITER_OPEN || it->kind == WRITER_CLOSE) &&
	    it->publish && w->seq[i] &&
	    status_json(w, it, it->kind == WRITER_OPEN, w->seq[i], json,
			sizeof(json)))
		publish_status(w, it->device, w->seq[i], json);
	if (w->repub[i]) {
		publish_status(w, w->repub[i]->device, w->repub[i]->seq,
			       w->repub[i]->payload);
		free(w->repub[i]);
		w->repub[i] = NULL;
	}
}

/*
 * The PUBACKs the queue did not take: applied as their own batches (at
 * most BATCH_MAX at a time). The writer thread, or writer_free's caller
 * once the thread is joined.
 */
static void
apply_late_acks(struct writer *w)
{
	struct writer_item *l, *items[BATCH_MAX];
	size_t n, i;

	HUB_ASSERT_THREAD(&w->owner);

	struct writer_item *rev = NULL, *next;

	pthread_mutex_lock(&w->creds_lock);
	l = w->late_acks;
	w->late_acks = NULL;
	pthread_mutex_unlock(&w->creds_lock);
	for (; l; l = next) { /* pushed newest first: back to arrival order */
		next = l->next;
		l->next = rev;
		rev = l;
	}
	l = rev;
	while (l) {
		for (n = 0; l && n < BATCH_MAX; n++) {
			items[n] = l;
			l = l->next;
		}
		apply(w, items, n);
		for (i = 0; i < n; i++) {
			publish_item(w, items[i], i);
			free(items[i]);
		}
	}
}

/* The outbox gauge: pending statuses this worker owns. */
static void
sample_outbox(struct writer *w)
{
	int64_t n = 0;

	if (w->cfg.m && registry_outbox_count(w->reg, w->hub_id, w->cfg.worker,
					      &n) == HUB_OK)
		metrics_set(w->cfg.m, M_STATUS_OUTBOX, (uint64_t)n);
}

static void *
writer_main(void *arg)
{
	struct writer *w = arg;
	struct writer_item *items[BATCH_MAX];
	uint64_t next_poll = hub_clock_mono_us() + 1000000, next_prune = 0;
	size_t n, i;

	hub_thread_claim(&w->owner, "writer");
	for (;;) {
		n = hub_queue_wait(w->q, (void **)items, BATCH_MAX, 250);
		if (n) {
			struct writer_item *opened = NULL, **tail = &opened;

			apply(w, items, n);
			for (i = 0; i < n; i++) {
				struct writer_item *it = items[i];

				publish_item(w, it, i);
				if (it->kind == WRITER_OPEN) {
					/* back to the service thread: the
					 * session's uplink may flow now */
					it->next = NULL;
					*tail = it;
					tail = &it->next;
				} else
					free(it);
			}
			if (opened) {
				pthread_mutex_lock(&w->creds_lock);
				*w->opened_tail = opened;
				w->opened_tail = tail;
				pthread_mutex_unlock(&w->creds_lock);
				w->wake(w->wake_arg);
			}
		} else if (!__atomic_load_n(&w->running, __ATOMIC_ACQUIRE))
			break; /* closed and drained */
		apply_late_acks(w);
		if (hub_clock_mono_us() >= next_poll) {
			poll_devices(w);
			sample_outbox(w);
			next_poll = hub_clock_mono_us() + 1000000;
		}
		if (w->cfg.worker == 0 && w->cfg.events_retention > 0 &&
		    hub_clock_mono_us() >= next_prune) {
			prune_events(w);
			next_prune = hub_clock_mono_us() + 3600ull * 1000000;
		}
	}
	hub_thread_release(&w->owner);
	return NULL;
}

int
writer_start(struct writer *w)
{
	__atomic_store_n(&w->running, 1, __ATOMIC_RELEASE);
	if (pthread_create(&w->thread, NULL, writer_main, w))
		return HUB_ERR_IO;
	w->started = 1;
	return HUB_OK;
}

void
writer_status_acked(void *arg, const char *device, int64_t seq)
{
	struct writer *w = arg;
	struct writer_item *c = calloc(1, sizeof(*c));

	if (!c) {
		/* the row stays pending: published again at the next start */
		hub_log(HUB_LOG_WARN, "HUB-STATUS-LATE",
			"out of memory for the PUBACK of %s", device);
		return;
	}
	c->kind = WRITER_STATUS_ACKED;
	snprintf(c->device, sizeof(c->device), "%s", device);
	c->seq = seq;
	if (hub_queue_push(w->q, c) == HUB_OK)
		return;
	pthread_mutex_lock(&w->creds_lock);
	c->next = w->late_acks;
	w->late_acks = c;
	pthread_mutex_unlock(&w->creds_lock);
}

int
writer_submit(struct writer *w, const struct writer_item *it)
{
	struct writer_item *c;
	int rc;

	/* failed authentications come from anyone: they may fill half the
	 * queue, never the room the session rows need */
	if ((it->kind == WRITER_AUTH_FAILED ||
	     it->kind == WRITER_DOWNLINK_DROPPED) &&
	    hub_queue_len(w->q) * 2 > hub_queue_cap(w->q))
		return HUB_ERR_FULL;
	c = malloc(sizeof(*c));
	if (!c)
		return HUB_ERR_NOMEM;
	*c = *it;
	rc = hub_queue_push(w->q, c);
	if (rc)
		free(c);
	return rc;
}

struct registry_creds *
writer_take_creds(struct writer *w)
{
	struct registry_creds *c;

	pthread_mutex_lock(&w->creds_lock);
	c = w->new_creds;
	w->new_creds = NULL;
	pthread_mutex_unlock(&w->creds_lock);
	return c;
}

struct writer_item *
writer_take_opened(struct writer *w)
{
	struct writer_item *l;

	pthread_mutex_lock(&w->creds_lock);
	l = w->opened;
	w->opened = NULL;
	w->opened_tail = &w->opened;
	pthread_mutex_unlock(&w->creds_lock);
	return l;
}

void
writer_opened_free(struct writer_item *l)
{
	while (l) {
		struct writer_item *n = l->next;

		free(l);
		l = n;
	}
}

size_t
writer_queue_len(struct writer *w)
{
	return hub_queue_len(w->q);
}

void
writer_stop(struct writer *w)
{
	if (!w || !w->started)
		return;
	__atomic_store_n(&w->running, 0, __ATOMIC_RELEASE);
	hub_queue_close(w->q);
	pthread_join(w->thread, NULL);
	w->started = 0;
}

void
writer_free(struct writer *w)
{
	void *left[64];
	size_t n, i;

	if (!w)
		return;
	writer_stop(w);
	if (w->q) {
		while ((n = hub_queue_pop_many(w->q, left, 64)))
			for (i = 0; i < n; i++)
				free(left[i]);
		hub_queue_free(w->q);
	}
	registry_creds_free(w->new_creds);
	writer_opened_free(w->opened);
	/* the bridge has stopped: the PUBACKs of its drain clear their rows
	 * (a newer row to publish again stays pending for the next start) */
	if (w->reg) {
		apply_late_acks(w);
		sample_outbox(w);
	}
	writer_opened_free(w->late_acks);
	registry_close(w->reg);
	pthread_mutex_destroy(&w->creds_lock);
	free(w);
}
