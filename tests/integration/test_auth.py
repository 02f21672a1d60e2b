"""Authentication: refusals are HTTP answers before the upgrade (docs/protocol.md, docs/operations.md), successes with either credential form, the hub.v1
subprotocol, and the auth_failed rows in the registry."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import RawWS, Refused, ws_refusal  # noqa: E402


class TestAuth(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("dev1", "dev2", "dev3")

    def test_refusals(self):
        # the 403 poll below counts failures: no 429 however long the
        # credential reload takes on a loaded machine
        hub = self.start_hub(extra=["--auth-fail-limit", 1000])
        t1, t2 = self.tok["dev1"], self.tok["dev2"]

        # 401: unknown device, bad token, another device's token, nothing
        st, h = ws_refusal(hub.url("nosuch"), t1)
        self.assertEqual(st, 401, "unknown device")
        self.assertIn("bearer", h.get("www-authenticate", "").lower())
        st, _ = ws_refusal(hub.url("dev1"), t1[:-2] + ("AA" if t1[-2:] != "AA" else "BB"))
        self.assertEqual(st, 401, "bad token")
        st, _ = ws_refusal(hub.url("dev1"), t2)
        self.assertEqual(st, 401, "another device's token")
        st, _ = ws_refusal(hub.url("dev1"), None)
        self.assertEqual(st, 401, "no credentials")
        st, _ = ws_refusal(hub.url("dev1"), t2, via="query")
        self.assertEqual(st, 401, "another device's token in ?token=")

        # 403: disabled (the hub reloads credentials within ~2 s)
        self.hubctl("device", "disable", "dev3")
        def refused_403():
            try:
                r = RawWS(hub.port, "/v1/devices/dev3", self.tok["dev3"])
            except Refused as e:
                return e.args[0]
            r.close()
            return None
        st = hubfix.wait_until(refused_403, 5, interval=0.2,
                               what="disabled device refused")
        self.assertEqual(st, 403, "disabled device")
        # the right answer also for a disabled device given by ?token=
        st, _ = ws_refusal(hub.url("dev3"), self.tok["dev3"], via="query")
        self.assertEqual(st, 403)

        # 404: a bad path, an invalid id (auth is not even tried)
        for path in ("/v2/devices/dev1", "/v1/device/dev1", "/",
                     "/v1/devices/", "/v1/devices/bad.id",
                     "/v1/devices/" + "a" * 65, "/v1/devices/dev1/extra"):
            st, _ = ws_refusal(f"wss://127.0.0.1:{hub.port}{path}", t1)
            self.assertEqual(st, 404, path)

        # the hub still takes the right credentials afterwards
        c = self.connect(hub, "dev1", t1)
        self.assertEqual(c.subprotocol, "hub.v1")
        c.close()

        # failures are registry events with their reason, one per source
        # address and minute (the first one; metrics count them all), so
        # an attack cannot grow the registry without bound; a disabled
        # device's refusals are each recorded
        def reasons():
            ev = self.events()
            return sorted((e["device"], e["reason"]) for e in ev
                          if e["kind"] == "auth_failed")
        want = sorted([("nosuch", "unknown_device"), ("dev3", "disabled"),
                       ("dev3", "disabled")])
        got = hubfix.wait_until(lambda: reasons() if len(reasons()) >= len(want) else None,
                                5, interval=0.2, what="auth_failed events")
        # a 403 poll may have run more than once before the reload
        self.assertEqual([r for r in got if r[1] != "disabled"],
                         [r for r in want if r[1] != "disabled"])
        m = hub.metrics()
        self.assertEqual(m.get('hub_auth_failures_total{reason="bad_token"}', 0), 3)
        self.assertEqual(m.get('hub_auth_failures_total{reason="no_credentials"}', 0), 1)
        self.assertGreaterEqual(sum(1 for r in got if r == ("dev3", "disabled")), 2)
        ev = [e for e in self.events() if e["kind"] == "auth_failed"]
        for e in ev:
            self.assertEqual(e["addr"], "127.0.0.1", e)
            self.assertEqual(e["hub"], "hubA", e)
            self.assertIsInstance(e["ts"], int)

    def test_refusal_is_valid_http11(self):
        """An independent client (Python websockets) must be able to read
        the refusal: the status line answers an HTTP/1.1 request with
        HTTP/1.1 (RFC 9110 2.5; websockets rejects an HTTP/1.0 answer)."""
        hub = self.start_hub(extra=["--auth-fail-limit", 2])
        with self.assertRaises(Refused) as cm:
            RawWS(hub.port, "/v1/devices/dev1", "wrong")
        self.assertTrue(cm.exception.args[2].startswith("HTTP/1.1 401"),
                        cm.exception.args[2])
        st, _ = hubfix.ws_refusal_websockets(hub.url("nosuch"), "x")
        self.assertEqual(st, 401)
        st, h = hubfix.ws_refusal_websockets(hub.url("dev1"), self.tok["dev1"])
        self.assertEqual(st, 429)
        self.assertIn("retry-after", h)

    def test_success_header_and_query(self):
        hub = self.start_hub()
        c = self.connect(hub, "dev1", self.tok["dev1"], via="header")
        self.assertEqual(c.subprotocol, "hub.v1")
        c.send_json({"op": "ping"})
        c.wait_op("pong", 5)
        c2 = self.connect(hub, "dev2", self.tok["dev2"], via="query")
        self.assertEqual(c2.subprotocol, "hub.v1")
        c2.send_json({"op": "ping"})
        c2.wait_op("pong", 5)
        # no subprotocol offered: accepted too, and none selected
        c3 = self.connect(hub, "dev3", self.tok["dev3"], subprotocols=None)
        self.assertIsNone(c3.subprotocol)
        c3.send_json({"op": "ping"})
        c3.wait_op("pong", 5)
        # hub.v1 among other offers is selected
        c.close()
        c4 = self.connect(hub, "dev1", self.tok["dev1"], subprotocols=("x.v9", "hub.v1"))
        self.assertEqual(c4.subprotocol, "hub.v1")
        for x in (c2, c3, c4):
            self.assertTrue(x.is_open())
        # a raw client sees the protocol header on the 101
        r = RawWS(hub.port, "/v1/devices/dev2?token=" + self.tok["dev2"], token=None)
        self.assertEqual(r.headers.get("sec-websocket-protocol"), "hub.v1")
        r.close()
        # the header wins over a wrong ?token= (credentials in order)
        c5 = hubfix.WS.connect(hub.url("dev3", "?token=wrong"), self.tok["dev3"])
        self.clients.append(c5)
        self.assertTrue(c5.is_open())

    def test_rate_limit_429(self):
        hub = self.start_hub(extra=["--auth-fail-limit", 3])
        for i in range(3):
            st, _ = ws_refusal(hub.url("dev1"), "wrong-token-%d" % i)
            self.assertEqual(st, 401, f"attempt {i + 1}")
        st, h = ws_refusal(hub.url("dev1"), "wrong-token-x")
        self.assertEqual(st, 429)
        ra = h.get("retry-after")
        self.assertIsNotNone(ra, f"429 without Retry-After: {h}")
        self.assertTrue(ra.isdigit() and 1 <= int(ra) <= 60, ra)
        # blocked per address: even the right token waits
        st, h = ws_refusal(hub.url("dev2"), self.tok["dev2"])
        self.assertEqual(st, 429)
        self.assertIn("retry-after", h)
        # a raw request sees the same
        with self.assertRaises(Refused) as cm:
            RawWS(hub.port, "/v1/devices/dev2", token=self.tok["dev2"])
        self.assertEqual(cm.exception.args[0], 429)
        # the hub counts it
        m = hub.metrics()
        self.assertGreaterEqual(m.get('hub_auth_failures_total{reason="rate_limited"}', 0), 3)
        self.assertEqual(m.get('hub_auth_failures_total{reason="bad_token"}', 0), 3)


if __name__ == "__main__":
    hubfix.main()
