"""A real cluster on loopback: three NATS Server nodes (MQTT 3.1.1 on
clustered JetStream, conf/cluster/nats-node.conf), two hubs on different
nodes (their own registries, one --token-key, --mqtt-version 3) and HAProxy
in front (conf/cluster/haproxy.cfg, PROXY protocol v2 to the hubs, which
trust 127.0.0.1). A device provisioned once with a signed token connects
through the load balancer to either hub, under its own address; a command
published on node 1 reaches a device held by the hub on node 2; a group
command reaches devices on every hub; a takeover across hubs closes the
old session with 4001 and leaves the device online; a revocation closes
and refuses the device on every hub. Skipped with a message where
nats-server is not installed (tools/setup installs it)."""

import json
import os
import shutil
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

        # a command published on node 1 reaches the device held by the hub
        # on node 2 (a few tries: the hub's subscription is replicated)
        p1 = self.mqtt3(self.nodes[0])

        def cmd_arrives():
            p1.pub(f"devices/{on2}/cmd/ping", b'{"n":1}')
            try:
                c[on2].wait_op("msg", topic="cmd/ping", timeout=1)
                return True
            except AssertionError:
                return False
        hubfix.wait_until(cmd_arrives, 20, interval=0.2,
                          what="command across broker nodes")

        # a group command (published on node 3) reaches members on both hubs
        p3 = self.mqtt3(self.nodes[2])

        def group_arrives():
            p3.pub("groups/east/cmd/sync", b'{"v":1}')
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

        # revocation (the retained message hubctl publishes) on every hub
        p1.pub(f"hub/revoked/{on1}",
               json.dumps({"before": int(time.time()), "reason": "disabled"}).encode(),
               retain=True)
        self.assertEqual(c[on1].wait_closed(20), 4003)
        def refused(h):
            # an accepted upgrade means "not yet": the revocation travels
            # through the hub's own NATS node
            try:
                return ws_refusal(h.url(on1), tok[on1])[0] == 401
            except AssertionError:
                return False
        for h in hubs:
            hubfix.wait_until(lambda: refused(h), 30, interval=0.5,
                              what=f"{on1} refused on {h.hub_id}")
        self.assertTrue(moved.is_open(), "another device is not affected")


    def test_node_failure(self):
        """Kill -9 the broker node a hub uses: the hub fails over to the
        next node of its --broker list, nothing acked is lost (a
        persistent subscriber on another node receives every acked
        message), the device session survives."""
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
        # (the device's retained presence on a surviving node is not
        # asserted: once, on a loaded machine, node 2 did not hand it to a
        # new subscriber within 80 s after the kill - see operations.md)
        self.assertTrue(c.is_open(), "the device session survived the node failure")

if __name__ == "__main__":
    hubfix.main()
