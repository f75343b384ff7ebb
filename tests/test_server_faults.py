"""A failing disk under the real server: fail-stop, reads go on, health says why."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from corosm.apps.kv.machine import KVMachine
from corosm.client import AsyncClient
from corosm.client.errors import ServerUnavailable
from corosm.io.journal import FaultyFS, recover
from corosm.server import Server, ServerConfig


def _serve(fs: FaultyFS) -> Server:
    return Server(ServerConfig(port=0, data_dir=Path("/data"), log_level="warning"), fs=fs)


@pytest.mark.parametrize(("op", "err"), [("write", errno.ENOSPC), ("fdatasync", errno.EIO)])
def test_a_failed_write_is_never_acknowledged_and_stops_the_journal(op: str, err: int) -> None:
    fs = FaultyFS()

    async def main() -> None:
        server = _serve(fs)
        await server.start()
        try:
            async with AsyncClient("127.0.0.1", server.http_port, timeout=10) as kv:
                await kv.write("kept", 1)
                assert await kv.health() is None
                fs.inject(op, err)  # type: ignore[arg-type]
                with pytest.raises(ServerUnavailable, match="journal"):
                    await kv.write("lost", 2)
                # Fail-stop: later writes are refused at once, reads keep working.
                with pytest.raises(ServerUnavailable, match="journal"):
                    await kv.write("later", 3)
                assert await kv.read("kept") == 1
                assert await kv.read("lost") is None
                reason = await kv.health()
                assert reason is not None and "journal failed" in reason
                assert errno.errorcode[err] in reason or "Errno" in reason
        finally:
            await server.stop()

    asyncio.run(main())
    fs.crash()  # whatever was not fsynced is gone; recovery sees only durable records
    state = recover("/data", KVMachine(), fs=fs).state
    assert state.data.get(b"kept") == b"1"
    assert b"later" not in state.data
