"""``lvmsuperd``: start-up, transports, systemd notification and shutdown.

Runs in the foreground (systemd style). Start-up problems (bad config, missing group,
socket in use) are one clear line on stderr and exit code 1. SIGTERM stops accepting,
waits for running changes (never kills them) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from lvmsuper.client.errors import LvmSuperError

from .core.audit import AUDIT_LOGGER
from .core.auth import GroupAuthority
from .config import Config, ConfigError, check_socket_group, load_config
from .lvm.calls import Lvm
from .lvm.runner import ExecRunner
from .lvm.shell import ShellRunner
from .transports.unix import SocketInUse, SocketServer, bind_socket
from .watch.watcher import Watcher
from .core.service import Service

__all__ = ["main", "parser"]

log = logging.getLogger("lvmsuperd")


def parser() -> argparse.ArgumentParser:
    """lvmsuperd's command line (also the source of its man page's OPTIONS)."""
    p = argparse.ArgumentParser(prog="lvmsuperd", description="Privileged LVM helper daemon.")
    p.add_argument("--config", type=Path, help="configuration file "
                   "(default /etc/lvmsuper/lvmsuper.toml, optional)")
    p.add_argument("--socket", help="Unix socket path (overrides [server] socket)")
    p.add_argument("--no-dbus", action="store_true", help="do not serve D-Bus")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"],
                   help="least severe messages logged (default info; the audit always is)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration and exit")
    return p


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parser().parse_args(argv)


def setup_logging(level: str) -> None:
    """journald when it runs (structured fields kept), stderr otherwise."""
    handler: logging.Handler
    if os.path.exists("/run/systemd/journal/socket"):
        try:
            from systemd.journal import JournalHandler
            handler = JournalHandler(SYSLOG_IDENTIFIER="lvmsuperd")
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The audit trail is not chatter: --log-level warning or error must not drop it.
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.INFO)


class Notifier:
    """sd_notify; a missing or broken NOTIFY_SOCKET is never fatal. A failure is logged
    once (until a send works again), and every later message is still tried: giving
    up would stop WATCHDOG=1, and systemd would then kill a healthy daemon."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.failing = False

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        try:
            from systemd import daemon
            daemon.notify(message)
        except Exception as exc:  # noqa: BLE001 - notification is best effort
            if not self.failing:
                log.warning("sd_notify failed: %s (will keep trying)", exc)
            self.failing = True
        else:
            self.failing = False


def _listen_socket(config: Config) -> tuple[socket.socket, bool]:
    """The socket systemd passed (socket activation) or one bound here."""
    try:
        from systemd import daemon
        fds = daemon.listen_fds()
    except ImportError:
        fds = []
    if fds:
        return socket.socket(fileno=fds[0]), True
    return bind_socket(config.socket, config.socket_mode, check_socket_group(config)), False


async def serve(config: Config) -> int:
    notify = Notifier()
    runner: ExecRunner = (ShellRunner(config.lvm_binary, system_dir=config.lvm_system_dir,
                                      size=config.max_parallel)
                          if config.lvm_runner == "shell" else
                          ExecRunner(config.lvm_binary, system_dir=config.lvm_system_dir))
    lvm = Lvm(runner, timeout=config.lvm_timeout, extra_config=config.lvm_extra_config)
    service = Service(config, lvm, recent=runner.recent)
    try:  # proves the lvm binary runs, and status never needs an LVM slot for it
        await service.lvm_version()
    except LvmSuperError as exc:
        log.warning("cannot read LVM's version: %s", exc.message)
    sock, activated = _listen_socket(config)
    server = SocketServer(service, sock)
    await server.start()
    watcher = Watcher(service, config.events_poll_interval)
    watcher.start()
    try:
        dbus = await _start_dbus(service, config)
    except ConfigError:
        if not activated:
            os.unlink(config.socket)
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: _dump_recent(runner))
    log.info("serving on %s%s (lvm %s)", config.socket if not activated else "socket fd",
             " (socket-activated)" if activated else "", config.lvm_binary)
    notify("READY=1\nSTATUS=" + service.summary())
    keeper = asyncio.create_task(_keep_status(service, notify, stop, activated))
    await stop.wait()
    notify("STOPPING=1\nSTATUS=stopping: waiting for running requests and changes")
    log.info("stopping: no new connections or requests; waiting for %d request(s) and "
             "%d running job(s)", service.stats.in_flight, service.jobs.running)
    await server.stop_accepting()
    if dbus is not None:
        await dbus.stop_accepting()
    await service.drain()
    await watcher.stop()
    if dbus is not None:
        await dbus.stop()
    for task in list(server.connections):
        task.cancel()
    await runner.aclose()  # the shell runner's idle shells: stdin closed, waited for
    keeper.cancel()
    if not activated:
        try:
            os.unlink(config.socket)
        except OSError:
            pass
    # Done: a second SIGTERM must not turn exit status 0 into death by signal once the
    # loop (and its handlers) are gone. Blocked signals stay pending until exit.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    return 0


