"""D-Bus transport against a private system-like dbus-daemon, a real polkitd and real
unprivileged users: same API as the socket, every call authorized by polkit, no
tracebacks on the bus, and the `[dbus] enabled` modes.

The polkit files this needs under /usr/share/polkit-1 and /etc/polkit-1 are installed
by the `polkit` fixture and restored byte for byte afterwards, also when a test fails.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shlex
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
from lvmsuper.supervisor.core.methods import METHODS

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
    assert rows[".Subscribe"] == ["method", "a{sv}", "a{sv}"]  # "I listen": the position
    for standard in ("org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer",
                     "org.freedesktop.DBus.Properties"):
        assert rows[standard][0] == "interface"
    tree = rig.run_as(OUT, ["busctl", f"--address={bus.address}", "tree", BUS_NAME])
    assert OBJECT_PATH in tree.stdout, tree.stdout + tree.stderr


def readme_busctl_examples() -> list[list[str]]:
    """The busctl lines of the README's D-Bus section, as argv lists, in their order."""
    text = (rig.REPO / "README.md").read_text()
    section = text[text.index("\n## D-Bus\n"):]
    section = section[:section.index("\n## ", 1)]
    return [shlex.split(line) for line in section.splitlines() if line.startswith("busctl ")]


def test_busctl_call_examples(dd: rig.Daemon, bus: Bus, lvm: rig.Sandbox) -> None:
    """The README's busctl examples, exactly as written there and in that order (its
    `vg0` is a test VG), run as root (polkit always admits root)."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgbus", lvm.loops[0])
    examples = readme_busctl_examples()
    run: dict[str, subprocess.CompletedProcess[str]] = {}
    for argv in examples:
        # busctl [--json=short] introspect|call NAME PATH [INTERFACE MEMBER SIGNATURE ...]
        at = argv.index(OBJECT_PATH)
        assert argv[at - 1] == BUS_NAME, argv
        member = "introspect" if argv[at - 2] == "introspect" else argv[at + 2]
        assert member == "introspect" or argv[at + 1] == INTERFACE, argv
        argv = [argv[0], f"--address={bus.address}",
                *("vgbus" if a == "vg0" else a.replace("vg0/", "vgbus/") for a in argv[1:])]
        run[member] = out = rig.run_as(None, argv)
        assert out.returncode == 0, (argv, out.stderr)
    assert list(run) == ["introspect", "Ping", "LvCreate", "Lvs", "LvResize"]
    assert f"{INTERFACE}" in run["introspect"].stdout
    assert run["Ping"].stdout.strip() == "a{sv} 0"
    assert run["LvCreate"].stdout.startswith("a{sv} ")
    reply = json.loads(run["Lvs"].stdout)
    assert reply["type"] == "aa{sv}"
    (lv,) = reply["data"][0]
    assert lv["full_name"] == {"type": "s", "data": "vgbus/data"}
    assert lv["size"] == {"type": "x", "data": 8 * MiB}
    assert lv["tags"] == {"type": "as", "data": []}
    assert "origin" not in lv  # null: left out
    # LvResize with force b true shrank it to 4 MiB, as LVM itself reports
    assert run["LvResize"].stdout.startswith("a{sv} ")
    assert '"size" x 4194304' in run["LvResize"].stdout, run["LvResize"].stdout
    assert lvm.report("lv", "lv_size", "vgbus/data")[0]["lv_size"] == str(4 * MiB)
    base = ["busctl", f"--address={bus.address}", "call", BUS_NAME, OBJECT_PATH, INTERFACE]
    bad = rig.run_as(None, [*base, "LvCreate", "a{sv}", "1", "vg", "s", "vgbus"])
    assert bad.returncode != 0 and "needs the parameter 'name'" in bad.stderr
    # and without force, shrinking is refused with the typed error
    refused = rig.run_as(None, [*base, "LvResize", "a{sv}", "2", "lv", "s", "vgbus/data",
                                "size", "x", str(MiB)])
    assert refused.returncode != 0 and "pass force=true" in refused.stderr, refused.stderr


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


# Runs as one user process after PRELUDE: `dbus` and `sock` are clients of the two
# transports, d0..d3 the sandbox's devices.
PARITY = """
used = set()
def on(client, method, **params):
    used.add(method)
    return call(client, method, **params)

