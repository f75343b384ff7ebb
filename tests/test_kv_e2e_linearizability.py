"""Concurrent clients against the real ``corosm serve`` process: the history is linearizable.

Six threads, each with its own keep-alive connection, send random Write,
Read and Delete requests on three keys, through the seed protocol and REST
alike, and record every call and reply with
:class:`~corosm.testing.linearizability.HistoryRecorder`. The history is then
checked per key against :mod:`corosm.apps.kv.model`. Every written value is
unique, so a read names the write it saw.

What a reply tells is written as an observation of the model's output: a
``PUT`` says only whether the key existed (201 or 200), a REST ``DELETE``
whether it removed something (200 or 404). A request that fails in transit is
recorded as unknown (it may or may not have happened).

To show that the check has teeth, the same history with one read's reply
altered to a value nobody wrote must be rejected.
"""

from __future__ import annotations

import dataclasses
import http.client
import random
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from corosm.apps.kv import model
from corosm.apps.kv.inputs import Delete, Input, Read, SetIf, Write
from corosm.apps.kv.outputs import OK, Count, Output, SetOutcome, Value
from corosm.testing.linearizability import HistoryRecorder, Operation, check_linearizable
from serverproc import ServerProcess

CLIENTS = 6
OPS_PER_CLIENT = 150
KEYS = [b"x", b"y", b"z"]


def observed(output: Output) -> Hashable:
    """What an HTTP reply can tell about a model output."""
    if isinstance(output, SetOutcome):
        return ("put", output.old is None)
    return output


def observed_step(state: model.ModelState, input: Input) -> tuple[Hashable, model.ModelState]:
    output, state = model.step(state, input)
    return observed(output), state


def one_call(conn: http.client.HTTPConnection, input: Input, rest: bool) -> Hashable:
    """Send ``input`` over REST or the seed protocol; what the reply says, as a model output."""

    def send(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn.request(method, path, body=body)
        reply = conn.getresponse()
        return reply.status, reply.read()

    match input, rest:
        case Write(key, value), False:
            status, body = send("POST", "/", b'Write "%s" %s' % (key, value))
            assert (status, body) == (200, b"Ok"), (status, body)
            return OK
        case SetIf(key, value), True:
            status, body = send("PUT", "/kv/" + key.decode(), value)
            assert status in (200, 201), (status, body)
            return ("put", status == 201)
        case Read(key), False:
            status, body = send("POST", "/", b'Read "%s"' % key)
            assert status == 200, (status, body)
            if body == b"Result Nothing":
                return Value(None)
            assert body.startswith(b"Result (Just ") and body.endswith(b")"), body
            return Value(body[13:-1])
        case Read(key), True:
            status, body = send("GET", "/kv/" + key.decode())
            assert status in (200, 404), (status, body)
            return Value(body if status == 200 else None)
        case Delete(key), True:
            status, body = send("DELETE", "/kv/" + key.decode())
            assert status in (200, 404), (status, body)
            return Count(1 if status == 200 else 0)
    raise AssertionError(f"no request for {input!r} (rest={rest})")


def client(port: int, number: int, rec: HistoryRecorder[Input, Hashable], seed: int) -> None:
    rng = random.Random(seed * 100 + number)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(OPS_PER_CLIENT):
            key = rng.choice(KEYS)
            value = b"%d" % (number * 10_000 + i)  # unique, and a seed int
            rest = rng.random() < 0.5
            roll = rng.random()
            input: Input
            if roll < 0.4:
                input = SetIf(key, value) if rest else Write(key, value)
            elif roll < 0.85:
                input = Read(key)
            else:
                input, rest = Delete(key), True  # the seed protocol has no Delete
            token = rec.call(number, input)
            try:
                output = one_call(conn, input, rest)
            except (OSError, http.client.HTTPException):
                rec.unknown(token)
                conn.close()  # http.client reconnects on the next request
                continue
            rec.ret(token, output)
    finally:
        conn.close()


def run_clients(port: int, seed: int) -> list[Operation[Input, Hashable]]:
    rec: HistoryRecorder[Input, Hashable] = HistoryRecorder()
    errors: list[BaseException] = []

    def guarded(number: int) -> None:
        try:
            client(port, number, rec, seed)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a client thread hung"
    assert not errors, errors
    return rec.history()


def check(history: list[Operation[Input, Hashable]]) -> Any:
    return check_linearizable(history, observed_step, model.EMPTY, partition=model.partition_key)


def test_concurrent_http_history_is_linearizable(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        for seed in range(3):
            assert server.request("DELETE", "/") == (200, b"")
            history = run_clients(server.port, seed)
            assert len(history) == CLIENTS * OPS_PER_CLIENT
            assert sum(op.unknown for op in history) == 0  # loopback: nothing lost
            reads_seen = {op.output for op in history if isinstance(op.input, Read)}
            assert len(reads_seen) > 3, "the reads saw almost nothing: a weak history"
            result = check(history)
            assert result.ok, result.explanation

            # The same history with one read's reply altered must be rejected.
            index = next(
                i
                for i, op in enumerate(history)
                if isinstance(op.input, Read) and op.output != Value(None)
            )
            forged = list(history)
            forged[index] = dataclasses.replace(history[index], output=Value(b"-1"))
            verdict = check(forged)
            assert not verdict.ok and not verdict.inconclusive, verdict.explanation
            assert verdict.partition == history[index].input.key
