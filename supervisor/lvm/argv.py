"""Pure argv builders for LVM: typed, validated values in, argv lists out.

Rule: nothing here runs a process or reads a caller's dict; every argument comes from
a validated, typed value and lands in a slot of its own (an option's value or a
positional after ``--``-free, fixed option names), so no value can become an option.
The options that pin LVM's output format are added here, for every command.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PV_FIELDS", "VG_FIELDS", "VG_ONLY_FIELDS", "LV_FIELDS", "SEG_FIELDS",
           "LV_ONLY_FIELDS", "LV_DEVICE_FIELDS", "pinned_config", "report_argv",
           "fullreport_argv", "change_argv", "vgck_argv", "config_argv", "scan_args", "size_arg",
           "SECTOR"]

SECTOR = 512

# Report fields, in the order the parser reads them (report.py maps them to models).
PV_FIELDS = ("pv_name", "pv_uuid", "vg_name", "pv_size", "pv_free", "pv_used", "dev_size",
             "pe_start", "pv_pe_count", "pv_pe_alloc_count", "pv_allocatable",
             "pv_exported", "pv_missing", "pv_tags", "pv_mda_count", "pv_mda_free",
             "pv_attr", "vg_uuid", "pv_mda_used_count", "vg_tags")
VG_ONLY_FIELDS = ("vg_name", "vg_uuid", "vg_size", "vg_free", "vg_extent_size",
             "vg_extent_count", "vg_free_count", "pv_count", "lv_count", "snap_count",
             "vg_seqno", "vg_permissions", "vg_extendable", "vg_exported", "vg_partial",
             "vg_shared", "vg_lock_type", "vg_lock_args", "vg_systemid", "vg_tags", "vg_mda_count",
             "vg_mda_free", "vg_attr", "vg_mda_size")
# ``vgs`` also names each VG's PVs (pv_name: one row per PV, merged by the parser), so
# a VG's PV list costs no second LVM run; fullreport takes them from its PV subreport.
VG_FIELDS = (*VG_ONLY_FIELDS, "pv_name")
# segtype, devices and seg_*: segment fields: LVM prints one row per segment.
# vg_tags (in pv and lv reports too): a scoped caller's read is filtered by them, from
# the same run.
LV_FIELDS = ("lv_name", "vg_name", "lv_full_name", "lv_uuid", "lv_path", "lv_size",
             "segtype", "lv_active", "origin", "pool_lv",
             "data_percent", "metadata_percent", "devices", "lv_tags", "lv_attr",
             "lv_device_open", "lv_lockargs", "seg_start_pe", "seg_size_pe", "vg_tags")
# fullreport keeps segment fields in a subreport of their own, joined by lv_uuid.
SEG_FIELDS = ("lv_uuid", "segtype", "devices", "seg_start_pe", "seg_size_pe")
LV_ONLY_FIELDS = tuple(f for f in LV_FIELDS if f not in SEG_FIELDS[1:])
# lv_open: where an LV's device is (its kernel major:minor; -1 when inactive)
LV_DEVICE_FIELDS = ("lv_full_name", "lv_path", "lv_active", "lv_kernel_major",
                    "lv_kernel_minor", "lv_size")

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


def scan_args(devices: Sequence[str]) -> list[str]:
    """LVM's ``--devices``, once per device (validated real paths under /dev, without
    commas, which LVM would split at): the call's device scan sees only these."""
    return [arg for dev in devices for arg in ("--devices", dev)]


def report_argv(kind: str, *, names: Sequence[str] = (), select: str | None = None,
                extra_config: str | None = None, scan: Sequence[str] = (),
                fields: Sequence[str] = ()) -> list[str]:
    """``pvs``/``vgs``/``lvs`` with an explicit field list (the kind's, unless
    ``fields``). ``names`` are validated device paths, VG names or ``vg/lv`` names
    (none can start with ``-``)."""
    fields = fields or {"pv": PV_FIELDS, "vg": VG_FIELDS, "lv": LV_FIELDS}[kind]
    argv = _common(f"{kind}s", extra_config)
    argv += [*_REPORT_OPTIONS, *scan_args(scan), "-o", ",".join(fields)]
    if select is not None:
        argv += ["--select", select]
    argv += list(names)
    return argv


# The watcher's poll: which PVs exist, in which VGs, at which VG seqno (one cheap run)
POLL_FIELDS = ("pv_name", "pv_uuid", "dev_size", "vg_name", "vg_uuid", "vg_seqno", "vg_tags")


def poll_argv(*, extra_config: str | None = None) -> list[str]:
    return [*_common("pvs", extra_config), *_REPORT_OPTIONS, "-o", ",".join(POLL_FIELDS)]


def fullreport_argv(*, vg: str | None = None, extra_config: str | None = None,
                    scan: Sequence[str] = ()) -> list[str]:
    """One LVM run reporting PVs, VGs and LVs consistently (``lvm fullreport``)."""
    argv = _common("fullreport", extra_config)
    argv += [*_REPORT_OPTIONS, *scan_args(scan), "-o", ",".join(VG_ONLY_FIELDS),
             "--configreport", "pv", "-o", ",".join(PV_FIELDS),
             "--configreport", "lv", "-o", ",".join(LV_ONLY_FIELDS),
             "--configreport", "seg", "-o", ",".join(SEG_FIELDS),
             "--configreport", "pvseg", "-o", "pvseg_start"]
    if vg is not None:
        argv.append(vg)
    return argv


def config_argv(*keys: str, extra_config: str | None = None) -> list[str]:
    """LVM's values of configuration ``keys`` (fixed names, never a caller's), as LVM
    runs for the daemon: ``key=value`` lines on stdout (none for an unset list)."""
    return [*_common("config", extra_config), "--typeconfig", "full", *keys]


def change_argv(command: str, args: Sequence[str], *, extra_config: str | None = None,
                json_log: bool = True, scan: Sequence[str] = ()) -> list[str]:
    """A mutating command; its output is LVM's JSON command log (``json_log``) or, for
    pvmove, its progress lines."""
    fmt = ["--reportformat", "json"] if json_log else []
    return [*_common(command, extra_config, command_log=json_log), *fmt, *scan_args(scan),
            *args]


def vgck_argv(vg: str, *, extra_config: str | None = None,
              scan: Sequence[str] = ()) -> list[str]:
    """LVM's consistency check of one VG; its output is the JSON command log."""
    return [*_common("vgck", extra_config), "--reportformat", "json", *scan_args(scan), vg]


def size_arg(size: int) -> str:
    """A byte size as LVM's ``--size`` value: LVM wants whole 512-byte sectors, so round
    up (LVM then rounds up to a whole extent)."""
    return f"{-(-size // SECTOR)}s"