def both(method, **params):
    return [on(dbus, method, **params), on(sock, method, **params)]

def one(answer):  # a read of one object, as a change returns it
    if isinstance(answer.get('result'), list) and len(answer['result']) == 1:
        answer['result'] = answer['result'][0]
    return answer

pairs = out['pairs'] = []
def changed(client, method, params, read, read_params, single=True):
    # a change over ``client``, next to a fresh read over the other transport
    other = sock if client is dbus else dbus
    answer = on(client, method, **params)
    again = on(other, read, **read_params)
    pairs.append([method, answer, one(again) if single else again])

twins = out['twins'] = []
def twin(method, over_dbus, over_sock, same):
    # the same change to two equal objects, one per transport: equal answers once the
    # socket's object names are replaced by the D-Bus one's (``same``: sock -> dbus)
    twins.append([method, on(dbus, method, **over_dbus), on(sock, method, **over_sock), same])

def finished(client, job):
    for _ in range(500):
        status = on(client, 'job_status', job=job)
        if status.get('result', {}).get('state') != 'running':
            return status
        time.sleep(0.02)
    return status

changed(dbus, 'pvcreate', dict(devices=[d0, d1]), 'pvs', dict(names=[d0, d1]), single=False)
changed(sock, 'vgcreate', dict(name='vgp', devices=[d0], tags=['t1']), 'vgs', dict(names=['vgp']))
changed(dbus, 'vgextend', dict(vg='vgp', devices=[d1]), 'vgs', dict(names=['vgp']))
changed(dbus, 'lvcreate', dict(vg='vgp', name='a', size=8 * 2**20, tags=['x', 'y=z']),
        'lvs', dict(names=['vgp/a']))
changed(sock, 'lvcreate', dict(vg='vgp', name='b', extents='10%FREE'), 'lvs', dict(names=['vgp/b']))
changed(dbus, 'lvcreate', dict(vg='vgp', name='c', size=4 * 2**20), 'lvs', dict(names=['vgp/c']))
changed(dbus, 'lvresize', dict(lv='vgp/a', size=12 * 2**20), 'lvs', dict(names=['vgp/a']))
changed(dbus, 'vgchange', dict(vg='vgp', add_tags=['t2']), 'vgs', dict(names=['vgp']))
changed(sock, 'vgchange', dict(vg='vgp', del_tags=['t1']), 'vgs', dict(names=['vgp']))
changed(dbus, 'lvchange', dict(lv='vgp/a', add_tags=['l1'], del_tags=['x']),
        'lvs', dict(names=['vgp/a']))
changed(sock, 'lvchange', dict(lv='vgp/a', permission='r'), 'lvs', dict(names=['vgp/a']))
changed(dbus, 'lvchange', dict(lv='vgp/a', permission='rw'), 'lvs', dict(names=['vgp/a']))
# a batch (one LVM run): its answer {"lvs": [...]} against a read on the other transport
batch = on(dbus, 'lvchange', lvs=['vgp/a', 'vgp/c'], add_tags=['IU_1&44&', 'MD_2'])
pairs.append(['lvchange', {'result': batch.get('result')},
              on(sock, 'lvs', names=['vgp/a', 'vgp/c'])])
batch = on(sock, 'lvchange', lvs=['vgp/a', 'vgp/c'], del_tags=['IU_1&44&', 'MD_2'])
pairs.append(['lvchange', {'result': batch.get('result')},
              on(dbus, 'lvs', names=['vgp/a', 'vgp/c'])])
