"""A sharded client in place of one runtime under the HTTP front end (for serve --shards).

The shards run in this process (``open_local``); the Ray client is the same
class over another transport, so the front end sees no difference.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from corosm.apps.kv.machine import KVMachine
from corosm.frontends.http import start_http_server
from corosm.frontends.http.app import KvHttpApp
from corosm.shards import ShardedClient, open_local, shard_of
from rawclient import exchange

if TYPE_CHECKING:
    from corosm.frontends.http.machineapp import MachineRuntime

    def _is_a_runtime(client: ShardedClient[object, object]) -> MachineRuntime:
        return client  # mypy checks that the client has the front end's interface


HOST = "127.0.0.1"


def post(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_the_http_app_serves_a_sharded_store(tmp_path: Path) -> None:
    async def go() -> None:
        async with open_local(KVMachine(), tmp_path, shards=2) as kv:
            server = await start_http_server(KvHttpApp(kv), HOST, 0)
            port = server.port
            try:
                keys = [b"x", b"y", b"zz", b"q"]
                assert {shard_of(k, 2) for k in keys} == {0, 1}
                for i, key in enumerate(keys):
                    [ok] = await exchange(HOST, port, post(b'Write "%s" %d' % (key, i)))
                    assert (ok.status, ok.body) == (200, b"Ok")
                for i, key in enumerate(keys):
                    [got] = await exchange(HOST, port, post(b'Read "%s"' % key))
                    assert got.body == b"Result (Just %d)" % i
                pipelined = post(b'Write "x" 7') + post(b'Read "x"')  # read-your-writes
                _, read = await exchange(HOST, port, pipelined, count=2)
                assert read.body == b"Result (Just 7)"
                [reset] = await exchange(HOST, port, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert reset.status == 400 and b"would need every shard of 2" in reset.body
                [health] = await exchange(HOST, port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert health.status == 200
                [metrics] = await exchange(HOST, port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                assert b"shard1_batches" in metrics.body
            finally:
                await server.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))
