"""The ``corosm`` command line (also ``python -m corosm``).

Theory of operation
-------------------
``main(argv)`` builds an argparse parser, runs the chosen subcommand and
returns its exit code; it never calls ``sys.exit`` itself, so tests call it
directly. Every subcommand sets ``run=<function(args) -> int>`` on its parser.

Built in: ``serve`` (validate options, then hand a ``ServerConfig`` to
``corosm.server.run``, imported only then; ``--machine package.module:Class``
serves that machine instead of the key-value one, see docs/serving.md).
Everything else is an extension, ``kv`` included (:mod:`corosm.client.cli`,
built on :class:`corosm.client.Client`).

Adding a subcommand from another module (``sim``, ``bench``...): append an
:class:`Extension` to :data:`EXTENSIONS` naming a module that defines::

    def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        parser = subparsers.add_parser("sim", help="...", description="...")
        parser.add_argument(...)
        parser.set_defaults(run=run_sim)        # run_sim(args: argparse.Namespace) -> int

The module is imported only when its subcommand is the one being run, so heavy
imports never slow down ``corosm kv read``; for ``corosm --help`` a one-line
placeholder shows ``Extension.help``. A missing module hides its subcommand.
A :class:`corosm.errors.UsageError` escaping ``run`` exits 2 with its message.
``serve`` that cannot start (port in use, data directory unusable or full,
corrupt journal) says why in one line and exits 4; ``--log-level debug`` adds
the traceback.

Exit codes (shared by every subcommand; see :data:`EXIT_CODES_HELP`, the
one table, whose constants the extensions import):
0 success; 1 the answer is "no" (key absent for ``read``/``get``/``delete``,
server unhealthy), or (``bench``) a scenario failed part way; 2 usage error
(bad arguments, or the server rejected the request as invalid); 3 no answer
from the server (not running, connection lost, timeout, 503
overloaded/stopping); 4 the server failed (5xx, invalid reply), or ``serve``
could not start; 128 + a signal's number (:func:`signal_exit_code`) for a
command a signal stopped: 130 Ctrl-C, and for ``bench`` also 143 SIGTERM and
129 SIGHUP; 141 (``kv``) the reader of the output left early.
Messages go to stderr, one line each, prefixed ``corosm:``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from signal import SIGHUP, SIGINT, SIGPIPE, SIGTERM
from typing import Any
from urllib.parse import urlsplit

from corosm.errors import CorosmError, CorruptJournal, InternalError, UsageError

EXIT_OK = 0
EXIT_NO = 1
EXIT_PART_FAILED = 1  # bench: the report is written, but a scenario failed part way
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_SERVER_FAILED = 4


def signal_exit_code(signum: int) -> int:
    """The status of a command that signal ``signum`` stopped: 128 + its number, as in a shell."""
    return 128 + signum


EXIT_CODES_HELP = """exit codes:
  0  success
  1  the answer is no: key absent (read, get, delete), server unhealthy (health);
     bench: a scenario failed part way (the report is written all the same)
  2  usage error: bad arguments, or the server rejected the request (4xx)
  3  no answer: server not running, connection lost, timeout, or 503 (busy/stopping)
  4  the server failed: 5xx other than 503, a reply the client cannot read,
     or serve could not start (port in use, data directory, corrupt journal)
  {SIGINT} stopped by Ctrl-C; bench also by SIGTERM ({SIGTERM}) or SIGHUP ({SIGHUP}), after
      stopping what it started and writing the report of what it measured
  {SIGPIPE} kv: whoever read the output left early (piped into head, say), as for cat""".format(
    **{sig.name: signal_exit_code(sig) for sig in (SIGINT, SIGTERM, SIGHUP, SIGPIPE)}
)

ENV_URL = "COROSM_URL"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Runner = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class Extension:
    """A subcommand defined in another module; see the module docstring."""

    name: str
    module: str
    help: str


EXTENSIONS: tuple[Extension, ...] = (
    Extension("kv", "corosm.client.cli", "talk to a running key-value server"),
    Extension("sim", "corosm.testing.sim.cli", "deterministic simulation campaigns of a machine"),
    Extension("bench", "corosm.bench.cli", "benchmark a corosm server"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(chosen=_chosen_command(args_list))
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits for --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run: Runner | None = getattr(args, "run", None)
    if run is None:
        parser.print_usage(sys.stderr)
        _say("a subcommand is required (see corosm --help)")
        return EXIT_USAGE
    try:
        return run(args)
    except UsageError as exc:
        _say(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return signal_exit_code(SIGINT)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; only the extension named ``chosen`` is imported."""
    from corosm import __version__

    parser = argparse.ArgumentParser(
        prog="corosm",
        description="corosm: coroutine state machines and a durable key-value server.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"corosm {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_serve(subparsers)
    for extension in EXTENSIONS:
        _add_extension(subparsers, extension, load=extension.name == chosen)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    # The top-level parser has no option that takes a value, so the first
    # word that is not an option is the subcommand.
    return next((word for word in argv if not word.startswith("-")), None)


def _say(message: str) -> None:
    print(f"corosm: {message}", file=sys.stderr)


# --- extensions ---------------------------------------------------------------------


def _add_extension(subparsers: Any, extension: Extension, *, load: bool) -> None:
    if not load:
        if _module_exists(extension.module):
            subparsers.add_parser(extension.name, help=extension.help, add_help=False)
        return
    try:
        module = importlib.import_module(extension.module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not extension.module.startswith(exc.name):
            raise  # a bug inside the extension: show it, do not hide it
        return  # not installed: argparse then reports an unknown command
    module.register(subparsers)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


# --- argument types (shared with extensions) ----------------------------------------


def port_number(text: str, *, allow_zero: bool = False) -> int:
    """An argparse type: a TCP port (0 too when ``allow_zero``: the OS picks one)."""
    low = 0 if allow_zero else 1
    port = whole_number(text)
    if port is None or not low <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number {low}..65535, got {text!r}")
    return port


def listen_port(text: str) -> int:
    """An argparse type: a port to listen on; 0 lets the OS pick a free one."""
    return port_number(text, allow_zero=True)


def directory_path(text: str) -> Path:
    """An argparse type: a directory's path, not empty (``Path("")`` would mean ``.``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory path, got an empty one")
    return Path(text)


def whole_number(text: str) -> int | None:
    """The int ``text`` spells in plain decimal (ASCII digits, a leading minus), else None.

    ``int()`` would also take ``" 5"``, ``"1_000"``, ``"+5"`` and other
    scripts' digits; an argument is taken as typed, or refused.
    """
    digits = text[1:] if text[:1] == "-" else text
    if not (digits.isdigit() and digits.isascii()) or len(digits) > 4000:  # int()'s own cap
        return None
    return int(text, 10)


def int64(text: str) -> int:
    """An argparse type: a signed 64-bit integer in decimal."""
    value = whole_number(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a decimal integer, got {text!r:.80}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(
            f"{text:.80} is outside the 64-bit range {INT64_MIN}..{INT64_MAX}"
        )
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = whole_number(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = whole_number(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def interval_ms(text: str) -> int:
    """An argparse type: an fsync interval in milliseconds, 1 up to a day."""
    from corosm.io.journal.control import MAX_INTERVAL_MS  # only serve pays for the import

    value = positive_int(text)
    if value > MAX_INTERVAL_MS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_INTERVAL_MS} (a day), got {text}")
    return value


def server_address(args: argparse.Namespace) -> tuple[str, int]:
    """Host and port from ``--host``/``--port``, else ``--url`` or $COROSM_URL, else defaults.

    Raises :class:`UsageError` for a URL that is not ``http://HOST[:PORT][/]``.
    """
    url, source = getattr(args, "url", None), "--url"
    if not url:
        url, source = os.environ.get(ENV_URL) or None, ENV_URL
    host, port = "127.0.0.1", 8080
    if url is not None:
        host, port = _parse_url(url, source)
    # Given but empty is not "not given": the client refuses an empty host by name.
    return (host if args.host is None else args.host, port if args.port is None else args.port)


def _parse_url(url: str, source: str) -> tuple[str, int]:
    expected = "expected http://HOST[:PORT], e.g. http://127.0.0.1:8080"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # an unclosed IPv6 bracket, a port that is not a number
        raise UsageError(f"{source}={url!r} does not parse ({exc}): {expected}") from None
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise UsageError(f"{source}={url!r} is not a server address: {expected}")
    if parts.query or parts.fragment or parts.username:
        raise UsageError(f"{source}={url!r} is not a server address: {expected}")
    if port == 0:
        raise UsageError(f"{source}={url!r} has port 0, which no server listens on: {expected}")
    return parts.hostname, 80 if port is None else port


# --- serve --------------------------------------------------------------------------

FSYNC_MODES = ("always", "interval", "never")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _add_serve(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the durable key-value server, or your own machine (--machine)",
        description="Run a durable server: the key-value store (seed protocol and REST over\n"
        "HTTP, Redis with --resp-port), or any machine with --machine, served with\n"
        "JSON bodies over HTTP (docs/serving.md).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--machine",
        metavar="MODULE:CLASS",
        default=None,
        help="serve this machine (a Machine subclass, e.g. bank:Bank for ./bank.py) with JSON "
        "bodies on POST / instead of the key-value store",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=listen_port, default=8080, help="HTTP port; 0 picks a free one (%(default)s)"
    )
    parser.add_argument(
        "--data-dir",
        type=directory_path,
        default=Path("corosm-data"),
        help="journal and snapshots (./%(default)s)",
    )
    parser.add_argument(
        "--fsync",
        choices=FSYNC_MODES,
        default="always",
        help="always: acknowledge after fdatasync; interval: fsync every "
        "--fsync-interval-ms; never: leave it to the OS (%(default)s)",
    )
    parser.add_argument(
        "--fsync-interval-ms",
        type=interval_ms,
        default=1000,
        help="for --fsync interval (%(default)s)",
    )
    parser.add_argument(
        "--resp-port",
        type=listen_port,
        default=None,
        help="key-value store: also serve the Redis protocol on this port (off)",
    )
    parser.add_argument(
        "--snapshot-every",
        type=non_negative_int,
        default=1_000_000,
        metavar="RECORDS",
        help="write a snapshot after this many journal records, or 256 MiB of journal, "
        "whichever comes first; 0 = the byte rule alone (%(default)s)",
    )
    parser.add_argument(
        "--max-queue",
        type=positive_int,
        default=10_000,
        help="inputs that may wait before requests get 503 (%(default)s)",
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="answer 503 to a request still waiting after this long (%(default)s)",
    )
    parser.add_argument(
        "--truncate-corrupt",
        action="store_true",
        help="if a journal record before the tail is corrupt, cut the journal there and "
        "start (losing the records after it) instead of refusing to start",
    )
    parser.add_argument(
        "--no-reset",
        dest="allow_reset",
        action="store_false",
        help="key-value store: refuse requests that empty the whole store "
        "(HTTP DELETE / answers 403)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the machine as --shards shards, each a Ray actor with its own journal; "
        "join the Ray cluster at ADDRESS, or start a local one (needs pip install 'corosm[ray]')",
    )
    parser.add_argument(
        "--shards",
        type=positive_int,
        default=None,
        help="with --ray: how many shards (1); the same number at every start (docs/scaling.md)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="(%(default)s)")
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    # A --data-dir that cannot be one (a file, a file among its parents, a
    # dangling symbolic link, no permission) is not checked here: the
    # journal's open (corosm.io.journal.lock) has the one rule, and the start
    # reports it in one line with exit 4.
    if not args.host.strip():
        raise UsageError("--host must not be empty")
    if args.resp_port is not None and args.resp_port == args.port != 0:
        raise UsageError(f"--resp-port and --port are both {args.port}: use two different ports")
    if args.shards is not None and args.ray is None:
        raise UsageError("--shards needs --ray (shards run as Ray actors; docs/scaling.md)")
    if args.ray is not None and args.resp_port is not None:
        raise UsageError("--resp-port is not served with --ray yet: drop one of them")
    fields = {
        "host": args.host,
        "port": args.port,
        "data_dir": args.data_dir,
        "fsync": args.fsync,
        "fsync_interval_ms": args.fsync_interval_ms,
        "resp_port": args.resp_port,
        "log_level": args.log_level,
        "snapshot_every_records": args.snapshot_every,
        "max_queue": args.max_queue,
        "request_timeout": args.request_timeout,
        "truncate_corrupt": args.truncate_corrupt,
        "allow_reset": args.allow_reset,
        "machine": args.machine,
        "ray": args.ray,
        "shards": args.shards or 1,
    }
    server = _import_server()
    if server is None:
        _say("the server is not part of this installation (module corosm.server is missing)")
        return EXIT_SERVER_FAILED
    config = server.ServerConfig(**fields)
    try:
        return int(server.run(config))
    except (UsageError, InternalError):
        raise  # exit 2 with its message (main), or a bug in corosm: its traceback
    except (OSError, CorosmError) as exc:
        # The operator's problems (port taken, disk full, corrupt journal, every
        # shard failed) get one line; the traceback is for --log-level debug.
        # Anything else is a bug and keeps its traceback.
        if args.log_level == "debug":
            traceback.print_exception(exc, file=sys.stderr)
        _say(f"cannot start: {_startup_problem(exc, args)}")
        return EXIT_SERVER_FAILED


def _startup_problem(exc: Exception, args: argparse.Namespace) -> str:
    """What stopped ``serve``, in one line, with what the operator can do about it."""
    if isinstance(exc, CorruptJournal):
        if args.truncate_corrupt or not exc.cuttable:  # the option would not help
            return str(exc)
        return f"{exc} (here: --truncate-corrupt)"  # the library's remedy, named as serve's option
    if not isinstance(exc, OSError):
        return str(exc)
    problem = exc.strerror or str(exc)
    data_dir = os.fspath(args.data_dir)
    if isinstance(exc, socket.gaierror):
        return f"--host {args.host!r}: {problem}"
    if exc.errno == errno.EADDRINUSE:
        return f"{problem} (another process listens there; choose another --port or --resp-port)"
    if exc.filename is not None:
        filename = os.fsdecode(exc.filename)
        if _is_within(filename, data_dir):
            return f"data directory {data_dir!r}: {problem}: {filename!r}"
        return f"{problem}: {filename!r}"
    if exc.errno in _DISK_ERRNOS:  # a write without a file name: the journal's
        return f"data directory {data_dir!r}: {problem}"
    return problem


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES})


def _is_within(path: str, directory: str) -> bool:
    path, directory = os.path.abspath(path), os.path.abspath(directory)
    return os.path.commonpath([path, directory]) == directory


def _import_server() -> Any:
    # Imported here, not at the top: the rest of the CLI must not pay for (or
    # depend on) the server's imports.
    try:
        return importlib.import_module("corosm.server")
    except ModuleNotFoundError as exc:
        if exc.name == "corosm.server":
            return None
        raise
