"""Group and fleet commands (hubctl group add|remove|list, send --group /
--all): a worker subscribes groups/G/cmd/# while it holds a member of G
and fans each command out to its live members as
{"op":"msg","topic":"cmd/...","group":"G","id":N}; fleet/cmd/# reaches
every connected device. Membership comes from the registry and from a
signed token's "groups" claim. Live only: nothing waits for the offline."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubfix  # noqa: E402


class TestGroups(hubfix.HubTest):

    def test_group_and_fleet_commands(self):
        tok = self.add_devices("g1", "g2", "g3")
        self.hubctl("group", "add", "north", "g1", "g2")
        self.hubctl("group", "add", "south", "g3")
        keydir = os.path.join(self.tmp, "fleet")
        self.hubctl("fleet", "init", "--dir", keydir)
        s1 = self.hubctl("device", "add", "s1", "--signed", "--dir", keydir,
                         "--group", "north").stdout.decode().strip()
        show = self.hubctl_json("device", "show", "g1")
        self.assertEqual(show["groups"], ["north"])
        self.assertEqual(self.hubctl_json("group", "list"),
                         [{"group": "north", "devices": 2},
                          {"group": "south", "devices": 1}])
        r = self.hubctl("group", "add", "north", "nosuch", check=False)
        self.assertEqual(r.returncode, 1)

        hub = self.start_hub(extra=["--token-key", os.path.join(keydir, "fleet.pub")])
        c = {d: self.connect(hub, d, tok[d]) for d in ("g1", "g2", "g3")}
        c["s1"] = self.connect(hub, "s1", s1)
        for d in c:
            c[d].pub({"hello": 1}, qos=1, id=1)
            c[d].wait_op("ack", id=1)

        # the group subscription follows the first member's session start
        def group_reaches_all():
            self.hubctl("send", "--group", "north", "probe", "1", "--quiet")
            try:
                for d in ("g1", "g2", "s1"):
                    c[d].wait_op("msg", topic="cmd/probe", timeout=0.5)
                return True
            except AssertionError:
                return False
        hubfix.wait_until(group_reaches_all, 15, interval=0.1,
                          what="group command at every member")

        r = self.hubctl("--json", "send", "--group", "north", "reboot", '{"delay":5}')
        self.assertIn('"groups/north/cmd/reboot"', r.stdout.decode())
        for d in ("g1", "g2", "s1"):
            m = c[d].wait_op("msg", topic="cmd/reboot")
            self.assertEqual(m["group"], "north")
            self.assertEqual(m["payload"], {"delay": 5})
            self.assertIsInstance(m["id"], int)
            c[d].send_json({"op": "ack", "id": m["id"]})
        # QoS 0: no id
        self.hubctl("send", "--group", "north", "q0", "x", "--qos", "0")
        m = c["g1"].wait_op("msg", topic="cmd/q0")
        self.assertNotIn("id", m)
        self.assertEqual(m["payload"], "x")

        # the fleet: everyone, no group named
        self.hubctl("send", "--all", "update", '{"v":2}')
        for d in c:
            m = c[d].wait_op("msg", topic="cmd/update")
            self.assertNotIn("group", m)
            self.assertEqual(m["payload"], {"v": 2})
        # g3 (south) never saw north's commands: they came before the fleet one
        self.assertEqual([m for m in c["g3"].ops("msg") if m.get("group") == "north"], [])

        # reference counting: the last member leaves, the group goes;
        # a member comes back, the group is routed again
        for d in ("g1", "g2", "s1"):
            c[d].close()
        c["g1"] = self.connect(hub, "g1", tok["g1"])
        def back():
            self.hubctl("send", "--group", "north", "again", "1", "--quiet")
            try:
                c["g1"].wait_op("msg", topic="cmd/again", timeout=0.5)
                return True
            except AssertionError:
                return False
        hubfix.wait_until(back, 15, interval=0.1, what="group routed again")

        # bad usage
        for args in (["send", "--group", "north", "--all", "t", "p"],
                     ["send", "--group", "bad/g", "t", "p"],
                     ["send", "--group", "north", "t", "p", "--retain", "--ttl", "5"],
                     ["send", "--group", "north", "a/#", "p"]):
            r = self.hubctl(*args, check=False)
            self.assertEqual(r.returncode, 2, args)


if __name__ == "__main__":
    hubfix.main()
