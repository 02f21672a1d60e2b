"""Churn soak (docs/operations.md "Resources under churn"): devices
connect, publish, and go away continuously - a clean close, a dropped TCP
connection, a wrong token - while hubd runs two workers. Once the churn
stops, the open file descriptors and the resident memory of every hubd
process (supervisor and workers, summed) return to within 2 % of their
level after a warm-up round of the same churn; every session that was
opened has its row closed in the registry; SIGTERM then exits 0 with no
AddressSanitizer or LeakSanitizer report.

ASan keeps freed memory in a quarantine (256 MiB by default), which would
read as growth, and records the stack of every allocation in a depot that
only grows (lws and mbedTLS are built without frame pointers, so the fast
unwinder makes up new stacks all the time: +9 MiB per worker in 40 s
measured): the hubd of this test runs with neither (quarantine_size_mb=0,
malloc_context_size=0), the rest of ASan and LeakSanitizer at exit on (a
leak is still reported, without its stack). The release build has neither:
tools/soak runs this same test against it for 20 minutes.

SOAK_SECONDS (default 60) sets the main round; SOAK_WARMUP (default 20)
the warm-up round; SOAK_CLIENTS (default 12) the concurrent churn loops.
Diagnostics: SOAK_SMAPS=PREFIX writes /proc/PID/smaps of every hubd
process after each round (diff the Rss of each mapping);
SOAK_MALLOC_STATS=1 (release build, gdb) prints glibc's malloc_stats()
into the hub's log.
"""

import asyncio
import json
import os
import sqlite3
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
import websockets  # noqa: E402

SOAK = float(os.environ.get("SOAK_SECONDS", "60"))
WARMUP = float(os.environ.get("SOAK_WARMUP", "20"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "12"))
DEVICES_PER_CLIENT = 3
TOLERANCE = 0.02


def hub_pids(hub):
    """The supervisor and its workers."""
    kids = subprocess.run(["pgrep", "-P", str(hub.proc.pid)],
                          capture_output=True, text=True).stdout.split()
    return [hub.proc.pid] + [int(k) for k in kids]


def sample(hub):
    """(RSS KiB summed, open fds summed, number of processes, [RSS, of it
    anonymous, file-backed, shared memory] KiB of each process)."""
    rss = fds = 0
    each = []
    pids = hub_pids(hub)
    for pid in pids:
        v = {}
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                k = ln.split(":")[0]
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    v[k] = int(ln.split()[1])
        each.append([v.get(k, 0) for k in ("VmRSS", "RssAnon", "RssFile",
                                           "RssShmem")])
        rss += v.get("VmRSS", 0)
        fds += len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, len(pids), each


def malloc_stats(hub):
    """SOAK_MALLOC_STATS=1 (release build, gdb installed): glibc's
    malloc_stats() of every hubd process, into the hub's log - bytes in use
    against bytes taken from the system tell a leak from fragmentation."""
    if os.environ.get("SOAK_SMAPS"):
        for pid in hub_pids(hub):
            with open(f"/proc/{pid}/smaps") as f, open(
                    f"{os.environ['SOAK_SMAPS']}.{pid}.{time.time():.0f}",
                    "w") as o:
                o.write(f.read())
    if os.environ.get("SOAK_MALLOC_STATS") != "1":
        return
    for pid in hub_pids(hub):
        subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex",
                        "call (void)malloc_stats()"],
                       capture_output=True, timeout=60)


class Churn:
    """CLIENTS asyncio loops on a thread, each cycling through its own
    devices: connect, three QoS 1 messages acked and one QoS 0, then a
    clean close; every 5th cycle drops the TCP connection instead, every
    7th presents a wrong token (401)."""

    def __init__(self, port, creds):
        self.port = port
        self.creds = creds
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.stop_at = 0.0
        self.sessions = 0   # upgrades that succeeded
        self.refused = 0    # wrong-token attempts answered 401
        self.errors = []

    async def one(self, dev, tok, n):
        url = f"wss://127.0.0.1:{self.port}/v1/devices/{dev}"
        if n % 7 == 6:
            try:
                async with websockets.connect(
                        url, ssl=self.ctx, subprotocols=["hub.v1"],
                        extra_headers={"Authorization": "Bearer wrong"},
                        open_timeout=hubfix.T(10)):
                    self.errors.append(f"{dev}: wrong token accepted")
            except websockets.exceptions.InvalidStatusCode as e:
                if e.status_code in (401, 429):
                    self.refused += 1
                else:
                    self.errors.append(f"{dev}: wrong token got {e.status_code}")
            return
        ws = await websockets.connect(
            url, ssl=self.ctx, subprotocols=["hub.v1"],
            extra_headers={"Authorization": f"Bearer {tok}"},
            open_timeout=hubfix.T(10), close_timeout=hubfix.T(5))
        self.sessions += 1
        try:
            for i in range(3):
                await ws.send(json.dumps({"op": "pub", "topic": "soak",
                                          "payload": {"n": n, "i": i},
                                          "qos": 1, "id": i + 1}))
            await ws.send(json.dumps({"op": "pub", "topic": "soak0",
                                      "payload": "x" * 200}))
            acked = set()
            while len(acked) < 3:
                m = json.loads(await asyncio.wait_for(ws.recv(),
                                                      hubfix.T(10)))
                if m.get("op") == "ack":
                    acked.add(m["id"])
                elif m.get("op") == "err":
                    raise AssertionError(f"{dev}: {m}")
        finally:
            if n % 5 == 4:
                ws.transport.abort()
            else:
                await ws.close()

    async def loop(self, k):
        mine = self.creds[k * DEVICES_PER_CLIENT:(k + 1) * DEVICES_PER_CLIENT]
        n = 0
        while time.monotonic() < self.stop_at:
            dev, tok = mine[n % len(mine)]
            try:
                await self.one(dev, tok, n)
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"{dev} cycle {n}: {e!r}")
                await asyncio.sleep(0.2)
            n += 1

    def run(self, seconds):
        """Churns for seconds, from a thread of its own; returns when every
        loop has finished its last cycle."""
        self.stop_at = time.monotonic() + seconds

        async def main():
            await asyncio.gather(*(self.loop(k) for k in range(CLIENTS)))
        t = threading.Thread(target=asyncio.run, args=(main(),))
        t.start()
        t.join(seconds + hubfix.T(60))
        if t.is_alive():
            raise AssertionError("the churn did not finish")


