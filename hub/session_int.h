/*
 * session_int.h - shared by the files of the device sessions and nothing
 * else: session.c (the lws callback and the wake: dispatch only), auth.c
 * (before the upgrade), uplink.c (device -> bridge), downlink.c (bridge ->
 * device, the outbound queue), lifecycle.c (open, close, supersede, drain,
 * and the device map).
 *
 * Threads: every function declared here runs on the lws service thread of
 * the worker, which alone reads and writes struct worker and struct sess
 * (hub_int.h).
 */
#ifndef HUB_SESSION_INT_H
#define HUB_SESSION_INT_H

#include "hub_int.h"
#include "proto.h"

/* The monotonic clock in ms: idle cut, drain, rate budgets. */
static inline uint64_t
hub__mono_ms(void)
{
	return hub_clock_mono_us() / 1000;
}

/* ---- auth.c: before the upgrade ---------------------------------------- */

/*
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: authenticates the request. 0 with the
 * result parked in w->pending; 1 when refused with an HTTP answer (lws
 * completes the transaction); -1 to close the connection.
 */
int hub__auth_confirm_upgrade(struct worker *w, struct lws *wsi,
			      const char *up);
/* FILTER_PROTOCOL_CONNECTION: the parked result into the session's user
 * data. 0, or 1 (refuse) when wsi is not the one just authenticated. */
int hub__auth_adopt(struct worker *w, struct lws *wsi, struct sess *s);
/* Content-Length and Transfer-Encoding as lws parsed them. */
void hub__auth_body_headers(struct lws *wsi, char *cl, size_t cap,
			    struct proto_upgrade *u);
/* --max-pending-per-addr: enter at accept (-1: refuse), leave at the
 * upgrade or the close. */
int hub__pending_enter(struct worker *w, struct lws *wsi);
void hub__pending_leave(struct lws *wsi);

/* ---- uplink.c: frames from the device ---------------------------------- */

/* LWS_CALLBACK_RECEIVE: 0, or -1 to close (the reason is set). */
int hub__uplink_receive(struct worker *w, struct sess *s, struct lws *wsi,
			const unsigned char *in, size_t len);
/* LWS_CALLBACK_RECEIVE_PONG: the peer is alive. */
void hub__uplink_pong(struct sess *s);

/* ---- downlink.c: frames to the device, the outbound queue --------------- */

/* hub__sess_send (hub_int.h) queues a frame; this one an err frame. */
void hub__sess_err(struct sess *s, int has_id, uint32_t id, const char *code,
		   const char *msg);
/* Frees the outbound queue, the pending commands and the rx buffer. */
void hub__sess_free_queues(struct sess *s);
/* The device acked command id: a retained one is cleared off the broker. */
void hub__downlink_device_ack(struct worker *w, struct sess *s, uint32_t id);
/* LWS_CALLBACK_SERVER_WRITEABLE: 0, or -1 to close. */
int hub__downlink_writeable(struct worker *w, struct sess *s, struct lws *wsi);
/* A command from the bridge (BRIDGE_EV_CMD) to its device. */
void hub__downlink_cmd(struct worker *w, struct bridge_ev *e);
/* The broker took (BRIDGE_EV_ACK) or refused (BRIDGE_EV_NACK) an uplink. */
void hub__downlink_puback(struct worker *w, const struct bridge_ev *e);
void hub__downlink_pubnack(struct worker *w, const struct bridge_ev *e);

/* ---- lifecycle.c: session life and the device map ----------------------- */

/* The live or closing session of device in this worker, or NULL. */
struct sess *hub__map_find(struct worker *w, const char *device);
/* Closes the session with a close frame once its queue is written. */
void hub__sess_close(struct sess *s, int code, const char *reason);
/* LWS_CALLBACK_ESTABLISHED: 0, or -1 to close. */
int hub__sess_established(struct worker *w, struct sess *s, struct lws *wsi);
/* LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: 0, or -1 (a malformed close). */
int hub__sess_peer_close(struct sess *s, struct lws *wsi, const void *in,
			 size_t len);
/* LWS_CALLBACK_CLOSED. */
void hub__sess_closed(struct worker *w, struct sess *s);
/* hub/sessions/{id} (BRIDGE_EV_SESSION): a kick, or a newer session. */
void hub__sess_session_ev(struct worker *w, struct bridge_ev *e);
/* hub/revoked/{id} (BRIDGE_EV_REVOKED). */
void hub__sess_revoked_ev(struct worker *w, const struct bridge_ev *e);
/* New credentials: live sessions whose credential changed close. */
void hub__sess_revalidate(struct worker *w);
/* The online statuses the writer queued: those sessions' uplink flows. */
void hub__sess_opened(struct worker *w);

#endif
