"""``corosm serve``: recovery, the runtime, the journal and the front ends, assembled.

Theory of operation
-------------------
``Server.start`` runs, in order: pick the machine (the key-value machine, or
the one ``--machine package.module:Class`` names, whose JSON types are
checked now, before anything touches the disk); recover the data directory
and start the runtime on it (:func:`~corosm.runtime.durable.start_durable`,
the engine of ``corosm.open``); listen for HTTP (and RESP, when a port is
given). ``Server.stop`` reverses it: stop accepting, let in-flight requests
finish, stop the runtime (which flushes and fsyncs the journal), and close.

Every machine is served by the same HTTP app
(:class:`~corosm.frontends.http.machineapp.MachineHttpApp`: JSON ``POST /``,
health, metrics, read-your-writes); the key-value machine gets
:class:`~corosm.frontends.http.app.KvHttpApp`, that app with the seed's
protocol and REST in place of JSON, and the Redis protocol on ``--resp-port``.

Two variants exist for benchmarks, so that alternatives run on the very same
stack: ``journal_mode="blocking"`` writes and fdatasyncs each record inline
on the loop thread (the design corosm improves on), and ``app="constant"``
answers every request ``Ok`` without machine or journal (the stack's limit).
"""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from corosm import compiled
from corosm.apps.kv.machine import KVMachine
from corosm.core.effects import Append, Effect
from corosm.core.machine import Machine
from corosm.errors import UsageError
from corosm.frontends.http import Limits, Request, Response, start_http_server
from corosm.frontends.http.server import HttpServer
from corosm.io.executor import Completion, CompletionSink
from corosm.io.journal import (
    FileSystem,
    JournalOptions,
    LogWriter,
)
from corosm.runtime import Runtime
from corosm.runtime import run as run_on_uvloop
from corosm.runtime.durable import DurableOptions, recover, start_durable
from corosm.runtime.host import DEFAULT_MAX_QUEUE

if TYPE_CHECKING:
    from corosm.frontends.jsoncodec import MachineCodec

log = logging.getLogger("corosm.server")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``corosm serve`` can be told. Defaults are the embedded defaults."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("corosm-data")
    fsync: Literal["always", "interval", "never"] = "always"
    fsync_interval_ms: int = 1000
    resp_port: int | None = None
    log_level: str = "info"
    journal_mode: Literal["group", "blocking"] = "group"
    app: Literal["kv", "constant"] = "kv"
    snapshot_every_records: int = 1_000_000
    snapshot_every_bytes: int = 256 << 20
    max_queue: int = DEFAULT_MAX_QUEUE
    request_timeout: float = 10.0
    truncate_corrupt: bool = False
    allow_reset: bool = True
    machine: str | None = None  # package.module:Class; None = the key-value machine
    ray: str | None = None  # None: one host here; "": shards on a local Ray; else its address
    shards: int = 1


