"""TLS record buffers under stress, for TLS 1.2 and 1.3: what a server that
releases an idle connection's input buffer and grows it back when a record
arrives (patches/mbedtls-idle-input-buffer.patch) and frees the TLS 1.3
handshake state after the handshake (patches/mbedtls-free-tls13-handshake.patch)
must survive. A client built on ssl.SSLObject (memory BIOs) controls where
records start and how their bytes are cut into TCP segments:

  * records written one byte per TCP segment, header included, and a full
    16 KiB record one byte per send;
  * a full 16 KiB record right after the connection went idle (its input
    buffer released), and 16 KiB cut into 7-byte segments;
  * records of random sizes (1 byte to 16 KiB) in random segments, each
    checked at the broker;
  * 64 KiB WebSocket messages both ways (several records each);
  * records arriving while the server's writes to that client are pending
    (the client does not read, with a small receive buffer);
  * tickets after the handshake (TLS 1.3 NewSessionTicket) come out intact:
    the session resumes;
  * a client's TLS 1.3 KeyUpdate closes that connection only (mbedTLS 3.6
    does not implement it), while another connection is in the middle of a
    record;
  * the drain on SIGTERM, repeated: every QoS 1 message the hub took is
    acked before the close, with the PUBACKs held back by a paused broker
    until the drain has begun (the scenario that once lost an ack, README
    "Our patches")."""

import json
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402

VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


