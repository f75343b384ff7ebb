"""The RESP command table: arguments in, a local reply or a data op out.

Theory of operation
-------------------
:func:`dispatch` looks a command up by its lower-cased name, checks its arity
the way Redis does (a positive arity is exact, a negative one a minimum, both
counting the name), and calls its parser. A parser returns one of:

* :class:`Local`: the reply is known without the machine (``PING``, ``ECHO``,
  ``SELECT``, ``CLIENT``, ``COMMAND``, ``CONFIG``, ``INFO``, every error), and
  maybe "close the connection after it" (``QUIT``);
* a key-value machine input (:data:`corosm.apps.kv.inputs.Input`): the
  command touches data and goes through the machine as exactly one input, so
  ``MSET`` is one journal record. :mod:`~corosm.frontends.resp.replies` turns
  the machine's output back into Redis's reply.

``GET key`` and ``SET key value`` are most of any real load, and clients
pipeline them in long runs. So a connection takes a run of consecutive
``GET key`` (:data:`GET_NAMES`) as one input that reads every key at once,
and a run of consecutive plain ``SET key value`` (:data:`SET_NAMES`) as one
input that writes every pair in one journal record (:func:`run_input`):
one order check, one step and one record for the run, one reply per command
all the same. A run whose input does not build (a key over the limit) is
taken apart again and each command goes through :func:`dispatch` alone, to
get its own answer.

Nothing here does I/O. Per-connection state (the client's name) lives in a
:class:`Session`; what ``INFO`` reports comes from a callable the server gives.
Error texts follow Redis's wording so that client libraries map them to the
same exceptions as with Redis.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from corosm.apps.kv import inputs as kv
from corosm.apps.kv.records import INT64_MIN, parse_int64
from corosm.errors import UsageError
from corosm.frontends.resp.protocol import ErrorReply, Map, Reply, SimpleString

__all__ = [
    "COMMANDS",
    "GET_NAMES",
    "NOT_AN_INTEGER",
    "SET_NAMES",
    "Local",
    "Outcome",
    "Session",
    "dispatch",
    "run_commands",
    "run_input",
    "wrong_arity",
]

REDIS_COMPAT_VERSION: Final = "7.0.0"  # what INFO/HELLO claim, for clients that check
OK: Final = SimpleString("OK")
SYNTAX_ERROR: Final = ErrorReply("ERR syntax error")
NOT_AN_INTEGER: Final = ErrorReply("ERR value is not an integer or out of range")


@dataclass(frozen=True, slots=True)
class Local:
    """A reply known without the machine; ``close`` ends the connection after it."""

    reply: Reply
    close: bool = False


Outcome: TypeAlias = "Local | kv.Input"


#: ``INFO``'s figures by section (``"Persistence" -> {"aof_enabled": 1, ...}``).
Sections: TypeAlias = Mapping[str, Mapping[str, object]]


def _no_sections() -> Sections:
    return {}


class Session:
    """What the server knows about one connection.

    ``info`` returns the figures ``INFO`` shows, by section, when asked (they
    change); ``config`` is what ``CONFIG GET`` answers (fixed at start, see
    :func:`corosm.frontends.resp.serverinfo.config_values`). ``allow_reset``
    False refuses ``FLUSHALL`` and ``FLUSHDB`` (``corosm serve --no-reset``).
    """

    __slots__ = ("allow_reset", "client_id", "config", "info", "name", "protocol")

    def __init__(
        self,
        client_id: int,
        info: Callable[[], Sections] = _no_sections,
        config: Mapping[str, str] | None = None,
        *,
        allow_reset: bool = True,
    ) -> None:
        self.client_id = client_id
        self.name = b""
        self.protocol = 2  # RESP2 until the client says HELLO 3
        self.info = info
        self.config: Mapping[str, str] = config if config is not None else {}
        self.allow_reset = allow_reset


Parser: TypeAlias = Callable[[list[bytes], Session], Outcome]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arity: int
    parse: Parser


def _error(text: str) -> Local:
    return Local(ErrorReply(text))


def wrong_arity(name: str) -> Local:
    return _error(f"ERR wrong number of arguments for '{name}' command")


def _quote(arg: bytes, limit: int = 128) -> str:
    return arg[:limit].decode("utf-8", "backslashreplace")


def dispatch(args: list[bytes], session: Session) -> Outcome:
    """Turn one parsed command into a local reply or a key-value input.

    An input the key-value machine refuses to build (an empty key, a key or a
    value over its limit: :mod:`corosm.apps.kv.inputs` raises a ``UsageError``
    that says which limit) is answered ``-ERR`` with that message; the
    connection goes on.
    """
    name = args[0]
    n = len(args)
    try:
        command = COMMANDS.get(name.lower())
        if command is None:
            # Redis's exact form, trailing blank included: "... beginning with: 'a' 'b' ".
            shown = "".join(f"'{_quote(a)}' " for a in args[1:20])
            return _error(
                f"ERR unknown command '{_quote(name)}', with args beginning with: {shown}"
            )
        if (command.arity >= 0 and n != command.arity) or n < -command.arity:
            return wrong_arity(command.name)
        return command.parse(args, session)
    except UsageError as refused:  # LimitExceeded above all
        return _error(f"ERR {refused}")


#: ``GET key`` as clients spell it: a run of them is one read (see :func:`run_input`).
GET_NAMES: Final = (b"GET", b"get")
#: ``SET key value`` (no options) as clients spell it: a run of them is one write.
SET_NAMES: Final = (b"SET", b"set")


def run_input(run: list[list[bytes]]) -> kv.Input:
    """The one input that answers ``run``: consecutive ``GET key`` or ``SET key value``.

    A single command is its own input (``Read``, ``Write``), as :func:`dispatch`
    gives it; several GETs are one ``ReadMany`` of their keys, answered one
    bulk reply per command (not MGET's array), and several SETs one
    ``WriteMany`` of their pairs (one journal record; the later of two pairs
    for a key wins, as the later SET would), answered ``+OK`` per command.
    Raises the ``UsageError`` (``LimitExceeded``) the input's constructor
    raises for a bad key or value: the caller then dispatches each command alone.
    """
    if len(run[0]) == 2:  # GET key
        return kv.Read(run[0][1]) if len(run) == 1 else kv.ReadMany(tuple([a[1] for a in run]))
    if len(run) == 1:
        return kv.Write(run[0][1], run[0][2])
    return kv.WriteMany(tuple([(a[1], a[2]) for a in run]))


def run_commands(input: kv.ReadMany | kv.WriteMany) -> list[kv.Input]:
    """The inputs of the commands a run's ``input`` stands for, one each, in order.

    The inverse of :func:`run_input` for a run of several commands: what the
    connection submits instead when a runtime refuses the run as a whole (a
    sharded client refuses an input whose keys live on several shards, while
    each command alone goes to its own shard).
    """
    if isinstance(input, kv.ReadMany):
        return [kv.Read(key) for key in input.keys]
    return [kv.Write(key, value) for key, value in input.pairs]


# --------------------------------------------------------------------------- connection


def _ping(args: list[bytes], session: Session) -> Outcome:
    if len(args) > 2:
        return wrong_arity("ping")
    return Local(args[1] if len(args) == 2 else SimpleString("PONG"))


def _echo(args: list[bytes], session: Session) -> Outcome:
    return Local(args[1])


def _quit(args: list[bytes], session: Session) -> Outcome:
    return Local(OK, close=True)


def _select(args: list[bytes], session: Session) -> Outcome:
    index = parse_int64(args[1])
    if index is None:
        return Local(NOT_AN_INTEGER)
    if index != 0:
        return _error("ERR DB index is out of range (corosm has one database, 0)")
    return Local(OK)


def _hello(args: list[bytes], session: Session) -> Outcome:
    """``HELLO [2|3 [AUTH user pass] [SETNAME name]]``: pick RESP2 or RESP3."""
    protocol = session.protocol
    if len(args) > 1:
        version = parse_int64(args[1])
        if version not in (2, 3):
            return _error("NOPROTO unsupported protocol version")
        protocol = version
    rest = args[2:]
    while rest:
        option = rest[0].upper()
        if option == b"SETNAME" and len(rest) >= 2:
            named = _client([b"CLIENT", b"SETNAME", rest[1]], session)
            if isinstance(named, Local) and isinstance(named.reply, ErrorReply):
                return named
            rest = rest[2:]
        elif option == b"AUTH":
            return _error("ERR AUTH is not supported by corosm (it has no users or passwords)")
        else:
            return _error(f"ERR Syntax error in HELLO option '{_quote(rest[0])}'")
    session.protocol = protocol
    return Local(
        Map(
            (
                (b"server", b"corosm"),
                (b"version", REDIS_COMPAT_VERSION.encode()),
                (b"proto", protocol),
                (b"id", session.client_id),
                (b"mode", b"standalone"),
                (b"role", b"master"),
                (b"modules", []),
            )
        )
    )


def _client(args: list[bytes], session: Session) -> Outcome:
    sub = args[1].lower()
    if sub == b"setname" and len(args) == 3:
        if any(c <= 0x20 or c > 0x7E for c in args[2]):
            return _error("ERR Client names cannot contain spaces, newlines or special characters.")
        session.name = args[2]
        return Local(OK)
    if sub == b"getname" and len(args) == 2:
        return Local(session.name or None)
    if sub == b"id" and len(args) == 2:
        return Local(session.client_id)
    if sub == b"setinfo" and len(args) == 4:  # redis-py sends it on connect
        return Local(OK)
    if sub in (b"setname", b"getname", b"id", b"setinfo"):
        return wrong_arity(f"client|{sub.decode()}")
    return _error(
        f"ERR unknown subcommand '{_quote(args[1])}'. "
        "corosm supports CLIENT SETNAME, GETNAME, ID and SETINFO."
    )


# --------------------------------------------------------------------------- introspection


def _command(args: list[bytes], session: Session) -> Outcome:
    sub = args[1].lower() if len(args) > 1 else b""
    if sub == b"count":
        return Local(len(COMMANDS))
    if sub in (b"", b"docs"):
        # An empty answer: redis-cli then falls back to its built-in help.
        return Local([])
    if sub == b"info":
        return Local([_command_info(name) for name in args[2:]])
    return _error(
        f"ERR unknown subcommand '{_quote(args[1])}'. "
        "corosm supports COMMAND, COMMAND COUNT, DOCS and INFO."
    )


def _command_info(name: bytes) -> Reply:
    command = COMMANDS.get(name.lower())
    if command is None:
        return None
    return [command.name.encode(), command.arity, [], 0, 0, 0]


def _config(args: list[bytes], session: Session) -> Outcome:
    sub = args[1].lower()
    if sub == b"get" and len(args) >= 3:
        found: dict[bytes, Reply] = {}
        for pattern in args[2:]:
            glob = pattern.decode("utf-8", "replace").lower()
            for key in sorted(session.config):
                if fnmatch.fnmatchcase(key, glob):
                    found[key.encode()] = session.config[key].encode()
        return Local(Map(tuple(found.items())))
    if sub == b"get":
        return wrong_arity("config|get")
    if sub == b"resetstat":
        # INFO's counters are the runtime's and the journal's, cumulative since
        # start and shared with the HTTP front end: saying OK would be a lie.
        return _error(
            "ERR CONFIG RESETSTAT is not supported by corosm: "
            "its counters count from server start and cannot be reset"
        )
    if sub == b"set":
        return _error("ERR CONFIG SET is not supported by corosm; configure the server instead")
    return _error(f"ERR unknown subcommand '{_quote(args[1])}'. corosm supports CONFIG GET.")


def _info(args: list[bytes], session: Session) -> Outcome:
    """``INFO [section ...]``: ``# Section`` headers and ``name:value`` lines, as Redis."""
    wanted = {a.decode("utf-8", "replace").lower() for a in args[1:]}
    wanted -= {"all", "everything", "default"}
    sections: dict[str, dict[str, object]] = {
        "Server": {
            "redis_version": REDIS_COMPAT_VERSION,
            "redis_mode": "standalone",
            "server_name": "corosm",
        }
    }
    for name, figures in session.info().items():
        sections.setdefault(name, {}).update(figures)
    lines: list[str] = []
    for name, figures in sections.items():
        if wanted and name.lower() not in wanted:
            continue
        lines.append(f"# {name}")
        lines += [f"{key}:{_figure(value)}" for key, value in figures.items()]
        lines.append("")
    return Local("\r\n".join(lines).encode())


def _figure(value: object) -> str:
    # Runtime stats are floats; counters read better (and parse as ints) without ".0".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _one_line(str(value))


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


# --------------------------------------------------------------------------- data


def _get(args: list[bytes], session: Session) -> Outcome:
    return kv.Read(args[1])


def _mget(args: list[bytes], session: Session) -> Outcome:
    return kv.ReadMany(tuple(args[1:]))


def _set(args: list[bytes], session: Session) -> Outcome:
    condition = b""
    get = False
    for option in args[3:]:
        word = option.upper()
        if word in (b"NX", b"XX") and condition in (b"", word):
            condition = word  # repeating an option is fine, as in Redis; NX XX is not
        elif word == b"GET":
            get = True
        elif word == b"KEEPTTL":
            pass  # keys never expire in corosm, so keeping "the TTL" is what happens anyway
        elif word in (b"EX", b"PX", b"EXAT", b"PXAT"):
            return _error(
                f"ERR SET option '{word.decode()}' is not supported by corosm (keys never expire)"
            )
        else:
            return Local(SYNTAX_ERROR)
    if not condition and not get:
        # The plain SET: a Put record, no outcome to shape.
        return kv.Write(args[1], args[2])
    return kv.SetIf(args[1], args[2], condition == b"NX", condition == b"XX", get)


def _mset(args: list[bytes], session: Session) -> Outcome:
    if len(args) % 2 == 0:
        return wrong_arity("mset")
    return kv.WriteMany(tuple(zip(args[1::2], args[2::2], strict=True)))


def _del(args: list[bytes], session: Session) -> Outcome:
    return kv.DeleteMany(tuple(args[1:]))


def _exists(args: list[bytes], session: Session) -> Outcome:
    return kv.Exists(tuple(args[1:]))


def _incr(args: list[bytes], session: Session) -> Outcome:
    return kv.IncrBy(args[1], 1)


def _decr(args: list[bytes], session: Session) -> Outcome:
    return kv.IncrBy(args[1], -1)


def _incrby(args: list[bytes], session: Session) -> Outcome:
    delta = parse_int64(args[2])
    return Local(NOT_AN_INTEGER) if delta is None else kv.IncrBy(args[1], delta)


def _decrby(args: list[bytes], session: Session) -> Outcome:
    delta = parse_int64(args[2])
    if delta is None:
        return Local(NOT_AN_INTEGER)
    if delta == INT64_MIN:  # -INT64_MIN does not fit in 64 bits
        return _error("ERR decrement would overflow")
    return kv.IncrBy(args[1], -delta)


def _append(args: list[bytes], session: Session) -> Outcome:
    return kv.AppendBytes(args[1], args[2])


def _strlen(args: list[bytes], session: Session) -> Outcome:
    return kv.StrLen(args[1])


def _dbsize(args: list[bytes], session: Session) -> Outcome:
    return kv.Size()


def _flush(args: list[bytes], session: Session) -> Outcome:
    if not session.allow_reset:
        name = args[0].decode("ascii", "replace").upper()
        return _error(f"ERR {name} is disabled on this server (corosm serve --no-reset)")
    # ASYNC and SYNC are accepted: our reset is one journal record either way.
    if any(a.upper() not in (b"ASYNC", b"SYNC") for a in args[1:]) or len(args) > 2:
        return Local(SYNTAX_ERROR)
    return kv.Reset()


_TABLE: Final[tuple[Command, ...]] = (
    Command("ping", -1, _ping),
    Command("echo", 2, _echo),
    Command("quit", -1, _quit),
    Command("select", 2, _select),
    Command("hello", -1, _hello),
    Command("client", -2, _client),
    Command("command", -1, _command),
    Command("config", -2, _config),
    Command("info", -1, _info),
    Command("get", 2, _get),
    Command("mget", -2, _mget),
    Command("set", -3, _set),
    Command("mset", -3, _mset),
    Command("del", -2, _del),
    Command("exists", -2, _exists),
    Command("incr", 2, _incr),
    Command("decr", 2, _decr),
    Command("incrby", 3, _incrby),
    Command("decrby", 3, _decrby),
    Command("append", 3, _append),
    Command("strlen", 2, _strlen),
    Command("dbsize", 1, _dbsize),
    Command("flushall", -1, _flush),
    Command("flushdb", -1, _flush),
)

#: Every supported command by its lower-cased name.
COMMANDS: Final[Mapping[bytes, Command]] = {c.name.encode(): c for c in _TABLE}
