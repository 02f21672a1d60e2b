"""hub-device follows the protocol (docs/protocol.md): frames parsed as
JSON (an "ack" inside a payload is not an ack); the close-code and
HTTP-status table (no reconnect after 401, 403, 1008, 4001, 4003, each with
its exit code; reconnect after 1001); unacked QoS 1 messages resent first
and in order after a reconnect, with what was queued meanwhile kept; a
dead-server timeout of its own; a client certificate (--cert/--key); the
bad or missing flag named.

Most cases run against a scripted hub (Python websockets on ws://) that
does exactly what each case needs; the certificate case uses a real hubd."""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402
from test_client_cert import openssl  # noqa: E402


class FakeHub:
    """A ws:// server on a background loop. handler(conn_index, ws, log) is
    a coroutine; refuse(conn_index) may return an HTTP status to answer
    the upgrade with instead."""

    def __init__(self, handler, refuse=None):
        self.handler = handler
        self.refuse = refuse
        self.port = hubfix.free_port()
        self.conns = 0
        self.log = []  # (conn, frame dict) of every frame received
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise AssertionError("fake hub did not start")

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def process_request(path, headers):
            with self.lock:
                self.conns += 1
                n = self.conns
            if self.refuse:
                st = self.refuse(n)
                if st:
                    return st, [], b"refused\n"
            return None

        async def handle(ws, path):
            n = self.conns
            await self.handler(n, ws, self)

        async def main():
            self.server = await websockets.serve(
                handle, "127.0.0.1", self.port, subprotocols=["hub.v1"],
                process_request=process_request, ping_interval=None)
            self.ready.set()
            await self.server.wait_closed()
        self.loop.run_until_complete(main())

    async def recv(self, ws, n):
        f = json.loads(await ws.recv())
        with self.lock:
            self.log.append((n, f))
        return f

    def frames(self, conn=None, op=None):
        with self.lock:
            return [f for c, f in self.log
                    if (conn is None or c == conn) and (op is None or f.get("op") == op)]

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.thread.join(10)


