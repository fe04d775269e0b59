"""`make demo`: lvmsuper end to end on a throwaway loop-device sandbox.

Builds sparse files on loop devices with an lvm.conf that sees only them, starts
lvmsuperd on them, and as an unprivileged user in the `lvmsuper` group walks through
pvs -> pvcreate -> vgcreate -> lvcreate -> lvs -> lvresize -> status -> lvremove ->
vgremove -> pvremove, printing what the user sees. Then it tears everything down,
including the user and group if it created them. The host's own disks are never seen.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import rig  # noqa: E402  (the same sandbox and daemon launcher the tests use)

GROUP, USER = "lvmsuper", "lvmsuper-demo"


def say(text: str) -> None:
    print(f"\n\033[1m# {text}\033[0m", flush=True)


def ctl(socket: str, *args: str) -> None:
    print(f"{USER}$ lvmsuperctl {' '.join(args)}", flush=True)
    proc = rig.run_as(USER, [str(rig.VENV_BIN / "lvmsuperctl"), *args],
                      env={"LVMSUPER_SOCKET": socket})
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed (exit {proc.returncode})")


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
    if os.geteuid() != 0:
        print("make demo needs root (it creates loop devices and starts a root daemon)",
              file=sys.stderr)
        return 1
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
        daemon.start()
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
        say("the audit trail (daemon log)")
        print("".join(line + "\n" for line in daemon.log().splitlines() if "audit:" in line),
              end="")
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
        box.destroy()
        for argv in undo:
            subprocess.run(argv, check=False)
        say("sandbox removed: loop devices detached, files deleted"
            + (f", user {USER} and group {GROUP} removed" if undo else ""))


if __name__ == "__main__":
    sys.exit(main())
