"""Reply encoding: every Response serialises to one well-formed HTTP/1.1 message.

``encode_response`` has a shortcut for the common reply (no extra headers, no
Connection header, a body under 256 bytes); this checks it against the
message spelled out by hand, for every shape of reply.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from corosm.frontends.http.messages import (
    CONN_CLOSE,
    CONN_HEADERS,
    CONN_KEEP,
    CONN_NONE,
    TEXT_PLAIN,
    Request,
    Response,
    encode_response,
)

_STATUS_TEXT = {200: b"OK", 201: b"Created", 404: b"Not Found", 503: b"Service Unavailable"}


def expected(resp: Response, conn: int, head_only: bool) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (resp.status, _STATUS_TEXT[resp.status]), b"Server: corosm"]
    if resp.content_type is not None:
        lines.append(b"Content-Type: " + resp.content_type)
    lines.append(b"Content-Length: %d" % len(resp.body))
    lines.extend(b"%s: %s" % pair for pair in resp.headers)
    if conn != CONN_NONE:
        lines.append(CONN_HEADERS[conn].rstrip(b"\r\n"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else resp.body)


@given(
    status=st.sampled_from(sorted(_STATUS_TEXT)),
    body=st.binary(max_size=300),  # both sides of the 256-byte shortcut
    content_type=st.sampled_from([b"text/plain", b"application/json", None]),
    headers=st.lists(st.tuples(st.sampled_from([b"Allow", b"Retry-After"]), st.binary(max_size=5))),
    conn=st.sampled_from([CONN_NONE, CONN_CLOSE, CONN_KEEP]),
    head_only=st.booleans(),
)
def test_every_reply_encodes_as_spelled_out(
    *,
    status: int,
    body: bytes,
    content_type: bytes | None,
    headers: list[tuple[bytes, bytes]],
    conn: int,
    head_only: bool,
) -> None:
    resp = Response(status, body, content_type, tuple(headers))
    wire = encode_response(resp, conn, head_only)
    assert wire == expected(resp, conn, head_only)
    assert encode_response(resp, conn, head_only) == wire  # the cached form is the same


def test_request_and_response_keep_their_dataclass_behaviour() -> None:
    # Both write their own __init__ (so that mypyc compiles it): it must take
    # the fields in order, with Response's defaults, and leave the cache out.
    request = Request(b"POST", b"/", ((b"host", b"x"),), b"body", True)
    assert [getattr(request, f.name) for f in dataclasses.fields(request)] == [
        b"POST", b"/", ((b"host", b"x"),), b"body", True
    ]  # fmt: skip
    assert request == Request(b"POST", b"/", ((b"host", b"x"),), b"body", True)
    assert request.header(b"host") == b"x"
    resp = Response(200)
    assert (resp.status, resp.body, resp.content_type, resp.headers, resp.close) == (
        200, b"", TEXT_PLAIN, (), False
    )  # fmt: skip
    encode_response(resp)  # fills the cache, which equality and repr ignore
    assert resp == Response(200) and "_wire" not in repr(resp)
    assert dataclasses.replace(resp, status=404) == Response(404)
    match Response(201, b"made", None, (), True):
        case Response(status, body, content_type, headers, close):
            assert (status, body, content_type, headers, close) == (201, b"made", None, (), True)
        case _:
            raise AssertionError("Response did not match by position")
