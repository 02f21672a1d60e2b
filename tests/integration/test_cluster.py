"""A real cluster on loopback: three NATS Server nodes (MQTT 3.1.1 on
clustered JetStream, conf/cluster/nats-node.conf), two hubs on different
nodes (their own registries, one --token-key, --mqtt-version 3) and HAProxy
in front (conf/cluster/haproxy.cfg, PROXY protocol v2 to the hubs, which
trust 127.0.0.1). A device provisioned once with a signed token connects
through the load balancer to either hub, under its own address; a command
sent with hubctl --mqtt-version 3 on node 1 reaches a device held by the
hub on node 2; a group command reaches devices on every hub; a takeover
across hubs closes the old session with 4001 and leaves the device online;
hubctl device disable revokes on every hub, enable clears it. A broker
node killed: its hub fails over with nothing acked lost and the retained
presence right on every node. A hub drained with SIGTERM: its devices get
1001 and come back through the load balancer on the other hub, online.
Skipped with a message where nats-server is not installed (tools/setup
installs it)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import Hub, ws_refusal  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402

NATS = shutil.which("nats-server")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


class Mqtt3:
    """MQTT 3.1.1 (what NATS speaks): publish, collect."""

    def __init__(self, port, client_id="", clean=True):
        self.msgs = []
        self.c = mqtt.Client(client_id=client_id, clean_session=clean,
                             protocol=mqtt.MQTTv311)
        self.c.on_message = lambda c, u, m: self.msgs.append(
            (m.topic, bytes(m.payload), bool(m.retain)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def sub(self, topic):
        self.c.subscribe(topic, qos=1)

    def pub(self, topic, payload, retain=False):
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def retained3(port, topic, pred, timeout, what):
    """The retained message on topic as a fresh MQTT 3.1.1 subscriber on
    port gets it (JSON), polled with a new subscriber per try until pred
    holds (a retained message is sent only on SUBSCRIBE)."""
    seen = {}

    def once():
        m = Mqtt3(port)
        try:
            m.sub(topic)
            end = time.monotonic() + 2
            while time.monotonic() < end:
                got = [p for t, p, r in list(m.msgs) if t == topic and r and p]
                if got:
                    seen["last"] = json.loads(got[-1])
                    return pred(seen["last"])
                time.sleep(0.05)
            return False
        finally:
            m.close()
    try:
        hubfix.wait_until(once, timeout, interval=0.2, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last retained: {seen.get('last')}") from None
    return seen["last"]


class TestCluster(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        if not NATS:
            self.skipTest("nats-server not installed (Debian package nats-server; "
                          "tools/setup installs it): the cluster tests need it")
        self.m3 = []
        self.nodes = self.start_nats()

    def tearDown(self):
        for m in self.m3:
            try:
                m.close()
            except Exception:  # noqa: BLE001
                pass
        super().tearDown()

    def hubctl3(self, node, *args, version=3, check=True):
        """hubctl against NATS node `node` (an MQTT 3.1.1 broker)."""
        cmd = [hubfix.HUBCTL, "--db", self.db, "--broker",
               f"tcp://127.0.0.1:{node}"]
        if version:
            cmd += ["--mqtt-version", str(version)]
        r = subprocess.run(cmd + [str(a) for a in args], capture_output=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"hubctl {args} exited {r.returncode}: "
                                 f"{r.stderr.decode(errors='replace')}")
        return r

    def mqtt3(self, port, **kw):
        m = Mqtt3(port, **kw)
        self.m3.append(m)
        return m

    def start_nats(self):
        tpl = open(os.path.join(hubfix.HUB_SRC, "conf", "cluster", "nats-node.conf")).read()
        ports = [(hubfix.free_port(), hubfix.free_port(), hubfix.free_port()) for _ in range(3)]
        routes = ", ".join(f"nats-route://127.0.0.1:{r}" for _, r, _ in ports)
        d = os.path.join(self.tmp, "nats")
        os.makedirs(d)
        nodes = []
        for i, (client, route, mq) in enumerate(ports, 1):
            conf = (tpl.replace("@N@", str(i)).replace("@DIR@", d)
                    .replace("@CLIENT@", str(client)).replace("@ROUTE@", str(route))
                    .replace("@ROUTES@", routes).replace("@MQTT@", str(mq)))
            path = os.path.join(d, f"n{i}.conf")
            with open(path, "w") as f:
                f.write(conf)
            log = open(os.path.join(d, f"n{i}.log"), "wb")
            p = subprocess.Popen([NATS, "-c", path], stdout=log,
                                 stderr=subprocess.STDOUT)
            self.procs.append(p)
            self.nats_procs = getattr(self, "nats_procs", []) + [p]
            nodes.append(mq)
        for mq in nodes:
            hubfix.wait_until(lambda: hubfix.port_open(mq), 30,
                              what=f"NATS MQTT on {mq}")
        return nodes

    def start_lb(self, hubs):
        tpl = open(os.path.join(hubfix.HUB_SRC, "conf", "cluster", "haproxy.cfg")).read()
        lb = hubfix.free_port()
        servers = "\n".join(f"  server {h.hub_id} 127.0.0.1:{h.port} check inter 500"
                            for h in hubs)
        path = os.path.join(self.tmp, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(tpl.replace("@LB@", str(lb)).replace("@SERVERS@", servers))
        self.procs.append(subprocess.Popen([HAPROXY, "-db", "-f", path],
                                           stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        hubfix.wait_until(lambda: hubfix.port_open(lb), 10, what="haproxy")
        return lb

    def test_cluster(self):
        keydir = os.path.join(self.tmp, "fleet")
        self.hubctl("fleet", "init", "--dir", keydir)
        pub = os.path.join(keydir, "fleet.pub")
        # provisioned once, in one registry; hubctl speaks MQTT 5 and is
        # not given a broker here (NATS speaks 3.1.1)
        tok = {}
        for d, g in (("c1", "east"), ("c2", "east"), ("c3", "west")):
            r = subprocess.run([hubfix.HUBCTL, "--db", self.db, "device", "add", d,
                                "--signed", "--dir", keydir, "--group", g],
                               capture_output=True, check=True)
            tok[d] = r.stdout.decode().strip()
        hubs = []
        for i, node in enumerate(self.nodes[:2], 1):
            h = Hub(self.tmp, self.cert, self.key, os.path.join(self.tmp, f"h{i}.db"),
                    node, hub_id=f"h{i}",
                    extra=["--mqtt-version", 3, "--token-key", pub,
                           "--trusted-proxies", "127.0.0.1/32"])
            self.hubs.append(h)
            hubs.append(h.start(timeout=60))
        lb = self.start_lb(hubs)
        watch = self.mqtt3(self.nodes[2])
        watch.sub("devices/+/status")

        def status(dev):
            for t, p, _ in reversed(watch.msgs):
                if t == f"devices/{dev}/status" and p:
                    return json.loads(p)
            return None

        # through the load balancer: round robin puts them on both hubs
        lb_url = lambda d: f"wss://127.0.0.1:{lb}/v1/devices/{d}"  # noqa: E731
        c = {}
        for d in ("c1", "c2"):
            c[d] = hubfix.WS.connect(lb_url(d), tok[d])
            self.clients.append(c[d])
            hubfix.wait_until(lambda: (status(d) or {}).get("online"), 20,
                              what=f"{d} online on the cluster")
        where = {d: status(d)["hub"] for d in c}
        self.assertEqual(set(where.values()), {"h1", "h2"}, where)
        on2 = [d for d in c if where[d] == "h2"][0]

        # the device's own address through the load balancer (PROXY v2)
        from test_proxy_protocol import upgrade
        st, raw = upgrade(lb, b"/v1/devices/c3", "127.0.0.7",
                          b"Authorization: Bearer " + tok["c3"].encode() +
                          b"\r\n")
        self.assertEqual(st, 101)
        hubfix.wait_until(lambda: (status("c3") or {}).get("addr") ==
                          "127.0.0.7", 20, what="c3 online from 127.0.0.7")
        raw.close()
        on1 = [d for d in c if where[d] == "h1"][0]

        # hubctl speaks MQTT 5 unless told: NATS refuses it, and hubctl
        # says what to do; MQTT 3.1.1 has no expiry, so no offline command
        r = self.hubctl3(self.nodes[0], "send", on2, "ping", "{}", version=None,
                         check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"--mqtt-version 3", r.stderr)
        r = self.hubctl3(self.nodes[0], "send", on2, "ping", "{}", "--retain",
                         "--ttl", 60, check=False)
        self.assertEqual(r.returncode, 2, r.stderr)

        # a command sent with hubctl on node 1 reaches the device held by
        # the hub on node 2 (a few tries: the hub's subscription is
        # replicated)
        def cmd_arrives():
            r = self.hubctl3(self.nodes[0], "send", on2, "ping", '{"n":1}')
            self.assertIn(f"devices/{on2}/cmd/ping".encode(), r.stdout)
            try:
                c[on2].wait_op("msg", topic="cmd/ping", timeout=1)
                return True
            except AssertionError:
                return False
        hubfix.wait_until(cmd_arrives, 20, interval=0.2,
                          what="command across broker nodes")

        # a group command (hubctl on node 3) reaches members on both hubs
        def group_arrives():
            self.hubctl3(self.nodes[2], "send", "--group", "east", "sync", '{"v":1}')
            try:
                for d in c:
                    c[d].wait_op("msg", topic="cmd/sync", timeout=1)
                return True
            except AssertionError:
                return False
        hubfix.wait_until(group_arrives, 20, interval=0.2, what="group command on every hub")
        self.assertEqual(c[on1].wait_op("msg", topic="cmd/sync")["group"], "east")

        # takeover across hubs on different broker nodes: 4001, still online
        other = hubs[0] if where[on2] == "h2" else hubs[1]
        moved = self.connect(other, on2, tok[on2])
        self.assertEqual(c[on2].wait_closed(20), 4001)
        hubfix.wait_until(lambda: (status(on2) or {}).get("hub") == other.hub_id, 20,
                          what="status from the new hub")
        time.sleep(1)  # a stray offline would come now
        self.assertTrue(status(on2)["online"], status(on2))
        self.assertTrue(moved.is_open())

        # hubctl device disable (MQTT 3.1.1, node 1): the retained
        # revocation closes and refuses the device on every hub
        self.hubctl3(self.nodes[0], "device", "disable", on1)
        self.assertEqual(c[on1].wait_closed(20), 4003)
        def refused(h):
            # an accepted upgrade means "not yet": the revocation travels
            # through the hub's own NATS node
            try:
                return ws_refusal(h.url(on1), tok[on1])[0] in (401, 403)
            except AssertionError:
                return False
        for h in hubs:
            hubfix.wait_until(lambda: refused(h), 30, interval=0.5,
                              what=f"{on1} refused on {h.hub_id}")
        self.assertTrue(moved.is_open(), "another device is not affected")
        # enable clears the revocation everywhere
        self.hubctl3(self.nodes[1], "device", "enable", on1)
        def accepted(h):
            try:
                self.connect(h, on1, tok[on1], timeout=5).close()
                return True
            except Exception:  # noqa: BLE001
                return False
        for h in hubs:
            hubfix.wait_until(lambda: accepted(h), 30, interval=0.5,
                              what=f"{on1} accepted again on {h.hub_id}")


    def test_node_failure(self):
        """Kill -9 the broker node a hub uses: the hub fails over to the
        next node of its --broker list, nothing acked is lost (a
        persistent subscriber on another node receives every acked
        message), the device session survives, and the retained presence
        on both surviving nodes is right: online with the device's
        session after the failover, offline once it leaves."""
        from test_broker_faults import Stream
        tok = self.add_devices("n1")
        hub = Hub(self.tmp, self.cert, self.key, self.db, self.nodes[0], hub_id="hf",
                  extra=["--mqtt-version", 3, "--rate", 100000, "--broker",
                         f"tcp://127.0.0.1:{self.nodes[0]},tcp://127.0.0.1:{self.nodes[2]}"])
        self.hubs.append(hub)
        hub.start(timeout=60)
        sub = self.mqtt3(self.nodes[1], client_id="cl-sub", clean=False)
        sub.sub("devices/n1/stream")
        time.sleep(1)  # the subscription is in JetStream before the stream
        c = self.connect(hub, "n1", tok["n1"])
        topic = "devices/n1/status"
        online = retained3(self.nodes[1], topic, lambda st: st.get("online"), 30,
                           "n1 online before the kill")
        self.assertEqual(online["hub"], "hf", online)
        N = 1500
        s = Stream(c, N, window=100)
        fault = {}

        def progress(i):
            if i == N // 3 and "t" not in fault:
                fault["acked"] = len(s.acked)
                self.nats_procs[0].kill()
                fault["t"] = time.monotonic()
        s.run(progress)
        self.assertIn("t", fault, "node 1 was never killed")
        self.assertEqual(len(s.acked), N)

        def got():
            return {json.loads(p)["n"] for t, p, _ in list(sub.msgs)
                    if t == "devices/n1/stream"}
        try:
            hubfix.wait_until(lambda: s.acked <= got(), 60, interval=0.5,
                              what="every acked message at the subscriber")
        except AssertionError:
            pass
        missing = sorted(s.acked - got())
        print(f"\n[figures] NATS cluster node kill -9: {N} QoS 1, acked {len(s.acked)}, "
              f"acked before the kill {fault['acked']}, missing {len(missing)}, "
              f"errs {s.errs}", file=sys.stderr)
        self.assertEqual(missing, [], f"acked but lost: {missing[:20]}")
        self.assertTrue(c.is_open(), "the device session survived the node failure")
        # presence after the failover, as a new subscriber on either
        # surviving node sees it
        t0 = time.monotonic()
        for node in self.nodes[1:]:
            st = retained3(node, topic, lambda st: True, 60,
                           f"n1's retained status on {node} after the kill")
            self.assertTrue(st["online"], st)
            self.assertEqual((st["session"], st["hub"], st["seq"]),
                             (online["session"], "hf", online["seq"]), st)
        after = time.monotonic() - t0
        # the device leaves: offline, through the failover node, everywhere
        c.close()
        for node in self.nodes[1:]:
            st = retained3(node, topic, lambda st: not st.get("online"), 60,
                           f"n1 offline on {node}")
            self.assertEqual(st["reason"], "closed", st)
            self.assertGreater(st["seq"], online["seq"], st)
        print(f"[figures] NATS node kill: retained presence right on both surviving "
              f"nodes {after:.1f} s after the stream ended", file=sys.stderr)

    def test_hub_drain(self):
        """SIGTERM one hub behind the load balancer: its devices are closed
        with 1001 (docs/protocol.md: the hub is shutting down), spread over
        --drain, come back through HAProxy on the other hub within the
        drain period (a reconnect that HAProxy hands to the draining hub
        gets its 503 and retries, as a device's backoff would), and each is
        online there afterwards: the drained hub's offline statuses, on
        another broker node, never overwrite the new online ones."""
        keydir = os.path.join(self.tmp, "fleet")
        self.hubctl("fleet", "init", "--dir", keydir)
        ids = [f"dr{i}" for i in range(8)]
        tok = {}
        for d in ids:
            r = subprocess.run([hubfix.HUBCTL, "--db", self.db, "device", "add", d,
                                "--signed", "--dir", keydir],
                               capture_output=True, check=True)
            tok[d] = r.stdout.decode().strip()
        drain = 4
        hubs = []
        for i, node in enumerate(self.nodes[:2], 1):
            h = Hub(self.tmp, self.cert, self.key, os.path.join(self.tmp, f"h{i}.db"),
                    node, hub_id=f"h{i}", drain=drain,
                    extra=["--mqtt-version", 3, "--token-key",
                           os.path.join(keydir, "fleet.pub"),
                           "--trusted-proxies", "127.0.0.1/32"])
            self.hubs.append(h)
            hubs.append(h.start(timeout=60))
        lb = self.start_lb(hubs)
        lb_url = f"wss://127.0.0.1:{lb}/v1/devices/"
        watch = self.mqtt3(self.nodes[2])
        watch.sub("devices/+/status")

        def status(dev):
            for t, p, _ in reversed(list(watch.msgs)):
                if t == f"devices/{dev}/status" and p:
                    return json.loads(p)
            return None

        c = {}
        for d in ids:
            c[d] = hubfix.WS.connect(lb_url + d, tok[d])
            self.clients.append(c[d])
        for d in ids:
            hubfix.wait_until(lambda: (status(d) or {}).get("online"), 20,
                              what=f"{d} online")
        before = {d: status(d) for d in ids}
        drained = [d for d in ids if before[d]["hub"] == "h1"]
        self.assertTrue(drained and len(drained) < len(ids), before)

        t0 = time.monotonic()
        hubs[0].proc.send_signal(signal.SIGTERM)
        codes, back, refusals = {}, {}, 0
        deadline = t0 + drain + hubfix.T(10)
        while len(back) < len(drained) and time.monotonic() < deadline:
            for d in drained:
                if d in back or not c[d].closed:
                    continue
                codes[d] = c[d].close_code
                try:
                    n = hubfix.WS.connect(lb_url + d, tok[d], timeout=5)
                except Exception:  # noqa: BLE001  (503 from the draining hub)
                    refusals += 1
                    continue
                self.clients.append(n)
                c[d] = n
                back[d] = time.monotonic() - t0
            time.sleep(0.05)
        self.assertEqual(sorted(back), sorted(drained),
                         f"back: {back}, closes: {codes}")
        self.assertEqual(set(codes.values()), {1001}, codes)
        for d in ids:
            if d not in drained:
                self.assertTrue(c[d].is_open(), f"{d} on h2 was not touched")
        last = max(back.values())
        print(f"\n[figures] SIGTERM of one of 2 hubs, --drain {drain}: "
              f"{len(drained)} devices closed with 1001 and back through HAProxy "
              f"on the other hub, the last {last:.2f} s after the signal "
              f"({refusals} reconnects refused by the draining hub)",
              file=sys.stderr)
        self.assertLess(last, drain + hubfix.T(2),
                        "devices back within the drain period (and a margin)")
        self.assertEqual(hubs[0].proc.wait(60), 0)
        # presence, once the drained hub has flushed everything and exited:
        # online on h2 with the new session, on every node
        for d in drained:
            for node in self.nodes:
                st = retained3(node, f"devices/{d}/status",
                               lambda st: st.get("online") and st.get("hub") == "h2",
                               30, f"{d} online on h2 as node {node} has it")
                self.assertNotEqual(st["session"], before[d]["session"], st)
        time.sleep(1)  # a late offline from h1 would land now
        for d in drained:
            st = retained3(self.nodes[0], f"devices/{d}/status", lambda st: True, 30,
                           f"{d}'s status")
            self.assertTrue(st["online"], st)
            self.assertEqual(st["hub"], "h2", st)


if __name__ == "__main__":
    hubfix.main()
