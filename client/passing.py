"""Descriptors that come with answers (``lv_open``), sans I/O apart from closing them.

Rule: every descriptor a client receives has exactly one owner at every moment. The
daemon sends an answer's descriptors as SCM_RIGHTS on the first byte of its line; the
kernel ends a read right after the bytes that carried them, so the descriptors read
together with a chunk belong to the last line that starts in that chunk
(``FdLineCodec``). A received answer's descriptors go to the caller only as what the
method returns (``received``: lv_open's ``fd`` becomes the descriptor itself); any
other descriptor, on any other line, an error or a notification, is closed at once.
"""

from __future__ import annotations

import array
import io
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import LvmSuperError
from .protocol import BadLine, LineCodec

__all__ = ["OPENS", "MAX_FDS", "FdLineCodec", "fds_from", "close_fds", "received", "as_file",
           "recv_with_fds"]

OPENS = frozenset({"lv_open"})  # methods whose answer carries a descriptor
MAX_FDS = 8  # room for descriptors per read; the kernel closes any beyond it


def close_fds(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def fds_from(ancdata: Sequence[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in a ``recvmsg`` answer's ancillary data (SCM_RIGHTS)."""
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            found = array.array("i")
            found.frombytes(data[:len(data) - len(data) % found.itemsize])
            fds.extend(found)
    return fds


def recv_with_fds(sock: socket.socket, size: int) -> tuple[bytes, list[int]]:
    """One read from a Unix socket, with the descriptors that came along (close-on-exec
    from the start: a child the caller starts meanwhile never inherits one)."""
    data, ancdata, _flags, _addr = sock.recvmsg(
        size, socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize), socket.MSG_CMSG_CLOEXEC)
    return data, fds_from(ancdata)


class FdLineCodec:
    """A ``LineCodec`` whose lines may carry descriptors: ``feed(data, fds)`` returns
    (message, its descriptors) for every complete line."""

    def __init__(self, max_line: int, *, check_depth: bool = True) -> None:
        self.codec = LineCodec(max_line, check_depth=check_depth)
        self._fds: list[int] = []  # those of the line being read

    def feed(self, data: bytes, fds: Sequence[int] = ()) -> list[tuple[Any, list[int]]]:
        if not fds:
            return self._feed(data)
        # the last line that starts in this chunk carries them
        end = data.rfind(b"\n", 0, max(len(data) - 1, 0))
        start = end + 1 if end >= 0 else 0
        out = self._feed(data[:start]) if start else []
        self._fds.extend(fds)
        return out + self._feed(data[start:])

    def _feed(self, data: bytes) -> list[tuple[Any, list[int]]]:
        out: list[tuple[Any, list[int]]] = []
        for message in self.codec.feed(data):
            out.append((message, self._fds))
            self._fds = []
        if self.codec.broken:  # nothing more will be decoded: nobody takes them
            self.close()
        for message, fds in out:
            if isinstance(message, BadLine):
                close_fds(fds)
                fds.clear()
        return out

    def close(self) -> None:
        close_fds(self._fds)
        self._fds = []


def received(method: str, result: Any, fds: list[int]) -> Any:
    """An answer's result with the descriptors its line carried: lv_open's ``fd`` (an
    index among them) becomes the descriptor itself, which the caller then owns; every
    other descriptor is closed."""
    keep = -1
    if method in OPENS and isinstance(result, dict):
        index = result.get("fd")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(fds):
            keep = fds[index]
    close_fds(fd for fd in fds if fd != keep)
    if method not in OPENS:
        return result
    if keep < 0:
        raise LvmSuperError(f"the {method} answer carried no descriptor")
    return {**result, "fd": keep}


def as_file(result: dict[str, Any], mode: str) -> io.FileIO:
    """lv_open's descriptor as an unbuffered file object (``rb``, or ``r+b`` for rw)
    that closes it."""
    try:
        handle = os.fdopen(result["fd"], "rb" if mode == "r" else "r+b", buffering=0)
    except BaseException:
        close_fds([result["fd"]])
        raise
    assert isinstance(handle, io.FileIO)
    return handle