class Server:
    """One running server (see the module docs)."""

    def __init__(self, config: ServerConfig, *, fs: FileSystem | None = None) -> None:
        self.config = config
        self._fs = fs  # the journal's file system: the real one unless a test injects faults
        self.runtime: Runtime[Any, Any, Any] | None = None
        self.http: HttpServer | None = None
        self.resp: asyncio.Server | None = None

    @property
    def http_port(self) -> int:
        assert self.http is not None, "server not started"
        return self.http.port

    @property
    def resp_port(self) -> int | None:
        if self.resp is None:
            return None
        port: int = self.resp.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        config = self.config
        if config.app == "constant":
            self.http = await start_http_server(_constant_ok, config.host, config.port)
            return
        machine = KVMachine() if config.machine is None else load_machine(config.machine)
        codec = None if isinstance(machine, KVMachine) else self._check_machine(machine)
        if config.ray is not None:
            self.runtime = await self._start_shards(machine)
        else:
            self._refuse_shards()
            if config.journal_mode == "blocking":
                self.runtime = await self._start_blocking(machine)
            else:
                self.runtime = await start_durable(
                    machine, config.data_dir, self._durable_options(), fs=self._fs
                )
        await self._start_frontends(codec)

    def _refuse_shards(self) -> None:
        """One journal in a directory of shards would hide their data, and its writes from them."""
        from corosm.shards.errors import ShardLayoutMismatch
        from corosm.shards.manifest import MANIFEST, read_layout

        directory = os.fspath(self.config.data_dir)
        if not os.path.exists(os.path.join(directory, MANIFEST)):
            return  # the usual case; and an unusable directory is for recovery to report
        layout = read_layout(directory)
        if layout is not None:
            raise ShardLayoutMismatch(
                f"{directory} holds {layout.shards} shards ({MANIFEST}): "
                f"serve it with --ray --shards {layout.shards}"
            )

    def _check_machine(self, machine: Machine[Any, Any, Any]) -> MachineCodec:
        """The JSON codec of a machine other than the key-value one (fails on a bad type)."""
        from corosm.frontends.jsoncodec import MachineCodec

        if self.config.resp_port is not None:
            raise UsageError(
                f"--resp-port serves the key-value machine's Redis commands; "
                f"--machine {self.config.machine} is another machine: drop --resp-port"
            )
        return MachineCodec(machine)

    async def _start_shards(self, machine: Machine[Any, Any, Any]) -> Any:
        """``--ray``: the machine as shards on Ray, behind a client the front ends serve."""
        from corosm.shards.ray import start as start_shards  # names the extra if Ray is missing

        config = self.config
        if config.journal_mode == "blocking" or self._fs is not None:
            raise UsageError("--ray runs the group-commit journal on each shard's own disk")
        return await start_shards(
            machine,
            config.data_dir,
            shards=config.shards,
            address=config.ray or "local",  # --ray alone: a new local Ray, never a stranger's
            **dataclasses.asdict(self._durable_options()),
        )

    def _durable_options(self) -> DurableOptions:
        """The journal and queue options of this configuration, for one host or its shards."""
        config = self.config
        return DurableOptions(
            fsync=config.fsync,
            fsync_interval_ms=config.fsync_interval_ms,
            snapshot_every=config.snapshot_every_records,
            snapshot_every_bytes=config.snapshot_every_bytes,
            max_queue=config.max_queue,
            truncate_corrupt=config.truncate_corrupt,
        )

    async def _start_blocking(self, machine: Machine[Any, Any, Any]) -> Runtime[Any, Any, Any]:
        """The benchmark's straw man: the same recovery, then one fsync per record inline."""
        config = self.config
        options = JournalOptions(fsync=config.fsync, snapshot_every_records=0)
        loop = asyncio.get_running_loop()
        _journal, recovered = await loop.run_in_executor(
            None, lambda: recover(machine, config.data_dir, options, fs=self._fs)
        )
        executor = BlockingJournalExecutor(
            str(config.data_dir), recovered.next_lsn, machine.encode_record
        )
        runtime: Runtime[Any, Any, Any] = Runtime(
            machine,
            state=recovered.state,
            executors={Append: executor},
            max_queue=config.max_queue,
        )
        await runtime.start()
        return runtime

    async def _start_frontends(self, codec: MachineCodec | None) -> None:
        from corosm.frontends.http.app import KvHttpApp
        from corosm.frontends.http.machineapp import MachineHttpApp

        config, runtime = self.config, self.runtime
        assert runtime is not None
        app: MachineHttpApp
        if codec is None:
            app = KvHttpApp(runtime, allow_reset=config.allow_reset)
        else:
            app = MachineHttpApp(runtime, codec)
        limits = Limits(response_timeout=config.request_timeout)
        self.http = await start_http_server(app, config.host, config.port, limits=limits)
        if config.resp_port is not None:
            from corosm.frontends.resp.server import start_resp_server

            info = {
                "fsync": config.fsync,
                "fsync_interval_ms": str(config.fsync_interval_ms),
                "journal_mode": config.journal_mode,
                "data_dir": os.fspath(config.data_dir),
            }
            self.resp = await start_resp_server(
                runtime, config.host, config.resp_port, info=info, allow_reset=config.allow_reset
            )

    async def stop(self) -> None:
        """Stop accepting, finish what is in flight, flush the journal."""
        if self.http is not None:
            await self.http.shutdown()
        if self.resp is not None:
            from corosm.frontends.resp.server import stop_resp_server

            await stop_resp_server(self.resp)
        if self.runtime is not None:
            await self.runtime.stop()


