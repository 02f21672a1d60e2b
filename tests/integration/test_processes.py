"""Processes (docs/operations.md "Processes"): one hubd per listener, ops
listener and registry + hub id; start errors are fatal at once, with one
error; a worker that dies after it was ready is restarted with a growing
backoff, and hubd gives up past 5 deaths in 60 s; workers die with their
supervisor; SIGHUP reloads the TLS certificate and the log level without
closing sessions; --broker is checked at start; an unreachable broker is
said out loud (HUB-BROKER-DOWN) at start and every 30 s."""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import status_msgs  # noqa: E402


def workers_of(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def server_cert(port):
    """The DER certificate the listener presents to a new connection."""
    ctx = hubfix.insecure_ssl()
    with socket.create_connection(("127.0.0.1", port), timeout=hubfix.T(5)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


class TestProcesses(hubfix.HubTest):

    def hub(self, **kw):
        """A Hub object not yet started (kept for tearDown)."""
        kw.setdefault("hub_id", "hubA")
        h = hubfix.Hub(self.tmp, kw.pop("cert", self.cert), kw.pop("key", self.key),
                       kw.pop("db", self.db), self.broker.port, **kw)
        self.hubs.append(h)
        return h

    def exits(self, h, timeout=20):
        """Starts h, expects it to exit by itself: (code, its log)."""
        before = len(h.log_text())
        h.start(ready=False)
        try:
            rc = h.proc.wait(hubfix.T(timeout))
        except subprocess.TimeoutExpired:
            self.fail(f"hubd still runs after {timeout}s:\n{h.log_tail()}")
        return rc, h.log_text()[before:]

    # ---- one instance ------------------------------------------------------

    def test_second_instance_refused(self):
        self.add_devices("dev1")
        a = self.start_hub()
        # the same device listener (another registry, hub id, ops port)
        rc, log = self.exits(self.hub(hub_id="hubB", port=a.port,
                                      db=os.path.join(self.tmp, "other.db")))
        self.assertNotEqual(rc, 0, log)
        self.assertIn(f"another hubd (pid {a.proc.pid}) already runs with --listen", log)
        # the same ops listener
        rc, log = self.exits(self.hub(hub_id="hubC", http_port=a.http_port,
                                      db=os.path.join(self.tmp, "other.db")))
        self.assertNotEqual(rc, 0, log)
        self.assertIn(f"(pid {a.proc.pid}) already runs with --http", log)
        # the same registry and hub id on other ports
        rc, log = self.exits(self.hub(hub_id="hubA"))
        self.assertNotEqual(rc, 0, log)
        self.assertIn(f"(pid {a.proc.pid}) already runs with --db", log)
        # another hub id on the same registry is a legitimate second hub
        b = self.start_hub(hub_id="hubB")
        self.assertTrue(b.running())
        # /metrics is served by the first hub alone, every time
        for _ in range(10):
            self.assertEqual(a.metrics()["hub_workers"], 1)
        self.assertTrue(a.running())
        # a port some other program listens on (SO_REUSEPORT or not)
        other = socket.socket()
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", hubfix.reserve_port()))
        other.listen()
        self.addCleanup(other.close)
        rc, log = self.exits(self.hub(hub_id="hubD", port=other.getsockname()[1]))
        self.assertNotEqual(rc, 0, log)
        self.assertIn(f"in use by pid {os.getpid()}", log)

    # ---- fail fast ---------------------------------------------------------

    def assert_one_error(self, log, want, verdict=False):
        """One error of ours (HUB-*), naming the cause; with a worker's
        start error also the supervisor's verdict. (lws may add its own
        lines about the same failure.)"""
        errs = [ln for ln in log.splitlines() if re.search(r" ERR HUB-", ln)]
        self.assertTrue(any(want in ln for ln in errs), log)
        self.assertEqual(len(errs), 2 if verdict else 1, f"errors:\n{log}")
        self.assertNotIn("HUB-WORKER-DIED", log, "a start error was restarted")

    def test_start_errors_are_fatal(self):
        # a missing certificate: found before any worker starts
        rc, log = self.exits(self.hub(cert=os.path.join(self.tmp, "nope.pem")))
        self.assertEqual(rc, 1, log)
        self.assert_one_error(log, "nope.pem")
        # an unreadable registry (a folder)
        os.mkdir(os.path.join(self.tmp, "dbdir"))
        rc, log = self.exits(self.hub(db=os.path.join(self.tmp, "dbdir")))
        self.assertEqual(rc, 1, log)
        self.assert_one_error(log, "registry")
        # a certificate file that is not one, a key of another certificate
        bad = os.path.join(self.tmp, "bad.pem")
        with open(bad, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n"
                    "-----END CERTIFICATE-----\n")
        rc, log = self.exits(self.hub(cert=bad))
        self.assertEqual(rc, 1, log)
        self.assert_one_error(log, "bad.pem")
        d2 = os.path.join(self.tmp, "other")
        os.mkdir(d2)
        _, okey = hubfix.make_cert(d2)
        rc, log = self.exits(self.hub(key=okey))
        self.assertEqual(rc, 1, log)
        self.assert_one_error(log, "does not belong")
        # a port in use (by another program)
        s = socket.socket()
        s.bind(("127.0.0.1", hubfix.reserve_port()))
        s.listen()
        self.addCleanup(s.close)
        rc, log = self.exits(self.hub(port=s.getsockname()[1]))
        self.assertEqual(rc, 1, log)
        self.assert_one_error(log, "in use")
        # a device CA that is no certificate: only the worker finds out,
        # before it is ready, and that is fatal too (not restarted)
        t0 = time.monotonic()
        rc, log = self.exits(self.hub(extra=["--device-ca", bad]))
        self.assertEqual(rc, 1, log)
        self.assert_one_error(log, "HUB-START-FAILED", verdict=True)
        self.assertLess(time.monotonic() - t0, hubfix.T(10))

    def test_bogus_broker_refused(self):
        for bad in ("bogus", "tcp://127.0.0.1:1883,bogus", "ws://127.0.0.1:1883", ""):
            r = subprocess.run([hubfix.HUBD, "--broker", bad, "--db", self.db,
                                "--no-tls"], capture_output=True, timeout=hubfix.T(20))
            self.assertEqual(r.returncode, 2, (bad, r.stderr))
            self.assertIn(b"broker", r.stderr)

    def test_broker_failover_list(self):
        """--broker takes a comma list: the first node is down, the second
        serves."""
        dead = hubfix.reserve_port()
        h = self.start_hub(extra=["--broker", f"tcp://127.0.0.1:{dead},"
                                  f"tcp://127.0.0.1:{self.broker.port}"])
        self.assertEqual(h.metrics()["hub_broker_connected"], 1)

    # ---- restarts ----------------------------------------------------------

    def test_worker_restart_backoff_then_give_up(self):
        hub = self.start_hub()
        seen = set()

        def new_worker():
            if not hub.running():
                raise AssertionError(f"hubd exited {hub.proc.returncode} early:\n"
                                     f"{hub.log_tail()}")
            return [p for p in workers_of(hub.proc.pid) if p not in seen]
        for n in range(1, 7):
            w = hubfix.wait_until(new_worker, 20, what=f"worker {n}")
            hub.wait_ready()
            seen.add(w[0])
            os.kill(w[0], signal.SIGKILL)
            if n < 6:
                hubfix.wait_until(lambda: hub.log_text().count("HUB-WORKER-DIED") >= n,
                                  10, what=f"death {n} seen")
        # the 6th death within 60 s: hubd gives up, exit 1
        try:
            rc = hub.proc.wait(hubfix.T(20))
        except subprocess.TimeoutExpired:
            self.fail(f"hubd did not give up:\n{hub.log_tail()}")
        log = hub.log_text()
        self.assertEqual(rc, 1, log)
        self.assertIn("HUB-WORKER-FLAPPING", log)
        delays = [int(x) for x in re.findall(r"restarting in (\d+) ms", log)]
        self.assertEqual(delays, [100, 200, 400, 800, 1600], log)

    def test_workers_die_with_supervisor(self):
        tok = self.add_devices("dev1")
        hub = self.start_hub(workers=2)
        sub = self.mqtt("devices/dev1/status")
        c = self.connect(hub, "dev1", tok["dev1"])
        hubfix.wait_until(lambda: any(s["online"] for s in status_msgs(sub, "dev1")), 10)
        workers = workers_of(hub.proc.pid)
        self.assertEqual(len(workers), 2)
        os.kill(hub.proc.pid, signal.SIGKILL)  # the supervisor alone
        hub.proc.wait(hubfix.T(10))
        # the workers drain (the device is told, its status says so) and go
        self.assertEqual(c.wait_closed(20), 1001)
        off = hubfix.wait_until(lambda: next((s for s in status_msgs(sub, "dev1")
                                              if not s["online"]), None), 20)
        self.assertEqual(off["reason"], "shutdown")
        hubfix.wait_until(lambda: not any(alive(p) for p in workers), 20,
                          what="orphaned workers gone")
        self.assertIsNone(hub.http("/healthz", timeout=1)[0])
        # and the names are free again: the same hub starts
        again = self.hub(port=hub.port, http_port=hub.http_port)
        again.start()
        self.assertEqual(again.stop(), 0, again.log_tail())

    # ---- SIGHUP --------------------------------------------------------------

    def test_sighup_reloads_certificate_and_log_level(self):
        tok = self.add_devices("dev1", "dev2")
        conf = os.path.join(self.tmp, "hub.conf")
        with open(conf, "w") as f:
            f.write("log-level = 2\n")
        # the served files are copies the test can replace
        cert, key = os.path.join(self.tmp, "srv.pem"), os.path.join(self.tmp, "srv.key")
        shutil.copy(self.cert, cert)
        shutil.copy(self.key, key)
        hub = self.start_hub(extra=["--config", conf, "--tls-cert", cert, "--tls-key", key])
        sub = self.mqtt("devices/dev1/status")
        c = self.connect(hub, "dev1", tok["dev1"])
        hubfix.wait_until(lambda: any(s["online"] for s in status_msgs(sub, "dev1")), 10)
        old = server_cert(hub.port)
        # a new pair, moved into place as a rotation does
        d2 = os.path.join(self.tmp, "new")
        os.mkdir(d2)
        ncert, nkey = hubfix.make_cert(d2)
        shutil.copy(nkey, key + ".tmp")
        os.replace(key + ".tmp", key)
        shutil.copy(ncert, cert + ".tmp")
        os.replace(cert + ".tmp", cert)
        with open(conf, "w") as f:
            f.write("log-level = 3\n")
        with open(ncert, "rb") as f:
            new = ssl.PEM_cert_to_DER_cert(f.read().decode())
        self.assertNotEqual(old, new)
        hub.proc.send_signal(signal.SIGHUP)
        hubfix.wait_until(lambda: server_cert(hub.port) == new, 10, interval=0.2,
                          what="the new certificate served")
        # nothing closed, nothing restarted
        self.assertTrue(hub.running())
        self.assertTrue(c.is_open())
        c.send_json({"op": "ping"})
        c.wait_op("pong", 5)
        self.assertFalse([s for s in status_msgs(sub, "dev1") if not s["online"]])
        self.assertNotIn("HUB-WORKER-DIED", hub.log_text())
        # the log level: a new session is logged at debug level now
        c2 = self.connect(hub, "dev2", tok["dev2"])
        c2.send_json({"op": "ping"})
        c2.wait_op("pong", 5)
        hubfix.wait_until(lambda: "HUB-SESS-OPEN device=dev2" in hub.log_text(), 10,
                          what="a debug line")
        # a key that does not fit is refused, the served pair kept
        shutil.copy(self.key, key)
        hub.proc.send_signal(signal.SIGHUP)
        hubfix.wait_until(lambda: "kept the current certificate" in hub.log_text(), 10)
        self.assertEqual(server_cert(hub.port), new)
        self.assertTrue(c.is_open())
        self.assertEqual(hub.stop(), 0, hub.log_tail())

    # ---- the broker ----------------------------------------------------------

    def test_broker_down_said_at_start_and_every_30s(self):
        self.broker.stop()
        hub = self.start_hub(ready=False)
        hubfix.wait_until(lambda: "HUB-BROKER-DOWN" in hub.log_text(), 15,
                          what="HUB-BROKER-DOWN at start")
        line = next(ln for ln in hub.log_text().splitlines() if "HUB-BROKER-DOWN" in ln)
        self.assertIn(f"tcp://127.0.0.1:{self.broker.port}", line)
        self.assertIn("unreachable for", line)  # with the reason before it
        self.assertEqual(hub.http("/readyz")[0], 503)
        t0 = time.monotonic()
        # said again while it lasts, about every 30 s (not every attempt)
        hubfix.wait_until(lambda: hub.log_text().count("HUB-BROKER-DOWN") >= 2, 45,
                          interval=0.5, what="HUB-BROKER-DOWN again")
        self.assertGreater(time.monotonic() - t0, 15)
        self.broker.start()
        hub.wait_ready(30)
        # /readyz reads the bridge's link flag; the service thread logs the
        # link event it is handed a moment later (longer on a loaded box)
        hubfix.wait_until(lambda: "HUB-BROKER-UP" in hub.log_text(), 30,
                          what="HUB-BROKER-UP once the broker is back")


if __name__ == "__main__":
    hubfix.main()
