/* metrics.c - shared-memory Prometheus metrics; see metrics.h. */
#include "metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct mdesc {
	const char *name, *help, *type, *label; /* label: NULL or k="v" */
};

static const struct mdesc desc[M__COUNT] = {
    [M_CONNECTIONS] = {"hub_connections", "Live device sessions.", "gauge",
		       NULL},
    [M_BRIDGE_PENDING] =
	{"hub_bridge_pending",
	 "Reliable MQTT messages awaiting the broker's PUBACK.", "gauge", NULL},
    [M_BROKER_CONNECTED] = {"hub_broker_connected",
			    "Workers connected to the broker.", "gauge", NULL},
    [M_REGISTRY_OPEN] = {"hub_registry_open", "Workers with the registry open.",
			 "gauge", NULL},
    [M_WRITER_QUEUE] = {"hub_registry_queue",
			"Session rows waiting for the registry writer.",
			"gauge", NULL},
    [M_DEVICES_KNOWN] =
	{"hub_devices_known",
	 "Devices in the credential cache (per worker, summed).", "gauge",
	 NULL},
    [M_DOWNLINK_QUEUED] =
	{"hub_downlink_queued_bytes",
	 "Bytes queued to devices, not yet written (bounded per session).",
	 "gauge", NULL},
    [M_REGISTRY_MEMORY] =
	{"hub_registry_memory_bytes",
	 "Heap held by SQLite in the workers (page caches of the registry "
	 "connections; bounded by their cache_size).",
	 "gauge", NULL},
    [M_SESSIONS_ACCEPTED] = {"hub_sessions_accepted_total",
			     "Device sessions accepted.", "counter", NULL},
    [M_AUTH_FAIL_UNKNOWN_DEVICE] = {"hub_auth_failures_total",
				    "Refused device connections by reason.",
				    "counter", "reason=\"unknown_device\""},
    [M_AUTH_FAIL_BAD_TOKEN] = {"hub_auth_failures_total", NULL, "counter",
			       "reason=\"bad_token\""},
    [M_AUTH_FAIL_DISABLED] = {"hub_auth_failures_total", NULL, "counter",
			      "reason=\"disabled\""},
    [M_AUTH_FAIL_NO_CREDENTIALS] = {"hub_auth_failures_total", NULL, "counter",
				    "reason=\"no_credentials\""},
    [M_AUTH_FAIL_RATE_LIMITED] = {"hub_auth_failures_total", NULL, "counter",
				  "reason=\"rate_limited\""},
    [M_REFUSED_FULL] = {"hub_refused_total", "Connections refused with 503.",
			"counter", "reason=\"full\""},
    [M_REFUSED_DRAINING] = {"hub_refused_total", NULL, "counter",
			    "reason=\"draining\""},
    [M_MSG_IN] = {"hub_messages_in_total", "Frames received from devices.",
		  "counter", NULL},
    [M_MSG_OUT] = {"hub_messages_out_total", "Frames sent to devices.",
		   "counter", NULL},
    [M_BYTES_IN] = {"hub_bytes_in_total",
		    "Payload bytes received from devices.", "counter", NULL},
    [M_BYTES_OUT] = {"hub_bytes_out_total", "Bytes sent to devices.", "counter",
		     NULL},
    [M_PUB_QOS0] = {"hub_uplink_total",
		    "Device publishes handed to the bridge.", "counter",
		    "qos=\"0\""},
    [M_PUB_QOS1] = {"hub_uplink_total", NULL, "counter", "qos=\"1\""},
    [M_ACKS_SENT] = {"hub_acks_sent_total",
		     "QoS 1 acks sent to devices after PUBACK.", "counter",
		     NULL},
    [M_CMDS_DELIVERED] = {"hub_commands_delivered_total",
			  "Commands queued to devices.", "counter", NULL},
    [M_CMD_ACKS] = {"hub_command_acks_total",
		    "Command acks received from devices.", "counter", NULL},
    [M_DROP_RATE_LIMITED] = {"hub_drops_total",
			     "Messages refused or dropped, by reason.",
			     "counter", "reason=\"rate_limited\""},
    [M_DROP_INFLIGHT_FULL] = {"hub_drops_total", NULL, "counter",
			      "reason=\"inflight_full\""},
    [M_DROP_BROKER_UNAVAILABLE] = {"hub_drops_total", NULL, "counter",
				   "reason=\"broker_unavailable\""},
    [M_DROP_QOS0_BROKER_DOWN] = {"hub_drops_total", NULL, "counter",
				 "reason=\"qos0_broker_down\""},
    [M_DROP_DOWNLINK_QUEUE_FULL] = {"hub_drops_total", NULL, "counter",
				    "reason=\"downlink_queue_full\""},
    [M_DROP_BAD_FRAME] = {"hub_drops_total", NULL, "counter",
			  "reason=\"bad_frame\""},
    [M_DROP_BAD_TOPIC] = {"hub_drops_total", NULL, "counter",
			  "reason=\"bad_topic\""},
    [M_DROP_TOO_LARGE] = {"hub_drops_total", NULL, "counter",
			  "reason=\"too_large\""},
    [M_CLOSED_CLOSED] = {"hub_sessions_closed_total",
			 "Device sessions ended, by reason.", "counter",
			 "reason=\"closed\""},
    [M_CLOSED_TIMEOUT] = {"hub_sessions_closed_total", NULL, "counter",
			  "reason=\"timeout\""},
    [M_CLOSED_KICKED] = {"hub_sessions_closed_total", NULL, "counter",
			 "reason=\"kicked\""},
    [M_CLOSED_DISABLED] = {"hub_sessions_closed_total", NULL, "counter",
			   "reason=\"disabled\""},
    [M_CLOSED_REPLACED] = {"hub_sessions_closed_total", NULL, "counter",
			   "reason=\"replaced\""},
    [M_CLOSED_SHUTDOWN] = {"hub_sessions_closed_total", NULL, "counter",
			   "reason=\"shutdown\""},
    [M_BRIDGE_SENT] = {"hub_bridge_sent_total",
		       "Messages handed to the MQTT client.", "counter", NULL},
    [M_BRIDGE_ACKED] = {"hub_bridge_acked_total",
			"Reliable messages PUBACKed by the broker.", "counter",
			NULL},
    [M_BRIDGE_RESENT] = {"hub_bridge_resent_total",
			 "Reliable messages re-sent after a broker reconnect.",
			 "counter", NULL},
    [M_BRIDGE_CONNECTS] = {"hub_broker_connects_total",
			   "Successful broker connections.", "counter", NULL},
    [M_CMDS_REFUSED] = {"hub_commands_refused_total",
			"Commands dropped by the bridge: a topic breaking the "
			"device topic rules, or larger than a session's queue.",
			"counter", NULL},
    [M_WORKER_RESTARTS] = {"hub_worker_restarts_total",
			   "Workers restarted by the supervisor.", "counter",
			   NULL},
    [M_REGISTRY_RETRIES] = {"hub_registry_retries_total",
			    "Registry batches that failed (lock held past the "
			    "busy timeout, disk full, read-only) and were "
			    "retried.",
			    "counter", NULL},
    [M_REGISTRY_FAILING] = {"hub_registry_failing",
			    "Workers whose registry writer is retrying a "
			    "batch now.",
			    "gauge", NULL},
    [M_REGISTRY_ROWS] = {"hub_registry_rows_total",
			 "Registry writes (session opened or closed, auth "
			 "failure, dropped downlink) committed.",
			 "counter", NULL},
    [M_REGISTRY_COMMITS] = {"hub_registry_commits_total",
			    "Registry transactions committed (each a batch "
			    "of queued writes: rows / commits is the "
			    "group-commit factor).",
			    "counter", NULL},
    [M_PROXY_OK] = {"hub_proxy_headers_total",
		    "PROXY protocol headers from --trusted-proxies peers, by "
		    "result (closed, invalid, timeout: the connection was "
		    "dropped).",
		    "counter", "result=\"ok\""},
    [M_PROXY_INVALID] = {"hub_proxy_headers_total", NULL, "counter",
			 "result=\"invalid\""},
    [M_PROXY_TIMEOUT] = {"hub_proxy_headers_total", NULL, "counter",
			 "result=\"timeout\""},
    [M_PROXY_CLOSED] = {"hub_proxy_headers_total", NULL, "counter",
			"result=\"closed\""},
    [M_STATUS_OUTBOX] = {"hub_status_outbox_pending",
			 "Device statuses in the registry's outbox that no "
			 "broker has acknowledged yet (durable; republished "
			 "at the next start).",
			 "gauge", NULL},
};

