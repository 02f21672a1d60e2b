"""Crash repair (docs/protocol.md, docs/operations.md): after kill -9 of hubd (supervisor
and workers), the next start of the same hub id closes the sessions left
open with reason hub_restart, in the registry and as retained statuses
with a higher seq. Also: a worker killed alone is restarted by the
supervisor and repairs its own sessions."""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import status_msgs  # noqa: E402


class TestCrashRestart(hubfix.HubTest):

    def connect_all(self, hub, sub, ids, tok):
        clients = {d: self.connect(hub, d, tok[d]) for d in ids}
        online = {}
        for d in ids:
            online[d] = hubfix.wait_until(
                lambda d=d: next((s for s in reversed(status_msgs(sub, d)) if s["online"]
                                  and s["session"] not in
                                  [o["session"] for o in online.values()]), None),
                10, what=f"{d} online")
        # the online rows are committed (the writer commits in batches)
        hubfix.wait_until(lambda: all(x["online"] for x in self.device_list()
                                      if x["id"] in ids), 5, what="registry: all online")
        return clients, online

    def test_kill9_then_restart_repairs_presence(self):
        ids = ["dev1", "dev2", "dev3"]
        tok = self.add_devices(*ids)
        hub = self.start_hub()
        sub = self.mqtt("devices/+/status")
        clients, online = self.connect_all(hub, sub, ids, tok)

        hub.kill9()
        for d in ids:
            self.assertIn(clients[d].wait_closed(10), (1006, None), d)
        # nothing repaired the statuses yet: they still say online
        for d in ids:
            st = hubfix.retained_status(self.broker.port, d)
            self.assertTrue(st["online"], st)
            self.assertEqual(st["session"], online[d]["session"])

        hub2 = hubfix.Hub(self.tmp, self.cert, self.key, self.db, self.broker.port,
                          hub_id="hubA")
        self.hubs.append(hub2)
        t0 = time.monotonic()
        hub2.start(ready=False)

        def repaired():
            got = {}
            for d in ids:
                s = [x for x in status_msgs(sub, d) if not x["online"]]
                if not s:
                    return None
                got[d] = s[-1]
            return got
        off = hubfix.wait_until(repaired, 20, interval=0.01,
                                what="hub_restart statuses for all devices")
        repair_s = time.monotonic() - t0
        hub2.wait_ready()
        ready_s = time.monotonic() - t0
        print(f"\n[figures] crash repair: restart -> offline/hub_restart of {len(ids)} "
              f"devices on the broker in {repair_s * 1000:.0f} ms "
              f"(readyz 200 after {ready_s * 1000:.0f} ms)", file=sys.stderr)
        for d in ids:
            self.assertEqual(off[d]["reason"], "hub_restart", off[d])
            self.assertGreater(off[d]["seq"], online[d]["seq"])
            st = hubfix.retained_status(self.broker.port, d)
            self.assertEqual(st, off[d], "the retained status is the repaired one")
        ev = self.events()
        for d in ids:
            rows = [(e["kind"], e["reason"], e["session"], e["hub"]) for e in ev
                    if e["device"] == d]
            self.assertEqual(rows[0], ("offline", "hub_restart", online[d]["session"], "hubA"),
                             rows)
            self.assertEqual(len(rows), 2, rows)
        for x in self.device_list():
            self.assertFalse(x["online"], x)

        # the devices come back: online with a still higher seq
        c = self.connect(hub2, "dev1", tok["dev1"])
        on = hubfix.wait_until(
            lambda: next((s for s in status_msgs(sub, "dev1")
                          if s["online"] and s["seq"] > off["dev1"]["seq"]), None),
            10, what="dev1 online again")
        self.assertNotEqual(on["session"], online["dev1"]["session"])
        c.close()
        # a second restart has nothing left to repair
        self.assertEqual(hub2.stop(), 0, hub2.log_tail())
        n = len([e for e in self.events() if e["reason"] == "hub_restart"])
        hub3 = self.start_hub()
        time.sleep(0.5)
        self.assertEqual(len([e for e in self.events() if e["reason"] == "hub_restart"]), n)
        self.assertEqual(hub3.stop(), 0)

    def test_other_hub_id_does_not_repair(self):
        tok = self.add_devices("dev1")
        hub = self.start_hub(hub_id="hubA")
        sub = self.mqtt("devices/+/status")
        self.connect_all(hub, sub, ["dev1"], tok)
        hub.kill9()
        hubB = self.start_hub(hub_id="hubB")
        time.sleep(1.0)  # a repair would be published at once
        self.assertFalse([s for s in status_msgs(sub, "dev1") if not s["online"]],
                         "hubB repaired hubA's sessions")
        self.assertTrue(hubfix.retained_status(self.broker.port, "dev1")["online"])
        hubB.stop()
        hubA = self.start_hub(hub_id="hubA")
        hubfix.wait_until(lambda: [s for s in status_msgs(sub, "dev1")
                                   if not s["online"] and s["reason"] == "hub_restart"],
                          10, what="hubA repairs its own session")
        hubA.stop()

    def test_worker_killed_is_restarted_and_repairs(self):
        ids = ["dev1", "dev2"]
        tok = self.add_devices(*ids)
        hub = self.start_hub()
        sub = self.mqtt("devices/+/status")
        clients, online = self.connect_all(hub, sub, ids, tok)
        workers = subprocess.run(["pgrep", "-P", str(hub.proc.pid)], capture_output=True,
                                 text=True).stdout.split()
        self.assertEqual(len(workers), 1, workers)
        # counters sampled from the bridge (once a second, and on /metrics)
        counters = ("hub_bridge_sent_total", "hub_bridge_acked_total",
                    "hub_broker_connects_total", "hub_commands_refused_total",
                    "hub_sessions_accepted_total")
        before = hub.metrics()
        self.assertGreaterEqual(before["hub_bridge_acked_total"], 2, before)
        os.kill(int(workers[0]), signal.SIGKILL)
        for d in ids:
            self.assertIn(clients[d].wait_closed(10), (1006, None))
        off = {}
        for d in ids:
            off[d] = hubfix.wait_until(
                lambda d=d: next((s for s in status_msgs(sub, d) if not s["online"]), None),
                15, what=f"{d} repaired after the worker restart")
            self.assertEqual(off[d]["reason"], "hub_restart")
            self.assertGreater(off[d]["seq"], online[d]["seq"])
        self.assertTrue(hub.running(), "the supervisor must survive its worker")
        hub.wait_ready()
        m = hub.metrics()
        self.assertEqual(m.get("hub_worker_restarts_total"), 1)
        # totals never go backwards across a worker restart
        for k in counters:
            self.assertGreaterEqual(m[k], before[k], k)
        self.assertGreaterEqual(m["hub_broker_connects_total"],
                                before["hub_broker_connects_total"] + 1)
        self.assertEqual(m.get("hub_connections"), 0)
        c = self.connect(hub, "dev1", tok["dev1"])
        c.send_json({"op": "ping"})
        c.wait_op("pong", 5)
        self.assertEqual(hub.metrics().get("hub_connections"), 1)


if __name__ == "__main__":
    hubfix.main()
