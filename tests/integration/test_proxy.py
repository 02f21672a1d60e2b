"""The shipped proxy configurations (conf/nginx-hub.conf,
conf/haproxy-hub.cfg) in front of hubd --no-tls --trusted-proxies: devices
connect through the proxy over TLS; the hub takes each client's address
from X-Forwarded-For, so one bad client behind the proxy is locked out
(429) while the others are not, events and presence carry the client's
address, and nginx's access log never holds a token. Debian's nginx and
haproxy; skipped with a message when they are not installed."""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def upgrade_status(port, path, src, headers=b"", timeout=10):
    """An upgrade over TLS from source address src; returns the status and
    keeps nothing open."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                   source_address=(src, 0))
    s = hubfix.insecure_ssl().wrap_socket(raw, server_hostname="localhost")
    try:
        key = base64.b64encode(os.urandom(16))
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n"
                  b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\n"
                  b"Sec-WebSocket-Version: 13\r\n" + headers + b"\r\n")
        buf = b""
        while b"\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                return 0
            buf += d
        return int(buf.split()[1])
    finally:
        s.close()


class ProxyCase:
    """Runs a shipped proxy config in front of a --no-tls hub."""

    def start_proxy(self, hub_port):
        raise NotImplementedError

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("dev1", "dev2")
        self.proxy = None

    def tearDown(self):
        if self.proxy and self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(10)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()
        super().tearDown()

    def run_case(self):
        hub = self.start_hub(extra=["--no-tls", "--trusted-proxies",
                                    "127.0.0.1", "--auth-fail-limit", 3])
        port = self.start_proxy(hub.port)
        hubfix.wait_until(lambda: hubfix.port_open(port), 10,
                          what="the proxy listening")
        sub = self.mqtt("devices/+/status")
        tok1 = self.tok["dev1"].encode()
        # a good device behind the proxy: its own address in presence
        st = upgrade_status(port, b"/v1/devices/dev1?token=" + tok1,
                            "127.0.0.2")
        self.assertEqual(st, 101)
        on = sub.wait_for(lambda m: m.topic == "devices/dev1/status" and
                          json.loads(m.payload).get("online"), 10,
                          "dev1 online")
        self.assertEqual(json.loads(on.payload)["addr"], "127.0.0.2")
        # a bad client behind the same proxy, claiming another address
        for _ in range(3):
            self.assertEqual(upgrade_status(
                port, b"/v1/devices/dev2", "127.0.0.3",
                b"Authorization: Bearer wrong\r\n"
                b"X-Forwarded-For: 127.0.0.9\r\n"), 401)
        self.assertEqual(upgrade_status(
            port, b"/v1/devices/dev2", "127.0.0.3",
            b"Authorization: Bearer " + self.tok["dev2"].encode() + b"\r\n"),
            429)
        # ... is locked out alone: the others behind the proxy are not
        self.assertEqual(upgrade_status(
            port, b"/v1/devices/dev2", "127.0.0.4",
            b"Authorization: Bearer " + self.tok["dev2"].encode() + b"\r\n"),
            101)
        ev = [e for e in self.events() if e["kind"] == "auth_failed"]
        self.assertEqual([e["addr"] for e in ev], ["127.0.0.3"], ev)
        return port


class TestNginx(ProxyCase, hubfix.HubTest):

    def start_proxy(self, hub_port):
        if not os.path.exists(NGINX):
            self.skipTest("nginx not installed (tools/setup installs it)")
        port = hubfix.free_port()
        d = os.path.join(self.tmp, "nginx")
        os.makedirs(os.path.join(d, "logs"), exist_ok=True)
        self.access_log = os.path.join(d, "logs", "hub-access.log")
        with open(os.path.join(hubfix.HUB_SRC, "conf", "nginx-hub.conf")) as f:
            site = f.read()
        for old, new in (("listen 8443 ssl", f"listen 127.0.0.1:{port} ssl"),
                         ("/etc/hub/tls/cert.pem", self.cert),
                         ("/etc/hub/tls/key.pem", self.key),
                         ("/var/log/nginx/hub-access.log", self.access_log),
                         ("server 127.0.0.1:8080", f"server 127.0.0.1:{hub_port}")):
            self.assertIn(old, site)
            site = site.replace(old, new)
        with open(os.path.join(d, "hub.conf"), "w") as f:
            f.write(site)
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(f"daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\n"
                    f"error_log {d}/logs/error.log;\n"
                    "events { worker_connections 256; }\n"
                    f"http {{\n  access_log off;\n"
                    f"  client_body_temp_path {d}/body;\n"
                    f"  proxy_temp_path {d}/proxy;\n"
                    f"  include {d}/hub.conf;\n}}\n")
        with open(f"{d}/stderr.log", "wb") as err:
            self.proxy = subprocess.Popen(
                [NGINX, "-p", d, "-c", f"{d}/nginx.conf"],
                stdout=subprocess.DEVNULL, stderr=err)
        return port

    def test_nginx(self):
        self.run_case()
        # the token sent as ?token= is not in nginx's access log
        hubfix.wait_until(lambda: os.path.exists(self.access_log) and
                          os.path.getsize(self.access_log) > 0, 10,
                          what="nginx access log written")
        with open(self.access_log, "rb") as f:
            text = f.read()
        self.assertIn(b"/v1/devices/dev1", text)
        self.assertNotIn(self.tok["dev1"].encode(), text)
        self.assertNotIn(b"token=", text)


class TestHaproxy(ProxyCase, hubfix.HubTest):

    def start_proxy(self, hub_port):
        if not os.path.exists(HAPROXY):
            self.skipTest("haproxy not installed (tools/setup installs it)")
        port = hubfix.free_port()
        d = os.path.join(self.tmp, "haproxy")
        os.makedirs(d, exist_ok=True)
        pem = os.path.join(d, "haproxy.pem")
        with open(pem, "wb") as out:
            for p in (self.cert, self.key):
                with open(p, "rb") as f:
                    out.write(f.read())
        with open(os.path.join(hubfix.HUB_SRC, "conf", "haproxy-hub.cfg")) as f:
            cfg = f.read()
        for old, new in (("bind :8443", f"bind 127.0.0.1:{port}"),
                         ("/etc/hub/tls/haproxy.pem", pem),
                         ("server hub1 127.0.0.1:8080",
                          f"server hub1 127.0.0.1:{hub_port}"),
                         ("maxconn 200000", "maxconn 1000")):
            self.assertIn(old, cfg)
            cfg = cfg.replace(old, new)
        with open(os.path.join(d, "haproxy.cfg"), "w") as f:
            f.write(cfg)
        with open(f"{d}/stderr.log", "wb") as err:
            self.proxy = subprocess.Popen(
                [HAPROXY, "-db", "-f", f"{d}/haproxy.cfg"],
                stdout=subprocess.DEVNULL, stderr=err)
        return port

    def test_haproxy(self):
        self.run_case()


if __name__ == "__main__":
    hubfix.main()
