"""Broker faults (docs/protocol.md, docs/operations.md): /readyz follows
the broker link; a QoS 1 stream survives a kill -9 and restart of the
broker with nothing acknowledged and then lost (acked is a subset of what
a persistent-session subscriber received); past --bridge-buffer the device
gets err broker_unavailable instead of a silent drop."""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402


class Stream:
    """A windowed QoS 1 sender over one WS client: keeps at most `window`
    frames unacknowledged, resends those refused with broker_unavailable."""

    def __init__(self, c, n, window=200, topic="stream"):
        self.c, self.n, self.window, self.topic = c, n, window, topic
        self.cond = threading.Condition()
        self.acked, self.inflight, self.refused = set(), set(), []
        self.ack_t = {}  # id -> when its ack arrived (monotonic)
        self.errs = {}
        self.sent = 0
        c.keep = False
        c.listener = self.on_msg

    def on_msg(self, m):
        if not isinstance(m, dict):
            return
        with self.cond:
            if m.get("op") == "ack":
                self.acked.add(m["id"])
                self.ack_t.setdefault(m["id"], time.monotonic())
                self.inflight.discard(m["id"])
            elif m.get("op") == "err":
                self.errs[m.get("code")] = self.errs.get(m.get("code"), 0) + 1
                if m.get("id") in self.inflight:
                    self.inflight.discard(m["id"])
                    self.refused.append(m["id"])
            self.cond.notify_all()

    def send_one(self, i):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.inflight) < self.window
                                      or not self.c.is_open(), hubfix.T(60)):
                raise AssertionError(f"window stuck: {len(self.inflight)} unacked, "
                                     f"{len(self.acked)} acked")
            self.inflight.add(i)
        self.c.send('{"op":"pub","topic":"%s","qos":1,"id":%d,"payload":{"n":%d}}'
                    % (self.topic, i, i))
        self.sent += 1

    def run(self, on_progress=None):
        for i in range(1, self.n + 1):
            self.send_one(i)
            if on_progress:
                on_progress(i)
        # resend what the hub refused, until everything is acked
        deadline = time.monotonic() + hubfix.T(60)
        while True:
            with self.cond:
                if len(self.acked) >= self.n:
                    return
                again, self.refused = self.refused, []
                if not again:
                    self.cond.wait(0.2)
            for i in again:
                self.send_one(i)
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.acked)} of {self.n} acked; "
                                     f"unacked {sorted(self.inflight)[:20]}... errs {self.errs}")


