"""Shards as Ray actors: one durable host per actor, restarted and recovered per shard.

Theory of operation
-------------------
Ray places and restarts processes; corosm keeps their state and their order.

- Each shard is a named async actor (:class:`ShardActor`) whose constructor
  runs :func:`open_shard` (:meth:`ShardHost.recover`) on the data directory
  *of the node it runs on*: Ray dispatches no call to it before recovery is
  over. Its runtime then runs on the actor's event loop, its journal thread
  beside it.
- A shard makes its directory (and the manifest) on its node only when
  :func:`start` found a new store: no manifest where it runs, nor on any
  node that runs a shard (:func:`check_node` asks each, before any shard
  starts). Once one of them holds the manifest, the store exists, and a
  shard whose directory is missing on its node fails rather than start
  empty beside it.
- Ray restores no actor state: when a shard's process dies, Ray starts it
  again (``max_restarts``) with the same arguments, and the constructor
  recovers the journal again. A restarted shard refuses to create a missing
  directory (``create=False``): starting empty would lose the store.
- A shard is pinned to the node it was first placed on (hard node
  affinity), because its journal is on that node's disk. If the node is
  gone, the shard cannot come back until it does (docs/scaling.md).
- A constructor that raises (a corrupt journal, another layout) kills the
  actor for good: Ray does not restart a failed creation, and
  :class:`RayTransport` reports it as :class:`ShardFailed` with the cause.
- Ray does not order an async actor's calls; the batch numbers of
  :mod:`.client` and :mod:`.order` do. A call lost with a dying process
  raises :class:`OutcomeUnknown`; the client then waits for the restarted
  shard's hello (polling, with backoff, while Ray says it is unavailable).

::

    async with corosm.shards.ray.open(KVMachine(), "/data/kv", shards=4) as kv:
        await kv.submit(Write(b"x", b"1"))

``open`` joins the cluster at ``address`` (or starts a local Ray when none
is running), creates or finds the shard actors, and yields a connected
:class:`~corosm.shards.client.ShardedClient`. Ray is an optional
dependency: ``pip install 'corosm[ray]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

try:
    import ray
    from ray import cloudpickle
    from ray.exceptions import ActorDiedError, RayActorError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "corosm.shards.ray needs Ray, an optional dependency of corosm: pip install 'corosm[ray]'"
    ) from exc

from corosm.core.machine import Machine
from corosm.errors import CorosmError, DataError, UsageError
from corosm.runtime.durable import DurableOptions
from corosm.shards.client import Limits, ShardedClient
from corosm.shards.errors import (
    OutcomeUnknown,
    ShardError,
    ShardFailed,
    ShardLayoutMismatch,
    ShardUnavailable,
)
from corosm.shards.host import BatchHeader, BatchReply, Hello, ShardHost, ShardSpec
from corosm.shards.manifest import MANIFEST, Layout, check_create, check_here, data_path
from corosm.shards.routing import check_shard_count, stable_hash

I = TypeVar("I")
O = TypeVar("O")

log = logging.getLogger("corosm.shards")

#: Ray's namespace for shard actors, unless ``open`` is given another.
NAMESPACE = "corosm"

#: Seconds a shard gets to stop cleanly when the client closes, before its actor is killed.
STOP_TIMEOUT = 30.0

#: How a shard's failed creation begins its message (found again in Ray's text).
_STARTING = "cannot start: "


class ShardActor:
    """The body of one shard's Ray actor (see the module docs)."""

    def __init__(self, spec: ShardSpec[Any, Any, Any]) -> None:
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.host = open_shard(spec, reconstructed=restarted)

    async def hello(self) -> Hello:
        await self.host.start()
        return self.host.hello()

    async def run(self, header: BatchHeader, packed: bytes) -> bytes:
        reply = await self.host.run(header, pickle.loads(packed))
        if reply.errors:
            for index, error in reply.errors.items():
                reply.errors[index] = _portable(error)
        return _pack(reply)

    async def health(self) -> str | None:
        return self.host.health()

    async def stats(self) -> dict[str, float]:
        return self.host.stats()

    async def stop(self) -> None:
        await self.host.stop()


def open_shard(spec: ShardSpec[Any, Any, Any], *, reconstructed: bool) -> ShardHost[Any, Any, Any]:
    """Recover the shard ``spec`` names on this node: what a shard actor's constructor runs.

    A ``reconstructed`` actor (one Ray restarted) never creates a missing
    directory: it would start empty and lose the store. Otherwise
    ``spec.create`` holds, as :func:`start` set it. Any error is raised as a
    :class:`ShardFailed` ("cannot start: " and the error's type and text),
    which pickles whatever the cause was.
    """
    if reconstructed:
        spec = dataclasses.replace(spec, create=False)  # never restart empty
    try:
        return ShardHost.recover(spec)
    except Exception as exc:
        # Ray ships this error to every caller; not every error pickles
        # (CorruptJournal does not), so send its text in one that does.
        raise ShardFailed(spec.index, f"{_STARTING}{type(exc).__name__}: {exc}") from None


