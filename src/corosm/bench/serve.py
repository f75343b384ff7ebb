"""``python -m corosm.bench.serve``: start a server variant for the benchmark.

``corosm serve`` exposes the options a user needs; the benchmark also needs
the variants that exist only to be compared against (``--journal-mode
blocking``: fsync inline on the loop; ``--app constant``: the HTTP stack
answering ``Ok``). Both are fields of :class:`corosm.server.ServerConfig`,
so this launcher maps its options onto that config and calls
:func:`corosm.server.run`, exactly what ``corosm serve`` does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The launcher's options (a superset of ``corosm serve``'s that the bench uses)."""
    parser = argparse.ArgumentParser(prog="python -m corosm.bench.serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--fsync", choices=("always", "interval", "never"), default="always")
    parser.add_argument("--resp-port", type=int, default=None)
    parser.add_argument("--journal-mode", choices=("group", "blocking"), default="group")
    parser.add_argument("--app", choices=("kv", "constant"), default="kv")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Run the server until SIGINT/SIGTERM; the exit code of :func:`corosm.server.run`."""
    args = parse(argv)
    try:
        from corosm import server
    except ImportError as exc:
        print(f"corosm.bench.serve: the server is not available: {exc}", file=sys.stderr)
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
    return int(server.run(config))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
