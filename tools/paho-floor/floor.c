/*
 * floor.c - per-message CPU floor of publishing QoS 0 MQTT messages.
 *
 * Built three ways:
 *   -DUSE_ASYNC  (link -lpaho-mqtt3as): design A, MQTTAsync_sendMessage
 *   -DUSE_SYNC   (link -lpaho-mqtt3c):  design B, MQTTClient_publishMessage
 *   (neither):                          designs C/D, raw socket, and "idle"
 *
 * usage: floor MODE RATE SECS PORT [pace] [opts]
 *   MODE : async | sync | raw | rawb | idle
 *   pace : tick (default: every 1 ms, send all messages due) | spread (one
 *          message at each multiple of 1/RATE s, timer slack 1 ns)
 *   opts : comma list: nodelay (A/B: set TCP_NODELAY on Paho's socket via
 *          /proc/self/fd), v5 (A: MQTT 5 + one user property, as hubd),
 *          nocb (A: no onSuccess callback), q1 (A: QoS 1, onSuccess on
 *          the PUBACK; acked_per_s is messages over the time until the
 *          last PUBACK)
 * Prints one line: key=value ... cpu_us_per_msg=...
 * CPU = getrusage(RUSAGE_SELF) utime+stime delta, from just before the
 * first message to after the last one was handed over (and for A, after
 * Paho reported the last one written, via onSuccess).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifdef USE_ASYNC
#include <MQTTAsync.h>
#endif
#ifdef USE_SYNC
#include <MQTTClient.h>
#endif

#define NDEV 1000
#define PAYLOAD 64

static char payload[PAYLOAD];
static int opt_nodelay, opt_v5, opt_nocb, opt_q1;

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
sleep_until(uint64_t t)
{
	struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull),
			      .tv_nsec = (long)(t % 1000000000ull)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
	       EINTR)
		;
}

static int
topic_of(uint64_t i, char *buf, size_t n)
{
	return snprintf(buf, n, "devices/d%u/telemetry", (unsigned)(i % NDEV));
}

/* set TCP_NODELAY on every TCP socket of this process whose peer port is
 * port on 127.0.0.1 (as bridge_nodelay.c does) */
#if defined(USE_ASYNC) || defined(USE_SYNC)
static int
set_nodelay_proc(int port)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)) != NULL) {
		struct sockaddr_in sa;
		socklen_t sl = sizeof(int), pl = sizeof(sa);
		int fd, type = 0, one = 1;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		fd = (int)strtol(de->d_name, NULL, 10);
		if (fd == dirfd(d))
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) != 0 ||
		    type != SOCK_STREAM)
			continue;
		if (getpeername(fd, (struct sockaddr *)&sa, &pl) != 0 ||
		    sa.sin_family != AF_INET || ntohs(sa.sin_port) != port)
			continue;
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
			       sizeof(one)) == 0)
			n++;
	}
	closedir(d);
	return n;
}
#endif

/* ---- the transports -------------------------------------------------- */

static int port;
static uint64_t failures;

#ifdef USE_ASYNC
static MQTTAsync acli;
static atomic_ulong a_done;
static atomic_int a_conn;

static void
a_ok(void *c, MQTTAsync_successData *r)
{
	(void)c, (void)r;
	atomic_fetch_add(&a_done, 1);
}
static void
a_ok5(void *c, MQTTAsync_successData5 *r)
{
	(void)c, (void)r;
	atomic_fetch_add(&a_done, 1);
}
static void
a_fail(void *c, MQTTAsync_failureData *r)
{
	(void)c, (void)r;
	atomic_fetch_add(&a_done, 1);
	failures++;
}
static void
a_fail5(void *c, MQTTAsync_failureData5 *r)
{
	(void)c, (void)r;
	atomic_fetch_add(&a_done, 1);
	failures++;
}
static void
a_conn_ok(void *c, MQTTAsync_successData *r)
{
	(void)c, (void)r;
	atomic_store(&a_conn, 1);
}
static void
a_conn_ok5(void *c, MQTTAsync_successData5 *r)
{
	(void)c, (void)r;
	atomic_store(&a_conn, 1);
}
static void
a_conn_fail(void *c, MQTTAsync_failureData *r)
{
	(void)c, (void)r;
	atomic_store(&a_conn, -1);
}
static void
a_conn_fail5(void *c, MQTTAsync_failureData5 *r)
{
	(void)c, (void)r;
	atomic_store(&a_conn, -1);
}
static void
a_lost(void *c, char *cause)
{
	(void)c;
	fprintf(stderr, "connection lost: %s\n", cause ? cause : "?");
}
static int
a_msg(void *c, char *t, int tl, MQTTAsync_message *m)
{
	(void)c, (void)tl;
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(t);
	return 1;
}

