"""The README works verbatim: the quick-start blocks (between
<!-- quickstart:NAME --> and <!-- /quickstart --> in README.md) are
extracted and run as written, from the repository root: `up` in the
background as a user's first terminal, `device` in a second one. Only if
the default ports are taken on this machine are they moved (tools/up's
HUB_WSS_PORT / HUB_HTTP_PORT, and the same port in the commands).

Also: `hubd --config conf/hub.conf` (the README's way to run without
tools/up) starts from a clone once conf/dev-cert has made var/'s
certificate, and picks one worker per core here."""

import os
import re
import signal
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402

ROOT = hubfix.HUB_SRC


def blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    out = {}
    for name, body in re.findall(
            r"<!-- quickstart:(\w+) -->\n(.*?)<!-- /quickstart -->", text, re.S):
        lines = [ln for ln in body.splitlines() if not ln.startswith("```")]
        out[name] = "\n".join(lines).strip() + "\n"
    return out


class TestReadmeQuickstart(hubfix.HubTest):

    def test_quickstart_verbatim(self):
        b = blocks()
        self.assertEqual(set(b), {"up", "device"}, "README quick-start markers")
        env = dict(os.environ)
        env.pop("HUB_DEMO_DEVICES", None)
        dev = b["device"]
        for var, port in (("HUB_WSS_PORT", 8443), ("HUB_HTTP_PORT", 9100)):
            if hubfix.port_open(port):
                new = hubfix.free_port()
                hubfix.log(f"port {port} is taken here: using {new}")
                env[var] = str(new)
                dev = dev.replace(f":{port}", f":{new}")
        up = subprocess.Popen(["bash", "-euo", "pipefail", "-c", b["up"]], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
        out = []

        def pump():
            for ln in up.stdout:
                out.append(ln)
        t = threading.Thread(target=pump, daemon=True)
        t.start()

        def stop():
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGTERM)
                try:
                    up.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(up.pid, signal.SIGKILL)
                    up.wait(10)
        self.addCleanup(stop)
        # tools/up builds the release tree first: minutes on a cold machine
        hubfix.wait_until(
            lambda: any(ln.startswith("up: stop:") for ln in out) or up.poll() is not None,
            900, interval=0.5, what="tools/up banner")
        text = "".join(out)
        self.assertIsNone(up.poll(), text[-3000:])
        self.assertIn("wss://localhost:", text)
        self.assertIn("dashboard:", text)
        self.assertIn("--ca var/hub-cert.pem", text)
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", dev], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, f"{dev}\n---\n{r.stdout}\n{r.stderr}")
        self.assertIn("my-sensor", r.stdout)
        self.assertIn("online", r.stdout)
        os.killpg(up.pid, signal.SIGTERM)
        self.assertEqual(up.wait(60), 0, "".join(out)[-2000:])
        t.join(10)
        self.assertIn("up: stopped", "".join(out))

    def test_hubd_config_from_a_clone(self):
        clone = os.path.join(self.tmp, "clone")
        os.makedirs(os.path.join(clone, "conf"))
        with open(os.path.join(ROOT, "conf", "hub.conf")) as f:
            conf = f.read()
        with open(os.path.join(clone, "conf", "hub.conf"), "w") as f:
            f.write(conf)
        r = subprocess.run([os.path.join(ROOT, "conf", "dev-cert"), "var"], cwd=clone,
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        wss, http = hubfix.free_port(), hubfix.free_port()
        # the file as shipped; only the ports move (flags win), since this
        # machine may run other hubs and brokers
        p = subprocess.Popen(
            [hubfix.HUBD, "--config", "conf/hub.conf", "--listen", f"127.0.0.1:{wss}",
             "--http", f"127.0.0.1:{http}",
             "--broker", f"tcp://127.0.0.1:{self.broker.port}"],
            cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.procs.append(p)
        hub = hubfix.Hub.__new__(hubfix.Hub)
        hub.http_port = http
        try:
            hubfix.wait_until(lambda: p.poll() is not None or hub.http("/readyz")[0] == 200,
                              30, what="hubd --config conf/hub.conf ready")
            self.assertIsNone(p.poll(), p.stdout.read() if p.poll() is not None else "")
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
            log = p.communicate(timeout=60)[0]
        self.assertEqual(p.returncode, 0, log)
        n = int(re.search(r"(\d+) workers", log).group(1))
        self.assertEqual(n, max(1, os.cpu_count()), log)
        self.assertTrue(os.path.isfile(os.path.join(clone, "var", "registry.db")))


if __name__ == "__main__":
    hubfix.unittest.main(verbosity=2)
