/*
 * bridge_int.h - private to the bridge module: the definition of struct
 * bridge and the functions shared between its files (bridge__ prefix).
 *
 * Ownership (see bridge.c for the full design):
 *   - "immutable": set in bridge_new, read by every thread;
 *   - "lock": the inbox (submitted messages and Paho callback records),
 *     guarded by b->lock, written by any thread, drained by the bridge
 *     thread;
 *   - "atomic": counters and flags any thread may read;
 *   - "bridge thread": everything else; ONLY read or written from the
 *     bridge thread (after bridge_start, before the join in bridge_stop).
 */
#ifndef BRIDGE_INT_H
#define BRIDGE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <MQTTAsync.h>

#include "bridge.h"
#include "bridge_queue.h"
#include "hub_queue.h"
#include "hub_thread.h"

#define BRIDGE_PREFIX_MAX 128	  /* configured topic prefix, bytes */
#define BRIDGE_WINDOW_MAX 16384	  /* messages handed to Paho at once */
#define BRIDGE_EVQ_CAP 65536	  /* events waiting for the service thread */
#define BRIDGE_SUB_BATCH 500	  /* topics per subscribeMany call */
#define BRIDGE_BACKOFF_BASE 200	  /* ms */
#define BRIDGE_BACKOFF_CAP 10000  /* ms */
#define BRIDGE_KEEPALIVE 30	  /* s */
#define BRIDGE_CONNECT_TIMEOUT 10 /* s */
#define BRIDGE_DOWN_REPORT_S 30	  /* "broker down" said again this often */
#define BRIDGE_URIS_MAX 8	  /* --broker failover list */
#define BRIDGE_LAZY_CBS 64	  /* at most, see cb_push in bridge_paho.c */

/* Topic buffer: prefix + '/' + id + '/' + device topic + NUL. */
#define BRIDGE_FULL_TOPIC_MAX                                                  \
	(BRIDGE_PREFIX_MAX + 1 + HUB_ID_MAX + 1 + PROTO_TOPIC_MAX + 1)

/* What a Paho callback reports to the bridge thread. */
enum bridge_cb_kind {
	BRIDGE_CB_PUB_OK,     /* slot: PUBACK (QoS 1) or written (QoS 0) */
	BRIDGE_CB_PUB_FAIL,   /* slot: dropped by Paho (lost connection) */
	BRIDGE_CB_PUB_REJECT, /* slot: PUBACK with a failure reason code */
	BRIDGE_CB_CONN_OK,    /* val: the broker's Receive Maximum */
	BRIDGE_CB_CONN_FAIL,
	BRIDGE_CB_LOST,
	BRIDGE_CB_DISC_DONE,
};

struct bridge_cb {
	int kind;
	int val; /* slot index or receive maximum */
};

/* The set of devices this worker routes commands for (bridge_subs.c). */
struct bridge_subs_node {
	struct bridge_subs_node *next;
	int sess_on; /* hub/sessions/<id> subscribed: own announcement acked */
	char id[HUB_ID_MAX + 1];
};

/* a batch kind of bridge_subs.c besides BRIDGE_SUB and BRIDGE_UNSUB */
#define BRIDGE__SUB_SESS 1000

struct bridge_subs {
	struct bridge_subs_node **buckets;
	size_t nbuckets, n;
	/* a run of SUB or UNSUB requests not yet sent to the broker */
	int batch_kind;		       /* BRIDGE_SUB or BRIDGE_UNSUB */
	char (*batch)[HUB_ID_MAX + 1]; /* kind: or BRIDGE__SUB_SESS */
	size_t batch_n, batch_cap;
	/* groups with a member held by this worker (the service thread
	 * reference-counts them and sends GSUB/GUNSUB on 0 <-> 1) */
	char (*groups)[HUB_ID_MAX + 1];
	size_t ngroups, groups_cap;
};

enum bridge_link { BRIDGE_DOWN, BRIDGE_CONNECTING, BRIDGE_UP };

enum bridge_phase {
	BRIDGE_RUN,
	BRIDGE_DRAIN,	/* bridge_stop: waiting for PUBACKs */
	BRIDGE_OFFLINE, /* bridge_stop: node offline status sent */
	BRIDGE_DISC,	/* bridge_stop: disconnect sent */
	BRIDGE_DONE,
};

struct bridge {
	struct hub_thread_owner thread; /* the bridge thread, from its start */
	/* immutable */
	char *broker, *user, *password, *hub_id, *client_id, *prefix;
	char *uris[BRIDGE_URIS_MAX]; /* broker split at commas */
	int nuris;
	char *node_topic; /* hub/nodes/{hub_id}/status, or NULL */
	int mqtt_version;
	int fleet; /* bridge_config.fleet */
	/* the broker granted hub/revoked/+ on this connection (set on Paho's
	 * thread by the SUBACK, cleared by the bridge thread on link loss) */
	atomic_int revoked_ok;
	char *group_prefix, *fleet_prefix; /* NULL: no group commands */
	size_t max_pending;
	size_t max_cmd;
	int window;
	size_t lazy_cbs; /* QoS 0 completions that wake the bridge thread */
	void (*wake)(void *arg);
	void *wake_arg;
	/* bridge_on_status_acked: set before bridge_start */
	void (*status_acked)(void *arg, const char *device, int64_t seq);
	void *status_arg;
	MQTTAsync cli;
	struct hub_queue *evq; /* bridge_ev *, to the service thread */