changed(dbus, 'lvrename', dict(lv='vgp/a', new_name='a2'), 'lvs', dict(names=['vgp/a2']))
changed(sock, 'lvrename', dict(lv='vgp/a2', new_name='a'), 'lvs', dict(names=['vgp/a']))
changed(dbus, 'vgrename', dict(vg='vgp', new_name='vgx'), 'vgs', dict(names=['vgx']))
changed(sock, 'vgrename', dict(vg='vgx', new_name='vgp'), 'vgs', dict(names=['vgp']))
changed(dbus, 'pvchange', dict(device=d1, allocatable=False, add_tags=['p1']),
        'pvs', dict(names=[d1]))
changed(sock, 'pvchange', dict(device=d1, allocatable=True, del_tags=['p1']),
        'pvs', dict(names=[d1]))
job = on(dbus, 'pvcreate', devices=[d2], wait=0)
out['job'] = job
out['job_done'] = finished(dbus, job['result']['job'])
changed(dbus, 'pvresize', dict(device=d2, size=32 * 2**20), 'pvs', dict(names=[d2]))
changed(sock, 'pvresize', dict(device=d2), 'pvs', dict(names=[d2]))
changed(sock, 'vgextend', dict(vg='vgp', devices=[d2]), 'vgs', dict(names=['vgp']))
changed(dbus, 'vgreduce', dict(vg='vgp', devices=[d2]), 'vgs', dict(names=['vgp']))
# activation: what LVM answers here (no device-mapper: active unknown), or the real thing
changed(dbus, 'vgchange', dict(vg='vgp', activate=False), 'vgs', dict(names=['vgp']))
changed(sock, 'lvchange', dict(lv='vgp/c', activate=False), 'lvs', dict(names=['vgp/c']))
# removals: twins, one per transport
twin('lvremove', dict(lv='vgp/b'), dict(lv='vgp/c'), {'vgp/c': 'vgp/b'})
on(dbus, 'pvcreate', devices=[d3])
on(dbus, 'vgcreate', name='vgr1', devices=[d2])
on(sock, 'vgcreate', name='vgr2', devices=[d3])
twin('vgremove', dict(vg='vgr1'), dict(vg='vgr2'), {'vgr2': 'vgr1'})
twin('pvremove', dict(devices=[d2]), dict(devices=[d3]), {d3: d2})
out['reads'] = [both('ping'), both('version'), both('pvs'), both('pvs', vg='vgp'),
                both('vgs'), both('lvs'), both('lvs', vg='vgp'), both('lvs', tags=['y=z']),
                both('report'), both('report', vg='vgp'), both('vgck', vg='vgp'),
                both('pvs', scan_devices=[d0, d1]), both('jobs'),
                # shared VGs: none here (no lvmlockd): nothing started or stopped
                both('lockstart'), both('lockstop'),
                both('job_status', job=job['result']['job'])]
out['errors'] = [both('vgs', names=['nope']), both('lvs', names=['vgp/nope']),
                 both('lvcreate', vg='nope', name='x', size=2**20),
                 both('lvcreate', vg='vgp', name='a', size=2**20),
                 both('lvcreate', vg='vgp', name='--x', size=2**20),
                 both('lvresize', lv='vgp/a', size=2**20),
                 both('vgs', colour='red'), both('job_status', job='1-999999'),
                 both('job_cancel', job='1-999999'),
                 both('pvremove', devices=[d0]), both('vgremove', vg='vgp'),
                 both('vgreduce', vg='vgp', devices=[d3]),
                 both('lvrename', lv='vgp/nope', new_name='z'),
                 both('lv_open', lv='vgp/nope', mode='r'), both('lv_open', lv='vgp/a', mode='w'),
                 both('vgrename', vg='nope', new_name='vgz'),
                 both('pvresize', device=d3), both('pvchange', device=d3, add_tags=['q']),
                 both('lvchange', lvs=['vgp/a', 'vgq/a'], activate=False),
                 both('lvs', scan_devices=['/etc/passwd']), both('vgck', vg='nope'),
                 both('lockstart', vg='vgp'), both('lockstop', vg='nope')]
