/*
 * downlink.c - what the hub sends a device: the per-session outbound queue
 * (bounded by SESS_OUTQ_MAX frames and SESS_OUTQ_BYTES; a drop is counted
 * and recorded once per episode), its writer in SERVER_WRITEABLE (pings and
 * the close frame too), commands from the bridge with the retained ones
 * tracked until the device acks them, and the acks and errors of uplinks
 * the broker took or refused.
 *
 * Threads: the lws service thread of the worker only. Commands and broker
 * acks arrive as bridge events polled in hub__service_wake (session.c);
 * frames are written only in LWS_CALLBACK_SERVER_WRITEABLE.
 */
#include "session_int.h"
#include "hub_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A frame for the device is dropped: counted each time; recorded in the
 * registry as a downlink_dropped event once per episode (until the queue
 * has drained again), so a device that stops reading is one row, not one
 * per message.
 */
static void
sess_dropped(struct sess *s, const char *reason)
{
	struct worker *w = s->w;
	struct writer_item it;

	metrics_add(w->m, M_DROP_DOWNLINK_QUEUE_FULL, 1);
	if (s->dropping)
		return;
	s->dropping = 1;
	hub_log(HUB_LOG_WARN, "HUB-DOWNLINK-DROP",
		"device=%s session=%s reason=%s queued=%zu", s->device,
		s->session, reason, s->out_bytes);
	memset(&it, 0, sizeof(it));
	it.kind = WRITER_DOWNLINK_DROPPED;
	it.ts = hub_clock_ms();
	memcpy(it.device, s->device, sizeof(it.device));
	memcpy(it.session, s->session, sizeof(it.session));
	snprintf(it.reason, sizeof(it.reason), "%s", reason);
	writer_submit(w->writer, &it); /* full: the counter still has it */
}

/*
 * Queues a frame for the device: 0, or -1 when it was dropped (and counted)
 * because the session's queue is at its bound or is closing.
 */
int
hub__sess_send(struct sess *s, const void *data, size_t len, int binary)
{
	struct outf *f;

	if (s->state != SESS_LIVE)
		return -1;
	if (s->out_count >= SESS_OUTQ_MAX ||
	    s->out_bytes + len > SESS_OUTQ_BYTES) {
		sess_dropped(s, "downlink_queue_full");
		return -1;
	}
	f = malloc(sizeof(*f) + LWS_PRE + len);
	if (!f) {
		sess_dropped(s, "downlink_queue_full");
		return -1;
	}
	f->next = NULL;
	f->len = len;
	f->binary = binary;
	memcpy(f->buf + LWS_PRE, data, len);
	if (s->out_tail)
		s->out_tail->next = f;
	else
		s->out_head = f;
	s->out_tail = f;
	s->out_count++;
	s->out_bytes += len;
	s->w->out_bytes += len;
	lws_callback_on_writable(s->wsi);
	return 0;
}

void
hub__sess_err(struct sess *s, int has_id, uint32_t id, const char *code,
	      const char *msg)
{
	char buf[768];
	size_t n = proto_frame_err(buf, sizeof(buf), has_id, id, code, msg);

	if (n)
		hub__sess_send(s, buf, n, 0);
}

void
hub__sess_free_queues(struct sess *s)
{
	struct outf *f, *fn;
	struct cmd_pending *c, *cn;

	for (f = s->out_head; f; f = fn) {
		fn = f->next;
		free(f);
	}
	if (s->w)
		s->w->out_bytes -= s->out_bytes;
	s->out_head = s->out_tail = NULL;
	s->out_count = 0;
	s->out_bytes = 0;
	for (c = s->cmds; c; c = cn) {
		cn = c->next;
		free(c);
	}
	s->cmds = NULL;
	s->ncmds = 0;
	free(s->rx);
	s->rx = NULL;
	s->rx_len = 0;
	s->rx_cap = 0;
}

/*
 * Writes queued frames while the socket takes them: lws sends at most
 * rx_buffer_size (4 KiB) per POLLOUT and keeps the rest of a frame in its
 * own buffer, so one frame per callback cannot keep up with a burst of
 * small commands to a device that reads. lws_send_pipe_choked() says when
 * the kernel (or lws's leftover of a partial send) is full: stop there and
 * wait for the next POLLOUT.
 */
