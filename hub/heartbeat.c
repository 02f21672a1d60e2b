/*
 * heartbeat.c - WebSocket pings and the idle cut, tracked by the hub itself.
 *
 * Why not lws's validity timers: libwebsockets keeps every timer of every
 * connection in one sorted list per service thread, and each (re)schedule
 * walks it. Its ping/hangup policy re-arms a timer per connection at every
 * connect and pong, so the connect rate fell with the number of devices
 * held (a worker holding ~5 600 devices spent 82 % of its CPU in
 * lws_dll2_add_sorted; 100 000 devices never all connected). The device
 * vhost now gives lws a policy with no validity timers at all, and this
 * file walks the worker's device map instead: a tenth of it every 100 ms
 * tick, so each session is looked at once a second (more often for a
 * --heartbeat under 4 s), and the cost per second is one pass over the
 * map, whatever the churn.
 *
 * Policy (docs/protocol.md): a session silent for --heartbeat seconds gets
 * a WebSocket ping (at most one per --heartbeat); one silent for
 * --idle-timeout seconds (no frame of any kind, pongs included) is closed
 * as "timeout". A session that is already closing is bounded by an lws
 * timeout set in hub__sess_close() instead.
 *
 * Threads: the lws service thread only (called from the worker's tick).
 */
#include "hub_int.h"

void
hub__heartbeat_step(struct worker *w, uint64_t now_ms)
{
	const uint64_t ping_ms = (uint64_t)w->conf->heartbeat * 1000;
	const uint64_t idle_ms = (uint64_t)w->conf->idle_timeout * 1000;
	/* the whole map every `period` ticks: once a second, or four times
	 * per --heartbeat when that is shorter, so a ping is never more than
	 * a quarter of the interval late */
	unsigned period = (unsigned)(w->conf->heartbeat * 10 / 4);
	size_t nb = w->map_mask + 1, slice, i;

	if (period < 1)
		period = 1;
	if (period > 10)
		period = 10;
	slice = nb / period + 1;

	for (i = 0; i < slice; i++) {
		struct sess *s = w->map[w->hb_cursor];

		w->hb_cursor = (w->hb_cursor + 1) & w->map_mask;
		for (; s; s = s->hnext) {
			uint64_t quiet;

			if (s->state != SESS_LIVE || !s->wsi)
				continue;
			quiet = now_ms - s->last_rx_ms;
			if (quiet >= idle_ms) {
				/* no close frame: the peer is gone or stuck;
				 * on_closed() names it "timeout" */
				lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK,
						LWS_TO_KILL_ASYNC);
				continue;
			}
			if (quiet >= ping_ms &&
			    now_ms - s->last_ping_ms >= ping_ms) {
				s->last_ping_ms = now_ms;
				s->ping_due = 1;
				lws_callback_on_writable(s->wsi);
			}
		}
	}
}
