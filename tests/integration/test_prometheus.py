"""Prometheus as its users expect: the standard process_* family per worker
(and the supervisor), hub_build_info with the versions, the limits the alert
rules divide by, and a /metrics body that promtool's own linter accepts."""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402


class TestPrometheus(hubfix.HubTest):

    def test_process_metrics_and_build_info(self):
        tok = self.add_devices("p1", "p2", "p3")
        hub = self.start_hub(workers=2)
        clients = [self.connect(hub, d, tok[d]) for d in tok]
        hubfix.wait_until(lambda: hub.metrics().get("hub_connections") == 3, 10,
                          what="3 connections")
        st, _, body = hub.http("/metrics")
        self.assertEqual(st, 200)
        m = hubfix.parse_metrics(body)
        now = time.time()
        workers = ("supervisor", "0", "1")
        for w in workers:
            rss = m[f'process_resident_memory_bytes{{worker="{w}"}}']
            self.assertGreater(rss, 1 << 20, w)
            fds = m[f'process_open_fds{{worker="{w}"}}']
            mx = m[f'process_max_fds{{worker="{w}"}}']
            self.assertGreater(fds, 2, w)
            self.assertGreater(mx, fds, w)
            start = m[f'process_start_time_seconds{{worker="{w}"}}']
            self.assertLess(abs(now - start), 600, w)
            self.assertGreaterEqual(m[f'process_cpu_seconds_total{{worker="{w}"}}'], 0)
        # the workers hold the sessions: their fds sum to at least 3 more
        # than the supervisor's
        self.assertGreaterEqual(m['process_open_fds{worker="0"}'] +
                                m['process_open_fds{worker="1"}'], 3 + 2 * 3)
        ver = subprocess.run([hubfix.HUBD, "--version"], capture_output=True,
                             text=True).stdout
        want = re.match(r"hubd (\S+) \(libwebsockets (\S+), mbedTLS (\S+)\)", ver)
        self.assertTrue(want, ver)
        key = ('hub_build_info{version="%s",lws="%s",mbedtls="%s"}' %
               want.groups())
        self.assertEqual(m.get(key), 1, body[-2000:])
        self.assertEqual(m["hub_workers_configured"], 2)
        self.assertEqual(m["hub_workers"], 2)
        self.assertGreater(m["hub_bridge_pending_limit"], 0)
        self.assertGreater(m["hub_max_connections"], 0)
        # promtool's linter: format, HELP/TYPE, counter names
        r = subprocess.run(["promtool", "check", "metrics"], input=body,
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for c in clients:
            c.close()


if __name__ == "__main__":
    hubfix.unittest.main(verbosity=2)
