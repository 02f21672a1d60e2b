"""The durable status outbox (docs/operations.md "Shutdown, crashes,
faults", docs/protocol.md "MQTT mapping"): the newest presence status of
each device is kept in the registry, in the transaction of its session
row, until a broker acknowledged it.

- statuses made while the broker is away survive a SIGTERM of hubd and
  are published by the next start;
- statuses a SIGKILLed worker had not handed to the broker are published
  by the restarted worker;
- with the broker away, 1000 connect/disconnect cycles keep the bridge's
  queue at one status and one announcement per device
  (hub_bridge_pending), and the broker then gets each device's newest
  status;
- a late, older status from another publisher (here: another hub on the
  same registry whose broker link was cut, the same race as a crash
  repair's offline arriving after a reconnect's online) cannot stay the
  retained one: its PUBACK finds the newer status in the outbox and
  publishes it again.
"""

import asyncio
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import status_msgs  # noqa: E402
import websockets  # noqa: E402


class Relay:
    """A TCP relay to the broker that a test can cut (every connection
    dropped, new ones closed at once) and restore: one hub's broker link
    down while the broker itself stays up for the others."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.up = True
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if not self.up:
                    c.close()
                    continue
                try:
                    u = socket.create_connection(("127.0.0.1", self.target),
                                                 timeout=5)
                    u.settimeout(None)
                except OSError:
                    c.close()
                    continue
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b),
                                 daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        a.close()

    def cut(self):
        with self.lock:
            self.up = False
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        with self.lock:
            self.up = True

    def close(self):
        self.cut()
        self.sock.close()


class TestStatusOutbox(hubfix.HubTest):

    def q(self, sql, *args):
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def presence_seq(self, d):
        return self.q("SELECT presence_seq FROM devices WHERE id = ?", d)[0][0]

    def open_session(self, d):
        r = self.q("SELECT session FROM sessions WHERE device = ? AND "
                   "ended IS NULL", d)
        return r[0][0] if r else None

    def closed(self, session):
        r = self.q("SELECT reason FROM sessions WHERE session = ?", session)
        return r[0][0] if r and r[0][0] else None

    def wait_retained(self, d, what, timeout=30, **want):
        """Waits until the retained status of d has every field of want."""
        def ok():
            try:
                st = hubfix.retained_status(self.broker.port, d, timeout=2)
            except AssertionError:
                return None
            return st if all(st.get(k) == v for k, v in want.items()) \
                else None
        return hubfix.wait_until(ok, timeout, interval=0.2, what=what)

    def wait_broker_link(self, hub, up, timeout=30):
        hubfix.wait_until(
            lambda: hub.metrics().get("hub_broker_connected") == up,
            timeout, what=f"hub_broker_connected == {up}")

    def worker_pids(self, hub):
        return [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(hub.proc.pid)], capture_output=True,
            text=True).stdout.split()]

    # ---- SIGTERM with the broker down ---------------------------------

    def test_sigterm_with_broker_down_publishes_at_next_start(self):
        tok = self.add_devices("ob1", "ob2")
        hub = self.start_hub()
        c1 = self.connect(hub, "ob1", tok["ob1"])
        c1.send_json({"op": "ping"})
        c1.wait_op("pong")
        s1 = hubfix.wait_until(lambda: self.open_session("ob1"), 10,
                               what="ob1's row")
        self.wait_retained("ob1", "ob1 online", online=True, session=s1)

        self.broker.stop()
        self.wait_broker_link(hub, 0)
        # a transition of each kind while the broker is away
        c1.close()
        hubfix.wait_until(lambda: self.closed(s1), 10, what="ob1 closed")
        c2 = self.connect(hub, "ob2", tok["ob2"])
        c2.send_json({"op": "ping"})
        c2.wait_op("pong")
        s2 = hubfix.wait_until(lambda: self.open_session("ob2"), 10,
                               what="ob2's row")
        # SIGTERM: ob2 closes (shutdown); nothing reaches the broker
        self.assertEqual(hub.stop(), 0)
        self.assertEqual(self.closed(s2), "shutdown")
        want = {d: self.presence_seq(d) for d in ("ob1", "ob2")}

        # the next start, with the broker back, publishes both
        self.broker.start()
        hub2 = self.start_hub()
        self.wait_retained("ob1", "ob1's offline (closed) after the restart",
                           online=False, reason="closed", seq=want["ob1"])
        self.wait_retained("ob2", "ob2's offline (shutdown) after the restart",
                           online=False, reason="shutdown", seq=want["ob2"])
        hubfix.wait_until(
            lambda: hub2.metrics().get("hub_status_outbox_pending") == 0,
            20, what="the outbox acknowledged")
        self.assertEqual(self.q("SELECT count(*) FROM status_outbox "
                                "WHERE pending = 1")[0][0], 0)

    # ---- SIGKILL of a worker with the broker down ----------------------

    def test_sigkill_worker_with_broker_down(self):
        tok = self.add_devices("ok1", "ok2")
        hub = self.start_hub()
        c1 = self.connect(hub, "ok1", tok["ok1"])
        c2 = self.connect(hub, "ok2", tok["ok2"])
        for c in (c1, c2):
            c.send_json({"op": "ping"})
            c.wait_op("pong")
        s1 = hubfix.wait_until(lambda: self.open_session("ok1"), 10,
                               what="ok1's row")
        s2 = hubfix.wait_until(lambda: self.open_session("ok2"), 10,
                               what="ok2's row")
        self.wait_retained("ok1", "ok1 online", online=True, session=s1)
        self.wait_retained("ok2", "ok2 online", online=True, session=s2)

        self.broker.stop()
        self.wait_broker_link(hub, 0)
        c1.close()  # its offline (closed) is committed, not yet published
        hubfix.wait_until(lambda: self.closed(s1), 10, what="ok1 closed")
        workers = self.worker_pids(hub)
        self.assertEqual(len(workers), 1, workers)
        os.kill(workers[0], 9)
        c2.wait_closed(10)
        def restarted():
            try:  # nobody answers while the only worker is down
                return hub.metrics().get("hub_worker_restarts_total") == 1
            except AssertionError:
                return False
        hubfix.wait_until(restarted, 20, what="the worker restarted")
        hubfix.wait_until(lambda: self.closed(s2), 20,
                          what="ok2's row repaired")
        self.assertEqual(self.closed(s2), "hub_restart")

        self.broker.start()
        self.wait_retained("ok1", "ok1's offline (closed), lost with the "
                           "killed worker before the outbox",
                           online=False, reason="closed",
                           seq=self.presence_seq("ok1"))
        self.wait_retained("ok2", "ok2's offline (hub_restart)",
                           online=False, reason="hub_restart",
                           seq=self.presence_seq("ok2"))

    # ---- a reconnect storm with the broker down -------------------------

    def test_churn_with_broker_down_stays_bounded(self):
        n_dev, cycles = 10, 1000
        ids = [f"oc{i:02d}" for i in range(n_dev)]
        tok = self.add_devices(*ids)
        hub = self.start_hub()
        self.broker.stop()
        self.wait_broker_link(hub, 0)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        done = [0]
        errors = []

        async def loop(d):
            url = hub.url(d)
            for _ in range(cycles // n_dev):
                try:
                    ws = await websockets.connect(
                        url, ssl=ctx, subprotocols=["hub.v1"],
                        extra_headers={"Authorization": f"Bearer {tok[d]}"},
                        open_timeout=hubfix.T(10), close_timeout=hubfix.T(5))
                    await ws.close()
                    done[0] += 1
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{d}: {e!r}")
                    await asyncio.sleep(0.1)

        async def main():
            await asyncio.gather(*(loop(d) for d in ids))
        t = threading.Thread(target=asyncio.run, args=(main(),))
        t0 = time.monotonic()
        t.start()
        peak = 0
        while t.is_alive():
            peak = max(peak, hub.metrics().get("hub_bridge_pending", 0))
            t.join(0.5)
            self.assertLess(time.monotonic() - t0, hubfix.T(240),
                            "the churn did not finish")
        self.assertFalse(errors[:5] if len(errors) > cycles // 20 else [],
                         f"{len(errors)} failed cycles")
        hubfix.wait_until(lambda: not self.q(
            "SELECT 1 FROM sessions WHERE ended IS NULL"), 20,
            what="every session row closed")
        hubfix.wait_until(lambda: hub.metrics().get("hub_connections") == 0,
                          20, what="no connection left")
        # the gauges are sampled once a second: let the last one land
        time.sleep(hubfix.T(1.5))
        final = hub.metrics().get("hub_bridge_pending", 0)
        peak = max(peak, final)
        hubfix.log(f"[figures] {done[0]} connect/disconnect cycles of "
                   f"{n_dev} devices with the broker down in "
                   f"{time.monotonic() - t0:.1f} s: hub_bridge_pending "
                   f"peak {peak}, after {final}; outbox pending "
                   f"{hub.metrics().get('hub_status_outbox_pending')}")
        self.assertGreaterEqual(done[0], cycles * 9 // 10)
        # one status and one announcement per device wait; a few more
        # are counted for the moment between bridge_submit and the bridge
        # thread's intake, where a newer one replaces the older
        self.assertLessEqual(final, 2 * n_dev)
        self.assertLessEqual(peak, 5 * n_dev, "bridge queue grew with the "
                             "transitions, not the devices")

        # the broker back: exactly the newest status of each device
        self.broker.start()
        hubfix.wait_until(
            lambda: hub.metrics().get("hub_bridge_pending") == 0 and
            hub.metrics().get("hub_status_outbox_pending") == 0, 30,
            what="everything acknowledged")
        for d in ids:
            want = self.presence_seq(d)
            self.wait_retained(d, f"{d}: the newest status", online=False,
                               seq=want)

    # ---- a late older status from another publisher ----------------------

    def test_late_older_status_cannot_stay_retained(self):
        tok = self.add_devices("ox1")
        relay = Relay(self.broker.port)
        self.addCleanup(relay.close)
        hub_a = hubfix.Hub(self.tmp, self.cert, self.key, self.db,
                           relay.port, hub_id="hubA")
        self.hubs.append(hub_a)
        hub_a.start()
        hub_b = self.start_hub(hub_id="hubB")
        sub = self.mqtt("devices/ox1/status")

        c = self.connect(hub_a, "ox1", tok["ox1"])
        c.send_json({"op": "ping"})
        c.wait_op("pong")
        s_a = hubfix.wait_until(lambda: self.open_session("ox1"), 10,
                                what="the session on hub A")
        self.wait_retained("ox1", "online via hub A", online=True,
                           session=s_a)

        # hub A loses the broker; the device leaves it: hub A's offline
        # waits in hub A's bridge
        relay.cut()
        self.wait_broker_link(hub_a, 0)
        c.close()
        hubfix.wait_until(lambda: self.closed(s_a), 10, what="closed on A")
        seq_off = self.presence_seq("ox1")
        # the device comes back on hub B: online, newer, acknowledged
        c2 = self.connect(hub_b, "ox1", tok["ox1"])
        c2.send_json({"op": "ping"})
        c2.wait_op("pong")
        s_b = hubfix.wait_until(lambda: self.open_session("ox1"), 10,
                                what="the session on hub B")
        seq_on = self.presence_seq("ox1")
        self.assertGreater(seq_on, seq_off)
        self.wait_retained("ox1", "online via hub B", online=True,
                           session=s_b, seq=seq_on)

        # hub A's link comes back: its older offline lands after the online
        relay.restore()
        self.wait_broker_link(hub_a, 1)
        sub.wait_for(lambda m: m.payload and b'"online":false' in m.payload,
                     30, what="hub A's late offline")
        # ... and its PUBACK publishes the newer status again
        self.wait_retained("ox1", "the newest status retained, not the "
                           "late offline", online=True, session=s_b,
                           seq=seq_on)
        self.assertIn("HUB-STATUS-AGAIN", hub_a.log_text())
        seqs = [s["seq"] for s in status_msgs(sub, "ox1")]
        self.assertEqual(seqs[-1], seq_on, seqs)


    def test_late_offline_from_a_hub_with_its_own_registry_is_restated(self):
        """Hubs of a fleet have their own registries: hub A's late offline
        cannot be compared with hub B's newer online in one registry.
        Once the broker acknowledged A's offline, A asks whoever holds the
        device now (hub/sessions/{id} "restatus") to publish its status
        again, so the retained status ends with B's online."""
        tok = self.add_devices("ox2")
        db_b = os.path.join(self.tmp, "registry-b.db")
        r = hubfix.hubctl_run(db_b, None, "device", "add", "ox2")
        self.assertEqual(r.returncode, 0, r.stderr)
        tok_b = r.stdout.decode().strip()
        relay = Relay(self.broker.port)
        self.addCleanup(relay.close)
        hub_a = hubfix.Hub(self.tmp, self.cert, self.key, self.db,
                           relay.port, hub_id="hubA")
        self.hubs.append(hub_a)
        hub_a.start()
        hub_b = hubfix.Hub(self.tmp, self.cert, self.key, db_b,
                           self.broker.port, hub_id="hubB")
        self.hubs.append(hub_b)
        hub_b.start()
        sub = self.mqtt("devices/ox2/status")

        c = self.connect(hub_a, "ox2", tok["ox2"])
        c.send_json({"op": "ping"})
        c.wait_op("pong")
        s_a = hubfix.wait_until(lambda: self.open_session("ox2"), 10,
                                what="the session on hub A")
        self.wait_retained("ox2", "online via hub A", online=True,
                           session=s_a)

        # hub A loses the broker; the device leaves it: A's offline waits
        relay.cut()
        self.wait_broker_link(hub_a, 0)
        c.close()
        hubfix.wait_until(lambda: self.closed(s_a), 10, what="closed on A")
        # the device comes back on hub B: online, acknowledged, retained
        c2 = self.connect(hub_b, "ox2", tok_b)
        c2.send_json({"op": "ping"})
        c2.wait_op("pong")
        on_b = self.wait_retained("ox2", "online via hub B", online=True,
                                  hub="hubB")

        # A's link comes back: its older offline lands after B's online ...
        relay.restore()
        self.wait_broker_link(hub_a, 1)
        sub.wait_for(lambda m: m.payload and b'"online":false' in m.payload,
                     30, what="hub A's late offline")
        # ... and B, asked by A, publishes its online again after it
        self.wait_retained("ox2", "B's online retained, not A's late "
                           "offline", online=True, hub="hubB",
                           session=on_b["session"], seq=on_b["seq"])
        last = status_msgs(sub, "ox2")[-1]
        self.assertTrue(last["online"], last)


if __name__ == "__main__":
    hubfix.main()
