"""Registry faults (docs/operations.md "Registry faults"): another process
holding the SQLite write lock past the busy timeout, a full disk, a
read-only registry file. Meanwhile the hub keeps serving its sessions
(QoS 1 messages acked), the writer retries the batch it holds, counts the
retries (hub_registry_retries_total, hub_registry_failing) and logs
HUB-REG-RETRY then HUB-REG-OK; once the fault clears no session row is
lost: every session opened during the fault has its row, every one that
ended is closed.

The disk faults need a file system of their own: a small ext4 image
mounted through a loop device, so they run as root only and are skipped
with a message otherwise."""

import os
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402


class TestRegistryFaults(hubfix.HubTest):

    def rows(self):
        """{session: (device, ended is not NULL)} from the registry."""
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return {s: (d, e is not None) for s, d, e in db.execute(
                "SELECT session, device, ended FROM sessions")}
        finally:
            db.close()

    def serve(self, c, first_id, n=3):
        """c publishes n QoS 1 messages and each is acked."""
        for i in range(first_id, first_id + n):
            c.pub({"i": i}, topic="t", qos=1, id=i)
        for i in range(first_id, first_id + n):
            c.wait_op("ack", id=i)

    def fault_then_heal(self, hub, fault, heal, churn_until_retry=False):
        """Runs one fault: device a (connected before) is served all
        along; b connects and leaves, c connects, during the fault; then
        heal() and every row is there."""
        tok = self.tok
        m0 = hub.metrics().get("hub_registry_retries_total", 0)
        a = self.connect(hub, "a", tok["a"])
        self.serve(a, 1)
        hubfix.wait_until(lambda: any(d == "a" and not e
                                      for d, e in self.rows().values()),
                          10, what="a's row")
        before = self.rows()
        fault()
        made = 0
        try:
            b = self.connect(hub, "b", tok["b"])
            b.close()
            made += 1
            # on a disk the writer may still fit a batch into pages the
            # file already has: sessions come and go until one fails
            while churn_until_retry and hub.metrics().get(
                    "hub_registry_retries_total", 0) <= m0:
                if made > 400:
                    self.fail("no registry write failed during the fault")
                x = self.connect(hub, "b", tok["b"])
                x.close()
                made += 1
            hubfix.wait_until(
                lambda: hub.metrics().get("hub_registry_retries_total", 0) > m0
                and hub.metrics().get("hub_registry_failing") == 1,
                20, what="the writer counting its retries")
            self.assertIn("HUB-REG-RETRY", hub.log_text())
            c = self.connect(hub, "c", tok["c"])
            # the hub keeps serving the session it had
            self.serve(a, 100, 5)
            time.sleep(hubfix.T(0.5))
            self.serve(a, 200, 5)
            self.assertEqual(hub.metrics().get("hub_registry_failing"), 1)
        finally:
            heal()
        hubfix.wait_until(lambda: hub.metrics().get("hub_registry_failing") == 0,
                          30, what="the writer writing again")
        self.assertIn("HUB-REG-OK", hub.log_text())
        # c's uplink flows once its online row is written
        self.serve(c, 1)
        a.close()
        c.close()
        # no session row lost: a and c, and every b, opened and closed
        want = len(before) + made + 1

        def all_rows():
            r = self.rows()
            return (len(r) == want and all(e for _, e in r.values())) and r
        r = hubfix.wait_until(all_rows, 20,
                              what=f"{want} session rows, all closed")
        self.assertEqual(sum(1 for d, _ in r.values() if d == "b"),
                         sum(1 for d, _ in before.values() if d == "b") + made)
        self.assertEqual(sum(1 for d, _ in r.values() if d == "c"), 1)
        # and the hub still serves a new device
        x = self.connect(hub, "b", tok["b"])
        self.serve(x, 1)
        x.close()

    def test_write_lock_held_by_another_process(self):
        self.tok = self.add_devices("a", "b", "c")
        hub = self.start_hub()
        holder = sqlite3.connect(self.db, timeout=10, isolation_level=None)

        def fault():
            holder.execute("BEGIN IMMEDIATE")  # the write lock

        def heal():
            holder.execute("ROLLBACK")
            holder.close()
        self.fault_then_heal(hub, fault, heal)

    # ---- disk faults: a file system of our own ----------------------------

    def mount_small_fs(self, mib=8):
        if os.geteuid() != 0:
            self.skipTest("disk faults need root (a loop-mounted ext4 of "
                          "its own); not root: skipped")
        img = os.path.join(self.tmp, "fs.img")
        mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(mnt)
        with open(img, "wb") as f:
            f.truncate(mib << 20)
        r = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", img],
                           capture_output=True)
        if r.returncode != 0:
            self.skipTest(f"mkfs.ext4 failed: {r.stderr.decode()[:200]}")
        r = subprocess.run(["mount", "-o", "loop", img, mnt],
                           capture_output=True)
        if r.returncode != 0:
            self.skipTest("cannot loop-mount a file system here: "
                          f"{r.stderr.decode()[:200]}")

        def umount():
            subprocess.run(["chattr", "-R", "-i", mnt], capture_output=True)
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        # after tearDown's hub kill: cleanups run after tearDown
        self.addCleanup(umount)
        self.db = os.path.join(mnt, "registry.db")
        return mnt

    def test_full_disk(self):
        mnt = self.mount_small_fs()
        self.tok = self.add_devices("a", "b", "c")
        hub = self.start_hub()
        filler = os.path.join(mnt, "filler")

        def fault():
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 16))
                        f.flush()
                except OSError:
                    pass
                try:
                    os.fsync(f.fileno())
                except OSError:
                    pass

        def heal():
            os.unlink(filler)
        self.fault_then_heal(hub, fault, heal, churn_until_retry=True)

    def test_read_only_registry(self):
        mnt = self.mount_small_fs()
        self.tok = self.add_devices("a", "b", "c")
        hub = self.start_hub()
        files = [os.path.join(mnt, f) for f in os.listdir(mnt)
                 if f.startswith("registry.db")]

        def fault():
            # immutable: refused even to root and through open descriptors
            subprocess.run(["chattr", "+i"] + files, check=True)

        def heal():
            subprocess.run(["chattr", "-i"] + files, check=True)
        self.fault_then_heal(hub, fault, heal)


if __name__ == "__main__":
    hubfix.main()
