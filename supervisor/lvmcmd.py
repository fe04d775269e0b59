"""Pure argv builders for LVM: typed, validated values in, argv lists out.

Rule: nothing here runs a process or reads a caller's dict; every argument comes from
a validated, typed value and lands in a slot of its own (an option's value or a
positional after ``--``-free, fixed option names), so no value can become an option.
The options that pin LVM's output format are added here, for every command.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PV_FIELDS", "VG_FIELDS", "LV_FIELDS", "SEG_FIELDS", "LV_ONLY_FIELDS", "pinned_config", "report_argv",
           "fullreport_argv", "change_argv", "size_arg", "SECTOR"]

SECTOR = 512

# Report fields, in the order the parser reads them (report.py maps them to models).
PV_FIELDS = ("pv_name", "pv_uuid", "vg_name", "pv_size", "pv_free", "pv_used", "dev_size",
             "pe_start", "pv_pe_count", "pv_pe_alloc_count", "pv_allocatable",
             "pv_exported", "pv_missing", "pv_tags", "pv_mda_count", "pv_mda_free",
             "pv_attr")
VG_FIELDS = ("vg_name", "vg_uuid", "vg_size", "vg_free", "vg_extent_size",
             "vg_extent_count", "vg_free_count", "pv_count", "lv_count", "snap_count",
             "vg_seqno", "vg_permissions", "vg_extendable", "vg_exported", "vg_partial",
             "vg_shared", "vg_lock_type", "vg_systemid", "vg_tags", "vg_mda_count",
             "vg_mda_free", "vg_attr")
# segtype and devices are segment fields: LVM prints one row per segment.
LV_FIELDS = ("lv_name", "vg_name", "lv_full_name", "lv_uuid", "lv_path", "lv_size",
             "segtype", "lv_active", "origin", "pool_lv",
             "data_percent", "metadata_percent", "devices", "lv_tags", "lv_attr")
# fullreport keeps segment fields in a subreport of their own, joined by lv_uuid.
SEG_FIELDS = ("lv_uuid", "segtype", "devices")
LV_ONLY_FIELDS = tuple(f for f in LV_FIELDS if f not in SEG_FIELDS[1:])

_REPORT_OPTIONS = ("--reportformat", "json", "--units", "b", "--nosuffix", "--binary")

# What a site's lvm.conf could change in the output is pinned here (this string goes
# last in --config, and LVM lets the last definition win).
_PINNED = ('log { report_command_log=1 command_log_selection="!(log_type=status && '
           'message=success)" prefix="" command_names=0 } '
           'report { compact_output=0 list_item_separator="," mark_hidden_devices=0 '
           'binary_values_as_numeric=0 }')


def pinned_config(extra: str | None, *, command_log: bool = True) -> str:
    """The ``--config`` value: the site's ``[lvm] extra_config``, then our pins. Without
    ``command_log`` LVM's messages go to stderr as plain lines (for the commands that
    cannot print a JSON log)."""
    pins = _PINNED if command_log else _PINNED.replace("report_command_log=1",
                                                       "report_command_log=0")
    return f"{extra} {pins}" if extra else pins


def _common(command: str, extra: str | None, *, command_log: bool = True) -> list[str]:
    return [command, "--config", pinned_config(extra, command_log=command_log)]


def report_argv(kind: str, *, names: Sequence[str] = (), select: str | None = None,
                extra_config: str | None = None) -> list[str]:
    """``pvs``/``vgs``/``lvs`` with an explicit field list. ``names`` are validated
    device paths, VG names or ``vg/lv`` names (none can start with ``-``)."""
    fields = {"pv": PV_FIELDS, "vg": VG_FIELDS, "lv": LV_FIELDS}[kind]
    argv = _common(f"{kind}s", extra_config)
    argv += [*_REPORT_OPTIONS, "-o", ",".join(fields)]
    if select is not None:
        argv += ["--select", select]
    argv += list(names)
    return argv


def fullreport_argv(*, vg: str | None = None, extra_config: str | None = None) -> list[str]:
    """One LVM run reporting PVs, VGs and LVs consistently (``lvm fullreport``)."""
    argv = _common("fullreport", extra_config)
    argv += [*_REPORT_OPTIONS, "-o", ",".join(VG_FIELDS),
             "--configreport", "pv", "-o", ",".join(PV_FIELDS),
             "--configreport", "lv", "-o", ",".join(LV_ONLY_FIELDS),
             "--configreport", "seg", "-o", ",".join(SEG_FIELDS),
             "--configreport", "pvseg", "-o", "pvseg_start"]
    if vg is not None:
        argv.append(vg)
    return argv


def change_argv(command: str, args: Sequence[str], *, extra_config: str | None = None,
                json_log: bool = True) -> list[str]:
    """A mutating command; its output is LVM's JSON command log (``json_log``) or, for
    pvmove, its progress lines."""
    fmt = ["--reportformat", "json"] if json_log else []
    return [*_common(command, extra_config, command_log=json_log), *fmt, *args]


def size_arg(size: int) -> str:
    """A byte size as LVM's ``--size`` value: LVM wants whole 512-byte sectors, so round
    up (LVM then rounds up to a whole extent)."""
    return f"{-(-size // SECTOR)}s"