class BlockingJournalExecutor:
    """For comparison only: one write + fdatasync per record, inline on the loop thread.

    This is the design corosm exists to beat: while the disk syncs, the loop
    serves nobody. It writes the same format, so recovery reads it.
    """

    def __init__(self, directory: str, next_lsn: int, encode: Any) -> None:
        from corosm.io.journal import OSFileSystem

        # Written like the journal's in "always" mode, so that the two designs
        # differ in when they sync, not in how they write.
        self._writer = LogWriter(OSFileSystem(), directory, next_lsn, reserve=True)
        self._encode = encode
        self._sink: CompletionSink | None = None
        self.fsyncs = 0

    def start(self, sink: CompletionSink) -> None:
        self._sink = sink
        self._writer.fs.makedirs(self._writer.directory)
        self._writer.open()

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        assert self._sink is not None
        completions: list[Completion] = []
        for request, effect in requests:
            if not isinstance(effect, Append):
                completions.append((request, None, UsageError(f"not an Append: {effect!r}")))
                continue
            try:
                result = self._writer.flush_batch([self._encode(effect.record)], sync=True)
            except Exception as exc:
                completions.append((request, None, exc))
            else:
                self.fsyncs += 1
                completions.append((request, result.first_lsn, None))
        self._sink(completions)

    def cancel(self, request: int) -> None:
        """Appends are never cancelled."""

    def close(self) -> None:
        self._writer.close()

    def stats(self) -> dict[str, float]:
        return {"journal_fsyncs": self.fsyncs}


_OK = Response(200, b"Ok")


def _constant_ok(request: Request) -> Response:
    return _OK


async def serve(config: ServerConfig, stop: asyncio.Event | None = None) -> None:
    """Run a server until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is None).

    The signals are caught from the start: one that comes while the server
    starts (recovery runs on a thread and cannot be cut short) stops it as
    soon as the start is done, before it serves anything.
    """
    catch = stop is None
    if stop is None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
    server = Server(config)
    await server.start()
    if catch:
        _stop_on_signals(stop)  # again: Ray's init (--ray) puts in a SIGTERM handler of its own
    if stop.is_set():
        log.warning("stopped while starting: not serving")
        await server.stop()
        return
    resp = f", RESP on {config.host}:{server.resp_port}" if server.resp_port else ""
    machine = f"machine {config.machine}, " if config.machine else ""
    print(
        f"corosm: serving HTTP on {config.host}:{server.http_port}{resp} ({machine}"
        f"data {os.fspath(config.data_dir)!r}, fsync={config.fsync}, pid {os.getpid()}, "
        f"{compiled.describe()})",
        flush=True,
    )
    await stop.wait()
    log.info("stopping: finishing in-flight requests and flushing the journal")
    await server.stop()


