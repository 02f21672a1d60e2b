"""Uplink: device frames over wss (Python websockets, a raw client, and
hub-device) to MQTT topics devices/ID/..., exact payload bytes, user
properties, acks only after the broker's PUBACK, err frames and close
codes (docs/protocol.md, docs/operations.md)."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import RawWS  # noqa: E402


class TestUplink(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("dev1", "dev2")

    def dev(self, hub, device="dev1", **kw):
        return self.connect(hub, device, self.tok[device], **kw)

    def test_qos0_exact_payloads(self):
        hub = self.start_hub()
        sub = self.mqtt("devices/dev1/#")
        c = self.dev(hub)
        # (frame text, topic, payload bytes on MQTT)
        cases = [
            ('{"op":"pub","topic":"telemetry","payload":{"t":21.50, "u":"C"},"qos":0}',
             "telemetry", b'{"t":21.50, "u":"C"}'),
            ('{"op":"pub","topic":"telemetry","payload":21.50}',
             "telemetry", b"21.50"),
            ('{"op":"pub","topic":"telemetry","payload": [1, 2.0,  3e2 ] ,"qos":0}',
             "telemetry", b"[1, 2.0,  3e2 ]"),
            ('{"op":"pub","topic":"a/b/c","payload":"hello w\u00f6rld"}',
             "a/b/c", "hello w\u00f6rld".encode()),
            ('{"op":"pub","topic":"s","payload":"esc \\"q\\" \\u00e9 \\ud83d\\ude00 \\n"}',
             "s", 'esc "q" \u00e9 \U0001F600 \n'.encode()),
            ('{"qos":0,"payload":{"nested":{"x":[true,false,null]}},"topic":"order","op":"pub"}',
             "order", b'{"nested":{"x":[true,false,null]}}'),
            ('{"op":"pub","topic":"n","payload":null}', "n", b"null"),
            ('{"op":"pub","topic":"e","payload":""}', "e", b""),
        ]
        for text, _, _ in cases:
            c.send(text)
        data = lambda m: not m.topic.endswith("/status")  # noqa: E731
        got = sub.wait_count(data, len(cases), 10, "uplink messages")
        got = sub.find(data)
        self.assertEqual([(m.topic, m.payload) for m in got],
                         [("devices/dev1/" + t, p) for _, t, p in cases])
        st = hubfix.retained_status(self.broker.port, "dev1")
        for m in got:
            self.assertFalse(m.retain)
            self.assertEqual(m.props.get("session"), st["session"], m)
            self.assertNotIn("id", m.props)
        self.assertFalse(c.ops("err"), c.ops("err"))

    def test_online_status_before_first_message(self):
        """A subscriber tracking presence never sees data of a device it
        believes offline: the session's online status reaches the broker
        before the device's first message, even one sent at once."""
        hub = self.start_hub()
        sub = self.mqtt("devices/dev1/#")
        for n in range(3):
            before = len(sub.find(lambda m: True))
            r = RawWS(hub.port, "/v1/devices/dev1", self.tok["dev1"])
            try:
                # sent right after the 101, before anything else can happen
                r.send_frame(0x1, json.dumps({"op": "pub", "topic": "telemetry",
                                              "payload": {"n": n}}).encode())
                first = sub.wait_for(lambda m: m.topic == "devices/dev1/telemetry" and
                                     json.loads(m.payload) == {"n": n}, 10,
                                     what=f"telemetry {n}")
                got = sub.find(lambda m: True)[before:]
                order = [m.topic.rsplit("/", 1)[1] for m in got]
                self.assertIn("status", order, order)
                self.assertLess(order.index("status"), order.index("telemetry"),
                                f"telemetry before the online status: {order}")
                st = json.loads(got[order.index("status")].payload)
                self.assertTrue(st["online"], st)
                self.assertEqual(st["session"], first.props.get("session"))
            finally:
                r.close()
            # its offline status is in before the next round counts
            sub.wait_for(lambda m: m.topic == "devices/dev1/status" and
                         json.loads(m.payload)["seq"] > st["seq"], 10,
                         what="the offline status")

    def test_qos1_ack_after_puback(self):
        hub = self.start_hub()
        sub = self.mqtt()
        sub.subscribe("devices/dev1/telemetry", qos=1)
        c = self.dev(hub)
        for i in range(1, 21):
            c.pub({"i": i}, qos=1, id=i)
        for i in range(1, 21):
            c.wait_op("ack", 10, id=i)
        got = sub.wait_count(lambda m: True, 20, 10, "QoS 1 messages")
        self.assertEqual(sorted(int(m.props["id"]) for m in got), list(range(1, 21)))
        for m in got:
            self.assertEqual(json.loads(m.payload)["i"], int(m.props["id"]))
            self.assertIn("session", m.props)

        # the broker frozen (SIGSTOP): no PUBACK, so no ack may come
        self.broker.pause()
        try:
            c.pub({"frozen": 1}, qos=1, id=4242)
            time.sleep(1.5)  # nothing can be waited for: the ack must NOT come
            self.assertEqual(c.find(lambda m: m.get("op") == "ack" and m.get("id") == 4242),
                             [], "ack sent before the broker's PUBACK")
        finally:
            self.broker.resume()
        c.wait_op("ack", 10, id=4242)
        t_ack = max(t for t, m in c.msgs if isinstance(m, dict) and m.get("id") == 4242
                    and m.get("op") == "ack")
        m = sub.wait_for(lambda m: m.props.get("id") == "4242", 5)
        self.assertEqual(json.loads(m.payload), {"frozen": 1})
        # the broker forwards to subscribers before it PUBACKs the hub; the
        # two clients run on different threads here, so only a loose bound
        self.assertLessEqual(m.t, t_ack + hubfix.T(1.0))

    def test_binary_frames(self):
        hub = self.start_hub()
        sub = self.mqtt("devices/dev1/#")
        c = self.dev(hub)
        raw = bytes(range(256))
        topic = b"bin/raw"
        c.send(bytes([len(topic)]) + topic + raw)
        c.send(bytes([1]) + b"x")  # empty payload
        m = sub.wait_for(lambda m: m.topic == "devices/dev1/bin/raw")
        self.assertEqual(m.payload, raw)
        m = sub.wait_for(lambda m: m.topic == "devices/dev1/x")
        self.assertEqual(m.payload, b"")
        # bad binary frames: topic length 0, longer than the frame, bad topic
        c.send(bytes([0]) + b"abc")
        c.wait_for(lambda m: m["op"] == "err" and m["code"] == "bad_frame", 5)
        c.send(bytes([50]) + b"short")
        c.send(b"")
        hubfix.wait_until(lambda: len([x for x in c.ops("err") if x["code"] == "bad_frame"]) >= 3,
                          5, what="3 bad_frame errs")
        for t in (b"+", b"a//b", b"$x", b"/x"):
            c.send(bytes([len(t)]) + t + b"p")
        hubfix.wait_until(lambda: len([x for x in c.ops("err") if x["code"] == "bad_topic"]) >= 4,
                          5, what="4 bad_topic errs")
        c.send(bytes([3]) + b"end" + b"!")
        sub.wait_for(lambda m: m.topic == "devices/dev1/end", 5)
        self.assertEqual(sorted(m.topic for m in sub.find(lambda m: not m.topic.endswith("/status"))),
                         ["devices/dev1/bin/raw", "devices/dev1/end", "devices/dev1/x"])
        self.assertTrue(c.is_open())

    def test_err_frames(self):
        hub = self.start_hub()
        sub = self.mqtt("devices/#")
        c = self.dev(hub)

        def err_for(text, code, id=None):
            n = len(c.ops("err"))
            c.send(text)
            e = c.wait_for(lambda m: len(c.ops("err")) > n, 5, what=f"err for {text}")
            e = c.ops("err")[n]
            self.assertEqual(e["code"], code, f"{text} -> {e}")
            self.assertIsInstance(e.get("msg"), str)
            if id is not None:
                self.assertEqual(e.get("id"), id, e)
            return e

        err_for("not json", "bad_frame")
        err_for("[1,2]", "bad_frame")
        err_for('{"op":"pub"', "bad_frame")
        err_for('{"op":"bogus","id":5}', "bad_frame")
        err_for('{"topic":"t","payload":1}', "bad_frame")
        err_for('{"op":"pub","topic":"t","payload":1,"qos":1}', "bad_frame")
        err_for('{"op":"pub","topic":"t","payload":1,"qos":2,"id":3}', "bad_frame")
        err_for('{"op":"pub","topic":"t","qos":0}', "bad_frame")
        err_for('{"op":"pub","payload":1}', "bad_frame")
        err_for('{"op":"pub","topic":"t","payload":1,"qos":1,"id":-1}', "bad_frame")
        err_for('{"op":"pub","topic":"t","payload":1,"qos":1,"id":4294967296}', "bad_frame")
        for i, t in enumerate(["a//b", "+", "#", "a/+/b", "a/#", "$x", "$SYS/x", "/lead",
                               "trail/", "", "a\u0001b", "x" * 257], start=100):
            err_for(json.dumps({"op": "pub", "topic": t, "payload": 1, "qos": 1, "id": i}),
                    "bad_topic", id=i)
        # a topic of exactly 256 bytes is fine
        ok = "y" * 256
        c.pub(1, topic=ok)
        c.pub("marker", topic="marker")
        sub.wait_for(lambda m: m.topic == "devices/dev1/marker", 5)
        self.assertEqual(sorted(m.topic for m in sub.find(lambda m: not m.topic.endswith("/status"))),
                         sorted(["devices/dev1/" + ok, "devices/dev1/marker"]),
                         "a refused frame reached the broker")
        self.assertTrue(c.is_open(), "err frames must not close the session")
        m = hub.metrics()
        self.assertGreaterEqual(m['hub_drops_total{reason="bad_frame"}'], 11)
        self.assertGreaterEqual(m['hub_drops_total{reason="bad_topic"}'], 12)

    def test_rate_limited(self):
        hub = self.start_hub(extra=["--rate", 5])
        sub = self.mqtt("devices/dev1/telemetry")
        c = self.dev(hub)
        frames = [json.dumps({"op": "pub", "topic": "telemetry", "payload": {"i": i},
                              "qos": 1, "id": i + 1}) for i in range(50)]

        async def burst():
            for f in frames:
                await c.ws.send(f)
        # the window in which the hub can have taken the 50 frames: from
        # before the first is sent until the last answer is in
        t0 = time.monotonic()
        hubfix.aloop().run(burst())
        c.wait_for(lambda m: len(c.ops("ack")) + len(c.ops("err")) >= 50, 10,
                   what="an answer for each of 50 QoS 1 frames")
        window = time.monotonic() - t0
        errs = [e for e in c.ops("err") if e["code"] == "rate_limited"]
        self.assertEqual(len(errs), len(c.ops("err")), c.ops("err"))
        for e in errs:
            self.assertIn("id", e, f"rate_limited err of a QoS 1 frame without its id: {e}")
        acks = c.ops("ack")
        # rate 5/s, burst 5: at most 5 + 5 per second of that window pass
        # (on a loaded machine the window is longer, the bound with it)
        most = 5 + int(5 * window) + 1
        self.assertGreaterEqual(len(acks), 1)
        self.assertLessEqual(len(acks), most,
                             f"rate 5/s, burst 5: far too many passed in {window:.1f}s")
        self.assertGreaterEqual(len(errs), 50 - most, f"acks={len(acks)}")
        self.assertEqual(sorted([a["id"] for a in acks] + [e["id"] for e in errs]),
                         list(range(1, 51)))
        # what passed is on the broker, what was refused is not
        got = sub.wait_count(lambda m: True, len(acks), 5)
        time.sleep(0.3)
        got = sub.find(lambda m: True)
        self.assertEqual(sorted(int(m.props["id"]) for m in got), sorted(a["id"] for a in acks))
        # the bucket refills: after a second, publishing works again
        time.sleep(1.2)
        c.pub({"again": 1}, qos=1, id=999)
        c.wait_op("ack", 5, id=999)

    def test_qos0_burst_through_small_window(self):
        # QoS 0 completions wake the bridge thread lazily (a batch at a
        # time); with a window of 4 each one must still free the window, and
        # a burst far larger than the window arrives whole and in order.
        hub = self.start_hub(extra=["--bridge-window", 4, "--rate", 100000,
                                    "--rate-bytes", 100000000])
        sub = self.mqtt("devices/dev1/telemetry")
        c = self.dev(hub)
        n = 3000
        frames = [json.dumps({"op": "pub", "topic": "telemetry", "payload": {"i": i}})
                  for i in range(n)]

        async def burst():
            for f in frames:
                await c.ws.send(f)
        hubfix.aloop().run(burst())
        sub.wait_count(lambda m: True, n, 30, f"{n} QoS 0 messages")
        got = sub.find(lambda m: True)
        self.assertEqual([json.loads(m.payload)["i"] for m in got], list(range(n)))
        m = hub.metrics()
        self.assertEqual(m.get('hub_uplink_total{qos="0"}', 0), n)
        self.assertEqual(m.get('hub_drops_total{reason="qos0_broker_down"}', 0), 0)
        self.assertFalse(c.ops("err"), c.ops("err")[:3])

    def test_too_large_1009(self):
        hub = self.start_hub(extra=["--max-frame", 1024])
        sub = self.mqtt("devices/dev1/#")
        c = self.dev(hub)
        small = json.dumps({"op": "pub", "topic": "t", "payload": "x" * 900})
        self.assertLess(len(small), 1024)
        c.send(small)
        sub.wait_for(lambda m: m.topic == "devices/dev1/t", 5)
        c.send(json.dumps({"op": "pub", "topic": "t", "payload": "x" * 2000}))
        self.assertEqual(c.wait_closed(5), 1009)
        # fragmented: each fragment small, the message too large
        r = RawWS(hub.port, "/v1/devices/dev2", self.tok["dev2"])
        try:
            part = b"x" * 600
            r.send_frame(0x1, b'{"op":"pub","topic":"t","payload":"' + part, fin=False)
            r.send_frame(0x0, part, fin=False)
            r.send_frame(0x0, part + b'"}', fin=True)
            self.assertEqual(r.wait_close(5), 1009)
        finally:
            r.close()
        # a binary frame too
        c2 = self.dev(hub, "dev1")
        c2.send(bytes([1]) + b"b" + b"\0" * 3000)
        self.assertEqual(c2.wait_closed(5), 1009)

    def test_invalid_utf8_1007(self):
        hub = self.start_hub()
        sub = self.mqtt("devices/dev1/#")
        r = RawWS(hub.port, "/v1/devices/dev1", self.tok["dev1"])
        try:
            r.send_frame(0x1, b'{"op":"pub","topic":"t","payload":"\xff\xfe"}')
            self.assertEqual(r.wait_close(5), 1007)
        finally:
            r.close()
        # overlong encoding and a lone surrogate are invalid too
        for bad in (b'{"op":"ping","x":"\xc0\xaf"}', b'{"op":"ping","x":"\xed\xa0\x80"}'):
            r = RawWS(hub.port, "/v1/devices/dev1", self.tok["dev1"])
            try:
                r.send_frame(0x1, bad)
                self.assertEqual(r.wait_close(5), 1007, bad)
            finally:
                r.close()
        time.sleep(0.2)
        self.assertEqual(sub.find(lambda m: m.topic == "devices/dev1/t"), [])

    def test_app_ping(self):
        hub = self.start_hub()
        c = self.dev(hub)
        c.send_json({"op": "ping"})
        self.assertEqual(c.wait_op("pong", 5), {"op": "pong"})
        c.send_json({"op": "pong"})  # a pong from the device is taken silently
        c.send_json({"op": "ping"})
        c.wait_for(lambda m: len(c.ops("pong")) == 2, 5)
        self.assertFalse(c.ops("err"))

    def test_hub_device_client(self):
        hub = self.start_hub()
        sub = self.mqtt("devices/dev1/telemetry")
        p = subprocess.run(
            [hubfix.HUB_DEVICE, "--url", f"wss://127.0.0.1:{hub.port}", "--id", "dev1",
             "--token", self.tok["dev1"], "--insecure", "--qos", "1", "--count", "5",
             "--interval", "50", "--exit-after", "5", "--quiet"],
            capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        got = sub.wait_count(lambda m: True, 5, 10, "hub-device messages")
        self.assertEqual(len(got), 5)
        seqs = sorted(json.loads(m.payload)["seq"] for m in got)
        self.assertEqual(seqs, [1, 2, 3, 4, 5])
        self.assertEqual(sorted(int(m.props["id"]) for m in got), [1, 2, 3, 4, 5])
        # and with ?token=
        p = subprocess.run(
            [hubfix.HUB_DEVICE, "--url", f"wss://127.0.0.1:{hub.port}", "--id", "dev2",
             "--token", self.tok["dev2"], "--insecure", "--query-token", "--qos", "1",
             "--count", "2", "--interval", "20", "--exit-after", "2", "--quiet"],
            capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))


if __name__ == "__main__":
    hubfix.main()