	/* lock */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct bridge_list in;
	struct bridge_cb *cbs;
	size_t cb_cap, cb_head, cb_len;
	int cb_overflow;
	int stop_req;
	uint64_t stop_deadline_us;
	char conn_err[160]; /* why the last connect failed (Paho's words) */

	/* atomic */
	atomic_int connected, closing, woken;
	atomic_uint_fast64_t st_connects, st_cmds_in, st_cmds_dropped;

	/* bridge thread */
	pthread_t thr;
	int started, joined;
	/* the reliable queue (bridge_queue.c); its counters are atomics */
	struct bridge_rq rq;
	enum bridge_link link;
	enum bridge_phase phase;
	unsigned attempt;
	uint64_t reconnect_at_us;
	uint32_t rnd;
	struct bridge_msg *online_msg; /* node "online" still held */
	struct bridge_msg *offline_msg;
	int link_ring[16]; /* BRIDGE_EV_LINK values to report */
	unsigned link_head, link_len;
	/* down since (0: up or never tried); last report; what to report */
	uint64_t down_since_us, down_reported_us;
	char down_report[256]; /* a pending BRIDGE_EV_LINK down with reason */
	struct bridge_subs subs;
	int stop_rc;
};

/* ---- messages and events (bridge.c) ---- */
/* An event; topic and payload are copied, payload followed by a NUL.
 * NULL on allocation failure. Any thread. */
struct bridge_ev *bridge__ev_new(enum bridge_ev_kind kind, const char *device,
				 const char *topic, const void *payload,
				 size_t len);
/* Wakes the service thread unless a wake is already pending. Any thread. */
void bridge__wake_maybe(struct bridge *b);

/* ---- Paho (bridge_paho.c) ---- */
/* The reliable queue's transport: publish through Paho. */
extern const struct bridge_rq_ops bridge__paho_ops;
/* Installs the connection callbacks on b->cli. HUB_OK or HUB_ERR_BROKER. */
int bridge__paho_callbacks(struct bridge *b);
/* Starts a connect (BRIDGE_CONNECTING) or schedules the next attempt. */
void bridge__paho_connect(struct bridge *b);
/* Starts a disconnect: HUB_OK if a DISC_DONE callback will follow. */
int bridge__paho_disconnect(struct bridge *b);
/* Drops the connection at once; no callback follows. */
void bridge__paho_drop(struct bridge *b);
/* 1 while Paho says it is connected. */
int bridge__paho_is_connected(struct bridge *b);

/* ---- the link state machine and the thread (bridge_link.c) ---- */
/* The bridge thread's body. */
void *bridge__main(void *arg);
/* The queue's `finished`: what an acknowledged or refused message means
 * to the rest of the bridge (node status, subscriptions, the outbox). */
void bridge__msg_finished(void *arg, struct bridge_msg *m, int rejected);
/* Schedules the next connect attempt with backoff and jitter. */
void bridge__schedule_reconnect(struct bridge *b);

/* ---- subscriptions (bridge_subs.c), bridge thread ---- */
int bridge__subs_init(struct bridge_subs *s);
void bridge__subs_free(struct bridge_subs *s);
/* Records SUB/UNSUB of device, batching runs of the same kind. */
void bridge__subs_request(struct bridge *b, int kind, const char *device);
/* Sends the batched run (when connected; otherwise the set is enough). */
void bridge__subs_flush(struct bridge *b);
/* After a (re)connect: subscribes every held device, batched. */
void bridge__subs_resubscribe(struct bridge *b);
/* The broker acked this worker's session announcement for device: now
 * subscribe to hub/sessions/<device> (bridge thread). */
void bridge__subs_announced(struct bridge *b, const char *device);
/* GSUB / GUNSUB of one group: subscribes or unsubscribes its topic. */
void bridge__groups_request(struct bridge *b, int kind, const char *group);
/* hub/revoked/+ again when the broker has not granted it yet (bridge
 * thread, once a second while the link is up). */
void bridge__revoked_retry(struct bridge *b);
/*
 * "<group_prefix>/<g>/cmd/..." -> HUB_OK, group g, *rel "cmd/...";
 * "<fleet_prefix>/cmd/..." -> HUB_OK, group "", *rel; else
 * HUB_ERR_NOTFOUND.
 */
int bridge__group_topic(const struct bridge *b, const char *topic, char *group,
			size_t cap, const char **rel);
/* hub/revoked/<id>: HUB_OK and the id, else HUB_ERR_NOTFOUND. */
int bridge__revoked_topic(const struct bridge *b, const char *topic,
			  char *device, size_t cap);
size_t bridge__subs_count(const struct bridge_subs *s);
int bridge__subs_has(const struct bridge_subs *s, const char *device);

/* ---- broker address and TCP_NODELAY (bridge_nodelay.c) ---- */
/*
 * Splits "tcp://host:port", "ssl://", "mqtt://", "mqtts://" (or a bare
 * "host:port", taken as tcp) into host and port; "[v6]" brackets are
 * removed. Default ports 1883 / 8883. *tls = 1 for ssl/mqtts. Pure.
 * HUB_ERR_INVAL for other schemes or malformed input, HUB_ERR_TOOBIG when
 * host does not fit.
 */
int bridge__uri_parse(const char *uri, char *host, size_t hostlen,
		      unsigned *port, int *tls);
/*
 * Sets TCP_NODELAY on every TCP socket of this process connected to the
 * broker of uri (Paho's socket; Paho never sets it). Returns how many
 * sockets were set, or a negative hub_err.
 */
int bridge__set_nodelay(const char *uri);

#endif
