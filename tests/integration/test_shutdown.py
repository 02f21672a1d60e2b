"""SIGTERM drains (docs/protocol.md, docs/operations.md): devices closed with 1001 spread
over --drain, new connections refused with 503 + Retry-After meanwhile,
offline rows and retained statuses (reason shutdown) written, exit 0."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import status_msgs  # noqa: E402


class TestShutdown(hubfix.HubTest):

    def test_sigterm_drain(self):
        ids = [f"dev{i}" for i in range(1, 6)]
        tok = self.add_devices(*ids, "late")
        # drain 6 s: time for the 503 check while devices are still open
        hub = self.start_hub(drain=6)
        sub = self.mqtt("devices/+/status")
        clients = {d: self.connect(hub, d, tok[d]) for d in ids}
        online = {}
        for d in ids:
            online[d] = hubfix.wait_until(
                lambda d=d: next((s for s in status_msgs(sub, d) if s["online"]), None),
                10, what=f"{d} online")
        # QoS 1 traffic in flight at the moment of the signal is still acked:
        # the hub has taken the frames (counted), their PUBACKs may not be in
        m0 = hub.metrics()['hub_uplink_total{qos="1"}']
        for i, d in enumerate(ids):
            clients[d].pub({"last": i}, qos=1, id=77)
        hubfix.wait_until(
            lambda: hub.metrics()['hub_uplink_total{qos="1"}'] >= m0 + len(ids), 10,
            what="the hub took the QoS 1 frames")

        self.assertEqual(hub.http("/readyz")[0], 200)
        t0 = time.monotonic()
        log_before = len(hub.log_text())
        hub.proc.send_signal(signal.SIGTERM)
        # while draining (the worker says so once the signal is handled):
        # refused with 503 and Retry-After
        hubfix.wait_until(lambda: "HUB-DRAIN" in hub.log_text()[log_before:], 10,
                          what="the worker draining")
        st, h = hubfix.ws_refusal(hub.url("late"), tok["late"])
        self.assertEqual(st, 503)
        self.assertIn("retry-after", h)
        self.assertTrue(h["retry-after"].isdigit() and int(h["retry-after"]) >= 1, h)
        # and not ready: a load balancer checking /readyz stops sending
        # devices here (every worker drains, whichever answers says so)
        st, _, body = hub.http("/readyz")
        self.assertEqual((st, body), (503, "draining\n"))

        codes = {}
        for d, c in clients.items():
            codes[d] = c.wait_closed(15)
        for d in ids:
            self.assertEqual(codes[d], 1001, f"{d} closed with {codes[d]}")
            self.assertEqual(clients[d].ops("ack"), [{"op": "ack", "id": 77}], d)
        rc = hub.proc.wait(30)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, f"hubd exited {rc}:\n{hub.log_tail()}")
        self.assertLess(took, 6 + hubfix.T(10), f"drain took {took:.1f}s")

        # retained statuses: offline, shutdown, seq above the online one
        for d in ids:
            st = hubfix.retained_status(self.broker.port, d)
            self.assertFalse(st["online"], st)
            self.assertEqual(st["reason"], "shutdown", st)
            self.assertGreater(st["seq"], online[d]["seq"])
        # registry: one offline/shutdown row per session
        ev = self.events()
        for d in ids:
            rows = [(e["kind"], e["reason"], e["session"]) for e in ev if e["device"] == d]
            self.assertEqual(rows, [("offline", "shutdown", online[d]["session"]),
                                    ("online", None, online[d]["session"])], rows)
        self.assertFalse([e for e in ev if e["device"] == "late" and e["kind"] != "auth_failed"])
        for d in self.device_list():
            self.assertFalse(d["online"], d)
        # hub liveness is offline too
        m = hubfix.retained(self.broker.port, "hub/nodes/hubA/status")
        self.assertEqual(len(m), 1, m)
        self.assertIn(b"offline", m[0].payload.lower(), m[0].payload)

    def test_sigterm_spreads_closes(self):
        ids = [f"dev{i}" for i in range(1, 7)]
        tok = self.add_devices(*ids)
        hub = self.start_hub(drain=3)
        clients = [self.connect(hub, d, tok[d]) for d in ids]
        for c in clients:
            c.send_json({"op": "ping"})
            c.wait_op("pong", 5)
        t0 = time.monotonic()
        hub.proc.send_signal(signal.SIGTERM)
        for c in clients:
            c.wait_closed(15)
        # close times as seen by the clients (the reader records them)
        when = sorted(self._closed_times(clients))
        span = when[-1] - when[0]
        self.assertGreaterEqual(span, 1.0,
                                f"6 closes over --drain 3 all within {span:.2f}s: not spread")
        self.assertLess(when[-1] - t0, 3 + hubfix.T(2.0))
        self.assertEqual(hub.proc.wait(30), 0, hub.log_tail())

    def _closed_times(self, clients):
        return [c.closed_t for c in clients]


if __name__ == "__main__":
    hubfix.main()