static int
xp_open(void)
{
	MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
	MQTTAsync_connectOptions c3 = MQTTAsync_connectOptions_initializer;
	MQTTAsync_connectOptions c5 = MQTTAsync_connectOptions_initializer5;
	MQTTAsync_connectOptions *c = opt_v5 ? &c5 : &c3;
	char uri[64], id[64];
	uint64_t t;

	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", port);
	snprintf(id, sizeof(id), "floor-a-%d", (int)getpid());
	co.sendWhileDisconnected = 0;
	co.maxBufferedMessages = 4096 + 64;
	co.MQTTVersion = opt_v5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
	co.restoreMessages = 0;
	if (MQTTAsync_createWithOptions(&acli, uri, id,
					MQTTCLIENT_PERSISTENCE_NONE, NULL,
					&co) != MQTTASYNC_SUCCESS)
		return -1;
	MQTTAsync_setCallbacks(acli, NULL, a_lost, a_msg, NULL);
	if (opt_v5) {
		c->cleanstart = 1;
		c->onSuccess5 = a_conn_ok5;
		c->onFailure5 = a_conn_fail5;
		c->MQTTVersion = MQTTVERSION_5;
	} else {
		c->cleansession = 1;
		c->onSuccess = a_conn_ok;
		c->onFailure = a_conn_fail;
		c->MQTTVersion = MQTTVERSION_3_1_1;
	}
	c->keepAliveInterval = 60;
	c->connectTimeout = 5;
	c->maxInflight = 65535;
	c->automaticReconnect = 0;
	if (MQTTAsync_connect(acli, c) != MQTTASYNC_SUCCESS)
		return -1;
	for (t = now_ns(); atomic_load(&a_conn) == 0;) {
		if (now_ns() - t > 5000000000ull)
			return -1;
		usleep(1000);
	}
	if (atomic_load(&a_conn) < 0)
		return -1;
	if (opt_nodelay && set_nodelay_proc(port) < 1)
		return -1;
	return 0;
}

static void
xp_send(uint64_t i)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	MQTTAsync_message pm = MQTTAsync_message_initializer;
	char topic[64];
	int rc;

	topic_of(i, topic, sizeof(topic));
	pm.payload = payload;
	pm.payloadlen = PAYLOAD;
	pm.qos = opt_q1;
	pm.retained = 0;
	ro.context = NULL;
	if (!opt_nocb) {
		if (opt_v5) {
			ro.onSuccess5 = a_ok5;
			ro.onFailure5 = a_fail5;
		} else {
			ro.onSuccess = a_ok;
			ro.onFailure = a_fail;
		}
	}
	if (opt_v5) {
		MQTTProperty p;

		/* as hubd: one user property "session" per publish */
		memset(&p, 0, sizeof(p));
		p.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
		p.value.data.data = "session";
		p.value.data.len = 7;
		p.value.value.data = "0123456789abcdef";
		p.value.value.len = 16;
		MQTTProperties_add(&pm.properties, &p);
	}
	while ((rc = MQTTAsync_sendMessage(acli, topic, &pm, &ro)) !=
	       MQTTASYNC_SUCCESS) {
		failures++;
		usleep(100);
	}
	MQTTProperties_free(&pm.properties);
	if (opt_nocb)
		atomic_fetch_add(&a_done, 1);
}

static void
xp_flush(uint64_t total)
{
	uint64_t t = now_ns();

	/* wait until Paho has reported every message written */
	while (atomic_load(&a_done) < total) {
		if (now_ns() - t > 20000000000ull) {
			fprintf(stderr, "flush timeout: %lu/%lu\n",
				(unsigned long)atomic_load(&a_done),
				(unsigned long)total);
			break;
		}
		usleep(200);
	}
}

static void
xp_close(void)
{
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
	d.timeout = 1000;
	MQTTAsync_disconnect(acli, &d);
	usleep(200000);
	MQTTAsync_destroy(&acli);
}
#define XP_NAME (opt_v5 ? "async-v5" : "async")

#elif defined(USE_SYNC)
static MQTTClient scli;

static void
s_lost(void *c, char *cause)
{
	(void)c;
	fprintf(stderr, "connection lost: %s\n", cause ? cause : "?");
}
static int
s_msg(void *c, char *t, int tl, MQTTClient_message *m)
{
	(void)c, (void)tl;
	MQTTClient_freeMessage(&m);
	MQTTClient_free(t);
	return 1;
}
static void
s_dc(void *c, MQTTClient_deliveryToken dt)
{
	(void)c, (void)dt;
}