# what needs device-mapper: on a kernel without it, LVM's own typed failure from both;
# with it, created on one transport and read back on the other
if has_dm:
    changed(dbus, 'lvcreate', dict(vg='vgp', name='pool', size=8 * 2**20, type='thin-pool'),
            'lvs', dict(names=['vgp/pool']))
    changed(sock, 'lvcreate', dict(vg='vgp', name='thin', virtual_size=8 * 2**20, type='thin',
                                   pool='pool'), 'lvs', dict(names=['vgp/thin']))
    changed(dbus, 'lvcreate', dict(vg='vgp', name='snap', size=4 * 2**20, type='snapshot',
                                   origin='a'), 'lvs', dict(names=['vgp/snap']))
    out['dm'] = []
else:
    out['dm'] = [both('lvcreate', vg='vgp', name='pool', size=8 * 2**20, type='thin-pool'),
                 both('lvcreate', vg='vgp', name='snap', size=4 * 2**20, type='snapshot',
                      origin='a'),
                 both('lvcreate', vg='vgp', name='thin', virtual_size=8 * 2**20, type='thin',
                      pool='nopool')]
# pvmove (always a job): its outcome read on both transports; without device-mapper
# (nothing moves) the same move again over the socket ends the same way
move = on(dbus, 'pvmove', source=d0)
out['pvmove'] = [move, finished(dbus, move['result']['job'])]
out['pvmove'].append(on(sock, 'job_status', job=move['result']['job']))
out['cancel'] = both('job_cancel', job=move['result']['job'])
if not has_dm:
    again = on(sock, 'pvmove', source=d0)
    out['pvmove_again'] = [again, finished(sock, again['result']['job'])]
out['status'] = [on(dbus, 'status'), on(sock, 'status')]
out['used'] = sorted(used)
"""


def replaced(value: Any, same: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: replaced(v, same) for k, v in value.items()}
    if isinstance(value, list):
        return [replaced(v, same) for v in value]
    return same.get(value, value) if isinstance(value, str) else value


def without_job_identity(status: dict[str, Any]) -> dict[str, Any]:
    """A job_status answer without what differs between two runs of one job."""
    result = dict(status["result"])
    for key in ("id", "started", "finished"):
        result.pop(key)
    return result


def test_parity_with_the_socket(dd: rig.Daemon, bus: Bus, lvm: rig.Sandbox) -> None:
    """Every method of the table (but `subscribe`, which D-Bus has as the `Changed`
    signal) over both transports: a change on one, read back on the other, gives
    identical objects; removals of twin objects, one per transport, answer alike; reads
    and errors are identical (typed results compare with nulls); what needs
    device-mapper gives the same answer on both."""
    d0, d1, d2, d3 = lvm.loops[:4]
    has_dm = rig.has_device_mapper()
    out = py(ADMIN, f"d0, d1, d2, d3 = {[d0, d1, d2, d3]!r}\nhas_dm = {has_dm!r}\n" + PARITY,
             dd, bus)
    assert set(out["used"]) == set(METHODS) - {"subscribe"}
    for method, a, b in out["pairs"]:
        assert "result" in a and a == b, (method, a, b)
    assert set(out["job"]["result"]) == {"job"}  # a list method's job answer
    assert out["job_done"]["result"]["state"] == "succeeded", out["job_done"]
    for method, a, b, same in out["twins"]:
        assert "result" in a and a == replaced(b, same), (method, a, b)
    assert [a["result"]["removed"] for _, a, _, _ in out["twins"]] == [
        ["vgp/b"], ["vgr1"], [d2]]
    for a, b in out["reads"]:
        assert "result" in a and drop_nulls(a) == drop_nulls(b), (a, b)
    strict = out["reads"][2:10]  # pvs/vgs/lvs/report: typed models, nulls restored
    assert all(a == b for a, b in strict)
    assert out["reads"][-1][0]["result"]["state"] == "succeeded"
    for a, b in out["errors"]:
        assert "error" in a and a == b, (a, b)
    names = [a["error"] for a, _ in out["errors"]]
    assert names[:8] == ["NotFound", "NotFound", "NotFound", "AlreadyExists",
                         "InvalidRequest", "InvalidRequest", "InvalidRequest", "NotFound"]
    assert names[-5:] == ["InvalidRequest", "InvalidRequest", "NotFound",
                          "InvalidRequest", "NotFound"]  # ..., lockstart/lockstop
    assert out["errors"][-5][0]["data"]["field"] == "lvs[1]"
    assert out["errors"][-2][0]["data"]["field"] == "vg"  # vgp is not shared
    for a, b in out["dm"]:
        assert a == b, (a, b)
    if not has_dm:
        assert [a.get("error") for a, _ in out["dm"]] == ["LvmFailed", "LvmFailed",
                                                          "NotFound"], out["dm"]
    move, done, read_back = out["pvmove"]
    assert set(move["result"]) == {"job"}, move
    assert done["result"]["state"] != "running" and done == read_back, (done, read_back)
    a, b = out["cancel"]
    assert drop_nulls(a) == drop_nulls(b), (a, b)  # a finished job: no cancel, same answer
    if not has_dm:
        again, done_again = out["pvmove_again"]
        assert set(again["result"]) == {"job"}, again
        assert without_job_identity(done) == without_job_identity(done_again), \
            (done, done_again)
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
def ours():
    return [n for n in dbus.notifications if n['params'].get('source') == 'lvmsuper']
while not ours() and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.5)  # a second one, if there were one, would be here by now
out['notifications'] = dbus.notifications
"""
    out = py(ADMIN, code, dd, bus)
    assert set(out["subscribe"]["result"]) == {"boot", "seq"}
    assert "result" in out["lvcreate"]
    # the test's own setup (LVM run by hand) may be told too, as external changes
    (note,) = [n for n in out["notifications"] if n["params"].get("source") == "lvmsuper"]
    assert note["method"] == "changed"
    assert isinstance(note["params"]["seq"], int) and note["params"]["boot"]
    assert {"type": "lv", "name": "vgs1/sig"} in rig.named(note["params"]["objects"])
    assert {"type": "vg", "name": "vgs1"} in rig.named(note["params"]["objects"])


