"""journald audit (issue 13, point 4): a change by an unprivileged user is in the
service's journal with lvmsuperd's identifier, every LVMSUPER_* field and the caller's
real uid, pid and command name."""

from __future__ import annotations

import json
import pwd

import sysrig
from sysrig import MEMBER, run, wait_for

FIELDS = ("LVMSUPER_METHOD", "LVMSUPER_CALLER_UID", "LVMSUPER_CALLER_PID",
          "LVMSUPER_CALLER_COMM", "LVMSUPER_RESULT", "LVMSUPER_DURATION_MS")


def audit_records() -> list[dict[str, str]]:
    out = run("journalctl", "-u", "lvmsuper", "-o", "json", "--no-pager").stdout
    return [r for r in map(json.loads, out.splitlines()) if "LVMSUPER_METHOD" in r]


def test_a_change_is_audited_in_the_journal() -> None:
    loops = sysrig.make_loops(1, 16, "audit")
    try:
        # The shell's pid is lvmsuperctl's after exec: the caller the daemon must name.
        proc = sysrig.as_user(MEMBER, "sh", "-c",
                              'echo $$; exec /usr/bin/lvmsuperctl pvcreate "$0"', loops[0])
        pid = proc.stdout.splitlines()[0]

        def mine() -> list[dict[str, str]]:
            return [r for r in audit_records() if r["LVMSUPER_CALLER_PID"] == pid]

        wait_for("the audit record in the journal", lambda: bool(mine()), timeout=30)
        [record] = mine()
        assert all(field in record for field in FIELDS), record
        assert record["SYSLOG_IDENTIFIER"] == "lvmsuperd"
        assert record["_SYSTEMD_UNIT"] == "lvmsuper.service"
        assert record["LVMSUPER_METHOD"] == "pvcreate"
        assert record["LVMSUPER_CALLER_UID"] == str(pwd.getpwnam(MEMBER).pw_uid)
        assert record["LVMSUPER_CALLER_COMM"] == "lvmsuperctl"
        assert record["LVMSUPER_RESULT"] == "ok"
        assert float(record["LVMSUPER_DURATION_MS"]) > 0
        # A refused change is audited too, with its error.
        loops2 = sysrig.make_loops(1, 16, "audit2")
        loops += loops2
        bad = sysrig.as_user(MEMBER, "/usr/bin/lvmsuperctl", "vgremove", "nosuchvg",
                             check=False)
        assert bad.returncode != 0
        wait_for("the failed change's record", lambda: any(
            r["LVMSUPER_METHOD"] == "vgremove" and r["LVMSUPER_RESULT"] != "ok"
            for r in audit_records()), timeout=30)
    finally:
        sysrig.drop_loops(loops)
