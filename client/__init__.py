"""lvmsuper's client: typed access to lvmsuperd over its Unix socket (or D-Bus).

The contract lives here (models, errors, wire codec); the daemon imports it, never the
reverse, so a caller installs this package without any daemon dependency::

    from lvmsuper.client import Client
    with Client() as lvm:
        for vg in lvm.vgs():
            print(vg.name, vg.free)

Every daemon method is a method of ``Client`` and, as a coroutine, of ``AsyncClient``
(declared once, in ``_core.Methods``).
"""

__version__ = "0.1.0"

from .errors import (AlreadyExists, Busy, ConnectionFailed, InUse, Internal, InvalidRequest,
                     LockConflict, LvmFailed, LvmOutputInvalid, LvmSuperError, NotFound, PermissionDenied,
                     Timeout)
from .models import LV, PV, VG, Job
from ._core import DEFAULT_TIMEOUT, Report
from .sync import Client, JobRef, default_socket_path
from .aio import AsyncClient

__all__ = ["__version__", "Client", "AsyncClient", "JobRef", "Report", "default_socket_path",
           "DEFAULT_TIMEOUT",
           "PV", "VG", "LV", "Job",
           "LvmSuperError", "InvalidRequest", "PermissionDenied", "NotFound",
           "AlreadyExists", "LvmFailed", "LvmOutputInvalid", "Timeout", "Busy", "InUse", "LockConflict",
           "Internal", "ConnectionFailed"]
