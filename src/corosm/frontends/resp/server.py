"""The RESP server: an asyncio protocol in front of a runtime.

Theory of operation
-------------------
Each connection owns a :class:`~corosm.frontends.resp.protocol.RequestParser`
and a queue of reply *slots*, one per command, in arrival order. One read may
carry many pipelined commands: all are parsed, and each is either answered at
once (a :class:`~corosm.frontends.resp.commands.Local` reply) or submitted to
the runtime as one input with ``submit_nowait``. Submitting every command of a
read before yielding to the loop is what lets the runtime's turn hand all their
journal appends to the journal as one group commit.

Replies leave in command order whatever order the machine finishes in: a slot
is written only when every slot before it is filled. Completions that arrive
together (a journal batch) each mark their slot and ask for one flush with
``call_soon``; that flush runs after all of them, so a pipeline's replies go
out in one ``write``.

Within one connection a read never overtakes an earlier write: see
:data:`LOG_ORDERED`.

Backpressure: when a connection has ``max_pending`` replies outstanding, or the
transport's write buffer is full, the connection stops reading; it reads again
once half are answered. If the runtime's inbox is full anyway (many
connections), the command gets ``-ERR server busy`` and the connection goes on.

A protocol error answers the commands before it, then the error, then closes
that connection; no other connection notices.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, cast

from corosm.errors import CorosmError, HandlerError, JournalError, Overloaded, Stopped
from corosm.frontends.resp import ops
from corosm.frontends.resp.commands import Local, Session, dispatch
from corosm.frontends.resp.protocol import (
    DEFAULT_MAX_ARGS,
    DEFAULT_MAX_BULK_LEN,
    ErrorReply,
    RequestParser,
    encode_reply,
)

__all__ = ["RespServerProtocol", "RuntimeLike", "start_resp_server", "stop_resp_server"]

log = logging.getLogger("corosm.frontends.resp")

BUSY: Final = encode_reply(ErrorReply("ERR server busy, try again"))
DEFAULT_MAX_PENDING: Final = 1024


#: Ops whose effect and answer are decided when their journal record is applied,
#: in log order. They may be submitted while earlier ones of the same connection
#: are still waiting for their fsync. Every other op (GET, EXISTS, DEL ...) may be
#: answered from the applied state at once, before an earlier pipelined write of
#: the same connection is applied; so it waits until those writes are answered,
#: and every command after it waits too. Without this, "SET k v; GET k" in one
#: pipeline could answer the old value, which no Redis client expects. DEL is a
#: write that is not log-ordered (it may answer 0 at once): it waits, and is
#: waited for.
LOG_ORDERED: Final = (ops.Set, ops.MSet, ops.IncrBy, ops.Append, ops.FlushAll)


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


class _Slot:
    """One command's place in the reply order; ``data`` is ``None`` until answered."""

    __slots__ = ("close", "data", "resp3")

    def __init__(self, data: bytes | None, close: bool = False, resp3: bool = False) -> None:
        self.data = data
        self.close = close
        self.resp3 = resp3  # the protocol when the command came: a later HELLO must not change it


class _Shared:
    """What all connections of one server share: client ids, counts, INFO."""

    def __init__(self, runtime: RuntimeLike) -> None:
        self.runtime = runtime
        self.ids = itertools.count(1)
        self.connected = 0
        self.commands = 0
        self.protocol_errors = 0
        self.connections: set[RespServerProtocol] = set()

    def info(self) -> Mapping[str, object]:
        figures: dict[str, object] = {
            "connected_clients": self.connected,
            "total_commands_processed": self.commands,
            "protocol_errors": self.protocol_errors,
            "health": self.runtime.health() or "ok",
        }
        figures.update(self.runtime.stats())
        return figures


