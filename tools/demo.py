"""`make demo`: lvmsuper end to end on a throwaway loop-device sandbox.

Builds sparse files on loop devices with an lvm.conf that sees only them, starts
lvmsuperd on them, and as an unprivileged user in the `lvmsuper` group walks through
pvs -> pvcreate -> vgcreate -> lvcreate -> lvs -> lvresize -> status -> lvremove ->
vgremove -> pvremove, printing what the user sees. Then it tears everything down,
including the user and group if it created them. The host's own disks are never seen.

Then a manager's flow on a scoped daemon (README "Running a manager on lvmsuper"): the
user's group may only touch VGs named ``sd-*``; it creates such a VG, an LV, activates
it, writes data through a descriptor ``lv_open`` passed it (no root, no chown), reads it
back, deactivates and removes it. Activating needs device-mapper: on a host whose kernel
has none (as in some VMs and containers), that part runs in a throwaway guest kernel
(``tools/dm-guest``), or with ``--no-guest`` stops at the typed refusal of the open.
``--manager-only`` runs only that flow (what the guest runs).
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import rig  # noqa: E402  (the same sandbox and daemon launcher the tests use)

GROUP, USER = "lvmsuper", "lvmsuper-demo"


def say(text: str) -> None:
    print(f"\n\033[1m# {text}\033[0m", flush=True)


def ctl(socket: str, *args: str, refused: bool = False) -> None:
    """One lvmsuperctl command as the demo user; ``refused``: it must fail (typed)."""
    print(f"{USER}$ lvmsuperctl {' '.join(args)}", flush=True)
    proc = rig.run_as(USER, [str(rig.VENV_BIN / "lvmsuperctl"), *args],
                      env={"LVMSUPER_SOCKET": socket})
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    if refused:
        print(f"(exit {proc.returncode})")
    if (proc.returncode != 0) != refused:
        raise SystemExit(f"demo step failed (exit {proc.returncode})")


def show_audit(daemon: rig.Daemon) -> None:
    say("the audit trail (daemon log)")
    print("".join(line + "\n" for line in daemon.log().splitlines() if "audit:" in line),
          end="")


def ensure_identity() -> list[list[str]]:
    """The group and user the demo needs; returns the commands that undo what it made."""
    undo: list[list[str]] = []
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", GROUP], check=True)
        undo.append(["groupdel", GROUP])
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh",
                        "--groups", GROUP, USER], check=True)
        undo.insert(0, ["userdel", USER])
    return undo


def main() -> int:
    parser = argparse.ArgumentParser(description="lvmsuper end to end on loop devices")
    parser.add_argument("--manager-only", action="store_true",
                        help="only the manager flow on a scoped daemon")
    parser.add_argument("--no-guest", action="store_true",
                        help="never boot a guest kernel for the manager flow")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("make demo needs root (it creates loop devices and starts a root daemon)",
              file=sys.stderr)
        return 1
    if args.manager_only:
        return manager_flow()
    walk_through()
    if rig.has_device_mapper():
        return manager_flow()
    guest = rig.REPO / "tools" / "dm-guest"
    if args.no_guest or not (rig.VENV_BIN / "vng").exists():
        say("this kernel has no device-mapper: the manager flow stops where an LV "
            "would be activated (make install-dm, then make demo, runs it in a guest)")
        return manager_flow(activate=False)
    say("this kernel has no device-mapper: the manager flow runs in a throwaway guest "
        "kernel that has it (tools/dm-guest; about a minute under emulation)")
    return subprocess.run([sys.executable, str(guest), "--timeout", "600", "--",
                           sys.executable, str(Path(__file__).resolve()),
                           "--manager-only"], check=False).returncode


def walk_through() -> None:
    say("building a throwaway sandbox: 3 sparse 256 MiB files on loop devices")
    box = rig.Sandbox(count=3, size_mib=256)
    undo: list[list[str]] = []
    daemon = None
    try:
        print("loop devices:", " ".join(box.loops))
        print(f"LVM_SYSTEM_DIR={box.system_dir} (its filter admits only these devices)")
        undo = ensure_identity()
        daemon = rig.Daemon(box, "demo",
                            server={"socket_group": GROUP, "socket_mode": "0660"},
                            access={"query": [GROUP], "manage": [GROUP], "destroy": [GROUP]})
        daemon.start(timeout=120)  # a guest kernel under emulation is slow
        print(f"lvmsuperd serving on {daemon.socket} (pid {daemon.proc.pid if daemon.proc else '?'}),"
              f" socket 0660 root:{GROUP}")
        print(f"user {USER} (uid {pwd.getpwnam(USER).pw_uid}) is in group {GROUP}; "
              "it runs every command below, no sudo anywhere")
        s = daemon.socket
        d0, d1, d2 = box.loops
        say("what LVM sees (nothing yet)")
        ctl(s, "pvs")
        say("initialise two devices as PVs")
        ctl(s, "pvcreate", d0, d1)
        say("a volume group over them, tagged")
        ctl(s, "vgcreate", "demo", d0, d1, "--tag", "site=lab")
        say("a 100 MiB logical volume (sizes are bytes on the wire; the CLI takes units)")
        ctl(s, "lvcreate", "demo", "disk1", "--size", "100M", "--tag", "vm=web01")
        ctl(s, "lvcreate", "demo", "disk2", "--extents", "10%FREE")
        ctl(s, "lvs")
        say("grow it to 300 MiB: LVM spreads it over both PVs")
        ctl(s, "lvresize", "demo/disk1", "300M")
        say("typed errors instead of parsed text")
        print(f"{USER}$ lvmsuperctl lvresize demo/disk1 50M   # shrinking needs --force")
        proc = rig.run_as(USER, [str(rig.VENV_BIN / "lvmsuperctl"), "lvresize", "demo/disk1",
                                 "50M"], env={"LVMSUPER_SOCKET": s})
        print(proc.stderr.strip(), f"(exit {proc.returncode})")
        ctl(s, "lvs", "--json", "demo/disk2")
        say("the daemon's view for admins")
        ctl(s, "status")
        say("tear down through the daemon")
        ctl(s, "lvremove", "demo/disk1")
        ctl(s, "lvremove", "demo/disk2")
        ctl(s, "vgremove", "demo")
        ctl(s, "pvremove", d0, d1)
        ctl(s, "pvs")
        show_audit(daemon)
    finally:
        if daemon is not None:
            daemon.stop()
        box.destroy()
        for argv in undo:
            subprocess.run(argv, check=False)
        say("sandbox removed: loop devices detached, files deleted"
            + (f", user {USER} and group {GROUP} removed" if undo else ""))


SCOPE = f"""
[[access.scope]]
group = "{GROUP}"
roles = ["query", "manage", "destroy", "open"]
vgs = ["sd-*"]
"""
MiB = 2**20


def manager_flow(activate: bool = True) -> int:
    """A manager's life on a scoped daemon: its own VG, an LV it opens and writes."""
    say("a manager on lvmsuper: a daemon whose group may only touch VGs named sd-*")
    box = rig.Sandbox(count=3, size_mib=256)
    undo: list[list[str]] = []
    daemon = None
    pattern = None
    try:
        undo = ensure_identity()
        daemon = rig.Daemon(box, "manager",
                            server={"socket_group": GROUP, "socket_mode": "0660"},
                            access={"query": [], "manage": [], "destroy": [], "open": []})
        with open(daemon.config_path, "a") as fh:
            fh.write(SCOPE)
        print(f"{daemon.config_path}:\n" + daemon.config_path.read_text().strip())
        daemon.start(timeout=120)  # a guest kernel under emulation is slow
        s = daemon.socket
        d0, d1, d2 = box.loops
        box.lvm("pvcreate", "-q", d2)
        box.lvm("vgcreate", "-q", "admin", d2)
        print(f"root# vgcreate admin {d2}   # the admin's own VG, outside the scope")
        say("the manager sees only its scope: no admin VG")
        ctl(s, "vgs")
        say("its VG must be named inside the scope")
        ctl(s, "pvcreate", d0, d1)
        ctl(s, "vgcreate", "other", d0, refused=True)
        ctl(s, "vgcreate", "sd-demo", d0, d1, "--tag", "RHAT_storage_domain")
        ctl(s, "lvcreate", "sd-demo", "vol1", "--size", "64M")
        if not activate:
            say("opening needs an active LV: without device-mapper it is refused, typed")
            ctl(s, "lv-open", "sd-demo/vol1", "--mode", "r", "--", "true", refused=True)
        else:
            ctl(s, "lvchange", "sd-demo/vol1", "--activate", "y")
            with tempfile.NamedTemporaryFile(prefix="lvmsuper-demo-", delete=False) as fh:
                fh.write(os.urandom(MiB))
                pattern = fh.name
            os.chmod(pattern, 0o644)
            say("write 1 MiB through the descriptor lv_open hands over (dd's stdout)")
            ctl(s, "lv-open", "sd-demo/vol1", "--mode", "rw", "--fd", "1", "--", "dd",
                f"if={pattern}", "bs=1M", "count=1", "conv=notrunc,fsync", "status=none")
            say("read it back as the user (cmp exits 0: identical) and as root")
            ctl(s, "lv-open", "sd-demo/vol1", "--mode", "r", "--", "cmp", "-n", str(MiB),
                "-", pattern)
            with open(box.lvm("lvs", "--noheadings", "-o", "lv_dm_path",
                              "sd-demo/vol1").stdout.strip(), "rb") as dev:
                same = hashlib.sha256(dev.read(MiB)).digest() == \
                    hashlib.sha256(Path(pattern).read_bytes()).digest()
            print(f"root# the LV's first MiB {'equals' if same else 'DIFFERS FROM'} what "
                  "the user wrote")
            if not same:
                raise SystemExit("demo step failed: the data differs")
            ctl(s, "lvchange", "sd-demo/vol1", "--activate", "n")
        say("done with it: remove what the manager made")
        ctl(s, "lvremove", "sd-demo/vol1")
        ctl(s, "vgremove", "sd-demo")
        ctl(s, "pvremove", d0, d1)
        ctl(s, "vgs")
        show_audit(daemon)
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
        if pattern is not None:
            os.unlink(pattern)
        box.destroy()
        for argv in undo:
            subprocess.run(argv, check=False)
        say("manager sandbox removed")


if __name__ == "__main__":
    sys.exit(main())