/* upper bounds in microseconds */
static const uint64_t lat_le[METRICS_LAT_BUCKETS] = {
    250,   500,	   1000,   2000,   5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 10000000};

struct metrics *
metrics_map(int nworkers)
{
	struct metrics *m = mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED)
		return NULL;
	memset(m, 0, sizeof(*m));
	m->nworkers = nworkers;
	return m;
}

void
metrics_unmap(struct metrics *m)
{
	if (m)
		munmap(m, sizeof(*m));
}

void
metrics_latency(struct metrics_slot *s, uint64_t us)
{
	int i;

	for (i = 0; i < METRICS_LAT_BUCKETS && us > lat_le[i]; i++)
		;
	__atomic_fetch_add(&s->lat_bucket[i], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->lat_sum_us, us, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->lat_count, 1, __ATOMIC_RELAXED);
}

void
metrics_reset_gauges(struct metrics_slot *s)
{
	int k;

	for (k = M_CONNECTIONS; k <= M_REGISTRY_MEMORY; k++)
		metrics_set(s, (enum metric)k, 0);
	metrics_set(s, M_REGISTRY_FAILING, 0);
	metrics_set(s, M_STATUS_OUTBOX, 0);
}

static uint64_t
load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

size_t
metrics_render(const struct metrics *m, char *out, size_t cap)
{
	uint64_t sum[M__COUNT] = {0}, lat[METRICS_LAT_BUCKETS + 1] = {0};
	uint64_t lsum = 0, lcount = 0, cum = 0;
	size_t o = 0, last_ok = 0;
	int w, k, live = 0;
	int r;

#define OUT(...)                                                               \
	do {                                                                   \
		r = snprintf(out + o, cap - o, __VA_ARGS__);                   \
		if (r < 0 || (size_t)r >= cap - o)                             \
			goto full;                                             \
		o += (size_t)r;                                                \
	} while (0)

	for (w = 0; w < m->nworkers && w < METRICS_MAX_WORKERS; w++) {
		const struct metrics_slot *s = &m->slot[w];

		if (__atomic_load_n(&s->pid, __ATOMIC_RELAXED))
			live++;
		for (k = 0; k < M__COUNT; k++)
			sum[k] += load(&s->v[k]);
		for (k = 0; k <= METRICS_LAT_BUCKETS; k++)
			lat[k] += load(&s->lat_bucket[k]);
		lsum += load(&s->lat_sum_us);
		lcount += load(&s->lat_count);
	}
	for (k = 0; k < M__COUNT; k++) {
		const struct mdesc *d = &desc[k];

		if (d->help)
			OUT("# HELP %s %s\n# TYPE %s %s\n", d->name, d->help,
			    d->name, d->type);
		if (d->label)
			OUT("%s{%s} %" PRIu64 "\n", d->name, d->label, sum[k]);
		else
			OUT("%s %" PRIu64 "\n", d->name, sum[k]);
		last_ok = o;
	}
	OUT("# HELP hub_workers Live worker processes.\n# TYPE hub_workers "
	    "gauge\nhub_workers %d\n",
	    live);
	OUT("# HELP hub_workers_configured Worker processes the supervisor "
	    "runs.\n# TYPE hub_workers_configured gauge\n"
	    "hub_workers_configured %d\n",
	    m->nworkers);
	OUT("# HELP hub_uplink_latency_seconds QoS 1 uplink latency from frame "
	    "received to broker PUBACK.\n# TYPE hub_uplink_latency_seconds "
	    "histogram\n");
	for (k = 0; k < METRICS_LAT_BUCKETS; k++) {
		cum += lat[k];
		OUT("hub_uplink_latency_seconds_bucket{le=\"%g\"} %" PRIu64
		    "\n",
		    (double)lat_le[k] / 1e6, cum);
	}
	cum += lat[METRICS_LAT_BUCKETS];
	OUT("hub_uplink_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
	    cum);
	OUT("hub_uplink_latency_seconds_sum %.6f\n", (double)lsum / 1e6);
	OUT("hub_uplink_latency_seconds_count %" PRIu64 "\n", lcount);
	return o;
full:
#undef OUT
	return last_ok;
}

