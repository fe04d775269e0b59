"""tools/system-guest without a guest: a fake qemu (--qemu) plays it.

The fake reads what a real guest would: the kernel command line (-append, for the
marker) and the initramfs (-initrd, a newc cpio: the command's JSON config, the units,
/init, the modules); prints a console on stderr, the marker lines and the command's
output on stdout, running the command on the host. Per boot it can never start, crash
before the command, hang in it or die in it; each boot leaves `boot-N` (pid, argv) in
the state directory. tools/guestrun.py's loop is the one tools/dm-guest uses (and
tests/unit/test_unit_dm_guest.py tests in depth); here: that system-guest wires it up,
and what it gives the guest.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "system-guest"

FAKE_QEMU = textwrap.dedent('''\
    import json, os, re, subprocess, sys, time
    from pathlib import Path

    argv = sys.argv[1:]
    state = Path(os.environ["FAKE_QEMU_STATE"])
    boot = len(list(state.glob("boot-*"))) + 1
    (state / f"boot-{boot}").write_text(json.dumps({"pid": os.getpid(), "argv": argv}))
    modes = os.environ["FAKE_QEMU_MODES"].split(",")
    mode = modes[min(boot, len(modes)) - 1]
    append = argv[argv.index("-append") + 1]
    marker = re.search(r"system_guest\\.marker=(\\S+)", append)[1]
    tree = state / f"initrd-{boot}"
    tree.mkdir()
    with open(argv[argv.index("-initrd") + 1], "rb") as cpio:
        subprocess.run(["cpio", "--quiet", "-i", "-d"], stdin=cpio, cwd=tree, check=True)
    config = json.loads((tree / "files/etc/system-guest.json").read_text())

    def console(text):
        print(text, file=sys.stderr, flush=True)

    for i in range(30):
        console(f"[  OK  ] fake unit {i} (boot {boot})")
    if mode == "noboot":
        time.sleep(3600)
    if mode == "crash":
        console("Kernel panic - not syncing: fake, before the command")
        sys.exit(1)
    print(f"{marker} started\\r", flush=True)  # a tty's CR LF
    if mode == "hang":
        time.sleep(3600)
    rc = subprocess.run(config["cmd"], cwd=config["cwd"], stderr=subprocess.STDOUT).returncode
    if mode == "die":
        console("Kernel panic - not syncing: fake, during the command")
        sys.exit(1)
    print(f"{marker} exit {rc}\\r", flush=True)
    console("reboot: Power down")
    ''')

MODULES_DEP = textwrap.dedent("""\
    kernel/drivers/virtio/virtio.ko:
    kernel/drivers/virtio/virtio_ring.ko:
    kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
    kernel/drivers/virtio/virtio_pci_modern_dev.ko:
    kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
    kernel/fs/netfs/netfs.ko:
    kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
    kernel/net/9p/9pnet.ko:
    kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
    kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
    kernel/fs/overlayfs/overlay.ko.xz:
    kernel/drivers/md/dm-mod.ko:
    """)

CMD = ["sh", "-c", "echo out-line; echo err-line >&2; pwd; exit 3"]


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    qemu = tmp_path / "bin" / "qemu-system-x86_64"
    qemu.parent.mkdir()
    qemu.write_text(f"#!{sys.executable}\n{FAKE_QEMU}")
    qemu.chmod(0o755)
    modules = tmp_path / "modules"
    for line in MODULES_DEP.splitlines():
        path = modules / line.split(":")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".xz":
            import lzma
            path.write_bytes(lzma.compress(b"xz module " + path.name.encode()))
        else:
            path.write_bytes(b"module " + path.name.encode())
    (modules / "modules.dep").write_text(MODULES_DEP)
    busybox = tmp_path / "busybox"
    busybox.write_text("#!/bin/sh\n")
    busybox.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    results = tmp_path / "results"
    results.mkdir()
    return {"qemu": qemu, "modules": modules, "busybox": busybox, "state": state,
            "results": results, "log": tmp_path / "console.log", "dir": tmp_path}


def system_guest(fake: dict[str, Path], modes: str, *options: str,
                 cmd: list[str] = CMD) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FAKE_QEMU_STATE=str(fake["state"]), FAKE_QEMU_MODES=modes)
    argv = [sys.executable, str(SCRIPT), "--qemu", str(fake["qemu"]),
            "--kernel", "/nonexistent/vmlinuz-6.1.0-test", "--modules", str(fake["modules"]),
            "--busybox", str(fake["busybox"]), "--console-log", str(fake["log"]),
            "--results", str(fake["results"]), *options, "--", *cmd]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          cwd=fake["dir"])


def boots(fake: dict[str, Path]) -> list[dict[str, Any]]:
    found = sorted(fake["state"].glob("boot-*"), key=lambda p: int(p.name.split("-")[1]))
    return [json.loads(p.read_text()) for p in found]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_normal_run_passes_output_and_exit_status(fake: dict[str, Path]) -> None:
    proc = system_guest(fake, "ok")
    assert proc.returncode == 3, proc.stderr
    initrd = Path(boots(fake)[0]["argv"][boots(fake)[0]["argv"].index("-initrd") + 1])
    assert not initrd.exists()  # the initramfs is not left behind
    # CMD's output only, CR LF made LF, in the caller's directory.
    assert proc.stdout == f"out-line\nerr-line\n{fake['dir']}\n"
    assert "system-guest: guest up after" in proc.stderr
    assert "command exited 3" in proc.stderr
    log = fake["log"].read_text()
    assert log.startswith("system-guest: attempt 1 of 2: ")
    assert "fake unit 29 (boot 1)" in log and "Power down" in log
    [boot] = boots(fake)
    argv = boot["argv"]
    assert "-no-reboot" in argv and "-kernel" in argv


def test_the_guest_gets_the_command_units_and_modules(fake: dict[str, Path]) -> None:
    system_guest(fake, "ok")
    tree = fake["state"] / "initrd-1"
    config = json.loads((tree / "files/etc/system-guest.json").read_text())
    assert config == {"cmd": CMD, "cwd": str(fake["dir"]), "results": str(fake["results"]),
                      "timeout": 900.0}
    units = tree / "files/etc/systemd/system"
    assert os.readlink(units / "default.target") == "system-guest.target"
    target = (units / "system-guest.target").read_text()
    assert "Requires=basic.target system-guest.service" in target
    service = (units / "system-guest.service").read_text()
    assert f"ExecStart=/usr/bin/python3 {SCRIPT} --in-guest" in service
    assert "TTYPath=/dev/ttyS1" in service and "Type=oneshot" in service
    for masked in ("systemd-tmpfiles-setup.service", "timers.target", "lvm2-monitor.service"):
        assert os.readlink(units / masked) == "/dev/null"
    assert len((tree / "files/etc/machine-id").read_text().strip()) == 32
    order = (tree / "modules/order").read_text().split()
    assert order.index("virtio.ko") < order.index("virtio_pci.ko")
    assert order.index("netfs.ko") < order.index("fscache.ko") < order.index("9p.ko")
    assert order[-1] == "overlay.ko" and "dm-mod.ko" not in order
    assert (tree / "modules/overlay.ko").read_bytes() == b"xz module overlay.ko.xz"
    init = (tree / "init").read_text()
    assert f'"/newroot{fake["results"]}"' in init
    assert "exec switch_root /newroot /lib/systemd/systemd" in init


def test_a_guest_that_never_reaches_the_command_is_booted_once_more(
        fake: dict[str, Path]) -> None:
    proc = system_guest(fake, "noboot,ok", "--boot-timeout", "2")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("out-line\n")  # the command ran once
    assert "did not start within 2 s (attempt 1 of 2)" in proc.stderr
    assert "booting the guest once more" in proc.stderr
    assert len(boots(fake)) == 2 and gone(boots(fake)[0]["pid"])
    # Each boot its own marker: a late line of the first guest cannot count for the second.
    markers = [b["argv"][b["argv"].index("-append") + 1].split("marker=")[1] for b in boots(fake)]
    assert markers[0] != markers[1]


def test_two_failed_boots_give_125_with_the_console_tail(fake: dict[str, Path]) -> None:
    proc = system_guest(fake, "crash")
    assert proc.returncode == 125
    assert "ended before the command started (qemu-system-x86_64 exit 1)" in proc.stderr
    assert "Kernel panic - not syncing: fake, before the command" in proc.stderr
    assert proc.stderr.rstrip().endswith("no guest after 2 attempts; giving up")
    assert len(boots(fake)) == 2


def test_a_hung_command_is_124_and_its_guest_killed(fake: dict[str, Path]) -> None:
    started = time.monotonic()
    proc = system_guest(fake, "hang", "--timeout", "3")
    assert proc.returncode == 124, proc.stderr
    assert time.monotonic() - started < 40
    assert len(boots(fake)) == 1 and gone(boots(fake)[0]["pid"])


def test_a_guest_dying_in_the_command_is_125_and_not_retried(fake: dict[str, Path]) -> None:
    proc = system_guest(fake, "die")
    assert proc.returncode == 125
    assert proc.stdout.startswith("out-line\n")
    assert len(boots(fake)) == 1


def test_missing_qemu_is_125(fake: dict[str, Path]) -> None:
    fake["qemu"].unlink()
    proc = system_guest(fake, "ok")
    assert proc.returncode == 125 and "run `make install-system-tier`" in proc.stderr
    assert boots(fake) == []


# ---- the qemu command line ----------------------------------------------------------------

def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("system_guest", str(SCRIPT))
    spec = importlib.util.spec_from_loader("system_guest", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["system_guest"] = module
    try:
        loader.exec_module(module)
    finally:
        del sys.modules["system_guest"]
    return module


@pytest.mark.parametrize("kvm", [True, False])
def test_tcg_unless_kvm_is_usable(kvm: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load()
    monkeypatch.setattr(module, "kvm_usable", lambda: kvm)
    argv = module.qemu_command("/q", "/boot/vmlinuz-x", Path("/i"), "/res", "M-1")
    accel = argv[argv.index("-accel") + 1]
    assert accel == ("kvm" if kvm else "tcg,thread=multi")
    fsdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-fsdev"]
    assert fsdevs[0].startswith("local,id=hostroot,path=/,") and "readonly=on" in fsdevs[0]
    assert fsdevs[1].startswith("local,id=results,path=/res,") and "readonly" not in fsdevs[1]
    append = argv[argv.index("-append") + 1].split()
    assert "system_guest.marker=M-1" in append and "systemd.unit=system-guest.target" in append


def test_module_order_loads_dependencies_first() -> None:
    order = load().module_order(MODULES_DEP, ["9p", "overlay"])
    # modules.dep lists a module's dependencies last-loaded-first.
    assert order == ["kernel/fs/netfs/netfs.ko", "kernel/fs/fscache/fscache.ko",
                     "kernel/net/9p/9pnet.ko", "kernel/fs/9p/9p.ko",
                     "kernel/fs/overlayfs/overlay.ko.xz"]


def test_cluster_options_name_size_and_share_one_disk(fake: dict[str, Path]) -> None:
    """What make test-cluster asks of a guest: its name, 1 vCPU, less memory, and one raw
    image that a second guest attaches too (QEMU's image lock off, no host cache)."""
    disk = fake["dir"] / "shared.img"
    disk.write_bytes(b"")
    proc = system_guest(fake, "ok", "--name", "a", "--cpus", "1", "--memory", "1536",
                        "--shared-disk", str(disk))
    assert proc.returncode == 3, proc.stderr
    argv = boots(fake)[0]["argv"]
    assert argv[argv.index("-smp") + 1] == "1" and argv[argv.index("-m") + 1] == "1536"
    assert argv[argv.index("-drive") + 1] == (
        f"file={disk},format=raw,if=virtio,cache=none,file.locking=off")
    tree = fake["state"] / "initrd-1"
    assert (tree / "files/etc/hostname").read_text() == "lvmsuper-a\n"
    config = json.loads((tree / "files/etc/system-guest.json").read_text())
    assert config["journal"] == "journal-a.log"
    assert config["environment"] == {"LVMSUPER_GUEST_NAME": "a"}
    for bad in (["--name", "A;x"], ["--shared-disk", str(fake["dir"] / "none.img")]):
        refused = system_guest(fake, "ok", *bad)
        assert refused.returncode == 2, (bad, refused.stderr)
    # without them, the full-system tier's guest is as before: no disk, 2 vCPUs, 2 GiB
    plain = boots(fake)[0]["argv"]
    system_guest(fake, "ok")
    argv = boots(fake)[-1]["argv"]
    assert "-drive" not in argv and argv[argv.index("-smp") + 1] == "2"
    assert argv[argv.index("-m") + 1] == "2048" and plain != argv