def _check_here_or_error(directory: str, layout: Layout) -> bool | BaseException:
    """:func:`check_here` where this runs, its error returned (raised, Ray would bury its text)."""
    try:
        return check_here(directory, layout)
    except Exception as exc:
        return _portable(exc)


#: check_here as a Ray task, made once; it takes no CPU, so a node full of shards runs it.
_CHECK_HERE = ray.remote(num_cpus=0, max_retries=0)(_check_here_or_error)


async def check_node(node: str, directory: str, layout: Layout) -> bool:
    """Whether Ray node ``node`` sees the store's manifest at ``directory``.

    Runs :func:`~corosm.shards.manifest.check_here` on that node, pinned there
    as its shards are (hard node affinity). The check's own error (a
    DataError: a directory no shard could use there; an OSError, errno and
    all: one it cannot list) is raised here as it was raised there; a Ray
    error if Ray could not run it. Not bounded: :func:`start` bounds it.
    """
    strategy = NodeAffinitySchedulingStrategy(node, soft=False)
    answer = await _CHECK_HERE.options(scheduling_strategy=strategy).remote(directory, layout)
    if isinstance(answer, BaseException):
        raise answer
    return bool(answer)


def _pack(value: Any, by_value: bool = False) -> bytes:
    """Pickle a batch or a reply ourselves: Ray's own pickling costs twice as much.

    Plain pickle names classes by module; a class the other side cannot
    import by name (one defined in ``__main__``) needs cloudpickle, which
    sends it by value.
    """
    if not by_value:
        try:
            return pickle.dumps(value, protocol=5)
        except (pickle.PicklingError, AttributeError, TypeError):
            pass
    return cloudpickle.dumps(value, protocol=5)  # type: ignore[no-any-return]


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a CorosmError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return CorosmError(f"{type(error).__name__}: {error}")
    return error


RemoteShard = ray.remote(ShardActor)


class RayTransport:
    """Calls shard actors (see :class:`~corosm.shards.client.Transport`)."""

    def __init__(self, actors: Sequence[Any], *, kill_on_close: bool = True) -> None:
        self.actors = list(actors)
        self.kill_on_close = kill_on_close

    async def hello(self, shard: int) -> Hello:
        """Wait for the shard's hello; poll (with backoff) while Ray says it is restarting."""
        delay = 0.02
        while True:
            try:
                hello: Hello = await self.actors[shard].hello.remote()
            except ActorDiedError as exc:  # a failed creation, or no restarts left
                raise ShardFailed(shard, _STARTING + _cause(exc)) from None
            except RayActorError:  # unavailable: restarting, or unreachable for now
                await asyncio.sleep(delay)  # Ray has no "wait until alive" to await
                delay = min(2 * delay, 0.5)
                continue
            return hello

    async def run(self, shard: int, header: BatchHeader, inputs: list[Any]) -> BatchReply:
        by_value = any(kind.__module__ == "__main__" for kind in set(map(type, inputs)))
        try:
            packed = await self.actors[shard].run.remote(header, _pack(inputs, by_value))
        except RayActorError as exc:
            raise OutcomeUnknown(
                shard,
                f"the call was lost with the shard's process ({type(exc).__name__}); its "
                f"{len(inputs)} input(s) may or may not have run",
            ) from None
        except Exception as exc:  # the host raised: a bug, reported as such
            raise OutcomeUnknown(shard, f"the shard failed the call: {exc}") from None
        reply: BatchReply = pickle.loads(packed)
        return reply

    async def health(self, shard: int) -> str | None:
        try:
            reason: str | None = await self.actors[shard].health.remote()
        except ActorDiedError as exc:
            raise ShardFailed(shard, _STARTING + _cause(exc)) from None
        except RayActorError as exc:
            return f"unavailable ({type(exc).__name__})"
        return reason

    async def stats(self, shard: int) -> dict[str, float]:
        stats: dict[str, float] = await self.actors[shard].stats.remote()
        return stats

    async def close(self) -> None:
        """Stop each shard cleanly (journal flushed), then end its actor (not if detached).

        The shards stop at once; each gets :data:`STOP_TIMEOUT` seconds, then
        its actor is killed all the same: an error naming a shard that did
        not stop in time is logged, and to its journal the kill is a crash,
        which its next start recovers from.
        """
        if not self.kill_on_close:
            return

        async def stop(shard: int, actor: Any) -> None:
            try:
                await asyncio.wait_for(actor.stop.remote(), STOP_TIMEOUT)
            except TimeoutError:
                log.error("shard %d did not stop within %s s: killing it", shard, STOP_TIMEOUT)
            except RayActorError:
                pass  # its process is gone already
            ray.kill(actor, no_restart=True)

        await asyncio.gather(*(stop(shard, actor) for shard, actor in enumerate(self.actors)))


