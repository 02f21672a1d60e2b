/*
 * bridge.h - the MQTT bridge of one hubd worker.
 *
 * Threads:
 *   - the bridge thread (started by bridge_start) owns the Paho MQTTAsync
 *     client, the reliable-send FIFO and the subscription set;
 *   - Paho's own threads run its callbacks: they copy, enqueue to the bridge
 *     thread, and return;
 *   - any thread may call bridge_submit() (the lws service thread for device
 *     traffic, the registry writer for statuses);
 *   - ONLY the lws service thread calls bridge_poll() and the session-side
 *     calls; the bridge wakes it with the wake function (lws_cancel_service,
 *     the only lws call allowed from another thread).
 *
 * Reliability (docs/protocol.md): every QoS 1 message (device pubs,
 * statuses, command clears, announcements) stays in the bridge's FIFO until
 * the broker's PUBACK; on a lost connection they are re-sent in order after
 * the reconnect (clean start: Paho forgets them). Only then does the service
 * thread get BRIDGE_EV_ACK for a device message. The FIFO is bounded by
 * max_pending for device messages (bridge_has_room); statuses and session
 * announcements are always taken, but while the link is down a newer one
 * of a device replaces the one still waiting (a status by its presence
 * seq), so
 * while the broker is away they take memory by the number of devices, not
 * by the number of transitions. QoS 0 while disconnected is dropped and
 * counted.
 *
 * The send window stays below Paho's in-flight and buffer limits, so Paho's
 * 1 s stall on a full window and its -12 (MQTTASYNC_MAX_BUFFERED_MESSAGES)
 * are never hit; completions (onSuccess) open the window again. After every
 * connect the bridge sets TCP_NODELAY on Paho's socket (Paho never does) and
 * re-subscribes every held device, batched with subscribeMany.
 */
#ifndef BRIDGE_H
#define BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "hub_err.h"
#include "hub_util.h"
#include "proto.h"

struct bridge;

struct bridge_config {
	const char *broker;    /* "tcp://127.0.0.1:1883" or "ssl://..." */
	const char *user;      /* NULL: none */
	const char *password;  /* NULL: none */
	int mqtt_version;      /* 5 or 3 */
	const char *hub_id;    /* status field, LWT topic */
	const char *client_id; /* unique per worker: "<hub_id>-w<N>" */
	const char *prefix;    /* "devices" */
	int node_status; /* 1: this worker owns hub/nodes/{hub}/status + LWT */
	size_t max_pending; /* device QoS 1 messages awaiting PUBACK */
	int window;	    /* messages handed to Paho at once */
	size_t max_cmd;	    /* commands larger are dropped (0: 1 MiB) */
	int fleet;	    /* 1: subscribe hub/revoked/+ (hubd --token-key) */
	const char *group_prefix; /* "groups": group commands; NULL: none */
	const char *fleet_prefix; /* "fleet": fleet commands; NULL: none */
};

enum bridge_kind {
	BRIDGE_PUB,	 /* device uplink: topic is device-relative */
	BRIDGE_STATUS,	 /* retained presence: payload is the JSON */
	BRIDGE_SUB,	 /* start routing commands for device */
	BRIDGE_UNSUB,	 /* stop routing */
	BRIDGE_ANNOUNCE, /* hub/sessions/{device} <- payload */
	BRIDGE_CLEAR,	 /* empty retained publish to prefix/device/topic */
	BRIDGE_RAW,	 /* publish to an absolute topic (hubctl-like uses) */
	BRIDGE_GSUB,	 /* start routing group commands: device = group */
	BRIDGE_GUNSUB,	 /* stop routing them */
};

/*
 * One message into the bridge. Allocated with bridge_msg_new() (a single
 * block: topic and payload live inside), owned by the bridge once
 * bridge_submit() returns HUB_OK, by the caller otherwise.
 */
struct bridge_msg {
	enum bridge_kind kind;
	int qos;
	int retain;
	uint64_t sess;	  /* service-thread session handle (for the ack) */
	uint32_t msg_id;  /* the device's QoS 1 id; user property "id" */
	uint64_t t_rx_us; /* monotonic time the frame arrived (latency) */
	char device[HUB_ID_MAX + 1];
	char session[48]; /* session id; user property "session" */
	int64_t pseq;	  /* STATUS: its presence seq (the outbox row's) */
	/* bridge-private bookkeeping */
	struct bridge_msg *next, *prev;
	struct bridge_msg *cnext; /* the queue's index of STATUS/ANNOUNCE */
	uint64_t seq;
	int state;
	char *topic;   /* NUL-terminated, points into data[] */
	void *payload; /* points into data[] */
	size_t len;
	char data[];
};