static int
xp_open(void)
{
	MQTTClient_connectOptions c = MQTTClient_connectOptions_initializer;
	char uri[64], id[64];

	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", port);
	snprintf(id, sizeof(id), "floor-b-%d", (int)getpid());
	if (MQTTClient_create(&scli, uri, id, MQTTCLIENT_PERSISTENCE_NONE,
			      NULL) != MQTTCLIENT_SUCCESS)
		return -1;
	/* callbacks set: Paho runs its background receive thread */
	if (MQTTClient_setCallbacks(scli, NULL, s_lost, s_msg, s_dc) !=
	    MQTTCLIENT_SUCCESS)
		return -1;
	c.keepAliveInterval = 60;
	c.cleansession = 1;
	c.MQTTVersion = MQTTVERSION_3_1_1;
	if (MQTTClient_connect(scli, &c) != MQTTCLIENT_SUCCESS)
		return -1;
	if (opt_nodelay && set_nodelay_proc(port) < 1)
		return -1;
	return 0;
}

static void
xp_send(uint64_t i)
{
	MQTTClient_message pm = MQTTClient_message_initializer;
	char topic[64];

	topic_of(i, topic, sizeof(topic));
	pm.payload = payload;
	pm.payloadlen = PAYLOAD;
	pm.qos = 0;
	pm.retained = 0;
	while (MQTTClient_publishMessage(scli, topic, &pm, NULL) !=
	       MQTTCLIENT_SUCCESS) {
		failures++;
		usleep(100);
	}
}

static void
xp_flush(uint64_t total)
{
	(void)total; /* publishMessage wrote it (or queued a partial write) */
}

static void
xp_close(void)
{
	MQTTClient_disconnect(scli, 1000);
	MQTTClient_destroy(&scli);
}
#define XP_NAME "sync"

#else
static int rfd = -1;
static int batched;

static int
xp_open(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(0x7f000001)};
	static const unsigned char conn[] = {
	    0x10, 10 + 2 + 7, /* CONNECT, remaining length */
	    0,	  4,	      'M', 'Q', 'T', 'T', 4, /* protocol name, level 4
						      */
	    0x02,				     /* clean session */
	    0,	  60,				     /* keepalive 60 s */
	    0,	  7,	      'f', 'l', 'o', 'o', 'r', '-', 'c'};
	unsigned char ack[4];
	int one = 1;
	size_t got = 0;

	rfd = socket(AF_INET, SOCK_STREAM, 0);
	if (rfd < 0 || connect(rfd, (void *)&sa, sizeof(sa)) != 0)
		return -1;
	setsockopt(rfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (write(rfd, conn, sizeof(conn)) != (ssize_t)sizeof(conn))
		return -1;
	while (got < 4) {
		ssize_t n = read(rfd, ack + got, 4 - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	if (ack[0] != 0x20 || ack[3] != 0)
		return -1;
	return 0;
}

/* encodes one PUBLISH QoS 0; returns its length */
static size_t
enc(uint64_t i, unsigned char *b)
{
	char topic[64];
	int tl = topic_of(i, topic, sizeof(topic));
	size_t rl = 2 + (size_t)tl + PAYLOAD; /* < 128 */

	b[0] = 0x30;
	b[1] = (unsigned char)rl;
	b[2] = 0;
	b[3] = (unsigned char)tl;
	memcpy(b + 4, topic, (size_t)tl);
	memcpy(b + 4 + tl, payload, PAYLOAD);
	return 2 + rl;
}

static void
write_all(const unsigned char *b, size_t n)
{
	while (n) {
		ssize_t w = write(rfd, b, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			perror("write");
			exit(1);
		}
		b += w, n -= (size_t)w;
	}
}

static void
xp_send(uint64_t i)
{
	unsigned char b[256];
	write_all(b, enc(i, b));
}

/* design D: every message due in this tick, one write() */
static void
xp_send_batch(uint64_t from, uint64_t to)
{
	static unsigned char *buf;
	static size_t cap;
	size_t n = 0;

	if (cap < (to - from) * 160) {
		cap = (to - from) * 160 + 4096;
		buf = realloc(buf, cap);
		if (!buf)
			exit(1);
	}
	for (; from < to; from++)
		n += enc(from, buf + n);
	write_all(buf, n);
}

static void
xp_flush(uint64_t total)
{
	(void)total; /* write() returned: in the kernel */
}

static void
xp_close(void)
{
	static const unsigned char disc[] = {0xe0, 0};
	write_all(disc, 2);
	close(rfd);
}
#define XP_NAME (batched ? "rawb" : "raw")
#endif

/* ---- main: pace, send, account --------------------------------------- */

static double
tv_us(struct timeval tv)
{
	return tv.tv_sec * 1e6 + tv.tv_usec;
}

/* a whole decimal number in [lo, hi], or 1 with a message */
static int
num_arg(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "floor: bad number %s (%ld..%ld)\n", s, lo, hi);
		return 1;
	}
	*out = v;
	return 0;
}