FORGE = """
import asyncio
from dbus_next.aio import MessageBus
from dbus_next import Message, MessageType
from lvmsuper.client.dbus import to_dbus

out['subscribe'] = call(dbus, 'subscribe')
me = dbus._dbus._conn._bus.unique_name

async def forge():
    bus = await MessageBus(bus_address=os.environ['DBUS_SYSTEM_BUS_ADDRESS']).connect()
    objects = [to_dbus({'type': 'vg', 'name': 'forged'})]
    for dest in (me, None):  # straight to the subscriber (past match rules), and broadcast
        await bus.send(Message(message_type=MessageType.SIGNAL, destination=dest,
                               path='/org/lvmsuper/Supervisor1',
                               interface='org.lvmsuper.Supervisor1', member='Changed',
                               signature='aa{sv}', body=[objects]))
    # A round trip to the bus after them: the bus has queued the forged signals for
    # the subscriber, so they reach it before anything sent to it from now on.
    reply = await bus.call(Message(destination='org.freedesktop.DBus',
                                   path='/org/freedesktop/DBus',
                                   interface='org.freedesktop.DBus', member='GetId'))
    out['round_trip'] = reply.message_type.name
    bus.disconnect()

asyncio.run(forge())
other = Client(transport='dbus')
out['lvcreate'] = call(other, 'lvcreate', vg='vgf', name='real', size=4 * 2**20)
real = {'type': 'lv', 'name': 'vgf/real'}
deadline = time.monotonic() + 10
def named(objects):
    return [{'type': o['type'], 'name': o['name']} for o in objects]
while (not any(real in named(n['params']['objects']) for n in dbus.notifications)
       and time.monotonic() < deadline):
    time.sleep(0.01)
out['notifications'] = dbus.notifications
"""


