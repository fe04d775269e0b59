"""Device-mapper tier, issue 12: the activation parts of a storage manager's life (the
rest is tests/test_manager_lifecycle.py): a volume chain activated, refreshed and
deactivated in batches (one LVM run each), checked against the kernel's devices; an
LV held open is ``InUse`` (busy, retry later), not a plain LVM failure. One scenario:
TCG makes every LVM command cost ~0.3 s.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

import rig
from lvmsuper.client.errors import InUse, LvmFailed

MiB = 2**20
CHAIN = [f"vgsd/vol{i}" for i in range(3)]


def dev(full: str) -> str:
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)
    return f"/dev/{full}"


def size_of(path: str) -> int:
    out = subprocess.run(["blockdev", "--getsize64", path], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


def test_a_chain_in_batches_and_an_open_lv_in_use(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", *lvm.loops[:2])
    lvm.lvm("vgcreate", "--setautoactivation", "n", "vgsd", *lvm.loops[:2])
    client: Any = rig.client_as("lvmst-admin", daemon.socket)
    fd = -1
    try:
        for i, full in enumerate(CHAIN):
            client.lvcreate("vgsd", full.split("/")[1], size=4 * MiB, activate=False,
                            wipe_signatures=False, tags=["IU_img", f"MD_{i + 1}"])
        assert not any(os.path.exists(dev(full)) for full in CHAIN)

        # activated in one batch: every device there, none open
        active = client.lvchange(lvs=CHAIN, activate=True)
        assert [lv.full_name for lv in active] == CHAIN
        assert all(lv.active is True and lv.open is False for lv in active)
        assert all(os.path.exists(dev(full)) for full in CHAIN)

        # another host extended vol2 (the metadata changed; this kernel's table did not):
        # a batch refresh makes the device follow
        lvm.lvm("lvextend", "--driverloaded", "n", "-L", "8m", "vgsd/vol2")
        assert size_of(dev(CHAIN[2])) == 4 * MiB
        refreshed = client.lvchange(lvs=CHAIN, refresh=True)
        assert [lv.size for lv in refreshed] == [4 * MiB, 4 * MiB, 8 * MiB]
        assert size_of(dev(CHAIN[2])) == 8 * MiB

        # vol0 held open: deactivating or removing it is InUse, naming it
        fd = os.open(dev(CHAIN[0]), os.O_RDONLY)
        (held,) = client.lvs(names=[CHAIN[0]])
        assert held.open is True
        with pytest.raises(InUse) as busy:
            client.lvchange(CHAIN[0], activate=False)
        assert busy.value.data["object_name"] == CHAIN[0] and busy.value.data["argv"]
        assert isinstance(busy.value, LvmFailed)  # callers catching LvmFailed still do
        with pytest.raises(InUse) as busy:
            client.lvremove(CHAIN[0])
        assert busy.value.data["object_name"] == CHAIN[0]
        assert os.path.exists(dev(CHAIN[0]))
        assert lvm.report("lv", "lv_name", CHAIN[0]) == [{"lv_name": "vol0"}]
        os.close(fd)
        fd = -1

        # released: deactivated in one batch, devices gone
        inactive = client.lvchange(lvs=CHAIN, activate=False)
        assert all(lv.active is False for lv in inactive)
        assert not any(os.path.exists(dev(full)) for full in CHAIN)
        assert client.lvremove(lvs=CHAIN) == {"removed": CHAIN}
    finally:
        if fd >= 0:
            os.close(fd)
        client.close()
        lvm.lvm("vgchange", "--activate", "n", "vgsd", check=False)
