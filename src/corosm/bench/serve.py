"""``python -m corosm.bench.serve``: start a server variant for the benchmark.

``corosm serve`` exposes the options a user needs; the benchmark also needs
the variants that exist only to be compared against (``--journal-mode
blocking``: fsync inline on the loop; ``--app constant``: the HTTP stack
answering ``Ok``). Both are fields of :class:`corosm.server.ServerConfig`,
so this launcher maps its options onto that config and calls
:func:`corosm.server.run`, exactly what ``corosm serve`` does.

A benchmark server listens on the loopback interface only, so ``--host``
takes nothing else. Bad options exit 2 and a server that cannot start (port
taken, data directory unusable) exits 4, each with one line saying why, as
``corosm serve`` does.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence

from corosm.errors import CorosmError, InternalError
from corosm.frontends.cli import LOG_LEVELS, directory_path, listen_port

PROG = "python -m corosm.bench.serve"


def loopback_host(text: str) -> str:
    """An argparse type: ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    try:
        loopback = text == "localhost" or ipaddress.ip_address(text).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(
            f"a benchmark server listens on loopback only: expected 127.0.0.1, ::1 or "
            f"localhost, got {text!r}"
        )
    return text


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The launcher's options (a superset of ``corosm serve``'s that the bench uses)."""
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("--host", type=loopback_host, default="127.0.0.1")
    parser.add_argument("--port", type=listen_port, required=True)
    parser.add_argument("--data-dir", type=directory_path, required=True)
    parser.add_argument("--fsync", choices=("always", "interval", "never"), default="always")
    parser.add_argument("--resp-port", type=listen_port, default=None)
    parser.add_argument("--journal-mode", choices=("group", "blocking"), default="group")
    parser.add_argument("--app", choices=("kv", "constant"), default="kv")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning")
    args = parser.parse_args(argv)
    if os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        parser.error(f"--data-dir {str(args.data_dir)!r} exists and is not a directory")
    if args.resp_port is not None and args.resp_port == args.port != 0:
        parser.error(f"--resp-port and --port are both {args.port}: use two different ports")
    return args


def main(argv: Sequence[str]) -> int:
    """Run the server until SIGINT/SIGTERM; the exit code of :func:`corosm.server.run`."""
    args = parse(argv)
    try:
        from corosm import server
    except ImportError as exc:
        print(f"{PROG}: the server is not available: {exc}", file=sys.stderr)
        return 4
    config = server.ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        fsync=args.fsync,
        resp_port=args.resp_port,
        journal_mode=args.journal_mode,
        app=args.app,
        log_level=args.log_level,
    )
    try:
        return int(server.run(config))
    except InternalError:
        raise  # a bug in corosm: its traceback
    except (OSError, CorosmError) as exc:  # port taken, data directory unusable...
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
