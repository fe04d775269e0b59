"""The cluster tier (make test-cluster): two full-system guests sharing one disk, each
with sanlock, lvmlockd and lvmsuperd (its Debian package), host ids 1 and 2; the
scenarios of a shared VG, each a test, in the order of the files (they build on each
other: one cluster for the session).

Runs on the host as root with --confcutdir tests/cluster (the host tiers' conftest is
not loaded), LVMSUPER_DEB naming the package and LVMSUPER_CLUSTER_RESULTS the results
directory. Anywhere else every test fails rather than skips.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import Cluster


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "not running as root"
    if not os.environ.get("LVMSUPER_DEB", "").endswith(".deb"):
        return "LVMSUPER_DEB does not name the package to install"
    if not os.environ.get("LVMSUPER_CLUSTER_RESULTS"):
        return "LVMSUPER_CLUSTER_RESULTS is not set"
    for tool in ("qemu-system-x86_64", "sanlock", "lvmlockd"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} is not installed (make install-cluster-tier)"
    return None


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    problem = _problem()
    if problem:
        pytest.fail(f"tests/cluster run through `make test-cluster`: {problem}",
                    pytrace=False)
    results = Path(os.environ["LVMSUPER_CLUSTER_RESULTS"]).resolve()
    c = Cluster(results, os.path.abspath(os.environ["LVMSUPER_DEB"]))
    try:
        c.boot()
        yield c
    finally:
        c.close()