/* NULL on allocation failure. topic may be NULL (SUB/UNSUB). Any thread. */
struct bridge_msg *bridge_msg_new(enum bridge_kind kind, const char *device,
				  const char *topic, const void *payload,
				  size_t len);
void bridge_msg_free(struct bridge_msg *m);

enum bridge_ev_kind {
	BRIDGE_EV_ACK,	    /* broker PUBACKed device msg (sess, msg_id) */
	BRIDGE_EV_CMD,	    /* command for device: topic "cmd/...", payload */
	BRIDGE_EV_SESSION,  /* hub/sessions/{device}: payload from announcer */
	BRIDGE_EV_LINK,	    /* broker link changed: up = 1/0 */
	BRIDGE_EV_REVOKED,  /* hub/revoked/{device}: payload (empty: cleared) */
	BRIDGE_EV_GROUPCMD, /* group command: device = group ("" = fleet),
			       topic "cmd/...", payload */
	BRIDGE_EV_NACK,	    /* broker refused device msg (sess, msg_id):
			       PUBACK reason >= 0x80 (e.g. ACL); the device
			       gets err broker_unavailable, no resend */
};

/* One event out of the bridge, to the service thread. */
struct bridge_ev {
	enum bridge_ev_kind kind;
	uint64_t sess;
	uint32_t msg_id;
	uint64_t t_rx_us;
	int qos;
	int retained; /* command came retained (offline command): clear on ack
		       */
	int up;	      /* LINK: up = 0 may carry the reason as payload (text) */
	char device[HUB_ID_MAX + 1];
	char *topic;   /* device-relative ("cmd/reboot"), inside data[];
			  NULL for ACK, NACK, LINK, SESSION */
	void *payload; /* len bytes, then a NUL not counted in len */
	size_t len;
	char data[];
};
void bridge_ev_free(struct bridge_ev *e);

struct bridge_stats {
	uint64_t sent, acked, dropped_qos0, resent, connects, cmds_in;
	uint64_t cmds_dropped; /* bad topic or larger than max_cmd */
	uint64_t pending;      /* reliable messages awaiting PUBACK */
	int connected;
	uint64_t rejected; /* QoS 1 messages the broker refused */
	uint64_t replaced; /* statuses/announcements a newer one replaced
			      before they were sent */
};

/*
 * Creates the bridge (not yet connected). wake(arg) is called from the
 * bridge thread or Paho's receive thread (incoming commands) when events
 * wait for bridge_poll(); one call per burst: after a wake, call
 * bridge_poll() until it returns NULL. On failure NULL and err says why.
 * Main thread.
 */
struct bridge *bridge_new(const struct bridge_config *cfg,
			  void (*wake)(void *arg), void *arg, char *err,
			  size_t errlen);
/*
 * Checks a --broker value: a comma list of up to 8 URIs, each
 * tcp://HOST[:PORT], mqtt://, ssl:// or mqtts:// (the list is tried in
 * order: failover). HUB_OK, or HUB_ERR_INVAL with the reason in err.
 * Pure; any thread.
 */
int bridge_uri_list_check(const char *list, char *err, size_t errlen);
/*
 * fn(arg, device, seq) is called for every BRIDGE_STATUS the broker
 * acknowledged (m->pseq as seq), on the bridge thread: the registry writer
 * clears its outbox row. Main thread, before bridge_start.
 */
void bridge_on_status_acked(struct bridge *b,
			    void (*fn)(void *arg, const char *device,
				       int64_t seq),
			    void *arg);
/* Starts the bridge thread, which connects and reconnects with backoff. */
int bridge_start(struct bridge *b);
/*
 * Hands m to the bridge. HUB_ERR_FULL when it is a device QoS 1 message
 * and the reliable buffer is full (the device gets err broker_unavailable);
 * HUB_ERR_BROKER for QoS 0 while disconnected (dropped and counted).
 * Any thread.
 */
int bridge_submit(struct bridge *b, struct bridge_msg *m);
/* 1 if a device QoS 1 message would be accepted now. Any thread. */
int bridge_has_room(struct bridge *b);
/* 1 while connected to the broker. Any thread. */
int bridge_connected(struct bridge *b);
/* Next event, or NULL. Service thread only. Free with bridge_ev_free. */
struct bridge_ev *bridge_poll(struct bridge *b);
void bridge_get_stats(struct bridge *b, struct bridge_stats *out);
/*
 * Waits up to timeout_ms for every reliable message to be PUBACKed, then
 * publishes the node's offline status (if node_status), disconnects and
 * joins the thread. Returns HUB_OK or HUB_ERR_BUSY if messages were left.
 */
int bridge_stop(struct bridge *b, int timeout_ms);
/* After bridge_stop. Accepts NULL. */
void bridge_free(struct bridge *b);

#endif
