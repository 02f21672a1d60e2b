/*
 * uplink.c - what a device sends: WebSocket messages reassembled from
 * fragments up to --max-frame, charged to the device's rate budget
 * (uplimit.c), parsed as protocol v1 text or binary frames, and handed to
 * the bridge's queue as publishes (QoS 1 bounded by --inflight). Pings are
 * answered and acks of commands passed to downlink.c.
 *
 * Threads: the lws service thread of the worker only. The bridge thread
 * takes the messages from its queue; its PUBACKs come back as bridge
 * events (downlink.c).
 */
#include "session_int.h"

#include <stdlib.h>
#include <string.h>

/* A text frame refused by the rate limit is scanned for its id up to this
 * size; larger ones are dropped unread (their err names no id). */
#define RATE_ID_PEEK_MAX 4096

static void
uplink(struct worker *w, struct sess *s, const char *topic, const void *payload,
       size_t plen, int qos, int has_id, uint32_t id)
{
	struct bridge_msg *m;
	int rc;

	if (qos == 1) {
		if (s->inflight >= (uint32_t)w->conf->inflight) {
			metrics_add(w->m, M_DROP_INFLIGHT_FULL, 1);
			hub__sess_err(s, 1, id, PROTO_E_INFLIGHT_FULL,
				      "too many unacknowledged QoS 1 messages");
			return;
		}
		if (!bridge_has_room(w->bridge)) {
			metrics_add(w->m, M_DROP_BROKER_UNAVAILABLE, 1);
			hub__sess_err(s, 1, id, PROTO_E_BROKER_UNAVAILABLE,
				      "broker unavailable and buffer full");
			return;
		}
	}
	m = bridge_msg_new(BRIDGE_PUB, s->device, topic, payload, plen);
	if (!m) {
		hub__sess_err(s, has_id, id, PROTO_E_BROKER_UNAVAILABLE,
			      "out of memory");
		return;
	}
	m->qos = qos;
	m->sess = s->handle;
	m->msg_id = id;
	m->t_rx_us = hub_clock_mono_us();
	memcpy(m->session, s->session, sizeof(m->session));
	rc = bridge_submit(w->bridge, m);
	if (rc == HUB_OK) {
		if (qos == 1)
			s->inflight++;
		metrics_add(w->m, qos ? M_PUB_QOS1 : M_PUB_QOS0, 1);
		return;
	}
	bridge_msg_free(m);
	if (qos == 1) {
		metrics_add(w->m, M_DROP_BROKER_UNAVAILABLE, 1);
		hub__sess_err(s, 1, id, PROTO_E_BROKER_UNAVAILABLE,
			      "broker unavailable and buffer full");
	} else
		metrics_add(w->m, M_DROP_QOS0_BROKER_DOWN, 1);
}

static int
on_text(struct worker *w, struct sess *s, const char *buf, size_t len)
{
	struct proto_frame in;
	const char *code, *msg;
	char out[64];
	size_t n;

	if (!proto_utf8_valid(buf, len)) {
		lws_close_reason(s->wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD,
				 (unsigned char *)"invalid UTF-8", 13);
		s->close_reason = "closed";
		return -1;
	}
	if (proto_frame_parse_text(buf, len, &in, &code, &msg) != HUB_OK) {
		metrics_add(w->m,
			    strcmp(code, PROTO_E_BAD_TOPIC) ? M_DROP_BAD_FRAME
							    : M_DROP_BAD_TOPIC,
			    1);
		hub__sess_err(s, in.has_id, in.id, code, msg);
		return 0;
	}
	switch (in.op) {
	case PROTO_PING:
		n = proto_frame_pong(out, sizeof(out));
		hub__sess_send(s, out, n, 0);
		break;
	case PROTO_PONG:
		break;
	case PROTO_ACK:
		hub__downlink_device_ack(w, s, in.id);
		break;
	case PROTO_PUB:
		uplink(w, s, in.topic, in.payload, in.payload_len, in.qos,
		       in.has_id, in.id);
		break;
	}
	proto_frame_release(&in);
	return 0;
}

