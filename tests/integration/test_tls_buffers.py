"""TLS record buffers under stress, for TLS 1.2 and 1.3: what a server that
releases an idle connection's input buffer and grows it back when a record
arrives (patches/mbedtls-idle-input-buffer.patch) must survive. A client
built on ssl.SSLObject (memory BIOs) controls where records start and how
their bytes are cut into TCP segments:

  * a 16 KiB record split into 7-byte pieces, its header included;
  * a full 16 KiB record right after the connection went idle;
  * 64 KiB WebSocket messages both ways (several records each);
  * records arriving while the server's writes to that client are pending
    (the client does not read, with a small receive buffer);
and tickets after the handshake (TLS 1.3 NewSessionTicket) come out intact:
the session resumes. KeyUpdate is covered by test_tls.py."""

import json
import os
import socket
import ssl
import struct
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
    def flush(self, chunk=None):
        data = self.out.read()
        if not chunk:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), chunk):
            self.sock.sendall(data[i:i + chunk])
            # let each piece leave as its own segment, so the server's
            # reads see partial headers and partial records
            time.sleep(0.0005)

    def recv_raw(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("server closed the connection")
        self.inc.write(d)

    def pump(self):
        """Reads one TCP chunk and whatever plaintext it completes."""
        self.recv_raw()
        while True:
            try:
                d = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            if not d:
                raise EOFError("TLS close")
            self.plain += d
        self.flush()  # e.g. nothing, or our reply to a TLS message

    # plaintext
    def write(self, data, chunk=None):
        self.tls.write(data)  # records of up to 16 KiB each
        self.flush(chunk)

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

    def send_json(self, obj, chunk=None):
        self.write(self.frame(0x1, json.dumps(obj).encode()), chunk)

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


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
