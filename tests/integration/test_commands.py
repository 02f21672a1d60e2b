"""Downlink (docs/protocol.md, docs/operations.md): commands through the
broker to the device holding the session, offline commands kept retained
with an expiry and cleared after the device's ack, payload kinds (JSON,
text, binary), kick (4004) and session takeover (4001) on one hub and
across hubs sharing a broker."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import status_msgs  # noqa: E402


class TestCommands(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("dev1", "dev2")
        self.sub = self.mqtt("devices/+/status")

    def online(self, device, after_seq=0):
        return hubfix.wait_until(
            lambda: next((s for s in status_msgs(self.sub, device)
                          if s["online"] and s["seq"] > after_seq), None),
            10, what=f"{device} online")

    def dev(self, hub, device="dev1"):
        # the baseline before connecting: the new online status may arrive
        # before connect() returns
        before = max([s["seq"] for s in status_msgs(self.sub, device)] + [0])
        c = self.connect(hub, device, self.tok[device])
        self.online(device, before)
        return c

    def send(self, *args):
        return self.hubctl("send", *args)

    def retained_cmds(self, device):
        return hubfix.retained(self.broker.port, f"devices/{device}/cmd/#")

    def test_live_command_qos1_and_qos0(self):
        hub = self.start_hub()
        c = self.dev(hub)
        other = self.dev(hub, "dev2")
        self.send("dev1", "reboot", '{"delay":5}', "--qos", 1)
        m = c.wait_op("msg", 10, topic="cmd/reboot")
        self.assertEqual(m["payload"], {"delay": 5})
        self.assertIsInstance(m.get("id"), int, m)
        self.assertEqual(set(m), {"op", "topic", "payload", "id"})
        c.send_json({"op": "ack", "id": m["id"]})
        # QoS 0: no id
        self.send("dev1", "led/blink", "[1,2,3]", "--qos", 0)
        m0 = c.wait_op("msg", 10, topic="cmd/led/blink")
        self.assertEqual(m0["payload"], [1, 2, 3])
        self.assertNotIn("id", m0)
        # ids rise per session
        self.send("dev1", "reboot", '{"delay":6}', "--qos", 1)
        m2 = c.wait_for(lambda x: x.get("op") == "msg" and x["payload"] == {"delay": 6}, 10)
        self.assertGreater(m2["id"], m["id"])
        # routed only to the device it names
        time.sleep(0.3)
        self.assertEqual(other.ops("msg"), [])
        self.assertFalse(c.ops("err"))
        # nothing retained by a live command
        self.assertEqual(self.retained_cmds("dev1"), [])
        m = hub.metrics()
        self.assertGreaterEqual(m["hub_commands_delivered_total"], 3)
        self.assertGreaterEqual(m["hub_command_acks_total"], 1)

    def test_qos1_burst_reaches_a_reading_device_complete(self):
        """10 000 back-to-back QoS 1 commands to a connected device that
        reads as fast as it can: every one arrives, none is dropped."""
        N = 10000
        hub = self.start_hub()
        c = self.dev(hub)
        got = set()
        cond = hubfix.threading.Condition()

        def on_msg(m):
            if isinstance(m, dict) and m.get("op") == "msg":
                with cond:
                    got.add(m["payload"]["n"])
                    cond.notify_all()
        c.keep = False
        c.listener = on_msg
        pub = self.mqtt()
        pub.c.max_inflight_messages_set(1000)
        infos = [pub.c.publish("devices/dev1/cmd/burst", '{"n":%d}' % i, qos=1)
                 for i in range(N)]
        for i in infos:
            i.wait_for_publish(hubfix.T(60))
        self.assertTrue(all(i.is_published() for i in infos), "the broker took them all")
        with cond:
            cond.wait_for(lambda: len(got) >= N, hubfix.T(60))
        drops = hub.metrics()['hub_drops_total{reason="downlink_queue_full"}']
        self.assertEqual(len(got), N, f"{N - len(got)} missing; {drops} dropped")
        self.assertEqual(drops, 0)
        self.assertTrue(c.is_open())

    def test_offline_command_delivered_then_cleared(self):
        hub = self.start_hub()
        self.send("dev1", "config/1", '{"v":1}', "--retain", "--ttl", 60)
        self.assertEqual(len(self.retained_cmds("dev1")), 1)
        # first connection: delivered, not acked -> stays retained
        c = self.dev(hub)
        m = c.wait_op("msg", 10, topic="cmd/config/1")
        self.assertEqual(m["payload"], {"v": 1})
        self.assertIn("id", m)
        c.close()
        time.sleep(0.3)
        self.assertEqual(len(self.retained_cmds("dev1")), 1,
                         "an offline command not acked by the device must wait")
        # second connection: delivered again, acked -> cleared from the broker
        c = self.dev(hub)
        m = c.wait_op("msg", 10, topic="cmd/config/1")
        self.assertEqual(m["payload"], {"v": 1})
        c.send_json({"op": "ack", "id": m["id"]})
        hubfix.wait_until(lambda: self.retained_cmds("dev1") == [], 10, interval=0.1,
                          what="retained command cleared after the ack")
        c.close()
        # and not delivered a third time
        c = self.dev(hub)
        c.send_json({"op": "ping"})
        c.wait_op("pong", 5)
        time.sleep(0.5)
        self.assertEqual(c.ops("msg"), [])

    def test_offline_commands_distinct_topics_and_text(self):
        hub = self.start_hub()
        self.send("dev1", "config/1", '{"v":1}', "--retain", "--ttl", 60)
        self.send("dev1", "config/2", "plain text", "--retain", "--ttl", 60)
        c = self.dev(hub)
        got = {}
        for t in ("cmd/config/1", "cmd/config/2"):
            got[t] = c.wait_op("msg", 10, topic=t)
        self.assertEqual(got["cmd/config/1"]["payload"], {"v": 1})
        self.assertEqual(got["cmd/config/2"]["payload"], "plain text")
        for m in got.values():
            c.send_json({"op": "ack", "id": m["id"]})
        hubfix.wait_until(lambda: self.retained_cmds("dev1") == [], 10, interval=0.1,
                          what="both retained commands cleared")

    def test_expired_offline_command_not_delivered(self):
        hub = self.start_hub()
        self.send("dev1", "config/9", '{"v":9}', "--retain", "--ttl", 1)
        # the broker drops it after 1 s: wait until it has
        hubfix.wait_until(lambda: self.retained_cmds("dev1") == [], 10, interval=0.2,
                          what="the command expired at the broker")
        c = self.dev(hub)
        c.send_json({"op": "ping"})
        c.wait_op("pong", 5)
        time.sleep(1.0)
        self.assertEqual(c.ops("msg"), [], "an expired command was delivered")

    def test_retain_needs_ttl(self):
        r = self.hubctl("send", "dev1", "x", "{}", "--retain", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        r = self.hubctl("send", "dev1", "a//b", "{}", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)

    def test_payload_kinds(self):
        hub = self.start_hub()
        c = self.dev(hub)
        pub = self.mqtt()
        # valid JSON (any value) -> that value
        for raw, want in ((b'{"a":[1,2]}', {"a": [1, 2]}), (b"42", 42), (b'"s"', "s"),
                          (b"true", True), (b"null", None), (b" [ 1 ] ", [1])):
            n = len(c.ops("msg"))
            pub.publish("devices/dev1/cmd/json", raw, qos=1)
            hubfix.wait_until(lambda: len(c.ops("msg")) > n, 10, what=f"command {raw}")
            m = c.ops("msg")[n]
            self.assertEqual((m["topic"], m["payload"]), ("cmd/json", want), raw)
        # other valid UTF-8 -> a JSON string
        for raw in ("hello world".encode(), "gr\u00fc\u00dfe \u2603".encode(), b"{broken",
                    b"quote\" and \\ and \n newline", b""):
            n = len(c.ops("msg"))
            pub.publish("devices/dev1/cmd/text", raw, qos=1)
            hubfix.wait_until(lambda: len(c.ops("msg")) > n, 10, what=f"command {raw}")
            m = c.ops("msg")[n]
            self.assertEqual((m["topic"], m["payload"]), ("cmd/text", raw.decode()), raw)
        # anything else -> a binary frame: [L][topic][raw bytes]
        raw = b"\xff\x00\x01\xfe binary"
        pub.publish("devices/dev1/cmd/bin", raw, qos=1)
        b = c.wait_for(lambda x: isinstance(x, bytes), 10, what="binary frame")
        topic = b"cmd/bin"
        self.assertEqual(b, bytes([len(topic)]) + topic + raw)

    def test_kick_4004(self):
        hub = self.start_hub()
        c = self.dev(hub)
        on = self.online("dev1")
        r = self.hubctl("--json", "kick", "dev1")
        self.assertEqual(json.loads(r.stdout), {"id": "dev1", "kicked": True})
        self.assertEqual(c.wait_closed(10), 4004)
        off = hubfix.wait_until(lambda: next((s for s in status_msgs(self.sub, "dev1")
                                              if not s["online"]), None), 10)
        self.assertEqual(off["reason"], "kicked")
        self.assertGreater(off["seq"], on["seq"])
        ev = self.events(device="dev1")
        self.assertEqual((ev[0]["kind"], ev[0]["reason"]), ("offline", "kicked"))
        # kicking an offline device is harmless
        self.hubctl("kick", "dev2")

    def assert_takeover(self, old, new, on_old, hub_new):
        self.assertEqual(old.wait_closed(10), 4001)
        on_new = self.online("dev1", on_old["seq"])
        self.assertEqual(on_new["hub"], hub_new)
        time.sleep(0.5)
        sts = status_msgs(self.sub, "dev1")
        self.assertFalse([s for s in sts if not s["online"]],
                         f"a replaced session published offline: {sts}")
        st = hubfix.retained_status(self.broker.port, "dev1")
        self.assertTrue(st["online"], st)
        self.assertEqual(st["session"], on_new["session"])
        self.assertTrue(new.is_open())
        ev = self.events(device="dev1")
        rows = {(e["kind"], e["reason"], e["session"]) for e in ev}
        self.assertIn(("offline", "replaced", on_old["session"]), rows, ev)
        return on_new

    def test_takeover_same_hub(self):
        hub = self.start_hub()
        c1 = self.dev(hub)
        on1 = self.online("dev1")
        c2 = self.connect(hub, "dev1", self.tok["dev1"])
        self.assert_takeover(c1, c2, on1, "hubA")
        # commands go to the new session
        self.send("dev1", "ping", '{"n":1}')
        c2.wait_op("msg", 10, topic="cmd/ping")
        # the old session counts until its close handshake is over
        hubfix.wait_until(lambda: hub.metrics()["hub_connections"] == 1, 10,
                          what="hub_connections 1")

    def test_takeover_across_hubs_clock_an_hour_behind(self):
        """The session that came last in the broker's order wins, whatever
        the hubs' wall clocks say: hubB's clock is an hour behind hubA's."""
        hubA = self.start_hub(hub_id="hubA")
        hubB = self.start_hub(hub_id="hubB",
                              env={"HUB_TEST_CLOCK_OFFSET_MS": str(-3600 * 1000)})
        c1 = self.dev(hubA)
        on1 = self.online("dev1")
        c2 = self.connect(hubB, "dev1", self.tok["dev1"])
        # the older session closes (4001), the newer one stays
        self.assertEqual(c1.wait_closed(10), 4001)
        on2 = self.online("dev1", on1["seq"])
        self.assertEqual(on2["hub"], "hubB")
        self.assertTrue(c2.is_open())
        hubfix.wait_until(lambda: hubA.metrics()["hub_connections"] == 0, 10,
                          what="hubA hub_connections 0")
        self.assertEqual(hubB.metrics()["hub_connections"], 1)
        # and back to the hub whose clock is ahead
        c3 = self.connect(hubA, "dev1", self.tok["dev1"])
        self.assertEqual(c2.wait_closed(10), 4001)
        self.online("dev1", on2["seq"])
        self.assertTrue(c3.is_open())
        self.send("dev1", "once", '{"n":1}')
        c3.wait_op("msg", 10, topic="cmd/once")

    def test_takeover_across_hubs(self):
        hubA = self.start_hub(hub_id="hubA")
        hubB = self.start_hub(hub_id="hubB")
        c1 = self.dev(hubA)
        on1 = self.online("dev1")
        self.assertEqual(on1["hub"], "hubA")
        c2 = self.connect(hubB, "dev1", self.tok["dev1"])
        self.assert_takeover(c1, c2, on1, "hubB")
        self.send("dev1", "ping", '{"n":2}')
        c2.wait_op("msg", 10, topic="cmd/ping")
        hubfix.wait_until(lambda: hubA.metrics()["hub_connections"] == 0, 10,
                          what="hubA hub_connections 0")
        self.assertEqual(hubB.metrics()["hub_connections"], 1)
        # and back again
        on2 = status_msgs(self.sub, "dev1")[-1]  # before: see dev()
        c3 = self.connect(hubA, "dev1", self.tok["dev1"])
        self.assertEqual(c2.wait_closed(10), 4001)
        on3 = self.online("dev1", on2["seq"])
        self.assertEqual(on3["hub"], "hubA")
        self.assertTrue(c3.is_open())
        # a command reaches the device exactly once
        self.send("dev1", "once", '{"n":3}')
        c3.wait_op("msg", 10, topic="cmd/once")
        time.sleep(0.5)
        self.assertEqual(len([m for m in c3.ops("msg") if m["topic"] == "cmd/once"]), 1)
        self.assertEqual(c2.ops("msg")[-1]["topic"] if c2.ops("msg") else None, "cmd/ping")


if __name__ == "__main__":
    hubfix.main()