class RespServerProtocol(asyncio.Protocol):
    """One RESP connection (see the module docs)."""

    def __init__(
        self,
        shared: _Shared,
        backend: ops.Backend,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_bulk_len: int = DEFAULT_MAX_BULK_LEN,
        max_args: int = DEFAULT_MAX_ARGS,
    ) -> None:
        self._shared = shared
        self._runtime = shared.runtime
        self._backend = backend
        self._max_pending = max_pending
        self._parser = RequestParser(max_bulk_len=max_bulk_len, max_args=max_args)
        self._session = Session(next(shared.ids), shared.info)
        self._transport: asyncio.Transport | None = None
        self._slots: deque[_Slot] = deque()
        # Read-your-writes inside a pipeline: see LOG_ORDERED.
        self._writes_inflight = 0
        self._held: deque[tuple[_Slot, ops.Op]] = deque()
        self._ready: list[bytes] = []  # replies to write at the next flush, in order
        self._flush_scheduled = False
        self._closing = False  # QUIT or a protocol error: read nothing more
        self._paused_reading = False
        self._paused_writing = False
        self._close_when_drained = False

    def close_when_drained(self) -> None:
        """Read no more; close once every reply owed is written (server shutdown)."""
        self._closing = True
        self._close_when_drained = True
        if self._transport is not None and not self._paused_reading:
            self._paused_reading = True
            self._transport.pause_reading()
        self._flush()

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
        self._ready.clear()

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
        for args in commands:
            self._shared.commands += 1
            if not self._handle(args):
                break  # QUIT: the commands after it are not answered
        if error is not None and not self._closing:
            self._shared.protocol_errors += 1
            log.info("closing RESP client %d: %s", self._session.client_id, error)
            self._push(encode_reply(ErrorReply(str(error))), close=True)
        self._flush()

    # -- commands -------------------------------------------------------------------------

    def _handle(self, args: list[bytes]) -> bool:
        """Answer or submit one command; False when the connection is to close after it."""
        outcome = dispatch(args, self._session)
        if isinstance(outcome, Local):
            resp3 = self._session.protocol == 3  # HELLO 3 answers in RESP3 already
            self._push(encode_reply(outcome.reply, resp3), close=outcome.close)
            return not outcome.close
        slot = _Slot(None, resp3=self._session.protocol == 3)
        self._slots.append(slot)
        if self._held or (self._writes_inflight and not isinstance(outcome, LOG_ORDERED)):
            self._held.append((slot, outcome))
        else:
            self._submit(slot, outcome)
        return True

    def _submit(self, slot: _Slot, op: ops.Op) -> None:
        try:
            future = self._runtime.submit_nowait(self._backend.to_input(op))
        except CorosmError as exc:  # Overloaded, Stopped: answer now, keep the connection
            slot.data = error_reply_for(exc)
            return
        if isinstance(op, ops.WRITE_OPS):
            self._writes_inflight += 1
        future.add_done_callback(functools.partial(self._answered, slot, op))

    def _release_held(self) -> None:
        """Submit held commands, in order, up to the next read that must wait."""
        held = self._held
        while held and not (self._writes_inflight and not isinstance(held[0][1], LOG_ORDERED)):
            slot, op = held.popleft()
            self._submit(slot, op)

    def _answered(self, slot: _Slot, op: ops.Op, future: asyncio.Future[Any]) -> None:
        if isinstance(op, ops.WRITE_OPS):
            self._writes_inflight -= 1
        if self._transport is None:
            return  # the client went away; nobody to tell
        if future.cancelled():
            slot.data = error_reply_for(asyncio.CancelledError())
        elif (exc := future.exception()) is not None:
            slot.data = error_reply_for(exc)
        else:
            try:
                reply = self._backend.to_reply(op, future.result())
                slot.data = encode_reply(reply, slot.resp3)
            except Exception as bad:  # a bad output must not kill the connection
                log.exception("cannot encode the reply to %r", op)
                slot.data = error_reply_for(bad)
        if self._held and not self._writes_inflight:
            self._release_held()
        if not self._flush_scheduled:
            # Completions of one journal batch arrive as a run of callbacks; flushing
            # after all of them turns a pipeline's replies into one write.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _push(self, data: bytes, close: bool = False) -> None:
        if close:
            self._closing = True
        if not self._slots and not close:
            self._ready.append(data)
        else:
            self._slots.append(_Slot(data, close))

    # -- output ---------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None:
            return
        close = False
        slots = self._slots
        while slots and slots[0].data is not None:
            slot = slots.popleft()
            self._ready.append(slot.data)  # type: ignore[arg-type]  # checked just above
            if slot.close:
                close = True
                break
        if self._ready:
            ready = self._ready
            transport.write(ready[0] if len(ready) == 1 else b"".join(ready))
            ready.clear()
        if close or (self._close_when_drained and not slots):
            transport.close()
            return
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        busy = self._paused_writing or len(self._slots) >= self._max_pending
        if busy and not self._paused_reading:
            self._paused_reading = True
            transport.pause_reading()
        elif (
            self._paused_reading
            and not self._paused_writing
            and len(self._slots) <= self._max_pending // 2
        ):
            self._paused_reading = False
            transport.resume_reading()


def default_backend() -> ops.Backend:
    """The backend for corosm's key-value machine."""
    from corosm.frontends.resp.kvbackend import KVBackend

    return KVBackend()


async def start_resp_server(
    runtime: RuntimeLike,
    host: str = "127.0.0.1",
    port: int = 6380,
    *,
    backend: ops.Backend | None = None,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_bulk_len: int = DEFAULT_MAX_BULK_LEN,
    max_args: int = DEFAULT_MAX_ARGS,
) -> asyncio.Server:
    """Serve RESP2 for ``runtime`` on ``host:port`` (``port=0``: any free port).

    ``backend`` maps RESP ops to the machine's inputs; by default the key-value
    machine's. Close the returned server with ``server.close()`` and
    ``await server.wait_closed()``.
    """
    shared = _Shared(runtime)
    chosen = backend if backend is not None else default_backend()
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol] = lambda: RespServerProtocol(  # noqa: E731
        shared, chosen, max_pending=max_pending, max_bulk_len=max_bulk_len, max_args=max_args
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
