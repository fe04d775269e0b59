"""The wire codec and JSON-RPC shape checks, without sockets.

What a peer would notice: requests split over several reads arrive whole, a bad line
ends the stream with a parse error (and nothing after it is trusted), and every
malformed request is refused as InvalidRequest carrying its id when one is known.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvmsuper.client.errors import (INVALID_REQUEST, PARSE_ERROR, InvalidRequest, LvmFailed,
                                    LvmSuperError, NotFound)
from lvmsuper.client.protocol import (DEFAULT_MAX_LINE, MAX_JSON_DEPTH, BadLine, LineCodec,
                                      Request, encode_error, encode_result, make_request,
                                      method_not_found, parse_request, parse_response)

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {}}


def _line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


# ---- LineCodec.feed ------------------------------------------------------------

def test_default_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_LINE == 1024 * 1024
    assert LineCodec().max_line == DEFAULT_MAX_LINE


def test_one_line_gives_one_message() -> None:
    assert LineCodec().feed(_line(PING)) == [PING]


def test_pipelined_lines_in_one_chunk_come_out_in_order() -> None:
    msgs = [dict(PING, id=i) for i in range(5)]
    data = b"".join(_line(m) for m in msgs)
    assert LineCodec().feed(data) == msgs


def test_line_split_across_chunks_is_reassembled() -> None:
    codec = LineCodec()
    data = _line(PING)
    assert codec.feed(data[:7]) == []
    assert codec.pending == 7
    assert codec.feed(data[7:20]) == []
    assert codec.feed(data[20:]) == [PING]
    assert codec.pending == 0


def test_byte_at_a_time_feed() -> None:
    codec = LineCodec()
    out: list[Any] = []
    for b in _line(PING) + _line(dict(PING, id=2)):
        out += codec.feed(bytes([b]))
    assert out == [PING, dict(PING, id=2)]


def test_partial_line_is_held_until_its_newline() -> None:
    codec = LineCodec()
    data = _line(PING) + b'{"jsonrpc": "2.0", "id": 2'
    assert codec.feed(data) == [PING]
    assert codec.pending == len(b'{"jsonrpc": "2.0", "id": 2')
    assert codec.feed(b', "method": "vgs"}\n') == [
        {"jsonrpc": "2.0", "id": 2, "method": "vgs"}]


def test_blank_lines_are_ignored() -> None:
    codec = LineCodec()
    assert codec.feed(b"\n\n   \n\t\r\n") == []
    assert codec.feed(b"\n" + _line(PING) + b"\n\n") == [PING]
    assert not codec.broken


def test_crlf_terminated_line_is_accepted() -> None:
    assert LineCodec().feed(json.dumps(PING).encode() + b"\r\n") == [PING]


def test_line_of_exactly_max_line_bytes_is_accepted() -> None:
    body = b'{"p":"' + b"x" * (100 - 8) + b'"}'
    assert len(body) == 100
    assert LineCodec(max_line=100).feed(body + b"\n") == [{"p": "x" * 92}]


def test_complete_line_over_max_line_is_badline_and_codec_stops() -> None:
    codec = LineCodec(max_line=100)
    big = b'{"p":"' + b"x" * 200 + b'"}\n'
    out = codec.feed(big + _line(PING))
    assert len(out) == 1 and isinstance(out[0], BadLine)
    assert isinstance(out[0].error, InvalidRequest)
    assert out[0].error.code == PARSE_ERROR
    assert "exceeds 100 bytes" in out[0].error.message
    assert codec.broken
    # Nothing after a bad line is decoded, not even valid requests.
    assert codec.feed(_line(PING)) == []
    assert codec.pending == 0


def test_messages_before_an_oversized_line_are_still_delivered() -> None:
    codec = LineCodec(max_line=100)
    out = codec.feed(_line(PING) + b"y" * 300 + b"\n")
    assert out[0] == PING
    assert isinstance(out[1], BadLine)


def test_incomplete_buffer_over_max_line_is_badline_without_waiting_for_newline() -> None:
    codec = LineCodec(max_line=100)
    assert codec.feed(b"x" * 60) == []
    out = codec.feed(b"x" * 60)
    assert len(out) == 1 and isinstance(out[0], BadLine)
    assert out[0].error.code == PARSE_ERROR
    assert codec.broken
    # The buffer is dropped: a peer cannot make the codec hold more.
    assert codec.pending == 0
    assert codec.feed(b"x" * 10_000) == []
    assert codec.pending == 0


def test_invalid_json_is_badline() -> None:
    codec = LineCodec()
    out = codec.feed(b'{"jsonrpc": "2.0", "id": 1,,}\n' + _line(PING))
    assert len(out) == 1 and isinstance(out[0], BadLine)
    assert out[0].error.name == "InvalidRequest"
    assert out[0].error.code == PARSE_ERROR
    assert "not valid JSON" in out[0].error.message
    assert codec.broken


def test_non_json_constant_nan_is_badline() -> None:
    # NaN/Infinity are not JSON (RFC 8259); the contract closes on invalid JSON.
    out = LineCodec().feed(b'{"jsonrpc": "2.0", "id": 1, "method": "lvs", '
                           b'"params": {"wait": NaN}}\n')
    assert len(out) == 1 and isinstance(out[0], BadLine)


def test_non_utf8_bytes_are_badline() -> None:
    out = LineCodec().feed(b'{"method": "\xff\xfe"}\n')
    assert len(out) == 1 and isinstance(out[0], BadLine)
    assert "UTF-8" in out[0].error.message
    assert out[0].error.code == PARSE_ERROR


def _nested(depth: int) -> bytes:
    return b"[" * (depth - 1) + b"{}" + b"]" * (depth - 1) + b"\n"


def test_nesting_at_the_limit_is_accepted() -> None:
    out = LineCodec().feed(_nested(MAX_JSON_DEPTH))
    assert len(out) == 1 and not isinstance(out[0], BadLine)


def test_nesting_deeper_than_the_limit_is_badline() -> None:
    out = LineCodec().feed(_nested(MAX_JSON_DEPTH + 1))
    assert len(out) == 1 and isinstance(out[0], BadLine)
    assert str(MAX_JSON_DEPTH) in out[0].error.message


def test_pathologically_deep_nesting_is_badline_not_a_crash() -> None:
    out = LineCodec().feed(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert len(out) == 1 and isinstance(out[0], BadLine)


def test_encode_is_one_compact_utf8_line_and_roundtrips_non_ascii() -> None:
    msg = {"jsonrpc": "2.0", "id": "é-1", "result": {"tags": ["größe", "日本", "a\nb"]}}
    data = LineCodec.encode(msg)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert "größe".encode() in data  # UTF-8, not \u escapes
    assert b", " not in data and b": " not in data
    assert LineCodec().feed(data) == [msg]


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(
        st.dictionaries(
            st.text(max_size=8),
            st.recursive(
                st.none() | st.booleans() | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                lambda inner: st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                max_leaves=10),
            max_size=5),
        max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_feed_reassembles_any_chunking(messages: list[dict[str, Any]],
                                       cuts: list[int]) -> None:
    stream = b"".join(LineCodec.encode(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    codec = LineCodec()
    out: list[Any] = []
    for chunk in chunks:
        out += codec.feed(chunk)
    assert out == messages
    assert codec.pending == 0 and not codec.broken


# ---- parse_request ---------------------------------------------------------------

def _bad(value: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_request(value)
    return info.value


def test_valid_request() -> None:
    req = parse_request({"jsonrpc": "2.0", "id": 7, "method": "lvs",
                         "params": {"vg": "vg0"}})
    assert req == Request(7, "lvs", {"vg": "vg0"})


def test_string_id_and_missing_params() -> None:
    assert parse_request({"jsonrpc": "2.0", "id": "a1", "method": "ping"}) == \
        Request("a1", "ping", {})


def test_batch_is_refused() -> None:
    err = _bad([PING])
    assert err.code == INVALID_REQUEST
    assert "batch" in err.message


def test_non_object_is_refused() -> None:
    assert _bad("ping").code == INVALID_REQUEST
    assert _bad(42).code == INVALID_REQUEST


def test_notification_without_id_is_refused() -> None:
    err = _bad({"jsonrpc": "2.0", "method": "ping"})
    assert err.code == INVALID_REQUEST
    assert "notification" in err.message


def test_null_id_is_refused_as_notification() -> None:
    err = _bad({"jsonrpc": "2.0", "id": None, "method": "ping"})
    assert err.code == INVALID_REQUEST
    assert "id" not in err.data


@pytest.mark.parametrize("rid", [True, False, 1.5, [1], {"a": 1}])
def test_id_of_wrong_type_is_refused(rid: Any) -> None:
    err = _bad({"jsonrpc": "2.0", "id": rid, "method": "ping"})
    assert err.code == INVALID_REQUEST
    assert "id must be" in err.message


@pytest.mark.parametrize("version", [None, "1.0", 2.0, "2"])
def test_missing_or_wrong_jsonrpc_is_refused_with_the_id(version: Any) -> None:
    value: dict[str, Any] = {"id": 9, "method": "ping"}
    if version is not None:
        value["jsonrpc"] = version
    err = _bad(value)
    assert err.code == INVALID_REQUEST
    assert err.data["id"] == 9


def test_unknown_member_is_refused_and_named() -> None:
    err = _bad({"jsonrpc": "2.0", "id": 3, "method": "ping", "parms": {}})
    assert err.code == INVALID_REQUEST
    assert "'parms'" in err.message
    assert err.data["id"] == 3


@pytest.mark.parametrize("method", ["", None, 5, ["ping"]])
def test_empty_or_non_string_method_is_refused(method: Any) -> None:
    err = _bad({"jsonrpc": "2.0", "id": 4, "method": method})
    assert err.code == INVALID_REQUEST
    assert err.data["id"] == 4


@pytest.mark.parametrize("params", [[], ["vg0"], "vg0", None, 1])
def test_params_not_an_object_is_refused_naming_params(params: Any) -> None:
    err = _bad({"jsonrpc": "2.0", "id": 5, "method": "lvs", "params": params})
    assert err.data["field"] == "params"
    assert err.data["id"] == 5


def test_method_not_found_names_the_method() -> None:
    err = method_not_found("lvzap")
    assert err.code == -32601
    assert "'lvzap'" in err.message
    assert err.data["field"] == "method"


# ---- encode_result / encode_error / parse_response -------------------------------

def test_encode_result() -> None:
    assert encode_result(3, {"ok": 1}) == {"jsonrpc": "2.0", "id": 3, "result": {"ok": 1}}


def test_make_request_shape_is_accepted_by_parse_request() -> None:
    msg = make_request(12, "lvs", {"vg": "vg0"})
    assert parse_request(msg) == Request(12, "lvs", {"vg": "vg0"})


def test_encode_error_carries_name_and_data_but_not_the_internal_id() -> None:
    err = InvalidRequest("bad", field="size", id=99)
    msg = encode_error(99, err)
    assert msg == {"jsonrpc": "2.0", "id": 99,
                   "error": {"code": -32602, "message": "bad",
                             "data": {"name": "InvalidRequest", "field": "size"}}}
    # The exception itself is unchanged (its data still knows the id).
    assert err.data["id"] == 99


def test_encode_error_survives_the_wire() -> None:
    err = LvmFailed("vgcreate failed", argv=["vgcreate", "vg0"], rc=5,
                    log=[{"log_message": "x"}], stderr="")
    line = LineCodec.encode(encode_error(1, err))
    resp = parse_response(LineCodec().feed(line)[0])
    assert resp.id == 1
    assert type(resp.error) is LvmFailed
    assert resp.error.message == "vgcreate failed"
    assert resp.error.data == {"argv": ["vgcreate", "vg0"], "rc": 5,
                               "log": [{"log_message": "x"}], "stderr": ""}


def test_parse_response_result() -> None:
    resp = parse_response({"jsonrpc": "2.0", "id": 4, "result": []})
    assert resp.id == 4 and resp.result == [] and resp.error is None and resp.method is None


def test_parse_response_null_result_is_a_result() -> None:
    resp = parse_response({"jsonrpc": "2.0", "id": 4, "result": None})
    assert resp.id == 4 and resp.error is None


def test_parse_response_error_maps_to_the_right_class() -> None:
    resp = parse_response({"jsonrpc": "2.0", "id": 8, "error": {
        "code": -32002, "message": "VG vg9 not found",
        "data": {"name": "NotFound", "object_type": "vg", "object_name": "vg9"}}})
    assert resp.id == 8
    assert isinstance(resp.error, NotFound)
    assert resp.error.data == {"object_type": "vg", "object_name": "vg9"}
    assert resp.error.code == -32002


def test_parse_response_notification() -> None:
    note = {"jsonrpc": "2.0", "method": "changed",
            "params": {"objects": [{"type": "lv", "name": "vg0/lv0"}]}}
    resp = parse_response(note)
    assert resp.id is None
    assert resp.method == "changed"
    assert resp.params == note["params"]
    assert resp.result is None and resp.error is None


@pytest.mark.parametrize("value", [
    [], "x", {"id": 1, "result": 1}, {"jsonrpc": "1.0", "id": 1, "result": 1},
    {"jsonrpc": "2.0", "id": 1},
])
def test_parse_response_rejects_non_responses(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_response(value)


def test_parse_response_error_from_unknown_daemon_version_is_base_class() -> None:
    resp = parse_response({"jsonrpc": "2.0", "id": 1, "error": {
        "code": -32050, "message": "new", "data": {"name": "FutureError"}}})
    assert type(resp.error) is LvmSuperError
    assert resp.error.message == "new"