class TestChurnSoak(hubfix.HubTest):

    def settle(self, hub, what):
        """Once no device is connected: samples until the fd count and RSS
        stop moving (two seconds without change of fds and under 0.5 % of
        RSS), under a deadline; returns the last sample."""
        hubfix.wait_until(lambda: hub.metrics().get("hub_connections") == 0,
                          20, what=f"{what}: no connection left")
        hist = []

        def still():
            hist.append(sample(hub))
            if len(hist) < 5:
                return False
            a, b = hist[-5], hist[-1]
            return a[1] == b[1] and abs(b[0] - a[0]) <= 0.005 * a[0]
        hubfix.wait_until(still, 30, interval=0.5, what=f"{what}: steady")
        return hist[-1]

    def test_churn_returns_to_its_level(self):
        n = CLIENTS * DEVICES_PER_CLIENT
        ids = [f"soak{i:03d}" for i in range(n)]
        path = os.path.join(self.tmp, "ids.txt")
        with open(path, "w") as f:
            f.write("\n".join(ids) + "\n")
        out = self.hubctl("device", "import", path).stdout.decode()
        creds = [tuple(ln.split(",", 1)) for ln in out.split()]
        self.assertEqual(len(creds), n, out)
        # no quarantine for this hubd: freed memory is reused (see above)
        os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                                      ":quarantine_size_mb=0"
                                      ":thread_local_quarantine_size_kb=0"
                                      ":malloc_context_size=0")
        hub = self.start_hub(workers=2, extra=["--auth-fail-limit", 100000])
        churn = Churn(hub.port, creds)

        churn.run(WARMUP)
        self.assertEqual(churn.errors, [])
        base = self.settle(hub, "after the warm-up")
        base_sql = int(hub.metrics().get("hub_registry_memory_bytes", 0))
        malloc_stats(hub)
        warm_sessions = churn.sessions
        hubfix.log(f"soak: after warm-up ({warm_sessions} sessions): "
                   f"RSS {base[0]} KiB {base[3]}, {base[1]} fds, {base[2]} processes, "
                   f"SQLite heap {base_sql // 1024} KiB")

        churn.run(SOAK)
        self.assertEqual(churn.errors[:10], [])
        after = self.settle(hub, "after the churn")
        after_sql = int(hub.metrics().get("hub_registry_memory_bytes", 0))
        malloc_stats(hub)
        main = churn.sessions - warm_sessions
        hubfix.log(f"soak: after {SOAK:.0f} s of churn ({main} sessions, "
                   f"{churn.refused} refusals in all): RSS {after[0]} KiB "
                   f"{after[3]} ({100.0 * (after[0] - base[0]) / base[0]:+.2f} %), "
                   f"{after[1]} fds ({after[1] - base[1]:+d}), SQLite heap "
                   f"{after_sql // 1024} KiB ({(after_sql - base_sql) // 1024:+d})")
        # the churn was real: more sessions than devices, many times
        self.assertGreater(main, 5 * n, "too little churn to measure")
        self.assertEqual(after[2], base[2], "a worker died or was added")
        self.assertLessEqual(after[1], base[1] * (1 + TOLERANCE),
                             (base, after))
        self.assertLessEqual(after[0], base[0] * (1 + TOLERANCE),
                             (base, after))

        # every session that was opened is closed in the registry
        def rows():
            db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True,
                                 timeout=5)
            try:
                return db.execute(
                    "SELECT count(*), count(ended) FROM sessions").fetchone()
            finally:
                db.close()
        hubfix.wait_until(lambda: rows() == (churn.sessions, churn.sessions),
                          20, what=f"{churn.sessions} session rows, all closed")
        # ASan and LeakSanitizer say nothing when the workers exit
        self.assertEqual(hub.stop(), 0, hub.log_tail())
        text = hub.log_text()
        for bad in ("LeakSanitizer", "AddressSanitizer", "runtime error"):
            self.assertNotIn(bad, text)


if __name__ == "__main__":
    hubfix.main()