class TlsWs:
    """A WebSocket client over ssl.SSLObject: every TLS byte goes through
    send_raw()/recv_raw(), so the test decides the TCP segmentation."""

    def __init__(self, port, path, token, ctx, rcvbuf=None, session=None,
                 timeout=10):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, session=session)
        self.plain = b""
        self.close_code = None
        self.tls_closed = False
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.recv_raw()
        self.flush()
        req = "\r\n".join([
            f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: hub.v1",
            f"Authorization: Bearer {token}"]) + "\r\n\r\n"
        self.write(req.encode())
        while b"\r\n\r\n" not in self.plain:
            self.pump()
        head, self.plain = self.plain.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise AssertionError(head)

    # raw TLS bytes
    def flush(self, chunk=None, pause=0.0005):
        data = self.out.read()
        if not chunk:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), chunk):
            self.sock.sendall(data[i:i + chunk])
            # let each piece leave as its own segment, so the server's
            # reads see partial headers and partial records
            if pause:
                time.sleep(pause)

    def recv_raw(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("server closed the connection")
        self.inc.write(d)

    def pump(self):
        """Reads one TCP chunk and whatever plaintext it completes. The
        server's close_notify may come in the same chunk as its last
        frames: those stay in self.plain to be parsed, and the end is
        raised once nothing is left (self.tls_closed)."""
        if self.tls_closed:
            raise EOFError("TLS close")
        self.recv_raw()
        while True:
            try:
                d = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            if not d:
                self.tls_closed = True
                return
            self.plain += d
        self.flush()  # e.g. nothing, or our reply to a TLS message

    # plaintext
    def write(self, data, chunk=None, pause=0.0005):
        self.tls.write(data)  # records of up to 16 KiB each
        self.flush(chunk, pause)

    def frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send_json(self, obj, chunk=None, pause=0.0005):
        self.write(self.frame(0x1, json.dumps(obj).encode()), chunk, pause)

    def next_message(self, deadline):
        """The next text/binary message (continuations joined); answers
        pings."""
        parts, opcode = [], None
        while True:
            while True:
                f = self._parse()
                if f:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("no WebSocket message in time")
                self.pump()
            fin, op, payload = f
            if op == 0x9:
                self.write(self.frame(0xA, payload))
                continue
            if op == 0x8:
                # answer it, as a client does, so the server need not
                # wait out its close timeout
                try:
                    self.write(self.frame(0x8, payload[:2]))
                except (OSError, ssl.SSLError):
                    pass
                self.close_code = (struct.unpack("!H", payload[:2])[0]
                                   if len(payload) >= 2 else None)
                raise EOFError(f"WebSocket close {payload[:2].hex()}")
            if op in (0x1, 0x2):
                opcode = op
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)

    def _parse(self):
        b = self.plain
        if len(b) < 2:
            return None
        n, off = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, off = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, off = struct.unpack("!Q", b[2:10])[0], 10
        if len(b) < off + n:
            return None
        self.plain = b[off + n:]
        return bool(b[0] & 0x80), b[0] & 0x0F, b[off:off + n]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class TestTLSBuffers(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.devs = [f"buf{i}" for i in range(8)]
        self.tok = self.add_devices(*self.devs)
        self.sub = self.mqtt("devices/+/big", "devices/+/status")
        self.hub = self.start_hub()
        self.ctx = {}
        for v in VERSIONS:  # one context per version: sessions resume in it
            self.ctx[v] = hubfix.insecure_ssl()
            self.ctx[v].minimum_version = self.ctx[v].maximum_version = v

    def client(self, dev, version, **kw):
        """A connected device whose session is online and subscribed (its
        online status is out: the hub subscribes first)."""
        before = len(self.statuses(dev))
        c = TlsWs(self.hub.port, f"/v1/devices/{dev}", self.tok[dev],
                  self.ctx[version], **kw)
        self.addCleanup(c.close)
        hubfix.wait_until(lambda: any(s["online"] for s in self.statuses(dev)[before:]),
                          10, what=f"{dev} online")
        return c

    def statuses(self, dev):
        return [json.loads(m.payload) for m in
                self.sub.find(lambda m: m.topic == f"devices/{dev}/status")]

    def online(self, n):
        hubfix.wait_until(lambda: self.hub.metrics().get("hub_connections") == n, 10,
                          what=f"{n} sessions online")

    def expect_uplink(self, dev, text):
        m = self.sub.wait_for(lambda m: m.topic == f"devices/{dev}/big" and
                              m.payload == text.encode(), 15,
                              what=f"{len(text)}-byte uplink of {dev}")
        return m

    def test_split_records_and_full_record_after_idle(self):
        for i, version in enumerate(VERSIONS):
            with self.subTest(version=version.name):
                dev = self.devs[i]
                c = self.client(dev, version)
                self.online(i + 1)
                # the connection is idle now (its upgrade request was read):
                # one full 16 KiB record, in one piece
                text = "a" * 16000
                c.send_json({"op": "pub", "topic": "big", "payload": text})
                self.expect_uplink(dev, text)
                # a 16 KiB record cut into 7-byte segments: the header
                # arrives in pieces, then the body over many reads
                text = "b" * 16100
                c.send_json({"op": "pub", "topic": "big", "payload": text}, chunk=7)
                self.expect_uplink(dev, text)
                # small records between big ones
                for k in range(3):
                    text = f"c{k}" * 10
                    c.send_json({"op": "pub", "topic": "big", "payload": text}, chunk=3)
                    self.expect_uplink(dev, text)
                # and the session still answers
                c.send_json({"op": "ping"})
                op, data = c.next_message(time.monotonic() + 10)
                self.assertEqual(json.loads(data), {"op": "pong"})

    def test_64k_messages_both_ways(self):
        for i, version in enumerate(VERSIONS):
            with self.subTest(version=version.name):
                dev = self.devs[2 + i]
                c = self.client(dev, version)
                self.online(i + 1)
                up = "u" * 65000  # with the JSON around it, just under --max-frame
                c.send_json({"op": "pub", "topic": "big", "payload": up})
                self.expect_uplink(dev, up)
                down = "d" * 64000
                self.sub.publish(f"devices/{dev}/cmd/big", json.dumps(down), qos=1)
                op, data = c.next_message(time.monotonic() + 15)
                m = json.loads(data)
                self.assertEqual((m["op"], m["topic"], m["payload"]), ("msg", "cmd/big", down))

    def test_records_while_writes_pend(self):
        for i, version in enumerate(VERSIONS):
            with self.subTest(version=version.name):
                dev = self.devs[4 + i]
                # a small receive window: the hub's writes back up quickly
                c = self.client(dev, version, rcvbuf=4096)
                self.online(i + 1)
                # commands in bursts until the kernel's buffers are full and
                # the hub keeps bytes it cannot write (for over a second:
                # the gauge is sampled once a second), staying under the
                # hub's per-device queue bound (1 MiB)
                size, k = 60000, 0
                while True:
                    for _ in range(4):
                        self.sub.publish(f"devices/{dev}/cmd/w{k}",
                                         json.dumps(f"{k % 100:02d}" * (size // 2)), qos=1)
                        k += 1
                    self.assertLess(k, 400, "the hub never had writes pending")
                    time.sleep(1.1)  # a fresh sample of the gauge
                    t_end, stayed = time.monotonic() + 1.2, True
                    while time.monotonic() < t_end:
                        if self.hub.metrics().get("hub_downlink_queued_bytes", 0) == 0:
                            stayed = False
                            break
                        time.sleep(0.1)
                    if stayed:
                        break
                n = k
                # now the device sends, in pieces, while the hub's writes pend
                text = "p" * 16000
                c.send_json({"op": "pub", "topic": "big", "payload": text}, chunk=1000)
                self.expect_uplink(dev, text)
                # then reads everything, intact and in order
                deadline = time.monotonic() + 60
                for k in range(n):
                    op, data = c.next_message(deadline)
                    m = json.loads(data)
                    self.assertEqual(m["topic"], f"cmd/w{k}")
                    self.assertEqual(m["payload"], f"{k % 100:02d}" * (size // 2))
                self.assertEqual(
                    self.hub.metrics().get('hub_drops_total{reason="downlink_queue_full"}'), 0)

    def test_tickets_after_handshake_resume(self):
        for i, version in enumerate(VERSIONS):
            with self.subTest(version=version.name):
                dev = self.devs[6 + i]
                c = self.client(dev, version)
                # the TLS 1.3 ticket comes after the handshake: read with a
                # released input buffer on the client side of our server
                c.send_json({"op": "ping"})
                c.next_message(time.monotonic() + 10)
                sess = c.tls.session
                c.close()
                self.online(0)
                c2 = self.client(dev, version, session=sess)
                self.assertTrue(c2.tls.session_reused, version.name)
                text = "r" * 16000
                c2.send_json({"op": "pub", "topic": "big", "payload": text}, chunk=500)
                self.expect_uplink(dev, text)
                c2.close()
                self.online(0)


    def test_one_byte_segments(self):
        for i, version in enumerate(VERSIONS):
            with self.subTest(version=version.name):
                dev = self.devs[i]
                c = self.client(dev, version)
                self.online(i + 1)
                # every byte its own send and (with the pause) its own
                # segment: the record header arrives over five reads
                text = "o" * 1500
                c.send_json({"op": "pub", "topic": "big", "payload": text},
                            chunk=1, pause=0.0002)
                self.expect_uplink(dev, text)
                # a full 16 KiB record, one byte per send
                text = "f" * 16300
                c.send_json({"op": "pub", "topic": "big", "payload": text},
                            chunk=1, pause=0)
                self.expect_uplink(dev, text)
                c.send_json({"op": "ping"})
                op, data = c.next_message(time.monotonic() + 10)
                self.assertEqual(json.loads(data), {"op": "pong"})

    def test_random_records_and_segments(self):
        """Records of random sizes cut at random places, and records sent
        back to back in one write (the next record's bytes already wait in
        the socket when a read releases the buffer), every payload checked
        at the broker, in order."""
        rnd = random.Random(6)  # fixed: a failure is reproducible
        for i, version in enumerate(VERSIONS):
            with self.subTest(version=version.name):
                dev = self.devs[i]
                c = self.client(dev, version)
                self.online(i + 1)
                sent = []
                for k in range(30):
                    batch = []
                    for _ in range(rnd.choice((1, 1, 2, 3))):
                        n = rnd.choice((rnd.randint(1, 60), rnd.randint(60, 600),
                                        rnd.randint(600, 5000), rnd.randint(5000, 16300)))
                        text = f"{k}:{len(batch)}:" + "".join(
                            rnd.choice("abcdefghij") for _ in range(n))
                        batch.append(text)
                        c.tls.write(c.frame(0x1, json.dumps(
                            {"op": "pub", "topic": "big", "payload": text}).encode()))
                    chunk = rnd.choice((None, 2, 17, 333, 4096))
                    small = sum(map(len, batch)) < 2000
                    c.flush(chunk, 0.0002 if chunk and small else 0)
                    sent += batch
                    for text in batch:
                        self.expect_uplink(dev, text)
                got = [m.payload.decode() for m in
                       self.sub.find(lambda m: m.topic == f"devices/{dev}/big")]
                self.assertEqual(got, sent)

    def test_key_update_closes_only_that_connection(self):
        """mbedTLS 3.6 answers a client's TLS 1.3 KeyUpdate by closing that
        connection (documented in docs/operations.md). Another connection,
        in the middle of a 16 KiB record at that moment, goes on."""
        b = self.client(self.devs[1], ssl.TLSVersion.TLSv1_3)
        self.online(1)
        text = "k" * 16000
        b.tls.write(b.frame(0x1, json.dumps(
            {"op": "pub", "topic": "big", "payload": text}).encode()))
        pending = b.out.read()
        b.sock.sendall(pending[:9000])  # a header and part of the record
        p = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{self.hub.port}",
             "-tls1_3", "-crlf"],  # not -quiet: it turns the commands off
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.procs.append(p)
        dev = self.devs[0]
        req = "\n".join([
            f"GET /v1/devices/{dev} HTTP/1.1", f"Host: 127.0.0.1:{self.hub.port}",
            "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: hub.v1",
            f"Authorization: Bearer {self.tok[dev]}"]) + "\n\n"
        p.stdin.write(req.encode())
        p.stdin.flush()
        self.online(2)
        p.stdin.write(b"k\n")  # s_client's command: send a KeyUpdate
        p.stdin.flush()
        hubfix.wait_until(lambda: p.poll() is not None, 15,
                          what="s_client ended by the server after KeyUpdate")
        self.online(1)
        b.sock.sendall(pending[9000:])
        self.expect_uplink(self.devs[1], text)
        b.send_json({"op": "ping"})
        op, data = b.next_message(time.monotonic() + 10)
        self.assertEqual(json.loads(data), {"op": "pong"})

    def test_drain_acks_every_qos1_message_repeated(self):
        """SIGTERM with QoS 1 messages in flight, again and again: each one
        the hub took is acked before the device's close (1001). The broker
        is paused from the publishes until the drain has begun, so every
        PUBACK arrives while the hub drains; a drain that closed a session
        whose PUBACK was still coming lost its ack (1 run in 4 under load,
        every run here). Devices on TLS 1.2 and 1.3, idle buffers released
        between their records."""
        self.hub.stop()
        runs = int(os.environ.get("HUB_DRAIN_RUNS", "8"))
        devs = self.devs[:6]
        lost = []
        t_end = time.monotonic() + hubfix.T(60) + runs * hubfix.T(10)
        for run in range(runs):
            self.assertLess(time.monotonic(), t_end, f"{run} of {runs} runs in the time bound")
            hub = self.start_hub(drain=3)
            cl = {}
            for k, d in enumerate(devs):
                cl[d] = TlsWs(hub.port, f"/v1/devices/{d}", self.tok[d],
                              self.ctx[VERSIONS[k % 2]])
                self.addCleanup(cl[d].close)
            hubfix.wait_until(lambda: hub.metrics().get("hub_connections") == len(devs),
                              10, what="devices online")
            m0 = hub.metrics()['hub_uplink_total{qos="1"}']
            log_before = len(hub.log_text())
            self.broker.pause()
            try:
                for d in devs:
                    cl[d].send_json({"op": "pub", "topic": "t", "payload": {"run": run},
                                     "qos": 1, "id": run + 1})
                hubfix.wait_until(
                    lambda: hub.metrics()['hub_uplink_total{qos="1"}'] >= m0 + len(devs),
                    10, what="the hub took the QoS 1 frames")
                hub.proc.send_signal(signal.SIGTERM)
                hubfix.wait_until(lambda: "HUB-DRAIN" in hub.log_text()[log_before:],
                                  10, what="the worker draining")
                # some drain ticks (0.1 s each) with every PUBACK held back:
                # only makes a faulty drain fail more surely
                time.sleep(0.5)
            finally:
                self.broker.resume()
            for d in devs:
                acks = []
                deadline = time.monotonic() + hubfix.T(15)
                try:
                    while True:
                        op, data = cl[d].next_message(deadline)
                        m = json.loads(data)
                        if m.get("op") == "ack":
                            acks.append(m)
                except EOFError:
                    pass
                if acks != [{"op": "ack", "id": run + 1}] or cl[d].close_code != 1001:
                    lost.append((run, d, cl[d].close_code, acks))
                cl[d].close()
            self.assertEqual(hub.proc.wait(hubfix.T(30)), 0, hub.log_tail())
            self.hubs.remove(hub)
        self.assertEqual(lost, [], f"acks lost in {len({r for r, *_ in lost})} of {runs} runs")


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
