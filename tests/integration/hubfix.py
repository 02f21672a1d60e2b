"""
hubfix.py - shared fixtures of the integration tests: real processes only.

  * mosquitto on a free loopback port (persistent, so a restart keeps
    retained messages and persistent sessions);
  * a self-signed dev certificate;
  * the registry, provisioned with hubctl;
  * hubd (its process group: the supervisor and its workers);
  * device clients: Python's websockets (an independent implementation,
    run on a background asyncio loop behind a small synchronous wrapper),
    and a raw TLS socket speaking hand-built WebSocket frames for what
    websockets won't do (stay silent on pings, invalid UTF-8 text frames);
  * MQTT clients with paho (MQTT v5), collecting what they receive.

Run with Debian's python (/usr/bin/python3): it has python3-websockets 10.4
and python3-paho-mqtt 1.6.1. Binaries come from HUBD, HUBCTL, HUB_DEVICE
(default: HUB_SRC/build/asan/bin/...).

Every wait polls a condition under a deadline. The deadlines are bounds
for a loaded CI machine, not expectations: each is multiplied by
HUBFIX_SLOW (default 4; an ASan build on a busy 2-core box runs many times
slower than on a quiet one). Reaching a condition early costs nothing, so
generous deadlines only lengthen a run that fails anyway. No test asserts
how fast something happened except where that is the promise under test,
and then with a bound far above the promise.

Ports come from reserve_port(): outside the kernel's ephemeral range (so
no outgoing connection can take one between the pick and the bind) and
held with a lock file for the life of the test process (so parallel test
processes never pick the same one).

HUBFIX_KEEP=1 keeps the temp directories (logs, registry, broker data) for
a post-mortem.
"""

import asyncio
import base64
import collections
import fcntl
import random
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
import websockets
import websockets.exceptions

HUB_SRC = os.environ.get(
    "HUB_SRC",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
_BIN = os.path.join(HUB_SRC, "build", "asan", "bin")
HUBD = os.environ.get("HUBD", os.path.join(_BIN, "hubd"))
HUBCTL = os.environ.get("HUBCTL", os.path.join(_BIN, "hubctl"))
HUB_DEVICE = os.environ.get("HUB_DEVICE", os.path.join(_BIN, "hub-device"))
MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
KEEP = os.environ.get("HUBFIX_KEEP") == "1"

# deadline multiplier: see the module docstring
SLOW = float(os.environ.get("HUBFIX_SLOW", "4"))


def T(seconds):
    """A deadline of `seconds` on a quiet machine, scaled for a loaded one."""
    return seconds * SLOW


# ASan: leaks are reported (and fail the exit code), like in tools/test
os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---- waiting ---------------------------------------------------------------

def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a true value (returned) or raises
    AssertionError after T(timeout) seconds."""
    timeout = T(timeout)
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


# Ports below the ephemeral range (ip_local_port_range starts at 32768):
# the kernel never hands these out for outgoing connections or bind(0).
PORT_LO, PORT_HI = 20000, 32000
_PORT_DIR = os.path.join(tempfile.gettempdir(), f"hubfix-ports-{os.getuid()}")
_port_locks = {}  # port -> open lock file, held until the process exits


def reserve_port():
    """A loopback TCP port nobody listens on, reserved for this process:
    a lock file (flock) keeps other hubfix processes off it, and the range
    keeps the kernel's own picks off it."""
    os.makedirs(_PORT_DIR, exist_ok=True)
    for _ in range(2000):
        port = random.randint(PORT_LO, PORT_HI)
        if port in _port_locks:
            continue
        f = open(os.path.join(_PORT_DIR, str(port)), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                f.close()  # someone outside hubfix uses it
                continue
        _port_locks[port] = f
        return port
    raise AssertionError("no free port in the reserved range")


free_port = reserve_port  # the old name


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path, n=60):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return f"({path}: {e})"


# ---- mosquitto -------------------------------------------------------------

class Broker:
    """mosquitto on 127.0.0.1:port with persistence in dir."""

    def __init__(self, tmp, port=None, autosave=None, autosave_on_changes=False):
        self.dir = os.path.join(tmp, "mosquitto")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        self.logfile = os.path.join(self.dir, "mosquitto.log")
        self.proc = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            # never drop queued QoS 1 messages of a slow or away subscriber
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            # no cap on QoS 1 messages in flight to a client
            "max_inflight_messages 0",
            f"log_dest file {self.logfile}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if autosave is not None and autosave_on_changes:
            # save the in-memory db after every `autosave` changes (stored
            # messages, subscriptions): with 1, what the broker PUBACKed is
            # on disk before a kill -9, as far as mosquitto can promise it
            lines += [f"autosave_interval {autosave}", "autosave_on_changes true"]
        elif autosave is not None:
            # save the in-memory db every `autosave` seconds, so a kill -9
            # keeps (at least) subscriptions and sessions made before it
            lines += [f"autosave_interval {autosave}", "autosave_on_changes false"]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10):
        out = open(os.path.join(self.dir, "stdout.log"), "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=out,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mosquitto exited {self.proc.returncode}:\n{tail(self.logfile)}")
            return port_open(self.port)
        wait_until(up, timeout, what=f"mosquitto on port {self.port}")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        if not self.running():
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(T(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self):
        if not self.running():
            return None
        self.proc.kill()
        return self.proc.wait()

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout=10):
        self.stop()
        return self.start(timeout)