def _cause(exc: BaseException) -> str:
    """Why an actor died or a task failed, in one line: a constructor's error, if that was it."""
    text = str(exc)
    at = text.rfind(_STARTING)
    if at >= 0:  # "...ShardFailed: shard 1: cannot start: CorruptJournal: ... offset N: ..."
        return text[at + len(_STARTING) :].splitlines()[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def shard_nodes(shards: int, nodes: Sequence[str] | None = None) -> list[str]:
    """The node ID each shard is pinned to: ``nodes`` (or the alive nodes) round-robin."""
    if nodes is not None:
        nodes = _check_nodes(nodes)
    else:
        alive = [n for n in ray.nodes() if n.get("Alive")]
        alive.sort(key=lambda n: (n.get("NodeManagerAddress", ""), n["NodeID"]))
        nodes = [n["NodeID"] for n in alive]
        if not nodes:
            raise ShardError(0, "no alive Ray node to place shards on")
    return [nodes[i % len(nodes)] for i in range(check_shard_count(shards))]


def _check_nodes(nodes: object) -> Sequence[str]:
    """``nodes`` if it is a non-empty sequence of Ray node IDs, else a UsageError."""
    if (
        isinstance(nodes, str)
        or not isinstance(nodes, Sequence)
        or not nodes
        or not all(isinstance(n, str) and n for n in nodes)
    ):
        raise UsageError(
            f"nodes must be None (the alive nodes) or a non-empty list of Ray node IDs (str), "
            f"not {nodes!r:.80}"
        )
    return nodes


async def start(
    machine: Machine[Any, I, O],
    data_dir: str | os.PathLike[str],
    *,
    shards: int,
    address: str | None = None,
    name: str | None = None,
    namespace: str = NAMESPACE,
    nodes: Sequence[str] | None = None,
    num_cpus: float = 1.0,
    max_restarts: int = -1,
    detached: bool = False,
    create: bool = True,
    limits: Limits | None = None,
    **options: Any,
) -> ShardedClient[I, O]:
    """Start (or find) ``shards`` shard actors of ``machine`` and return a connected client.

    ``data_dir`` is a path on every node that runs a shard. ``address`` is
    the Ray cluster to join (``ray.init(address=...)``; with none, and no
    Ray running, a local one starts). Actors are named ``{name}-shard-NNNN``
    in ``namespace``, so a second client with the same name and directory
    shares them; the default name is ``corosm-`` and a hash of the absolute
    ``data_dir``.
    ``nodes`` pins shard i to ``nodes[i % len(nodes)]`` (default: the alive
    nodes, by address). ``detached`` actors outlive this process, and
    closing the client leaves them running. ``create=False`` refuses to
    create missing shards; so does a manifest of the store found at
    ``data_dir`` here (the store exists: a missing shard is lost data, not a
    new shard). ``options`` are the hosts' (``fsync``, ``snapshot_every``,
    ...). A bad argument raises a UsageError, and a data directory that no
    shard could use here a DataError
    (:func:`~corosm.shards.manifest.check_here`: another layout, a damaged
    manifest, a file in the way, an unsharded journal, stray shard
    directories), both before Ray is started. What only a shard's node can
    see (its marker, its directory missing, a corrupt journal) fails that
    shard.

    With no manifest here (and ``create``), each node that will run a shard
    is asked what it sees at ``data_dir`` (:func:`check_node`), before any
    shard starts: if one holds the manifest, the store is reopened, not made
    (``create=False``); a node whose check fails raises its DataError (or
    its OSError, same errno: a directory it cannot list), naming it; one
    that gives no answer within ``limits.hello_timeout`` raises
    :class:`ShardUnavailable`, naming it.

    The client is returned even when some shards cannot start: those are
    reported by ``health()`` and their inputs fail with :class:`ShardFailed`.
    When no shard can start, the first one's error is raised.
    """
    # Every argument is checked before Ray starts. The client comes first: it checks the
    # machine, the count and the limits; its transport gets the actors once they exist.
    transport = RayTransport([], kill_on_close=not detached)
    client: ShardedClient[I, O] = ShardedClient(machine, transport, shards, limits)
    directory = os.path.abspath(data_path(data_dir))
    layout = Layout(shards)
    host_options = DurableOptions.of(options)
    create = check_create(create)
    if nodes is not None:
        _check_nodes(nodes)
    # A store whose manifest is here already is reopened: a shard directory missing on its
    # node is then refused, not made empty. Without one, what would stop every shard made
    # here (a file in the way, another store's files) is refused now, not by each actor
    # once Ray has started (see corosm.shards.manifest.check_here).
    if check_here(directory, layout):
        create = False
    if not ray.is_initialized():
        ray.init(address=address, namespace=namespace, log_to_driver=True)
    if name is None:
        name = f"corosm-{stable_hash(directory) >> 32:08x}"
    placed = shard_nodes(shards, nodes)
    if create:  # not here: the store may be on the shards' own disks (module docs)
        holder = await _node_holding(placed, directory, layout, client.limits.hello_timeout)
        if holder is not None:
            log.info(
                "%s has no %s here, but Ray node %s holds it: reopening the store (a shard "
                "whose node lacks its directory fails rather than start empty)",
                directory,
                MANIFEST,
                holder,
            )
            create = False
    for index, node in enumerate(placed):
        spec = ShardSpec(machine, directory, index, layout, host_options, create)
        actor = RemoteShard.options(
            name=f"{name}-shard-{index:04d}",
            namespace=namespace,
            get_if_exists=True,
            lifetime="detached" if detached else None,
            max_restarts=max_restarts,
            max_task_retries=0,  # never re-run a batch: its outcome would be doubled
            max_concurrency=1000,
            num_cpus=num_cpus,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(spec)
        transport.actors.append(actor)
    await client.connect()
    try:
        _check_hellos(client, layout, directory)
    except ShardFailed:
        transport.kill_on_close = False  # they are another store's shards: leave them be
        await client.close()
        raise
    failed = [link for link in client.links if link.health() is not None]
    if len(failed) == shards:
        reason = failed[0].reason or "cannot start"
        await client.close()
        raise ShardFailed(failed[0].shard, reason)
    for link in failed:
        log.error("%s", link.health())
    return client


async def _node_holding(
    placed: list[str], directory: str, layout: Layout, timeout: float
) -> str | None:
    """The first of the shards' nodes that sees the store's manifest at ``directory``, or None.

    Asks each distinct node at once (:func:`check_node`), each within
    ``timeout`` seconds. A node's DataError, or its OSError (one with an
    errno: the check's, such as a directory it cannot list), is raised as
    such (same class and errno) naming the node and its shards, with the
    check's own text; no answer in time, or a Ray error, raises
    ShardUnavailable.
    """
    nodes = list(dict.fromkeys(placed))
    answers = await asyncio.gather(
        *(asyncio.wait_for(check_node(node, directory, layout), timeout) for node in nodes),
        return_exceptions=True,
    )
    for node, answer in zip(nodes, answers, strict=True):
        if not isinstance(answer, BaseException):
            continue
        runs = [shard for shard, there in enumerate(placed) if there == node]
        where = f"Ray node {node}, which would run shard(s) {', '.join(map(str, runs))},"
        if isinstance(answer, DataError):
            kind = ShardLayoutMismatch if isinstance(answer, ShardLayoutMismatch) else DataError
            raise kind(f"{where} cannot use the data directory (no shard was started): {answer}")
        if isinstance(answer, OSError) and answer.errno is not None:  # wait_for's has none
            text = f"{where} cannot check the data directory (no shard was started): "
            raise OSError(answer.errno, text + str(answer.strerror), answer.filename) from answer
        if isinstance(answer, TimeoutError):
            why = f"gave no answer within {timeout} s (Limits.hello_timeout)"
        else:
            why = f"could not answer ({type(answer).__name__}: {_cause(answer)})"
        raise ShardUnavailable(
            runs[0],
            f"{where} {why} whether it holds the store at {directory}, so no shard was "
            "started (one could start empty beside the store); start again once the node "
            "answers",
        )
    return next((node for node, holds in zip(nodes, answers, strict=True) if holds), None)


def _check_hellos(client: ShardedClient[Any, Any], layout: Layout, directory: str) -> None:
    """Actors found by name must be this store's (another client may have made them)."""
    for link in client.links:
        hello = link.hello
        if hello is None:
            continue
        if (hello.index, hello.shards, hello.data_dir) != (link.shard, layout.shards, directory):
            raise ShardFailed(
                link.shard,
                f"the actor found under its name is shard {hello.index} of {hello.shards} in "
                f"{hello.data_dir}, not shard {link.shard} of {layout.shards} in {directory}: "
                "another store uses this name",
            )


@contextlib.asynccontextmanager
async def open(
    machine: Machine[Any, I, O],
    data_dir: str | os.PathLike[str],
    *,
    shards: int,
    **options: Any,
) -> AsyncIterator[ShardedClient[I, O]]:
    """:func:`start` as a context manager: the shards stop when the block ends."""
    client = await start(machine, data_dir, shards=shards, **options)
    try:
        yield client
    finally:
        await client.close()
