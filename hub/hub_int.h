/*
 * hub_int.h - private to hubd: one worker process's state.
 *
 * Threads: struct worker and every struct sess are ONLY read or written from
 * the lws service thread (the libev loop of the worker process), except the
 * fields marked otherwise. The bridge thread and the registry writer thread
 * reach the service thread only through their queues and
 * lws_cancel_service() (-> LWS_CALLBACK_EVENT_WAIT_CANCELLED).
 */
#ifndef HUB_INT_H
#define HUB_INT_H

#include <libwebsockets.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "authlimit.h"
#include "pendlimit.h"
#include "uplimit.h"
#include "bridge.h"
#include "conf.h"
#include "hub_util.h"
#include "metrics.h"
#include "registry.h"
#include "writer.h"

#define SESS_OUTQ_MAX 256	  /* frames waiting for a slow device */
#define SESS_OUTQ_BYTES (1 << 20) /* ... or this many bytes */
#define SESS_CMD_PENDING_MAX                                                   \
	64 /* retained commands awaiting the device's ack */

struct outf {
	struct outf *next;
	size_t len;
	int binary;
	unsigned char buf[]; /* LWS_PRE + len */
};

/* A session's groups as "a,b"; a longer list is cut at a comma. */
#define HUB_SESS_GROUPS_MAX 128

struct cmd_pending {
	struct cmd_pending *next;
	uint32_t id;
	char topic[PROTO_TOPIC_MAX + 1]; /* "cmd/...", to clear once acked */
};

enum sess_state { SESS_NEW, SESS_LIVE, SESS_CLOSING };

/* Per-connection user data of the device protocol (lws allocates it). */
struct sess {
	struct worker *w;
	struct lws *wsi;
	struct sess *hnext; /* device map chain */
	uint64_t handle;    /* unique in this worker: matches bridge acks */
	enum sess_state state;
	char device[HUB_ID_MAX + 1];
	char session[REGISTRY_SESSION_MAX];
	char addr[REGISTRY_ADDR_MAX];
	int64_t started_ms;
	uint64_t fingerprint; /* credential at auth time */
	int64_t token_iat;    /* signed fleet token's iat (fleet_auth.c) */
	char groups[HUB_SESS_GROUPS_MAX]; /* groups.c; "" = none */
	int groups_joined;		  /* counted in worker->grps */
	struct uplimit up;		  /* --rate, --rate-bytes */
	uint32_t inflight;		  /* QoS 1 uplinks awaiting PUBACK */
	uint32_t next_cmd_id;
	uint64_t last_rx_ms;   /* monotonic */
	uint64_t last_ping_ms; /* monotonic: our last WebSocket ping */
	int ping_due;	       /* heartbeat.c asked for a ping */
	int peer_closed;       /* got a close frame */
	int superseded; /* a newer session of the device exists: no presence */
	int online_out; /* its online status is queued: uplink may flow */
	int dropping;	/* in an episode of dropped downlink: recorded once */
	/* our close, if any: code for the close frame, reason for the row */
	int close_code;
	const char *close_reason;
	/* outbound frames */
	struct outf *out_head, *out_tail;
	unsigned out_count;
	size_t out_bytes;
	struct cmd_pending *cmds;
	unsigned ncmds;
	/* a text/binary message arriving in fragments */
	unsigned char *rx;
	size_t rx_len, rx_cap;
	int rx_binary;
	int rx_overflow;
};

/* The result of auth in CONFIRM_UPGRADE, picked up in FILTER (same stack). */
struct pending_auth {
	struct lws *wsi;
	char device[HUB_ID_MAX + 1];
	char addr[REGISTRY_ADDR_MAX];
	uint64_t fingerprint;
	int64_t token_iat; /* signed fleet token's iat; 0: opaque or cert */
	char groups[HUB_SESS_GROUPS_MAX]; /* "a,b": groups.c */
};

struct worker {
	const struct conf *conf;
	int argc; /* hubd's, to re-read the configuration on SIGHUP */
	char **argv;
	int index, nworkers;
	struct metrics *metrics;
	struct metrics_slot *m;
	struct lws_context *ctx;
	struct bridge *bridge;
	struct writer *writer;
	struct registry_creds *creds;
	struct authlimit *authlimit; /* shared by every worker of the hub */
	struct pendlimit *pending_per_addr; /* --max-pending-per-addr */
	struct proto_cidr proxies[CONF_PROXIES_MAX]; /* --trusted-proxies */
	size_t nproxies;
	struct uplimit_conf upconf;
	struct pending_auth pending;
	/* fleet_auth.c: --token-key and the hub/revoked/{id} table; NULL
	 * without --token-key */
	struct fleet_keys *fleet_keys;
	struct fleet_revoked *revoked;
	/* groups.c: the groups of the sessions held here, with counts */
	struct hub_grp *grps;
	size_t ngrps, grps_cap;
	/* session-ticket keys (tls.h); NULL with --no-tls */
	struct hub_tls *tls;

	/* device id -> session */
	struct sess **map;
	size_t map_mask;
	size_t hb_cursor; /* heartbeat.c: the next map bucket to look at */
	int nsessions;
	size_t out_bytes; /* queued to all devices: hub_downlink_queued_bytes */
	int max_sessions; /* this worker's share of --max-conns */
	uint64_t next_handle;
	uint32_t session_counter;
	uint32_t session_salt;
	/* the bridge's counters at the last sample (hub__sample_gauges) */
	struct bridge_stats seen;

