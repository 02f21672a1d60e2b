"""The device listener's TLS, tested from outside with OpenSSL's command-line
client and Python's ssl (OpenSSL underneath): TLS 1.2 and 1.3 only, ECDHE +
AEAD suites only, session resumption on any worker (tickets whose keys all
workers, and hubs sharing --ticket-key, derive from one secret), SNI that
must not turn the optional client certificate into a required one, and what
a TLS 1.3 KeyUpdate from the client does (mbedTLS 3.6 closes the
connection: documented in docs/operations.md)."""

import os
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def s_client(port, *args, stdin=b"", timeout=20):
    """openssl s_client's output (stdout + stderr) for one connection."""
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=stdin, capture_output=True, timeout=timeout)
    return (r.stdout + r.stderr).decode("utf-8", "replace")


def upgrade_request(port, device, token):
    return ("\r\n".join([
        f"GET /v1/devices/{device} HTTP/1.1", f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: hub.v1",
        f"Authorization: Bearer {token}"]) + "\r\n\r\n").encode()


class TestTLS(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("tls1", "tls2")

    def ctx(self, version=None, ciphers=None):
        c = hubfix.insecure_ssl()
        if version is not None:
            c.minimum_version = version
            c.maximum_version = version
        if ciphers:
            c.set_ciphers(ciphers)
        return c

    def session(self, hub, ctx, device="tls1", session=None, sni=None):
        """One wss session (upgrade, 101, then close) over one TLS
        connection; returns the SSLSocket's (version, cipher, session,
        session_reused). Reading the 101 also reads the TLS 1.3
        NewSessionTicket that precedes it."""
        raw = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
        try:
            s = ctx.wrap_socket(raw, server_hostname=sni, session=session)
        except Exception:
            raw.close()
            raise
        with s:
            s.sendall(upgrade_request(hub.port, device, self.tok[device]))
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
            self.assertTrue(buf.startswith(b"HTTP/1.1 101"), buf[:200])
            return s.version(), s.cipher()[0], s.session, s.session_reused

    # ---- versions and suites ----------------------------------------------

    def test_versions_and_suites(self):
        hub = self.start_hub()
        # TLS 1.0 and 1.1 are refused by the server (protocol_version alert),
        # not by OpenSSL's own client policy (@SECLEVEL=0 lets it offer them)
        for v in ("-tls1", "-tls1_1"):
            out = s_client(hub.port, v, "-cipher", "DEFAULT@SECLEVEL=0")
            self.assertIn("alert protocol version", out, out)
            self.assertNotIn("BEGIN CERTIFICATE", out)
        # 1.2 and 1.3 both work, with AEAD suites
        v, cipher, _, _ = self.session(hub, self.ctx(ssl.TLSVersion.TLSv1_2))
        self.assertEqual(v, "TLSv1.2")
        self.assertRegex(cipher, r"^ECDHE-ECDSA-(AES128-GCM|AES256-GCM|CHACHA20)")
        v, cipher, _, _ = self.session(hub, self.ctx(ssl.TLSVersion.TLSv1_3))
        self.assertEqual(v, "TLSv1.3")
        # a default client gets 1.3
        v, _, _, _ = self.session(hub, self.ctx())
        self.assertEqual(v, "TLSv1.3")
        # no CBC / SHA-1 / non-ECDHE suite, even if that is all a client has
        for suite in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA",
                      "ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256"):
            with self.assertRaises(ssl.SSLError, msg=suite):
                self.session(hub, self.ctx(ssl.TLSVersion.TLSv1_2, suite))
        out = s_client(hub.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256")
        self.assertIn("alert handshake failure", out, out)
        # TLS 1.2 ECDHE: the server's first choice of group is P-256
        out = s_client(hub.port, "-tls1_2", "-groups", "X25519:P-256")
        self.assertIn("Server Temp Key: ECDH, prime256v1", out, out)

    def test_each_tls12_suite_fresh_and_resumed(self):
        # every TLS 1.2 suite the server offers carries data both ways (the
        # upgrade request in, the 101 out) on a fresh and on a resumed
        # connection: the key block of each suite is derived to its own
        # length (patches/mbedtls-tls12-key-block.patch), so a wrong length
        # or offset would break exactly one suite's keys or IVs
        hub = self.start_hub()
        for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256",
                      "ECDHE-ECDSA-AES256-GCM-SHA384",
                      "ECDHE-ECDSA-CHACHA20-POLY1305"):
            ctx = self.ctx(ssl.TLSVersion.TLSv1_2, suite)
            _, cipher, sess, reused = self.session(hub, ctx)
            self.assertEqual(cipher, suite)
            self.assertFalse(reused)
            _, cipher, _, reused = self.session(hub, ctx, session=sess)
            self.assertEqual(cipher, suite)
            self.assertTrue(reused, f"{suite}: not resumed")

    # ---- resumption -----------------------------------------------------------

    def resume_all(self, hub, version, n=20):
        ctx = self.ctx(version)
        v, _, sess, reused = self.session(hub, ctx)
        self.assertEqual(v, "TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
        self.assertFalse(reused)
        self.assertIsNotNone(sess)
        if version == ssl.TLSVersion.TLSv1_3:
            self.assertTrue(sess.has_ticket, "no TLS 1.3 NewSessionTicket")
        missed = []
        for i in range(n):
            # every reconnect offers the first session's ticket; with
            # SO_REUSEPORT it lands on either worker
            _, _, _, reused = self.session(hub, ctx, session=sess)
            if not reused:
                missed.append(i)
        self.assertEqual(missed, [], f"{version.name}: reconnects not resumed")

    def test_resumption_on_any_worker(self):
        hub = self.start_hub(workers=2)
        hubfix.wait_until(lambda: len(worker_pids(hub)) == 2, 10,
                          what="two workers")
        self.resume_all(hub, ssl.TLSVersion.TLSv1_2)
        self.resume_all(hub, ssl.TLSVersion.TLSv1_3)
        # a ticket from another hub with its own (random) key: a full
        # handshake, not a failure
        other = self.start_hub(hub_id="hubB")
        ctx = self.ctx(ssl.TLSVersion.TLSv1_2)
        _, _, sess, _ = self.session(hub, ctx)
        _, _, _, reused = self.session(other, ctx, session=sess)
        self.assertFalse(reused)

    def test_ticket_key_file_shared_by_hubs(self):
        key = os.path.join(self.tmp, "ticket.key")
        with open(key, "wb") as f:
            f.write(os.urandom(48))
        os.chmod(key, 0o600)
        a = self.start_hub(extra=["--ticket-key", key], hub_id="hubA")
        b = self.start_hub(extra=["--ticket-key", key], hub_id="hubB")
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = self.ctx(version)
            _, _, sess, _ = self.session(a, ctx)
            _, _, _, reused = self.session(b, ctx, session=sess)
            self.assertTrue(reused, f"{version.name}: hub B did not resume hub A's ticket")
        # a key file others can read is refused; so is a short one
        os.chmod(key, 0o644)
        bad = hubfix.Hub(self.tmp, self.cert, self.key, self.db, self.broker.port,
                         hub_id="hubC", extra=["--ticket-key", key])
        r = subprocess.run(bad.args, capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"chmod 600", r.stderr)
        with open(key, "wb") as f:
            f.write(b"short")
        os.chmod(key, 0o600)
        r = subprocess.run(bad.args, capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"at least 32 bytes", r.stderr)

    # ---- SNI and client certificates -------------------------------------------

    def test_sni_does_not_require_client_cert(self):
        d = self.tmp
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ca = os.path.join(d, "devca.pem")
        openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=device-ca",
                "-keyout", os.path.join(d, "devca.key"), "-out", ca)
        hub = self.start_hub(extra=["--device-ca", ca])
        # token-only devices (no certificate) with any SNI, including the
        # names lws matches against its vhost ("devices", a prefix of it,
        # a wildcard under it) and an ordinary host name
        for sni in (None, "localhost", "devices", "d", "x.devices", "hub.example.com"):
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                with self.subTest(sni=sni, version=version.name):
                    v, _, _, _ = self.session(hub, self.ctx(version), sni=sni)
                    self.assertEqual(v, version.name.replace("v1_", "v1."))

    # ---- KeyUpdate ---------------------------------------------------------------

    def test_client_key_update_closes_the_connection(self):
        """mbedTLS 3.6 does not implement KeyUpdate: a TLS 1.3 client that
        sends one gets its connection closed (the session ends like any
        closed connection), and the hub keeps serving."""
        hub = self.start_hub()
        p = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{hub.port}",
             "-tls1_3", "-crlf"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(p)
        os.set_blocking(p.stdout.fileno(), False)
        out = bytearray()

        def read_until(what):
            def got():
                try:
                    d = p.stdout.read()
                except BlockingIOError:
                    d = None
                if d:
                    out.extend(d)
                return what in out
            return got
        req = upgrade_request(hub.port, "tls2", self.tok["tls2"]).decode()
        # s_client sends each line with -crlf; the blank line ends the request
        p.stdin.write(req.replace("\r\n", "\n").encode())
        p.stdin.flush()
        hubfix.wait_until(read_until(b"101 Switching Protocols"), 15,
                          what="101 through s_client")
        hubfix.wait_until(lambda: hub.metrics().get("hub_connections") == 1, 10,
                          what="session online")
        # a control: without the KeyUpdate the session stays up
        time.sleep(1)
        self.assertIsNone(p.poll(), out.decode("utf-8", "replace"))
        self.assertEqual(hub.metrics().get("hub_connections"), 1)
        p.stdin.write(b"k\n")  # s_client's command: send a KeyUpdate
        p.stdin.flush()
        # the server ends the TCP connection (s_client exits on it) and the
        # session with it
        hubfix.wait_until(lambda: p.poll() is not None, 10,
                          what="s_client ended by the server after KeyUpdate")
        hubfix.wait_until(lambda: hub.metrics().get("hub_connections") == 0, 10,
                          what="session ended after KeyUpdate")
        ev = hubfix.wait_until(
            lambda: [e for e in self.events("tls2") if e["kind"] == "offline"],
            10, what="offline event")
        self.assertEqual(ev[0]["reason"], "closed")
        # the hub goes on serving
        v, _, _, _ = self.session(hub, self.ctx(ssl.TLSVersion.TLSv1_3), device="tls2")
        self.assertEqual(v, "TLSv1.3")


def worker_pids(hub):
    try:
        with open(f"/proc/{hub.proc.pid}/task/{hub.proc.pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
