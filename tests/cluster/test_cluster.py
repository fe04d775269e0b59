"""Two hosts, shared VGs, through lvmsuper on each (issue 16's scenarios, in order: each
builds on the state the one before left). Host a has sanlock host id 1, host b 2. The
shared disk has two partitions: svg on /dev/vda1 for the scenarios up to its removal,
svg2 on /dev/vda2 for the failover, which ends host a."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from cluster import Cluster, Failed

VG, LV = "svg", "lv1"
PV, PV2 = "/dev/vda1", "/dev/vda2"
MIB = 1024 * 1024


def job_done(host: Any, answer: dict[str, Any], limit: float = 600) -> dict[str, Any]:
    """The finished job of a change answered with ``{"job": id}``."""
    job_id = answer["job"]
    deadline = time.monotonic() + limit
    while True:
        job = host.ok("job_status", job=job_id)
        if job["state"] != "running":
            return job  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise Failed(f"{host.name}: job {job_id} still running after {limit:.0f} s")
        time.sleep(1)


def size_in(host: Any, lv: str) -> int:
    """The size of the host's mapping of ``lv``, as its kernel has it."""
    out = host.sh("sh", "-c", f'udevadm settle; blockdev --getsize64 "/dev/{lv}"')["stdout"]
    return int(out)