	/* drain on SIGTERM */
	int draining;
	uint64_t drain_start_ms; /* monotonic */
	int drain_total;	 /* sessions when the drain began */
	int drain_closed;
	int done;	  /* drained: leave the loop */
	int wake_pending; /* atomic: lws_cancel_service already asked */
	/* guards ctx against wake() from the bridge, Paho and writer threads
	 * while lws_context_destroy() frees it */
	pthread_mutex_t ctx_lock;
};

/* fleet_auth.c: signed fleet tokens and their revocations */
struct fleet_keys;
struct fleet_revoked;
/* Loads --token-key (if set) for this worker. HUB_OK or an error in err. */
int hub__fleet_init(struct worker *w, char *err, size_t errlen);
void hub__fleet_free(struct worker *w);
/*
 * The auth hook: a token the registry did not accept may be a signed
 * fleet token for id. HUB_OK with *iat set (the session records it),
 * HUB_ERR_DISABLED (the local registry has the device disabled), or
 * HUB_ERR_AUTH (not signed, no --token-key, bad, expired or revoked).
 */
int hub__fleet_auth(struct worker *w, const char *id, const char *tok,
		    size_t len, int64_t *iat);
/*
 * A hub/revoked/{id} message from the bridge: records it; 1 if it revokes
 * (0: cleared or malformed). Then a signed session of that device that
 * hub__fleet_session_void() names must close with *code (1008, or 4003
 * when the reason is "disabled").
 */
int hub__fleet_revoked(struct worker *w, const struct bridge_ev *e, int *code);
int hub__fleet_session_void(struct worker *w, const char *id, int64_t iat);

/* groups.c: group and fleet commands (groups/{g}/cmd/#, fleet/cmd/#) */
struct hub_grp {
	char name[HUB_ID_MAX + 1];
	int n; /* live sessions of this worker in the group */
};
/* The groups of the device being authenticated into w->pending.groups:
 * a signed token's claim (fleet_auth.c sets it), else the registry's. */
void hub__groups_pending(struct worker *w, const char *id);
void hub__groups_set(char *out, const char (*groups)[65], int n);
/* Session start / end: count its groups; GSUB / GUNSUB on 0 <-> 1. */
void hub__groups_join(struct worker *w, struct sess *s);
void hub__groups_leave(struct worker *w, struct sess *s);
void hub__groups_free(struct worker *w);
/* A group (e->device) or fleet ("") command: to every live member. */
void hub__group_cmd(struct worker *w, const struct bridge_ev *e);

/* The device sessions (session.c, auth.c, uplink.c, downlink.c,
 * lifecycle.c; their shared declarations are in session_int.h). */
/* downlink.c: queues a frame to a live session: 0, or -1 when it was
 * dropped (and counted). */
int hub__sess_send(struct sess *s, const void *data, size_t len, int binary);
/* session.c: the lws protocol callback of "hub.v1". */
int hub__device_callback(struct lws *wsi, enum lws_callback_reasons reason,
			 void *user, void *in, size_t len);
/* session.c: handles bridge events and new credentials:
 * EVENT_WAIT_CANCELLED. */
void hub__service_wake(struct worker *w);
/* lifecycle.c: one step of the drain: closes this tick's share of
 * sessions. */
void hub__drain_step(struct worker *w);
/* heartbeat.c: pings and the idle cut for a tenth of the device map; each
 * 100 ms tick. Service thread. */
void hub__heartbeat_step(struct worker *w, uint64_t now_ms);
/* worker.c: refreshes the gauges that are sampled rather than counted. */
void hub__sample_gauges(struct worker *w);
/* lifecycle.c: the device map */
int hub__map_init(struct worker *w, size_t expected);
void hub__map_free(struct worker *w);

/* http.c */
int hub__http_callback(struct lws *wsi, enum lws_callback_reasons reason,
		       void *user, void *in, size_t len);
/* Writes a complete HTTP answer (headers + body) on wsi; 0 or -1. */
int hub__http_answer(struct lws *wsi, int status, const char *ctype,
		     const char *body, size_t len, unsigned retry_after);

/*
 * Reads the --http-token file: its first line, trimmed, at least 16
 * characters, into out (cap bytes). 0, or -1 with err filled. Any thread.
 */
int hub__http_token_read(const char *path, char *out, size_t cap, size_t *len,
			 char *err, size_t errlen);

/* worker.c: runs worker `index` until it drained; the exit code. It writes
 * 'R' to ready_fd once it listens and its threads run. */
int hub__worker_run(const struct conf *c, int index, int nworkers,
		    struct metrics *metrics, int ready_fd, int argc,
		    char **argv, struct authlimit *authlimit);

/* 0 if the PEM certificate and key parse and belong together, else an
 * mbedTLS code and why. Any thread. */
int hub__tls_pair_ok(const char *cert, const char *key, char *why, size_t cap);

/* instance.c: one hubd per --listen, --http, and --db + --hub-id */
struct hub_instance {
	int fd_listen, fd_http, fd_db;
};
/*
 * Claims this instance's names and checks the listeners are free. HUB_OK,
 * or HUB_ERR_EXISTS naming the other instance (and its pid) in err, or
 * HUB_ERR_IO. Supervisor, before the fork; the workers inherit the claims.
 */
int hub__instance_claim(const struct conf *c, struct hub_instance *in,
			char *err, size_t errlen);
void hub__instance_release(struct hub_instance *in);

#endif