class TestBrokerFaults(hubfix.HubTest):
    # the broker saves after every change, so a kill -9 keeps the persistent
    # session and what it PUBACKed: what mosquitto loses by itself in its
    # last second is not the hub's loss (measured: with a save per second,
    # 6 of 3000 messages PUBACKed just before the kill never reached the
    # subscriber)
    broker_autosave = 1
    broker_autosave_on_changes = True

    def test_readyz_follows_broker(self):
        hub = self.start_hub()
        self.assertEqual(hub.http("/readyz")[0], 200)
        self.assertEqual(hub.http("/healthz")[0], 200)
        self.broker.stop()
        hubfix.wait_until(lambda: hub.http("/readyz")[0] == 503, 10,
                          what="/readyz 503 with the broker down")
        st, h, body = hub.http("/readyz")
        self.assertEqual(st, 503)
        self.assertIn("broker", body)
        self.assertEqual(hub.http("/healthz")[0], 200, "healthz is liveness, not readiness")
        self.assertEqual(hub.metrics()["hub_broker_connected"], 0)
        self.broker.start()
        hubfix.wait_until(lambda: hub.http("/readyz")[0] == 200, 30,
                          what="/readyz 200 after the broker is back")
        self.assertEqual(hub.metrics()["hub_broker_connected"], 1)
        # and again with kill -9
        self.broker.kill()
        hubfix.wait_until(lambda: hub.http("/readyz")[0] == 503, 10,
                          what="/readyz 503 after kill -9 of the broker")
        self.broker.start()
        hubfix.wait_until(lambda: hub.http("/readyz")[0] == 200, 30,
                          what="/readyz 200 after restart")

    def persistent_sub(self, topic):
        sub = self.mqtt(client_id="it-persistent-sub", clean_start=False,
                        session_expiry=3600)
        db = os.path.join(self.broker.dir, "mosquitto.db")

        def saved():
            try:
                st = os.stat(db)
                return (st.st_ino, st.st_mtime_ns)
            except FileNotFoundError:
                return None
        before = saved()
        sub.subscribe(topic, qos=1)
        # wait for a save after the SUBSCRIBE, so a kill -9 cannot forget
        # the session. A subscription alone is no "change" to mosquitto: a
        # retained message is, and triggers the save (the db is written to
        # a new file and renamed, so the inode changes with every save)
        sub.publish("hubfix/save", b"1", qos=1, retain=True)
        hubfix.wait_until(lambda: saved() not in (None, before),
                          10, interval=0.05, what="broker saved the subscription")
        return sub

    def test_qos1_stream_survives_broker_kill9(self):
        tok = self.add_devices("dev1")
        hub = self.start_hub(extra=["--rate", 100000])
        sub = self.persistent_sub("devices/dev1/stream")
        c = self.connect(hub, "dev1", tok["dev1"])
        N = 3000
        s = Stream(c, N, window=200)
        fault = {}

        def kill_and_restart():
            fault["acked_at_kill"] = len(s.acked)
            fault["t_before_kill"] = time.monotonic()
            self.broker.kill()
            fault["t_kill"] = time.monotonic()
            time.sleep(1.0)  # the broker stays away a while: a fault window
            self.broker.start()
            fault["t_up"] = time.monotonic()

        killer = threading.Thread(target=kill_and_restart)

        def progress(i):
            if i == N // 3:
                killer.start()
        t0 = time.monotonic()
        s.run(progress)
        killer.join(30)
        took = time.monotonic() - t0

        def ids_received():
            got = {}
            for m in sub.find(lambda m: m.topic == "devices/dev1/stream"):
                n = json.loads(m.payload)["n"]
                got[n] = got.get(n, 0) + 1
            return got
        try:
            hubfix.wait_until(lambda: s.acked <= set(ids_received()), 30, interval=0.2,
                              what="every acked message at the subscriber")
        except AssertionError:
            pass
        got = ids_received()
        missing = sorted(s.acked - set(got))
        dups = sum(v - 1 for v in got.values())
        print(f"\n[figures] broker kill -9 mid-stream: sent {s.sent} frames for {N} messages, "
              f"acked {len(s.acked)}, received-of-acked {len(s.acked & set(got))}, "
              f"duplicates {dups}, missing {len(missing)}, errs {s.errs}, "
              f"acked at kill {fault.get('acked_at_kill')}, "
              f"subscriber sessions present {sub.session_present}, "
              f"stream took {took:.1f}s", file=sys.stderr)
        self.assertIn("t_kill", fault, "the broker was never killed")
        self.assertEqual(len(s.acked), N)
        # mosquitto (saving after every change) still writes a PUBACK before
        # the save of that loop turn: a kill -9 in between loses what it had
        # just acknowledged (measured: 1 of 3000, once in 15 loaded runs).
        # That is the broker's window, not the hub's: any message missing
        # must have been acked at the moment of the kill, and only a few.
        # A hub that acked before the PUBACK would lose everything sent
        # during the outage (a second, hundreds of messages).
        lo = fault["t_before_kill"] - hubfix.T(0.5)
        hi = fault["t_kill"] + hubfix.T(0.5)
        outside = [(i, round(s.ack_t[i] - fault["t_kill"], 3)) for i in missing
                   if not lo <= s.ack_t[i] <= hi]
        self.assertEqual(outside, [], f"acked but never delivered, away from the kill "
                                      f"(id, s after the kill): {outside[:30]}")
        self.assertLessEqual(len(missing), 5, f"acked but never delivered: {missing[:30]}")
        # the stream ids also came with their MQTT 5 id property
        m = sub.find(lambda m: m.topic == "devices/dev1/stream")[0]
        self.assertEqual(m.props.get("id"), str(json.loads(m.payload)["n"]))
        met = hub.metrics()
        self.assertGreaterEqual(met["hub_broker_connects_total"], 2)

    def test_bridge_buffer_bound_broker_unavailable(self):
        tok = self.add_devices("dev1")
        hub = self.start_hub(extra=["--bridge-buffer", 10])
        sub = self.mqtt(client_id="it-sub2", clean_start=False, session_expiry=3600)
        sub.subscribe("devices/dev1/t", qos=1)
        c = self.connect(hub, "dev1", tok["dev1"])
        c.pub({"n": 0}, topic="t", qos=1, id=1000)
        c.wait_op("ack", 10, id=1000)
        self.broker.stop()  # clean stop: the broker keeps the session
        hubfix.wait_until(lambda: hub.http("/readyz")[0] == 503, 10, what="broker down seen")
        for i in range(1, 31):
            c.pub({"n": i}, topic="t", qos=1, id=i)
        errs = hubfix.wait_until(
            lambda: [e for e in c.ops("err") if e["code"] == "broker_unavailable"]
            if len(c.ops("err")) >= 19 else None, 10, what="err broker_unavailable")
        self.assertEqual(c.ops("ack"), [{"op": "ack", "id": 1000}],
                         "acked while the broker was down")
        self.assertGreaterEqual(len(errs), 15)
        refused = {e["id"] for e in errs}
        held = set(range(1, 31)) - refused
        self.assertLessEqual(len(held), 11)
        # QoS 0 while down: dropped and counted, the session survives
        c.pub({"q0": 1})
        hubfix.wait_until(
            lambda: hub.metrics().get('hub_drops_total{reason="qos0_broker_down"}', 0) >= 1,
            10, what="the QoS 0 frame dropped while the broker is down")
        self.broker.start()
        for i in held:
            c.wait_op("ack", 30, id=i)
        got = sub.wait_count(lambda m: m.topic == "devices/dev1/t", 1 + len(held), 15)
        got_n = {json.loads(m.payload).get("n") for m in got}
        self.assertTrue(held <= got_n, f"held {held} got {got_n}")
        self.assertFalse(refused & got_n, "refused messages were published anyway")
        self.assertTrue(c.is_open())
        met = hub.metrics()
        self.assertGreaterEqual(met['hub_drops_total{reason="broker_unavailable"}'], len(errs))
        self.assertGreaterEqual(met['hub_drops_total{reason="qos0_broker_down"}'], 1)


if __name__ == "__main__":
    hubfix.main()