def test_a_creates_a_shared_vg_b_sees_it_and_starts_its_lockspace(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    # the global-lock trap: no shared VG yet, so pvcreate cannot take the global lock
    trap = a.call("pvcreate", devices=[PV])
    assert trap["error"]["data"]["name"] == "LvmFailed", trap
    assert "vgcreate shared=true" in trap["error"]["message"], trap
    started = time.monotonic()
    vg = a.ok("vgcreate", name=VG, devices=[PV], shared=True)
    cluster.measure("vgcreate_shared_s", round(time.monotonic() - started, 1))
    assert vg["shared"] is True and vg["lock_type"] == "sanlock", vg
    assert vg["lock_args"], vg
    assert VG in a.ok("status")["lockspaces"]
    seen = b.ok("vgs", names=[VG])
    assert seen[0]["shared"] and seen[0]["lock_args"] == vg["lock_args"], seen
    assert VG not in b.ok("status")["lockspaces"]
    started = time.monotonic()
    answer = b.ok("lockstart", vg=VG, wait=0)  # tens of seconds: a job
    assert "job" in answer, answer
    job = job_done(b, answer)
    assert job["state"] == "succeeded", job
    assert job["result"] == {"started": [VG]}, job
    cluster.measure("lockstart_s", round(job["finished"] - job["started"], 1))
    cluster.measure("lockstart_seen_from_host_s", round(time.monotonic() - started, 1))
    status = b.ok("status")
    assert status["lockspaces"] == [VG] and status["lost_lockspaces"] == [], status
    text = b.sh("lvmsuperctl", "status")["stdout"]
    assert f"lockspaces: {VG}" in text, text


def test_exclusive_on_a_is_a_lock_conflict_on_b_naming_host_1(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    lv = a.ok("lvcreate", vg=VG, name=LV, size=64 * MIB, activate=False)
    assert lv["lock_args"], lv  # a shared VG's LV has its lease
    a.ok("lvchange", lv=f"{VG}/{LV}", activate="exclusive")
    refused = b.call("lvchange", lv=f"{VG}/{LV}", activate="exclusive")
    error = refused.get("error")
    assert error and error["data"]["name"] == "LockConflict", refused
    assert error["data"]["object_type"] == "lv", error
    assert error["data"]["object_name"] == f"{VG}/{LV}", error
    assert error["data"]["holder"] == 1, error  # host a, from sanlock's lease
    # B's read of the LV still works
    [read] = b.ok("lvs", names=[f"{VG}/{LV}"])
    assert read["lock_args"] == lv["lock_args"] and read["size"] == 64 * MIB, read


def test_shared_activation_on_both_and_refused_for_a_thin_pool(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    a.ok("lvchange", lv=f"{VG}/{LV}", activate=False)
    a.ok("lvchange", lv=f"{VG}/{LV}", activate="shared")
    b.ok("lvchange", lv=f"{VG}/{LV}", activate="shared")
    assert size_in(a, f"{VG}/{LV}") == size_in(b, f"{VG}/{LV}") == 64 * MIB
    a.ok("lvcreate", vg=VG, name="pool", type="thin-pool", size=16 * MIB, activate=False)
    refused = a.call("lvchange", lv=f"{VG}/pool", activate="shared")
    error = refused.get("error")
    assert error and error["data"]["name"] == "InvalidRequest", refused
    assert error["data"]["field"] == "activate", error
    [pool] = a.ok("lvs", names=[f"{VG}/pool"])
    assert pool["active"] is False, pool  # nothing changed


def test_a_extends_and_b_refresh_shows_the_new_size(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    grown = a.ok("lvresize", lv=f"{VG}/{LV}", size=128 * MIB)
    assert grown["size"] == 128 * MIB, grown
    assert size_in(a, f"{VG}/{LV}") == 128 * MIB
    assert size_in(b, f"{VG}/{LV}") == 64 * MIB  # B's mapping is the old one
    b.ok("lvchange", lv=f"{VG}/{LV}", refresh=True)
    assert size_in(b, f"{VG}/{LV}") == 128 * MIB


def test_handover_b_writes_exclusively_and_a_reads_it(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    a.ok("lvchange", lv=f"{VG}/{LV}", activate=False)
    b.ok("lvchange", lv=f"{VG}/{LV}", activate=False)
    b.ok("lvchange", lv=f"{VG}/{LV}", activate="exclusive")
    token = f"written-by-host-b-{time.time_ns()}"
    b.sh("sh", "-c", f"udevadm settle; printf '%s' {token} | dd of=/dev/{VG}/{LV} "
         "oflag=direct conv=sync,fsync bs=512 count=1")
    b.ok("lvchange", lv=f"{VG}/{LV}", activate=False)
    a.ok("lvchange", lv=f"{VG}/{LV}", activate="exclusive")
    data = a.sh("sh", "-c", f"udevadm settle; dd if=/dev/{VG}/{LV} iflag=direct bs=512 "
                "count=1 2>/dev/null")["stdout"]
    assert data.startswith(token), data[:80]


def test_an_external_change_on_b_reaches_a_subscriber(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    a.ask({"kind": "subscribe"})
    pending = a.send({"kind": "wait_change", "name": f"{VG}/lv2", "source": "external",
                      "timeout": 60})
    time.sleep(1)  # the wait is in place before the change
    made = b.call("lvcreate", vg=VG, name="lv2", size=8 * MIB, activate=False)
    assert "result" in made, made
    done = time.monotonic()
    seen = a.collect(pending, 120)
    waited = time.monotonic() - done
    assert "params" in seen, seen
    assert seen["params"]["source"] == "external", seen
    cluster.measure("external_change_seen_s", round(waited, 1))
    # poll_interval (5 s in the guests) + 1 s, and the shared directory's two polls
    assert waited <= 5 + 1 + 1, waited


def test_a_read_right_after_a_change_on_b_is_fresh(cluster: Cluster) -> None:
    """The read cache across hosts (issue 17): B changes the shared VG through its
    lvmsuper (random changes, seeded); A read the same thing just before (so A's cache
    holds it) and reads it again at once: each answer equals LVM's own report on A taken
    right after it. Nothing of B's reaches A's cache but the disk (A's poll and events
    never touch it), so only the fingerprint can have seen the change. A's read with
    nothing changed before it is answered from memory (a hit), those after B's changes
    are misses."""
    a, b = cluster.a, cluster.b
    seed = int(os.environ.get("LVMSUPER_FRESH_SEED", time.time_ns() % 1_000_000))
    print(f"\nfreshness seed {seed} (LVMSUPER_FRESH_SEED)", flush=True)
    rng = random.Random(seed)
    ours: dict[str, tuple[int, bool]] = {}  # this test's LVs: size in MiB, tagged
    vg_tagged = False
    numbers = iter(range(1, 1000))
    stale: list[str] = []
    latest: list[float] = []

    def read(method: str, params: dict[str, Any], why: str) -> dict[str, Any]:
        answer = a.ask({"kind": "fresh", "method": method, "params": params})
        both_failed = "failed" in answer["daemon"] and "failed" in answer["lvm"]
        if answer["daemon"] != answer["lvm"] and not both_failed:
            stale.append(f"{method} {params} after {why}:\n  daemon: {answer['daemon']}"
                         f"\n  LVM:    {answer['lvm']}")
        return answer["cache"]  # type: ignore[no-any-return]

    def change() -> str:
        """One random change on B (lv1 and lv2 belong to the other scenarios)."""
        nonlocal vg_tagged
        kinds = ["create"] * (len(ours) < 3)
        if ours:
            kinds += ["tag", "resize", "rename", "remove", "vgtag"]
        kind = rng.choice(kinds)
        lv = rng.choice(sorted(ours)) if ours else ""
        if kind == "create":
            lv = f"fr{next(numbers)}"
            b.ok("lvcreate", vg=VG, name=lv, size=8 * MIB, activate=False)
            ours[lv] = (8, False)
        elif kind == "tag":
            size, tagged = ours[lv]
            key = "del_tags" if tagged else "add_tags"
            b.ok("lvchange", lv=f"{VG}/{lv}", **{key: ["fresh"]})
            ours[lv] = (size, not tagged)
            kind = key
        elif kind == "resize":
            size = rng.choice([s for s in (8, 16, 24) if s != ours[lv][0]])
            b.ok("lvresize", lv=f"{VG}/{lv}", size=size * MIB, force=True)
            ours[lv] = (size, ours[lv][1])
        elif kind == "rename":
            new = f"fr{next(numbers)}"
            b.ok("lvrename", lv=f"{VG}/{lv}", new_name=new)
            ours[new] = ours.pop(lv)
            kind = f"rename to {new}"
        elif kind == "vgtag":
            key = "del_tags" if vg_tagged else "add_tags"
            b.ok("vgchange", vg=VG, **{key: ["fresh"]})
            vg_tagged = not vg_tagged
            return f"vgchange {key}"
        else:
            b.ok("lvremove", lv=f"{VG}/{lv}")
            del ours[lv]
        return f"{kind} {lv}"

    before = read("lvs", {"vg": VG}, "nothing")
    for _ in range(int(os.environ.get("LVMSUPER_CLUSTER_FRESH_STEPS", 8))):
        method, params = rng.choice([("lvs", {"vg": VG}), ("lvs", {}), ("vgs", {}),
                                     ("report", {"vg": VG})])
        read(method, params, "a read before")  # cached on A now
        what = change()
        done = time.monotonic()
        read(method, params, f"B's {what}")
        latest.append(time.monotonic() - done)
    after = read(method, params, "nothing")  # the last read again: from memory
    for lv in ours:  # what the later scenarios expect: only lv1 and lv2, no VG tag
        b.ok("lvremove", lv=f"{VG}/{lv}")
    if vg_tagged:
        b.ok("vgchange", vg=VG, del_tags=["fresh"])
    assert not stale, "\n".join(stale)
    cluster.measure("fresh_read_after_b_change_max_s", round(max(latest), 1))
    cluster.measure("fresh_cache_hits_misses", [after["hits"] - before["hits"],
                                                after["misses"] - before["misses"]])
    assert after["hits"] > before["hits"], (before, after)
    assert after["misses"] - before["misses"] >= len(latest), (before, after)


def test_a_lost_lockspace_refuses_changes_until_lockstart(cluster: Cluster) -> None:
    b = cluster.b
    # what sanlock's kill path runs when it cannot renew the lease: lvmlockctl --kill
    b.sh("lvmlockctl", "--kill", VG)
    status = b.ok("status")
    assert status["lost_lockspaces"] == [VG] and VG not in status["lockspaces"], status
    assert f"LOST lockspace: {VG}" in b.sh("lvmsuperctl", "status")["stdout"]
    refused = b.call("lvchange", lv=f"{VG}/lv2", add_tags=["t1"])
    error = refused.get("error")
    assert error and error["data"]["name"] == "LockConflict", refused
    assert error["data"]["object_name"] == VG and error["data"]["holder"] is None, error
    [lv2] = b.ok("lvs", names=[f"{VG}/lv2"])
    assert lv2["tags"] == [], lv2  # nothing changed
    job = job_done(b, b.ok("lockstart", vg=VG, wait=0))
    assert job["state"] == "succeeded", job
    status = b.ok("status")
    assert status["lockspaces"] == [VG] and status["lost_lockspaces"] == [], status
    tagged = b.ok("lvchange", lv=f"{VG}/lv2", add_tags=["t1"])
    assert tagged["tags"] == ["t1"], tagged


def test_lockstop_on_both_then_vgremove(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    a.ok("lvchange", lv=f"{VG}/{LV}", activate=False)  # a held it since the hand-over
    for host in (a, b):
        job = job_done(host, host.ok("lockstop", vg=VG, wait=0))
        assert job["state"] == "succeeded" and job["result"] == {"stopped": [VG]}, job
        assert host.ok("status")["lockspaces"] == []
    # vgremove needs the VG's lockspace on the host that removes it, and on no other
    job_done(b, b.ok("lockstart", vg=VG, wait=0))
    removed = b.ok("vgremove", vg=VG, force=True)
    assert removed == {"removed": [VG]}, removed
    assert b.ok("vgs") == [] and a.ok("vgs") == []


def test_a_killed_holding_an_exclusive_lock_b_gets_it_after_the_lease_expires(
        cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    # svg2 on the second partition: the first shared VG again (svg took the global lock
    # with it), so vgcreate makes it straight on the device once more
    a.ok("vgcreate", name="svg2", devices=[PV2], shared=True)
    job = job_done(b, b.ok("lockstart", vg="svg2", wait=0))
    assert job["state"] == "succeeded", job
    lv = a.ok("lvcreate", vg="svg2", name="lv3", size=8 * MIB, activate=True)
    assert lv["active"] is True, lv  # exclusive: true is exclusive in a shared VG
    killed = a.kill()  # its qemu, by pid: no shutdown, no release
    conflicts = 0
    holders: set[Any] = set()
    while True:
        answer = b.call("lvchange", lv="svg2/lv3", activate="exclusive")
        if "result" in answer:
            break
        error = answer["error"]
        assert error["data"]["name"] == "LockConflict", answer
        holders.add(error["data"].get("holder"))
        conflicts += 1
        if time.monotonic() - killed > 420:
            raise Failed(f"B still refused {time.monotonic() - killed:.0f} s after A died")
        time.sleep(5)
    cluster.measure("failover_s", round(time.monotonic() - killed, 1))
    cluster.measure("failover_conflicts", conflicts)
    assert conflicts >= 1  # B was refused while A's lease lived
    assert holders == {1}, holders  # every refusal named host a
    assert size_in(b, "svg2/lv3") == 8 * MIB
