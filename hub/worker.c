/*
 * worker.c - one hubd worker process: its setup (worker_init, bridge_open,
 * writer_open, context_open), the libev loop that lws runs on (the service
 * thread) with its tick (heartbeat, sampled gauges, ticket keys), SIGHUP,
 * the SIGTERM drain, and the teardown. The bridge and registry writer
 * threads are started here and stopped here.
 *
 * Threads: this file runs on the worker's main thread, which is the lws
 * service thread. wake() is called from the bridge and writer threads; it
 * only calls lws_cancel_service(), the one lws call allowed off-thread.
 */
#include "hub_int.h"
#include "hub_log.h"
#include "tls.h"

#include <ev.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define TICK_S 0.1

static struct worker *the_worker; /* for the libev watchers only */

/* Any thread: the bridge's, Paho's and the writer's. */
static void
wake(void *arg)
{
	struct worker *w = arg;

	if (__atomic_exchange_n(&w->wake_pending, 1, __ATOMIC_ACQ_REL))
		return;
	pthread_mutex_lock(&w->ctx_lock);
	if (w->ctx)
		lws_cancel_service(w->ctx);
	pthread_mutex_unlock(&w->ctx_lock);
}

/* Service thread: the threads that wake us may still run. */
static void
destroy_context(struct worker *w)
{
	struct lws_context *ctx;

	HUB_ASSERT_THREAD(&w->service);
	pthread_mutex_lock(&w->ctx_lock);
	ctx = w->ctx;
	w->ctx = NULL;
	pthread_mutex_unlock(&w->ctx_lock);
	if (ctx)
		lws_context_destroy(ctx);
}

/*
 * rx_buffer_size is allocated for every connection at the upgrade (lws's
 * ws->rx_ubuf) and held while it lives, idle or not: 1024 instead of 4096
 * took an idle ws device from 6.7 to 3.8 KiB (tools/bench idle, 5000
 * devices). Larger messages arrive in 1 KiB pieces that uplink.c already
 * reassembles. tx_packet_size is set on its own, so writes are not cut to
 * the receive size.
 */
