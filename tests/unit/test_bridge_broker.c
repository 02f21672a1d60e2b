/*
 * test_bridge_broker.c - the bridge against a real mosquitto.
 *
 * Each test starts mosquitto on a free loopback port (config in a mkdtemp
 * directory), runs a bridge against it and watches the broker side with a
 * Paho subscriber of its own:
 *   - a QoS 1 device pub is acked, and the MQTT topic, payload, retain flag
 *     and user properties ("session", "id") are right; statuses retained;
 *     the node's online status and, after bridge_stop, offline;
 *   - BRIDGE_SUB then commands: retained (offline) and live, with the
 *     retained flag right (retain-as-published), session announcements,
 *     BRIDGE_UNSUB;
 *   - kill -9 of the broker in the middle of 2000 QoS 1 messages, restart on
 *     the same port: every message is acked, exactly once;
 *   - MQTT 3.1.1 mode: pub acked, retained command delivered;
 *   - broker gone: QoS 1 held, QoS 0 refused, bridge_stop bounded (BUSY).
 * Waits are bounded: the test's wake callback signals a condition variable
 * and every wait has a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <MQTTAsync.h>

#include "bridge.h"

#define MOSQUITTO "/usr/sbin/mosquitto"

/* ---- clocks and waking ---------------------------------------------- */

/*
 * A deadline of ms on a quiet machine, scaled for a loaded one (an ASan
 * build on a busy 2-core box is many times slower): HUBFIX_SLOW, default
 * 4, as in the integration tests. Deadlines bound waits for conditions;
 * reaching the condition early costs nothing.
 */
static int
T(int ms)
{
	const char *e = getenv("HUBFIX_SLOW");
	double f = e ? strtod(e, NULL) : 4.0;

	if (!(f >= 1.0 && f <= 100.0))
		f = 4.0;
	return (int)(ms * f);
}

static uint64_t
ms_now(void)
{
	return hub_clock_mono_us() / 1000u;
}

struct waker {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int flag;
};

static void
waker_init(struct waker *w)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	w->flag = 0;
}

static void
waker_destroy(struct waker *w)
{
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
}

/* the bridge's wake function: what lws_cancel_service() is in hubd */
static void
wake_fn(void *arg)
{
	struct waker *w = arg;

	pthread_mutex_lock(&w->lock);
	w->flag = 1;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static void
abs_deadline(struct timespec *ts, uint64_t deadline_ms)
{
	ts->tv_sec = (time_t)(deadline_ms / 1000u);
	ts->tv_nsec = (long)(deadline_ms % 1000u) * 1000000L;
}

/* Waits for a wake or the deadline. */
static void
waker_wait(struct waker *w, uint64_t deadline_ms)
{
	struct timespec ts;

	abs_deadline(&ts, deadline_ms);
	pthread_mutex_lock(&w->lock);
	while (!w->flag && ms_now() < deadline_ms)
		if (pthread_cond_timedwait(&w->cond, &w->lock, &ts) ==
		    ETIMEDOUT)
			break;
	w->flag = 0;
	pthread_mutex_unlock(&w->lock);
}

/* The next event of one kind (others are freed), or NULL at the deadline. */
static struct bridge_ev *
wait_ev(struct bridge *b, struct waker *w, enum bridge_ev_kind kind,
	int timeout_ms)
{
	uint64_t deadline = ms_now() + (uint64_t)timeout_ms;
	struct bridge_ev *e;

	for (;;) {
		while ((e = bridge_poll(b)) != NULL) {
			if (e->kind == kind)
				return e;
			bridge_ev_free(e);
		}
		if (ms_now() >= deadline)
			return NULL;
		waker_wait(w, deadline);
	}
}

/* ---- mosquitto -------------------------------------------------------- */

struct broker {
	char dir[64];
	char conf[96];
	int port;
	pid_t pid;
};

/*
 * A loopback port for the broker, below the kernel's ephemeral range
 * (32768 up): no outgoing connection can take it between the pick and
 * mosquitto's bind, nor while the broker is down for a restart on the same
 * port (a Paho reconnect to a closed local port can otherwise connect to
 * itself). A lock file, shared with the integration tests' hubfix.py,
 * keeps other test processes off it; the fd stays open until exit.
 */
static int
free_port(void)
{
	char dir[64], path[96];
	int tries;

	snprintf(dir, sizeof(dir), "/tmp/hubfix-ports-%u", (unsigned)getuid());
	mkdir(dir, 0700);
	srand((unsigned)(getpid() ^ ms_now()));
	for (tries = 0; tries < 2000; tries++) {
		int port = 20000 + rand() % 12001, lock, fd;
		struct sockaddr_in a;

		snprintf(path, sizeof(path), "%s/%d", dir, port);
		lock = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (lock < 0)
			continue;
		if (flock(lock, LOCK_EX | LOCK_NB)) {
			close(lock);
			continue;
		}
		fd = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(fd >= 0);
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_port = htons((uint16_t)port);
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(fd, (struct sockaddr *)&a, sizeof(a))) {
			close(fd);
			close(lock);
			continue;
		}
		close(fd);
		return port; /* lock held until the process exits */
	}
	fail_msg("no free port in 20000..32000");
	return -1;
}

