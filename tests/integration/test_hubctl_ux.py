"""hubctl never guesses: read commands on a missing registry fail (exit 1)
and create nothing; only init / device add / import create it; kick and
send refuse unknown devices unless --force; send says what it published;
broker errors name the cause; tables fit their content; watch prints live
presence; --version and --help (with defaults) on every binary."""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402


def run(*args, cwd=None, timeout=30):
    return subprocess.run([str(a) for a in args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


class TestHubctlUx(hubfix.HubTest):

    def test_read_commands_never_create(self):
        work = os.path.join(self.tmp, "elsewhere")
        os.mkdir(work)
        for args in (["device", "list"], ["device", "show", "x"], ["events"],
                     ["events", "--device", "x"]):
            r = run(hubfix.HUBCTL, *args, cwd=work)
            self.assertEqual(r.returncode, 1, (args, r))
            self.assertIn("no registry at var/registry.db", r.stderr)
            self.assertIn("init", r.stderr)
            self.assertEqual(os.listdir(work), [], args)
        # kick/send without a registry: refused, nothing created
        r = run(hubfix.HUBCTL, "send", "x", "reboot", "{}", cwd=work)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(os.listdir(work), [])
        # init creates it (and its directory); a second init leaves it
        r = run(hubfix.HUBCTL, "init", cwd=work)
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(os.path.isfile(os.path.join(work, "var", "registry.db")))
        r = run(hubfix.HUBCTL, "init", cwd=work)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("already exists", r.stderr)
        r = run(hubfix.HUBCTL, "device", "list", cwd=work)
        self.assertEqual(r.returncode, 0, r)
        # device add creates a missing registry too
        other = os.path.join(self.tmp, "new", "sub", "r.db")
        r = run(hubfix.HUBCTL, "--db", other, "device", "add", "d1")
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(os.path.isfile(other))
        # and so does import
        imp = os.path.join(self.tmp, "imp", "r.db")
        p = subprocess.run([hubfix.HUBCTL, "--db", imp, "device", "import", "-"],
                           input="a\nb,bee\n", capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(len(p.stdout.splitlines()), 2)

    def test_tables_fit_and_last_active(self):
        tok = self.add_devices("a", "a-much-longer-device-id-than-24-chars-x")
        self.hubctl("device", "add", "b", "--name", "boiler room east wing")
        out = self.hubctl("device", "list").stdout.decode()
        lines = out.splitlines()
        self.assertEqual(len(lines), 4, out)
        self.assertTrue(lines[0].startswith("ID"), out)
        self.assertIn("LAST_ACTIVE", lines[0])
        # every column starts at the same offset on every line, and the
        # widest id is followed by exactly two spaces
        col = lines[0].index("NAME")
        for ln in lines[1:]:
            self.assertEqual(ln[col - 2:col], "  ", out)
            self.assertNotEqual(ln[col], " ", out)
        self.assertIn("a-much-longer-device-id-than-24-chars-x  ", out)
        # no padding beyond the widest cell: NAME column is as wide as
        # "boiler room east wing"
        dis = lines[0].index("DISABLED")
        self.assertEqual(dis - col, len("boiler room east wing") + 2, out)
        # an online device is active now; last_seen (JSON) is ~now
        hub = self.start_hub()
        c = self.connect(hub, "a", tok["a"])
        hubfix.wait_until(
            lambda: any(d["online"] for d in self.device_list() if d["id"] == "a"),
            10, what="a online in the registry")
        out = self.hubctl("device", "list", "--online").stdout.decode()
        self.assertRegex(out, r"\na\s+-\s+no\s+yes\s+now\n")
        d = self.hubctl_json("device", "show", "a")
        self.assertLess(abs(d["last_seen"] - hubfix.time.time() * 1000), 60000)
        c.close()
        ev = self.hubctl("events").stdout.decode().splitlines()
        self.assertTrue(ev[0].startswith("SEQ  TIME (UTC)"), ev)

    def test_kick_send_unknown_and_force(self):
        self.add_devices("dev1")
        r = self.hubctl("send", "nosuch", "reboot", "{}", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no device nosuch", r.stderr.decode())
        self.assertIn("--force", r.stderr.decode())
        r = self.hubctl("kick", "nosuch", check=False)
        self.assertEqual(r.returncode, 1)
        sub = self.mqtt("devices/nosuch/cmd/#")
        r = self.hubctl("send", "nosuch", "reboot", '{"a":1}', "--force")
        sub.wait_for(lambda m: m.topic == "devices/nosuch/cmd/reboot", 10)
        self.hubctl("kick", "nosuch", "--force")
        # send says what it published, --quiet says nothing
        r = self.hubctl("send", "dev1", "reboot", "{}")
        out = r.stdout.decode()
        self.assertIn("devices/dev1/cmd/reboot", out)
        self.assertIn("QoS 1", out)
        self.assertIn("not retained", out)
        self.assertIn("no expiry", out)
        r = self.hubctl("send", "dev1", "cfg", "{}", "--qos", "0", "--retain",
                        "--ttl", "60")
        out = r.stdout.decode()
        self.assertIn("QoS 0", out)
        self.assertIn("retained, expires in 60 s", out)
        r = self.hubctl("send", "dev1", "reboot", "{}", "--quiet")
        self.assertEqual(r.stdout, b"")
        j = self.hubctl_json("send", "dev1", "reboot", "{}")
        self.assertEqual(j, {"topic": "devices/dev1/cmd/reboot", "qos": 1,
                             "retain": False, "ttl": None})

    def test_mqtt_version_3(self):
        """--mqtt-version 3 (for NATS and other 3.1.1-only brokers; test_cluster
        runs it on NATS): send, kick, watch and the revocation publishes work
        over MQTT 3.1.1 (mosquitto speaks it too); --ttl/--retain need MQTT
        5's message expiry and are refused."""
        tok = self.add_devices("v3")
        hub = self.start_hub()
        c = self.connect(hub, "v3", tok["v3"])
        r = self.hubctl("--mqtt-version", "3", "send", "v3", "reboot", '{"n":3}')
        self.assertIn("devices/v3/cmd/reboot", r.stdout.decode())
        self.assertEqual(c.wait_op("msg", topic="cmd/reboot")["payload"], {"n": 3})
        for bad in (("--mqtt-version", "4"), ("--mqtt-version", "x")):
            r = self.hubctl(*bad, "send", "v3", "reboot", "{}", check=False)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("--mqtt-version wants 5 or 3", r.stderr.decode())
        r = self.hubctl("--mqtt-version", "3", "send", "v3", "cfg", "{}", "--retain",
                        "--ttl", "60", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--ttl needs MQTT 5", r.stderr.decode())
        # the retained revocation and its clear
        sub = self.mqtt("hub/revoked/#")
        self.hubctl("--mqtt-version", "3", "device", "disable", "v3")
        self.assertEqual(c.wait_closed(10), 4003)
        m = sub.wait_for(lambda m: m.topic == "hub/revoked/v3" and m.payload, 10)
        self.assertEqual(json.loads(m.payload)["reason"], "disabled")
        self.hubctl("--mqtt-version", "3", "device", "enable", "v3")
        sub.wait_for(lambda m: m.topic == "hub/revoked/v3" and not m.payload, 10)
        self.assertEqual(hubfix.retained(self.broker.port, "hub/revoked/v3"), [])
        got = {}

        def enabled():  # the hub reads the registry's change within ~1 s
            try:
                got["c"] = self.connect(hub, "v3", tok["v3"])
                return True
            except Exception:  # noqa: BLE001  (403 until then)
                return False
        hubfix.wait_until(enabled, 10, interval=0.2, what="v3 enabled")
        c = got["c"]
        self.hubctl("--mqtt-version", "3", "kick", "v3")
        self.assertEqual(c.wait_closed(10), 4004)

    def test_broker_errors_say_what_failed(self):
        self.add_devices("dev1")
        port = hubfix.free_port()
        cases = [
            (f"tcp://127.0.0.1:{port}", "connection refused"),
            ("tcp://no-such-host.invalid:1883", "unknown host"),
            ("foo://127.0.0.1:1883", "bad broker URI"),
            ("tcp://127.0.0.1:notaport", "bad broker URI"),
        ]
        for uri, want in cases:
            r = run(hubfix.HUBCTL, "--db", self.db, "--broker", uri, "send",
                    "dev1", "reboot", "{}")
            self.assertEqual(r.returncode, 1, (uri, r))
            self.assertIn(want, r.stderr, uri)
            self.assertNotIn("Failure", r.stderr, uri)
        # a failover list: each URI says what failed; a good one later wins
        r = run(hubfix.HUBCTL, "--db", self.db, "--broker",
                f"tcp://127.0.0.1:{port},tcp://no-such-host.invalid:1883",
                "send", "dev1", "reboot", "{}")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(f"127.0.0.1:{port}: connection refused", r.stderr)
        self.assertIn("no-such-host.invalid:1883: unknown host", r.stderr)
        r = run(hubfix.HUBCTL, "--db", self.db, "--broker",
                f"tcp://127.0.0.1:{port},tcp://127.0.0.1:{self.broker.port}",
                "send", "dev1", "reboot", "{}")
        self.assertEqual(r.returncode, 0, r)

    def test_watch(self):
        tok = self.add_devices("w1", "w2")
        hub = self.start_hub()
        p = subprocess.Popen([hubfix.HUBCTL, "--db", self.db, "--broker",
                              f"tcp://127.0.0.1:{self.broker.port}", "watch",
                              "--device", "w1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        self.procs.append(p)
        lines, errs = [], []
        for stream, into in ((p.stdout, lines), (p.stderr, errs)):
            hubfix.threading.Thread(
                target=lambda s=stream, i=into: [i.append(ln) for ln in s],
                daemon=True).start()
        # subscribed when the "watching" line is on stderr
        hubfix.wait_until(lambda: any("watching" in e for e in errs) or p.poll() is not None,
                          10, what="watch started")
        self.assertIsNone(p.poll(), errs)
        c2 = self.connect(hub, "w2", tok["w2"])
        c1 = self.connect(hub, "w1", tok["w1"])
        hubfix.wait_until(lambda: any(" w1 online" in ln for ln in lines), 10,
                          what="w1 online line")
        c1.close()
        hubfix.wait_until(lambda: any(" w1 offline reason=closed" in ln
                                      for ln in lines), 10,
                          what="w1 offline line")
        self.assertFalse(any(" w2 " in ln for ln in lines), lines)
        for ln in lines:
            self.assertRegex(ln, r"^\d{4}-\d\d-\d\dT[\d:.]+Z w1 (online|offline)")
        c2.close()
        p.terminate()
        self.assertEqual(p.wait(10), 0)

    def test_version_and_help(self):
        for b in (hubfix.HUBCTL, hubfix.HUBD, hubfix.HUB_DEVICE):
            r = run(b, "--version")
            self.assertEqual(r.returncode, 0, (b, r))
            self.assertRegex(r.stdout, r"^\S+ \d+\.\d+\.\d+", b)
        r = run(hubfix.HUBCTL, "--help")
        self.assertEqual(r.returncode, 0)
        for want in ("default var/registry.db", "tcp://127.0.0.1:1883",
                     "QoS 1, not retained", "limit 100", "watch", "init", "--force"):
            self.assertIn(want, r.stdout, want)


if __name__ == "__main__":
    hubfix.unittest.main(verbosity=2)
