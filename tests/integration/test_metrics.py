"""The ops listener (docs/protocol.md, docs/operations.md): /healthz, /metrics in
Prometheus text with hub_ names, the hub_connections gauge following live
sessions (summed over workers), counters for sessions, auth failures,
frames, and the QoS 1 uplink latency histogram."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402


class TestMetrics(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("dev1", "dev2", "dev3", "dev4", "dev5", "dev6", "off")

    def test_format_and_health(self):
        hub = self.start_hub()
        st, h, body = hub.http("/healthz")
        self.assertEqual(st, 200)
        st, h, body = hub.http("/metrics")
        self.assertEqual(st, 200)
        ctype = {k.lower(): v for k, v in h.items()}.get("content-type", "")
        self.assertTrue(ctype.startswith("text/plain"), h)
        names = set()
        for line in body.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(" ", 3)
                self.assertIn(typ, ("gauge", "counter", "histogram"), line)
                names.add(name)
                continue
            if not line or line.startswith("#"):
                continue
            self.assertRegex(line, r'^(hub|process)_[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? '
                                   r'[0-9.e+-]+$')
        for n in ("hub_connections", "hub_sessions_accepted_total", "hub_auth_failures_total",
                  "hub_messages_in_total", "hub_uplink_latency_seconds"):
            self.assertIn(n, names)
        # one TYPE per metric family
        types = re.findall(r"^# TYPE (\S+)", body, re.M)
        self.assertEqual(len(types), len(set(types)), "a family is declared twice")
        self.assertEqual(hub.http("/nope")[0], 404)

    def test_counters_follow_traffic(self):
        # the 403 poll counts failures: no 429 however long the reload takes
        hub = self.start_hub(extra=["--auth-fail-limit", 1000])
        m0 = hub.metrics()
        self.assertEqual(m0["hub_connections"], 0)
        cs = [self.connect(hub, d, self.tok[d]) for d in ("dev1", "dev2", "dev3")]
        m = hub.metrics()
        self.assertEqual(m["hub_connections"], 3)
        self.assertEqual(m["hub_sessions_accepted_total"] - m0["hub_sessions_accepted_total"], 3)
        cs[0].close()
        hubfix.wait_until(lambda: hub.metrics()["hub_connections"] == 2, 5,
                          what="hub_connections 2 after a close")
        self.assertGreaterEqual(hub.metrics()['hub_sessions_closed_total{reason="closed"}'], 1)

        # auth failures by reason
        hubfix.ws_refusal(hub.url("nosuch"), "x")
        hubfix.ws_refusal(hub.url("dev4"), "bad")
        hubfix.ws_refusal(hub.url("dev4"), None)
        self.hubctl("device", "disable", "off")
        def refused_403():
            try:
                r = hubfix.RawWS(hub.port, "/v1/devices/off", self.tok["off"])
            except hubfix.Refused as e:
                return e.args[0] == 403
            r.close()
            return False
        hubfix.wait_until(refused_403, 5, interval=0.2, what="403 for a disabled device")
        m = hub.metrics()
        for r in ("unknown_device", "bad_token", "no_credentials", "disabled"):
            self.assertGreaterEqual(m[f'hub_auth_failures_total{{reason="{r}"}}'], 1, r)

        # frames in, QoS 1 latency histogram
        m1 = hub.metrics()
        N = 25
        c = cs[1]
        for i in range(1, N + 1):
            c.pub({"i": i}, qos=1, id=i)
        for i in range(1, N + 1):
            c.wait_op("ack", 10, id=i)
        c.pub({"q": 0})
        c.send_json({"op": "ping"})
        c.wait_op("pong", 5)
        m2 = hub.metrics()
        self.assertGreaterEqual(m2["hub_messages_in_total"] - m1["hub_messages_in_total"], N + 2)
        self.assertGreaterEqual(
            m2["hub_uplink_latency_seconds_count"] - m1["hub_uplink_latency_seconds_count"], N)
        self.assertGreater(m2["hub_uplink_latency_seconds_sum"], 0)
        self.assertEqual(m2['hub_uplink_latency_seconds_bucket{le="+Inf"}'],
                         m2["hub_uplink_latency_seconds_count"])
        buckets = sorted(((float(k.split('"')[1]), v) for k, v in m2.items()
                          if k.startswith("hub_uplink_latency_seconds_bucket")
                          and "+Inf" not in k))
        self.assertGreater(len(buckets), 3)
        vals = [v for _, v in buckets]
        self.assertEqual(vals, sorted(vals), "histogram buckets must be cumulative")
        self.assertGreaterEqual(m2['hub_uplink_total{qos="1"}'] - m1['hub_uplink_total{qos="1"}'], N)
        self.assertGreaterEqual(m2["hub_acks_sent_total"] - m1["hub_acks_sent_total"], N)
        self.assertEqual(m2["hub_broker_connected"], 1)
        self.assertEqual(m2["hub_registry_open"], 1)
        self.assertEqual(m2["hub_workers"], 1)
        # the registry writer: 3 sessions opened and 1 closed (plus the
        # auth failures) are rows, committed in at least one transaction
        hubfix.wait_until(
            lambda: hub.metrics().get("hub_registry_rows_total", 0) >= 4, 10,
            what="registry rows committed")
        m3 = hub.metrics()
        self.assertGreaterEqual(m3["hub_registry_commits_total"], 1)
        self.assertLessEqual(m3["hub_registry_commits_total"],
                             m3["hub_registry_rows_total"])

    def test_gauge_sums_workers(self):
        hub = self.start_hub(workers=2)
        ids = ["dev1", "dev2", "dev3", "dev4", "dev5", "dev6"]
        cs = [self.connect(hub, d, self.tok[d]) for d in ids]
        for c in cs:
            c.send_json({"op": "ping"})
            c.wait_op("pong", 5)
        # any worker may answer /metrics: every answer has the sum
        for _ in range(10):
            m = hub.metrics()
            self.assertEqual(m["hub_connections"], 6)
            self.assertEqual(m["hub_workers"], 2)
            self.assertEqual(m["hub_broker_connected"], 2)
        for c in cs[:4]:
            c.close()
        hubfix.wait_until(lambda: hub.metrics()["hub_connections"] == 2, 5,
                          what="hub_connections 2")


if __name__ == "__main__":
    hubfix.main()
