"""The RESP server: an asyncio protocol in front of a runtime.

Theory of operation
-------------------
Each connection owns a :class:`~corosm.frontends.resp.protocol.RequestParser`
and a queue of *slots*, one per command, in arrival order. A slot is either
the reply's bytes (answered at once: ``PING``, errors, ``INFO``, reads...) or
a :class:`_Slot`: the command's one key-value input, submitted with the
runtime's ``submit_callback``, the slot itself being the callback (the HTTP
front end answers the same way: one reply channel, no asyncio future per
command). :meth:`RespServerProtocol._execute` is the one pass over every
command of a read: submitting them all before yielding to the loop is what
lets the runtime's turn hand all their journal appends to the journal as one
group commit. In that pass a run of consecutive ``GET key``, or of
consecutive plain ``SET key value``, is one input (one ``ReadMany``, one
``WriteMany``: see :func:`~corosm.frontends.resp.commands.run_input`) with
one slot that holds the run's replies, one per command: sixteen pipelined
SETs are one journal record, one step and one callback.

A read (``Order.READ``: ``GET``, ``MGET``, ``EXISTS``...) needs no I/O: when
the runtime offers ``reader`` (see :attr:`corosm.runtime.Runtime.reader`) it
is answered in the pass itself, from the applied state, with no slot, callback
or turn. Without one (a fake, the sharded client) it is submitted with
``now=True``, which answers it in the call when the runtime can.

Replies leave in command order. A reply known while nothing before it is owed
goes to a plain list, ``_ready``; once anything is owed, later replies queue
behind it. :meth:`RespServerProtocol._drain` writes ``_ready``, then takes
slots from the front while they are answered, all with one
``transport.write``. It runs at the end of each ``data_received`` (so a read
of sixteen ``GET`` costs one write) and once per *completion batch*: a slot's
callback stores its reply's bytes and, when it is the front slot, drains: at
once when it is the only slot (nothing to batch it with), else by scheduling
one drain (``call_soon``), which runs after the runtime's turn, so a journal
batch of 16 pipelined replies costs one drain and one write.

Within one connection a read never overtakes an earlier write. The machine
declares, once, how each input orders (``runtime.machine.order(input)``, see
:class:`corosm.core.Order`; asked once per input type where the machine
allows, see :class:`~corosm.frontends.ordering.Orders`): a ``LOGGED`` input may
be submitted while the connection's earlier writes still wait for their fsync;
any other input waits until they are answered, and a ``WRITE`` (a delete) is
waited for like a ``LOGGED`` one. Commands that must wait are *held*,
unsubmitted, in a second queue (with any local replies behind them, to keep
the order).

A connection's life, as states and the events that move it::

    OPEN      -- QUIT, server shutdown, client's EOF ------------> CLOSING
    OPEN      -- protocol error, request timeout, buffer cap ----> REFUSING
    OPEN      -- idle timeout -----------------------------------> closed
    REFUSING  -- client's EOF -----------------------------------> CLOSING
    CLOSING   -- every reply owed written ------------------------> closed
    REFUSING  -- every reply owed written ------------------------> LINGERING
    LINGERING -- client's EOF, or _LINGER seconds ---------------> closed

Only OPEN reads commands. CLOSING and REFUSING answer what came before, in
order (REFUSING's last reply is the error that says why), then close.
LINGERING sends FIN and discards input until the client's EOF: closing a
socket with unread input makes the kernel send RST, which can destroy the
error reply still in flight to a client that is still sending (the HTTP
server does the same). A client that half-closes after its commands
(``nc -N``) gets every reply before the close. A close waits for the client
to read what is left, but not forever: a linger that ends with replies
unread, or a close still unfinished after ``idle_timeout``, aborts.

Limits (:class:`~corosm.frontends.resp.limits.RespLimits`): one timer per
connection (``loop.call_at``), re-armed lazily, fires at the earliest of the
partial command's deadline (``request_timeout`` after the read in which it
started; a read that completes a command starts the clock again for the next
one) and the idle deadline (``idle_timeout`` after the last read or write,
checked again later while replies are owed). While reading is paused for
backpressure the partial command's clock stops: the client cannot finish it.
The bytes of unfinished commands are counted across all connections; the
read that takes the total past ``max_buffered_bytes`` gets its connection
refused. Backpressure: when a connection owes ``max_pending`` replies (a run
counts one per command: ``_owed``), or the
transport's write buffer is full, it stops reading; it reads again once half
are answered. If the runtime's inbox is full anyway (many connections), the
command gets ``-ERR server busy`` and the connection goes on.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, TypeAlias, cast

from corosm.apps.kv import inputs as kv
from corosm.core.machine import Order
from corosm.errors import (
    CorosmError,
    HandlerError,
    JournalError,
    Overloaded,
    Stopped,
    UsageError,
)
from corosm.frontends.deadline import rearm
from corosm.frontends.ordering import OrderDeclaring, Orders
from corosm.frontends.resp.commands import (
    GET_NAMES,
    SET_NAMES,
    Local,
    Sections,
    Session,
    dispatch,
    run_commands,
    run_input,
)
from corosm.frontends.resp.limits import RespLimits
from corosm.frontends.resp.protocol import ErrorReply, RequestParser, encode_reply
from corosm.frontends.resp.replies import encode_answers
from corosm.frontends.resp.serverinfo import check_info, config_values, info_sections

__all__ = [
    "RespLimits",
    "RespServerProtocol",
    "RuntimeLike",
    "start_resp_server",
    "stop_resp_server",
]

log = logging.getLogger("corosm.frontends.resp")

BUSY: Final = encode_reply(ErrorReply("ERR server busy, try again"))
_LINGER: Final = 2.0  # seconds to keep discarding input after our FIN
_LOGGED: Final = Order.LOGGED
_READ: Final = Order.READ

#: The runtime's reply channel: ``callback(output, None)`` or ``callback(None, error)``.
ReplyCallback: TypeAlias = Callable[[Any, "BaseException | None"], None]


class RuntimeLike(Protocol):
    """The part of :class:`corosm.runtime.Runtime` the RESP server uses."""

    @property
    def machine(self) -> OrderDeclaring: ...

    def submit_callback(
        self, input: Any, callback: ReplyCallback, /, *, now: bool = False
    ) -> None: ...

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
    else:
        text = "ERR internal error (please report it): " + type(exc).__name__
    return encode_reply(ErrorReply(text))


#: ``read(input) -> output`` for ``Order.READ`` inputs (see ``Runtime.reader``).
Reader: TypeAlias = Callable[[Any], Any]


class _Shared:
    """What all connections of one server share: limits, counts, INFO and CONFIG."""

    def __init__(
        self,
        runtime: RuntimeLike,
        info: Mapping[str, str],
        limits: RespLimits,
        *,
        allow_reset: bool = True,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.runtime = runtime
        # Reads answered in the call, when the runtime has them (fakes and the
        # sharded client do not): asked once, as the HTTP app does.
        self.reader: Reader | None = getattr(runtime, "reader", None)
        self.orders = Orders(runtime.machine)
        self.limits = limits
        self.allow_reset = allow_reset
        # The clock and timers: the running loop, or a test's fake.
        self.loop = loop or asyncio.get_running_loop()
        self.static_info = info
        self.config = config_values(info, limits.max_bulk_len)
        self.ids = itertools.count(1)
        self.connected = 0
        self.commands = 0
        self.protocol_errors = 0
        self.request_timeouts = 0
        self.idle_closed = 0
        self.buffer_refusals = 0
        self.buffered = 0  # bytes of unfinished commands, all connections
        self.connections: set[RespServerProtocol] = set()

    def info(self) -> Sections:
        return info_sections(
            self.static_info,
            clients={
                "connected_clients": self.connected,
                "unfinished_command_bytes": self.buffered,
            },
            commands={
                "total_commands_processed": self.commands,
                "protocol_errors": self.protocol_errors,
                "request_timeouts": self.request_timeouts,
                "idle_connections_closed": self.idle_closed,
                "buffer_limit_refusals": self.buffer_refusals,
            },
            runtime_stats=self.runtime.stats(),
            health=self.runtime.health(),
        )


class _State(enum.Enum):
    """Where a connection is in its life (see the module docs for the transitions)."""

    OPEN = "open"
    CLOSING = "closing"
    REFUSING = "refusing"
    LINGERING = "lingering"
    CLOSED = "closed"


_OPEN: Final = _State.OPEN


class _Slot:
    """A submitted input's place in the reply queue, and the runtime's callback for it.

    The input answers ``count`` commands (a run: see ``commands.run_input``);
    ``reply`` holds their replies, one after the other.
    """

    __slots__ = ("conn", "count", "input", "reply", "resp3", "write")

    def __init__(
        self, conn: RespServerProtocol, input: kv.Input, resp3: bool, write: bool, count: int
    ):
        self.conn = conn
        self.input = input
        self.resp3 = resp3  # fixed when the command came: a later HELLO must not change it
        self.write = write  # not Order.READ: later reads of the connection wait for it
        self.count = count
        self.reply: bytes | None = None

    @classmethod
    def answered(cls, conn: RespServerProtocol, input: kv.Input, reply: bytes, count: int) -> _Slot:
        """A slot whose ``count`` replies are known already (a run's read, answered)."""
        slot = cls(conn, input, False, False, count)
        slot.reply = reply
        return slot

    def __call__(self, output: Any, error: BaseException | None) -> None:
        self.reply = (
            _encode(self.input, output, self.resp3, self.count)
            if error is None
            else error_reply_for(error) * self.count
        )
        conn = self.conn
        slots = conn._slots
        if slots and slots[0] is self:  # the rest cannot leave before the front anyway
            if len(slots) == 1 and not conn._drain_scheduled:
                # The only reply owed (no pipelining): nothing to batch it with,
                # so write now rather than pay for a call_soon and a loop pass
                # (as the HTTP connection's _Slot.fill does).
                conn._drain()
            else:
                conn._drain_soon()


def _encode(input: kv.Input, output: Any, resp3: bool, count: int) -> bytes:
    """The replies' bytes for ``input``'s ``output``, one per command it answers."""
    try:
        return encode_answers(input, output, count, resp3)
    except Exception as bad:  # a bad output must not kill the connection
        log.exception("cannot encode the reply to %r", input)
        return error_reply_for(bad) * count


def _answer_read(read: Reader, input: kv.Input, resp3: bool, count: int) -> bytes:
    """Answer a READ input (``count`` commands) in this call, through the runtime's reader."""
    try:
        output = read(input)
    except Exception as exc:  # Stopped, or what the machine's read raised
        return error_reply_for(exc) * count
    try:  # _encode, without the call: this is every GET's path
        return encode_answers(input, output, count, resp3)
    except Exception as bad:
        log.exception("cannot encode the reply to %r", input)
        return error_reply_for(bad) * count


#: An input that waits to be submitted: it, its RESP3 flag, order and command count.
_Held: TypeAlias = "tuple[kv.Input, bool, Order, int]"


class RespServerProtocol(asyncio.Protocol):
    """One RESP connection (see the module docs)."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._limits = limits = shared.limits
        self._max_pending = limits.max_pending  # an int read on every drain
        self._loop = shared.loop
        self._submit_callback = shared.runtime.submit_callback
        self._read = shared.reader
        self._orders = shared.orders
        self._parser = RequestParser(
            max_bulk_len=limits.max_bulk_len,
            max_args=limits.max_args,
            max_command_bytes=limits.max_command_bytes,
        )
        self._session = Session(
            next(shared.ids), shared.info, shared.config, allow_reset=shared.allow_reset
        )
        self._transport: asyncio.Transport | None = None
        self._state = _OPEN
        self._ready: list[bytes] = []  # replies with nothing owed before them, to write
        # Owed replies, in order: a bytes entry is one reply, a _Slot ``count``.
        # A list, not a deque: compiled, its append, [0] and len are direct
        # calls; a drain takes its answered front with one del.
        self._slots: list[bytes | _Slot] = []
        self._held: deque[bytes | _Held] = deque()
        self._owed = 0  # replies in _slots and _held (for max_pending)
        self._writes_inflight = 0  # submitted writes not yet answered: see the module docs
        self._drain_scheduled = False
        self._paused_reading = False
        self._paused_writing = False
        self._buffered = 0  # this connection's share of shared.buffered
        self._last_activity = 0.0
        self._partial_since: float | None = None  # when the unfinished command started
        self._timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    def close_when_drained(self) -> None:
        """Read no more; close once every reply owed is written (server shutdown)."""
        if self._state is _OPEN:
            self._stop_reading(_State.CLOSING)
        self._drain()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._shared.connected += 1
        self._shared.connections.add(self)
        self._last_activity = now = self._loop.time()
        self._arm(now + self._limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._shared.connected -= 1
        self._shared.connections.discard(self)
        self._release_buffer()
        self._state = _State.CLOSED
        self._transport = None
        self._ready = []
        self._slots.clear()
        self._held.clear()
        self._owed = 0
        for timer in (self._timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._linger_timer = None

    def pause_writing(self) -> None:
        self._paused_writing = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self._state is not _OPEN:
            return  # closing: what comes now is not answered
        self._last_activity = now = self._loop.time()
        commands, error = self._parser.feed_until_error(data)
        if commands:
            self._execute(commands)
        if self._state is _OPEN:
            if error is not None:
                self._shared.protocol_errors += 1
                self._refuse(str(error))
            elif self._buffered or self._parser.buffered:
                self._track_unfinished(bool(commands), now)
            else:  # the common case: every command of the read was complete
                self._partial_since = None
        self._drain(now)

    def eof_received(self) -> bool | None:
        # The client sent everything it will send (maybe only a half-close:
        # `nc -N`). Answer what it sent, then close; keep the transport open
        # for writing meanwhile (returning True) if replies are still owed.
        if self._state in (_State.LINGERING, _State.CLOSED):
            return None  # the close we waited for
        if self._state is not _State.CLOSING:
            self._leave_open(_State.CLOSING)
        self._paused_reading = True  # nothing more will come: no pause_reading needed
        if self._slots or self._held:
            return True
        return None  # nothing owed: the transport closes now

    # -- commands -------------------------------------------------------------------------

    def _execute(self, commands: list[list[bytes]]) -> None:
        """Answer, submit or hold each command of one read, in order: the one pass.

        Consecutive ``GET key`` and consecutive plain ``SET key value`` are
        gathered into a run and go on as one input (see
        :func:`~corosm.frontends.resp.commands.run_input`).
        """
        shared = self._shared
        run: list[list[bytes]] = []
        for args in commands:
            shared.commands += 1  # before dispatch: INFO counts itself, as it always did
            n = len(args)
            if (n == 2 and args[0] in GET_NAMES) or (n == 3 and args[0] in SET_NAMES):
                if run and len(run[0]) != n:  # a GET after SETs, or the other way
                    self._execute_run(run)
                    run = []
                run.append(args)
                continue
            if run:
                self._execute_run(run)
                run = []
            outcome = dispatch(args, self._session)
            if isinstance(outcome, Local):
                self._push(encode_reply(outcome.reply, self._session.protocol == 3))
                if outcome.close:  # QUIT: the commands after it are not answered
                    self._stop_reading(_State.CLOSING)
                    break
                continue
            self._route(outcome, 1)
        if run:
            self._execute_run(run)

    def _execute_run(self, run: list[list[bytes]]) -> None:
        """Route the one input of a run of GETs or SETs; each command alone if it does not build."""
        try:
            input = run_input(run)
        except UsageError:  # a bad key or value: each command gets its own answer
            session = self._session
            for args in run:
                outcome = dispatch(args, session)
                if isinstance(outcome, Local):
                    self._push(encode_reply(outcome.reply, session.protocol == 3))
                else:
                    self._route(outcome, 1)
            return
        self._route(input, len(run))

    def _route(self, input: kv.Input, count: int) -> None:
        """Answer, submit or hold ``input``, which answers ``count`` commands."""
        resp3 = self._session.protocol == 3
        try:
            order = self._orders.of(input)
        except Exception as exc:  # a machine's order() that raises fails this input alone
            if not isinstance(exc, CorosmError):
                log.error("the machine's order() raised", exc_info=exc)
            self._push(error_reply_for(exc) * count)
            return
        if self._held or (self._writes_inflight and order is not _LOGGED):
            self._held.append((input, resp3, order, count))  # read-your-writes: see the module docs
            self._owed += count
        elif order is _READ and self._read is not None and not self._slots:
            self._ready.append(_answer_read(self._read, input, resp3, count))
        else:
            self._owed += count
            self._submit(input, resp3, order, count)

    def _push(self, reply: bytes) -> None:
        """Queue a reply known now, behind every command that came before it."""
        if self._held:
            self._held.append(reply)
            self._owed += 1
        elif self._slots:
            self._slots.append(reply)
            self._owed += 1
        else:
            self._ready.append(reply)

    def _submit(self, input: kv.Input, resp3: bool, order: Order, count: int) -> None:
        """Start ``input`` (nothing before it is held); its replies queue behind the slots.

        The caller has counted its ``count`` replies in ``_owed``.
        """
        is_read = order is _READ
        if is_read and self._read is not None:
            reply = _answer_read(self._read, input, resp3, count)
            # A slot only when it must say how many replies the bytes hold.
            self._slots.append(reply if count == 1 else _Slot.answered(self, input, reply, count))
            return
        slot = _Slot(self, input, resp3, not is_read, count)
        try:
            # A read may overtake other clients' inputs, never this connection's.
            self._submit_callback(input, slot, now=is_read)
        except CorosmError as exc:  # Overloaded, Stopped: answer now, keep the connection
            if count > 1:
                # A run refused as a whole goes on as its commands, each with its own
                # answer: a sharded client takes the SETs of a run one by one when
                # their keys live on several shards. The replies are counted already.
                for single in run_commands(cast("kv.ReadMany | kv.WriteMany", input)):
                    self._submit(single, resp3, order, 1)
                return
            slot.reply = error_reply_for(exc)
            slot.write = False
        else:
            if slot.write:
                self._writes_inflight += 1
        self._slots.append(slot)

    def _release_held(self) -> None:
        """Submit held commands, in order, up to the next one that must wait."""
        held = self._held
        while held:
            entry = held[0]
            if isinstance(entry, bytes):
                self._slots.append(entry)
            else:
                input, resp3, order, count = entry
                if self._writes_inflight and order is not _LOGGED:
                    return
                self._submit(input, resp3, order, count)
            held.popleft()

    # -- output ---------------------------------------------------------------------------

    def _drain_soon(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._scheduled_drain)

    def _scheduled_drain(self) -> None:
        self._drain_scheduled = False
        self._drain()

    def _drain(self, now: float | None = None) -> None:
        """Write ``_ready`` and every answered reply at the front of the queue, in one write.

        Writing the last reply owed restarts the idle clock: at ``now``, the
        loop's time if the caller has just read it, else read here.
        """
        transport = self._transport
        if transport is None:
            return
        slots = self._slots
        out = self._ready
        taken = 0  # answered slots at the front, moved to out
        while taken < len(slots):
            head = slots[taken]
            if isinstance(head, bytes):
                out.append(head)
                taken += 1
                self._owed -= 1
                continue
            reply = head.reply
            if reply is None:
                break
            taken += 1
            out.append(reply)
            self._owed -= head.count
            if head.write:
                self._writes_inflight -= 1
                if not self._writes_inflight and self._held:
                    self._release_held()  # appends to slots: this loop goes on over them
        if taken:
            del slots[:taken]
        if out:
            self._ready = []
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            if not slots:
                self._last_activity = self._loop.time() if now is None else now
        if self._state is not _OPEN:
            if not slots and not self._held:
                self._finish()
            return
        # Nothing paused and room left, the usual case: nothing to pause or resume.
        if self._paused_reading or self._paused_writing or self._owed >= self._max_pending:
            self._update_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._state is not _OPEN:
            return
        owed = self._owed
        limit = self._max_pending
        busy = self._paused_writing or owed >= limit
        if busy and not self._paused_reading:
            self._paused_reading = True
            transport.pause_reading()
        elif self._paused_reading and not busy and owed <= limit // 2:
            self._paused_reading = False
            transport.resume_reading()
            if self._partial_since is not None:  # its clock stopped while we did not read
                self._partial_since = now = self._loop.time()
                self._arm(now + self._limits.request_timeout)

    # -- closing --------------------------------------------------------------------------

    def _leave_open(self, state: _State) -> None:
        """Go to ``state``: no more commands, forget the unfinished one."""
        self._state = state
        self._release_buffer()
        self._partial_since = None

    def _stop_reading(self, state: _State) -> None:
        """Go to ``state`` and stop reading from the socket."""
        self._leave_open(state)
        if self._transport is not None and not self._paused_reading:
            self._paused_reading = True
            self._transport.pause_reading()

    def _refuse(self, message: str) -> None:
        """Answer the commands before, then ``message``, then close (lingering)."""
        log.info("closing RESP client %d: %s", self._session.client_id, message)
        self._push(encode_reply(ErrorReply(message)))
        self._stop_reading(_State.REFUSING)

    def _finish(self) -> None:
        """Every reply owed is written: close (CLOSING) or linger (REFUSING)."""
        transport = self._transport
        if transport is None or self._state in (_State.LINGERING, _State.CLOSED):
            return
        if self._state is _State.REFUSING and transport.can_write_eof():
            self._state = _State.LINGERING
            transport.write_eof()
            self._linger_timer = self._loop.call_later(_LINGER, self._give_up)
            self._paused_reading = False
            transport.resume_reading()  # to see the client's EOF; data_received discards
            return
        self._state = _State.CLOSED
        transport.close()
        # A close waits until the client has read what is left: not forever.
        self._linger_timer = self._loop.call_later(self._limits.idle_timeout, self._give_up)

    def _give_up(self) -> None:
        """End a linger, or a close the client does not read to its end."""
        transport = self._transport
        if transport is not None:
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()

    def _release_buffer(self) -> None:
        self._parser.abandon()
        self._shared.buffered -= self._buffered
        self._buffered = 0

    # -- limits ---------------------------------------------------------------------------

    def _track_unfinished(self, completed: bool, now: float) -> None:
        """After a read: time the unfinished command, count its bytes against the cap."""
        buffered = self._parser.buffered
        if not buffered:
            self._partial_since = None
        elif completed or self._partial_since is None:  # a new command started in this read
            self._partial_since = now
            self._arm(now + self._limits.request_timeout)
        grown = buffered - self._buffered
        if grown:
            shared = self._shared
            self._buffered = buffered
            shared.buffered += grown
            cap = self._limits.max_buffered_bytes
            if grown > 0 and shared.buffered > cap:
                shared.buffer_refusals += 1
                self._refuse(
                    f"ERR the server holds too many bytes of unfinished commands "
                    f"(at most {cap} across all connections); closing this connection"
                )

    def _arm(self, when: float) -> None:
        """Make sure the timer fires no later than ``when`` (a re-arm only if earlier)."""
        self._timer = rearm(self._timer, self._loop, when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or self._state is not _OPEN:
            return
        now = self._loop.time()
        limits = self._limits
        partial = self._partial_since
        if partial is not None and not self._paused_reading:
            if now >= partial + limits.request_timeout:
                self._shared.request_timeouts += 1
                self._refuse(
                    f"ERR command not received in full within {limits.request_timeout:g} s; "
                    "closing the connection"
                )
                self._drain()
                return
            self._arm(partial + limits.request_timeout)
        elif self._slots or self._held or self._paused_reading:
            self._arm(now + limits.idle_timeout)  # not idle: look again later
        elif now >= self._last_activity + limits.idle_timeout:
            self._shared.idle_closed += 1
            self._state = _State.CLOSED
            # A client that does not read its replies would hold a plain close forever.
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()
        else:
            self._arm(self._last_activity + limits.idle_timeout)


async def start_resp_server(
    runtime: RuntimeLike,
    host: str = "127.0.0.1",
    port: int = 6380,
    *,
    info: Mapping[str, str] | None = None,
    limits: RespLimits | None = None,
    allow_reset: bool = True,
) -> asyncio.Server:
    """Serve RESP for ``runtime`` (of the key-value machine) on ``host:port``.

    ``port=0`` picks a free port. ``info`` is what the assembly knows and
    clients may ask: ``fsync`` (``always``, ``interval`` or ``never``) sets
    ``CONFIG GET appendonly/appendfsync`` and INFO's Persistence section; every
    entry is also shown in INFO's ``corosm`` section. ``limits`` bounds sizes,
    times and the listen backlog (:class:`RespLimits`; its defaults when None).
    ``allow_reset=False`` refuses ``FLUSHALL`` and ``FLUSHDB`` with an error
    (``corosm serve --no-reset``). Stop the server with :func:`stop_resp_server`,
    before stopping the runtime.
    """
    limits = limits if limits is not None else RespLimits()
    if not isinstance(limits, RespLimits):
        raise TypeError(f"limits must be a RespLimits, not {type(limits).__name__}")
    shared = _Shared(runtime, check_info(info or {}), limits, allow_reset=allow_reset)
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol] = lambda: RespServerProtocol(shared)  # noqa: E731
    server = await loop.create_server(factory, host, port, backlog=limits.backlog)
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
