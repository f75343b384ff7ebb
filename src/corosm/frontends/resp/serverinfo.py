"""What the RESP server tells clients about itself: ``CONFIG GET`` and ``INFO``.

Theory of operation
-------------------
The assembly (``corosm serve``) knows the facts a Redis client may ask about,
the fsync mode above all; the RESP server does not. It passes them to
:func:`~corosm.frontends.resp.server.start_resp_server` as ``info``, a flat
``name -> text`` mapping. :func:`check_info` validates it once, at start;
:func:`config_values` derives what ``CONFIG GET`` answers (in Redis's names:
``appendfsync`` is ``always``/``everysec``/``no``); :func:`info_sections`
groups the live figures (connections, commands, the runtime's and journal's
counters) into ``INFO``'s sections each time a client asks.

Without ``fsync`` in ``info`` (a runtime with no journal, as in tests) the
server says ``appendonly:no``: it never claims a durability it does not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from corosm.errors import UsageError

__all__ = ["REDIS_FSYNC", "check_info", "config_values", "info_sections"]

#: corosm's fsync modes by the name Redis gives the nearest ``appendfsync`` setting.
REDIS_FSYNC: Final[Mapping[str, str]] = {"always": "always", "interval": "everysec", "never": "no"}


def check_info(info: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``info``; a clear :class:`UsageError` if it is not what the server needs."""
    if not isinstance(info, Mapping):
        raise UsageError(f"info must be a mapping of str to str, not {type(info).__name__}")
    checked: dict[str, str] = {}
    for key, value in info.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError(f"info must map str to str; got {key!r:.40}: {value!r:.40}")
        if "\r" in key + value or "\n" in key + value or ":" in key:
            raise UsageError(f"info entries must be one line, key without ':': {key!r:.40}")
        checked[key] = value
    fsync = checked.get("fsync")
    if fsync is not None and fsync not in REDIS_FSYNC:
        raise UsageError(f"info['fsync'] must be one of {sorted(REDIS_FSYNC)}, not {fsync!r:.40}")
    return checked


def config_values(info: Mapping[str, str], max_bulk_len: int) -> dict[str, str]:
    """What ``CONFIG GET`` answers. redis-benchmark reads ``save`` and ``appendonly``."""
    fsync = info.get("fsync")
    values = {
        "save": "",  # corosm snapshots by journal size, never on Redis's "save" schedule
        "appendonly": "yes" if fsync else "no",
        "databases": "1",
        "maxmemory": "0",
        "proto-max-bulk-len": str(max_bulk_len),
    }
    if fsync:
        values["appendfsync"] = REDIS_FSYNC[fsync]
    return values


def info_sections(
    info: Mapping[str, str],
    clients: Mapping[str, object],
    commands: Mapping[str, object],
    runtime_stats: Mapping[str, float],
    health: str | None,
) -> dict[str, dict[str, object]]:
    """``INFO``'s sections: Clients, Persistence (the journal), Stats (the runtime), corosm."""
    fsync = info.get("fsync")
    persistence: dict[str, object] = {"aof_enabled": 1 if fsync else 0}
    if fsync:
        persistence["appendfsync"] = REDIS_FSYNC[fsync]
    stats: dict[str, object] = dict(commands)
    for key, value in runtime_stats.items():
        (persistence if key.startswith("journal_") else stats)[key] = value
    own: dict[str, object] = {"health": health or "ok"}
    own.update(info)
    return {"Clients": dict(clients), "Persistence": persistence, "Stats": stats, "corosm": own}