def test_forged_changed_signals_are_not_delivered(dd: rig.Daemon, bus: Bus,
                                                  lvm: rig.Sandbox) -> None:
    """Another connection sends `Changed` with our path and interface, to the
    subscriber directly and as a broadcast: the client drops it; the daemon's own
    `Changed` (sent by the name's owner) is delivered."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgf", lvm.loops[0])
    out = py(ADMIN, FORGE, dd, bus)
    assert set(out["subscribe"]["result"]) == {"boot", "seq"}
    assert out["round_trip"] == "METHOD_RETURN"
    assert "result" in out["lvcreate"]
    # The forged signals reached the subscriber's connection before the real one.
    # (the test's own setup, LVM run by hand, may be told as well: as external)
    notes = out["notifications"]
    assert not any({"type": "vg", "name": "forged"} in rig.named(n["params"]["objects"])
                   for n in notes)
    (note,) = [n for n in notes if n["params"].get("source") == "lvmsuper"]
    assert {"type": "lv", "name": "vgf/real"} in rig.named(note["params"]["objects"])


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
                     None,  # Subscribe: the stream's position (it once was no member)
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


# What polkit/org.lvmsuper.policy must say (DESIGN.md, "Authorization and policy"):
# implicit authorizations for any, inactive and active sessions.
ACTION_DEFAULTS = {
    "org.lvmsuper.query": ("auth_admin", "auth_admin", "yes"),
    "org.lvmsuper.manage": ("auth_admin_keep", "auth_admin_keep", "auth_admin_keep"),
    "org.lvmsuper.destroy": ("auth_admin_keep", "auth_admin_keep", "auth_admin_keep"),
    "org.lvmsuper.open": ("auth_admin_keep", "auth_admin_keep", "auth_admin_keep"),
}


def test_example_rules_and_actions_load_in_polkitd(polkit: Polkitd) -> None:
    log = polkit.log()
    assert "Error" not in log, log
    files = [p for d in ("/etc/polkit-1/rules.d", "/usr/share/polkit-1/rules.d")
             for p in Path(d).glob("*.rules")]
    assert Path(EXAMPLE_RULES) in files and Path(TEST_RULES) in files
    assert f"Finished loading, compiling and executing {len(files)} rules" in log, log


def test_pkaction_shows_the_documented_defaults(polkit: Polkitd) -> None:
    """The actions as polkitd itself reads them back (`pkaction --verbose`)."""
    for action, (any_, inactive, active) in ACTION_DEFAULTS.items():
        out = subprocess.run(["pkaction", "--verbose", "--action-id", action],
                             capture_output=True, text=True, timeout=30,
                             env={"DBUS_SYSTEM_BUS_ADDRESS": polkit.bus.address,
                                  "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
        assert out.returncode == 0, out.stderr
        fields = {key.strip(): value.strip() for key, _, value in
                  (line.partition(":") for line in out.stdout.splitlines()[1:])}
        assert out.stdout.splitlines()[0] == f"{action}:", out.stdout
        assert (fields["implicit any"], fields["implicit inactive"],
                fields["implicit active"]) == (any_, inactive, active), out.stdout
        assert fields["vendor"] == "lvmsuper", out.stdout
        assert fields["description"] and fields["message"].startswith(
            "Authentication is required"), out.stdout


EXAMPLE_GROUP = "lvmsuper"  # the group polkit/50-lvmsuper.rules names
EXAMPLE_USER = "lvmst-example"


@pytest.fixture
def example_member(users: object) -> Iterator[str]:
    """A throwaway user whose only extra group is `lvmsuper` (made here, also as a
    throwaway, unless the host has it); /etc/passwd, group, shadow and gshadow are
    restored byte for byte afterwards."""
    with rig.etc_restored(*rig.ETC_FILES):
        try:
            grp.getgrnam(EXAMPLE_GROUP)
        except KeyError:
            subprocess.run(["groupadd", "--system", EXAMPLE_GROUP], check=True)
        try:
            pwd.getpwnam(EXAMPLE_USER)  # left over from a killed run
            subprocess.run(["usermod", "--append", "--groups", EXAMPLE_GROUP, EXAMPLE_USER],
                           check=True)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh",
                            "--groups", EXAMPLE_GROUP, EXAMPLE_USER], check=True)
        yield EXAMPLE_USER


def pkcheck_as(user: str, action: str, bus: Bus) -> subprocess.CompletedProcess[str]:
    """polkitd's own answer for ``action`` with the calling process (``user``) as subject."""
    return rig.run_as(user, ["sh", "-c", f'exec pkcheck --action-id {action} --process "$$"'],
                      env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})