static const struct lws_protocols device_protocols[] = {
    {"hub.v1", hub__device_callback, sizeof(struct sess), 1024, 0, NULL, 16384},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static const struct lws_protocols http_protocols[] = {
    {"http", hub__http_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static void
begin_drain(struct worker *w)
{
	HUB_ASSERT_THREAD(&w->service);
	if (w->draining)
		return;
	w->draining = 1;
	w->drain_start_ms = hub_clock_mono_us() / 1000;
	w->drain_total = w->nsessions;
	w->drain_closed = 0;
	hub_log(HUB_LOG_INFO, "HUB-DRAIN", "closing %d sessions over %d s",
		w->nsessions, w->conf->drain);
}

static void
on_signal(struct ev_loop *loop, ev_signal *sw, int revents)
{
	(void)loop;
	(void)revents;
	(void)sw;
	begin_drain(the_worker);
}

/*
 * SIGHUP: the log level from the configuration, and the TLS certificate
 * and key re-read from their files into the device vhost in place (lws
 * swaps them in its SSL context: connections accepted from then on get the
 * new pair; those accepted before, handshake in flight or not, keep the old
 * one, which patches/lws-mbedtls-cert-reload-inflight.patch keeps alive
 * until they are gone; live sessions are untouched). A pair that does not
 * load is refused and the old one kept.
 */
static void
on_hup(struct ev_loop *loop, ev_signal *sw, int revents)
{
	struct worker *w = the_worker;
	struct conf next;
	char why[1400];

	(void)loop;
	(void)sw;
	(void)revents;
	if (conf_load(&next, w->argc, w->argv, why, sizeof(why)) == HUB_OK) {
		hub_log_set_level((enum hub_log_level)next.log_level);
		lws_set_log_level(next.log_level >= 3
				      ? LLL_ERR | LLL_WARN | LLL_NOTICE
				      : LLL_ERR,
				  hub_log_lws);
	}
	if (w->conf->no_tls)
		return;
	if (hub__tls_pair_ok(w->conf->tls_cert, w->conf->tls_key, why,
			     sizeof(why))) {
		hub_log(HUB_LOG_ERR, "HUB-TLS-RELOAD",
			"kept the current certificate: %s", why);
		return;
	}
	lws_tls_cert_updated(w->ctx, w->conf->tls_cert, w->conf->tls_key, NULL,
			     0, NULL, 0);
	hub_log(HUB_LOG_INFO, "HUB-TLS-RELOAD", "certificate %s reloaded",
		w->conf->tls_cert);
}

/*
 * Gives the heap pages that churn has freed back to the system, every 30 s
 * once the number of sessions has fallen since the last time: glibc keeps
 * them otherwise (the churn soak's workers grew +224 KiB of RSS over 81,000
 * sessions of a 10-minute release run while SQLite's heap grew +4 KiB;
 * docs/operations.md "Resources under churn"). malloc_trim(0) walks only the
 * free chunks of every arena, so its cost follows what was freed, not what
 * is held.
 */
static void
trim_heap(struct worker *w, unsigned ticks)
{
#ifdef __GLIBC__
	static int peak; /* sessions, highest since the last trim */

	if (w->nsessions > peak)
		peak = w->nsessions;
	if (ticks % 300 || w->nsessions >= peak)
		return;
	malloc_trim(0);
	peak = w->nsessions;
#else
	(void)w;
	(void)ticks;
#endif
}

/*
 * Lets glibc keep up to 1 MiB of freed heap at the top of an arena instead
 * of returning it on every large free. By default a free that leaves more
 * than 128 KiB at the top of a thread's arena gives it back at once
 * (madvise, a TLB flush on every core), and the next transaction faults
 * the pages in again: the registry writer's SQLite savepoints did this on
 * every session open and close. Setting the threshold stops glibc's dynamic
 * adjustment of it and of the mmap threshold, which is fixed with it: an
 * allocation up to 1 MiB comes from the arenas, as glibc would allow after
 * the first such free anyway. What this keeps is bounded, 1 MiB per arena
 * (malloc_trim() in trim_heap() does not shrink a thread arena's top); 8 MiB
 * did as well in the measurement below but could keep up to 8 MiB per
 * thread arena for good.
 * Measured (one worker on one core, 3000 devices reconnecting with TLS 1.2
 * tickets, then closing; perf stat on the worker, per device): 2.0 madvise
 * calls and 6.0-7.3 page faults before, 0.00 and 0.00-0.09 after; worker
 * CPU per reconnect and close 0.52 -> 0.49 ms (means of 14 interleaved
 * cycles, a noisy box).
 */
static void
heap_tune(void)
{
#ifdef __GLIBC__
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 20);
#endif
}

/*
 * Adds what a bridge counter gained since the last sample. The slot in
 * shared memory outlives the worker process; the bridge's counters start
 * at 0 in each new one, so copying them would make the totals go back.
 */
static void
add_delta(struct worker *w, enum metric k, uint64_t now, uint64_t *seen)
{
	if (now > *seen)
		metrics_add(w->m, k, now - *seen);
	*seen = now;
}

void
hub__sample_gauges(struct worker *w)
{
	struct bridge_stats st;

	HUB_ASSERT_THREAD(&w->service);
	bridge_get_stats(w->bridge, &st);
	metrics_set(w->m, M_BRIDGE_PENDING, st.pending);
	metrics_set(w->m, M_BROKER_CONNECTED, (uint64_t) !!st.connected);
	metrics_set(w->m, M_WRITER_QUEUE, writer_queue_len(w->writer));
	metrics_set(w->m, M_DOWNLINK_QUEUED, w->out_bytes);
	add_delta(w, M_BRIDGE_SENT, st.sent, &w->seen.sent);
	add_delta(w, M_BRIDGE_ACKED, st.acked, &w->seen.acked);
	add_delta(w, M_BRIDGE_RESENT, st.resent, &w->seen.resent);
	add_delta(w, M_BRIDGE_CONNECTS, st.connects, &w->seen.connects);
	add_delta(w, M_CMDS_REFUSED, st.cmds_dropped, &w->seen.cmds_dropped);
}

static void
on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = the_worker;
	static unsigned ticks;
	uint64_t now;

	(void)t;
	(void)revents;
	if (++ticks % 10 == 0) {
		hub__sample_gauges(w);
		metrics_set(w->m, M_REGISTRY_MEMORY, registry_memory_used());
		if (hub_tls_tick(w->tls, (int64_t)time(NULL)) != HUB_OK)
			hub_log(HUB_LOG_ERR, "HUB-TLS-TICKET",
				"ticket key rotation failed; new tickets use "
				"the old key");
	}
	trim_heap(w, ticks);
	now = hub_clock_mono_us() / 1000;
	hub__heartbeat_step(w, now);
	if (!w->draining)
		return;
	hub__drain_step(w);
	/* all closed, or the close handshakes have had 5 s past the drain */
	if (w->nsessions == 0 ||
	    now - w->drain_start_ms > (uint64_t)w->conf->drain * 1000 + 5000)
		ev_break(loop, EVBREAK_ALL);
}

static struct lws_vhost *
make_vhost(struct worker *w, const char *name, const char *host, int port,
	   const struct lws_protocols *protocols, int tls)
{
	const struct conf *c = w->conf;
	struct lws_context_creation_info info;
	static lws_retry_bo_t retry;

	memset(&info, 0, sizeof(info));
	info.vhost_name = name;
	info.port = port;
	info.iface = strcmp(host, "0.0.0.0") ? host : NULL;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_ALLOW_LISTEN_SHARE |
		       LWS_SERVER_OPTION_DISABLE_IPV6;
	if (tls) {
		/* TLS 1.2 minimum, 1.3 preferred, ECDHE + AEAD suites only,
		 * server group order, session tickets (keys in w->tls): our
		 * mbedTLS configuration and lws patches, nothing to set here.
		 * The vhost's name plays no part in SNI: our lws patch keeps a
		 * connection on the vhost that accepted it whatever name the
		 * client sends (lws would otherwise re-select it and, with
		 * --device-ca, require a client certificate). */
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = c->tls_cert;
		info.ssl_private_key_filepath = c->tls_key;
		if (c->device_ca[0]) {
			/* asks for a client certificate; lws+mbedTLS makes it
			 * optional, auth.c checks the result itself */
			info.ssl_ca_filepath = c->device_ca;
			info.options |=
			    LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
		}
	}
	/* no lws validity timers (a policy with no hangup arms none; without
	 * a policy lws would use its default of 300/310 s): heartbeat.c pings
	 * and cuts idle sessions, without a timer per connection */
	memset(&retry, 0, sizeof(retry));
	info.retry_and_idle_policy = &retry;
	/* --handshake-timeout: the HTTP request must be complete in time
	 * (the TLS handshake's share is the context's timeout_secs) */
	info.timeout_secs_ah_idle = c->handshake_timeout;
	info.keepalive_timeout = 10;
	return lws_create_vhost(w->ctx, &info);
}

/*
 * The worker's own state: limits, the device map, fleet keys. 0, or -1
 * logged.
 */
static int
worker_init(struct worker *w, struct authlimit *authlimit)
{
	const struct conf *c = w->conf;
	char tag[16], err[256];

	metrics_reset_gauges(w->m);
	__atomic_store_n(&w->m->pid, getpid(), __ATOMIC_RELAXED);
	snprintf(tag, sizeof(tag), "w%d", w->index);
	hub_log_set_tag(tag);
	w->max_sessions = (c->max_conns + w->nworkers - 1) / w->nworkers;
	if (getrandom(&w->session_salt, sizeof(w->session_salt), 0) < 0)
		w->session_salt = (uint32_t)getpid();
	w->authlimit = authlimit;
	w->pending_per_addr =
	    pendlimit_new(8192, (unsigned)c->max_pending_per_addr);
	/* validated by conf_load */
	proto_cidrs_parse(c->trusted_proxies, w->proxies, CONF_PROXIES_MAX,
			  &w->nproxies);
	w->upconf.rate = (uint32_t)c->rate;
	w->upconf.rate_bytes = (uint64_t)c->rate_bytes;
	w->upconf.burst =
	    (uint64_t)(c->rate_bytes > c->max_frame ? c->rate_bytes
						    : c->max_frame);
	if (!w->authlimit || !w->pending_per_addr ||
	    hub__map_init(w, (size_t)w->max_sessions)) {
		hub_log(HUB_LOG_ERR, "HUB-START", "out of memory");
		return -1;
	}
	if (hub__fleet_init(w, err, sizeof(err))) {
		hub_log(HUB_LOG_ERR, "HUB-START", "%s", err);
		return -1;
	}
	return 0;
}

/* The MQTT bridge (its thread starts later): 0, or -1 logged. */
static int
bridge_open(struct worker *w)
{
	const struct conf *c = w->conf;
	struct bridge_config bc;
	char client_id[96], err[256];

	memset(&bc, 0, sizeof(bc));
	bc.broker = c->broker;
	bc.user = c->broker_user[0] ? c->broker_user : NULL;
	bc.password = c->broker_password[0] ? c->broker_password : NULL;
	bc.mqtt_version = c->mqtt_version;
	bc.hub_id = c->hub_id;
	snprintf(client_id, sizeof(client_id), "%s-w%d", c->hub_id, w->index);
	bc.client_id = client_id; /* copied by bridge_new */
	bc.prefix = c->prefix;
	bc.node_status = w->index == 0;
	bc.fleet = c->token_key[0] != '\0';
	bc.group_prefix = c->group_prefix;
	bc.fleet_prefix = c->fleet_prefix;
	bc.max_pending = c->bridge_buffer / (size_t)w->nworkers + 1;
	bc.window = c->bridge_window;
	bc.max_cmd = SESS_OUTQ_BYTES / 2; /* what a session's queue can take */
	w->bridge = bridge_new(&bc, wake, w, err, sizeof(err));
	if (!w->bridge) {
		hub_log(HUB_LOG_ERR, "HUB-START", "bridge: %s", err);
		return -1;
	}
	return 0;
}

/* The registry writer (its thread starts later) and the first credentials
 * snapshot: 0, or -1 logged. */
static int
writer_open(struct worker *w)
{
	const struct conf *c = w->conf;
	struct writer_config wc;
	unsigned repaired = 0;
	char err[256];

	memset(&wc, 0, sizeof(wc));
	wc.db = c->db;
	wc.hub_id = c->hub_id;
	wc.prefix = c->prefix;
	wc.worker = w->index;
	wc.nworkers = w->nworkers;
	wc.events_retention = c->events_retention;
	wc.m = w->m;
	wc.queue_cap = (size_t)w->max_sessions * 3 + 65536;
	w->writer =
	    writer_new(&wc, w->bridge, wake, w, err, sizeof(err), &repaired);
	if (!w->writer) {
		hub_log(HUB_LOG_ERR, "HUB-START", "registry %s: %s", c->db,
			err);
		return -1;
	}
	if (repaired)
		hub_log(HUB_LOG_INFO, "HUB-REPAIR",
			"closed %u sessions left open by a previous run "
			"(hub_restart)",
			repaired);
	w->creds = writer_take_creds(w->writer);
	metrics_set(w->m, M_DEVICES_KNOWN, registry_creds_count(w->creds));
	metrics_set(w->m, M_REGISTRY_OPEN, 1);
	return 0;
}

/*
 * The lws context on the libev loop, the ticket keys, the device and ops
 * vhosts and their protocols' init. 0, or -1 logged.
 */
static int
context_open(struct worker *w, struct ev_loop *loop)
{
	const struct conf *c = w->conf;
	struct lws_context_creation_info info;
	void *foreign[1];

	foreign[0] = loop;
	memset(&info, 0, sizeof(info));
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
		       LWS_SERVER_OPTION_LIBEV |
		       LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.foreign_loops = foreign;
	info.user = w;
	info.count_threads = 1;
	info.timeout_secs = (unsigned)c->handshake_timeout; /* TLS accept */
	w->ctx = lws_create_context(&info);
	if (!w->ctx) {
		hub_log(HUB_LOG_ERR, "HUB-START", "lws context failed");
		return -1;
	}
	if (!c->no_tls && hub_tls_new(c->ticket_secret, c->ticket_secret_len,
				      (int64_t)time(NULL), &w->tls) != HUB_OK) {
		hub_log(HUB_LOG_ERR, "HUB-START", "TLS session tickets failed");
		return -1;
	}
	if (!make_vhost(w, "devices", c->listen_host, c->listen_port,
			device_protocols, !c->no_tls)) {
		hub_log(HUB_LOG_ERR, "HUB-START",
			"cannot listen on %s:%d (or TLS files unusable)",
			c->listen_host, c->listen_port);
		return -1;
	}
	if (!make_vhost(w, "ops", c->http_host, c->http_port, http_protocols,
			0)) {
		hub_log(HUB_LOG_ERR, "HUB-START", "cannot listen on %s:%d",
			c->http_host, c->http_port);
		return -1;
	}
	/* PROTOCOL_INIT of the vhosts' protocols (the ops listener starts its
	 * registry reader there): on a foreign loop lws would defer it */
	if (lws_protocol_init(w->ctx)) {
		hub_log(HUB_LOG_ERR, "HUB-START", "protocol init failed");
		return -1;
	}
	return 0;
}

int
hub__worker_run(const struct conf *c, int index, int nworkers,
		struct metrics *metrics, int ready_fd, int argc, char **argv,
		struct authlimit *authlimit)
{
	struct ev_loop *loop;
	ev_signal sig_term, sig_int, sig_hup;
	ev_timer tick;
	struct worker w;
	int rc = 1;

	memset(&w, 0, sizeof(w));
	heap_tune(); /* before this worker starts its threads */
	/* this thread is the service thread from here on */
	hub_thread_claim(&w.service, "service");
	pthread_mutex_init(&w.ctx_lock, NULL);
	the_worker = &w;
	w.conf = c;
	w.index = index;
	w.nworkers = nworkers;
	w.metrics = metrics;
	w.argc = argc;
	w.argv = argv;
	w.m = &metrics->slot[index];
	if (worker_init(&w, authlimit) || bridge_open(&w) || writer_open(&w))
		goto out;
	loop = ev_default_loop(EVFLAG_AUTO | EVBACKEND_EPOLL);
	if (!loop) {
		hub_log(HUB_LOG_ERR, "HUB-START", "libev: no loop");
		goto out;
	}
	if (w.nproxies && !(w.proxyproto = hub__proxyproto_new(&w, loop))) {
		hub_log(HUB_LOG_ERR, "HUB-START", "out of memory");
		goto out;
	}
	if (context_open(&w, loop))
		goto out;
	if (writer_start(w.writer) || bridge_start(w.bridge)) {
		hub_log(HUB_LOG_ERR, "HUB-START", "cannot start threads");
		goto out;
	}

	ev_signal_init(&sig_term, on_signal, SIGTERM);
	ev_signal_start(loop, &sig_term);
	ev_signal_init(&sig_int, on_signal, SIGINT);
	ev_signal_start(loop, &sig_int);
	ev_signal_init(&sig_hup, on_hup, SIGHUP);
	ev_signal_start(loop, &sig_hup);
	ev_timer_init(&tick, on_tick, TICK_S, TICK_S);
	ev_timer_start(loop, &tick);
	hub_log(
	    HUB_LOG_INFO, "HUB-READY",
	    "worker %d listening on %s:%d (%s), %zu devices, max %d sessions",
	    index, c->listen_host, c->listen_port, c->no_tls ? "ws" : "wss",
	    registry_creds_count(w.creds), w.max_sessions);
	/* the supervisor counts a worker that dies from here on as a crash,
	 * before it as a start error */
	if (write(ready_fd, "R", 1) != 1)
		hub_log(HUB_LOG_WARN, "HUB-START", "ready pipe: lost");
	close(ready_fd);
	ready_fd = -1;

	ev_run(loop, 0);

	/* drained (or timed out): whatever is left closes as "shutdown" */
	w.draining = 1;
	ev_timer_stop(loop, &tick);
	ev_signal_stop(loop, &sig_term);
	ev_signal_stop(loop, &sig_int);
	ev_signal_stop(loop, &sig_hup);
	destroy_context(&w);
	writer_stop(w.writer); /* every offline row written, statuses queued */
	if (bridge_stop(w.bridge, 10000) != HUB_OK)
		hub_log(HUB_LOG_ERR, "HUB-FLUSH",
			"broker did not take every message before exit "
			"(statuses stay in the registry's outbox and are "
			"published at the next start)");
	hub__sample_gauges(&w); /* the counters' last deltas */
	hub_log(HUB_LOG_INFO, "HUB-EXIT", "worker %d drained", index);
	rc = 0;
out:
	if (ready_fd >= 0)
		close(ready_fd);
	hub__proxyproto_free(w.proxyproto); /* headers still being read */
	w.proxyproto = NULL;
	destroy_context(&w);
	hub_tls_free(w.tls); /* after every TLS connection is gone */
	if (w.bridge && rc)
		bridge_stop(w.bridge, 0);
	writer_free(w.writer);
	bridge_free(w.bridge);
	registry_creds_free(w.creds);
	hub__fleet_free(&w);
	hub__groups_free(&w);
	pendlimit_free(w.pending_per_addr);
	hub__map_free(&w);
	metrics_set(w.m, M_REGISTRY_OPEN, 0);
	metrics_set(w.m, M_BROKER_CONNECTED, 0);
	metrics_set(w.m, M_CONNECTIONS, 0);
	return rc;
}
