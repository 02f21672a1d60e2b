"""Signed fleet tokens (hubctl fleet init, device add --signed, hubd
--token-key) and their revocation through the broker (hub/revoked/{id}):
a device provisioned once logs in on a hub whose registry never heard of
it; forgeries are refused; disable, rotate-token, delete close live
sessions on every hub within seconds; enable clears; a hub started later
learns revocations from the retained messages."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
from hubfix import Hub, ws_refusal  # noqa: E402

import jwt as pyjwt  # noqa: E402  (python3-jwt: an independent ES256)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def raw_token(header, claims, sig=b""):
    return ".".join([b64u(json.dumps(header).encode()),
                     b64u(json.dumps(claims).encode()), b64u(sig)])


class TestFleetTokens(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        self.keydir = os.path.join(self.tmp, "fleet")
        r = self.hubctl("fleet", "init", "--dir", self.keydir)
        self.assertIn("fleet.pub", r.stdout.decode())
        self.pub = os.path.join(self.keydir, "fleet.pub")
        self.priv = os.path.join(self.keydir, "fleet.key")
        self.assertEqual(os.stat(self.priv).st_mode & 0o777, 0o600)
        # a second hub with a registry of its own
        self.db_b = os.path.join(self.tmp, "registry-b.db")
        subprocess.run([hubfix.HUBCTL, "--db", self.db_b, "init"],
                       check=True, capture_output=True)

    def signed(self, dev, *extra, db=None):
        r = hubfix.hubctl_run(db or self.db, self.broker.port, "device", "add",
                              dev, "--signed", "--dir", self.keydir, *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.decode().strip()

    def hub_b(self, extra=(), hub_id="hubB", db=None):
        h = Hub(self.tmp, self.cert, self.key, db or self.db_b,
                self.broker.port, hub_id=hub_id,
                extra=["--token-key", self.pub, *extra])
        self.hubs.append(h)
        return h.start()

    def hubctl_b(self, *args):
        return subprocess.run([hubfix.HUBCTL, "--db", self.db_b, "--json", *args],
                              capture_output=True, timeout=30)

    def test_any_hub_accepts_and_forgeries_refused(self):
        tok = self.signed("s1", "--group", "north", "--ttl-days", "3")
        # an independent implementation agrees on the token
        pub = open(self.pub, "rb").read()
        claims = pyjwt.decode(tok, pub, algorithms=["ES256"])
        self.assertEqual(claims["sub"], "s1")
        self.assertEqual(claims["groups"], ["north"])
        self.assertAlmostEqual(claims["exp"] - claims["iat"], 3 * 86400)
        self.assertTrue(claims["jti"])
        self.assertEqual(pyjwt.get_unverified_header(tok)["alg"], "ES256")

        opaque = self.add_device("plain")
        hub_a = self.start_hub(extra=["--token-key", self.pub,
                                      "--auth-fail-limit", 1000])
        hub_b = self.hub_b(extra=["--auth-fail-limit", 1000])
        # hub B's registry does not know s1: the signature is enough
        r = self.hubctl_b("device", "show", "s1")
        self.assertNotEqual(r.returncode, 0)
        c = self.connect(hub_b, "s1", tok)
        c.pub({"t": 1}, qos=1, id=1)
        c.wait_op("ack", id=1)
        # ... and its first session created the local row and events
        def known_on_b():
            r = self.hubctl_b("device", "show", "s1")
            return r.returncode == 0 and json.loads(r.stdout)
        d = hubfix.wait_until(known_on_b, 10, interval=0.2,
                              what="s1 in hub B's registry")
        self.assertTrue(d.get("online"), d)
        c.close()
        # the same token on hub A, in ?token= and as a subprotocol too
        for via in ("header", "query"):
            c = self.connect(hub_a, "s1", tok, via=via)
            c.close()
        # opaque tokens keep working beside signed ones
        self.connect(hub_a, "plain", opaque).close()

        now = int(time.time())
        other = ec.generate_private_key(ec.SECP256R1())
        mine = serialization.load_pem_private_key(open(self.priv, "rb").read(), None)
        base = {"sub": "s1", "iat": now, "exp": now + 3600, "jti": "x"}
        forged = {
            "another device's token": self.signed("s2"),
            "alg none": raw_token({"alg": "none", "typ": "JWT"}, base),
            "alg none with a signature": raw_token({"alg": "none"}, base, b"\0" * 64),
            "HS256 keyed with the public key": None,
            "another fleet's key": pyjwt.encode(base, other, algorithm="ES256"),
            "expired": pyjwt.encode(dict(base, iat=now - 7200, exp=now - 3600),
                                    mine, algorithm="ES256"),
            "not yet valid": pyjwt.encode(dict(base, nbf=now + 3600), mine,
                                          algorithm="ES256"),
            "issued in the future": pyjwt.encode(dict(base, iat=now + 3600, exp=now + 7200),
                                                 mine, algorithm="ES256"),
            "sub differs in case": pyjwt.encode(dict(base, sub="S1"), mine,
                                                algorithm="ES256"),
            "sub is a prefix": pyjwt.encode(dict(base, sub="s"), mine,
                                            algorithm="ES256"),
            "ES384 header": None,
            "tampered claims": None,
        }
        h = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        p = b64u(json.dumps(base).encode())
        mac = hmac.new(pub, (h + "." + p).encode(), hashlib.sha256).digest()
        forged["HS256 keyed with the public key"] = h + "." + p + "." + b64u(mac)
        good = pyjwt.encode(base, mine, algorithm="ES256")
        gh, gp, gs = good.split(".")
        forged["ES384 header"] = b64u(json.dumps({"alg": "ES384"}).encode()) + "." + gp + "." + gs
        forged["tampered claims"] = (gh + "." + b64u(json.dumps(dict(base, exp=now + 10**8)).encode())
                                     + "." + gs)
        # the control: the same construction, properly signed, is accepted
        self.connect(hub_b, "s1", good).close()
        for what, t in forged.items():
            for hub in (hub_a, hub_b):
                st, _ = ws_refusal(hub.url("s1"), t)
                self.assertEqual(st, 401, f"{what} on {hub.hub_id}")

        # a hub without --token-key accepts no signed token
        hub_c = Hub(self.tmp, self.cert, self.key, os.path.join(self.tmp, "c.db"),
                    self.broker.port, hub_id="hubC")
        self.hubs.append(hub_c)
        hub_c.start()
        st, _ = ws_refusal(hub_c.url("s1"), tok)
        self.assertEqual(st, 401)

    def test_signed_token_every_way(self):
        """A realistic signed token (a 24-byte id, 5 groups, 90 days) works
        in all three places docs/protocol.md names: the Authorization
        header, ?token= and the browser's way, the subprotocol offer
        new WebSocket(url, ["hub.v1", "bearer.<token>"]) - in either order.
        The offer is longer than lws 4.3.5 took (a 128-byte buffer; the
        connection was dropped unanswered): patches/
        lws-subprotocol-list-length.patch."""
        dev = "sensor-0123456789-abcdef"
        groups = ["north-east-region", "firmware-beta-ring", "building-17",
                  "floor-3-sensors", "maintenance-window-b"]
        args = [a for g in groups for a in ("--group", g)]
        tok = self.signed(dev, "--ttl-days", "90", *args)
        self.assertGreater(len("hub.v1, bearer." + tok), 127, tok)
        hubfix.log(f"signed token with 5 groups: {len(tok)} bytes")
        with open(self.pub, "rb") as f:
            claims = pyjwt.decode(tok, f.read(), algorithms=["ES256"])
        self.assertEqual(claims["groups"], groups)
        hub = self.start_hub(extra=["--token-key", self.pub,
                                    "--auth-fail-limit", 1000])
        for via in ("header", "query"):
            c = self.connect(hub, dev, tok, via=via)
            c.pub({"via": via}, qos=1, id=1)
            c.wait_op("ack", id=1)
            c.close()
        for offer in (("hub.v1", "bearer." + tok), ("bearer." + tok, "hub.v1")):
            c = self.connect(hub, dev, None, via=None, subprotocols=offer)
            self.assertEqual(c.subprotocol, "hub.v1", offer[0][:10])
            c.pub({"via": "subprotocol"}, qos=1, id=2)
            c.wait_op("ack", id=2)
            c.close()
        # the same length, a bad signature: a 401, not a dropped connection
        bad = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
        st, _ = ws_refusal(hub.url(dev), None,
                           subprotocols=("hub.v1", "bearer." + bad))
        self.assertEqual(st, 401)
        # the longest credential the hub takes (1024 bytes) still gets an
        # answer through the subprotocol; one byte more is refused (400)
        for n, want in ((1024, 401), (1025, 400)):
            st, _ = ws_refusal(hub.url(dev), None,
                               subprotocols=("hub.v1", "bearer." + "x" * n))
            self.assertEqual(st, want, n)

    def test_bad_key_refused_at_start(self):
        r = subprocess.run([hubfix.HUBD, "--no-tls", "--token-key", self.priv,
                            "--db", self.db], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"--token-key", r.stderr)
        r = subprocess.run([hubfix.HUBCTL, "--db", self.db, "device", "add", "x",
                            "--group", "g"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        r = subprocess.run([hubfix.HUBCTL, "--db", self.db, "device", "add", "x",
                            "--signed", "--dir", os.path.join(self.tmp, "nokey")],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        r = subprocess.run([hubfix.HUBCTL, "--db", self.db, "device", "show", "x"],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1, "a failed signed add leaves no device")

    def test_revocation_on_every_hub(self):
        tok = self.signed("r1")
        hub_a = self.start_hub(extra=["--token-key", self.pub,
                                      "--auth-fail-limit", 1000])
        hub_b = self.hub_b(extra=["--auth-fail-limit", 1000])
        watch = self.mqtt("hub/revoked/#")

        # disable on A's registry: B (which never heard of it) closes 4003
        c = self.connect(hub_b, "r1", tok)
        t0 = time.monotonic()
        self.hubctl("device", "disable", "r1")
        self.assertEqual(c.wait_closed(10), 4003)
        hubfix.log(f"disable -> closed on the other hub in {time.monotonic() - t0:.2f} s")
        m = watch.wait_for(lambda m: m.topic == "hub/revoked/r1", what="revocation")
        self.assertTrue(m.retain or True)
        for hub in (hub_a, hub_b):
            st, _ = ws_refusal(hub.url("r1"), tok)
            self.assertIn(st, (401, 403), hub.hub_id)

        # enable clears it everywhere
        self.hubctl("device", "enable", "r1")
        def accepted():
            try:
                self.connect(hub_b, "r1", tok).close()
                return True
            except Exception:  # noqa: BLE001
                return False
        hubfix.wait_until(accepted, 10, interval=0.2, what="enable cleared")

        # rotate-token --signed: the old session closes (1008), the old
        # token is refused, the new one works - on both hubs
        c = self.connect(hub_b, "r1", tok)
        r = self.hubctl("device", "rotate-token", "r1", "--signed", "--dir", self.keydir)
        new = r.stdout.decode().strip()
        self.assertEqual(c.wait_closed(10), 1008)
        for hub in (hub_a, hub_b):
            st, _ = ws_refusal(hub.url("r1"), tok)
            self.assertEqual(st, 401, hub.hub_id)
        c = self.connect(hub_a, "r1", new)
        c.close()

        # a hub started later learns the revocation from the retained message
        hub_d = self.hub_b(hub_id="hubD", db=os.path.join(self.tmp, "d.db"))
        def old_refused():
            try:
                st, _ = ws_refusal(hub_d.url("r1"), tok)
                return st == 401
            except AssertionError:
                return False  # accepted: not learned yet
        hubfix.wait_until(old_refused, 10, interval=0.2,
                          what="late hub refuses the old token")
        self.connect(hub_d, "r1", new).close()

        # delete: sessions with signed tokens close everywhere
        c = self.connect(hub_d, "r1", new)
        self.hubctl("device", "delete", "r1")
        self.assertEqual(c.wait_closed(10), 1008)
        st, _ = ws_refusal(hub_b.url("r1"), new)
        self.assertEqual(st, 401)


if __name__ == "__main__":
    hubfix.main()
