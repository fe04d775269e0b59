"""D-Bus transport against a private system-like dbus-daemon, a real polkitd and real
unprivileged users: same API as the socket, every call authorized by polkit, no
tracebacks on the bus, and the `[dbus] enabled` modes.

The polkit files this needs under /usr/share/polkit-1 and /etc/polkit-1 are installed
by the `polkit` fixture and restored byte for byte afterwards, also when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rig
from lvmsuper.client import Client, ConnectionFailed, InvalidRequest
from lvmsuper.client.dbus import (BUS_NAME, INTERFACE, LIST_METHODS, OBJECT_PATH, member_name,
                                  params_to_dbus, signature_of)
from lvmsuper.supervisor.methods import METHODS

pytestmark = pytest.mark.system

ADMIN, QUERY, MANAGE, OUT = "lvmst-admin", "lvmst-query", "lvmst-manage", "lvmst-out"
MiB = 2**20
POLKITD = "/usr/lib/polkit-1/polkitd"
ACTIONS = "/usr/share/polkit-1/actions/org.lvmsuper.policy"
TEST_RULES = "/etc/polkit-1/rules.d/10-lvmsuper-test.rules"
EXAMPLE_RULES = "/etc/polkit-1/rules.d/51-lvmsuper-example-test.rules"
POLKIT_BUS_POLICY = "/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"
PERMISSION_DENIED = "org.lvmsuper.Error.PermissionDenied"

# The test rules: the all-roles group gets everything, the query group reads, the
# manage group (lvmst-manage is in the query and manage groups) may also change but
# not destroy.
RULES = """\
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.lvmsuper.") != 0) return polkit.Result.NOT_HANDLED;
    if (subject.isInGroup("%(all)s")) return polkit.Result.YES;
    if (action.id == "org.lvmsuper.query" && subject.isInGroup("%(query)s"))
        return polkit.Result.YES;
    if (action.id == "org.lvmsuper.manage" && subject.isInGroup("%(manage)s"))
        return polkit.Result.YES;
    return polkit.Result.NOT_HANDLED;
});
""" % {"all": rig.GROUP_ALL, "query": rig.GROUP_QUERY, "manage": rig.GROUP_MANAGE}


# ---- a private system bus and polkitd ----------------------------------------------

def bus_config(socket_path: str) -> str:
    """What Debian's system.conf allows, plus polkit's and lvmsuper's bus policies."""
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket_path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <include>{POLKIT_BUS_POLICY}</include>
  <include>{rig.REPO / "systemd" / "org.lvmsuper.Supervisor1.conf"}</include>
