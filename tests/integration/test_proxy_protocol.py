"""The PROXY protocol in front of hubd doing TLS itself: Debian's HAProxy
in TCP mode with the shipped conf/haproxy-hub-tcp.cfg (send-proxy-v2, and
send-proxy for version 1) before hubd --trusted-proxies 127.0.0.1. Devices
connect from their own loopback addresses (127.0.0.x); the hub takes each
one's address from the header: presence, events, `hubctl device show`
carry it, and one bad client locks out only its own address, not the
others behind the same proxy. A header from a peer outside
--trusted-proxies is never honoured (the connection fails: it is neither
TLS nor HTTP); a malformed, truncated or stalled header from a trusted
peer is closed within --handshake-timeout and counted in
hub_proxy_headers_total. HAProxy tests skip with a message when it is not
installed."""

import base64
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, sport, dst="127.0.0.1", dport=443, tlvs=b"", cmd=0x21):
    body = (socket.inet_aton(src) + socket.inet_aton(dst) +
            struct.pack("!HH", sport, dport) + tlvs)
    return SIG + bytes([cmd, 0x11]) + struct.pack("!H", len(body)) + body


def upgrade(port, path, src="127.0.0.1", headers=b"", before=b"",
            pause=None, timeout=10):
    """A TLS upgrade request to 127.0.0.1:port from source address src,
    with `before` sent first in clear (a PROXY header), in two pieces
    `pause` seconds apart when given. Returns (status, tls socket); the
    status is 0 when the server closed first."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                   source_address=(src, 0))
    if before:
        if pause:
            raw.sendall(before[:len(before) // 2])
            time.sleep(pause)
            raw.sendall(before[len(before) // 2:])
        else:
            raw.sendall(before)
    s = hubfix.insecure_ssl().wrap_socket(raw, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n"
              b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: " + key + b"\r\n"
              b"Sec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Protocol: hub.v1\r\n" + headers + b"\r\n")
    buf = b""
    while b"\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            return 0, s
        buf += d
    return int(buf.split()[1]), s


def status_once(port, path, src="127.0.0.1", headers=b"", before=b""):
    st, s = upgrade(port, path, src, headers, before)
    s.close()
    return st


def closed_by_server(sock, timeout=10):
    """True once the server closes (EOF or reset) within timeout."""
    sock.settimeout(hubfix.T(timeout))
    try:
        while True:
            d = sock.recv(4096)
            if not d:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


class TestProxyProtocol(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("dev1", "dev2", "dev3")
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

    def bearer(self, dev, tok=None):
        return b"Authorization: Bearer " + (tok or self.tok[dev]).encode() + \
            b"\r\n"

    def haproxy(self, hub_port, version=2):
        if not os.path.exists(HAPROXY):
            self.skipTest("haproxy not installed (tools/setup installs it)")
        port = hubfix.free_port()
        d = os.path.join(self.tmp, "haproxy")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(hubfix.HUB_SRC, "conf",
                               "haproxy-hub-tcp.cfg")) as f:
            cfg = f.read()
        subs = [("bind :443", f"bind 127.0.0.1:{port}"),
                ("server hub1 127.0.0.1:8443",
                 f"server hub1 127.0.0.1:{hub_port}"),
                ("maxconn 200000", "maxconn 1000")]
        if version == 1:
            subs.append(("send-proxy-v2", "send-proxy"))
        for old, new in subs:
            self.assertIn(old, cfg)
            cfg = cfg.replace(old, new)
        with open(os.path.join(d, "haproxy.cfg"), "w") as f:
            f.write(cfg)
        with open(f"{d}/stderr.log", "wb") as err:
            self.proxy = subprocess.Popen(
                [HAPROXY, "-db", "-f", f"{d}/haproxy.cfg"],
                stdout=subprocess.DEVNULL, stderr=err)
        hubfix.wait_until(lambda: hubfix.port_open(port), 10,
                          what="haproxy listening")
        return port

    def run_haproxy(self, version):
        hub = self.start_hub(extra=["--trusted-proxies", "127.0.0.1/32",
                                    "--auth-fail-limit", 3])
        port = self.haproxy(hub.port, version)
        sub = self.mqtt("devices/+/status")
        # a good device at 127.0.0.5 behind the proxy: its address
        st, s1 = upgrade(port, b"/v1/devices/dev1", "127.0.0.5",
                         self.bearer("dev1"))
        self.assertEqual(st, 101)
        on = sub.wait_for(lambda m: m.topic == "devices/dev1/status" and
                          json.loads(m.payload).get("online"), 10,
                          "dev1 online")
        self.assertEqual(json.loads(on.payload)["addr"], "127.0.0.5")
        show = self.hubctl_json("device", "show", "dev1")
        self.assertEqual(show.get("addr"), "127.0.0.5", show)
        # a bad client at 127.0.0.3 behind the same proxy (its own
        # X-Forwarded-For is not believed: the header speaks first)
        for _ in range(3):
            self.assertEqual(status_once(
                port, b"/v1/devices/dev2", "127.0.0.3",
                self.bearer("dev2", "wrong") +
                b"X-Forwarded-For: 127.0.0.9\r\n"), 401)
        self.assertEqual(status_once(port, b"/v1/devices/dev2", "127.0.0.3",
                                     self.bearer("dev2")), 429)
        # ... is locked out alone: another client behind the proxy is not
        st, s2 = upgrade(port, b"/v1/devices/dev2", "127.0.0.4",
                         self.bearer("dev2"))
        self.assertEqual(st, 101)
        ev = [e for e in self.events() if e["kind"] == "auth_failed"]
        self.assertEqual({e["addr"] for e in ev}, {"127.0.0.3"}, ev)
        hubfix.wait_until(
            lambda: hub.metrics().get(
                'hub_proxy_headers_total{result="ok"}', 0) >= 6, 10,
            what="the headers counted")
        s1.close()
        s2.close()
        return hub

    def test_haproxy_v2(self):
        self.run_haproxy(2)

    def test_haproxy_v1(self):
        self.run_haproxy(1)

    def test_direct_headers(self):
        """From a trusted peer (this test, at 127.0.0.1): v1 and v2 headers
        written by hand, v2 with TLVs and in two pieces; no header at all
        (the peer is also an HTTP proxy); LOCAL keeps the peer's address."""
        hub = self.start_hub(extra=["--trusted-proxies", "127.0.0.1",
                                    "--handshake-timeout", 5])
        sub = self.mqtt("devices/+/status")

        def addr_of(dev, before, pause=None):
            st, s = upgrade(hub.port, b"/v1/devices/" + dev.encode(),
                            before=before, headers=self.bearer(dev),
                            pause=pause)
            self.assertEqual(st, 101, before)
            m = sub.wait_for(lambda m: m.topic == f"devices/{dev}/status" and
                             json.loads(m.payload).get("online") and
                             json.loads(m.payload)["session"] not in seen,
                             10, f"{dev} online")
            seen.add(json.loads(m.payload)["session"])
            s.close()
            return json.loads(m.payload)["addr"]
        seen = set()
        self.assertEqual(addr_of(
            "dev1", b"PROXY TCP4 127.0.0.7 127.0.0.1 5000 443\r\n"),
            "127.0.0.7")
        self.assertEqual(addr_of(
            "dev2", b"PROXY TCP6 2001:db8::7 ::1 5000 443\r\n"),
            "2001:db8::7")
        tlv = b"\x04\x00\x40" + b"n" * 64 + b"\x01\x00\x02h2"
        self.assertEqual(addr_of("dev3", v2("127.0.0.8", 6000, tlvs=tlv),
                                 pause=0.3), "127.0.0.8")
        self.assertEqual(addr_of("dev1", b""), "127.0.0.1")
        self.assertEqual(addr_of("dev2", b"PROXY UNKNOWN\r\n"), "127.0.0.1")
        self.assertEqual(addr_of("dev3", SIG + b"\x20\x00\x00\x00"),
                         "127.0.0.1")

    def test_bad_headers_closed_and_counted(self):
        hub = self.start_hub(extra=["--trusted-proxies", "127.0.0.1",
                                    "--handshake-timeout", 2])

        def count(result):
            return hub.metrics().get(
                f'hub_proxy_headers_total{{result="{result}"}}', 0)

        for junk in (b"PROXY TCP4 127.0.0.5 127.0.0.1 1 2 3\r\n",
                     b"PROXY TCP4 999.0.0.5 127.0.0.1 1 2\r\n",
                     b"PROXY " + b"x" * 120,
                     SIG + b"\x21\x12\x00\x0c" + b"\x00" * 12,  # UDP
                     SIG + b"\x21\x11\x00\x04abcd"):  # short block
            s = socket.create_connection(("127.0.0.1", hub.port),
                                         timeout=10)
            s.sendall(junk)
            self.assertTrue(closed_by_server(s), junk)
            s.close()
        hubfix.wait_until(lambda: count("invalid") >= 5, 10,
                          what="5 invalid headers counted")
        # truncated: half a header, then nothing; closed by the timeout
        t0 = time.monotonic()
        for part in (b"PROXY TCP4 127.0.0.5 12", SIG[:7]):
            s = socket.create_connection(("127.0.0.1", hub.port),
                                         timeout=10)
            s.sendall(part)
            self.assertTrue(closed_by_server(s, 10), part)
            s.close()
        self.assertLess(time.monotonic() - t0, 2 * 2 + 6)
        hubfix.wait_until(lambda: count("timeout") >= 2, 10,
                          what="2 timeouts counted")
        # cut off by the client mid-header
        s = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
        s.sendall(b"PROXY TCP4 ")
        s.close()
        hubfix.wait_until(lambda: count("closed") >= 1, 10,
                          what="a closed header counted")
        # the hub still serves
        self.assertEqual(status_once(
            hub.port, b"/v1/devices/dev1", headers=self.bearer("dev1"),
            before=b"PROXY TCP4 127.0.0.6 127.0.0.1 1 2\r\n"), 101)

    def test_pending_per_client_address(self):
        """--max-pending-per-addr counts the address the header names, not
        the proxy's: two silent connections for 127.0.0.5 fill its share,
        a third for it is closed at once, one for 127.0.0.6 is not."""
        hub = self.start_hub(extra=["--trusted-proxies", "127.0.0.1",
                                    "--max-pending-per-addr", 2,
                                    "--handshake-timeout", 5])

        def held(addr):
            s = socket.create_connection(("127.0.0.1", hub.port),
                                         timeout=10)
            s.sendall(f"PROXY TCP4 {addr} 127.0.0.1 1 2\r\n".encode())
            return s
        first = [held("127.0.0.5") for _ in range(2)]

        def third_refused():
            s = held("127.0.0.5")
            try:
                return closed_by_server(s, 0.5)
            finally:
                s.close()
        hubfix.wait_until(third_refused, 10, interval=0.05,
                          what="a third pending connection of 127.0.0.5 "
                               "refused")
        other = held("127.0.0.6")
        self.assertFalse(closed_by_server(other, 0.5),
                         "127.0.0.6 was capped with 127.0.0.5")
        for s in first + [other]:
            s.close()

    def test_untrusted_peer_never_honoured(self):
        """A peer outside --trusted-proxies that sends a header is refused
        (TLS and --no-tls), and a good request after it from the same
        address still works: the header was never read as an address."""
        src = "127.0.0.9"
        hub = self.start_hub(extra=["--trusted-proxies", "127.0.0.1"])
        for hdr in (b"PROXY TCP4 127.0.0.5 127.0.0.1 1 2\r\n",
                    v2("127.0.0.5", 1)):
            with self.assertRaises((ssl.SSLError, ConnectionError,
                                    socket.timeout, OSError)):
                status_once(hub.port, b"/v1/devices/dev1", src,
                            self.bearer("dev1"), before=hdr)
        self.assertEqual(hub.metrics().get(
            'hub_proxy_headers_total{result="ok"}', 0), 0)
        sub = self.mqtt("devices/+/status")
        st, s = upgrade(hub.port, b"/v1/devices/dev1", src,
                        self.bearer("dev1"))
        self.assertEqual(st, 101)
        on = sub.wait_for(lambda m: m.topic == "devices/dev1/status" and
                          json.loads(m.payload).get("online"), 10,
                          "dev1 online")
        self.assertEqual(json.loads(on.payload)["addr"], src)
        s.close()

    def test_untrusted_peer_no_tls(self):
        hub = self.start_hub(extra=["--no-tls", "--trusted-proxies",
                                    "127.0.0.1"])
        for hdr in (b"PROXY TCP4 127.0.0.5 127.0.0.1 1 2\r\n",
                    v2("127.0.0.5", 1)):
            s = socket.create_connection(("127.0.0.1", hub.port),
                                         timeout=10,
                                         source_address=("127.0.0.9", 0))
            key = base64.b64encode(os.urandom(16))
            s.sendall(hdr + b"GET /v1/devices/dev1 HTTP/1.1\r\n"
                      b"Host: localhost\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                      b"\r\nSec-WebSocket-Version: 13\r\n" +
                      self.bearer("dev1") + b"\r\n")
            s.settimeout(hubfix.T(10))
            buf = b""
            try:
                while True:
                    d = s.recv(4096)
                    if not d:
                        break
                    buf += d
            except (ConnectionResetError, socket.timeout):
                pass
            s.close()
            # v1 is answered 400 and closed, v2 is not HTTP at all
            self.assertTrue(buf == b"" or buf.startswith(b"HTTP/1.1 400 "),
                            buf)
        self.assertEqual(
            [e for e in self.events() if e["kind"] == "session_start"], [])


if __name__ == "__main__":
    hubfix.main()