# ---- certificate, registry, hubctl ------------------------------------------

def make_cert(tmp):
    cert = os.path.join(tmp, "cert.pem")
    key = os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
         "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key,
         "-out", cert], check=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    return cert, key


def hubctl_run(db, broker_port, *args, timeout=30):
    cmd = [HUBCTL, "--db", db]
    if broker_port:
        cmd += ["--broker", f"tcp://127.0.0.1:{broker_port}"]
    cmd += [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, timeout=T(timeout))


# ---- hubd ------------------------------------------------------------------

class Hub:
    """hubd in its own process group (supervisor + workers)."""

    def __init__(self, tmp, cert, key, db, broker_port, hub_id="hubA",
                 port=None, http_port=None, extra=(), workers=1, drain=2, env=None):
        self.tmp = tmp
        self.env = None if env is None else {**os.environ, **env}
        self.hub_id = hub_id
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.logfile = os.path.join(tmp, f"hubd-{hub_id}.log")
        self.args = [HUBD, "--listen", f"127.0.0.1:{self.port}",
                     "--tls-cert", cert, "--tls-key", key, "--db", db,
                     "--broker", f"tcp://127.0.0.1:{broker_port}",
                     "--hub-id", hub_id, "--http", f"127.0.0.1:{self.http_port}",
                     "--workers", str(workers), "--drain", str(drain)]
        self.args += [str(a) for a in extra]
        self.proc = None
        self.started_at = None

    def start(self, ready=True, timeout=20):
        out = open(self.logfile, "ab")
        out.write(f"\n==== start {' '.join(self.args)}\n".encode())
        out.flush()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdout=out,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True, env=self.env)
        out.close()
        if ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20):
        def ok():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"hubd exited {self.proc.returncode}:\n{self.log_tail()}")
            return self.http("/readyz")[0] == 200
        try:
            wait_until(ok, timeout, interval=0.05, what="hubd /readyz 200")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- hubd log:\n{self.log_tail()}") from None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def url(self, device, query=""):
        return f"wss://127.0.0.1:{self.port}/v1/devices/{device}{query}"

    def http(self, path, timeout=3):
        """(status, headers, body) of GET on the ops listener; (None, ..)
        when it does not answer."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http_port}{path}", timeout=T(timeout)) as r:
                return r.status, dict(r.headers), r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            return None, {}, ""

    def metrics(self):
        st, _, body = self.http("/metrics")
        if st != 200:
            raise AssertionError(f"/metrics answered {st}")
        return parse_metrics(body)

    def stop(self, timeout=40):
        """SIGTERM to the supervisor; waits; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(T(timeout))
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"hubd did not exit within {timeout}s of SIGTERM:\n"
                                 f"{self.log_tail()}")

    def kill9(self):
        """SIGKILL to the whole process group: supervisor and workers."""
        if self.proc is None:
            return None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(T(10))
        finally:
            # no worker may survive its supervisor
            def gone():
                try:
                    os.killpg(self.proc.pid, 0)
                    return False
                except ProcessLookupError:
                    return True
            try:
                wait_until(gone, 5, what="hubd process group gone")
            except AssertionError:
                pass

    def log_tail(self, n=60):
        return tail(self.logfile, n)

    def log_text(self):
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def parse_metrics(text):
    """{'name{labels}': value, 'name': value} from Prometheus text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
        except ValueError:
            continue
    return out


# ---- the background asyncio loop for websockets -----------------------------

class _Loop:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       name="hubfix-asyncio", daemon=True)
        self.thread.start()

    def run(self, coro, timeout=30):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(T(timeout))


_loop = None
_loop_lock = threading.Lock()


def aloop():
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = _Loop()
        return _loop


def insecure_ssl():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Refused(Exception):
    pass


class WS:
    """A Python websockets client with a background reader: every message
    is collected (text frames JSON-decoded when possible), pings are
    answered, and the close code is recorded."""

    def __init__(self, ws):
        self.ws = ws
        self.cond = threading.Condition()
        self.msgs = []       # (t_monotonic, decoded or raw)
        self.listener = None  # called on the loop thread with each message
        self.keep = True      # also collect messages that went to the listener
        self.closed = False
        self.closed_t = None
        self.close_code = None
        self.close_reason = None
        self.reader = None

    @classmethod
    def connect(cls, url, token=None, via="header", subprotocols=("hub.v1",),
                timeout=10, **kw):
        """via: 'header' (Authorization: Bearer), 'query' (?token=), None."""
        headers = {}
        if token is not None and via == "header":
            headers["Authorization"] = "Bearer " + token
        if token is not None and via == "query":
            url += ("&" if "?" in url else "?") + "token=" + token

        kw.setdefault("max_size", 2**24)
        # websockets answers the hub's pings by itself; it sends none
        kw.setdefault("ping_interval", None)
        kw.setdefault("close_timeout", T(5))

        async def go():
            ws = await websockets.connect(
                url, ssl=insecure_ssl(),
                subprotocols=list(subprotocols) if subprotocols else None,
                extra_headers=headers, open_timeout=T(timeout), **kw)
            c = cls(ws)
            c.reader = asyncio.ensure_future(c._read())
            return c
        return aloop().run(go(), timeout + 5)

    async def _read(self):
        try:
            async for m in self.ws:
                if isinstance(m, str):
                    try:
                        m = json.loads(m)
                    except ValueError:
                        m = ("text", m)
                if self.listener is not None:
                    self.listener(m)
                    if not self.keep:
                        continue
                with self.cond:
                    self.msgs.append((time.monotonic(), m))
                    self.cond.notify_all()
        except websockets.exceptions.ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - recorded for the test
            log("WS reader:", repr(e))
        with self.cond:
            self.closed = True
            self.closed_t = time.monotonic()
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            self.cond.notify_all()

    # sending
    def send(self, data):
        aloop().run(self.ws.send(data))

    def send_json(self, obj):
        self.send(json.dumps(obj, separators=(",", ":")))

    def pub(self, payload, topic="telemetry", qos=0, id=None):
        f = {"op": "pub", "topic": topic, "payload": payload, "qos": qos}
        if id is not None:
            f["id"] = id
        self.send_json(f)

    # receiving
    def wait_for(self, pred, timeout=10, what="message"):
        """The first collected message (not only new ones) matching pred."""
        timeout = T(timeout)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, m in self.msgs:
                    try:
                        if pred(m):
                            return m
                    except (KeyError, TypeError, AttributeError):
                        pass
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; got "
                        f"{[m for _, m in self.msgs][-10:]} closed={self.closed} "
                        f"code={self.close_code}")
                self.cond.wait(min(left, 0.1))

    def wait_op(self, op, timeout=10, **fields):
        return self.wait_for(
            lambda m: isinstance(m, dict) and m.get("op") == op and
            all(m.get(k) == v for k, v in fields.items()),
            timeout, what=f"op {op} {fields}")

    def find(self, pred):
        with self.cond:
            out = []
            for _, m in self.msgs:
                try:
                    if pred(m):
                        out.append(m)
                except (KeyError, TypeError, AttributeError):
                    pass
            return out

    def ops(self, op):
        return self.find(lambda m: isinstance(m, dict) and m.get("op") == op)

    def wait_closed(self, timeout=10):
        """The close code the hub sent (None: the connection just died)."""
        timeout = T(timeout)
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"connection still open after {timeout}s")
                self.cond.wait(min(left, 0.1))
            return self.close_code

    def is_open(self):
        with self.cond:
            return not self.closed

    @property
    def subprotocol(self):
        return self.ws.subprotocol

    def close(self, code=1000):
        if self.closed:
            return
        try:
            aloop().run(self.ws.close(code), 10)
        except Exception:  # noqa: BLE001
            pass
        try:
            self.wait_closed(5)
        except AssertionError:
            pass


def ws_refusal(url, token=None, via="header", subprotocols=("hub.v1",), timeout=10):
    """Connects expecting an HTTP refusal before the upgrade; returns
    (status, headers) with lower-case header names. Uses the raw client
    (any HTTP version of the status line is read). Fails if the upgrade
    succeeds."""
    rest = url.split("://", 1)[1]
    hostport, path = rest.split("/", 1)
    port = int(hostport.rsplit(":", 1)[1])
    path = "/" + path
    if token is not None and via == "query":
        path += ("&" if "?" in path else "?") + "token=" + token
    try:
        r = RawWS(port, path, token if via == "header" else None,
                  subprotocol=",".join(subprotocols) if subprotocols else None,
                  timeout=timeout)
    except Refused as e:
        return e.args[0], e.args[1]
    r.close()
    raise AssertionError(f"upgrade to {url} unexpectedly accepted")


def ws_refusal_websockets(url, token=None, via="header", subprotocols=("hub.v1",),
                          timeout=10):
    """Like ws_refusal, with Python's websockets client: (status, headers)
    from its InvalidStatusCode."""
    try:
        c = WS.connect(url, token, via, subprotocols, timeout)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code, {k.lower(): v for k, v in e.headers.raw_items()}
    c.close()
    raise AssertionError(f"upgrade to {url} unexpectedly accepted")


# ---- a raw WebSocket client over TLS ---------------------------------------

class RawWS:
    """A hand-written client: completes the upgrade, then does only what
    the test says (never answers pings by itself)."""

    def __init__(self, port, path, token=None, subprotocol="hub.v1", timeout=10,
                 raw=None):
        """raw: a TCP connection to the hub opened earlier (its TLS
        handshake starts here); by default a new one."""
        if raw is None:
            raw = socket.create_connection(("127.0.0.1", port), timeout=T(timeout))
        self.s = insecure_ssl().wrap_socket(raw, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        req = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
               "Upgrade: websocket", "Connection: Upgrade",
               f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if subprotocol:
            req.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        if token:
            req.append(f"Authorization: Bearer {token}")
        self.s.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.s.recv(4096)
            if not d:
                raise AssertionError(f"no upgrade answer: {buf!r}")
            buf += d
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1])
        self.headers = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip()
                        for ln in lines[1:] if ":" in ln}
        if self.status != 101:
            self.close()
            raise Refused(self.status, self.headers, self.status_line)
        want = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if self.headers.get("sec-websocket-accept") != want:
            raise AssertionError(f"bad Sec-WebSocket-Accept: {self.headers}")
        self.pings = 0

    def send_frame(self, opcode, payload, fin=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.s.sendall(hdr + mask + body)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.s.settimeout(left)
            d = self.s.recv(65536)
            if not d:
                raise EOFError()
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout=10):
        """(opcode, payload); EOFError when the hub closed the TCP
        connection; socket.timeout when nothing came."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._need(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8, deadline))[0]
        if b1 & 0x80:
            mask = self._need(4, deadline)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._need(n, deadline)))
        else:
            data = self._need(n, deadline)
        return b0 & 0x0F, data

    def wait_close(self, timeout=10):
        """Reads until the hub's close frame (returns its code) or EOF
        (returns None). Pings are counted and NOT answered."""
        timeout = T(timeout)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"raw connection still open after {timeout}s")
            try:
                op, data = self.read_frame(left)
            except EOFError:
                return None
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                return None
            except socket.timeout:
                continue
            if op == 0x9:
                self.pings += 1
            elif op == 0x8:
                return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


