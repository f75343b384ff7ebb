"""HTTP/1.1 connections on ``asyncio.Protocol`` and httptools: no task per request.

Theory of operation
-------------------
One :class:`HttpConnection` per socket. ``data_received`` feeds bytes to an
``httptools.HttpRequestParser``; its callbacks assemble a :class:`Request` and,
when a message is complete, call the handler *inside* the callback. The handler
returns a ready :class:`Response`, an ``asyncio.Future[Response]``, a
:class:`Deferred` (a future of anything plus a function that turns it into a
Response, which saves allocating a second future per request), or a
:class:`Later` that its producer resolves by a direct call (no future at all,
and no loop pass between the answer and its write).

Ordering (keep-alive and pipelining): replies leave strictly in request order.
Encoded bytes that may be sent now collect in ``_out``; a reply that is not
ready yet takes a :class:`_Slot` in the ``_pending`` queue, and every reply
after it queues behind it. When a slot fills, the ready prefix of the queue
moves to ``_out``. ``_out`` goes out in *one* ``transport.write`` per flush: at
the end of ``data_received`` and once per loop iteration after completions
(``call_soon``), so a burst of pipelined replies costs one syscall.

Limits answer with a clear text body and then close: a head over
``max_header_bytes`` or with more than ``max_headers`` fields -> 431 (and so
does a chunk header or trailer line longer than that), a body over
``max_body_bytes`` -> 413, anything the parser rejects -> 400, a request whose
bytes do not all arrive within ``request_timeout`` -> 408. A reply that takes
longer than ``response_timeout`` answers 503; when it comes later it is
dropped, as is a reply whose client has gone.

Versions: the parser takes HTTP/0.9 (a request line with no version), 1.0,
1.1 and 2.0; anything but 1.1 and 1.0 gets the 400 the parser gives an
unknown version (see ``_check_version``). The version is asked for (a string
the parser formats on each call, some 2,600 instructions) only where it is
not known for free: a request kept open without a ``Connection`` or
``Proxy-Connection`` header is HTTP/1.1 by the parser's own rule, so it is
asked only for a request with such a header or one that ends the
connection. llhttp also takes ``RTSP/1.x`` and ``ICE/1.x`` for the methods
it allows them and reports them as HTTP/1.x: it keeps no protocol name, and
httptools passes on no callback for it. Those are not told apart: only the
raw bytes could, searched on every read (``bytes.find`` costs some 1,000
instructions, where a whole request costs 15,000 compiled), and even then
the parser does not say where in them a request line starts.

No protocol switch: a request asking for one (``Upgrade``, ``CONNECT``) is
answered and the connection then closes; with a body, which the parser
would skip, it is refused (400). ``Expect: 100-continue`` gets ``100
Continue`` before its body (see ``_expect_or_upgrade``); another expectation
gets 417.

Time: one ``loop.call_at`` timer per connection, re-armed lazily. It fires at
the earliest of (partial request deadline, head-of-queue reply deadline, idle
deadline), acts on what is due and re-arms for what is next. Because replies
are queued in order with one timeout, the head of the queue always has the
earliest reply deadline.

Flow control: reading stops (``pause_reading``) while the peer has too many
replies pending, while the transport asked us to stop writing, or while the
connection is closing; it resumes when all of these clear.

Half-close: a client's EOF (``eof_received``) ends reading, not the
connection. The requests it sent in full are answered, then the connection
closes; only a request cut off by the EOF is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast

import httptools

from corosm.frontends.deadline import rearm
from corosm.frontends.http.messages import (
    CONN_CLOSE,
    CONN_KEEP,
    CONN_NONE,
    Deferred,
    Handler,
    HttpStats,
    Later,
    Limits,
    ReplyWaiter,
    Request,
    Response,
    encode_response,
    error_response,
)

log: Final = logging.getLogger("corosm.http")

_LINGER: Final = 2.0  # seconds to keep discarding input after our FIN
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Reject(Exception):
    """Raised from a parser callback to stop parsing with an error reply."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _StopParsing(Exception):
    """Raised from a parser callback when no further message may be read."""


