"""Device-mapper tier: changes made outside lvmsuper reach subscribers through udev.

The guest runs udevd, so the daemon's watcher wakes on block events; polling is turned
off here ([events] poll_interval = 0) so that nothing but udev can deliver them.
Activation changes no VG seqno: only udev (and the watcher's read after it) sees it.
"""

from __future__ import annotations

import os
import time
import rig

QUERY = "lvmst-query"


def test_external_changes_arrive_through_udev(sandbox: rig.Sandbox, users: object,
                                             lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgev", lvm.loops[0])
    lvm.lvm("lvcreate", "-an", "-Zn", "-n", "ext", "-L", "8m", "vgev")
    try:
        with rig.running(sandbox, "udev", events={"poll_interval": 0}) as d, \
                rig.client_as(QUERY, d.socket) as c:
            assert "watching udev block events" in d.log()
            c.subscribe()
            time.sleep(3)  # the watcher's first look (LVM is slow under emulation)
            lvm.lvm("lvchange", "-ay", "vgev/ext")  # by hand: no seqno moves
            activated, took_activate = rig.wait_for_change(c, "lv", "vgev/ext", 15)
            lvm.lvm("lvcreate", "-Zn", "-n", "made", "-L", "8m", "vgev")  # active: a dm event
            created, took_create = rig.wait_for_change(c, "lv", "vgev/made", 15)
            lvm.lvm("lvchange", "-an", "vgev/ext")
            deactivated, _ = rig.wait_for_change(c, "lv", "vgev/ext", 15)
    finally:
        lvm.lvm("vgchange", "-an", "vgev", check=False)
    for params in (activated, created, deactivated):
        assert params["source"] == "external"
    said = (f"udev-delivered external changes under emulation (TCG): activation "
            f"{took_activate:.2f} s, lvcreate {took_create:.2f} s\n")
    results = os.environ.get("LVMSUPER_DM_RESULTS")
    if results:  # kept with the tier's results on the host (make test-dm)
        with open(os.path.join(results, "udev-latency.txt"), "a") as fh:
            fh.write(said)
    print(said, end="")