# ---- MQTT ------------------------------------------------------------------

Msg = collections.namedtuple("Msg", "topic payload retain qos props t")


class Mqtt:
    """A paho MQTT v5 client collecting messages; resubscribes after every
    reconnect (so a broker restart that lost the session is survived)."""

    def __init__(self, port, client_id="", clean_start=True, session_expiry=None):
        self.port = port
        self.cond = threading.Condition()
        self.msgs = []
        self.subs = []
        self.connects = 0
        self.session_present = []
        self.c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.reconnect_delay_set(0.1, 1)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.subacks = 0
        self.clean_start = clean_start
        self.props = None
        if session_expiry is not None:
            self.props = Properties(PacketTypes.CONNECT)
            self.props.SessionExpiryInterval = session_expiry

    def _on_connect(self, c, u, flags, rc, props=None):
        with self.cond:
            self.connects += 1
            self.session_present.append(bool(flags.get("session present")))
            subs = list(self.subs)
            self.cond.notify_all()
        if self.connects > 1:
            for topic, opts in subs:
                c.subscribe(topic, options=opts)

    def _on_subscribe(self, c, u, mid, rcs, props=None):
        with self.cond:
            self.subacks += 1
            self.cond.notify_all()

    def _on_message(self, c, u, m):
        up = {}
        p = getattr(m, "properties", None)
        if p is not None and hasattr(p, "UserProperty"):
            for k, v in p.UserProperty:
                up[k] = v
        with self.cond:
            self.msgs.append(Msg(m.topic, bytes(m.payload), bool(m.retain), m.qos, up,
                                 time.monotonic()))
            self.cond.notify_all()

    def connect(self, timeout=10):
        self.c.connect("127.0.0.1", self.port, keepalive=10,
                       clean_start=self.clean_start, properties=self.props)
        self.c.loop_start()
        with self.cond:
            if not self.cond.wait_for(lambda: self.connects > 0, T(timeout)):
                raise AssertionError("MQTT client did not connect")
        return self

    def subscribe(self, topic, qos=1, rap=False, timeout=10):
        opts = SubscribeOptions(qos=qos, retainAsPublished=rap)
        with self.cond:
            self.subs.append((topic, opts))
            n = self.subacks
        self.c.subscribe(topic, options=opts)
        with self.cond:
            if not self.cond.wait_for(lambda: self.subacks > n, T(timeout)):
                raise AssertionError(f"no SUBACK for {topic}")
        return self

    def publish(self, topic, payload, qos=1, retain=False, expiry=None, timeout=10):
        props = None
        if expiry is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = expiry
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(T(timeout))
        if not info.is_published():
            raise AssertionError(f"publish to {topic} not acknowledged in {T(timeout)}s")
        return info

    def wait_for(self, pred, timeout=10, what="MQTT message"):
        with self.cond:
            timeout = T(timeout)
            ok = self.cond.wait_for(lambda: any(pred(m) for m in self.msgs), timeout)
            if not ok:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; have "
                    f"{[(m.topic, m.payload[:120], m.retain) for m in self.msgs][-10:]}")
            return next(m for m in self.msgs if pred(m))

    def wait_count(self, pred, n, timeout=10, what="MQTT messages"):
        timeout = T(timeout)
        with self.cond:
            ok = self.cond.wait_for(lambda: sum(1 for m in self.msgs if pred(m)) >= n,
                                    timeout)
            got = [m for m in self.msgs if pred(m)]
        if not ok:
            raise AssertionError(f"{what}: {len(got)} of {n} after {timeout}s")
        return got

    def find(self, pred):
        with self.cond:
            return [m for m in self.msgs if pred(m)]

    def on_topic(self, topic):
        return self.find(lambda m: m.topic == topic)

    def close(self):
        try:
            self.c.disconnect()
        except Exception:  # noqa: BLE001
            pass
        self.c.loop_stop()