async def _start_dbus(service: Service, config: Config) -> Any:
    """The D-Bus transport per ``[dbus] enabled`` (``--no-dbus`` makes it false): None
    when not served; with ``true`` a bus that cannot be used is a start-up error."""
    if config.dbus_enabled is False:
        return None
    required = config.dbus_enabled is True
    try:
        from .transports.dbus import start_dbus
    except ImportError as exc:
        if required:
            raise ConfigError(f"dbus.enabled is true but {exc}") from None
        log.warning("not serving D-Bus: %s; serving the socket only", exc)
        return None
    return await start_dbus(service, config, required=required)


async def _keep_status(service: Service, notify: Notifier, stop: asyncio.Event,
                       activated: bool) -> None:
    """STATUS= kept current; WATCHDOG=1 at half the watchdog interval (this loop running
    is the proof the event loop is alive); idle exit when socket-activated. It runs until
    cancelled, the last thing before exit: a stop waits for running changes (a pvmove
    may take hours), and systemd's watchdog stays armed while it does."""
    usec = _watchdog_usec()
    interval = min(2.0, usec / 2e6) if usec > 0 else 2.0
    idle = service.config.idle_timeout
    if activated and idle > 0:
        interval = min(interval, max(0.1, idle / 2))  # idle exit close to idle_timeout
    last, idle_since = "", loop_time()
    while True:
        await asyncio.sleep(interval)
        message = "WATCHDOG=1\n" if usec > 0 else ""
        if stop.is_set():  # STATUS= says "stopping" from now on
            if message:
                notify(message)
            continue
        summary = service.summary()
        if summary != last:
            message += "STATUS=" + summary
            last = summary
        if message:
            notify(message)
        busy = service.stats.clients or service.jobs.running or service.stats.in_flight
        if busy:
            idle_since = loop_time()
        elif activated and idle > 0 and loop_time() - idle_since >= idle:
            log.info("idle for %g s: exiting (socket activation restarts on demand)", idle)
            stop.set()


def _watchdog_usec() -> int:
    """WATCHDOG_USEC as sd_watchdog_enabled() reads it: 0 when unset or malformed, or
    when WATCHDOG_PID names another process (the variable was inherited)."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        if pid and int(pid) != os.getpid():
            return 0
    except ValueError:
        return 0
    return max(usec, 0)


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def _dump_recent(runner: ExecRunner) -> None:
    log.info("recent LVM commands (%d):", len(runner.recent))
    for rec in runner.recent:
        log.info("  rc=%s %.1f ms %s | %s", rec.rc, rec.duration * 1000, " ".join(rec.argv),
                 rec.stderr.strip().replace("\n", " / ")[:300])


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    setup_logging(args.log_level)
    # The Python stack of every thread on SIGABRT (systemd's watchdog kill) and fatal
    # signals, on stderr (the journal under systemd): why it hung, not just that it did.
    faulthandler.enable(all_threads=True)
    try:
        config = load_config(args.config, socket=args.socket)
        if args.no_dbus:
            config = dataclasses.replace(config, dbus_enabled=False)
        if args.check_config:
            check_socket_group(config)
            GroupAuthority(config)  # warns of [access] groups that do not exist
            print(f"{config.source}: configuration OK")
            return 0
        return asyncio.run(serve(config))
    except (ConfigError, SocketInUse) as exc:
        print(f"lvmsuperd: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. --socket not absolute
        print(f"lvmsuperd: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
