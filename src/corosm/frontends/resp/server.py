"""The RESP server: an asyncio protocol in front of a runtime.

Theory of operation
-------------------
Each connection owns a :class:`~corosm.frontends.resp.protocol.RequestParser`
and a queue of *slots*, one per command, in arrival order. A slot is either
the reply's bytes (answered at once: ``PING``, errors, ``INFO``...) or the
runtime's future for the command's one key-value input, submitted with
``submit_nowait``. Submitting every command of a read before yielding to the
loop is what lets the runtime's turn hand all their journal appends to the
journal as one group commit.

Replies leave in command order: :meth:`RespServerProtocol._drain` takes slots
from the front while they are answered, encodes them, and writes them all with
one ``transport.write``. It runs once at the end of each ``data_received`` and
once per *completion batch*: only the future at the front of the queue carries
a done-callback (the rest cannot be written before it anyway), and since the
runtime completes a journal batch's futures in one turn, the callback finds
them all done. A pipeline of 16 costs one callback and one write, not 16.

Within one connection a read never overtakes an earlier write: see
:data:`LOG_ORDERED`. Commands that must wait are *held*, unsubmitted, in a
second queue (with any local replies behind them, to keep the order).

Backpressure: when a connection owes ``max_pending`` replies, or the
transport's write buffer is full, it stops reading; it reads again once half
are answered. If the runtime's inbox is full anyway (many connections), the
command gets ``-ERR server busy`` and the connection goes on.

A protocol error answers the commands before it, then the error, then closes
that connection; no other connection notices. ``QUIT`` does the same with
``+OK``; shutdown (:func:`stop_resp_server`) too, without a last reply.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, TypeAlias, cast

from corosm.apps.kv import inputs as kv
from corosm.errors import CorosmError, HandlerError, JournalError, Overloaded, Stopped
from corosm.frontends.resp.commands import Local, Sections, Session, dispatch
from corosm.frontends.resp.protocol import (
    DEFAULT_MAX_ARGS,
    DEFAULT_MAX_BULK_LEN,
    ErrorReply,
    RequestParser,
    encode_reply,
)
from corosm.frontends.resp.replies import encode_output
from corosm.frontends.resp.serverinfo import check_info, config_values, info_sections

__all__ = ["RespServerProtocol", "RuntimeLike", "start_resp_server", "stop_resp_server"]

log = logging.getLogger("corosm.frontends.resp")

BUSY: Final = encode_reply(ErrorReply("ERR server busy, try again"))
DEFAULT_MAX_PENDING: Final = 1024

#: Inputs whose effect and answer are decided when their journal record is
#: applied, in log order. They may be submitted while earlier writes of the same
#: connection still wait for their fsync. Every other input (GET, EXISTS, DEL...)
#: may be answered from the applied state at once, before an earlier pipelined
#: write of the same connection is applied; so it waits until those writes are
#: answered, and every command after it waits too. Without this, "SET k v; GET k"
#: in one pipeline could answer the old value, which no Redis client expects.
#: DEL is a write that is not log-ordered (it may answer 0 at once): it waits, and
#: is waited for.
LOG_ORDERED: Final[frozenset[type]] = frozenset(
    (kv.Write, kv.WriteMany, kv.SetIf, kv.IncrBy, kv.AppendBytes, kv.Reset)
)
#: Inputs that may change data: the reads after them wait (see LOG_ORDERED).
WRITES: Final[frozenset[type]] = LOG_ORDERED | {kv.Delete, kv.DeleteMany}

#: A submitted command: its future, its input, and whether to answer in RESP3
#: (fixed when it came: a later HELLO must not change it).
_Pending: TypeAlias = "tuple[asyncio.Future[Any], kv.Input, bool]"
#: A command that waits to be submitted: its input and RESP3 flag.
_Held: TypeAlias = "tuple[kv.Input, bool]"


class RuntimeLike(Protocol):
    """The part of :class:`corosm.runtime.Runtime` the RESP server uses."""

    def submit_nowait(self, input: Any) -> asyncio.Future[Any]: ...

    def stats(self) -> dict[str, float]: ...

    def health(self) -> str | None: ...


def error_reply_for(exc: BaseException) -> bytes:
    """The RESP error for a failed input: the family decides the code."""
    if isinstance(exc, Overloaded):
        return BUSY
    if isinstance(exc, Stopped):
        text = "ERR server is shutting down, try again"
    elif isinstance(exc, JournalError):
        # Redis answers MISCONF when it cannot persist; the write was not applied.
        text = f"MISCONF corosm could not persist this write, it was not applied: {exc}"
    elif isinstance(exc, HandlerError):
        text = f"ERR the command failed inside the store: {exc.__cause__ or exc}"
    elif isinstance(exc, CorosmError):
        text = f"ERR {exc}"
    elif isinstance(exc, asyncio.CancelledError):
        text = "ERR the command was cancelled"
    else:
        text = "ERR internal error (please report it): " + type(exc).__name__
    return encode_reply(ErrorReply(text))


class _Shared:
    """What all connections of one server share: client ids, counts, INFO and CONFIG."""

    def __init__(self, runtime: RuntimeLike, info: Mapping[str, str], max_bulk_len: int) -> None:
        self.runtime = runtime
        self.static_info = info
        self.config = config_values(info, max_bulk_len)
        self.ids = itertools.count(1)
        self.connected = 0
        self.commands = 0
        self.protocol_errors = 0
        self.connections: set[RespServerProtocol] = set()

    def info(self) -> Sections:
        return info_sections(
            self.static_info,
            clients={"connected_clients": self.connected},
            commands={
                "total_commands_processed": self.commands,
                "protocol_errors": self.protocol_errors,
            },
            runtime_stats=self.runtime.stats(),
            health=self.runtime.health(),
        )


class RespServerProtocol(asyncio.Protocol):
    """One RESP connection (see the module docs)."""

    def __init__(
        self,
        shared: _Shared,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_bulk_len: int = DEFAULT_MAX_BULK_LEN,
        max_args: int = DEFAULT_MAX_ARGS,
    ) -> None:
        self._shared = shared
        self._submit_nowait = shared.runtime.submit_nowait
        self._max_pending = max_pending
        self._parser = RequestParser(max_bulk_len=max_bulk_len, max_args=max_args)
        self._session = Session(next(shared.ids), shared.info, shared.config)
        self._transport: asyncio.Transport | None = None
        self._slots: deque[bytes | _Pending] = deque()
        self._held: deque[bytes | _Held] = deque()
        self._writes_inflight = 0  # submitted writes not yet answered: see LOG_ORDERED
        self._watched: asyncio.Future[Any] | None = None  # the one future with our callback
        self._closing = False  # QUIT, a protocol error or shutdown: read nothing more
        self._paused_reading = False
        self._paused_writing = False

    def close_when_drained(self) -> None:
        """Read no more; close once every reply owed is written (server shutdown)."""
        self._closing = True
        if self._transport is not None and not self._paused_reading:
            self._paused_reading = True
            self._transport.pause_reading()
        self._drain()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._shared.connected += 1
        self._shared.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._shared.connected -= 1
        self._shared.connections.discard(self)
        self._transport = None
        self._slots.clear()
        self._held.clear()

    def pause_writing(self) -> None:
        self._paused_writing = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        commands, error = self._parser.feed_until_error(data)
        session = self._session
        for args in commands:
            self._shared.commands += 1
            outcome = dispatch(args, session)
            if isinstance(outcome, Local):
                resp3 = session.protocol == 3  # HELLO 3 answers in RESP3 already
                self._push(encode_reply(outcome.reply, resp3))
                if outcome.close:  # QUIT: the commands after it are not answered
                    self._closing = True
                    break
            else:
                self._accept(outcome, session.protocol == 3)
        if error is not None and not self._closing:
            self._shared.protocol_errors += 1
            log.info("closing RESP client %d: %s", session.client_id, error)
            self._push(encode_reply(ErrorReply(str(error))))
            self._closing = True
        self._drain()

    # -- commands -------------------------------------------------------------------------

    def _accept(self, input: kv.Input, resp3: bool) -> None:
        if self._held or (self._writes_inflight and type(input) not in LOG_ORDERED):
            self._held.append((input, resp3))
        else:
            self._submit(input, resp3)

    def _push(self, reply: bytes) -> None:
        """Queue a reply known now, behind every command that came before it."""
        (self._held if self._held else self._slots).append(reply)

    def _submit(self, input: kv.Input, resp3: bool) -> None:
        try:
            future = self._submit_nowait(input)
        except CorosmError as exc:  # Overloaded, Stopped: answer now, keep the connection
            self._slots.append(error_reply_for(exc))
            return
        if type(input) in WRITES:
            self._writes_inflight += 1
        self._slots.append((future, input, resp3))

    def _release_held(self) -> None:
        """Submit held commands, in order, up to the next read that must wait."""
        held = self._held
        while held:
            entry = held[0]
            if isinstance(entry, bytes):
                self._slots.append(entry)
            else:
                input, resp3 = entry
                if self._writes_inflight and type(input) not in LOG_ORDERED:
                    return
                self._submit(input, resp3)
            held.popleft()

    # -- output ---------------------------------------------------------------------------

    def _drain(self) -> None:
        """Write every answered reply at the front of the queue, in one write."""
        transport = self._transport
        if transport is None:
            return
        slots = self._slots
        out: list[bytes] = []
        while slots:
            head = slots[0]
            if isinstance(head, bytes):
                out.append(head)
                slots.popleft()
                continue
            future, input, resp3 = head
            if not future.done():
                if self._watched is not future:
                    self._watched = future
                    future.add_done_callback(self._front_done)
                break
            slots.popleft()
            out.append(_encode(future, input, resp3))
            if type(input) in WRITES:
                self._writes_inflight -= 1
                if not self._writes_inflight and self._held:
                    self._release_held()  # appends to slots: this loop goes on over them
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._closing and not slots and not self._held:
            transport.close()
            return
        self._update_reading()

    def _front_done(self, future: asyncio.Future[Any]) -> None:
        if self._watched is future:
            self._watched = None
        self._drain()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        owed = len(self._slots) + len(self._held)
        busy = self._paused_writing or owed >= self._max_pending
        if busy and not self._paused_reading:
            self._paused_reading = True
            transport.pause_reading()
        elif self._paused_reading and not busy and owed <= self._max_pending // 2:
            self._paused_reading = False
            transport.resume_reading()


def _encode(future: asyncio.Future[Any], input: kv.Input, resp3: bool) -> bytes:
    """The reply bytes for a finished command."""
    try:
        output = future.result()
    except asyncio.CancelledError as exc:
        return error_reply_for(exc)
    except Exception as exc:
        return error_reply_for(exc)
    try:
        return encode_output(input, output, resp3)
    except Exception as bad:  # a bad output must not kill the connection
        log.exception("cannot encode the reply to %r", input)
        return error_reply_for(bad)


async def start_resp_server(
    runtime: RuntimeLike,
    host: str = "127.0.0.1",
    port: int = 6380,
    *,
    info: Mapping[str, str] | None = None,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_bulk_len: int = DEFAULT_MAX_BULK_LEN,
    max_args: int = DEFAULT_MAX_ARGS,
) -> asyncio.Server:
    """Serve RESP for ``runtime`` (of the key-value machine) on ``host:port``.

    ``port=0`` picks a free port. ``info`` is what the assembly knows and
    clients may ask: ``fsync`` (``always``, ``interval`` or ``never``) sets
    ``CONFIG GET appendonly/appendfsync`` and INFO's Persistence section; every
    entry is also shown in INFO's ``corosm`` section. Stop the server with
    :func:`stop_resp_server`, before stopping the runtime.
    """
    for name, value in (("max_pending", max_pending), ("max_bulk_len", max_bulk_len)):
        if type(value) is not int or value < 1:
            raise ValueError(f"{name} must be a positive int, not {value!r}")
    shared = _Shared(runtime, check_info(info or {}), max_bulk_len)
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol] = lambda: RespServerProtocol(  # noqa: E731
        shared, max_pending=max_pending, max_bulk_len=max_bulk_len, max_args=max_args
    )
    server = await loop.create_server(factory, host, port)
    _SERVERS[server] = shared
    return server


_SERVERS: weakref.WeakKeyDictionary[asyncio.Server, _Shared] = weakref.WeakKeyDictionary()


async def stop_resp_server(server: asyncio.Server) -> None:
    """Stop accepting, then close each connection once the replies it is owed are sent.

    Call it while the runtime still runs (before ``runtime.stop()``), so that
    in-flight commands are answered rather than cut off.
    """
    server.close()
    shared = _SERVERS.pop(server, None)
    if shared is not None:
        for connection in list(shared.connections):
            connection.close_when_drained()
    await server.wait_closed()
