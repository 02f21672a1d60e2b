/*
 * metrics.h - Prometheus metrics shared by all worker processes.
 *
 * The supervisor maps one anonymous MAP_SHARED region before forking; each
 * worker writes only its own slot (relaxed atomics, from the service thread
 * except where noted), and whichever worker answers GET /metrics (the
 * listener is shared with SO_REUSEPORT) sums every slot. A restarted worker
 * keeps its slot's counters, so totals never go backwards; its gauges are
 * reset when it starts.
 */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define METRICS_MAX_WORKERS 64

enum metric {
	/* gauges */
	M_CONNECTIONS,
	M_BRIDGE_PENDING,
	M_BROKER_CONNECTED,
	M_REGISTRY_OPEN,
	M_WRITER_QUEUE,
	M_DEVICES_KNOWN,
	M_DOWNLINK_QUEUED,
	M_REGISTRY_MEMORY,
	/* counters */
	M_SESSIONS_ACCEPTED,
	M_AUTH_FAIL_UNKNOWN_DEVICE,
	M_AUTH_FAIL_BAD_TOKEN,
	M_AUTH_FAIL_DISABLED,
	M_AUTH_FAIL_NO_CREDENTIALS,
	M_AUTH_FAIL_RATE_LIMITED,
	M_REFUSED_FULL,
	M_REFUSED_DRAINING,
	M_MSG_IN,
	M_MSG_OUT,
	M_BYTES_IN,
	M_BYTES_OUT,
	M_PUB_QOS0,
	M_PUB_QOS1,
	M_ACKS_SENT,
	M_CMDS_DELIVERED,
	M_CMD_ACKS,
	M_DROP_RATE_LIMITED,
	M_DROP_INFLIGHT_FULL,
	M_DROP_BROKER_UNAVAILABLE,
	M_DROP_QOS0_BROKER_DOWN,
	M_DROP_DOWNLINK_QUEUE_FULL,
	M_DROP_BAD_FRAME,
	M_DROP_BAD_TOPIC,
	M_DROP_TOO_LARGE,
	M_CLOSED_CLOSED,
	M_CLOSED_TIMEOUT,
	M_CLOSED_KICKED,
	M_CLOSED_DISABLED,
	M_CLOSED_REPLACED,
	M_CLOSED_SHUTDOWN,
	M_BRIDGE_SENT,
	M_BRIDGE_ACKED,
	M_BRIDGE_RESENT,
	M_BRIDGE_CONNECTS,
	M_CMDS_REFUSED,
	M_WORKER_RESTARTS,
	M_REGISTRY_RETRIES,
	M_REGISTRY_FAILING,
	M_REGISTRY_ROWS,
	M_REGISTRY_COMMITS,
	M_PROXY_OK,
	M_PROXY_INVALID,
	M_PROXY_TIMEOUT,
	M_PROXY_CLOSED,
	M_STATUS_OUTBOX, /* gauge, from the registry writer thread */
	M__COUNT
};

#define METRICS_LAT_BUCKETS 14 /* uplink latency, frame in -> PUBACK */

struct metrics_slot {
	pid_t pid; /* 0: slot unused */
	uint64_t v[M__COUNT];
	uint64_t lat_bucket[METRICS_LAT_BUCKETS + 1]; /* last: +Inf */
	uint64_t lat_sum_us, lat_count;
};

#define METRICS_HISTORY 360	 /* samples kept: an hour ... */
#define METRICS_HISTORY_MS 10000 /* ... one every 10 s */

/* One point of the status page's chart (sums over the workers). */
struct metrics_sample {
	int64_t ts_ms; /* 0: empty */
	uint64_t connections, msg_in, msg_out;
};

struct metrics {
	int nworkers;
	struct metrics_slot slot[METRICS_MAX_WORKERS];
	/* written by worker 0's service thread only (metrics_sample_now),
	 * read by any worker answering /api/v1/status */
	uint64_t hist_next;
	struct metrics_sample hist[METRICS_HISTORY];
};

/* Maps the shared region (before fork). NULL on failure. */
struct metrics *metrics_map(int nworkers);
void metrics_unmap(struct metrics *m);

static inline void
metrics_add(struct metrics_slot *s, enum metric k, uint64_t n)
{
	__atomic_fetch_add(&s->v[k], n, __ATOMIC_RELAXED);
}
static inline void
metrics_set(struct metrics_slot *s, enum metric k, uint64_t n)
{
	__atomic_store_n(&s->v[k], n, __ATOMIC_RELAXED);
}
static inline void
metrics_dec(struct metrics_slot *s, enum metric k)
{
	__atomic_fetch_sub(&s->v[k], 1, __ATOMIC_RELAXED);
}
/* Records one uplink latency sample. */
void metrics_latency(struct metrics_slot *s, uint64_t us);
/* Resets a slot's gauges (a worker starting). */
void metrics_reset_gauges(struct metrics_slot *s);

/*
 * Prometheus text of the sum over all slots into out; returns the length
 * (truncated output is cut at a line end) . Any thread.
 */
size_t metrics_render(const struct metrics *m, char *out, size_t cap);

/* Sums of one metric over every slot. Any thread. */
uint64_t metrics_sum(const struct metrics *m, enum metric k);
/* Live workers (slots with a pid). Any thread. */
int metrics_live(const struct metrics *m);
/* Appends a history sample stamped now_ms. One thread only (worker 0). */
void metrics_sample_now(struct metrics *m, int64_t now_ms);
/*
 * Copies the history, oldest first, into out (room for METRICS_HISTORY);
 * returns the count. Any thread; a sample being written may be skipped.
 */
int metrics_history(const struct metrics *m, struct metrics_sample *out);

/*
 * The standard process_* family for the supervisor (worker="supervisor")
 * and every live worker (worker="N"), read from /proc/PID: resident
 * memory, CPU seconds, open and maximum file descriptors, start time.
 * Appends to out at offset o (cap total); returns the new offset, cut at a
 * line end if out is full. Any thread; reads only /proc.
 */
size_t metrics_render_process(const struct metrics *m, pid_t supervisor,
			      char *out, size_t o, size_t cap);

/* Values parsed from /proc/PID (exported for tests). 0 or -1. */
struct metrics_proc {
	double cpu_seconds, start_time;
	uint64_t rss_bytes;
	long open_fds, max_fds;
};
int metrics_proc_read(pid_t pid, struct metrics_proc *out);

#endif
