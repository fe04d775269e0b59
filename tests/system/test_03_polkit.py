"""polkit with real logind sessions (issue 13, point 3): the shipped defaults allow
`query` to a user in an active local session and to nobody else; the shipped example
rules grant group lvmsuper every action; pkcheck and the daemon always agree."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import sysrig
from sysrig import MEMBER, OUTSIDER, run, wait_for


# One D-Bus call through the installed client and pkcheck for the same process and
# action: the daemon's answer (ok or the error's name) and pkcheck's exit status.
CHECK = textwrap.dedent("""\
    import json, os, subprocess, sys
    from lvmsuper.client import Client, LvmSuperError
    method, action, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        with Client(transport="dbus") as c:
            c.call(method, **params)
        answer = "ok"
    except LvmSuperError as exc:
        answer = type(exc).__name__
    pk = subprocess.run(["pkcheck", "--action-id", action, "--process", str(os.getpid())],
                        capture_output=True).returncode
    session = os.environ.get("XDG_SESSION_ID", "")
    print(json.dumps({"answer": answer, "pkcheck": pk, "session": session}))
    """)
SCRIPT = Path("/run/lvmsuper-test-check.py")
# Not authorized before the rules (a call that needs `manage`), a plain LVM answer after.
MANAGE = ("lvcreate", "org.lvmsuper.manage", {"vg": "nosuchvg", "name": "x", "size": 4194304})
QUERY = ("ping", "org.lvmsuper.query", {})


def check_without_session(user: str, call: tuple[str, str, dict[str, object]]) -> dict:
    method, action, params = call
    proc = sysrig.as_user(user, "/usr/bin/python3", str(SCRIPT), method, action,
                          json.dumps(params), timeout=300)
    return json.loads(proc.stdout.splitlines()[-1])


def check_in_active_session(user: str, call: tuple[str, str, dict[str, object]]) -> dict:
    """The check run by a login session of ``user`` on tty2 (PAM "login", so logind
    registers it on seat0), made the foreground VT, hence active."""
    method, action, params = call
    out = Path("/run/lvmsuper-test-session.out")
    out.unlink(missing_ok=True)
    waiter = ('for i in $(seq 300); do [ "$(loginctl show-session "$XDG_SESSION_ID" '
              '-P Active)" = yes ] && break; sleep 0.2; done; exec "$@"')
    run("systemd-run", "--unit=lvmsuper-test-session", "--collect", f"--uid={user}",
        "-p", "PAMName=login", "-p", "TTYPath=/dev/tty2", "-p", "StandardInput=tty",
        "-p", f"StandardOutput=file:{out}", "-p", "StandardError=journal",
        "/bin/sh", "-c", waiter, "sh", "/usr/bin/python3", str(SCRIPT), method, action,
        json.dumps(params))
    try:
        wait_for("a logind session of the test unit", lambda: run(
            "loginctl", "list-sessions", "--no-legend", check=False).stdout.count(user) > 0,
            timeout=60)
        session = next(line.split()[0] for line in run(
            "loginctl", "list-sessions", "--no-legend").stdout.splitlines() if user in line)
        run("loginctl", "activate", session)
        wait_for("the session's answer", lambda: out.exists() and out.read_text().strip()
                 != "", timeout=300)
        result = json.loads(out.read_text().splitlines()[-1])
        assert result["session"] == session
        return result
    finally:
        run("systemctl", "stop", "lvmsuper-test-session", check=False)


def test_polkit_decisions_follow_sessions_and_rules() -> None:
    SCRIPT.write_text(CHECK)
    sysrig.example_rules(False)
    # Shipped defaults: query is allowed in an active local session ...
    got = check_in_active_session(MEMBER, QUERY)
    assert got["answer"] == "ok" and got["pkcheck"] == 0, got
    # ... and not without one, whatever the groups; pkcheck says the same.
    for user in (MEMBER, OUTSIDER):
        got = check_without_session(user, QUERY)
        assert got["answer"] == "PermissionDenied" and got["pkcheck"] != 0, (user, got)
    got = check_without_session(MEMBER, MANAGE)
    assert got["answer"] == "PermissionDenied" and got["pkcheck"] != 0, got

    # The example rules shipped in the package's docs: group lvmsuper gets everything.
    sysrig.example_rules(True)
    try:
        got = check_without_session(MEMBER, MANAGE)
        assert got["pkcheck"] == 0 and got["answer"] not in ("ok", "PermissionDenied"), got
        assert check_without_session(MEMBER, QUERY) | {"session": ""} == {
            "answer": "ok", "pkcheck": 0, "session": ""}
        got = check_without_session(OUTSIDER, QUERY)
        assert got["answer"] == "PermissionDenied" and got["pkcheck"] != 0, got
    finally:
        sysrig.example_rules(False)