def test_shipped_example_rules_grant_the_lvmsuper_group(dd: rig.Daemon, bus: Bus,
                                                        polkit: Polkitd, lvm: rig.Sandbox,
                                                        example_member: str) -> None:
    """polkit/50-lvmsuper.rules, installed unchanged, is what lets a member of `lvmsuper`
    in (the member is in none of the test rules' groups, and every action's default
    refuses a caller without an active session); a non-member stays refused."""
    test_groups = {rig.GROUP_ALL, rig.GROUP_QUERY, rig.GROUP_MANAGE}
    member_gids = os.getgrouplist(example_member, pwd.getpwnam(example_member).pw_gid)
    assert grp.getgrnam(EXAMPLE_GROUP).gr_gid in member_gids
    assert not {grp.getgrnam(g).gr_gid for g in test_groups} & set(member_gids)
    assert Path(EXAMPLE_RULES).read_bytes() == (rig.REPO / "polkit/50-lvmsuper.rules").read_bytes()
    for action in ACTION_DEFAULTS:
        member = pkcheck_as(example_member, action, bus)
        assert member.returncode == 0, (action, member.stdout + member.stderr)
        outsider = pkcheck_as(OUT, action, bus)
        assert outsider.returncode != 0, (action, outsider.stdout + outsider.stderr)
    d0 = lvm.loops[0]
    # through lvmsuperd: one method of each role
    granted = calls(example_member, dd, bus, [("vgs", {}), ("pvcreate", {"devices": [d0]}),
                                              ("pvremove", {"devices": [d0]})])
    assert [list(o) for o in granted] == [["result"]] * 3, granted
    assert granted[2]["result"] == {"removed": [d0]}
    refused = calls(OUT, dd, bus, [("vgs", {}), ("pvcreate", {"devices": [d0]})])
    assert [o.get("error") for o in refused] == ["PermissionDenied"] * 2, refused
    assert lvm.report("pv", "pv_name") == []


SCOPED_GROUP, SCOPED_USER = "lvmst-vdsm", "lvmst-scoped"
SCOPED_RULES = "/etc/polkit-1/rules.d/61-lvmsuper-scoped-test.rules"
DETAILS_RULES = "/etc/polkit-1/rules.d/05-lvmsuper-details-test.rules"
# logs every lvmsuper check's details (and decides nothing)
DETAILS_LOGGER = """\
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.lvmsuper.") == 0)
        polkit.log("lvmsuper-details " + action.id + " method=" + action.lookup("method") +
                   " vg=" + action.lookup("vg") + " lv=" + action.lookup("lv") +
                   " devices=" + action.lookup("devices"));
    return polkit.Result.NOT_HANDLED;
});
"""


@pytest.fixture
def scoped_member(users: object) -> Iterator[str]:
    """A throwaway user in a throwaway group (and in no group the other rules name);
    /etc/passwd, group, shadow and gshadow are restored byte for byte afterwards."""
    with rig.etc_restored(*rig.ETC_FILES):
        try:
            grp.getgrnam(SCOPED_GROUP)
        except KeyError:
            subprocess.run(["groupadd", "--system", SCOPED_GROUP], check=True)
        try:
            pwd.getpwnam(SCOPED_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh",
                            "--groups", SCOPED_GROUP, SCOPED_USER], check=True)
        yield SCOPED_USER


def _rules_loaded(polkit: Polkitd, before: int) -> None:
    """polkitd reloaded its rules (it watches the directory) since ``before`` reloads,
    with every file now there."""
    files = [p for d in ("/etc/polkit-1/rules.d", "/usr/share/polkit-1/rules.d")
             for p in Path(d).glob("*.rules")]
    want = f"Finished loading, compiling and executing {len(files)} rules"
    deadline = time.monotonic() + 20
    while not (polkit.log().count("Finished loading") > before and
               polkit.log().rstrip().splitlines()[-1].endswith(want)):
        assert time.monotonic() < deadline, polkit.log()[-2000:]
        time.sleep(0.1)