static int
port_open(int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static void
broker_start(struct broker *br)
{
	uint64_t deadline = ms_now() + T(10000);
	char log[96];

	snprintf(log, sizeof(log), "%s/mosquitto.log", br->dir);
	br->pid = fork();
	assert_true(br->pid >= 0);
	if (br->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(MOSQUITTO, "mosquitto", "-c", br->conf, (char *)NULL);
		_exit(127);
	}
	/* ready when the listener accepts; bounded */
	while (!port_open(br->port)) {
		int st;

		assert_int_equal(waitpid(br->pid, &st, WNOHANG), 0);
		assert_true(ms_now() < deadline);
		usleep(5000);
	}
}

static void
broker_new(struct broker *br)
{
	struct passwd *pw = getpwuid(geteuid());
	FILE *f;

	memset(br, 0, sizeof(*br));
	snprintf(br->dir, sizeof(br->dir), "/tmp/test_bridge_XXXXXX");
	assert_non_null(mkdtemp(br->dir));
	snprintf(br->conf, sizeof(br->conf), "%s/mosquitto.conf", br->dir);
	br->port = free_port();
	f = fopen(br->conf, "w");
	assert_non_null(f);
	fprintf(f,
		"listener %d 127.0.0.1\n"
		"allow_anonymous true\n"
		"user %s\n"
		"persistence false\n"
		"max_queued_messages 100000\n"
		"max_inflight_messages 0\n"
		"log_dest stderr\n"
		"log_type error\n"
		"log_type warning\n",
		br->port, pw ? pw->pw_name : "root");
	fclose(f);
	broker_start(br);
}

static void
broker_kill(struct broker *br)
{
	int st;

	if (br->pid <= 0)
		return;
	kill(br->pid, SIGKILL);
	waitpid(br->pid, &st, 0);
	br->pid = 0;
}

static void
broker_free(struct broker *br)
{
	char p[128];

	broker_kill(br);
	snprintf(p, sizeof(p), "%s/mosquitto.log", br->dir);
	unlink(p);
	unlink(br->conf);
	rmdir(br->dir);
}

static void
broker_uri(const struct broker *br, char *out, size_t n)
{
	snprintf(out, n, "tcp://127.0.0.1:%d", br->port);
}

/* ---- a Paho subscriber watching the broker side ----------------------- */

struct rec {
	char topic[128];
	char payload[256];
	int len, retained, qos;
	char session[64], id[16];
	int has_id;
};

struct watcher {
	MQTTAsync cli;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct rec recs[256];
	int n, connected, subscribed;
};

static void
w_conn_ok(void *ctx, MQTTAsync_successData5 *r)
{
	struct watcher *w = ctx;

	pthread_mutex_lock(&w->lock);
	w->connected = 1;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static void
w_sub_ok(void *ctx, MQTTAsync_successData5 *r)
{
	struct watcher *w = ctx;

	pthread_mutex_lock(&w->lock);
	w->subscribed++;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static void
copy_prop(MQTTProperty *p, char *out, size_t n)
{
	size_t l = (size_t)p->value.value.len < n - 1
		       ? (size_t)p->value.value.len
		       : n - 1;

	memcpy(out, p->value.value.data, l);
	out[l] = '\0';
}

static int
w_msg(void *ctx, char *topic, int tl, MQTTAsync_message *m)
{
	struct watcher *w = ctx;
	int i;

	pthread_mutex_lock(&w->lock);
	if (w->n < (int)(sizeof(w->recs) / sizeof(w->recs[0]))) {
		struct rec *r = &w->recs[w->n++];
		size_t l = (size_t)m->payloadlen < sizeof(r->payload) - 1
			       ? (size_t)m->payloadlen
			       : sizeof(r->payload) - 1;

		memset(r, 0, sizeof(*r));
		snprintf(r->topic, sizeof(r->topic), "%s", topic);
		memcpy(r->payload, m->payload, l);
		r->len = m->payloadlen;
		r->retained = m->retained;
		r->qos = m->qos;
		for (i = 0; i < m->properties.count; i++) {
			MQTTProperty *p = &m->properties.array[i];

			if (p->identifier != MQTTPROPERTY_CODE_USER_PROPERTY)
				continue;
			if (p->value.data.len == 7 &&
			    !memcmp(p->value.data.data, "session", 7))
				copy_prop(p, r->session, sizeof(r->session));
			if (p->value.data.len == 2 &&
			    !memcmp(p->value.data.data, "id", 2)) {
				copy_prop(p, r->id, sizeof(r->id));
				r->has_id = 1;
			}
		}
		pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static int
w_wait_flag(struct watcher *w, int *flag, int want, int timeout_ms)
{
	uint64_t deadline = ms_now() + (uint64_t)timeout_ms;
	struct timespec ts;
	int ok;

	abs_deadline(&ts, deadline);
	pthread_mutex_lock(&w->lock);
	while (*flag < want &&
	       pthread_cond_timedwait(&w->cond, &w->lock, &ts) != ETIMEDOUT)
		;
	ok = *flag >= want;
	pthread_mutex_unlock(&w->lock);
	return ok;
}

/* The first record on topic with payload (NULL: any), copied into out. */
static int
w_wait_msg(struct watcher *w, const char *topic, const char *payload,
	   struct rec *out, int timeout_ms)
{
	uint64_t deadline = ms_now() + (uint64_t)timeout_ms;
	struct timespec ts;
	int i, found = 0;

	abs_deadline(&ts, deadline);
	pthread_mutex_lock(&w->lock);
	for (;;) {
		for (i = 0; i < w->n && !found; i++)
			if (!strcmp(w->recs[i].topic, topic) &&
			    (!payload ||
			     !strcmp(w->recs[i].payload, payload))) {
				*out = w->recs[i];
				found = 1;
			}
		if (found || pthread_cond_timedwait(&w->cond, &w->lock, &ts) ==
				 ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&w->lock);
	return found;
}

static void
watcher_start(struct watcher *w, const struct broker *br, const char *filter)
{
	MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
	MQTTAsync_connectOptions cn = MQTTAsync_connectOptions_initializer5;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	pthread_condattr_t ca;
	char uri[64];

	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	broker_uri(br, uri, sizeof(uri));
	assert_int_equal(
	    MQTTAsync_createWithOptions(&w->cli, uri, "test-watcher",
					MQTTCLIENT_PERSISTENCE_NONE, NULL, &co),
	    MQTTASYNC_SUCCESS);
	MQTTAsync_setCallbacks(w->cli, w, NULL, w_msg, NULL);
	cn.cleanstart = 1;
	cn.onSuccess5 = w_conn_ok;
	cn.context = w;
	assert_int_equal(MQTTAsync_connect(w->cli, &cn), MQTTASYNC_SUCCESS);
	assert_true(w_wait_flag(w, &w->connected, 1, T(5000)));
	if (!filter)
		return;
	ro.onSuccess5 = w_sub_ok;
	ro.context = w;
	ro.subscribeOptions.retainAsPublished = 1;
	assert_int_equal(MQTTAsync_subscribe(w->cli, filter, 1, &ro),
			 MQTTASYNC_SUCCESS);
	assert_true(w_wait_flag(w, &w->subscribed, 1, T(5000)));
}

/* Publishes and waits until the broker has it (QoS 1 PUBACK). */
static void
w_publish(struct watcher *w, const char *topic, const char *payload,
	  int retained)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	MQTTAsync_message m = MQTTAsync_message_initializer;

	m.payload = (void *)payload;
	m.payloadlen = (int)strlen(payload);
	m.qos = 1;
	m.retained = retained;
	assert_int_equal(MQTTAsync_sendMessage(w->cli, topic, &m, &ro),
			 MQTTASYNC_SUCCESS);
	assert_int_equal(MQTTAsync_waitForCompletion(w->cli, ro.token, T(5000)),
			 MQTTASYNC_SUCCESS);
}

static void
watcher_stop(struct watcher *w)
{
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;

	d.timeout = 1000;
	MQTTAsync_disconnect(w->cli, &d);
	MQTTAsync_destroy(&w->cli);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
}

/* ---- bridge helpers --------------------------------------------------- */

static struct bridge *
bridge_up(const struct broker *br, struct waker *wk, const char *client_id,
	  int version, int node_status, size_t max_pending, int window)
{
	struct bridge_config cfg;
	struct bridge_ev *e;
	struct bridge *b;
	char uri[64], err[128];

	broker_uri(br, uri, sizeof(uri));
	memset(&cfg, 0, sizeof(cfg));
	cfg.broker = uri;
	cfg.mqtt_version = version;
	cfg.hub_id = "hub1";
	cfg.client_id = client_id;
	cfg.prefix = "devices";
	cfg.node_status = node_status;
	cfg.max_pending = max_pending;
	cfg.window = window;
	b = bridge_new(&cfg, wake_fn, wk, err, sizeof(err));
	if (!b)
		print_error("bridge_new: %s\n", err);
	assert_non_null(b);
	assert_int_equal(bridge_start(b), HUB_OK);
	e = wait_ev(b, wk, BRIDGE_EV_LINK, T(10000));
	assert_non_null(e);
	assert_int_equal(e->up, 1);
	bridge_ev_free(e);
	assert_true(bridge_connected(b));
	return b;
}

static struct bridge_msg *
dev_pub(const char *device, const char *topic, const char *payload, int qos,
	uint64_t sess, uint32_t id, const char *session)
{
	struct bridge_msg *m =
	    bridge_msg_new(BRIDGE_PUB, device, topic, payload, strlen(payload));

	assert_non_null(m);
	m->qos = qos;
	m->sess = sess;
	m->msg_id = id;
	snprintf(m->session, sizeof(m->session), "%s", session);
	return m;
}

static void
submit_ok(struct bridge *b, struct bridge_msg *m)
{
	assert_int_equal(bridge_submit(b, m), HUB_OK);
}

static void
submit_kind(struct bridge *b, enum bridge_kind kind, const char *device)
{
	struct bridge_msg *m = bridge_msg_new(kind, device, NULL, NULL, 0);

	assert_non_null(m);
	submit_ok(b, m);
}

/* ---- tests ------------------------------------------------------------ */

static void
test_pub_ack_and_mapping(void **state)
{
	struct broker br;
	struct watcher w;
	struct waker wk;
	struct bridge *b;
	struct bridge_ev *e;
	struct bridge_msg *m;
	struct bridge_stats st;
	struct rec r;

	broker_new(&br);
	waker_init(&wk);
	watcher_start(&w, &br, "#");
	b = bridge_up(&br, &wk, "hub1-w0", 5, 1, 1000, 100);

	/* the node is online, retained */
	assert_true(
	    w_wait_msg(&w, "hub/nodes/hub1/status", "online", &r, T(5000)));
	assert_int_equal(r.retained, 1);

	submit_ok(
	    b, dev_pub("d1", "telemetry", "{\"t\":21.5}", 1, 42, 7, "s-123"));
	e = wait_ev(b, &wk, BRIDGE_EV_ACK, T(5000));
	assert_non_null(e);
	assert_int_equal(e->sess, 42);
	assert_int_equal(e->msg_id, 7);
	assert_string_equal(e->device, "d1");
	bridge_ev_free(e);

	assert_true(w_wait_msg(&w, "devices/d1/telemetry", NULL, &r, T(5000)));
	assert_string_equal(r.payload, "{\"t\":21.5}");
	assert_int_equal(r.qos, 1);
	assert_int_equal(r.retained, 0);
	assert_string_equal(r.session, "s-123");
	assert_true(r.has_id);
	assert_string_equal(r.id, "7");

	/* QoS 0: session property, no id */
	submit_ok(b, dev_pub("d1", "a/b", "raw text", 0, 42, 0, "s-123"));
	assert_true(w_wait_msg(&w, "devices/d1/a/b", NULL, &r, T(5000)));
	assert_string_equal(r.payload, "raw text");
	assert_string_equal(r.session, "s-123");
	assert_false(r.has_id);

	/* status: retained QoS 1 on prefix/device/status */
	m = bridge_msg_new(BRIDGE_STATUS, "d1", NULL, "{\"online\":true}", 15);
	submit_ok(b, m);
	assert_true(w_wait_msg(&w, "devices/d1/status", NULL, &r, T(5000)));
	assert_string_equal(r.payload, "{\"online\":true}");
	assert_int_equal(r.retained, 1);
	assert_int_equal(r.qos, 1);

	/* announcement: hub/sessions/<device>, retained (a worker that
	 * subscribes or reconnects later still learns of the newest session) */
	m = bridge_msg_new(BRIDGE_ANNOUNCE, "d1", NULL, "{\"session\":\"s\"}",
			   15);
	submit_ok(b, m);
	assert_true(w_wait_msg(&w, "hub/sessions/d1", NULL, &r, T(5000)));
	assert_int_equal(r.retained, 1);

	bridge_get_stats(b, &st);
	assert_int_equal(st.connected, 1);
	assert_true(st.sent >= 5);
	assert_int_equal(st.dropped_qos0, 0);

	/* stop: drained, then the node says offline */
	assert_int_equal(bridge_stop(b, T(5000)), HUB_OK);
	assert_true(
	    w_wait_msg(&w, "hub/nodes/hub1/status", "offline", &r, T(5000)));
	assert_int_equal(r.retained, 1);
	assert_false(bridge_connected(b));
	assert_int_equal(
	    bridge_submit(b, m = dev_pub("d1", "t", "1", 1, 1, 1, "s")),
	    HUB_ERR_CLOSED);
	bridge_msg_free(m);
	bridge_free(b);
	watcher_stop(&w);
	waker_destroy(&wk);
	broker_free(&br);
}

static void
test_commands(void **state)
{
	struct broker br;
	struct watcher w;
	struct waker wk;
	struct bridge *b;
	struct bridge_ev *e;
	struct bridge_msg *m;
	struct rec r;

	broker_new(&br);
	waker_init(&wk);
	watcher_start(&w, &br, "devices/+/cmd/#");
	b = bridge_up(&br, &wk, "hub1-w1", 5, 0, 1000, 100);

	/* an offline command waits, retained, before the device comes */
	w_publish(&w, "devices/d2/cmd/offline", "{\"do\":1}", 1);
	submit_kind(b, BRIDGE_SUB, "d2");
	e = wait_ev(b, &wk, BRIDGE_EV_CMD, T(5000));
	assert_non_null(e);
	assert_string_equal(e->device, "d2");
	assert_string_equal(e->topic, "cmd/offline");
	assert_int_equal(e->len, 8);
	assert_memory_equal(e->payload, "{\"do\":1}", 8);
	assert_int_equal(((char *)e->payload)[e->len], '\0');
	assert_int_equal(e->retained, 1);
	assert_int_equal(e->qos, 1);
	bridge_ev_free(e);

	/* live, not retained */
	w_publish(&w, "devices/d2/cmd/live", "go", 0);
	e = wait_ev(b, &wk, BRIDGE_EV_CMD, T(5000));
	assert_non_null(e);
	assert_string_equal(e->topic, "cmd/live");
	assert_int_equal(e->retained, 0);
	bridge_ev_free(e);

	/* live and retained: retain-as-published keeps the flag */
	w_publish(&w, "devices/d2/cmd/live2", "x", 1);
	e = wait_ev(b, &wk, BRIDGE_EV_CMD, T(5000));
	assert_non_null(e);
	assert_string_equal(e->topic, "cmd/live2");
	assert_int_equal(e->retained, 1);
	bridge_ev_free(e);

	/* the device acked the offline command: clear it (no echo to us) */
	m = bridge_msg_new(BRIDGE_CLEAR, "d2", "cmd/offline", NULL, 0);
	submit_ok(b, m);
	assert_true(w_wait_msg(&w, "devices/d2/cmd/offline", "", &r, T(5000)));
	assert_int_equal(r.len, 0);
	assert_int_equal(r.retained, 1);

	/* announcements of d2 are not listened to before our own one was
	 * acked: anything delivered later is newer in the broker's order */
	w_publish(&w, "hub/sessions/d2", "{\"session\":\"early\"}", 0);
	e = wait_ev(b, &wk, BRIDGE_EV_SESSION, 300);
	assert_null(e);
	m = bridge_msg_new(BRIDGE_ANNOUNCE, "d2", NULL,
			   "{\"session\":\"mine\"}", 18);
	assert_non_null(m);
	m->qos = 1;
	submit_ok(b, m);
	/* then a session announcement from another worker: published until
	 * the subscription (which follows the ack) is in place */
	{
		uint64_t deadline = ms_now() + (uint64_t)T(5000);

		do {
			w_publish(&w, "hub/sessions/d2",
				  "{\"session\":\"other\"}", 0);
			e = wait_ev(b, &wk, BRIDGE_EV_SESSION, 200);
			if (e && (e->len != 19 ||
				  memcmp(e->payload, "{\"session\":\"other\"}",
					 19))) {
				bridge_ev_free(e); /* our own, retained */
				e = NULL;
			}
		} while (!e && ms_now() < deadline);
	}
	assert_non_null(e);
	assert_string_equal(e->device, "d2");
	assert_memory_equal(e->payload, "{\"session\":\"other\"}", 19);
	bridge_ev_free(e);

	/* UNSUB d2, then SUB d3 (the broker handles them in order: once d3's
	 * retained command arrives, d2 is unsubscribed) */
	w_publish(&w, "devices/d3/cmd/hello", "3", 1);
	submit_kind(b, BRIDGE_UNSUB, "d2");
	submit_kind(b, BRIDGE_SUB, "d3");
	e = wait_ev(b, &wk, BRIDGE_EV_CMD, T(5000));
	assert_non_null(e);
	assert_string_equal(e->device, "d3");
	assert_int_equal(e->retained, 1);
	bridge_ev_free(e);
	w_publish(&w, "devices/d2/cmd/late", "no", 0);
	w_publish(&w, "devices/d3/cmd/after", "yes", 0);
	e = wait_ev(b, &wk, BRIDGE_EV_CMD, T(5000));
	assert_non_null(e);
	assert_string_equal(e->device, "d3"); /* d2's never came */
	assert_string_equal(e->topic, "cmd/after");
	bridge_ev_free(e);

	assert_int_equal(bridge_stop(b, T(2000)), HUB_OK);
	bridge_free(b);
	/* clean the retained messages of this broker run */
	w_publish(&w, "devices/d2/cmd/live2", "", 1);
	w_publish(&w, "devices/d3/cmd/hello", "", 1);
	watcher_stop(&w);
	waker_destroy(&wk);
	broker_free(&br);
}

#define KILL_N 2000

static void
test_kill9_resend(void **state)
{
	static unsigned char acks[KILL_N + 1];
	struct broker br;
	struct waker wk;
	struct bridge *b;
	struct bridge_stats st;
	int i, acked = 0, dup = 0, at_kill = -1, restarted = 0, saw_down = 0;
	uint64_t deadline, t_kill = 0, t_restart = 0, t_done = 0, t_up = 0;
	int up_acked = 0;

	memset(acks, 0, sizeof(acks));
	broker_new(&br);
	waker_init(&wk);
	b = bridge_up(&br, &wk, "hub1-w2", 5, 1, 2 * KILL_N, 200);

	for (i = 1; i <= KILL_N; i++) {
		char p[32];

		snprintf(p, sizeof(p), "{\"n\":%d}", i);
		submit_ok(b, dev_pub("dk", "seq", p, 1, 9, (uint32_t)i, "sk"));
	}
	deadline = ms_now() + T(60000);
	while (acked < KILL_N && ms_now() < deadline) {
		struct bridge_ev *e;

		while ((e = bridge_poll(b)) != NULL) {
			if (e->kind == BRIDGE_EV_ACK) {
				assert_true(e->msg_id >= 1 &&
					    e->msg_id <= KILL_N);
				if (acks[e->msg_id]++)
					dup++;
				else
					acked++;
			} else if (e->kind == BRIDGE_EV_LINK && !e->up) {
				saw_down = 1;
			} else if (e->kind == BRIDGE_EV_LINK && e->up) {
				t_up = ms_now();
				up_acked = acked;
			}
			assert_int_not_equal(e->kind, BRIDGE_EV_NACK);
			bridge_ev_free(e);
		}
		if (at_kill < 0 && acked >= 200) {
			broker_kill(&br); /* kill -9 mid-stream */
			at_kill = acked;
			t_kill = ms_now();
		}
		if (at_kill >= 0 && !restarted && saw_down) {
			broker_start(&br); /* same port */
			restarted = 1;
			t_restart = ms_now();
		}
		if (acked < KILL_N)
			waker_wait(&wk, deadline);
	}
	t_done = ms_now();
	bridge_get_stats(b, &st);
	print_message("kill -9 test: %d msgs, acked before kill %d, acked "
		      "total %d, duplicate acks %d, resent %llu, connects "
		      "%llu, down->restart %llu ms, restart->link up %llu ms, "
		      "link up->all acked %llu ms (%d acked before up)\n",
		      KILL_N, at_kill, acked, dup,
		      (unsigned long long)st.resent,
		      (unsigned long long)st.connects,
		      (unsigned long long)(t_restart - t_kill),
		      (unsigned long long)(t_up - t_restart),
		      (unsigned long long)(t_done - t_up), up_acked);
	assert_true(restarted);
	assert_true(at_kill < KILL_N);
	assert_int_equal(acked, KILL_N);
	assert_int_equal(dup, 0);
	for (i = 1; i <= KILL_N; i++)
		assert_int_equal(acks[i], 1);
	assert_int_equal(st.pending, 0);
	assert_true(st.connects >= 2);

	assert_int_equal(bridge_stop(b, T(5000)), HUB_OK);
	bridge_free(b);
	waker_destroy(&wk);
	broker_free(&br);
}

/* Broker gone: QoS 1 is held, QoS 0 refused, stop is bounded and BUSY. */
static void
test_stop_while_down(void **state)
{
	struct broker br;
	struct waker wk;
	struct bridge *b;
	struct bridge_ev *e;
	struct bridge_msg *m;
	struct bridge_stats st;
	uint64_t t0;

	broker_new(&br);
	waker_init(&wk);
	b = bridge_up(&br, &wk, "hub1-w4", 5, 0, 10, 10);
	broker_kill(&br);
	e = wait_ev(b, &wk, BRIDGE_EV_LINK, T(10000));
	assert_non_null(e);
	assert_int_equal(e->up, 0);
	bridge_ev_free(e);
	assert_false(bridge_connected(b));

	submit_ok(b, dev_pub("d5", "t", "1", 1, 1, 1, "s5"));
	m = dev_pub("d5", "t", "0", 0, 1, 0, "s5");
	assert_int_equal(bridge_submit(b, m), HUB_ERR_BROKER);
	bridge_msg_free(m);
	bridge_get_stats(b, &st);
	assert_int_equal(st.dropped_qos0, 1);
	assert_int_equal(st.pending, 1);

	t0 = ms_now();
	assert_int_equal(bridge_stop(b, 300), HUB_ERR_BUSY);
	assert_true(ms_now() - t0 < (uint64_t)T(3000));
	bridge_free(b); /* frees the unsent message */
	waker_destroy(&wk);
	broker_free(&br);
}

static void
test_mqtt3(void **state)
{
	struct broker br;
	struct watcher w;
	struct waker wk;
	struct bridge *b;
	struct bridge_ev *e;
	struct rec r;

	broker_new(&br);
	waker_init(&wk);
	watcher_start(&w, &br, "devices/#");
	b = bridge_up(&br, &wk, "hub1-w3", 3, 1, 100, 50);

	submit_ok(b, dev_pub("d4", "telemetry", "1", 1, 5, 11, "s4"));
	e = wait_ev(b, &wk, BRIDGE_EV_ACK, T(5000));
	assert_non_null(e);
	assert_int_equal(e->msg_id, 11);
	bridge_ev_free(e);
	assert_true(w_wait_msg(&w, "devices/d4/telemetry", NULL, &r, T(5000)));
	assert_string_equal(r.payload, "1");
	assert_false(r.has_id); /* no properties in MQTT 3 */

	w_publish(&w, "devices/d4/cmd/x", "y", 1);
	submit_kind(b, BRIDGE_SUB, "d4");
	e = wait_ev(b, &wk, BRIDGE_EV_CMD, T(5000));
	assert_non_null(e);
	assert_string_equal(e->topic, "cmd/x");
	assert_int_equal(e->retained, 1);
	bridge_ev_free(e);

	assert_int_equal(bridge_stop(b, T(2000)), HUB_OK);
	bridge_free(b);
	w_publish(&w, "devices/d4/cmd/x", "", 1);
	watcher_stop(&w);
	waker_destroy(&wk);
	broker_free(&br);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pub_ack_and_mapping),
	    cmocka_unit_test(test_commands),
	    cmocka_unit_test(test_kill9_resend),
	    cmocka_unit_test(test_mqtt3),
	    cmocka_unit_test(test_stop_while_down),
	};

	if (access(MOSQUITTO, X_OK) != 0) {
		fprintf(stderr, "%s not found: skipped\n", MOSQUITTO);
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
