"""Byte-exact SSE encoding (no I/O)."""

from __future__ import annotations

import pytest

from streamer import sse


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        ("hello", b"data: hello\n"),
        ("", b"data: \n"),
        ("a\nb", b"data: a\ndata: b\n"),
        ("a\r\nb", b"data: a\ndata: b\n"),
        ("a\rb", b"data: a\ndata: b\n"),
        ("a\r\rb", b"data: a\ndata: \ndata: b\n"),
        ("a\n", b"data: a\ndata: \n"),
        ("\n", b"data: \ndata: \n"),
        ("  lead", b"data:   lead\n"),
        ("h\u00e9llo \u2603 \U0001f600", "data: h\u00e9llo \u2603 \U0001f600\n".encode()),
        ("x\u2028y", "data: x\u2028y\n".encode()),  # not a line break in SSE
        ('{"a":1}', b'data: {"a":1}\n'),
    ],
)
def test_encode_event_is_byte_exact(data: str, wire: bytes) -> None:
    assert sse.encode_event("7-1", "message", data) == b"id: 7-1\nevent: message\n" + wire + b"\n"


@pytest.mark.parametrize(
    "data", ["hello", "", "a\nb", "multi\n\nblank", "\u00e9\U0001f600", "a\n", "  sp"]
)
def test_parse_inverts_encode(data: str) -> None:
    wire = sse.encode_event("1-2", "update", data).decode()
    assert list(sse.parse_stream(wire)) == [sse.ParsedEvent("1-2", "update", data)]


def test_crlf_and_lone_cr_both_become_lf_for_the_client() -> None:
    wire = sse.encode_event("1-1", "message", "a\r\nb\rc").decode()
    assert [e.data for e in sse.parse_stream(wire)] == ["a\nb\nc"]


def test_preamble_comment_and_ping() -> None:
    assert sse.encode_preamble(2500) == b"retry: 2500\n: connected\n\n"
    assert sse.PING == b": ping\n\n"
    assert sse.encode_comment("two\nlines") == b": two\n: lines\n\n"


def test_parse_skips_comments_and_incomplete_tail() -> None:
    text = "retry: 10\n: hi\n\nid: 1-1\ndata: x\n\nid: 1-2\ndata: partial\n"
    assert list(sse.parse_stream(text)) == [sse.ParsedEvent("1-1", "message", "x")]