/* ---- process metrics ------------------------------------------------- */

/* Seconds since the epoch at boot: /proc/stat's btime. */
static double
boot_time(void)
{
	char line[256];
	double bt = 0;
	FILE *f = fopen("/proc/stat", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "btime ", 6)) {
			bt = strtod(line + 6, NULL);
			break;
		}
	fclose(f);
	return bt;
}

int
metrics_proc_read(pid_t pid, struct metrics_proc *out)
{
	char path[64], buf[1024], *p, *tok, *save = NULL;
	long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	unsigned long long utime = 0, stime = 0, start = 0, rss = 0;
	struct dirent *de;
	struct stat st;
	size_t n;
	FILE *f;
	DIR *d;
	int field;

	memset(out, 0, sizeof(*out));
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the command name may hold spaces and parentheses: skip to the
	 * last ')'; the state is field 3 */
	p = strrchr(buf, ')');
	if (!p || tick <= 0 || page <= 0)
		return -1;
	for (field = 3, tok = strtok_r(p + 1, " ", &save); tok;
	     tok = strtok_r(NULL, " ", &save), field++) {
		if (field == 14)
			utime = strtoull(tok, NULL, 10);
		else if (field == 15)
			stime = strtoull(tok, NULL, 10);
		else if (field == 22)
			start = strtoull(tok, NULL, 10);
		else if (field == 24) {
			rss = strtoull(tok, NULL, 10);
			break;
		}
	}
	if (field != 24)
		return -1;
	out->cpu_seconds = (double)(utime + stime) / (double)tick;
	out->start_time = boot_time() + (double)start / (double)tick;
	out->rss_bytes = rss * (uint64_t)page;

	/* Linux >= 6.2 reports the number of open descriptors as the size of
	 * /proc/PID/fd, counted from the fd bitmap: O(1) where listing the
	 * directory builds a dentry per descriptor (a worker's scrape read
	 * 16 700 of them; __d_lookup was 10 % of a busy worker's profile in
	 * a 100 000-device storm with /metrics read every second). Older
	 * kernels report 0: list it. */
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	if (!stat(path, &st) && st.st_size > 0) {
		out->open_fds = (long)st.st_size;
		d = NULL;
	} else
		d = opendir(path);
	if (d) {
		while ((de = readdir(d)))
			if (de->d_name[0] != '.')
				out->open_fds++;
		closedir(d);
		if (pid == getpid())
			out->open_fds--; /* the directory we were reading */
	}
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
	f = fopen(path, "r");
	if (f) {
		while (fgets(buf, sizeof(buf), f))
			if (!strncmp(buf, "Max open files", 14)) {
				out->max_fds = strtol(buf + 14, NULL, 10);
				break;
			}
		fclose(f);
	}
	return 0;
}

