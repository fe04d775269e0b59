"""The wire protocol, sans I/O: JSON-RPC 2.0, one UTF-8 JSON object per line.

``LineCodec`` turns received bytes into decoded messages and messages into bytes; its
size limit lives inside it, so a peer can never make it buffer more than one line of
``max_line`` bytes. The request/response helpers check JSON-RPC shape only; what a
method's params mean is the daemon's business.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import (INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, InvalidRequest,
                     LvmSuperError, error_from_wire)

__all__ = ["LineCodec", "BadLine", "Request", "parse_request", "encode_result", "Encoded",
           "dumps",
           "encode_error", "make_request", "method_not_found", "Response", "parse_response", "DEFAULT_MAX_LINE"]

DEFAULT_MAX_LINE = 1024 * 1024
MAX_JSON_DEPTH = 32


@dataclass(frozen=True, slots=True)
class BadLine:
    """A received line that is not a JSON value; the connection ends after it."""

    error: InvalidRequest


class LineCodec:
    """Splits a byte stream into JSON values, one per ``\\n``-terminated line."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, *, check_depth: bool = True) -> None:
        self.max_line = max_line
        # the daemon checks how deep its peers' requests nest; a client reading the
        # daemon's answers need not walk every one of them (json refuses a runaway
        # nesting by itself, as RecursionError)
        self.check_depth = check_depth
        self._buffer = bytearray()
        self.broken = False

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held so far."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Any]:
        """Decoded values (or ``BadLine``) for every complete line in ``data``.

        After a ``BadLine`` the stream cannot be trusted, so nothing more is decoded.
        """
        if self.broken:
            return []
        out: list[Any] = []
        self._buffer += data
        while not self.broken:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_line:
                    out.append(self._fail(f"request line exceeds {self.max_line} bytes"))
                break
            if end > self.max_line:
                out.append(self._fail(f"request line exceeds {self.max_line} bytes"))
                break
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if line.strip():
                out.append(self._decode(line))
        return out

    def _decode(self, line: bytes) -> Any:
        try:
            value = json.loads(line.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError:
            return self._fail("request line is not valid UTF-8")
        except (ValueError, RecursionError) as exc:
            return self._fail(f"request line is not valid JSON: {exc}")
        if self.check_depth and _depth(value) > MAX_JSON_DEPTH:
            return self._fail(f"request nests deeper than {MAX_JSON_DEPTH} levels")
        return value

    def _fail(self, message: str) -> BadLine:
        self.broken = True
        self._buffer.clear()
        return BadLine(InvalidRequest(message, code=PARSE_ERROR))

    @staticmethod
    def encode(message: dict[str, Any]) -> bytes:
        result = message.get("result")
        if isinstance(result, Encoded):  # a result encoded once, sent many times
            return (f'{{"jsonrpc":"2.0","id":{dumps(message["id"])},"result":'
                    f'{result.text}}}\n').encode()
        return dumps(message).encode() + b"\n"


def dumps(value: Any) -> str:
    """The wire's JSON text of ``value`` (compact, UTF-8 as is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Encoded:
    """A result already in its wire form (JSON text): the daemon's read cache keeps the
    encoding of an answer it gives again and again."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


@dataclass(frozen=True, slots=True)
class Request:
    id: int | str
    method: str
    params: dict[str, Any]


def parse_request(value: Any) -> Request:
    """Checks JSON-RPC request shape; raises InvalidRequest carrying ``id`` if known."""
    if isinstance(value, list):
        raise _shape("batch requests are not supported; send one object per line")
    if not isinstance(value, dict):
        raise _shape("a request must be a JSON object")
    rid = value.get("id")
    if "id" not in value or rid is None:
        raise _shape("notifications are not supported; every request needs an id")
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        raise _shape("id must be a string or an integer")
    if value.get("jsonrpc") != "2.0":
        raise _shape('"jsonrpc" must be "2.0"', rid)
    unknown = sorted(set(value) - {"jsonrpc", "id", "method", "params"})
    if unknown:
        raise _shape(f"unknown request member {unknown[0]!r}", rid)
    method = value.get("method")
    if not isinstance(method, str) or not method:
        raise _shape('"method" must be a non-empty string', rid)
    params = value.get("params", {})
    if not isinstance(params, dict):
        raise InvalidRequest('"params" must be a JSON object (named parameters)',
                             field="params", id=rid)
    return Request(rid, method, params)


def _shape(message: str, rid: Any = None) -> InvalidRequest:
    return InvalidRequest(message, code=INVALID_REQUEST, id=rid)


def method_not_found(method: str) -> InvalidRequest:
    shown = method if len(method) <= 100 else method[:100] + "..."
    return InvalidRequest(f"unknown method {shown!r}", code=METHOD_NOT_FOUND, field="method")


def encode_result(rid: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def encode_error(rid: Any, error: LvmSuperError) -> dict[str, Any]:
    wire = error.to_wire()
    wire["data"].pop("id", None)
    return {"jsonrpc": "2.0", "id": rid, "error": wire}


def make_request(rid: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


@dataclass(frozen=True, slots=True)
class Response:
    """A response (``id`` set) or a notification (``method`` set) from the daemon."""

    id: Any
    result: Any = None
    error: LvmSuperError | None = None
    method: str | None = None
    params: Any = None


def parse_response(value: Any) -> Response:
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        raise ValueError(f"not a JSON-RPC 2.0 message: {value!r:.200}")
    if "id" not in value and isinstance(value.get("method"), str):
        return Response(id=None, method=value["method"], params=value.get("params"))
    if "error" in value:
        return Response(id=value.get("id"), error=error_from_wire(value["error"]))
    if "result" in value:
        return Response(id=value.get("id"), result=value["result"])
    raise ValueError(f"response has neither result nor error: {value!r:.200}")
