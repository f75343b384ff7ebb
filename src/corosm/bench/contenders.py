"""The contenders: each one a server started as its own process.

Theory of operation
-------------------
A contender is a command-line template; ``{port}``, ``{resp_port}`` and
``{data_dir}`` are filled in when it starts. corosm's own contenders all run
``python -m corosm.bench.serve`` (override the prefix with the environment variable
``COROSM_BENCH_SERVE``, e.g. to try a branch's server) with options that pick
the variant (``corosm.bench.serve`` maps them onto ``corosm.server.ServerConfig``;
``corosm serve`` itself does not offer the comparison-only variants):

``corosm``       ``--fsync always``: group commit, the design under test.
``blocking``     ``--journal-mode blocking``: the same server, each write's
                 fsync inline on the event loop (the seed's design, made durable).
``constant``     ``--app constant``: the HTTP stack answering ``Ok`` to every
                 request, with no machine and no journal: the stack's limit.
``corosm`` (RESP) ``python -m corosm serve --port 0 --resp-port {port} --fsync always``:
                 the real server; RESP on ``{port}``, HTTP idle on a free port.

and redis-server with the AOF ``always``, ``everysec`` or off. A contender
that fails to start (an option the server does not have yet, a missing
tool) is reported as unavailable with the reason, and the suite goes on.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Contender:
    """A server to measure: a name for the report and a command-line template."""

    name: str
    description: str
    template: tuple[str, ...]
    protocol: str = "http"  # "http" (wrk on {port}) or "resp" (redis-benchmark on {resp_port})

    def command(self, port: int, data_dir: Path, resp_port: int = 0) -> list[str]:
        """The command line, with ports and data directory filled in."""
        values: Mapping[str, str] = {
            "port": str(port),
            "resp_port": str(resp_port),
            "data_dir": str(data_dir),
        }
        return [part.format_map(values) for part in self.template]

    def ports(self, port: int, resp_port: int) -> list[int]:
        """The ports that must answer before the contender counts as started."""
        return [port, resp_port] if "{resp_port}" in self.template else [port]

    def load_port(self, port: int, resp_port: int) -> int:
        """The port the load generator targets."""
        return resp_port if self.protocol == "resp" and "{resp_port}" in self.template else port


def serve_prefix() -> tuple[str, ...]:
    """``python -m corosm.bench.serve``, or the split value of ``COROSM_BENCH_SERVE``."""
    override = os.environ.get("COROSM_BENCH_SERVE")
    if override:
        return tuple(shlex.split(override))
    return (sys.executable, "-m", "corosm.bench.serve")


def _corosm(name: str, description: str, *options: str, protocol: str = "http") -> Contender:
    base = ("--host", "127.0.0.1", "--port", "{port}", "--data-dir", "{data_dir}")
    return Contender(name, description, (*serve_prefix(), *base, *options), protocol)


def corosm_durable() -> Contender:
    """corosm with fsync=always and group commit."""
    return _corosm("corosm", "corosm, fsync=always, group commit", "--fsync", "always")


def corosm_blocking() -> Contender:
    """The same server with each fsync inline on the loop."""
    return _corosm(
        "blocking",
        "same server, fsync inline on the loop (blocking design)",
        "--fsync",
        "always",
        "--journal-mode",
        "blocking",
    )


def corosm_constant() -> Contender:
    """The HTTP stack answering a constant Ok: no machine, no journal."""
    return _corosm("constant", "same HTTP stack answering a constant Ok", "--app", "constant")


def corosm_resp() -> Contender:
    """``corosm serve --resp-port``, fsync=always: the real server, measured over RESP.

    RESP listens on ``{port}``, the one port the suite waits for and loads (a
    RESP-only contender, as redis-server); HTTP, unused here, takes a free port.
    """
    argv: tuple[str, ...] = (sys.executable, "-m", "corosm", "serve", "--host", "127.0.0.1")
    argv += ("--port", "0", "--resp-port", "{port}", "--data-dir", "{data_dir}")
    argv += ("--fsync", "always", "--log-level", "warning")
    return Contender("corosm", "corosm serve, RESP, fsync=always", argv, "resp")


def redis(appendfsync: str | None) -> Contender:
    """redis-server with AOF ``appendfsync`` (``always``/``everysec``) or AOF off (None)."""
    base: tuple[str, ...] = ("redis-server", "--port", "{port}", "--bind", "127.0.0.1")
    base += ("--save", "", "--dir", "{data_dir}", "--daemonize", "no")
    if appendfsync is None:
        return Contender(
            "redis-aof-off", "redis-server, AOF off", (*base, "--appendonly", "no"), "resp"
        )
    aof = ("--appendonly", "yes", "--appendfsync", appendfsync)
    return Contender(
        f"redis-{appendfsync}", f"redis-server, appendfsync {appendfsync}", (*base, *aof), "resp"
    )


def profiled(contender: Contender, profile_path: Path) -> Contender:
    """``contender`` run under cProfile, writing ``profile_path`` when it stops (SIGINT)."""
    template = list(contender.template)
    if template[1:2] == ["-m"]:
        template[1:1] = ["-m", "cProfile", "-o", str(profile_path)]
    description = contender.description + " (cProfile)"
    return Contender(contender.name, description, tuple(template), contender.protocol)
