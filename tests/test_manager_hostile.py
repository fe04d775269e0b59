"""The surface issue 12 added, against a caller who tries to misuse it: batches
(``lvs``), ``scan_devices``, the PV metadata layout. Each refusal is typed, names the
element at fault, and leaves LVM exactly as it was; ``scan_devices`` narrows what LVM
sees, never what the daemon may touch. Also every new parameter through the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

import rig
from lvmsuper.client.errors import InvalidRequest, NotFound, PermissionDenied

pytestmark = pytest.mark.system

ADMIN, MANAGE = "lvmst-admin", "lvmst-manage"
MiB = 2**20


@contextlib.contextmanager
def running(sandbox: rig.Sandbox, name: str, **sections: dict[str, Any]) -> Iterator[rig.Daemon]:
    d = rig.Daemon(sandbox, name, **sections).start()
    try:
        yield d
    finally:
        d.stop()


def two_vgs(lvm: rig.Sandbox) -> None:
    """vga (loop0) with LVs a, b, c; vgb (loop1) with LV a."""
    d0, d1 = lvm.loops[:2]
    lvm.lvm("pvcreate", d0, d1)
    lvm.lvm("vgcreate", "vga", d0)
    lvm.lvm("vgcreate", "vgb", d1)
    for lv in ("a", "b", "c"):
        lvm.lvm("lvcreate", "-n", lv, "-L", "4m", "vga")
    lvm.lvm("lvcreate", "-n", "a", "-L", "4m", "vgb")


def refused(call: Any, exc: type[Exception], field: str | None = None) -> Any:
    with pytest.raises(exc) as info:
        call()
    if field is not None:
        assert info.value.data.get("field") == field, info.value  # type: ignore[attr-defined]
    return info.value


# ---- batches ---------------------------------------------------------------------------

def test_a_batch_with_one_bad_element_changes_nothing(daemon: rig.Daemon, users: object,
                                                      lvm: rig.Sandbox) -> None:
    two_vgs(lvm)
    before = lvm.state()
    with rig.client_as(ADMIN, daemon.socket) as c:
        for lvs, field in [(["vga/a", "vga/-b"], "lvs[1]"),            # bad name
                           (["vga/a", "vga/b", "vga/a"], "lvs[2]"),    # twice
                           (["vga/a", "vgb/a"], "lvs[1]"),             # another VG
                           (["vga/a", "vga/snapshot1"], "lvs[1]"),     # reserved by LVM
                           (["vga/a", 7], "lvs[1]"),                   # not a string
                           ([f"vga/l{i}" for i in range(257)], "lvs"),  # too many
                           ([], "lvs")]:
            for method, params in [("lvchange", {"add_tags": ["x"]}), ("lvremove", {})]:
                refused(lambda: c.call(method, lvs=lvs, **params), InvalidRequest, field)
        # both lv and lvs, or neither
        refused(lambda: c.lvchange("vga/a", lvs=["vga/b"], add_tags=["x"]), InvalidRequest,
                "lvs")
        refused(lambda: c.lvremove(), InvalidRequest, "lv")
        # refresh goes alone
        refused(lambda: c.lvchange(lvs=["vga/a", "vga/b"], refresh=True, add_tags=["x"]),
                InvalidRequest, "add_tags")
        # an LV that does not exist: nothing is done to the others (LVM would tag them
        # and then fail on the missing one)
        err = refused(lambda: c.lvchange(lvs=["vga/a", "vga/nope", "vga/b"], add_tags=["x"]),
                      NotFound)
        assert err.data["object_name"] == "vga/nope"
        refused(lambda: c.lvremove(lvs=["vga/a", "vga/nope"]), NotFound)
    assert lvm.state() == before


def test_a_batch_is_one_run_one_audit_line_and_announces_every_lv(
        daemon: rig.Daemon, users: object, lvm: rig.Sandbox) -> None:
    two_vgs(lvm)
    names = ["vga/c", "vga/a", "vga/b"]
    with rig.client_as(MANAGE, daemon.socket) as c:
        c.subscribe()
        out = c.lvchange(lvs=names, add_tags=["MD_1&44&x", "PU_y"])
        assert [lv.full_name for lv in out] == names
        c.ping()
        objects = [o for n in c.notifications for o in n["params"]["objects"]]
        assert {("lv", n) for n in names} <= {(o["type"], o["name"]) for o in objects}
        # lvremove needs destroy: refused for every element, nothing removed
        refused(lambda: c.lvremove(lvs=names), PermissionDenied)
    assert {r["lv_tags"] for r in lvm.report("lv", "lv_tags", *names)} == {"MD_1&44&x,PU_y"}
    audited = [ln for ln in daemon.log().splitlines()
               if "audit: lvchange " in ln and "MD_1&44&x" in ln]
    assert len(audited) == 1 and all(f'"{n}"' in audited[0] for n in names), audited
    assert len(lvm.report("lv", "lv_name", "vga")) == 3


def test_batches_on_a_protected_vg_touch_nothing(sandbox: rig.Sandbox, users: object,
                                                 lvm: rig.Sandbox) -> None:
    two_vgs(lvm)
    d0 = lvm.loops[0]
    before = lvm.state()
    with running(sandbox, "prot", policy={"protected_vgs": ["vga"]}) as d:
        with rig.client_as(ADMIN, d.socket) as c:
            for call in (lambda: c.lvchange(lvs=["vga/a", "vga/b"], add_tags=["x"]),
                         lambda: c.lvremove(lvs=["vga/a", "vga/b"]),
                         lambda: c.lvchange(lvs=["vga/a"], refresh=True),
                         # scan_devices naming the protected VG's PV widens nothing ...
                         lambda: c.lvremove("vga/a", scan_devices=[d0]),
                         lambda: c.lvchange(lvs=["vga/a", "vga/b"], activate=False,
                                            scan_devices=[d0]),
                         # ... nor does hiding it from LVM's scan
                         lambda: c.lvremove("vga/a", scan_devices=[lvm.loops[2]]),
                         lambda: c.vgremove("vga", force=True, scan_devices=[lvm.loops[2]])):
                err = refused(call, PermissionDenied)
                assert err.data["object_name"] == "vga", err
            # the unprotected VG still works, with and without the narrowed scan
            assert c.lvchange(lvs=["vgb/a"], add_tags=["ok"], scan_devices=[lvm.loops[1]]
                              )[0].tags == ["ok"]
    after = lvm.state()
    assert after["lv"] != before["lv"]  # vgb/a got its tag ...
    assert [r for r in after["lv"] if r["lv_full_name"].startswith("vga/")] == \
        [r for r in before["lv"] if r["lv_full_name"].startswith("vga/")]  # ... vga: nothing


# ---- scan_devices ------------------------------------------------------------------------

@pytest.fixture
def links() -> Iterator[dict[str, str]]:
    """A symlink to a loop device in a root-only directory under /dev (as udev's
    /dev/disk/by-id), one in /dev/shm (world-writable) and one outside /dev."""
    root_dir = f"/dev/lvmsuper-scan-{os.getpid()}"
    os.mkdir(root_dir, 0o755)
    made = {"root": f"{root_dir}/pv0", "shm": f"/dev/shm/lvmsuper-scan-{os.getpid()}",
            "outside": f"/tmp/lvmsuper-scan-{os.getpid()}"}
    try:
        yield made
    finally:
        for path in made.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        shutil.rmtree(root_dir, ignore_errors=True)


def test_scan_devices_refusals_and_what_it_narrows(daemon: rig.Daemon, users: object,
                                                   lvm: rig.Sandbox,
                                                   links: dict[str, str]) -> None:
    two_vgs(lvm)
    d0, d1 = lvm.loops[:2]
    for link in links.values():
        os.symlink(d0, link)
    before = lvm.state()
    with rig.client_as(ADMIN, daemon.socket) as c:
        for bad, exc in [([links["shm"]], PermissionDenied),   # through a user-writable dir
                         ([links["outside"]], InvalidRequest),  # not under /dev
                         (["/dev/null"], InvalidRequest),       # a character device
                         (["/etc/passwd"], InvalidRequest),
                         (["/dev/../etc/passwd"], InvalidRequest),
                         (["/dev/nonexistent-lvmsuper"], InvalidRequest),
                         ([d0, d0], InvalidRequest), ([], InvalidRequest),
                         (d0, InvalidRequest)]:                 # not a list
            for call in (lambda: c.pvs(scan_devices=bad),
                         lambda: c.lvchange(lvs=["vga/a", "vga/b"], add_tags=["x"],
                                            scan_devices=bad),
                         lambda: c.vgck("vga", scan_devices=bad)):
                err = refused(call, exc)
                assert str(err.data.get("field", "")).startswith("scan_devices"), err
        # what LVM sees is narrowed: only the named PVs (a symlink is followed once)
        assert [pv.name for pv in c.pvs(scan_devices=[links["root"]])] == [d0]
        assert [pv.name for pv in c.pvs(scan_devices=[d1])] == [d1]
        assert {vg.name for vg in c.vgs(scan_devices=[d1])} == {"vgb"}
        assert [lv.full_name for lv in c.lvs(scan_devices=[d1])] == ["vgb/a"]
        assert sorted(lv.full_name for lv in c.lvs()) == ["vga/a", "vga/b", "vga/c", "vgb/a"]
        hidden = c.vgck("vga", scan_devices=[d1])  # vga is out of LVM's sight: it fails
        assert hidden["ok"] is False and any("vga" in e["message"] for e in hidden["log"])
        refused(lambda: c.vgck("nope"), NotFound)
        assert c.vgck("vga", scan_devices=[d0]) == {"ok": True, "log": []}
    assert lvm.state() == before


# ---- the PV metadata layout ----------------------------------------------------------------

def test_metadata_params_are_checked_before_lvm_runs(daemon: rig.Daemon, users: object,
                                                     lvm: rig.Sandbox) -> None:
    d0 = lvm.loops[0]
    with rig.client_as(ADMIN, daemon.socket) as c:
        for params, field in [({"metadata_copies": 3}, "metadata_copies"),
                              ({"metadata_copies": -1}, "metadata_copies"),
                              ({"metadata_copies": "2"}, "metadata_copies"),
                              ({"metadata_copies": True}, "metadata_copies"),
                              ({"metadata_size": 0}, "metadata_size"),
                              ({"metadata_size": "128m"}, "metadata_size"),
                              ({"metadata_ignore": "y"}, "metadata_ignore")]:
            refused(lambda: c.call("pvcreate", devices=[d0], **params), InvalidRequest, field)
        refused(lambda: c.call("vgcreate", name="v", devices=[d0], auto_activation="n"),
                InvalidRequest, "auto_activation")
    assert lvm.report("pv", "pv_name") == []


# ---- every new parameter through the CLI ------------------------------------------------

def test_the_cli_speaks_every_new_parameter(daemon: rig.Daemon, users: object,
                                            lvm: rig.Sandbox) -> None:
    d0, d1 = lvm.loops[:2]

    def ctl(*args: str, code: int = 0) -> str:
        out = rig.ctl(ADMIN, daemon.socket, *args)
        assert out.returncode == code, (args, out.stdout, out.stderr)
        return out.stdout

    def js(*args: str) -> Any:
        return json.loads(ctl(*args, "--json"))

    pvs = js("pvcreate", d0, d1, "--metadata-size", "1M", "--metadata-copies", "2",
             "--metadata-ignore", "y")
    assert [(p["mda_count"], p["mda_used_count"]) for p in pvs] == [(2, 0), (2, 0)]
    assert js("pvchange", d0, "--metadata-ignore", "n")["mda_used_count"] == 2
    vg = js("vgcreate", "vgcli", d0, d1, "--auto-activation", "n", "--tag", "MDT_A=b&44&c",
            "--scan-device", d0, "--scan-device", d1)
    assert sorted(vg["pvs"]) == sorted([d0, d1]) and vg["tags"] == ["MDT_A=b&44&c"]
    assert lvm.report("vg", "vg_autoactivation", "vgcli") == [{"vg_autoactivation": ""}]
    for name in ("x", "y", "z"):
        lv = js("lvcreate", "vgcli", name, "-L", "4M", "--wipe-signatures", "n")
        assert lv["segments"][0]["extents"] == 1
    out = js("lvchange", "vgcli/x", "vgcli/y", "--addtag", "IU_1", "--scan-device", d0)
    assert [lv["full_name"] for lv in out] == ["vgcli/x", "vgcli/y"]
    text = ctl("lvchange", "--lv", "vgcli/z", "--lv", "vgcli/y", "--addtag", "PU_2")
    assert [r[0] for r in (ln.split() for ln in text.splitlines()[1:])] == ["z", "y"]
    assert js("lvchange", "vgcli/x", "--refresh")["full_name"] == "vgcli/x"
    assert ctl("vgck", "vgcli").strip() == "ok" and js("vgck", "vgcli") == {"ok": True,
                                                                            "log": []}
    assert [p["name"] for p in js("pvs", "--scan-device", d1)] == [d1]
    assert js("lvremove", "vgcli/x", "vgcli/y", "vgcli/z") == {
        "removed": ["vgcli/x", "vgcli/y", "vgcli/z"]}
    assert lvm.report("lv", "lv_name", "vgcli") == []
    # a refusal names the element, exit code 1
    out = rig.ctl(ADMIN, daemon.socket, "lvremove", "vgcli/a", "vgx/b")
    assert out.returncode == 1 and "lvs[1]" in out.stderr, (out.stdout, out.stderr)
    out = rig.ctl(ADMIN, daemon.socket, "pvs", "--scan-device", "/dev/null")
    assert out.returncode == 1 and "scan_devices[0]" in out.stderr