def _stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a graceful stop), in place of any other handler."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def load_machine(spec: str, command: str = "corosm serve") -> Machine[Any, Any, Any]:
    """The machine ``package.module:Name`` names: a Machine subclass, instance or factory.

    The current directory is searched first (as ``python -m`` does), so
    ``corosm serve --machine bank:Bank`` finds ``./bank.py``. Every failure
    is a :class:`UsageError` of one line naming what was tried; its advice
    names ``command``, the command whose ``--machine`` this is.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(
            f"--machine must be package.module:Class (e.g. bank:Bank for class Bank in "
            f"./bank.py), not {spec!r}"
        )
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        dotted = module_name.removesuffix(".py").replace(os.sep, "/").strip("/").replace("/", ".")
        raise UsageError(
            f"--machine {spec} names a file; expected a module, as import names it: "
            f"--machine {dotted}:{attribute}, run from the folder {module_name!r} is in"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name != missing and not module_name.startswith(missing + "."):
            raise UsageError(
                f"--machine {spec}: importing {module_name!r} failed: {exc} "
                "(a module it imports is missing: install it in this environment)"
            ) from exc
        raise UsageError(
            f"--machine {spec}: cannot import {module_name!r} (no module named {missing!r} in "
            f"{os.getcwd()!r} or on sys.path); run {command} from the folder that holds it, "
            f"or set PYTHONPATH to that folder (PYTHONPATH=path/to/project {command} "
            f"--machine {spec} ...)"
        ) from exc
    except (Exception, SystemExit) as exc:  # the module is broken (or exits): say so, in one line
        raise UsageError(
            f"--machine {spec}: importing {module_name!r} raised {_raised(exc)}"
        ) from exc
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(
                f"--machine {spec}: {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                f"{attribute!r}; expected a Machine subclass"
            ) from None
    return _as_machine(spec, found, command)


def _as_machine(spec: str, found: Any, command: str) -> Machine[Any, Any, Any]:
    if isinstance(found, Machine):
        return found
    if not callable(found):
        raise UsageError(f"--machine {spec} is {type(found).__name__}; expected a Machine subclass")
    if isinstance(found, type) and not issubclass(found, Machine):  # never called: who knows what
        raise UsageError(
            f"--machine {spec} is the class {found.__qualname__}, which is not a Machine "
            "subclass; expected a Machine subclass, an instance, or a function that returns one"
        )
    try:
        machine = found()
    except (Exception, SystemExit) as exc:
        raise UsageError(
            f"--machine {spec}: {spec.partition(':')[2]}() raised {_raised(exc)} "
            f"({command} creates the machine with no arguments: give its parameters defaults, "
            "or name a function that returns the machine)"
        ) from exc
    if not isinstance(machine, Machine):
        raise UsageError(
            f"--machine {spec}() gave {type(machine).__name__}; expected a corosm Machine "
            "(a Machine subclass, an instance, or a function that returns one)"
        )
    return machine


def _raised(exc: BaseException) -> str:
    """``RuntimeError: the message``, on one line (a ``--machine`` refusal is one line)."""
    from corosm.frontends.http.machineapp import one_line

    return f"{type(exc).__name__}: {one_line(str(exc))}"


#: The cyclic garbage collector's first threshold in ``corosm serve`` (Python's
#: default is 700 container objects allocated and not freed). A request in
#: flight holds a few containers (its handler's task, its reply, its slot)
#: until it is answered. With hundreds in flight they outnumber 700, so the
#: young collections kept finding them alive and promoting them, and they died
#: in the older generations, whose collections traverse much more. Nothing on
#: the request path makes a reference cycle (reference counting frees it all),
#: so that work bought nothing: at 256 connections, 6% of the server's time
#: and twice the p99 (docs/perf-log.md, session 30).
GC_YOUNG_THRESHOLD: Final = 10_000


def run(config: ServerConfig) -> int:
    """Entry point of ``corosm serve``: run until SIGTERM/SIGINT, then exit 0.

    ``kill -USR1 <pid>`` prints every thread's stack to stderr and the
    server goes on: the way to see where a server that hangs is waiting.
    The process collects cyclic garbage less often (:data:`GC_YOUNG_THRESHOLD`).
    """
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if hasattr(signal, "SIGUSR1"):  # not on Windows
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    run_on_uvloop(serve(config))
    return 0