int
hub__downlink_writeable(struct worker *w, struct sess *s, struct lws *wsi)
{
	char reason[32];
	int wrote = 0;

	if (s->ping_due && s->state == SESS_LIVE) {
		/* a payload: lws passes an empty PONG to no callback, and
		 * LWS_CALLBACK_RECEIVE_PONG is what tells us the peer lives */
		unsigned char ping[LWS_PRE + 2] = {0};

		s->ping_due = 0;
		ping[LWS_PRE] = 'h';
		ping[LWS_PRE + 1] = 'b';
		if (lws_write(wsi, ping + LWS_PRE, 2, LWS_WRITE_PING) < 0)
			return -1;
		wrote++;
	}
	while (s->out_head && (!wrote || !lws_send_pipe_choked(wsi))) {
		struct outf *f = s->out_head;
		int n =
		    lws_write(wsi, f->buf + LWS_PRE, f->len,
			      f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);

		s->out_head = f->next;
		if (!s->out_head)
			s->out_tail = NULL;
		s->out_count--;
		s->out_bytes -= f->len;
		w->out_bytes -= f->len;
		free(f);
		if (n < 0)
			return -1;
		wrote++;
		metrics_add(w->m, M_MSG_OUT, 1);
		metrics_add(w->m, M_BYTES_OUT, (uint64_t)n);
	}
	if (wrote) {
		if (!s->out_head)
			s->dropping = 0; /* drained: the next drop is news */
		if (s->out_head || s->state == SESS_CLOSING)
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (s->state == SESS_CLOSING && s->close_code) {
		int n = snprintf(reason, sizeof(reason), "%s", s->close_reason);

		lws_close_reason(wsi, (enum lws_close_status)s->close_code,
				 (unsigned char *)reason, (size_t)n);
		return -1;
	}
	return 0;
}

void
hub__downlink_cmd(struct worker *w, struct bridge_ev *e)
{
	struct sess *s = hub__map_find(w, e->device);
	enum proto_pl kind;
	int64_t id = -1;
	size_t cap, n;
	char *buf;

	if (!s || s->state != SESS_LIVE)
		return; /* retained ones wait in the broker */
	kind = proto_payload_kind(e->payload, e->len);
	if (kind == PROTO_PL_BINARY) {
		cap = 1 + strlen(e->topic) + e->len;
		buf = malloc(cap);
		if (!buf)
			return;
		n = proto_frame_binary((uint8_t *)buf, cap, e->topic,
				       e->payload, e->len);
		if (n && hub__sess_send(s, buf, n, 1))
			n = 0;
		free(buf);
		/* binary frames carry no id: clear an offline one on delivery
		 */
		if (n && e->retained)
			id = -2;
	} else {
		if (e->qos > 0)
			id = ++s->next_cmd_id;
		cap = proto_frame_msg_bound(e->topic, e->len);
		buf = malloc(cap);
		if (!buf)
			return;
		n = proto_frame_msg(buf, cap, e->topic, e->payload, e->len,
				    kind, id);
		if (n && hub__sess_send(s, buf, n, 0))
			n = 0;
		free(buf);
	}
	if (!n)
		return;
	metrics_add(w->m, M_CMDS_DELIVERED, 1);
	if (!e->retained)
		return;
	if (id == -2 || id < 0) {
		struct bridge_msg *m =
		    bridge_msg_new(BRIDGE_CLEAR, s->device, e->topic, NULL, 0);
		if (m) {
			m->qos = 1;
			m->retain = 1;
			if (bridge_submit(w->bridge, m) != HUB_OK)
				bridge_msg_free(m);
		}
		return;
	}
	if (s->ncmds < SESS_CMD_PENDING_MAX) {
		struct cmd_pending *c = calloc(1, sizeof(*c));

		if (!c)
			return;
		c->id = (uint32_t)id;
		snprintf(c->topic, sizeof(c->topic), "%s", e->topic);
		c->next = s->cmds;
		s->cmds = c;
		s->ncmds++;
	}
}

void
hub__downlink_device_ack(struct worker *w, struct sess *s, uint32_t id)
{
	struct cmd_pending **p = &s->cmds, *c;
	struct bridge_msg *m;

	metrics_add(w->m, M_CMD_ACKS, 1);
	while (*p && (*p)->id != id)
		p = &(*p)->next;
	if (!*p)
		return; /* a live, non-retained command: nothing to clear */
	c = *p;
	*p = c->next;
	s->ncmds--;
	/* the offline command was delivered: take it off the broker */
	m = bridge_msg_new(BRIDGE_CLEAR, s->device, c->topic, NULL, 0);
	if (m) {
		m->qos = 1;
		m->retain = 1;
		if (bridge_submit(w->bridge, m) != HUB_OK)
			bridge_msg_free(m);
	}
	free(c);
}

/* The broker took a QoS 1 uplink: the device gets its ack. */
void
hub__downlink_puback(struct worker *w, const struct bridge_ev *e)
{
	struct sess *s = hub__map_find(w, e->device);

	if (e->t_rx_us)
		metrics_latency(w->m, hub_clock_mono_us() - e->t_rx_us);
	if (s && s->handle == e->sess) {
		char out[64];
		size_t n = proto_frame_ack(out, sizeof(out), e->msg_id);

		if (s->inflight)
			s->inflight--;
		hub__sess_send(s, out, n, 0);
		metrics_add(w->m, M_ACKS_SENT, 1);
	}
}

/* The broker refused an uplink (e.g. an ACL): never resent. */
void
hub__downlink_pubnack(struct worker *w, const struct bridge_ev *e)
{
	struct sess *s = hub__map_find(w, e->device);

	if (s && s->handle == e->sess) {
		if (s->inflight)
			s->inflight--;
		metrics_add(w->m, M_DROP_BROKER_UNAVAILABLE, 1);
		hub__sess_err(s, 1, e->msg_id, PROTO_E_BROKER_UNAVAILABLE,
			      "the broker refused the message");
	}
}