</busconfig>
"""


class Bus:
    """dbus-daemon with a system-like policy on a socket in a 0755 directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lvmsuper-bus-", dir="/tmp"))
        os.chmod(self.dir, 0o755)  # unprivileged users and polkitd must reach the socket
        self.path = str(self.dir / "system_bus_socket")
        self.address = f"unix:path={self.path}"
        config = self.dir / "bus.conf"
        config.write_text(bus_config(self.path))
        self.proc = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork",
                                      "--print-address=1"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # printed once it listens
        assert line.startswith(self.address), line

    def has_owner(self, name: str) -> bool:
        out = rig.run_as(None, ["busctl", f"--address={self.address}", "call",
                                "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                "org.freedesktop.DBus", "NameHasOwner", "s", name])
        return out.stdout.strip() == "b true"

    def peer_pids(self) -> set[int]:
        """The PIDs of every process connected to this bus."""
        out = rig.run_as(None, ["busctl", f"--address={self.address}", "list", "--no-legend",
                                "--unique"])
        return {int(line.split()[1]) for line in out.stdout.splitlines()
                if len(line.split()) > 1 and line.split()[1].isdigit()}

    def wait_for_owner(self, name: str, present: bool = True, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.has_owner(name) != present:
            assert time.monotonic() < deadline, f"{name} owner present={not present}"
            time.sleep(0.02)

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Polkitd:
    """The real polkitd on our bus (it switches to its own user by itself)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.log_path = bus.dir / "polkitd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # Without --no-debug it reports each rules file it compiles (and errors).
            self.proc = subprocess.Popen(
                [POLKITD], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus.address,
                     "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        self.bus.wait_for_owner("org.freedesktop.PolicyKit1")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        self.bus.wait_for_owner("org.freedesktop.PolicyKit1", present=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    rig.system_ready()
    rig.need_system(shutil.which("dbus-daemon") is not None, "needs dbus-daemon (dbus)")
    rig.need_system(shutil.which("busctl") is not None, "needs busctl (systemd)")
    b = Bus()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def polkit(bus: Bus, users: object) -> Iterator[Polkitd]:
    rig.need_system(os.access(POLKITD, os.X_OK), "needs polkitd")
    rig.need_system(os.path.isdir("/etc/polkit-1/rules.d"), "needs /etc/polkit-1/rules.d")
    with rig.etc_restored(ACTIONS, TEST_RULES, EXAMPLE_RULES):
        shutil.copyfile(rig.REPO / "polkit" / "org.lvmsuper.policy", ACTIONS)
        Path(TEST_RULES).write_text(RULES)
        shutil.copyfile(rig.REPO / "polkit" / "50-lvmsuper.rules", EXAMPLE_RULES)
        for path in (ACTIONS, TEST_RULES, EXAMPLE_RULES):
            os.chmod(path, 0o644)
        pk = Polkitd(bus)
        pk.start()
        try:
            yield pk
        finally:
            pk.stop()


@pytest.fixture(scope="module")
def dd(sandbox: rig.Sandbox, polkit: Polkitd, bus: Bus) -> Iterator[rig.Daemon]:
    """lvmsuperd serving both its socket and our bus."""
    d = rig.Daemon(sandbox, "dbusd", dbus={"enabled": True, "bus": bus.address}).start()
    try:
        bus.wait_for_owner(BUS_NAME)
        yield d
    finally:
        started = time.monotonic()
        assert d.stop() == 0
        stopped_in = time.monotonic() - started
        assert "Traceback" not in d.log(), d.log()
        assert stopped_in < 0.5, f"SIGTERM when idle took {stopped_in:.2f} s"
        assert not bus.has_owner(BUS_NAME)


# ---- running clients as users ------------------------------------------------------------

PRELUDE = """\
import json, os, sys, time
from lvmsuper.client import Client, JobRef, LvmSuperError
from lvmsuper.client.models import to_wire

def call(c, method, **params):
    try:
        out = c.call(method, **params)
        return {"result": {"job": out.id} if isinstance(out, JobRef) else to_wire(out)}
    except LvmSuperError as e:
        return {"error": e.name, "type": type(e).__name__, "message": e.message,
                "data": e.data}

dbus = Client(transport="dbus")  # the system bus: DBUS_SYSTEM_BUS_ADDRESS points at ours
sock = Client()  # LVMSUPER_SOCKET
out = {}
"""


def py(user: str | None, code: str, daemon: rig.Daemon, bus: Bus) -> Any:
    """Runs PRELUDE + ``code`` as ``user``; returns the JSON of the final ``out``."""
    proc = rig.run_as(user, [str(rig.VENV_BIN / "python"), "-c",
                             PRELUDE + code + "\nprint(json.dumps(out))\n"],
                      env={"LVMSUPER_SOCKET": daemon.socket, "PYTHONDONTWRITEBYTECODE": "1",
                           "DBUS_SYSTEM_BUS_ADDRESS": bus.address})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def calls(user: str | None, daemon: rig.Daemon, bus: Bus,
          todo: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each (method, params) over D-Bus as ``user``, in one process."""
    code = (f"todo = json.loads({json.dumps(json.dumps(todo))})\n"
            "out = [call(dbus, m, **p) for m, p in todo]\n")
    return py(user, code, daemon, bus)  # type: ignore[no-any-return]


RAW = """\
import asyncio, json, sys
from dbus_next.aio import MessageBus
from dbus_next import Message, MessageType
from lvmsuper.client.dbus import from_dbus, params_to_dbus

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    out = []
    for dest, path, iface, member, params in json.loads(sys.argv[2]):
        reply = await bus.call(Message(destination=dest, path=path, interface=iface,
                                       member=member, signature="a{sv}",
                                       body=[params_to_dbus(params)]))
        out.append({"error_name": reply.error_name, "signature": reply.signature,
                    "body": from_dbus(reply.body)})
    print(json.dumps(out))

asyncio.run(main())
"""


def raw_as(user: str | None, bus: Bus, todo: list[list[Any]]) -> list[dict[str, Any]]:
    """Raw D-Bus calls (dest, path, iface, member, params) as ``user``: error names and
    bodies exactly as the bus delivered them."""
    proc = rig.run_as(user, [str(rig.VENV_BIN / "python"), "-c", RAW, bus.address,
                             json.dumps(todo)], env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def ours(member: str, params: dict[str, Any] | None = None) -> list[Any]:
    return [BUS_NAME, OBJECT_PATH, INTERFACE, member, params or {}]


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value if v is not None]
    return value


# ---- pure: the names and the typing rule -----------------------------------------

def test_member_names_follow_the_documented_rule() -> None:
    examples = {"ping": "Ping", "pvs": "Pvs", "vgs": "Vgs", "lvs": "Lvs", "jobs": "Jobs",
                "pvcreate": "PvCreate", "vgextend": "VgExtend", "lvresize": "LvResize",
                "job_status": "JobStatus", "job_cancel": "JobCancel", "report": "Report",
                "status": "Status", "version": "Version", "pvmove": "PvMove"}
    for name, member in examples.items():
        assert member_name(name) == member
    members = [member_name(n) for n in METHODS if n != "subscribe"]
    assert len(set(members)) == len(members)


def test_typing_rule() -> None:
    cases: list[tuple[Any, str]] = [
        (True, "b"), (7, "x"), (2**63 - 1, "x"), (2**63, "t"), (0.5, "d"), ("s", "s"),
        ({}, "a{sv}"), ([], "as"), (["a", "b"], "as"), ([1, 2], "ax"), ([True], "ab"),
        ([{"a": 1}], "aa{sv}"), ([1, "a"], "av"), ([[1]], "av"), ([None, "a"], "as")]
    for value, signature in cases:
        assert signature_of(value) == signature, value
    for bad in (2**64, "a\0b", object(), b"bytes"):
        with pytest.raises(TypeError):
            signature_of(bad)
    # nulls are left out, recursively
    params = params_to_dbus({"a": None, "b": {"c": None, "d": 1}})
    assert set(params) == {"b"} and set(params["b"].value) == {"d"}


def test_client_imports_and_fails_cleanly_without_dbus_next() -> None:
    code = ("import sys; sys.modules['dbus_next'] = None\n"
            "import lvmsuper.client\n"
            "from lvmsuper.client import Client, ConnectionFailed\n"
            "try:\n"
            "    Client(transport='dbus').ping()\n"
            "except ConnectionFailed as e:\n"
            "    print(e)\n")
    proc = subprocess.run([str(rig.VENV_BIN / "python"), "-c", code], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "dbus-next" in proc.stdout


# ---- the bus interface -----------------------------------------------------------------

def test_introspection_shows_the_documented_interface(dd: rig.Daemon, bus: Bus) -> None:
    out = rig.run_as(OUT, ["busctl", f"--address={bus.address}", "introspect", BUS_NAME,
                           OBJECT_PATH])
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:4] for line in out.stdout.splitlines()[1:]}
    assert rows[INTERFACE][0] == "interface"
    expected = {member_name(n): n for n in METHODS if n != "subscribe"}
    for required in ("Ping", "Version", "Status", "Pvs", "Vgs", "Lvs", "Report", "PvCreate",
                     "VgExtend", "LvResize", "JobStatus", "Jobs"):
        assert required in expected
    for member, name in expected.items():
        result = "aa{sv}" if name in LIST_METHODS else "a{sv}"
        assert rows["." + member] == ["method", "a{sv}", result], member
    assert rows[".Changed"] == ["signal", "aa{sv}", "-"]
    assert ".Subscribe" not in rows
    for standard in ("org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer",
                     "org.freedesktop.DBus.Properties"):
        assert rows[standard][0] == "interface"
    tree = rig.run_as(OUT, ["busctl", f"--address={bus.address}", "tree", BUS_NAME])
    assert OBJECT_PATH in tree.stdout, tree.stdout + tree.stderr


def test_busctl_call_examples(dd: rig.Daemon, bus: Bus, lvm: rig.Sandbox) -> None:
    """The README's busctl examples, run as root (polkit always admits root)."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgbus", lvm.loops[0])
    base = ["busctl", f"--address={bus.address}", "call", BUS_NAME, OBJECT_PATH, INTERFACE]
    ping = rig.run_as(None, [*base, "Ping", "a{sv}", "0"])
    assert ping.stdout.strip() == "a{sv} 0", ping.stderr
    created = rig.run_as(None, [*base, "LvCreate", "a{sv}", "3", "vg", "s", "vgbus",
                                "name", "s", "data", "size", "x", str(8 * MiB)])
    assert created.returncode == 0, created.stderr
    lvs = rig.run_as(None, ["busctl", f"--address={bus.address}", "--json=short", "call",
                            BUS_NAME, OBJECT_PATH, INTERFACE, "Lvs", "a{sv}", "1",
                            "vg", "s", "vgbus"])
    reply = json.loads(lvs.stdout)
    assert reply["type"] == "aa{sv}"
    (lv,) = reply["data"][0]
    assert lv["full_name"] == {"type": "s", "data": "vgbus/data"}
    assert lv["size"] == {"type": "x", "data": 8 * MiB}
    assert lv["tags"] == {"type": "as", "data": []}
    assert "origin" not in lv  # null: left out
    assert lvm.report("lv", "lv_size", "vgbus/data")[0]["lv_size"] == str(8 * MiB)
    bad = rig.run_as(None, [*base, "LvCreate", "a{sv}", "1", "vg", "s", "vgbus"])
    assert bad.returncode != 0 and "needs the parameter 'name'" in bad.stderr


# ---- polkit decides ------------------------------------------------------------------

def test_in_group_user_queries_and_changes(dd: rig.Daemon, bus: Bus, lvm: rig.Sandbox) -> None:
    d0 = lvm.loops[0]
    code = (f"out['pvcreate'] = call(dbus, 'pvcreate', devices=[{d0!r}])\n"
            f"out['vgcreate'] = call(dbus, 'vgcreate', name='vgd', devices=[{d0!r}],\n"
            "                        tags=['owner=dbus'])\n"
            "out['lvcreate'] = call(dbus, 'lvcreate', vg='vgd', name='lv1', size=2 * 2**20 + 13)\n"
            "out['pid'] = os.getpid()\n")
    out = py(ADMIN, code, dd, bus)
    (pv,) = out["pvcreate"]["result"]
    assert pv["name"] == d0 and pv["vg"] is None  # nulls restored for typed results
    assert pv["uuid"] == lvm.report("pv", "pv_uuid", d0)[0]["pv_uuid"]
    vg = out["vgcreate"]["result"]
    assert vg["tags"] == ["owner=dbus"] and vg["uuid"] == lvm.report("vg", "vg_uuid",
                                                                       "vgd")[0]["vg_uuid"]
    lv = out["lvcreate"]["result"]
    assert lv["full_name"] == "vgd/lv1" and lv["size"] == 4 * MiB  # one whole extent
    assert lvm.report("lv", "lv_size", "vgd/lv1")[0]["lv_size"] == str(4 * MiB)
    # identity from the bus: the audit record names the calling user and process
    uid = rig.as_user(ADMIN)["user"]
    audit = [line for line in dd.log().splitlines() if "audit: lvcreate" in line]
    assert f"uid={uid} pid={out['pid']} comm=python via dbus" in audit[-1], audit
    # the admin CLI speaks D-Bus too
    cli = rig.run_as(ADMIN, [str(rig.VENV_BIN / "lvmsuperctl"), "--dbus", "lvs", "--json"],
                     env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
    assert cli.returncode == 0, cli.stderr
    assert [x["full_name"] for x in json.loads(cli.stdout)] == ["vgd/lv1"]


def test_out_of_group_user_is_refused(dd: rig.Daemon, bus: Bus, lvm: rig.Sandbox) -> None:
    before = lvm.state()
    raw = raw_as(OUT, bus, [ours("Ping"), ours("Pvs"),
                            ours("PvCreate", {"devices": [lvm.loops[1]]})])
    for reply, role in zip(raw, ("query", "query", "manage")):
        assert reply["error_name"] == PERMISSION_DENIED, reply
        assert reply["signature"] == "sa{sv}"
        message, data = reply["body"]
        assert f"needs the {role} role" in message and data == {"required": role}
    typed = calls(OUT, dd, bus, [("vgs", {}), ("subscribe", {})])
    assert [o["type"] for o in typed] == ["PermissionDenied"] * 2
    assert lvm.state() == before


def test_query_only_user_cannot_change(dd: rig.Daemon, bus: Bus, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgq", lvm.loops[0])
    lvm.lvm("lvcreate", "-n", "keep", "-L", "4m", "vgq")
    before = lvm.state()
    out = calls(QUERY, dd, bus, [
        ("pvs", {}), ("lvs", {"vg": "vgq"}),
        ("pvcreate", {"devices": [lvm.loops[1]]}),
        ("lvcreate", {"vg": "vgq", "name": "x", "size": MiB}),
        ("lvresize", {"lv": "vgq/keep", "size": 8 * MiB}),
        ("lvremove", {"lv": "vgq/keep"}), ("vgremove", {"vg": "vgq", "force": True})])
    assert [p["name"] for p in out[0]["result"]] == [lvm.loops[0]]
    assert [lv["full_name"] for lv in out[1]["result"]] == ["vgq/keep"]
    required = [o["data"].get("required") for o in out[2:]]
    assert [o.get("error") for o in out[2:]] == ["PermissionDenied"] * 5, out
    assert required == ["manage", "manage", "manage", "destroy", "destroy"]
    assert lvm.state() == before


def test_manage_user_grows_but_cannot_shrink(dd: rig.Daemon, bus: Bus,
                                             lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgm", lvm.loops[0])
    lvm.lvm("lvcreate", "-n", "data", "-L", "8m", "vgm")
    out = calls(MANAGE, dd, bus, [
        ("lvresize", {"lv": "vgm/data", "size": 12 * MiB}),
        ("lvresize", {"lv": "vgm/data", "size": 4 * MiB, "force": True}),
        ("lvremove", {"lv": "vgm/data"})])
    assert out[0]["result"]["size"] == 12 * MiB
    assert out[1]["error"] == out[2]["error"] == "PermissionDenied"
    assert out[1]["data"]["required"] == out[2]["data"]["required"] == "destroy"
    assert lvm.report("lv", "lv_size", "vgm/data")[0]["lv_size"] == str(12 * MiB)


def test_root_always_can_and_polkit_down_admits_only_root(dd: rig.Daemon, bus: Bus,
                                                          polkit: Polkitd,
                                                          lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgr", lvm.loops[0])
    polkit.stop()
    try:
        denied = calls(ADMIN, dd, bus, [("ping", {}), ("vgs", {})])
        assert [o.get("error") for o in denied] == ["PermissionDenied"] * 2
        root = calls(None, dd, bus, [("lvcreate", {"vg": "vgr", "name": "byroot",
                                                   "size": 4 * MiB})])
        assert root[0]["result"]["full_name"] == "vgr/byroot"
        warnings = [line for line in dd.log().splitlines() if "polkit cannot authorize" in line]
        assert len(warnings) == 1, warnings  # one line per outage, not one per call
    finally:
        polkit.start()
    assert calls(ADMIN, dd, bus, [("ping", {})]) == [{"result": {}}]
    assert "polkit answers again" in dd.log()


# ---- same API as the socket --------------------------------------------------------------

def test_status_counts_dbus_peers_as_clients(dd: rig.Daemon, bus: Bus) -> None:
    code = "call(dbus, 'ping')\nout['clients'] = call(sock, 'status')['result']['clients']\n"
    assert py(ADMIN, code, dd, bus)["clients"] == 2  # its bus connection and its socket
    deadline = time.monotonic() + 10
    with Client(dd.socket) as client:  # the peer left the bus: no longer counted
        while client.status()["clients"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_parity_with_the_socket(dd: rig.Daemon, bus: Bus, lvm: rig.Sandbox) -> None:
    """Changes made on one transport, read back on the other: identical objects; every
    read and a set of errors: identical answers (typed results compare with nulls)."""
    d0, d1, d2 = lvm.loops[:3]
    code = f"""
def both(method, **params):
    return [call(dbus, method, **params), call(sock, method, **params)]

pairs = out['pairs'] = []
def changed(client, method, read, **params):
    other = sock if client is dbus else dbus
    pairs.append([call(client, method, **params), call(other, *read)])
changed(dbus, 'pvcreate', ('pvs', ), devices=[{d0!r}, {d1!r}])
pairs[-1][1]['result'] = [p for p in pairs[-1][1]['result'] if p['name'] in ({d0!r}, {d1!r})]
pairs.append([call(sock, 'vgcreate', name='vgp', devices=[{d0!r}], tags=['t1']),
              call(dbus, 'vgs', names=['vgp'])])
pairs[-1][1]['result'] = pairs[-1][1]['result'][0]
pairs.append([call(dbus, 'vgextend', vg='vgp', devices=[{d1!r}]),
              call(sock, 'vgs', names=['vgp'])])
pairs[-1][1]['result'] = pairs[-1][1]['result'][0]
pairs.append([call(dbus, 'lvcreate', vg='vgp', name='a', size=8 * 2**20, tags=['x', 'y=z']),
              call(sock, 'lvs', names=['vgp/a'])])
pairs[-1][1]['result'] = pairs[-1][1]['result'][0]
pairs.append([call(sock, 'lvcreate', vg='vgp', name='b', extents='10%FREE'),
              call(dbus, 'lvs', names=['vgp/b'])])
pairs[-1][1]['result'] = pairs[-1][1]['result'][0]
pairs.append([call(dbus, 'lvresize', lv='vgp/a', size=12 * 2**20),
              call(sock, 'lvs', names=['vgp/a'])])
pairs[-1][1]['result'] = pairs[-1][1]['result'][0]
pairs.append([call(dbus, 'vgchange', vg='vgp', add_tags=['t2']),
              call(sock, 'vgs', names=['vgp'])])
pairs[-1][1]['result'] = pairs[-1][1]['result'][0]
pairs.append([call(dbus, 'lvremove', lv='vgp/b'), {{'result': {{'removed': ['vgp/b']}}}}])
job = call(dbus, 'pvcreate', devices=[{d2!r}], wait=0)
out['job'] = job
for _ in range(200):
    status = call(dbus, 'job_status', job=job['result']['job'])
    if status['result']['state'] != 'running':
        break
    time.sleep(0.02)
out['reads'] = [both('ping'), both('version'), both('pvs'), both('pvs', vg='vgp'),
                both('vgs'), both('lvs'), both('lvs', vg='vgp'), both('lvs', tags=['x']),
                both('report'), both('report', vg='vgp'), both('jobs'),
                both('job_status', job=job['result']['job'])]
out['errors'] = [both('vgs', names=['nope']), both('lvs', names=['vgp/nope']),
                 both('lvcreate', vg='nope', name='x', size=2**20),
                 both('lvcreate', vg='vgp', name='a', size=2**20),
                 both('lvcreate', vg='vgp', name='--x', size=2**20),
                 both('lvresize', lv='vgp/a', size=2**20),
                 both('vgs', colour='red'), both('job_status', job='1-999999')]
out['status'] = [call(dbus, 'status'), call(sock, 'status')]
"""
    out = py(ADMIN, code, dd, bus)
    for a, b in out["pairs"]:
        assert "result" in a and a == b, (a, b)
    assert set(out["job"]["result"]) == {"job"}  # a list method's job answer
    for a, b in out["reads"]:
        assert "result" in a and drop_nulls(a) == drop_nulls(b), (a, b)
    strict = out["reads"][2:10]  # pvs/vgs/lvs/report: typed models, nulls restored
    assert all(a == b for a, b in strict)
    assert out["reads"][-1][0]["result"]["state"] == "succeeded"
    for a, b in out["errors"]:
        assert "error" in a and a == b, (a, b)
    names = [a["error"] for a, _ in out["errors"]]
    assert names == ["NotFound", "NotFound", "NotFound", "AlreadyExists", "InvalidRequest",
                     "InvalidRequest", "InvalidRequest", "NotFound"]
    dbus_status, sock_status = (s["result"] for s in out["status"])
    assert set(dbus_status) == set(sock_status)
    assert dbus_status["transports"] == sock_status["transports"] == ["socket", "dbus"]


def test_hostile_params_are_typed_errors_over_dbus(dd: rig.Daemon, bus: Bus,
                                                   lvm: rig.Sandbox) -> None:
    """The socket's hostile-input table over D-Bus: the same InvalidRequest and field,
    nothing changed; values D-Bus cannot carry (NUL in a string, integers beyond 64 bits)
    are refused by the client, naming the field as well."""
    from test_socket import bad_params
    lvm.lvm("pvcreate", lvm.loops[0], lvm.loops[1])
    lvm.lvm("vgcreate", "vgbad", lvm.loops[0])
    lvm.lvm("lvcreate", "-n", "keep", "-L", "4m", "vgbad")
    before = lvm.state()
    with Client(transport="dbus", bus_address=bus.address, timeout=30) as client:
        for method, params, field in bad_params(lvm.loops):
            with pytest.raises(InvalidRequest) as err:
                client.call(method, **params)
            assert err.value.data.get("field") == field, (method, params, err.value)
    assert lvm.state() == before


def test_changed_signal_after_a_change(dd: rig.Daemon, bus: Bus, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgs1", lvm.loops[0])
    code = """
out['subscribe'] = call(dbus, 'subscribe')
other = Client(transport='dbus')
out['lvcreate'] = call(other, 'lvcreate', vg='vgs1', name='sig', size=4 * 2**20)
deadline = time.monotonic() + 10
while not dbus.notifications and time.monotonic() < deadline:
    time.sleep(0.01)
out['notifications'] = dbus.notifications
"""
    out = py(ADMIN, code, dd, bus)
    assert out["subscribe"] == {"result": {}}
    assert "result" in out["lvcreate"]
    (note,) = out["notifications"]
    assert note["method"] == "changed"
    assert {"type": "lv", "name": "vgs1/sig"} in note["params"]["objects"]
    assert {"type": "vg", "name": "vgs1"} in note["params"]["objects"]


def test_no_traceback_ever_reaches_the_caller(dd: rig.Daemon, bus: Bus) -> None:
    """Wrong signatures, values JSON cannot hold, unknown members, paths and properties:
    typed or standard D-Bus errors, never a Python traceback."""

    async def probe() -> list[tuple[str | None, str]]:
        from dbus_next import Message, MessageType, Variant
        from dbus_next.aio import MessageBus
        conn = await MessageBus(bus_address=bus.address).connect()
        sent = [
            Message(destination=BUS_NAME, path=OBJECT_PATH, interface=INTERFACE,
                    member="Ping", signature="s", body=["x"]),
            Message(destination=BUS_NAME, path=OBJECT_PATH, interface=INTERFACE,
                    member="Vgs", signature="", body=[]),
            Message(destination=BUS_NAME, path=OBJECT_PATH, interface=INTERFACE,
                    member="Vgs", signature="a{sv}", body=[{"names": Variant("ay", b"vg")}]),
            Message(destination=BUS_NAME, path=OBJECT_PATH, interface=INTERFACE,
                    member="Vgs", signature="a{sv}",
                    body=[{"names": Variant("a{is}", {1: "x"})}]),
            Message(destination=BUS_NAME, path=OBJECT_PATH, interface=INTERFACE,
                    member="Vgs", signature="a{sv}",
                    body=[{"select": Variant("(si)", ["x", 1])}]),
            Message(destination=BUS_NAME, path=OBJECT_PATH, interface=INTERFACE,
                    member="Subscribe", signature="a{sv}", body=[{}]),
            Message(destination=BUS_NAME, path="/org/lvmsuper/Other", interface=INTERFACE,
                    member="Ping", signature="a{sv}", body=[{}]),
            Message(destination=BUS_NAME, path=OBJECT_PATH,
                    interface="org.freedesktop.DBus.Properties", member="Get",
                    signature="ss", body=[INTERFACE, "x"]),
            Message(destination=BUS_NAME, path=OBJECT_PATH, interface=None,
                    member="Ping", signature="a{sv}", body=[{}]),
        ]
        replies = []
        for msg in sent:
            reply = await conn.call(msg)
            assert reply is not None
            text = " ".join(str(part) for part in reply.body)
            replies.append((reply.error_name if reply.message_type == MessageType.ERROR
                            else None, text))
        conn.disconnect()
        return replies

    replies = asyncio.run(probe())
    for _, text in replies:
        assert "Traceback" not in text and ".py" not in text, text
    names = [name for name, _ in replies]
    invalid = "org.lvmsuper.Error.InvalidRequest"
    assert names == [invalid, invalid, invalid, invalid, invalid,
                     "org.freedesktop.DBus.Error.UnknownMethod",
                     "org.freedesktop.DBus.Error.UnknownObject",
                     "org.freedesktop.DBus.Error.UnknownProperty", None]
    assert "takes one a{sv}" in replies[0][1]
    assert "Traceback" not in dd.log()


FAULTY_LVM = """\
#!/usr/bin/python3
# The real lvm, but a NUL smuggled into one tag of its JSON: valid JSON (the socket
# carries it), impossible in a D-Bus string (the adapter cannot encode the result).
import subprocess, sys
proc = subprocess.run([%r, *sys.argv[1:]], stdout=subprocess.PIPE)
sys.stdout.buffer.write(proc.stdout.replace(b"tagnul", b"tag\\u0000nul"))
sys.exit(proc.returncode)
"""


def test_internal_error_has_a_request_id_and_no_traceback(sandbox: rig.Sandbox, lvm: rig.Sandbox,
                                                          users: object) -> None:
    """A result the adapter cannot encode (forced with an lvm that puts a NUL into a tag)
    is org.lvmsuper.Error.Internal with a request id; the traceback is in the log only."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgnul", lvm.loops[0])
    lvm.lvm("lvcreate", "-n", "lv", "-L", "4m", "--addtag", "tagnul", "vgnul")
    faulty = sandbox.dir / "faulty-lvm"
    faulty.write_text(FAULTY_LVM % rig.LVM)
    faulty.chmod(0o755)
    own_bus = Bus()  # its own bus: the module's daemon owns the name on the other one
    d = rig.Daemon(sandbox, "faulty", lvm={"binary": str(faulty)},
                   dbus={"enabled": True, "bus": own_bus.address})
    try:
        d.start()
        own_bus.wait_for_owner(BUS_NAME)
        with Client(d.socket) as sock:
            assert sock.lvs(vg="vgnul")[0].tags == ["tag\0nul"]
        raw = raw_as(None, own_bus, [ours("Lvs", {"vg": "vgnul"}), ours("Ping")])
        assert raw[0]["error_name"] == "org.lvmsuper.Error.Internal"
        message, data = raw[0]["body"]
        assert "Traceback" not in message and ".py" not in message
        assert data["request_id"] in message
        assert raw[1] == {"error_name": None, "signature": "a{sv}", "body": [{}]}
        log = d.log()
        assert f"request id {data['request_id']}" in log and "Traceback" in log
    finally:
        d.stop()
        own_bus.stop()


def test_only_root_may_own_the_name(dd: rig.Daemon, bus: Bus) -> None:
    code = ("import asyncio, sys\n"
            "from dbus_next.aio import MessageBus\n"
            "from dbus_next import DBusError\n"
            "async def main():\n"
            "    bus = await MessageBus(bus_address=sys.argv[1]).connect()\n"
            "    try:\n"
            "        await bus.request_name('org.lvmsuper.Supervisor1')\n"
            "    except DBusError as e:\n"
            "        print(e.type)\n"
            "asyncio.run(main())\n")
    out = rig.run_as(ADMIN, [str(rig.VENV_BIN / "python"), "-c", code, bus.address])
    assert out.stdout.strip() == "org.freedesktop.DBus.Error.AccessDenied", out.stderr


def test_example_rules_and_actions_load_in_polkitd(polkit: Polkitd) -> None:
    log = polkit.log()
    assert "Error" not in log, log
    files = [p for d in ("/etc/polkit-1/rules.d", "/usr/share/polkit-1/rules.d")
             for p in Path(d).glob("*.rules")]
    assert Path(EXAMPLE_RULES) in files and Path(TEST_RULES) in files
    assert f"Finished loading, compiling and executing {len(files)} rules" in log, log
    out = subprocess.run(["pkaction", "--verbose", "--action-id", "org.lvmsuper.manage"],
                         capture_output=True, text=True,
                         env={"DBUS_SYSTEM_BUS_ADDRESS": polkit.bus.address,
                              "PATH": "/usr/bin:/bin"})
    assert "auth_admin_keep" in out.stdout and "Authentication is required" in out.stdout, \
        out.stdout + out.stderr


# ---- [dbus] enabled -------------------------------------------------------------------

def test_auto_without_a_bus_serves_the_socket(sandbox: rig.Sandbox, users: object) -> None:
    d = rig.Daemon(sandbox, "auto", dbus={"enabled": "auto",
                                          "bus": f"unix:path={sandbox.dir}/no-bus-here"})
    d.start()
    try:
        with Client(d.socket) as client:
            assert client.status()["transports"] == ["socket"]
        with pytest.raises(ConnectionFailed):
            Client(transport="dbus", bus_address=f"unix:path={sandbox.dir}/no-bus-here").ping()
    finally:
        assert d.stop() == 0
    lines = [line for line in d.log().splitlines() if "D-Bus" in line]
    assert len(lines) == 1 and "serving the socket only" in lines[0], d.log()
    assert "Traceback" not in d.log()


def test_enabled_true_without_a_bus_is_a_start_up_error(sandbox: rig.Sandbox,
                                                        users: object) -> None:
    d = rig.Daemon(sandbox, "req", dbus={"enabled": True,
                                         "bus": f"unix:path={sandbox.dir}/no-bus-here"})
    with pytest.raises(RuntimeError, match="exited with 1") as err:
        d.start()
    assert "dbus.enabled is true but cannot connect" in str(err.value)
    assert "Traceback" not in str(err.value)


def test_no_dbus_flag_and_enabled_false(sandbox: rig.Sandbox, bus: Bus, users: object) -> None:
    """--no-dbus beats `enabled = true`; `enabled = false` never touches the bus."""
    d = rig.Daemon(sandbox, "nodbus", dbus={"enabled": True, "bus": bus.address})
    log = open(d.log_path, "ab")
    d.proc = subprocess.Popen([str(rig.VENV_BIN / "lvmsuperd"), "--config", str(d.config_path),
                               "--no-dbus"], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    log.close()
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(d.socket):
            assert d.proc.poll() is None and time.monotonic() < deadline, d.log()
            time.sleep(0.02)
        with Client(d.socket, timeout=10) as client:
            assert client.status()["transports"] == ["socket"]
        assert d.proc.pid not in bus.peer_pids()
    finally:
        assert d.stop() == 0
    off = rig.Daemon(sandbox, "off", dbus={"enabled": False, "bus": bus.address}).start()
    try:
        with Client(off.socket) as client:
            assert client.status()["transports"] == ["socket"]
        assert off.proc is not None and off.proc.pid not in bus.peer_pids()
    finally:
        off.stop()