static void
on_binary(struct worker *w, struct sess *s, const uint8_t *buf, size_t len)
{
	char topic[256];
	const uint8_t *payload;
	const char *code;
	size_t plen;

	if (proto_frame_parse_binary(buf, len, topic, sizeof(topic), &payload,
				     &plen, &code) != HUB_OK) {
		metrics_add(w->m,
			    strcmp(code, PROTO_E_BAD_TOPIC) ? M_DROP_BAD_FRAME
							    : M_DROP_BAD_TOPIC,
			    1);
		hub__sess_err(
		    s, 0, 0, code,
		    "binary frame: byte 0 = topic length 1..255, topic, "
		    "payload");
		return;
	}
	uplink(w, s, topic, payload, plen, 0, 0, 0);
}

/*
 * One complete message. Every message (a ping or an ack as much as a pub)
 * is charged to the device's frames and bytes budget before it is parsed.
 * Over budget it is dropped and answered with err rate_limited; only a
 * small text frame is scanned, for the id the err should name, so a
 * device past its budget costs no more than the bytes it sends.
 */
static int
on_message(struct worker *w, struct sess *s, const unsigned char *buf,
	   size_t len)
{
	struct proto_frame f;
	const char *code, *msg;

	metrics_add(w->m, M_MSG_IN, 1);
	if (!uplimit_charge(&s->up, &w->upconf, len,
			    (uint32_t)hub__mono_ms())) {
		metrics_add(w->m, M_DROP_RATE_LIMITED, 1);
		memset(&f, 0, sizeof(f));
		if (!s->rx_binary && len <= RATE_ID_PEEK_MAX &&
		    proto_utf8_valid(buf, len) &&
		    !proto_frame_parse_text((const char *)buf, len, &f, &code,
					    &msg))
			proto_frame_release(&f);
		hub__sess_err(s, f.has_id, f.id, PROTO_E_RATE_LIMITED,
			      "over --rate messages or --rate-bytes bytes per "
			      "second");
		return 0;
	}
	if (s->rx_binary) {
		on_binary(w, s, buf, len);
		return 0;
	}
	return on_text(w, s, (const char *)buf, len);
}

int
hub__uplink_receive(struct worker *w, struct sess *s, struct lws *wsi,
		    const unsigned char *in, size_t len)
{
	int first = lws_is_first_fragment(wsi),
	    final = lws_is_final_fragment(wsi);
	size_t cap = (size_t)w->conf->max_frame;
	int rc = 0;

	if (s->state != SESS_LIVE)
		return 0;
	/* RFC 6455 5.2: no extension is negotiated, so RSV1-3 must be 0 (lws
	 * built without extensions lets RSV1 through) */
	if (lws_get_reserved_bits(wsi) & 0x70) {
		lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR,
				 (unsigned char *)"reserved bits", 13);
		s->close_reason = "closed";
		return -1;
	}
	s->last_rx_ms = hub__mono_ms();
	if (first) {
		s->rx_len = 0;
		s->rx_binary = lws_frame_is_binary(wsi);
	}
	if (s->rx_len + len > cap) {
		metrics_add(w->m, M_DROP_TOO_LARGE, 1);
		lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
				 (unsigned char *)"frame too large", 15);
		s->close_reason = "closed";
		return -1;
	}
	metrics_add(w->m, M_BYTES_IN, len);
	if (first && final)
		return on_message(w, s, in, len);
	if (s->rx_len + len > s->rx_cap) {
		/* grow as the message does (a device that stops half-way holds
		 * what it sent, not --max-frame) */
		size_t ncap = s->rx_cap ? s->rx_cap : 4096;
		unsigned char *n;

		while (ncap < s->rx_len + len)
			ncap *= 2;
		if (ncap > cap)
			ncap = cap;
		n = realloc(s->rx, ncap);
		if (!n)
			return -1;
		s->rx = n;
		s->rx_cap = ncap;
	}
	memcpy(s->rx + s->rx_len, in, len);
	s->rx_len += len;
	if (!final)
		return 0;
	rc = on_message(w, s, s->rx, s->rx_len);
	free(s->rx);
	s->rx = NULL;
	s->rx_len = 0;
	s->rx_cap = 0;
	return rc;
}

/* LWS_CALLBACK_RECEIVE_PONG: the peer lives (heartbeat.c). */
void
hub__uplink_pong(struct sess *s)
{
	if (s->state == SESS_LIVE)
		s->last_rx_ms = hub__mono_ms();
}
