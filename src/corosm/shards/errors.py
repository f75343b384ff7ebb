"""The errors of sharded machines, in corosm's one hierarchy.

::

    CorosmError
    ├── UsageError
    │   └── ShardingError           the input cannot be sent to one shard; nothing ran
    │       ├── UnkeyedInput        key() returned None: the input would need every shard
    │       ├── CrossShardInput     its keys fall on two or more shards (named)
    │       └── UnshardableKey      a key of a type the stable hash does not encode
    ├── DataError
    │   └── ShardLayoutMismatch     the data directory holds another layout (shard count,
    │                               hash) than the one asked for, none where one must be,
    │                               a damaged manifest or marker, or a shard that is missing
    └── ShardError                  a shard did not give an answer
        ├── OutcomeUnknown          the call was lost with the shard's process: the input
        │                           may or may not have run (do not blindly retry a write)
        ├── ShardUnavailable        the shard did not come back in time; the input was not
        │                           sent (retrying it is safe)
        └── ShardFailed             the shard cannot start (e.g. a corrupt journal); it is
                                    not retried: an operator must look

``ShardingError`` is the caller's mistake (HTTP 400 through a front end);
``ShardError`` is the cluster's trouble (503 for ``ShardUnavailable``, 500
otherwise). Every message names the shard.
"""

from __future__ import annotations

from corosm.errors import CorosmError, DataError, UsageError


class ShardingError(UsageError):
    """The input cannot be routed to exactly one shard; nothing ran."""


class UnkeyedInput(ShardingError):
    """The machine's ``key()`` returned None for this input: it would need every shard."""


class CrossShardInput(ShardingError):
    """The input's keys fall on several shards; ``shards`` maps each shard to its keys."""

    def __init__(self, input: object, shards: dict[int, list[object]]) -> None:
        where = "; ".join(
            f"shard {s}: {', '.join(repr(k)[:40] for k in keys[:3])}"
            + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            for s, keys in sorted(shards.items())
        )
        super().__init__(
            f"{input!r:.80} touches keys on {len(shards)} shards ({where}); an input must keep "
            "to one shard (there are no cross-shard transactions): split it into one input "
            "per shard"
        )
        self.shards = shards

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, {"shards": self.shards}))


class UnshardableKey(ShardingError):
    """A key that is not bytes, str, int (bool included) or a tuple of those."""


class ShardLayoutMismatch(DataError):
    """The data directory's shard layout is not the one asked for, or is damaged (see the message).

    The message names the file or directory and what was wrong; nothing was
    opened or created.
    """


class ShardError(CorosmError):
    """A shard gave no answer for an input; ``shard`` is its index."""

    def __init__(self, shard: int, message: str) -> None:
        super().__init__(f"shard {shard}: {message}")
        self.shard = shard
        self.detail = message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, {"shard": self.shard, "detail": self.detail}))


class OutcomeUnknown(ShardError):
    """The call carrying the input was lost (the shard's process died, or timed out).

    The input may have run, and if it journaled, it is durable: read before
    you retry a write that is not idempotent.
    """


class ShardUnavailable(ShardError):
    """The shard is down and did not come back in time; the input was not sent."""

    #: Retrying is safe (nothing ran): front ends answer 503 with Retry-After.
    retryable = True


class ShardFailed(ShardError):
    """The shard cannot start (its creation failed: e.g. a corrupt journal). Not retried."""


def _rebuild(cls: type[Exception], args: tuple[object, ...], attrs: dict[str, object]) -> Exception:
    """Unpickle an error without calling its constructor (its message is already made)."""
    error = Exception.__new__(cls)
    error.args = args
    error.__dict__.update(attrs)
    return error