def status_msgs(sub, device, prefix="devices"):
    """Decoded retained-status payloads seen for device, oldest first."""
    out = []
    for m in sub.on_topic(f"{prefix}/{device}/status"):
        if m.payload:
            out.append(json.loads(m.payload))
    return out


def retained(port, topic, timeout=10.0):
    """The retained messages on topic (a filter) as seen by a fresh
    subscriber. An absent retained message cannot be waited for, so a
    barrier marks the end: the broker queues a subscription's retained
    messages when it handles the SUBSCRIBE, and a later PUBLISH of the
    same client to itself is queued behind them; once that marker
    arrives, every retained message has."""
    c = Mqtt(port).connect()
    marker = f"hubfix/barrier/{os.getpid()}/{random.getrandbits(64):x}"
    try:
        c.subscribe(topic, qos=1)
        c.subscribe(marker, qos=1)
        c.publish(marker, b"end", qos=1, timeout=timeout)
        c.wait_for(lambda m: m.topic == marker, timeout, what="the barrier marker")
        return [m for m in c.find(lambda m: m.retain and m.topic != marker)]
    finally:
        c.close()


def retained_status(port, device, timeout=5.0):
    """The retained devices/ID/status JSON (waits until one exists)."""
    c = Mqtt(port).connect()
    try:
        c.subscribe(f"devices/{device}/status", qos=1)
        m = c.wait_for(lambda m: m.retain and m.payload, timeout,
                       what=f"retained status of {device}")
        return json.loads(m.payload)
    finally:
        c.close()


