"""The watcher ends when told, whatever woke it in the same tick (found in the
full-system tier: a udev event as the stop came left the daemon running until the
watchdog killed it)."""

from __future__ import annotations

import asyncio

from lvmsuper.supervisor.config import Config
from lvmsuper.supervisor.core.service import Service
from lvmsuper.supervisor.lvm.calls import Lvm
from lvmsuper.supervisor.lvm.runner import ExecRunner
from lvmsuper.supervisor.watch.watcher import Watcher


def test_stop_in_the_tick_of_a_wake_up_ends_the_watcher() -> None:
    async def scenario() -> None:
        # Nobody subscribes: the watcher's scans read no LVM at all.
        service = Service(Config(), Lvm(ExecRunner("/nonexistent/lvm"), timeout=5,
                                        extra_config=None))
        for _ in range(20):  # each round: woken (a udev event) and stopped at once
            watcher = Watcher(service, 30.0)
            watcher.start()
            await asyncio.sleep(0.01)  # it waits for a wake-up now
            watcher.udev_event()
            stopping = asyncio.ensure_future(watcher.stop())
            done, _ = await asyncio.wait([stopping], timeout=5)
            assert done, "the watcher ran on after stop()"

    asyncio.run(scenario())