class _Slot(ReplyWaiter):
    """A place in the reply queue, and the done-callback of the future that fills it."""

    __slots__ = ("conn", "conn_header", "dead", "deadline", "finish", "head_only", "resp")

    def __init__(
        self,
        conn: HttpConnection,
        finish: Callable[[asyncio.Future[Any]], Response] | None,
        conn_header: int,
        head_only: bool,
        deadline: float,
    ) -> None:
        self.conn = conn
        self.finish = finish
        self.conn_header = conn_header
        self.head_only = head_only
        self.deadline = deadline
        self.resp: Response | None = None
        self.dead = False  # timed out or client gone: a late reply is dropped

    def __call__(self, fut: asyncio.Future[Any]) -> None:
        if self.dead:
            # Retrieve the exception so asyncio does not log it as never retrieved.
            if not fut.cancelled():
                fut.exception()
            self.conn.stats.late_replies_dropped += 1
            return
        self.fill(_finish(fut, self.finish, self.conn.stats))

    def fill(self, resp: Response) -> None:
        """The reply is ready: write it now, or with the others ready this iteration."""
        conn = self.conn
        if self.dead:
            conn.stats.late_replies_dropped += 1
            return
        self.resp = resp
        pending = conn._pending
        if len(pending) == 1 and not conn._flush_scheduled:
            # The only reply owed (no pipelining): nothing to batch it with,
            # so write now rather than pay for a call_soon and a loop pass.
            conn._flush()
        else:
            conn._schedule_flush()

    def encode(self) -> bytes:
        resp = self.resp
        assert resp is not None
        if resp.close:
            self.conn_header = CONN_CLOSE
        return encode_response(resp, self.conn_header, self.head_only)


def _finish(
    fut: asyncio.Future[Any],
    finish: Callable[[asyncio.Future[Any]], Response] | None,
    stats: HttpStats,
) -> Response:
    try:
        if finish is not None:
            return finish(fut)
        resp = fut.result()
        if not isinstance(resp, Response):
            raise TypeError(f"handler future gave {type(resp).__name__}, not Response")
        return resp
    except Exception:
        stats.handler_crashes += 1
        log.exception("HTTP handler failed")
        return error_response(500, "internal error: the handler failed; see the server log")


# -- the connection -------------------------------------------------------------


