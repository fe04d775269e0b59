"""Socket and D-Bus activation of the installed lvmsuper (issue 13, points 1 and 2)."""

from __future__ import annotations

import json

import sysrig
from sysrig import MEMBER, active, ctl, prop, run, wait_for


def test_socket_activation_and_idle_exit() -> None:
    # As installed: the socket enabled and listening, the daemon not running.
    assert run("systemctl", "is-enabled", "lvmsuper.socket").stdout.strip() == "enabled"
    assert active("lvmsuper.socket") == "active"
    assert active("lvmsuper.service") == "inactive"

    # The first call by a member of lvmsuper starts it; the caller just gets an answer.
    assert json.loads(ctl(MEMBER, "--json", "pvs").stdout) == []
    assert active("lvmsuper.service") == "active"
    first = prop("lvmsuper.service", "InvocationID")

    # With idle_timeout the daemon exits when idle, and the next call starts it again.
    sysrig.write_config("\n[server]\nidle_timeout = 3\n")
    try:
        sysrig.stop_daemon()
        assert json.loads(ctl(MEMBER, "--json", "pvs").stdout) == []
        second = prop("lvmsuper.service", "InvocationID")
        assert second != first
        wait_for("lvmsuper.service idle exit",
                 lambda: active("lvmsuper.service") == "inactive", timeout=60)
        assert prop("lvmsuper.service", "Result") == "success"
        assert active("lvmsuper.socket") == "active"
        assert json.loads(ctl(MEMBER, "--json", "pvs").stdout) == []
        assert prop("lvmsuper.service", "InvocationID") not in (first, second)
    finally:
        sysrig.write_config()
        sysrig.stop_daemon()


def test_dbus_activation_by_an_unprivileged_user() -> None:
    sysrig.stop_daemon()
    assert active("lvmsuper.service") == "inactive"
    sysrig.example_rules(True)  # lets the member use it without a session
    try:
        # The bus starts lvmsuper.service (SystemdService=) for the call, which is answered.
        ping = sysrig.busctl_as(MEMBER, "Ping", "0")
        assert ping.stdout.startswith("a{sv} ")
        assert active("lvmsuper.service") == "active"
        owner = run("busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                    "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s",
                    "org.lvmsuper.Supervisor1").stdout.split()
        assert owner == ["u", prop("lvmsuper.service", "MainPID")]  # the unit's daemon
        intro = run("busctl", "introspect", "--no-pager", *sysrig.BUS[:2]).stdout
        assert "org.lvmsuper.Supervisor1" in intro
        assert ".Ping" in intro and ".LvCreate" in intro and "Changed" in intro
    finally:
        sysrig.example_rules(False)
        sysrig.stop_daemon()
