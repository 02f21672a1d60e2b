"""The status page and its JSON API on the ops listener (docs/operations.md
"Status page and JSON API"): GET / serves the page compiled into hubd;
/api/v1/status, /api/v1/devices (filters, paging), /api/v1/devices/{id},
/api/v1/events (device, paging) answer from a read-only registry
connection; every answer carries the security headers; --http-token
protects everything but the page files and the probes. And in a real
browser: Debian's chromium (headless, driven by playwright-core from
tests/browser/, pinned in its package-lock.json) sees a device go online
and offline, shows a groups column only once a device has groups (and a
device's groups on click), and finds devices by search; the screenshot is
saved as
build/status-page.png. The same browser then opens a device session the
documented browser way, a signed token (5 groups) in the subprotocol:
new WebSocket(url, ["hub.v1", "bearer." + token])."""

import json
import os
import subprocess
import sys
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402

BROWSER_DIR = os.path.join(hubfix.HUB_SRC, "tests", "browser")
SHOT = os.path.join(hubfix.HUB_SRC, "build", "status-page.png")


def get(hub, path, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{hub.http_port}{path}")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class TestStatusPage(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.tok = self.add_devices("b-dev-1", "sensor-9")
        for dev, name in (("b-dev-2", "boiler room"), ("kettle-7", "Boiler backup")):
            self.tok[dev] = self.hubctl("device", "add", dev, "--name", name).stdout.decode().strip()

    def api(self, hub, path, want=200, token=None):
        st, h, body = get(hub, path, token)
        self.assertEqual(st, want, (path, body))
        self.assertEqual(h.get("content-type"), "application/json", path)
        return json.loads(body)

    def test_api(self):
        hub = self.start_hub(workers=2)
        c = self.connect(hub, "kettle-7", self.tok["kettle-7"])
        hubfix.wait_until(lambda: self.api(hub, "/api/v1/status")["devices_online"] == 1,
                          10, what="kettle-7 online in the API")
        s = self.api(hub, "/api/v1/status")
        self.assertEqual(s["hub"], "hubA")
        self.assertEqual(s["devices"], 4)
        self.assertEqual(s["workers"], {"live": 2, "configured": 2, "restarts": 0})
        self.assertEqual(s["broker"]["connected"], 2)
        self.assertTrue(s["ready"])
        self.assertTrue(s["history"] and len(s["history"][0]) == 4, s["history"])
        hubfix.wait_until(lambda: self.api(hub, "/api/v1/status")["connections"] == 1, 10,
                          what="connections 1")
        # devices: filters and paging by id
        d = self.api(hub, "/api/v1/devices")
        self.assertEqual([x["id"] for x in d["devices"]],
                         ["b-dev-1", "b-dev-2", "kettle-7", "sensor-9"])
        self.assertIsNone(d["next"])
        k = next(x for x in d["devices"] if x["id"] == "kettle-7")
        self.assertTrue(k["online"])
        self.assertEqual(k["addr"], "127.0.0.1")
        self.assertEqual(k["hub"], "hubA")
        self.assertLess(abs(k["last_seen"] - s["time"]), 60000)
        self.assertLessEqual(k["since"], k["last_seen"])
        p1 = self.api(hub, "/api/v1/devices?limit=3")
        self.assertEqual(len(p1["devices"]), 3)
        self.assertEqual(p1["next"], "kettle-7")
        p2 = self.api(hub, "/api/v1/devices?limit=3&after=kettle-7")
        self.assertEqual([x["id"] for x in p2["devices"]], ["sensor-9"])
        self.assertIsNone(p2["next"])
        self.assertEqual([x["id"] for x in self.api(hub, "/api/v1/devices?online=true")["devices"]],
                         ["kettle-7"])
        self.assertEqual(len(self.api(hub, "/api/v1/devices?online=false")["devices"]), 3)
        self.assertEqual([x["id"] for x in self.api(hub, "/api/v1/devices?q=BOILER")["devices"]],
                         ["b-dev-2", "kettle-7"])
        self.assertEqual(self.api(hub, "/api/v1/devices?q=%25")["devices"], [])
        one = self.api(hub, "/api/v1/devices/b-dev-2")
        self.assertEqual((one["id"], one["name"], one["online"]), ("b-dev-2", "boiler room", False))
        # groups: none yet; then a few (listed by name), and more than the
        # 16 listed (the first 16 by name, "groups_more" counts the rest)
        self.assertEqual(one["groups"], [])
        self.assertNotIn("groups_more", one)
        self.hubctl("group", "add", "heating", "b-dev-2", "kettle-7")
        self.hubctl("group", "add", "boilers", "b-dev-2")
        many = [f"rack-{i:02d}" for i in range(18)]
        for g in reversed(many):
            self.hubctl("group", "add", g, "sensor-9")
        d = {x["id"]: x for x in self.api(hub, "/api/v1/devices")["devices"]}
        self.assertEqual(d["b-dev-1"]["groups"], [])
        self.assertEqual(d["b-dev-2"]["groups"], ["boilers", "heating"])
        self.assertEqual(d["kettle-7"]["groups"], ["heating"])
        self.assertEqual(d["sensor-9"]["groups"], many[:16])
        self.assertEqual(d["sensor-9"]["groups_more"], 2)
        for k in ("b-dev-1", "b-dev-2", "kettle-7"):
            self.assertNotIn("groups_more", d[k], k)
        self.assertEqual(self.api(hub, "/api/v1/devices/sensor-9")["groups"], many[:16])
        self.assertEqual(self.api(hub, "/api/v1/devices/sensor-9")["groups_more"], 2)
        one = self.api(hub, "/api/v1/devices/b-dev-2")
        self.assertEqual(one["groups"], ["boilers", "heating"])
        self.assertNotIn("groups_more", one)
        self.assertEqual([x["id"] for x in self.api(hub, "/api/v1/devices?q=BOILER")["devices"]],
                         ["b-dev-2", "kettle-7"])
        self.api(hub, "/api/v1/devices/nosuch", 404)
        self.api(hub, "/api/v1/devices/bad%20id", 404)
        for bad in ("limit=0", "limit=1001", "limit=x", "online=maybe", "after=a%20b"):
            self.api(hub, "/api/v1/devices?" + bad, 400)
        # events: newest first, per device, paged by seq
        c.close()
        hubfix.wait_until(lambda: len(self.api(hub, "/api/v1/events?device=kettle-7")["events"]) == 2,
                          10, what="kettle-7 offline event")
        for _ in range(2):
            self.connect(hub, "sensor-9", self.tok["sensor-9"]).close()
        hubfix.wait_until(lambda: len(self.api(hub, "/api/v1/events")["events"]) == 6, 10,
                          what="6 events")
        ev = self.api(hub, "/api/v1/events")["events"]
        seqs = [e["seq"] for e in ev]
        self.assertEqual(seqs, sorted(seqs, reverse=True))
        self.assertEqual(ev[-1]["device"], "kettle-7")
        self.assertEqual(ev[-1]["kind"], "online")
        page = self.api(hub, "/api/v1/events?limit=4")
        self.assertEqual(page["next"], seqs[3])
        rest = self.api(hub, f"/api/v1/events?limit=4&before={page['next']}")
        self.assertEqual([e["seq"] for e in rest["events"]], seqs[4:])
        self.assertIsNone(rest["next"])
        k_ev = self.api(hub, "/api/v1/events?device=kettle-7")["events"]
        self.assertEqual([e["kind"] for e in k_ev], ["offline", "online"])
        self.assertEqual(k_ev[0]["reason"], "closed")
        self.api(hub, "/api/v1/events?before=0", 400)
        self.api(hub, "/api/v1/nope", 404)

    def test_headers_and_token(self):
        tokfile = os.path.join(self.tmp, "http-token")
        with open(tokfile, "w") as f:
            f.write("s3cret-token-for-the-ops-listener\n")
        hub = self.start_hub(extra=["--http-token", tokfile])
        for path in ("/", "/app.js", "/app.css", "/healthz", "/readyz", "/metrics",
                     "/api/v1/status", "/nope"):
            st, h, body = get(hub, path)
            self.assertEqual(h.get("x-content-type-options"), "nosniff", path)
            csp = h.get("content-security-policy", "")
            self.assertIn("default-src 'self'", csp, path)
            self.assertIn("script-src 'self'", csp, path)
            self.assertNotIn("unsafe-inline", csp, path)
            self.assertEqual(h.get("x-frame-options"), "DENY", path)
            want = 200 if path in ("/", "/app.js", "/app.css", "/healthz", "/readyz") else 401
            if path == "/nope":
                want = 401
            self.assertEqual(st, want, path)
        st, h, body = get(hub, "/")
        self.assertTrue(h["content-type"].startswith("text/html"))
        self.assertIn(b'<script src="/app.js"', body)
        self.assertNotIn(b"http://", body.replace(b"http://www.w3.org", b""))
        self.assertEqual(get(hub, "/metrics", "wrong-token-wrong-token-xx")[0], 401)
        self.assertEqual(get(hub, "/metrics", "s3cret-token-for-the-ops-listener")[0], 200)
        s = self.api(hub, "/api/v1/status", token="s3cret-token-for-the-ops-listener")
        self.assertEqual(s["devices"], 4)
        # a short token is refused at start
        with open(tokfile, "w") as f:
            f.write("short\n")
        bad = self.start_hub(extra=["--http-token", tokfile], hub_id="hubB", ready=False)
        self.assertEqual(bad.proc.wait(30), 2)
        self.assertIn("at least 16", bad.log_text())
        bad = self.start_hub(extra=["--http-token", tokfile + ".missing"], hub_id="hubC",
                             ready=False)
        self.assertEqual(bad.proc.wait(30), 2)
        self.assertIn("No such file", bad.log_text())

    def test_browser(self):
        node_modules = os.path.join(BROWSER_DIR, "node_modules", "playwright-core")
        self.assertTrue(os.path.isdir(node_modules),
                        "tests/browser/node_modules missing: run tools/setup (npm ci)")
        # a signed token with 5 groups, as a browser sends it (subprotocol)
        keydir = os.path.join(self.tmp, "fleet")
        self.hubctl("fleet", "init", "--dir", keydir)
        groups = [a for g in ("north-east-region", "firmware-beta-ring", "building-17",
                              "floor-3-sensors", "maintenance-window-b")
                  for a in ("--group", g)]
        jwt = self.hubctl("device", "add", "browser-dev-0123456789", "--signed",
                          "--dir", keydir, "--ttl-days", 90, *groups).stdout.decode().strip()
        hub = self.start_hub(workers=2, extra=["--token-key",
                                               os.path.join(keydir, "fleet.pub")])
        # history for the events list and the chart
        self.connect(hub, "b-dev-2", self.tok["b-dev-2"]).close()
        self.connect(hub, "kettle-7", self.tok["kettle-7"])
        self.connect(hub, "sensor-9", self.tok["sensor-9"])
        dev = self.connect(hub, "b-dev-1", self.tok["b-dev-1"])
        os.makedirs(os.path.dirname(SHOT), exist_ok=True)
        if os.path.exists(SHOT):
            os.unlink(SHOT)
        p = subprocess.Popen(["node", os.path.join(BROWSER_DIR, "status_page.mjs"),
                              f"http://127.0.0.1:{hub.http_port}/", SHOT,
                              hub.url("browser-dev-0123456789"), jwt],
                             cwd=BROWSER_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        out, err = [], []
        threading.Thread(target=lambda: [out.append(ln.strip()) for ln in p.stdout],
                         daemon=True).start()
        threading.Thread(target=lambda: [err.append(ln) for ln in p.stderr],
                         daemon=True).start()
        why = lambda: f"browser: {out} {''.join(err)[-3000:]}"  # noqa: E731
        hubfix.wait_until(lambda: "online b-dev-1" in out or p.poll() is not None, 90,
                          what="the page to show b-dev-1 online")
        self.assertIn("online b-dev-1", out, why())
        # groups: the page had none so far (the script checked: no column)
        self.hubctl("group", "add", "boilers", "b-dev-2", "kettle-7")
        self.hubctl("group", "add", "ops-team", "b-dev-2")
        dev.close()
        p.stdin.write("closed\n")
        p.stdin.flush()
        hubfix.wait_until(lambda: p.poll() is not None, 120, what="the browser script")
        self.assertEqual(p.returncode, 0, why())
        self.assertIn("offline b-dev-1", out)
        self.assertIn("done", out)
        self.assertIn("ws hub.v1 pong", out, why())
        with open(SHOT, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        hubfix.log(f"status page screenshot: {SHOT}")


if __name__ == "__main__":
    hubfix.unittest.main(verbosity=2)