# ---- the base test case ------------------------------------------------------

class HubTest(unittest.TestCase):
    """setUp: temp dir, broker, cert, registry path. Helpers to start hubs
    and clients; a cleanup stops everything that was started, also after
    a failed setUp."""

    broker_autosave = None
    broker_autosave_on_changes = False

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hubit-")
        self.cleanups_ = []
        self.hubs = []
        self.clients = []
        self.mqtts = []
        self.procs = []
        self.broker = None
        # Also a cleanup: it runs when a setUp (this one or a subclass's,
        # after starting the broker or hubs) fails, and tearDown does not;
        # a failed setUp used to leave mosquitto running.
        self.addCleanup(self._stop_all)
        self.broker = Broker(self.tmp, autosave=self.broker_autosave,
                             autosave_on_changes=self.broker_autosave_on_changes).start()
        self.cert, self.key = make_cert(self.tmp)
        self.db = os.path.join(self.tmp, "registry.db")

    def tearDown(self):
        self._stop_all()

    def _stop_all(self):
        # Runs once: from tearDown (before the test's own cleanups, which may
        # rely on the hubs being stopped), or as setUp's cleanup when setUp
        # failed and tearDown never ran.
        if getattr(self, "stopped_", False):
            return
        self.stopped_ = True
        failed = self._failed()
        for c in self.clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for h in self.hubs:
            if h.running():
                h.kill9()
            if failed:
                log(f"--- hubd {h.hub_id} log tail ({h.logfile}):\n{h.log_tail(40)}")
        for m in self.mqtts:
            m.close()
        if self.broker is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self.broker.kill()
        if failed:
            log(f"--- mosquitto log tail:\n{tail(self.broker.logfile, 20)}")
        if KEEP or (failed and os.environ.get("HUBFIX_KEEP_FAILED") == "1"):
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _failed(self):
        # Python 3.11: the outcome of the running test
        outcome = getattr(self, "_outcome", None)
        res = getattr(outcome, "result", None)
        if res is None:
            return False
        for lst in (getattr(res, "failures", []), getattr(res, "errors", [])):
            for t, _ in lst:
                if t is self:
                    return True
        return not getattr(outcome, "success", True)

    # registry
    def hubctl(self, *args, check=True, timeout=30):
        r = hubctl_run(self.db, self.broker.port, *args, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"hubctl {' '.join(map(str, args))} exited "
                                 f"{r.returncode}: {r.stderr.decode(errors='replace')}")
        return r

    def hubctl_json(self, *args):
        r = self.hubctl("--json", *args)
        return json.loads(r.stdout)

    def add_device(self, dev):
        r = self.hubctl("device", "add", dev)
        tok = r.stdout.decode().strip()
        self.assertEqual(len(tok.splitlines()), 1, r.stdout)
        self.assertTrue(tok, "hubctl device add printed no token")
        return tok

    def add_devices(self, *ids):
        return {d: self.add_device(d) for d in ids}

    def events(self, device=None, limit=None):
        args = ["events"]
        if device:
            args += ["--device", device]
        if limit:
            args += ["--limit", limit]
        return self.hubctl_json(*args)

    def device_list(self):
        return self.hubctl_json("device", "list")

    # processes
    def start_hub(self, extra=(), hub_id="hubA", ready=True, **kw):
        h = Hub(self.tmp, self.cert, self.key, self.db, self.broker.port,
                hub_id=hub_id, extra=extra, **kw)
        self.hubs.append(h)
        return h.start(ready=ready)

    def connect(self, hub, device, token, via="header", **kw):
        c = WS.connect(hub.url(device), token, via, **kw)
        self.clients.append(c)
        return c

    def mqtt(self, *topics, **kw):
        m = Mqtt(self.broker.port, **kw).connect()
        self.mqtts.append(m)
        for t in topics:
            m.subscribe(t)
        return m


def main():
    unittest.main(verbosity=2)
