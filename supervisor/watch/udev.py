"""udev's block-device events, through pyudev: the only place that knows udev.

Rule: an event only wakes the watcher (which reads LVM once for a whole burst); what
changed is decided from LVM's reports, never from the event. Where udevd does not run
(containers, build machines), there are no events: the watcher says so once and relies
on its poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

__all__ = ["watch_block_events", "UDEV_CONTROL"]

log = logging.getLogger("lvmsuperd.watch")

UDEV_CONTROL = "/run/udev/control"  # udevd's control socket: udevd runs


def watch_block_events(loop: asyncio.AbstractEventLoop,
                       on_event: Callable[[], None]) -> Callable[[], None] | None:
    """Calls ``on_event`` for every udev event of a block device (a disk or partition
    appearing, vanishing or changing; a device-mapper device of an LV); returns a
    function that stops it, or None (logged) where udev cannot be watched."""
    if not os.path.exists(UDEV_CONTROL):
        log.info("udev is not running here: changes made outside lvmsuper are found by "
                 "polling only ([events] poll_interval)")
        return None
    try:
        import pyudev
    except ImportError:
        log.warning("pyudev is not installed: changes made outside lvmsuper are found by "
                    "polling only ([events] poll_interval)")
        return None
    try:
        monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        monitor.filter_by("block")
        monitor.start()
    except Exception as exc:  # pyudev raises OSError and its own errors
        log.warning("cannot watch udev events (%s): polling only", exc)
        return None

    def readable() -> None:
        seen = False
        while monitor.poll(timeout=0) is not None:
            seen = True
        if seen:
            on_event()

    fd = monitor.fileno()
    loop.add_reader(fd, readable)
    log.info("watching udev block events")

    def stop() -> None:
        loop.remove_reader(fd)
    return stop
