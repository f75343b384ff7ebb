"""Python clients for a corosm server: blocking and asyncio.

Both speak the two HTTP APIs of ``corosm serve``::

    from corosm.client import Client

    with Client("127.0.0.1", 8080) as kv:
        kv.write("x", 1)             # seed protocol: text keys, 64-bit ints
        assert kv.read("x") == 1
        kv.put(b"k", b"\\x00raw")     # REST: byte keys and values
        assert kv.get(b"k") == b"\\x00raw"
        kv.reset()

    async with AsyncClient(port=8080) as kv:   # same methods, awaited;
        await asyncio.gather(*(kv.write(f"k{i}", i) for i in range(100)))  # pipelined

``submit`` talks to any machine that ``corosm serve --machine`` serves (JSON on
``POST /``, see docs/serving.md)::

    with Client(port=8080) as bank:
        bank.submit(Deposit("alice", 100))    # a dataclass: sent with "type": "Deposit"
        assert bank.submit({"type": "GetBalance", "account": "alice"}) == {
            "type": "Balance", "account": "alice", "balance": 100}
        bank.submit(GetBalance("alice"), Balance)   # decoded into the output type

Layout: :mod:`~corosm.client.protocol` says what each call sends and what its
reply means (no I/O); :mod:`~corosm.client.sync` and :mod:`~corosm.client.aio`
move the bytes; :mod:`~corosm.client.errors` draws the exception tree;
:mod:`~corosm.client.seedcodec` writes Haskell ``show`` syntax.
"""

from corosm.client.aio import AsyncClient
from corosm.client.errors import (
    ClientError,
    ConnectionLost,
    InvalidRequest,
    ProtocolError,
    RequestRejected,
    ServerFailed,
    ServerReplyError,
    ServerUnavailable,
    ServerUnreachable,
)
from corosm.client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionLost",
    "InvalidRequest",
    "ProtocolError",
    "RequestRejected",
    "ServerFailed",
    "ServerReplyError",
    "ServerUnavailable",
    "ServerUnreachable",
]