class HttpConnection(asyncio.Protocol):
    """One client connection: parse, dispatch, reply in order, enforce limits."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        stats: HttpStats,
        on_lost: Callable[[HttpConnection], None] | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self._max_head = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self.stats = stats
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._now = self._loop.time()
        self._last_activity = self._now
        self._timer: asyncio.TimerHandle | None = None
        # The request being parsed.
        self._in_message = False
        self._message_started = 0.0
        self._head_done = False
        # Raw bytes fed since the parser last showed progress (the head's end,
        # a piece of body, the message's end): what it may be holding inside
        # one unfinished line of the head, a chunk header or a trailer.
        self._unparsed = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._method = b""
        # The version, if the head made it worth asking (on_headers_complete), else "".
        self._version = ""
        # Replies.
        self._out: list[bytes] = []
        self._close_after_out = False
        self._pending: deque[_Slot] = deque()
        self._flush_scheduled = False
        # Connection state.
        self._closing = False  # no more requests are read; close after the last reply
        self._switching = False  # the request being read asks to switch protocols
        self._draining = False  # graceful shutdown asked
        self._lost = False
        self._reading_paused = False
        self._write_paused = False
        self._lingering = False  # FIN sent; discarding input until the client closes
        self._eof = False  # the client half-closed: answer what it sent, then close
        self._linger_handle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        self.stats.connections_opened += 1
        self.stats.connections_open += 1
        self._arm(self._now + self.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.stats.connections_open -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._linger_handle is not None:
            self._linger_handle.cancel()
        for slot in self._pending:
            slot.dead = True
        self._pending.clear()
        self._out.clear()
        if self._on_lost is not None:
            self._on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # after Connection: close, an error or while lingering: discarded
        self._now = now = self._loop.time()
        self._last_activity = now
        self._unparsed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._reject(cause.status, cause.message)
            elif isinstance(cause, _StopParsing):
                pass
            else:  # a bug in our callbacks: answer, log, keep the server up
                log.error("HTTP parser callback failed", exc_info=cause)
                self._reject(500, "internal error while parsing the request")
        except httptools.HttpParserUpgrade:
            self._closing = True  # no protocol switch; what follows is not HTTP
            self._mark_last_close()
        except httptools.HttpParserError as exc:
            if not self._closing:  # "data after Connection: close" is not an error
                self._reject(400, f"malformed request: {_parser_message(exc)}")
        # The precise count happens in the callbacks; this bounds what the
        # parser may buffer inside one unfinished line (a header, a chunk
        # header, a trailer), which no callback sees until the line ends: to
        # the limit, plus 64 KiB, plus the part of one read after the last
        # progress it made (counting restarts there).
        overlong = self._unparsed > self.limits.max_header_bytes + 65536
        if overlong and not self._closing and self._in_message:
            self._reject(431, self._line_limit_message(self._unparsed))
        if self._in_message:
            self._arm(self._message_started + self.limits.request_timeout)
        pending = self._pending
        if self._out or self._closing or (pending and pending[0].resp is not None):
            self._flush()

    def eof_received(self) -> bool | None:
        # A client may half-close once it has sent its requests (nc -N,
        # shutdown(SHUT_WR)) and still wait for the replies: a write it sent
        # must be answered, not dropped. So read no more, answer every request
        # received in full, then close (``_flush`` does, once nothing is owed).
        # A request cut off by the EOF will never complete: it is dropped.
        self._eof = True
        self._closing = True
        self._in_message = False
        if self._lingering or not (self._pending or self._out):
            return None  # nothing owed: the transport closes now
        return True  # keep the write side open until the replies are out

    # -- httptools callbacks ------------------------------------------------

    def on_message_begin(self) -> None:
        if self._closing:  # a request pipelined after "Connection: close": ignore it
            raise _StopParsing
        self._in_message = True
        self._message_started = self._now
        self._head_done = False
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head:
            raise _Reject(431, self._head_limit_message(self._head_bytes))

    def on_header(self, name: bytes, value: bytes) -> None:
        # Hot path: the checks are inlined rather than calling a helper.
        headers = self._headers
        headers.append((name.lower(), value))
        if len(headers) > self._max_headers:
            raise _Reject(431, f"too many header fields: at most {self._max_headers} allowed")
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head:
            raise _Reject(431, self._head_limit_message(self._head_bytes))

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._unparsed = 0
        self._method = self._parser.get_method()
        ask_version = second_look = False
        for name, value in self._headers:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1  # the parser checked it
                if length > self.limits.max_body_bytes:
                    raise _Reject(413, self._body_limit_message(length))
            elif name in (b"connection", b"proxy-connection", b"expect", b"upgrade"):
                # (A tuple: a set would hash each name.) With a Connection or a
                # Proxy-Connection header, the parser keeps a request of any
                # version open (on_message_complete), so its version is checked.
                ask_version = True
                second_look = second_look or name in (b"expect", b"upgrade")
        if not ask_version:
            self._version = ""
            return
        self._version = version = self._parser.get_http_version()
        _check_version(version)
        if second_look:
            self._expect_or_upgrade(version)

    def _expect_or_upgrade(self, version: str) -> None:
        """A head that asks to switch protocols, or states an expectation.

        No protocol switch is made: a request asking for one is answered, and
        then the connection closes (the parser takes what follows for the
        other protocol). The parser skips the body of such a request, so one
        with a body is refused (400) rather than run without it.

        ``Expect: 100-continue`` is answered with ``100 Continue`` when the
        request has a body to come and no earlier reply is still owed (an
        interim reply may not overtake them; the client then sends its body
        after its own wait, as RFC 9110 allows). Any other expectation: 417.
        HTTP/1.0 knows no expectations: there ``Expect`` is ignored.
        """
        has_body, expect = False, b""
        for name, value in self._headers:
            if name == b"content-length":
                has_body = has_body or value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
            elif name == b"expect":
                expect = value
        if self._parser.should_upgrade():
            if has_body:
                raise _Reject(
                    400,
                    "this server speaks HTTP/1.1 only and does not switch protocols, and "
                    "a request that asks to (Upgrade, CONNECT) is read without its body; "
                    "send it without 'Connection: upgrade'",
                )
            self._switching = True  # its reply ends the connection, and says so
        if not expect or version == "1.0":
            return
        if expect.strip().lower() != b"100-continue":
            shown = expect.decode("latin-1")[:100]
            raise _Reject(417, f"cannot meet 'Expect: {shown}': only '100-continue' is known")
        if has_body and not self._pending:
            self._out.append(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            raise _Reject(413, self._body_limit_message(self._body_bytes))
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._unparsed = 0
        parser = self._parser
        keep_alive = parser.should_keep_alive() and not self._switching
        if keep_alive:
            # Only a Connection or Proxy-Connection header keeps a request
            # other than HTTP/1.1 open, and then on_headers_complete has
            # checked its version. 1.0 closes by default: say that we keep it open.
            conn_header = CONN_KEEP if self._version == "1.0" else CONN_NONE
        else:
            if not self._version:  # the last request of the connection: asked once
                _check_version(parser.get_http_version())
            conn_header = CONN_CLOSE
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(self._method, self._url, tuple(self._headers), body, keep_alive)
        self._head_done = False
        self.stats.requests += 1
        if not keep_alive or self._draining:
            self._closing = True
        self._dispatch(request, conn_header)

    # -- dispatch and replies ---------------------------------------------

    def _dispatch(self, request: Request, conn_header: int) -> None:
        head_only = request.method == b"HEAD"
        try:
            reply = self.handler(request)
        except Exception:
            self.stats.handler_crashes += 1
            log.exception("HTTP handler raised")
            reply = error_response(500, "internal error: the handler failed; see the server log")
        if isinstance(reply, Response):
            self._enqueue_ready(reply, conn_header, head_only)
            return
        if isinstance(reply, Later):
            if reply.resp is not None:
                self._enqueue_ready(reply.resp, conn_header, head_only)
                return
            slot = self._wait_for_reply(conn_header, head_only)
            reply.waiter = slot
            return
        if isinstance(reply, Deferred):
            fut, finish = reply.future, reply.finish
        else:
            fut, finish = reply, None
        if fut.done() and not self._pending:
            self._enqueue_ready(_finish(fut, finish, self.stats), conn_header, head_only)
            return
        fut.add_done_callback(self._wait_for_reply(conn_header, head_only, finish))

    def _wait_for_reply(
        self,
        conn_header: int,
        head_only: bool,
        finish: Callable[[asyncio.Future[Any]], Response] | None = None,
    ) -> _Slot:
        """Queue a slot for a reply still to come, under the response timeout."""
        limits = self.limits
        deadline = self._now + limits.response_timeout
        slot = _Slot(self, finish, conn_header, head_only, deadline)
        pending = self._pending
        pending.append(slot)
        # Deadlines grow along the queue, so the timer is nearly always armed
        # in time already; and one more slot can only make reading pause.
        timer = self._timer
        if timer is None or timer.when() > deadline:
            self._arm(deadline)
        if not self._reading_paused and (self._closing or len(pending) >= limits.max_pending):
            self._update_reading()
        return slot

    def _enqueue_ready(self, resp: Response, conn_header: int, head_only: bool) -> None:
        if self._pending:  # queue behind earlier replies that are not ready yet
            slot = _Slot(self, None, conn_header, head_only, 0.0)
            slot.resp = resp
            self._pending.append(slot)
            return
        if resp.close:
            conn_header = CONN_CLOSE
        self._out.append(encode_response(resp, conn_header, head_only))
        if conn_header == CONN_CLOSE:
            self._close_after_out = True
            self._closing = True

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Move the ready head of the queue to ``_out`` and write it in one call."""
        self._flush_scheduled = False
        if self._lost:
            return
        pending, out = self._pending, self._out
        while pending and pending[0].resp is not None and not self._close_after_out:
            slot = pending.popleft()
            out.append(slot.encode())
            if slot.conn_header == CONN_CLOSE:
                self._close_after_out = True
                self._closing = True
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            assert self._transport is not None
            self._transport.write(data)
        if self._close_after_out or (self._closing and not pending and not self._in_message):
            self._close()
            return
        if self._draining and not pending:
            self._close()
            return
        if self._reading_paused or len(pending) >= self.limits.max_pending:
            self._update_reading()

    def _reject(self, status: int, message: str) -> None:
        """Answer an unusable request after the replies before it, then close."""
        self.stats.reject(status)
        self._in_message = False
        self._closing = True
        self._enqueue_ready(error_response(status, message, close=True), CONN_CLOSE, False)
        self._update_reading()

    def _mark_last_close(self) -> None:
        """Make the last queued reply end the connection."""
        if self._pending:
            self._pending[-1].conn_header = CONN_CLOSE
        elif self._out:
            self._close_after_out = True

    def _close(self) -> None:
        """Close after a lingering half-close.

        Closing a socket with unread input makes the kernel send RST, which can
        destroy the reply still in flight (e.g. a 413 while the client keeps
        uploading). So: send FIN (``write_eof``), read and discard until the
        client's EOF, and close for good after ``_LINGER`` seconds at most.
        """
        transport = self._transport
        if transport is None or transport.is_closing() or self._lingering:
            return
        self._closing = True
        self._lingering = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._eof or not transport.can_write_eof():
            # After the client's EOF no input is left to be reset: close()
            # sends what is buffered, then FIN.
            transport.close()
            return
        transport.write_eof()
        self._linger_handle = self._loop.call_later(_LINGER, transport.close)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._lost or self._lingering:
            return
        depth = len(self._pending)
        # Hysteresis: once paused, resume only when half the queue has drained.
        limit = self.limits.max_pending // 2 if self._reading_paused else self.limits.max_pending
        pause = self._closing or self._write_paused or depth >= max(limit, 1)
        if pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    # -- shutdown -----------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful close: answer what was received completely, then close.

        A request still arriving is abandoned; idle connections close at once.
        """
        self._draining = True
        self._closing = True
        if self._lost:
            return
        if not self._pending:
            self._close_after_out = True
            self._flush()
            return
        self._mark_last_close()
        self._update_reading()

    def abort(self) -> None:
        """Close now, dropping whatever is still queued."""
        if self._transport is not None:
            self._transport.abort()

    # -- time -----------------------------------------------------------------

    def _arm(self, when: float) -> None:
        """Make sure the timer fires no later than ``when`` (a re-arm only if earlier)."""
        self._timer = rearm(self._timer, self._loop, when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._lost:
            return
        now = self._loop.time()
        self._now = now
        limits = self.limits
        if self._in_message and now >= self._message_started + limits.request_timeout:
            self._reject(408, f"request not received in full within {limits.request_timeout:g} s")
        pending = self._pending
        expired = False
        for slot in pending:  # deadlines grow along the queue: stop at the first not due
            if slot.resp is not None:
                continue
            if now < slot.deadline:
                break
            slot.dead = True
            expired = True
            self.stats.response_timeouts += 1
            slot.resp = error_response(
                503, f"timed out: no reply within {limits.response_timeout:g} s"
            )
        if expired or self._out:
            self._flush()
        if self._lost or (self._transport is not None and self._transport.is_closing()):
            return
        idle = not self._in_message and not pending and not self._out
        if idle and now >= self._last_activity + limits.idle_timeout:
            self._close()
            return
        self._arm(self._next_deadline())

    def _next_deadline(self) -> float:
        limits = self.limits
        deadlines = [self._last_activity + limits.idle_timeout]
        if self._in_message:
            deadlines.append(self._message_started + limits.request_timeout)
        for slot in self._pending:
            if slot.resp is None:
                deadlines.append(slot.deadline)
                break
        return min(deadlines)

    # -- messages -------------------------------------------------------------

    def _head_limit_message(self, size: int) -> str:
        return (
            f"request head too large: over {size} bytes, "
            f"at most {self.limits.max_header_bytes} allowed"
        )

    def _line_limit_message(self, size: int) -> str:
        if not self._head_done:
            return self._head_limit_message(size)
        return (
            f"a line of the chunked body (a chunk header or a trailer) is too long: "
            f"over {size} bytes, at most {self.limits.max_header_bytes} allowed"
        )

    def _body_limit_message(self, size: int) -> str:
        return f"request body too large: {size} bytes, at most {self.limits.max_body_bytes} allowed"


_UNSUPPORTED_VERSION: Final = "unsupported HTTP version: expected HTTP/1.1 or HTTP/1.0"


def _check_version(version: str) -> None:
    """Refuse what the parser reads as HTTP/0.9 (no version given) or 2.0, as it refuses 1.2."""
    if version != "1.1" and version != "1.0":  # noqa: PLR1714 (a set would hash)
        raise _Reject(400, f"malformed request: {_UNSUPPORTED_VERSION}")


# The parser's own words, where they would not tell a client what to send.
_PARSER_HINTS: Final[dict[str, str]] = {
    "Pause on PRI/Upgrade": "an HTTP/2 connection preface; this server speaks HTTP/1.1 only",
    "Expected HTTP/, RTSP/ or ICE/": (
        "expected the version (HTTP/1.1 or HTTP/1.0) after the target; "
        "a space inside the target is sent as %20"
    ),
    "Invalid method encountered": (
        "expected an upper-case method such as GET, POST, PUT or DELETE "
        "(TLS on this plain-HTTP port looks like this too)"
    ),
    "Invalid method for HTTP/x.x request": (
        "expected an HTTP method such as GET, POST, PUT or DELETE (this one is RTSP's)"
    ),
    # Versions and protocols other than HTTP/1.1 and 1.0, as the parser words them.
    "Invalid HTTP version": _UNSUPPORTED_VERSION,
    "Invalid major version": _UNSUPPORTED_VERSION,
    "Invalid minor version": _UNSUPPORTED_VERSION,
    "Expected dot": _UNSUPPORTED_VERSION,
    "Invalid method for RTSP/x.x request": _UNSUPPORTED_VERSION,
    "Expected SOURCE method for ICE/x.x request": _UNSUPPORTED_VERSION,
    "Expected CRLF after version": (
        "expected the end of the request line (CRLF) right after HTTP/1.1 or HTTP/1.0"
    ),
    "Invalid header token": "expected header lines of the form 'Name: value'",
}


def _parser_message(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return _PARSER_HINTS.get(text, text)[:200]