int
main(int argc, char **argv)
{
	const char *mode, *pace = "tick", *opts = "";
	struct rusage r0, r1;
	uint64_t rate, secs, total, sent = 0, t0, t_end, t_done, late = 0,
				    ticks = 0;
	int idle, spread;
	double cpu;
	long v;

	if (argc < 5) {
		fprintf(stderr,
			"usage: %s MODE RATE SECS PORT [tick|spread] "
			"[nodelay,v5,nocb]\n",
			argv[0]);
		return 2;
	}
	mode = argv[1];
	if (num_arg(argv[2], 1, 10000000, &v))
		return 2;
	rate = (uint64_t)v;
	if (num_arg(argv[3], 1, 86400, &v))
		return 2;
	secs = (uint64_t)v;
	if (num_arg(argv[4], 1, 65535, &v))
		return 2;
	port = (int)v;
	if (argc > 5)
		pace = argv[5];
	if (argc > 6)
		opts = argv[6];
	opt_nodelay = strstr(opts, "nodelay") != NULL;
	opt_v5 = strstr(opts, "v5") != NULL;
	opt_nocb = strstr(opts, "nocb") != NULL;
	opt_q1 = strstr(opts, "q1") != NULL;
	idle = strcmp(mode, "idle") == 0;
	spread = strcmp(pace, "spread") == 0;
#if !defined(USE_ASYNC) && !defined(USE_SYNC)
	batched = strcmp(mode, "rawb") == 0;
	if (batched && spread) {
		fprintf(stderr, "rawb needs tick pacing\n");
		return 2;
	}
#endif
	memset(payload, 'x', sizeof(payload));
	memcpy(payload, "{\"ts\":1764550000000000000,\"pad\":\"", 33);
	payload[PAYLOAD - 2] = '"';
	payload[PAYLOAD - 1] = '}';
	total = rate * secs;
	if (spread)
		prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	if (!idle && xp_open() != 0) {
		fprintf(stderr, "connect failed\n");
		return 1;
	}
	usleep(100000);
	getrusage(RUSAGE_SELF, &r0);
	t0 = now_ns();
	if (spread) {
		for (sent = 0; sent < total; sent++) {
			uint64_t due = t0 + sent * 1000000000ull / rate;
			if (now_ns() < due)
				sleep_until(due);
			else
				late++;
			if (!idle)
				xp_send(sent);
		}
	} else {
		uint64_t tick = t0;
		while (sent < total) {
			uint64_t due_n;

			tick += 1000000ull;
			sleep_until(tick);
			ticks++;
			due_n = (tick - t0) * rate / 1000000000ull;
			if (due_n > total)
				due_n = total;
			if (idle) {
				sent = due_n;
				continue;
			}
#if !defined(USE_ASYNC) && !defined(USE_SYNC)
			if (batched) {
				if (due_n > sent)
					xp_send_batch(sent, due_n);
				sent = due_n;
				continue;
			}
#endif
			for (; sent < due_n; sent++)
				xp_send(sent);
		}
	}
	t_end = now_ns();
	if (!idle)
		xp_flush(total);
	t_done = now_ns();
	getrusage(RUSAGE_SELF, &r1);
	cpu = tv_us(r1.ru_utime) - tv_us(r0.ru_utime) + tv_us(r1.ru_stime) -
	      tv_us(r0.ru_stime);
	printf("mode=%s pace=%s opts=%s rate=%lu secs=%lu msgs=%lu "
	       "wall_s=%.2f failures=%lu late=%lu "
	       "utime_s=%.3f stime_s=%.3f vcsw_per_msg=%.2f ivcsw_per_msg=%.3f "
	       "acked_per_s=%.0f cpu_us_per_msg=%.2f\n",
	       idle ? "idle" : XP_NAME, pace, *opts ? opts : "-",
	       (unsigned long)rate, (unsigned long)secs, (unsigned long)total,
	       (t_end - t0) / 1e9, (unsigned long)failures, (unsigned long)late,
	       (tv_us(r1.ru_utime) - tv_us(r0.ru_utime)) / 1e6,
	       (tv_us(r1.ru_stime) - tv_us(r0.ru_stime)) / 1e6,
	       (double)(r1.ru_nvcsw - r0.ru_nvcsw) / (double)total,
	       (double)(r1.ru_nivcsw - r0.ru_nivcsw) / (double)total,
	       (double)total * 1e9 / (double)(t_done - t0),
	       cpu / (double)total);
	fflush(stdout);
	(void)ticks;
	if (!idle)
		xp_close();
	return 0;
}
