"""N shards in this process: the sharded layout without Ray.

Theory of operation
-------------------
:class:`LocalTransport` is the in-process twin of the Ray transport: the
same :class:`~corosm.shards.host.ShardHost` objects answer the same calls,
on this event loop, with no serialisation. All shards then share one core,
so this is not a way to go faster than one ``corosm.open``; it runs the
exact data layout, routing, batching and ordering that Ray runs, which makes
it the test bed for them, and a way to open (or check) a sharded directory
on one machine without a cluster. Recovery runs on worker threads, one
shard at a time per thread, before the first hello is answered.

::

    async with corosm.shards.open_local(KVMachine(), "data", shards=4) as kv:
        await kv.submit(Write(b"x", b"1"))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from corosm.core.machine import Machine
from corosm.runtime.durable import DurableOptions
from corosm.shards.client import Limits, ShardedClient, check_seconds
from corosm.shards.errors import ShardFailed
from corosm.shards.host import BatchHeader, BatchReply, Hello, ShardHost, ShardSpec
from corosm.shards.manifest import Layout, check_store, data_path, shard_dir

I = TypeVar("I")
O = TypeVar("O")

log = logging.getLogger("corosm.shards")

#: Seconds a shard gets to stop cleanly when the client closes (as the Ray transport's).
STOP_TIMEOUT = 30.0


class LocalTransport:
    """Calls shard hosts of this process directly (see the module docs).

    ``stop_timeout`` bounds each host's stop when the transport closes.
    """

    def __init__(
        self, hosts: list[ShardHost[Any, Any, Any]], *, stop_timeout: float = STOP_TIMEOUT
    ) -> None:
        self.hosts = hosts
        self.stop_timeout = check_seconds("stop_timeout", stop_timeout)

    async def hello(self, shard: int) -> Hello:
        host = self.hosts[shard]
        await host.start()
        return host.hello()

    async def run(self, shard: int, header: BatchHeader, inputs: list[Any]) -> BatchReply:
        return await self.hosts[shard].run(header, inputs)

    async def health(self, shard: int) -> str | None:
        return self.hosts[shard].health()

    async def stats(self, shard: int) -> dict[str, float]:
        return self.hosts[shard].stats()

    async def close(self) -> None:
        """Stop every host at once (inputs finished, journal flushed), each within ``stop_timeout``.

        A host that has not stopped by then (its journal thread stuck on a
        disk that does not return, say) is left behind: its stop is
        cancelled, an error naming the shard and its directory is logged, and
        close returns. Its journal thread goes on with what it was doing, and
        holds the directory's lock until it ends or the process exits.
        """
        await asyncio.gather(*(self._stop(host) for host in self.hosts))

    async def _stop(self, host: ShardHost[Any, Any, Any]) -> None:
        try:
            await asyncio.wait_for(host.stop(), self.stop_timeout)
        except TimeoutError:
            spec = host.spec
            log.error(
                "shard %d (%s) did not stop within %s s: left behind, its journal thread may "
                "still be running",
                spec.index,
                shard_dir(spec.data_dir, spec.index),
                self.stop_timeout,
            )


async def start_local(
    machine: Machine[Any, I, O],
    data_dir: str | os.PathLike[str],
    *,
    shards: int,
    limits: Limits | None = None,
    create: bool = True,
    **options: Any,
) -> ShardedClient[I, O]:
    """Recover ``shards`` shards of ``data_dir`` here and return a connected client.

    ``options`` are :class:`~corosm.runtime.durable.DurableOptions`
    (``corosm.open``'s: ``fsync``, ``snapshot_every``, ...). A bad argument
    raises :class:`~corosm.errors.UsageError` before the disk is touched. A
    directory laid out for another shard count, with a damaged manifest, or
    missing a shard directory raises :class:`ShardLayoutMismatch`
    (:func:`~corosm.shards.manifest.check_store`); a shard that cannot
    recover raises :class:`ShardFailed` naming it, with the cause chained.
    The caller closes the client (which stops the hosts).
    """
    hosts: list[ShardHost[Any, I, O]] = []
    transport = LocalTransport(hosts)
    # The client first: it checks the machine, the count and the limits before any disk work.
    client: ShardedClient[I, O] = ShardedClient(machine, transport, shards, limits)
    host_options = DurableOptions.of(options)
    directory = data_path(data_dir)
    layout = check_store(directory, Layout(shards), create=create)  # a clear error first
    loop = asyncio.get_running_loop()
    try:
        for index in range(shards):
            spec = ShardSpec(machine, directory, index, layout, host_options, create=False)
            try:
                hosts.append(await loop.run_in_executor(None, ShardHost.recover, spec))
            except Exception as exc:
                raise ShardFailed(index, f"cannot start: {exc}") from exc
        await client.connect()
    except BaseException:
        await transport.close()  # the hosts recovered so far, each stop bounded
        raise
    return client


@contextlib.asynccontextmanager
async def open_local(
    machine: Machine[Any, I, O],
    data_dir: str | os.PathLike[str],
    *,
    shards: int,
    **options: Any,
) -> AsyncIterator[ShardedClient[I, O]]:
    """:func:`start_local` as a context manager: the shards stop when the block ends."""
    client = await start_local(machine, data_dir, shards=shards, **options)
    try:
        yield client
    finally:
        await client.close()