size_t
metrics_render_process(const struct metrics *m, pid_t supervisor, char *out,
		       size_t o, size_t cap)
{
	static const struct {
		const char *name, *help, *type;
	} fam[] = {
	    {"process_resident_memory_bytes", "Resident memory size in bytes.",
	     "gauge"},
	    {"process_cpu_seconds_total",
	     "Total user and system CPU time spent in seconds.", "counter"},
	    {"process_open_fds", "Number of open file descriptors.", "gauge"},
	    {"process_max_fds", "Maximum number of open file descriptors.",
	     "gauge"},
	    {"process_start_time_seconds",
	     "Start time of the process since unix epoch in seconds.", "gauge"},
	};
	struct metrics_proc pr[METRICS_MAX_WORKERS + 1];
	char label[METRICS_MAX_WORKERS + 1][16];
	int ok[METRICS_MAX_WORKERS + 1] = {0};
	size_t last_ok = o;
	int i, k, np = 0, r;

	ok[np] = supervisor > 0 && metrics_proc_read(supervisor, &pr[np]) == 0;
	snprintf(label[np++], sizeof(label[0]), "supervisor");
	for (i = 0; i < m->nworkers && i < METRICS_MAX_WORKERS; i++) {
		pid_t pid = __atomic_load_n(&m->slot[i].pid, __ATOMIC_RELAXED);

		ok[np] = pid > 0 && metrics_proc_read(pid, &pr[np]) == 0;
		snprintf(label[np++], sizeof(label[0]), "%d", i);
	}
#define OUT(...)                                                               \
	do {                                                                   \
		r = snprintf(out + o, cap - o, __VA_ARGS__);                   \
		if (r < 0 || (size_t)r >= cap - o)                             \
			return last_ok;                                        \
		o += (size_t)r;                                                \
	} while (0)
	for (k = 0; k < (int)(sizeof(fam) / sizeof(fam[0])); k++) {
		OUT("# HELP %s %s\n# TYPE %s %s\n", fam[k].name, fam[k].help,
		    fam[k].name, fam[k].type);
		for (i = 0; i < np; i++) {
			if (!ok[i])
				continue;
			switch (k) {
			case 0:
				OUT("%s{worker=\"%s\"} %" PRIu64 "\n",
				    fam[k].name, label[i], pr[i].rss_bytes);
				break;
			case 1:
				OUT("%s{worker=\"%s\"} %.2f\n", fam[k].name,
				    label[i], pr[i].cpu_seconds);
				break;
			case 2:
				OUT("%s{worker=\"%s\"} %ld\n", fam[k].name,
				    label[i], pr[i].open_fds);
				break;
			case 3:
				OUT("%s{worker=\"%s\"} %ld\n", fam[k].name,
				    label[i], pr[i].max_fds);
				break;
			default:
				OUT("%s{worker=\"%s\"} %.2f\n", fam[k].name,
				    label[i], pr[i].start_time);
			}
		}
		last_ok = o;
	}
#undef OUT
	return o;
}

