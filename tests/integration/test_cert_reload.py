"""A certificate reload (SIGHUP) under TLS handshakes in flight.

Connections the listener accepted before the reload but whose ClientHello
comes after it complete their handshake (with the pair they were accepted
under) and their upgrade; connections made after the reload get the new
certificate; an established session is untouched. Before
patches/lws-mbedtls-cert-reload-inflight.patch the reload freed the
certificate and key those accepted connections still pointed at: every one
of them failed its handshake (a read of freed memory)."""

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402

INFLIGHT = 20
WORKERS = 2


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(path):
    with open(path) as f:
        return fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))


def served_fingerprint(port):
    """The certificate the listener presents to a new connection."""
    ctx = hubfix.insecure_ssl()
    with socket.create_connection(("127.0.0.1", port), timeout=hubfix.T(5)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return fingerprint(s.getpeercert(binary_form=True))


def listener_sockets(port):
    """(accept-queue length summed over the listening sockets, number of
    established server-side connections) on 127.0.0.1:port, from
    /proc/net/tcp (for a listening socket rx_queue is its accept queue)."""
    local = f"0100007F:{port:04X}"
    queued = established = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] != local:
                continue
            if fields[3] == "0A":  # LISTEN
                queued += int(fields[4].split(":")[1], 16)
            elif fields[3] == "01":  # ESTABLISHED
                established += 1
    return queued, established


def pong(rw, timeout=10):
    """Sends an app-level ping on a RawWS session and waits for the pong."""
    rw.send_frame(0x1, json.dumps({"op": "ping"}).encode())
    deadline = time.monotonic() + hubfix.T(timeout)
    while True:
        op, data = rw.read_frame(max(deadline - time.monotonic(), 0.01))
        if op == 0x1 and json.loads(data).get("op") == "pong":
            return
        if op == 0x8:
            raise AssertionError(f"closed instead of pong: {data!r}")


class TestCertReload(hubfix.HubTest):

    def test_handshakes_in_flight_complete_across_a_reload(self):
        devs = [f"dev{i}" for i in range(INFLIGHT)]
        tok = self.add_devices("live", "after", *devs)
        cert = os.path.join(self.tmp, "srv.pem")
        key = os.path.join(self.tmp, "srv.key")
        shutil.copy(self.cert, cert)
        shutil.copy(self.key, key)
        # the accepted connections wait for the reload before their
        # ClientHello: the TLS accept timeout must not be what ends them
        hub = self.start_hub(workers=WORKERS, extra=[
            "--tls-cert", cert, "--tls-key", key, "--handshake-timeout", "300"])
        old = pem_fingerprint(self.cert)
        self.assertEqual(served_fingerprint(hub.port), old)

        sub = self.mqtt("devices/live/status")
        live = self.connect(hub, "live", tok["live"])
        hubfix.wait_until(lambda: any(s["online"] for s in hubfix.status_msgs(sub, "live")),
                          10, what="live online")

        # TCP connections the workers accept (an SSL object each) with no
        # TLS byte sent yet: wait until the accept queues are empty and all
        # of them are established
        raws, sessions = [], []
        try:
            for _ in devs:
                raws.append(socket.create_connection(("127.0.0.1", hub.port),
                                                     timeout=hubfix.T(10)))

            def all_accepted():
                queued, established = listener_sockets(hub.port)
                return queued == 0 and established >= INFLIGHT + 1
            hubfix.wait_until(all_accepted, 20, what="the connections accepted")

            # a new pair (another key, another serial), moved into place
            d2 = os.path.join(self.tmp, "new")
            os.mkdir(d2)
            ncert, nkey = hubfix.make_cert(d2)
            new = pem_fingerprint(ncert)
            self.assertNotEqual(old, new)
            shutil.copy(nkey, key + ".tmp")
            os.replace(key + ".tmp", key)
            shutil.copy(ncert, cert + ".tmp")
            os.replace(cert + ".tmp", cert)
            hub.proc.send_signal(signal.SIGHUP)
            hubfix.wait_until(
                lambda: hub.log_text().count(f"certificate {cert} reloaded") >= WORKERS,
                20, what=f"{WORKERS} workers reloaded")

            # the handshakes begin now: each completes, with the pair its
            # connection was accepted under, and upgrades
            for dev, raw in zip(devs, raws):
                try:
                    rw = hubfix.RawWS(hub.port, f"/v1/devices/{dev}", tok[dev],
                                      timeout=20, raw=raw)
                except (ssl.SSLError, OSError) as e:
                    raise AssertionError(
                        f"{dev}: accepted before the reload, its handshake "
                        f"after it failed: {e!r}") from None
                sessions.append(rw)
                self.assertEqual(fingerprint(rw.s.getpeercert(binary_form=True)), old, dev)
            for dev, rw in zip(devs, sessions):
                pong(rw)
        finally:
            for rw in sessions:
                rw.close()
            for r in raws:
                r.close()

        # new connections get the new certificate (several: both workers)
        for _ in range(4 * WORKERS):
            self.assertEqual(served_fingerprint(hub.port), new)
        after = self.connect(hub, "after", tok["after"])
        after.send_json({"op": "ping"})
        after.wait_op("pong", 5)

        # the established session: not closed, still served
        self.assertTrue(live.is_open())
        live.send_json({"op": "ping"})
        live.wait_op("pong", 5)
        self.assertFalse([s for s in hubfix.status_msgs(sub, "live") if not s["online"]])
        self.assertNotIn("HUB-WORKER-DIED", hub.log_text())
        self.assertEqual(hub.stop(), 0, hub.log_tail())


if __name__ == "__main__":
    hubfix.main()