def test_polkit_rules_scope_a_group_to_vgs_by_name(dd: rig.Daemon, bus: Bus, polkit: Polkitd,
                                                   lvm: rig.Sandbox,
                                                   scoped_member: str) -> None:
    """The shipped polkit/60-lvmsuper-scoped.rules (its group made a test group), in a
    real polkitd: its member may act on VGs whose names start with "sd-" and is refused
    (PermissionDenied) on another VG, also where only the plan names it (a rename out
    of the prefix); every check carries the details method, vg, lv and devices."""
    l0, l1, l2, _ = lvm.loops
    lvm.lvm("pvcreate", l0, l1)
    lvm.lvm("vgcreate", "sd-a", l0)
    lvm.lvm("vgcreate", "other", l1)
    shipped = (rig.REPO / "polkit/60-lvmsuper-scoped.rules").read_text()
    assert 'subject.isInGroup("vdsm")' in shipped and 'vg.indexOf("sd-") == 0' in shipped
    with rig.etc_restored(SCOPED_RULES, DETAILS_RULES):
        reloads = polkit.log().count("Finished loading")
        Path(SCOPED_RULES).write_text(shipped.replace('"vdsm"', f'"{SCOPED_GROUP}"'))
        Path(DETAILS_RULES).write_text(DETAILS_LOGGER)
        for path in (SCOPED_RULES, DETAILS_RULES):
            os.chmod(path, 0o644)
        _rules_loaded(polkit, reloads)
        logged = len(polkit.log())
        out = calls(scoped_member, dd, bus, [
            ("lvcreate", {"vg": "sd-a", "name": "mine", "size": 4 * MiB}),   # 0: allowed
            ("lvs", {"vg": "sd-a"}),                                        # 1: allowed
            ("vgextend", {"vg": "sd-a", "devices": [l2]}),                  # 2: allowed
            ("lvcreate", {"vg": "other", "name": "x", "size": 4 * MiB}),    # 3: refused
            ("lvs", {"vg": "other"}),                                       # 4: refused
            ("vgrename", {"vg": "sd-a", "new_name": "escaped"}),            # 5: refused
            ("vgchange", {"vg": "other", "add_tags": ["x"]}),               # 6: refused
            ("vgs", {}),                                                    # 7: refused
        ])
        details = polkit.log()[logged:]
        reloads = polkit.log().count("Finished loading")
    _rules_loaded(polkit, reloads)  # the test's rules gone again
    assert [list(o) for o in out[:3]] == [["result"]] * 3, out
    assert out[0]["result"]["full_name"] == "sd-a/mine"
    assert [o.get("error") for o in out[3:]] == ["PermissionDenied"] * 5, out
    assert out[5]["data"].get("object_name") == "escaped", out[5]
    assert lvm.report("vg", "vg_name", "sd-a")  # not renamed
    assert sorted(r["lv_full_name"] for r in lvm.report("lv", "lv_full_name")) == ["sd-a/mine"]
    assert lvm.report("vg", "vg_tags", "other") == [{"vg_tags": ""}]
    lines = [ln.split("lvmsuper-details ", 1)[1] for ln in details.splitlines()
             if "lvmsuper-details " in ln]
    for want in ["org.lvmsuper.manage method=lvcreate vg=sd-a lv=sd-a/mine devices=",
                 "org.lvmsuper.query method=lvs vg=sd-a lv= devices=",
                 f"org.lvmsuper.manage method=vgextend vg=sd-a lv= devices={l2}",
                 "org.lvmsuper.manage method=lvcreate vg=other lv=other/x devices=",
                 "org.lvmsuper.manage method=vgrename vg=sd-a lv= devices=",
                 "org.lvmsuper.manage method=vgrename vg=escaped lv= devices=",
                 "org.lvmsuper.query method=vgs vg= lv= devices="]:
        assert want in lines, (want, lines)


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
