"""Device client certificates (--device-ca): a certificate that chains to the
device CA and whose CN is the device id authenticates without a token.
lws with mbedTLS only *asks* for the certificate (VERIFY_OPTIONAL), so these
tests pin down that hubd checks the verification result itself: a
certificate for another id, a self-signed look-alike, or none at all must
not get in; tokens keep working alongside."""

import asyncio
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402
import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class TestClientCert(hubfix.HubTest):

    def setUp(self):
        super().setUp()
        d = self.tmp
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self.ca = os.path.join(d, "devca.pem")
        openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=device-ca",
                "-keyout", os.path.join(d, "devca.key"), "-out", self.ca)
        for cn in ("cert1", "ghost"):
            openssl("req", *ec, "-subj", f"/CN={cn}",
                    "-keyout", os.path.join(d, f"{cn}.key"),
                    "-out", os.path.join(d, f"{cn}.csr"))
            openssl("x509", "-req", "-in", os.path.join(d, f"{cn}.csr"),
                    "-CA", self.ca, "-CAkey", os.path.join(d, "devca.key"),
                    "-CAcreateserial", "-days", "1",
                    "-out", os.path.join(d, f"{cn}.pem"))
        # same CN, not signed by the device CA
        openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=cert1",
                "-keyout", os.path.join(d, "fake.key"),
                "-out", os.path.join(d, "fake.pem"))
        self.tok = self.add_devices("cert1", "cert2", "tokdev")

    def attempt(self, hub, device, cert=None, token=None):
        """'ok' with the pong, or the HTTP status of the refusal."""
        ctx = hubfix.insecure_ssl()
        if cert:
            ctx.load_cert_chain(os.path.join(self.tmp, f"{cert}.pem"),
                                os.path.join(self.tmp, f"{cert}.key"))
        headers = {"Authorization": "Bearer " + token} if token else {}

        async def go():
            try:
                async with websockets.connect(
                        hub.url(device), ssl=ctx, subprotocols=["hub.v1"],
                        extra_headers=headers, open_timeout=10) as ws:
                    await ws.send('{"op":"ping"}')
                    reply = await asyncio.wait_for(ws.recv(), 10)
                    return "ok" if '"pong"' in reply else reply
            except websockets.exceptions.InvalidStatusCode as e:
                return e.status_code
            except websockets.exceptions.ConnectionClosed as e:
                # e.g. 4003: disabled while this attempt was under way (the
                # hub applies a disable to live sessions within ~1 s)
                return ("closed", e.rcvd.code if e.rcvd else None)
        return hubfix.aloop().run(go())

    def test_certificates(self):
        hub = self.start_hub(extra=["--device-ca", self.ca])
        self.assertEqual(self.attempt(hub, "cert1", cert="cert1"), "ok")
        # the certificate names another device
        self.assertEqual(self.attempt(hub, "cert2", cert="cert1"), 401)
        # signed by the CA, but no such device in the registry
        self.assertEqual(self.attempt(hub, "ghost", cert="ghost"), 401)
        # right CN, wrong issuer: the handshake succeeds, auth must not
        self.assertEqual(self.attempt(hub, "cert1", cert="fake"), 401)
        self.assertEqual(self.attempt(hub, "cert1"), 401)
        # tokens still work next to certificates, with or without one
        self.assertEqual(self.attempt(hub, "tokdev", token=self.tok["tokdev"]), "ok")
        self.assertEqual(self.attempt(hub, "cert2", cert="fake",
                                      token=self.tok["cert2"]), "ok")
        # disabling applies to certificate devices too
        self.hubctl("device", "disable", "cert1")
        hubfix.wait_until(lambda: self.attempt(hub, "cert1", cert="cert1") == 403,
                          5, interval=0.2, what="disabled cert device refused")

    def test_without_device_ca_certs_are_ignored(self):
        hub = self.start_hub()
        self.assertEqual(self.attempt(hub, "cert1", cert="cert1"), 401)
        self.assertEqual(self.attempt(hub, "cert1", cert="cert1",
                                      token=self.tok["cert1"]), "ok")


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
