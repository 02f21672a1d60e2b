/*
 * session.c - device sessions: the lws protocol "hub.v1" of the device
 * vhost. This file only dispatches: lws callbacks to auth.c (before the
 * upgrade), uplink.c (frames from the device), downlink.c (frames to it and
 * the outbound queue) and lifecycle.c (open, close, the device map); and,
 * on LWS_CALLBACK_EVENT_WAIT_CANCELLED, what the bridge and the registry
 * writer queued for this worker.
 *
 * Threads: everything here runs on the lws service thread of the worker.
 * Nothing blocks: the broker is behind the bridge's queue, the disk behind
 * the writer's, credentials are an in-memory snapshot. The bridge and
 * writer threads only queue and call lws_cancel_service().
 */
#include "session_int.h"
#include "hub_log.h"

#include <string.h>

/* ---- events from the other threads ----------------------------------- */

#define WAKE_BATCH 256 /* bridge events handled per wake */

void
hub__service_wake(struct worker *w)
{
	struct registry_creds *c;
	struct bridge_ev *e;
	int batch;

	__atomic_store_n(&w->wake_pending, 0, __ATOMIC_RELEASE);
	hub__sess_opened(w);
	batch = 0;
	c = writer_take_creds(w->writer);
	if (c) {
		registry_creds_free(w->creds);
		w->creds = c;
		metrics_set(w->m, M_DEVICES_KNOWN, registry_creds_count(c));
		hub__sess_revalidate(w);
	}
	/* a bounded batch, then the loop writes before taking more: a burst
	 * of commands drains into the sockets as it arrives instead of piling
	 * up in the sessions' queues */
	while (batch++ < WAKE_BATCH && (e = bridge_poll(w->bridge))) {
		switch (e->kind) {
		case BRIDGE_EV_ACK:
			hub__downlink_puback(w, e);
			break;
		case BRIDGE_EV_NACK:
			hub__downlink_pubnack(w, e);
			break;
		case BRIDGE_EV_CMD:
			hub__downlink_cmd(w, e);
			break;
		case BRIDGE_EV_SESSION:
			hub__sess_session_ev(w, e);
			break;
		case BRIDGE_EV_REVOKED:
			hub__sess_revoked_ev(w, e);
			break;
		case BRIDGE_EV_GROUPCMD:
			hub__group_cmd(w, e);
			break;
		case BRIDGE_EV_LINK:
			if (e->up)
				hub_log(HUB_LOG_INFO, "HUB-BROKER-UP", "%s",
					w->conf->broker);
			else
				hub_log(HUB_LOG_WARN, "HUB-BROKER-DOWN",
					"%s: %.*s", w->conf->broker,
					(int)(e->len < 300 ? e->len : 300),
					e->len ? (const char *)e->payload
					       : "connection lost");
			break;
		}
		bridge_ev_free(e);
	}
	if (batch > WAKE_BATCH) {
		/* more may wait: come back after this loop's writes (the one
		 * lws call allowed from any thread, fine from this one) */
		__atomic_store_n(&w->wake_pending, 1, __ATOMIC_RELEASE);
		lws_cancel_service(w->ctx);
	}
}

/* ---- the lws protocol callback ---------------------------------------- */

/* LWS_CALLBACK_HTTP: a plain request on the device port. */
static int
on_plain_http(struct lws *wsi, const char *in)
{
	struct proto_upgrade u;
	char cl[24];

	/* a request with a body is answered 400 and the connection
	 * closed: nothing after it is read as another request */
	memset(&u, 0, sizeof(u));
	hub__auth_body_headers(wsi, cl, sizeof(cl), &u);
	if (proto_body_status(u.content_length, u.content_length_len,
			      u.transfer_encoding_len)) {
		hub__http_answer(wsi, 400, "text/plain",
				 "no request body here\n", 21, 0);
		return -1;
	}
	if (in && !strncmp(in, "/v1/devices/", 12))
		return hub__http_answer(wsi, 426, "text/plain",
					"websocket upgrade required\n", 27, 0)
			   ? -1
			   : lws_http_transaction_completed(wsi);
	return hub__http_answer(wsi, 404, "text/plain", "no such endpoint\n",
				17, 0)
		   ? -1
		   : lws_http_transaction_completed(wsi);
}

int
hub__device_callback(struct lws *wsi, enum lws_callback_reasons reason,
		     void *user, void *in, size_t len)
{
	struct worker *w = lws_context_user(lws_get_context(wsi));
	struct sess *s = user;

	switch (reason) {
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		return hub__auth_confirm_upgrade(w, wsi, in);
	case LWS_CALLBACK_HTTP:
		return on_plain_http(wsi, in);
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		return hub__auth_adopt(w, wsi, s);
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
		return hub__pending_enter(w, wsi);
	case LWS_CALLBACK_WSI_DESTROY:
		hub__pending_leave(wsi);
		break;
	case LWS_CALLBACK_ESTABLISHED:
		hub__pending_leave(wsi);
		return hub__sess_established(w, s, wsi);
	case LWS_CALLBACK_RECEIVE:
		return hub__uplink_receive(w, s, wsi, in, len);
	case LWS_CALLBACK_RECEIVE_PONG:
		hub__uplink_pong(s);
		return 0;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		return hub__sess_peer_close(s, wsi, in, len);
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return hub__downlink_writeable(w, s, wsi);
	case LWS_CALLBACK_CLOSED:
		hub__sess_closed(w, s);
		return 0;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		hub__service_wake(w);
		return 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}
