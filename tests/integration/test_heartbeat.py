"""WebSocket pings go out on time under libev: lws's libev backend ignored a
new, earlier timer deadline (ev_timer_start() on a running watcher), so with
--heartbeat 1 the first ping came after ~4.5 s and then every 2 s
(patches/lws-libev-rearm-timer.patch). A client that answers every ping
must see one about every --heartbeat seconds."""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import RawWS  # noqa: E402


class TestHeartbeat(hubfix.HubTest):

    def test_pings_every_heartbeat(self):
        tok = self.add_devices("hb1")
        hub = self.start_hub(extra=["--heartbeat", 1, "--idle-timeout", 30])
        r = RawWS(hub.port, "/v1/devices/hb1", tok["hb1"])
        try:
            t0 = time.monotonic()
            times = []
            deadline = t0 + 20
            while len(times) < 6 and time.monotonic() < deadline:
                try:
                    op, data = r.read_frame(max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if op == 0x9:  # ping: answer it, so the session stays valid
                    times.append(time.monotonic())
                    r.send_frame(0xA, data)
        finally:
            r.close()
        self.assertEqual(len(times), 6, f"pings in 20 s at {[round(t - t0, 2) for t in times]}")
        first = times[0] - t0
        gaps = [b - a for a, b in zip(times, times[1:])]
        desc = f"first ping after {first:.2f} s, then gaps {[round(g, 2) for g in gaps]}"
        hubfix.log(desc)
        self.assertLess(first, 2.5, desc)
        self.assertLess(statistics.median(gaps), 1.6, desc)


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
