"""The unprivileged side of the benchmark: what a management daemon's user would run.

Started by bench.py as the throwaway user; reads one JSON request per line on stdin and
answers one JSON line on stdout, so the orchestrator can interleave its rounds. Every
timing is taken here, around exactly the caller's work (nothing else in the loop).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from lvmsuper.client import Client

MiB = 2**20


def timed(n: int, once: Callable[[], Any]) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        once()
        out.append(time.perf_counter() - t)
    return out


class Raw:
    """The line protocol with nothing on top: one request, one response line."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.next = 0

    def call(self, method: str, params: dict[str, Any] | None = None) -> bytes:
        self.next += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next, "method": method}
        if params:
            msg["params"] = params
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        line = self.file.readline()
        if b'"result"' not in line[:200] and b'"result"' not in line[-200:]:
            raise RuntimeError(f"{method} failed: {line[:300]!r}")
        return line

    def close(self) -> None:
        self.file.close()
        self.sock.close()


CLIENTS: dict[str, Client] = {}
RAWS: dict[str, Raw] = {}


def client(path: str) -> Client:
    if path not in CLIENTS:
        CLIENTS[path] = Client(path).__enter__()
    return CLIENTS[path]


def raw(path: str) -> Raw:
    if path not in RAWS:
        RAWS[path] = Raw(path)
    return RAWS[path]


def op_client(req: dict[str, Any]) -> list[float]:
    c = client(req["socket"])
    params = req.get("params") or {}
    return timed(req["n"], lambda: c.call(req["method"], **params))


def op_dbus(req: dict[str, Any]) -> list[float]:
    key = "dbus:" + req["bus"]
    if key not in CLIENTS:
        CLIENTS[key] = Client(transport="dbus", bus_address=req["bus"]).__enter__()
    c = CLIENTS[key]
    return timed(req["n"], lambda: c.call(req["method"]))


def op_raw(req: dict[str, Any]) -> list[float]:
    r = raw(req["socket"])
    return timed(req["n"], lambda: r.call(req["method"], req.get("params")))


def op_sudo(req: dict[str, Any]) -> list[float]:
    argv, env = ["sudo", "-n", *req["argv"]], req["env"]

    def once() -> None:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"sudo failed ({proc.returncode}): {proc.stderr[-300:]!r}")
    return timed(req["n"], once)


def op_check_sudo(req: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(["sudo", "-n", *req["argv"]], env=req["env"], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def op_change(req: dict[str, Any]) -> list[float]:
    """lvcreate (which answers with the new LV, read back by the daemon) then lvremove."""
    c, vg = client(req["socket"]), req["vg"]
    out = []
    for i in range(req["n"]):
        name = f"{req['prefix']}{i}"
        t = time.perf_counter()
        lv = c.call("lvcreate", vg=vg, name=name, size=req["size"])
        c.call("lvremove", lv=f"{vg}/{name}")
        out.append(time.perf_counter() - t)
        if getattr(lv, "full_name", None) != f"{vg}/{name}":
            raise RuntimeError(f"lvcreate answered {lv!r}")
    return out


def op_load(req: dict[str, Any]) -> dict[str, Any]:
    """``clients`` connections, each sending its next request as soon as the last one
    is answered, for ``seconds``: completed requests and their latencies."""
    return asyncio.run(_load(req["socket"], req["method"], req["clients"], req["seconds"]))


async def _load(path: str, method: str, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failed = 0
    stop_at = 0.0
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode() + b"\n"

    async def one() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_unix_connection(path, limit=64 * MiB)
        try:
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                writer.write(body)
                line = await reader.readline()
                if b'"result"' in line:
                    latencies.append(time.perf_counter() - t)
                else:
                    failed += 1
        finally:
            writer.close()

    stop_at = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return {"done": len(latencies), "failed": failed,
            "elapsed": time.perf_counter() - started, "latencies": latencies}


OPS = {"client": op_client, "raw": op_raw, "dbus": op_dbus, "sudo": op_sudo, "check_sudo": op_check_sudo,
       "change": op_change, "load": op_load}


def main() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        try:
            answer: Any = {"ok": OPS[req["op"]](req)}
        except Exception as exc:  # reported to the orchestrator, which decides
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
