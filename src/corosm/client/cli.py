"""``corosm kv``: the key-value server from a shell, through :class:`Client`.

Registered by :mod:`corosm.frontends.cli` as an extension (imported only when
``corosm kv ...`` runs). Each command is a small function ``(client, args) ->
exit code``; :func:`_run` opens the client and turns the client's exceptions
into the CLI's exit codes and one-line messages, so the commands stay free of
error handling.

Output, chosen for shell use:

* ``read KEY`` prints the int and a newline; ``get KEY`` writes the raw bytes
  exactly (adding a newline only when stdout is a terminal).
* An absent key prints nothing and exits 1, like ``grep`` finding nothing and
  ``git config --get`` on a missing key, so ``if v=$(corosm kv read k)`` works.
* ``write``, ``reset``, ``put`` and ``delete`` print nothing on success;
  ``put`` exits 0 whether it created or replaced, ``delete`` exits 1 when the
  key was absent.
* A reader that leaves early (``corosm kv metrics | head -1``) ends the command
  quietly with 141, the status of a process that SIGPIPE ended, as ``cat``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from corosm.client.errors import (
    ClientError,
    ConnectionLost,
    InvalidRequest,
    RequestRejected,
    ServerUnavailable,
    ServerUnreachable,
)
from corosm.client.sync import Client
from corosm.frontends.cli import (
    ENV_URL,
    EXIT_CODES_HELP,
    EXIT_NO,
    EXIT_OK,
    EXIT_SERVER_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    int64,
    port_number,
    server_address,
)

Command = Callable[[Client, argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``kv`` and its commands to the ``corosm`` parser."""
    kv = subparsers.add_parser(
        "kv",
        help="talk to a running key-value server",
        description="Talk to a running corosm key-value server.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = kv.add_subparsers(title="commands", metavar="COMMAND")
    common = _common_options()

    def add(name: str, command: Command, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        parser.set_defaults(run=lambda args: _run(command, args))
        return parser

    parser = add("write", _write, "seed protocol: store the 64-bit int VALUE under KEY")
    parser.add_argument("key", metavar="KEY")
    parser.add_argument("value", metavar="VALUE", type=int64)
    add("read", _read, "seed protocol: print the int under KEY (exit 1 if absent)").add_argument(
        "key", metavar="KEY"
    )
    add("reset", _reset, "seed protocol: empty the whole store")
    add(
        "get", _get, "REST: write the raw value under KEY to stdout (exit 1 if absent)"
    ).add_argument("key", metavar="KEY")
    parser = add("put", _put, "REST: store VALUE (or stdin, when VALUE is -) under KEY")
    parser.add_argument("key", metavar="KEY")
    parser.add_argument("value", metavar="VALUE", help="the value, or - to read it from stdin")
    add("delete", _delete, "REST: remove KEY (exit 1 if absent)").add_argument("key", metavar="KEY")
    add("health", _health, "print ok, or why the server is unhealthy (exit 1)")
    add("metrics", _metrics, "print the server's metrics (Prometheus text format)")
    kv.set_defaults(run=lambda args: _missing_command(kv))


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument("--host", default=None, help="server host (127.0.0.1)")
    group.add_argument("--port", type=port_number, default=None, help="server port (8080)")
    group.add_argument(
        "--url", default=None, help=f"server as http://HOST:PORT (default: ${ENV_URL})"
    )
    group.add_argument(
        "--timeout", type=_seconds, default=10.0, help="seconds to wait for a reply (%(default)s)"
    )
    return common


def _seconds(text: str) -> float:
    """An argparse type: a number; the client says which are too small or too large."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def _missing_command(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    print("corosm: kv needs a command (see corosm kv --help)", file=sys.stderr)
    return EXIT_USAGE


def _run(command: Command, args: argparse.Namespace) -> int:
    """Run one command; map the client's errors to exit codes and a one-line message."""
    try:
        host, port = server_address(args)
        with Client(host, port, timeout=args.timeout) as client:
            return command(client, args)
    except (InvalidRequest, RequestRejected) as exc:
        return _fail(exc, EXIT_USAGE)
    except (ServerUnreachable, ConnectionLost, ServerUnavailable) as exc:
        return _fail(exc, EXIT_UNREACHABLE)
    except ClientError as exc:  # ServerFailed, ProtocolError
        return _fail(exc, EXIT_SERVER_FAILED)
    except BrokenPipeError:  # from stdout: the client turns its own into ConnectionLost
        return _reader_left()


def _fail(exc: Exception, code: int) -> int:
    print(f"corosm: {exc}", file=sys.stderr)
    return code


def _reader_left() -> int:
    """Whoever read our output has gone (``corosm kv get k | head -c1``): stop as cat does.

    That is, silently, with the status of a process that SIGPIPE ended. What
    stdout still buffers goes to /dev/null: flushed at exit, it would fail again.
    """
    with contextlib.suppress(OSError, ValueError):  # a stdout without a descriptor
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 128 + signal.SIGPIPE


def _key_bytes(key: str) -> bytes:
    # os.fsencode undoes the surrogate escapes Python applies to argv, so a key
    # that is not valid UTF-8 reaches the server as the bytes the shell passed.
    return os.fsencode(key)


# --- the commands -------------------------------------------------------------------


def _write(client: Client, args: argparse.Namespace) -> int:
    client.write(args.key, args.value)
    return EXIT_OK


def _read(client: Client, args: argparse.Namespace) -> int:
    value = client.read(args.key)
    if value is None:
        return EXIT_NO
    print(value)
    return EXIT_OK


def _reset(client: Client, args: argparse.Namespace) -> int:
    client.reset()
    return EXIT_OK


def _get(client: Client, args: argparse.Namespace) -> int:
    value = client.get(_key_bytes(args.key))
    if value is None:
        return EXIT_NO
    out: Any = sys.stdout.buffer
    out.write(value)
    if sys.stdout.isatty() and not value.endswith(b"\n"):
        out.write(b"\n")
    out.flush()
    return EXIT_OK


def _put(client: Client, args: argparse.Namespace) -> int:
    value = sys.stdin.buffer.read() if args.value == "-" else os.fsencode(args.value)
    client.put(_key_bytes(args.key), value)
    return EXIT_OK


def _delete(client: Client, args: argparse.Namespace) -> int:
    return EXIT_OK if client.delete(_key_bytes(args.key)) else EXIT_NO


def _health(client: Client, args: argparse.Namespace) -> int:
    reason = client.health()
    print("ok" if reason is None else reason)
    return EXIT_OK if reason is None else EXIT_NO


def _metrics(client: Client, args: argparse.Namespace) -> int:
    sys.stdout.write(client.metrics())
    sys.stdout.flush()
    return EXIT_OK