/* ---- sums and history ------------------------------------------------- */

uint64_t
metrics_sum(const struct metrics *m, enum metric k)
{
	uint64_t sum = 0;
	int i;

	for (i = 0; i < m->nworkers && i < METRICS_MAX_WORKERS; i++)
		sum += load(&m->slot[i].v[k]);
	return sum;
}

int
metrics_live(const struct metrics *m)
{
	int i, live = 0;

	for (i = 0; i < m->nworkers && i < METRICS_MAX_WORKERS; i++)
		live += __atomic_load_n(&m->slot[i].pid, __ATOMIC_RELAXED) != 0;
	return live;
}

void
metrics_sample_now(struct metrics *m, int64_t now_ms)
{
	uint64_t n = __atomic_load_n(&m->hist_next, __ATOMIC_RELAXED);
	struct metrics_sample *s = &m->hist[n % METRICS_HISTORY];

	/* readers skip a sample whose ts is 0 while it is rewritten */
	__atomic_store_n(&s->ts_ms, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&s->connections, metrics_sum(m, M_CONNECTIONS),
			 __ATOMIC_RELAXED);
	__atomic_store_n(&s->msg_in, metrics_sum(m, M_MSG_IN),
			 __ATOMIC_RELAXED);
	__atomic_store_n(&s->msg_out, metrics_sum(m, M_MSG_OUT),
			 __ATOMIC_RELAXED);
	__atomic_store_n(&s->ts_ms, now_ms, __ATOMIC_RELEASE);
	__atomic_store_n(&m->hist_next, n + 1, __ATOMIC_RELEASE);
}

int
metrics_history(const struct metrics *m, struct metrics_sample *out)
{
	uint64_t next = __atomic_load_n(&m->hist_next, __ATOMIC_ACQUIRE), i;
	uint64_t first = next > METRICS_HISTORY ? next - METRICS_HISTORY : 0;
	int n = 0;

	for (i = first; i < next; i++) {
		const struct metrics_sample *s = &m->hist[i % METRICS_HISTORY];
		struct metrics_sample c;

		c.ts_ms = __atomic_load_n(&s->ts_ms, __ATOMIC_ACQUIRE);
		c.connections =
		    __atomic_load_n(&s->connections, __ATOMIC_RELAXED);
		c.msg_in = __atomic_load_n(&s->msg_in, __ATOMIC_RELAXED);
		c.msg_out = __atomic_load_n(&s->msg_out, __ATOMIC_RELAXED);
		if (c.ts_ms &&
		    c.ts_ms == __atomic_load_n(&s->ts_ms, __ATOMIC_ACQUIRE))
			out[n++] = c;
	}
	return n;
}
