"""Presence: retained devices/ID/status with rising seq, the registry's
online/offline rows, and the hub ending sessions (disable 4003, token
rotation 1008, idle timeout) with the right reason (docs/protocol.md, docs/operations.md)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import RawWS, status_msgs  # noqa: E402


class TestPresence(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("dev1", "dev2")

    def wait_status(self, sub, device, pred, timeout=10, what="status"):
        return hubfix.wait_until(
            lambda: next((s for s in status_msgs(sub, device) if pred(s)), None),
            timeout, what=f"{device} {what}; have {status_msgs(sub, device)}")

    def test_online_offline_seq_events(self):
        hub = self.start_hub()
        sub = self.mqtt("devices/dev1/status")
        c = self.connect(hub, "dev1", self.tok["dev1"])
        on1 = self.wait_status(sub, "dev1", lambda s: s["online"], what="online")
        self.assertEqual(set(on1), {"online", "seq", "ts", "hub", "session", "addr"}, on1)
        self.assertEqual(on1["hub"], "hubA")
        self.assertEqual(on1["addr"], "127.0.0.1")
        self.assertIsInstance(on1["seq"], int)
        self.assertIsInstance(on1["ts"], int)
        self.assertTrue(on1["session"])
        self.assertLess(abs(on1["ts"] / 1000 - time.time()), 60, "ts is ms since the epoch")
        # retained, QoS 1
        self.assertEqual(hubfix.retained_status(self.broker.port, "dev1"), on1)
        # hubctl device list: online while connected
        devs = {d["id"]: d for d in self.device_list()}
        self.assertTrue(devs["dev1"]["online"], devs)
        self.assertFalse(devs["dev2"]["online"], devs)
        self.assertEqual(set(devs["dev1"]), {"id", "name", "disabled", "online", "last_seen"})

        c.close()
        off1 = self.wait_status(sub, "dev1", lambda s: not s["online"], what="offline")
        self.assertEqual(off1["reason"], "closed")
        self.assertGreater(off1["seq"], on1["seq"])
        self.assertEqual(set(off1), {"online", "seq", "ts", "reason"}, off1)
        self.assertEqual(hubfix.retained_status(self.broker.port, "dev1"), off1)
        hubfix.wait_until(lambda: not {d["id"]: d for d in self.device_list()}["dev1"]["online"],
                          5, what="device list: dev1 offline")

        c = self.connect(hub, "dev1", self.tok["dev1"])
        on2 = self.wait_status(sub, "dev1", lambda s: s["online"] and s["seq"] > off1["seq"],
                               what="second online")
        self.assertNotEqual(on2["session"], on1["session"])
        c.close()
        off2 = self.wait_status(sub, "dev1", lambda s: not s["online"] and s["seq"] > on2["seq"],
                                what="second offline")
        seqs = [s["seq"] for s in status_msgs(sub, "dev1")]
        self.assertEqual(seqs, sorted(seqs), "seq must rise with every transition")
        self.assertEqual(len(seqs), len(set(seqs)))

        # the registry: newest first, one row per transition
        ev = self.events(device="dev1")
        rows = [(e["kind"], e["reason"], e["session"]) for e in ev]
        self.assertEqual(rows[:4], [
            ("offline", "closed", on2["session"]),
            ("online", None, on2["session"]),
            ("offline", "closed", on1["session"]),
            ("online", None, on1["session"])], ev)
        self.assertEqual(len(ev), 4, ev)
        evseq = [e["seq"] for e in ev]
        self.assertEqual(evseq, sorted(evseq, reverse=True))
        for e in ev:
            self.assertEqual(e["device"], "dev1")
            self.assertEqual(e["hub"], "hubA")
        self.assertEqual(ev[1]["addr"], "127.0.0.1")
        self.assertEqual(off2["reason"], "closed")
        # --limit
        self.assertEqual(len(self.events(device="dev1", limit=2)), 2)

    def test_disable_closes_live_session_4003(self):
        hub = self.start_hub()
        sub = self.mqtt("devices/+/status")
        c = self.connect(hub, "dev1", self.tok["dev1"])
        c2 = self.connect(hub, "dev2", self.tok["dev2"])
        self.wait_status(sub, "dev1", lambda s: s["online"])
        t0 = time.monotonic()
        self.hubctl("device", "disable", "dev1")
        code = c.wait_closed(5)
        dt = time.monotonic() - t0
        self.assertEqual(code, 4003)
        # ~2 s on a quiet machine (the registry is polled once a second)
        self.assertLess(dt, hubfix.T(3.0), f"disable took {dt:.2f}s to reach the live session")
        off = self.wait_status(sub, "dev1", lambda s: not s["online"])
        self.assertEqual(off["reason"], "disabled")
        ev = self.events(device="dev1")
        self.assertEqual((ev[0]["kind"], ev[0]["reason"]), ("offline", "disabled"), ev)
        # the other device is untouched
        self.assertTrue(c2.is_open())
        c2.send_json({"op": "ping"})
        c2.wait_op("pong", 5)
        # enable again: it can connect
        self.hubctl("device", "enable", "dev1")

        def back():
            try:
                x = hubfix.WS.connect(hub.url("dev1"), self.tok["dev1"])
            except hubfix.websockets.exceptions.InvalidHandshake:
                return None
            self.clients.append(x)
            return x
        hubfix.wait_until(back, 5, interval=0.2, what="dev1 accepted after enable")

    def test_rotate_token_closes_1008(self):
        hub = self.start_hub()
        sub = self.mqtt("devices/dev1/status")
        c = self.connect(hub, "dev1", self.tok["dev1"])
        self.wait_status(sub, "dev1", lambda s: s["online"])
        t0 = time.monotonic()
        new = self.hubctl("device", "rotate-token", "dev1").stdout.decode().strip()
        self.assertTrue(new and new != self.tok["dev1"])
        self.assertEqual(c.wait_closed(5), 1008)
        self.assertLess(time.monotonic() - t0, hubfix.T(3.0))
        off = self.wait_status(sub, "dev1", lambda s: not s["online"])
        self.assertIn(off["reason"], ("disabled", "closed", "kicked"), off)
        # the old token is refused, the new one works
        st, _ = hubfix.ws_refusal(hub.url("dev1"), self.tok["dev1"])
        self.assertEqual(st, 401)
        c = self.connect(hub, "dev1", new)
        c.send_json({"op": "ping"})
        c.wait_op("pong", 5)

    def test_closing_session_superseded_by_reconnect(self):
        """A session already closing when its device reconnects (kicked
        while its socket is full: a device that does not read keeps it
        open until the idle timeout): its late end must not publish an
        offline status over the new session's online one."""
        hub = self.start_hub(extra=["--heartbeat", 1, "--idle-timeout", 5])
        sub = self.mqtt("devices/dev1/status")
        pub = self.mqtt()
        old = RawWS(hub.port, "/v1/devices/dev1", self.tok["dev1"])  # never reads
        self.addCleanup(old.close)
        on1 = self.wait_status(sub, "dev1", lambda s: s["online"], what="online")
        # fill the kernel's buffers and the hub's queue for it
        body = b'"' + b"x" * 4094 + b'"'

        def full():
            for _ in range(200):
                pub.c.publish("devices/dev1/cmd/fill", body, qos=0)
            return hub.metrics().get('hub_drops_total{reason="downlink_queue_full"}', 0) > 0
        hubfix.wait_until(full, 30, interval=0.1, what="the device's queue full")
        log_before = len(hub.log_text())
        self.hubctl("kick", "dev1")
        hubfix.wait_until(lambda: "HUB-KICK" in hub.log_text()[log_before:], 10,
                          what="the hub handled the kick")
        new = self.connect(hub, "dev1", self.tok["dev1"])
        on2 = self.wait_status(sub, "dev1", lambda s: s["online"] and s["seq"] > on1["seq"],
                               what="online of the new session")
        # the old session ends at last (close handshake or idle timeout)
        def old_row():
            return next((e for e in self.events(device="dev1")
                         if e["kind"] == "offline" and e["session"] == on1["session"]), None)
        row = hubfix.wait_until(old_row, 30, interval=0.2, what="the old session's end")
        # the writer has handed any status of that end to the bridge with
        # the commit; the barrier in retained() orders after it at the broker
        self.assertTrue(new.is_open())
        st = hubfix.retained_status(self.broker.port, "dev1")
        self.assertTrue(st["online"], f"retained status says offline while connected: {st}")
        self.assertEqual(st["session"], on2["session"])
        late = [s for s in status_msgs(sub, "dev1") if s["seq"] > on2["seq"]]
        self.assertEqual(late, [], "a status after the new session's online")
        # relabelled: it ended because a newer session took its place
        self.assertEqual(row["reason"], "replaced", row)

    def test_idle_timeout(self):
        # idle 5 s: a client that answers pings stays even when a loaded
        # machine delays its pongs by seconds
        hub = self.start_hub(extra=["--heartbeat", 1, "--idle-timeout", 5])
        sub = self.mqtt("devices/+/status")
        # a normal client answers the hub's pings (websockets does) and stays
        good = self.connect(hub, "dev2", self.tok["dev2"])
        # a raw client that completes the upgrade, then stays silent
        r = RawWS(hub.port, "/v1/devices/dev1", self.tok["dev1"])
        try:
            t0 = time.monotonic()
            self.wait_status(sub, "dev1", lambda s: s["online"])
            try:
                code = r.wait_close(15)
            except AssertionError:
                self.fail("a silent client was not closed in time with --heartbeat 1 "
                          f"--idle-timeout 5; WebSocket pings it got: {r.pings}")
            dt = time.monotonic() - t0
        finally:
            r.close()
        self.assertGreaterEqual(r.pings, 1, "the hub sent no WebSocket ping")
        self.assertGreaterEqual(dt, 4.0, f"closed after {dt:.1f}s, before the idle timeout")
        self.assertLess(dt, 5.0 + hubfix.T(3.0), f"closed only after {dt:.1f}s")
        self.assertIn(code, (None, 1001, 1006, 1000, 1008), code)
        off = self.wait_status(sub, "dev1", lambda s: not s["online"])
        self.assertEqual(off["reason"], "timeout")
        ev = self.events(device="dev1")
        self.assertEqual((ev[0]["kind"], ev[0]["reason"]), ("offline", "timeout"), ev)
        # the answering client is still there well past the idle timeout
        deadline = t0 + 7.0
        while time.monotonic() < deadline:
            self.assertTrue(good.is_open(), "a client answering pings was closed")
            time.sleep(0.2)
        good.send_json({"op": "ping"})
        good.wait_op("pong", 5)
        self.assertFalse([s for s in status_msgs(sub, "dev2") if not s["online"]])


if __name__ == "__main__":
    hubfix.main()