class TestHubDevice(hubfix.HubTest):

    def device(self, port, *extra, token="tok"):
        args = [hubfix.HUB_DEVICE, "--url", f"ws://127.0.0.1:{port}", "--id", "d1"]
        if token:
            args += ["--token", token]
        p = subprocess.Popen(args + [str(a) for a in extra], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def fake(self, handler, refuse=None):
        h = FakeHub(handler, refuse)
        self.addCleanup(h.close)
        return h

    def test_ack_only_when_op_is_ack(self):
        seen = {}

        async def handler(n, ws, hub):
            f = await hub.recv(ws, n)
            assert f["op"] == "pub" and f["id"] == 1, f
            # a downlink whose payload looks like an ack of message 1
            await ws.send(json.dumps({"op": "msg", "topic": "cmd/x", "id": 9,
                                      "payload": {"op": "ack", "id": 1}}))
            while True:
                f = await hub.recv(ws, n)
                if f.get("op") == "ack":
                    break
            seen["ack9"] = f
            seen["alive"] = p.poll() is None
            await ws.send('{"op":"ack","id":1}')
            await ws.wait_closed()

        hub = self.fake(handler)
        p = self.device(hub.port, "--qos", 1, "--count", 1, "--exit-after", 1)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(seen["ack9"], {"op": "ack", "id": 9})
        self.assertTrue(seen["alive"], "exited on an ack inside a payload")
        self.assertIn('"cmd/x"', out)

    def close_case(self, code, want_exit, want_text):
        async def handler(n, ws, hub):
            await ws.close(code, "test")

        hub = self.fake(handler)
        p = self.device(hub.port)
        _, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, want_exit, err)
        self.assertIn(want_text, err)
        self.assertIn("not reconnecting", err)
        self.assertEqual(hub.conns, 1)

    def test_close_4001_replaced(self):
        self.close_case(4001, 5, "replaced")

    def test_close_4003_disabled(self):
        self.close_case(4003, 4, "disabled")

    def test_close_1008_revoked(self):
        self.close_case(1008, 6, "revoked")

    def test_http_401_and_403(self):
        """Against a real hubd: a wrong token (401), a disabled device (403)."""
        tok = self.add_devices("d1", "off1")
        self.hubctl("device", "disable", "off1")
        hub = self.start_hub()
        for dev, token, status, want in (("d1", "wrong", 401, 3),
                                         ("off1", tok["off1"], 403, 4)):
            r = subprocess.run(
                [hubfix.HUB_DEVICE, "--url", f"wss://localhost:{hub.port}",
                 "--id", dev, "--token", token, "--ca", self.cert],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, want, r.stderr)
            self.assertIn(f"({status})", r.stderr)
            # 401 before ever connecting: one more try after 2 s (a device
            # added a moment ago), then stop; 403: stop at once
            self.assertEqual(r.stderr.count("connect failed"),
                             2 if status == 401 else 1, r.stderr)

    def test_503_and_1001_reconnect(self):
        async def handler(n, ws, hub):
            if n == 2:
                await ws.close(1001, "going away")
            else:
                await ws.wait_closed()

        hub = self.fake(handler, refuse=lambda n: 503 if n == 1 else None)
        p = self.device(hub.port)
        hubfix.wait_until(lambda: hub.conns >= 3, 20, what="3 connections")
        self.assertIsNone(p.poll())

    def test_resend_unacked_in_order(self):
        async def handler(n, ws, hub):
            if n == 1:
                # take 1..3, ack only 1, then go away
                for _ in range(3):
                    await hub.recv(ws, n)
                await ws.send('{"op":"ack","id":1}')
                await asyncio.sleep(0.3)  # the client queues more meanwhile
                await ws.close(1001, "bye")
                return
            while True:
                try:
                    f = await hub.recv(ws, n)
                except websockets.exceptions.ConnectionClosed:
                    return
                if f.get("op") == "pub":
                    await ws.send(json.dumps({"op": "ack", "id": f["id"]}))

        hub = self.fake(handler)
        p = self.device(hub.port, "--qos", 1, "--count", 12, "--interval", 50,
                        "--exit-after", 11)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        second = [f["id"] for f in hub.frames(2, "pub")]
        self.assertGreaterEqual(len(second), 10, second)
        # 2 and 3 were never acked: first again, in order, and no gaps
        self.assertEqual(second[:2], [2, 3], second)
        self.assertEqual(second, list(range(2, 2 + len(second))), second)
        self.assertEqual([f["id"] for f in hub.frames(1, "pub")], [1, 2, 3])

    def test_refusals_retried_or_dropped(self):
        """err rate_limited: the message goes again (next write, <= 1 s) and its
        ack counts; err bad_topic: dropped, never resent."""
        async def handler(n, ws, hub):
            seen = {}
            while True:
                try:
                    f = await hub.recv(ws, n)
                except websockets.exceptions.ConnectionClosed:
                    return
                if f.get("op") != "pub":
                    continue
                i = f["id"]
                seen[i] = seen.get(i, 0) + 1
                if i == 1 and seen[i] == 1:
                    await ws.send('{"op":"err","id":1,"code":"rate_limited","msg":"slow"}')
                elif i == 2:
                    await ws.send('{"op":"err","id":2,"code":"bad_topic","msg":"no"}')
                else:
                    await ws.send(json.dumps({"op": "ack", "id": i}))

        hub = self.fake(handler)
        p = self.device(hub.port, "--qos", 1, "--count", 3, "--interval", 50,
                        "--exit-after", 2)
        _, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        ids = [f["id"] for f in hub.frames(1, "pub")]
        self.assertEqual(ids.count(1), 2, ids)
        self.assertEqual(ids.count(2), 1, ids)
        self.assertIn("rate_limited", err)

    def test_dead_server_timeout(self):
        async def handler(n, ws, hub):
            # accepts, reads, never answers anything
            try:
                while True:
                    await hub.recv(ws, n)
            except websockets.exceptions.ConnectionClosed:
                pass

        hub = self.fake(handler)
        t0 = time.monotonic()
        p = self.device(hub.port, "--idle-timeout", 3, "--count", 0,
                        "--interval", 100000)
        hubfix.wait_until(lambda: hub.conns >= 2, 20, what="reconnect after silence")
        self.assertGreaterEqual(time.monotonic() - t0, 2.5)
        # it asked before giving up
        self.assertTrue(hub.frames(1, "ping"), hub.frames(1))
        self.assertIsNone(p.poll())

    def test_flags_named(self):
        cases = [
            (["--url", "wss://h:1", "--id", "x"], "--token"),
            (["--id", "x", "--token", "t"], "--url is missing"),
            (["--url", "wss://h:1", "--token", "t"], "--id is missing"),
            (["--url", "wss://h:1", "--id", "x", "--token", "t", "--qos", "2"], "--qos"),
            (["--url", "wss://h:1", "--id", "x", "--token", "t", "--frob"], "--frob"),
            (["--url", "wss://h:1", "--id", "x", "--cert", "c"], "--key"),
            (["--url", "wss://h:1", "--id", "x", "--token", "t", "--count", "x"], "--count"),
            (["--url", "wss://h:1", "--id", "bad id", "--token", "t"], "--id"),
        ]
        for args, want in cases:
            r = subprocess.run([hubfix.HUB_DEVICE, *args], capture_output=True, text=True)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(want, r.stderr, args)
        r = subprocess.run([hubfix.HUB_DEVICE, "--version"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("hub-device "), r.stdout)

    def test_client_certificate(self):
        d = self.tmp
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ca = os.path.join(d, "devca.pem")
        openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=device-ca",
                "-keyout", os.path.join(d, "devca.key"), "-out", ca)
        openssl("req", *ec, "-subj", "/CN=certdev", "-keyout",
                os.path.join(d, "certdev.key"), "-out", os.path.join(d, "certdev.csr"))
        openssl("x509", "-req", "-in", os.path.join(d, "certdev.csr"), "-CA", ca,
                "-CAkey", os.path.join(d, "devca.key"), "-CAcreateserial",
                "-days", "1", "-out", os.path.join(d, "certdev.pem"))
        self.add_devices("certdev")
        hub = self.start_hub(extra=["--device-ca", ca])
        sub = self.mqtt("devices/certdev/telemetry")
        r = subprocess.run(
            [str(a) for a in
             [hubfix.HUB_DEVICE, "--url", f"wss://localhost:{hub.port}", "--id", "certdev",
              "--cert", os.path.join(d, "certdev.pem"), "--key",
              os.path.join(d, "certdev.key"), "--ca", self.cert, "--qos", 1,
              "--count", 2, "--interval", 50, "--exit-after", 2, "--no-reconnect"]],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        sub.wait_count(lambda m: True, 2, 10, "certificate device's messages")
        # without the certificate (and no token): 401, exit 3, no retries
        r = subprocess.run(
            [hubfix.HUB_DEVICE, "--url", f"wss://localhost:{hub.port}", "--id", "certdev",
             "--token", "wrong", "--ca", self.cert],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 3, r.stderr)

    def test_new_device_right_after_add(self):
        """hubctl device add, then hub-device at once (the README's quick
        start): the hub's credential reload lags by up to ~2 s; the client
        must get in, not stop on the first 401."""
        hub = self.start_hub()
        tok = self.add_device("fresh")
        r = subprocess.run(
            [hubfix.HUB_DEVICE, "--url", f"wss://localhost:{hub.port}", "--id", "fresh",
             "--token", tok, "--ca", self.cert, "--qos", "1", "--count", "1",
             "--exit-after", "1"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    hubfix.unittest.main(verbosity=2)
