"""Limits before work (docs/protocol.md "Limits", docs/operations.md): every
frame - pings and acks too - is charged to the device's budget of frames
(--rate) and bytes (--rate-bytes) before it is parsed; unauthenticated
connections per address are capped (--max-pending-per-addr) and must finish
in --handshake-timeout; the failed-auth limit is per hub, not per worker;
auth_failed events are one per address and minute and pruned after
--events-retention days. The hub keeps serving other devices throughout."""

import os
import socket
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import ws_refusal  # noqa: E402


def closed_by_peer(s, timeout):
    """True if the hub closes s (EOF/reset) within timeout seconds."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class TestLimits(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("dev1", "dev2")

    def test_pings_are_charged(self):
        hub = self.start_hub(extra=["--rate", 5])
        c = self.connect(hub, "dev1", self.tok["dev1"])
        n = 60
        for _ in range(n):
            c.send('{"op":"ping"}')
        # every frame gets exactly one answer: a pong or err rate_limited
        c.wait_for(lambda m: len(c.ops("pong")) + len(c.ops("err")) >= n,
                   15, "an answer to every ping")
        pongs, errs = len(c.ops("pong")), c.ops("err")
        self.assertEqual(pongs + len(errs), n)
        self.assertTrue(all(e["code"] == "rate_limited" for e in errs), errs)
        # burst 5, plus 5/s for however long sending took
        self.assertLessEqual(pongs, 5 + 5 * 3, (pongs, len(errs)))
        self.assertGreaterEqual(len(errs), n - 20)
        m = hub.metrics()
        self.assertGreaterEqual(
            m.get('hub_drops_total{reason="rate_limited"}', 0), len(errs))
        # a device within its budget is unaffected
        c2 = self.connect(hub, "dev2", self.tok["dev2"])
        c2.send('{"op":"ping"}')
        c2.wait_op("pong")

    def test_bytes_are_charged(self):
        # 2 KiB per second and a 2 KiB burst: 1.5 KB frames, one now and
        # then about one more per 0.75 s
        hub = self.start_hub(extra=["--rate-bytes", 2048,
                                    "--max-frame", 2048])
        sub = self.mqtt("devices/dev1/#")
        c = self.connect(hub, "dev1", self.tok["dev1"])
        n = 20
        t0 = time.monotonic()
        for i in range(n):
            c.pub("x" * 1500, topic="big", qos=1, id=i + 1)
        c.wait_for(lambda m: len(c.ops("ack")) + len(c.ops("err")) >= n,
                   15, "an answer to every frame")
        took = time.monotonic() - t0
        acks, errs = c.ops("ack"), c.ops("err")
        self.assertEqual(len(acks) + len(errs), n)
        self.assertTrue(all(e["code"] == "rate_limited" for e in errs), errs)
        self.assertLessEqual(len(acks), 1 + int(took * 2048 / 1500) + 1,
                             (len(acks), took))
        self.assertGreaterEqual(len(acks), 1)
        sub.wait_count(lambda m: m.topic == "devices/dev1/big",
                             len(acks), 10, "the accepted messages")
        self.assertEqual(len(sub.find(lambda m: m.topic == "devices/dev1/big")),
                         len(acks))

    def test_pending_per_addr_and_handshake_timeout(self):
        hub = self.start_hub(extra=["--max-pending-per-addr", 3,
                                    "--handshake-timeout", 2])
        # three silent connections: no TLS hello, no request
        held = [socket.create_connection(("127.0.0.1", hub.port), timeout=5)
                for _ in range(3)]
        # wait until the hub has accepted them all (their counts exist):
        # a fourth is closed at once
        def fourth_refused():
            s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
            try:
                return closed_by_peer(s, 0.5)
            finally:
                s.close()
        hubfix.wait_until(fourth_refused, 5, interval=0.05,
                          what="a fourth pending connection refused")
        # --handshake-timeout 2: the silent ones are dropped in time
        t0 = time.monotonic()
        for s in held:
            self.assertTrue(closed_by_peer(s, 10 - (time.monotonic() - t0)),
                            "silent connection still open")
            s.close()
        self.assertLess(time.monotonic() - t0, 8)
        # the address is free again: a device connects and works
        c = self.connect(hub, "dev1", self.tok["dev1"])
        c.send('{"op":"ping"}')
        c.wait_op("pong")
        # an authenticated session does not count as pending
        more = [self.connect(hub, "dev2", self.tok["dev2"])]
        more[0].send('{"op":"ping"}')
        more[0].wait_op("pong")

    def test_auth_fail_limit_is_per_hub(self):
        # 4 workers: before, each worker had its own table (4 x the limit)
        hub = self.start_hub(extra=["--auth-fail-limit", 3], workers=4)
        for i in range(3):
            st, _ = ws_refusal(hub.url("dev1"), "wrong-%d" % i)
            self.assertEqual(st, 401, f"attempt {i + 1}")
        # new connections land on any worker: all see the same count
        for i in range(12):
            st, _ = ws_refusal(hub.url("dev1"), self.tok["dev1"])
            self.assertEqual(st, 429, f"attempt {i + 4}")
        # one auth_failed event for the address in this minute
        ev = [e for e in self.events() if e["kind"] == "auth_failed"]
        self.assertEqual(len(ev), 1, ev)
        self.assertEqual(ev[0]["addr"], "127.0.0.1")

    def test_events_retention(self):
        # an old event and a recent one, written before the hub starts
        self.hubctl("init", check=False)
        now = int(time.time() * 1000)
        db = sqlite3.connect(self.db)
        with db:
            db.execute("INSERT INTO events(device, kind, reason, ts, addr, hub)"
                       " VALUES ('dev1', 'auth_failed', 'bad_token', ?, "
                       "'10.0.0.1', 'hubA')", (now - 3 * 86400 * 1000,))
            db.execute("INSERT INTO events(device, kind, reason, ts, addr, hub)"
                       " VALUES ('dev1', 'auth_failed', 'bad_token', ?, "
                       "'10.0.0.2', 'hubA')", (now - 3600 * 1000,))
        db.close()
        self.assertEqual(len([e for e in self.events()
                              if e["kind"] == "auth_failed"]), 2)
        hub = self.start_hub(extra=["--events-retention", 2])

        def pruned():
            ev = [e for e in self.events() if e["kind"] == "auth_failed"]
            return ev if len(ev) == 1 else None
        ev = hubfix.wait_until(pruned, 10, interval=0.2,
                               what="the old event pruned")
        self.assertEqual(ev[0]["addr"], "10.0.0.2")
        self.assertTrue(hub.running())


if __name__ == "__main__":
    hubfix.main()
