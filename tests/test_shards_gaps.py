"""Five gaps in the sharded client and its transports, each closed and pinned here.

- ``LocalTransport.close`` waited for every host's stop with no bound: one
  host whose stop did not return held the client's close for ever. Each
  stop now gets ``stop_timeout`` seconds; a host past it is named in an
  error log and left behind.
- A reply that is not a well-formed ``BatchReply`` (None, say) left its
  call's inputs with no outcome; now they fail with ``OutcomeUnknown``
  naming what came back, and the link says hello again, as after a lost call.
- A second ``close()`` while the first ran returned at once; now it returns
  when the first ends, and finishes what a cancelled first close left.
- ``stats()`` totals lacked ``inputs_refused``.
- ``corosm.shards.ray.start`` took the store for a new one when the node it
  ran on had no manifest, and told every shard to make what it lacked on
  its own node: a shard whose directory was lost started empty beside the
  store the other nodes held. Now ``start`` first asks each shard's node
  (``check_node``) and reopens the store if any holds it; a restarted actor
  still never makes its data (``open_shard``). Run here without Ray, over
  in-process stand-ins for the actors and the nodes, and ``check_node`` on
  a local Ray.

Every wait is bounded, so a client that loses track of an input fails the
test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import require_module
from corosm.apps.kv.inputs import Read, Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, Value
from corosm.errors import DataError, Stopped, UsageError
from corosm.runtime.durable import DurableOptions
from corosm.shards import (
    Limits,
    OutcomeUnknown,
    ShardedClient,
    ShardFailed,
    ShardLayoutMismatch,
    ShardUnavailable,
    read_layout,
    shard_dir,
)
from corosm.shards.host import BatchHeader, BatchReply, ShardHost, ShardSpec
from corosm.shards.local import LocalTransport
from corosm.shards.manifest import MANIFEST, Layout, check_here, check_store
from shards_helpers import keys_on
from test_data_dir_paths import snapshot_of
from test_shards_close_inflight import Answers, NeverTransport, two_inputs_in_one_stuck_call
from test_shards_local import FlakyTransport, HeldTransport, client_over

WAIT = 10.0  # seconds: the bound on every wait in this file
BOUND = 0.2  # seconds: the short timeouts under test


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


# -- 1. LocalTransport.close is bounded ------------------------------------------------


class StuckStopHost(ShardHost[Any, Any, Any]):
    """A host whose stop does not return until the test lets it (a journal thread stuck)."""

    def __init__(self, spec: ShardSpec[Any, Any, Any], runtime: Any) -> None:
        super().__init__(spec, runtime)
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()

    async def stop(self) -> None:
        self.stopping.set()
        await self.release.wait()
        await super().stop()


def test_close_gives_up_on_a_host_that_does_not_stop_and_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        layout = Layout(2)
        check_store(tmp_path, layout)
        specs = [
            ShardSpec(KVMachine(), str(tmp_path), i, layout, DurableOptions(), create=False)
            for i in range(2)
        ]
        good, stuck = ShardHost.recover(specs[0]), StuckStopHost.recover(specs[1])
        transport = LocalTransport([good, stuck], stop_timeout=BOUND)
        kv: ShardedClient[Any, Any] = ShardedClient(KVMachine(), transport, 2)
        try:
            await kv.connect()
            for shard in (0, 1):
                assert await kv.submit(Write(keys_on(shard, 2, 1)[0], b"v")) == OK
            with caplog.at_level(logging.ERROR, logger="corosm.shards"):
                async with asyncio.timeout(WAIT):
                    await kv.close()
            assert stuck.stopping.is_set()
            with pytest.raises(Stopped):  # the other host did stop
                good.runtime.submit_nowait(Read(b"x"))
            [record] = [r for r in caplog.records if r.name == "corosm.shards"]
            assert record.levelno == logging.ERROR
            assert record.getMessage() == (
                f"shard 1 ({shard_dir(tmp_path, 1)}) did not stop within {BOUND} s: left "
                "behind, its journal thread may still be running"
            )
        finally:  # let the stuck host stop for real: its journal must not outlive the test
            stuck.release.set()
            async with asyncio.timeout(WAIT):
                await asyncio.gather(good.stop(), stuck.stop())

    run(go())


def test_a_stop_timeout_that_is_no_bound_is_refused() -> None:
    for bad in (0, -1.0, float("inf"), float("nan"), "30", True):
        with pytest.raises(UsageError, match=r"stop_timeout must be a finite number of seconds"):
            LocalTransport([], stop_timeout=bad)


# -- 2. a reply that is not a BatchReply ---------------------------------------------------


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class OddReplyTransport(FlakyTransport):
    """Runs each batch, then (when told) answers with ``odd`` instead of the shard's reply."""

    def __init__(self, hosts: list[ShardHost[Any, Any, Any]]) -> None:
        super().__init__(hosts)
        self.odd: list[object] = []

    async def run(self, shard: int, header: BatchHeader, inputs: list[Any]) -> BatchReply:
        reply = await super().run(shard, header, inputs)
        odd: Any = self.odd.pop() if self.odd else reply
        return odd


ODD_REPLIES: list[tuple[Callable[[], object], str]] = [
    (lambda: None, "None, where a corosm.shards.host.BatchReply was expected"),
    (BrokenRepr, "a BrokenRepr whose repr() failed, where a corosm.shards.host.BatchReply"),
    (lambda: BatchReply(None, {}), "BatchReply(outputs=None, errors={}, refused=None), where"),
    (lambda: BatchReply([OK] * 3, {0: "x"}), "errors={0: 'x'}, refused=None), where a Batch"),
]


@pytest.mark.parametrize(
    ("make", "shown"), ODD_REPLIES, ids=["None", "broken-repr", "outputs-None", "error-str"]
)
def test_a_reply_that_is_not_a_batch_reply_fails_its_inputs_as_outcome_unknown(
    make: Callable[[], object], shown: str, tmp_path: Path
) -> None:
    async def go() -> None:
        async with client_over(tmp_path, OddReplyTransport, Limits(window=1)) as (kv, t):
            t.odd.append(make())
            answers = Answers()
            futures = [kv.submit_nowait(Write(k, b"1")) for k in (b"a", b"b")]
            kv.submit_callback(Write(b"c", b"1"), answers)  # one call: the same pass
            async with asyncio.timeout(WAIT):
                done = await asyncio.gather(*futures, return_exceptions=True)
                await kv.links[0].ready.wait()  # said hello again: the link has a verdict
            errors = [*done, *(error for _, error in answers.got)]
            assert [type(error) for error in errors] == [OutcomeUnknown] * 3, errors
            message = str(errors[0])
            assert message.startswith("shard 0: the transport answered the call with "), message
            assert shown in message, message
            assert message.endswith("the call's 3 input(s) may or may not have run"), message
            assert all(str(error) == message for error in errors)
            assert len(answers.got) == 1 and answers.got[0][0] is None
            assert t.hellos == 2 and kv.links[0].session == 2  # a new session
            assert await kv.submit(Read(b"c")) == Value(b"1")  # they had run
            assert await kv.submit(Write(b"d", b"1")) == OK  # and the link goes on
            stats = kv.stats()
            assert (stats["inputs_lost"], stats["inputs_timed_out"]) == (3, 0)

    run(go())


# -- 3. a second close waits for the first ----------------------------------------------


class CountsCloses(LocalTransport):
    """Counts the transport's closes, and notes each in ``order`` once the shards stopped."""

    def __init__(self, hosts: list[ShardHost[Any, Any, Any]]) -> None:
        super().__init__(hosts)
        self.closes = 0
        self.order: list[str] = []

    async def close(self) -> None:
        await super().close()
        self.closes += 1
        self.order.append("transport closed")


class HeldCounting(CountsCloses, HeldTransport):
    pass


class NeverCounting(CountsCloses, NeverTransport):
    pass


def test_a_second_close_returns_when_the_first_has_finished(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, HeldCounting, Limits()) as (kv, t):
            future = kv.submit_nowait(Write(b"x", b"1"))
            await t.wait_calls(1)  # in flight, and held: the first close waits for it

            async def closing(name: str, close: Any) -> None:
                await close
                t.order.append(name)

            first = asyncio.ensure_future(closing("first", kv.close()))
            second = asyncio.ensure_future(closing("second", kv.close()))
            third = asyncio.ensure_future(closing("stop", kv.stop(BOUND)))
            t.release_all()
            async with asyncio.timeout(WAIT):
                await asyncio.gather(first, second, third)
            assert t.order[0] == "transport closed", t.order  # nobody returned before it
            assert sorted(t.order[1:]) == ["first", "second", "stop"]
            assert future.result() == OK  # the call in flight got its reply
            await kv.close()  # closed already: nothing to do
            assert t.closes == 1

    run(go())


def test_a_close_after_a_cancelled_one_closes_the_transport(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, NeverCounting, Limits()) as (kv, t):
            future, answers = await two_inputs_in_one_stuck_call(kv, t)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(kv.close(), BOUND)  # cut short, before the transport
            assert t.closes == 0
            with pytest.raises(OutcomeUnknown, match=r"the client closed with the call"):
                future.result()  # a cancelled close still answered the call in flight
            async with asyncio.timeout(WAIT):
                await kv.close()
            assert t.closes == 1  # this one did what the first left
            assert [type(error) for _, error in answers.got] == [OutcomeUnknown]

    run(go())


# -- 4. the refused inputs' total --------------------------------------------------------


def test_stats_total_the_refused_inputs(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, FlakyTransport, Limits()) as (kv, t):
            t.refuse_next = 1
            with pytest.raises(ShardUnavailable, match=r"not run"):
                await asyncio.wait_for(kv.submit(Write(b"x", b"1")), WAIT)
            async with asyncio.timeout(WAIT):
                await kv.links[0].ready.wait()
            stats = kv.stats()
            assert stats["inputs_refused"] == stats["shard0_inputs_refused"] == 1
            assert stats["inputs_lost"] == 0

    run(go())


# -- 5. a Ray shard makes its data only in a store no shard node holds --------------------


@pytest.fixture
def sray() -> Any:
    """``corosm.shards.ray``, imported (Ray is not started by the fixture)."""
    require_module("ray", pip="corosm[ray]")
    import corosm.shards.ray as sray

    return sray


def a_new_store(data: Path) -> str:
    return f"{data} has no {MANIFEST}"


def a_lost_shard_dir(data: Path) -> str:
    check_store(data, Layout(2))
    os.remove(os.path.join(shard_dir(data, 1), "shard.json"))
    os.rmdir(shard_dir(data, 1))
    return "shard 1's data is not here: "


@pytest.mark.parametrize(
    ("make", "create", "reconstructed"),
    [
        (a_new_store, True, True),
        (a_new_store, False, False),
        (a_lost_shard_dir, True, True),
        (a_lost_shard_dir, False, False),
    ],
)
def test_open_shard_refuses_to_make_data_after_a_restart_or_when_told_not_to(
    sray: Any, tmp_path: Path, make: Callable[[Path], str], create: bool, reconstructed: bool
) -> None:
    data = tmp_path / "kv"
    words = make(data)
    before = snapshot_of(tmp_path)
    spec = ShardSpec(KVMachine(), str(data), 1, Layout(2), create=create)
    with pytest.raises(ShardFailed) as info:
        sray.open_shard(spec, reconstructed=reconstructed)  # an actor's constructor, on its node
    message = str(info.value)
    assert message.startswith("shard 1: cannot start: ShardLayoutMismatch: "), message
    assert words in message and "\n" not in message  # one line: RayTransport finds it by that
    assert snapshot_of(tmp_path) == before  # nothing made


def test_open_shard_makes_a_new_store_s_shard_when_told_to(sray: Any, tmp_path: Path) -> None:
    data = tmp_path / "kv"
    spec = ShardSpec(KVMachine(), str(data), 1, Layout(2), create=True)
    host = sray.open_shard(spec, reconstructed=False)

    async def start_and_stop() -> None:
        await host.start()
        await host.stop()

    run(start_and_stop())
    assert (data / MANIFEST).is_file() and (Path(shard_dir(data, 1)) / "shard.json").is_file()


class FailedActor:
    """A shard actor whose constructor raised: each call raises its error, as Ray's do."""

    def __init__(self, error: ShardFailed) -> None:
        self.error = error

    async def hello(self) -> None:
        raise self.error

    async def stop(self) -> None:
        pass


class InProcessActors:
    """Stands in for ``RemoteShard``: builds each shard's actor here, noting its spec.

    A handle's ``method.remote(...)`` is the actor's coroutine, as awaiting a
    Ray call gives its result.
    """

    def __init__(self, sray: Any) -> None:
        self.sray = sray
        self.started: list[ShardSpec[Any, Any, Any]] = []

    def options(self, **options: Any) -> InProcessActors:
        return self

    def remote(self, spec: ShardSpec[Any, Any, Any]) -> Any:
        self.started.append(spec)
        body: Any
        try:
            body = self.sray.ShardActor(spec)
        except ShardFailed as exc:
            body = FailedActor(exc)
        methods = ("hello", "run", "health", "stats", "stop")
        return SimpleNamespace(
            **{name: SimpleNamespace(remote=getattr(body, name, None)) for name in methods}
        )


class Nodes:
    """Stands in for ``check_node``: each node's answer (True: it holds the manifest).

    An exception is raised as that node's check would raise it; None is a
    node that never answers.
    """

    def __init__(self, answers: dict[str, bool | BaseException | None]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, Layout]] = []

    async def check_node(self, node: str, directory: str, layout: Layout) -> bool:
        self.asked.append((node, directory, layout))
        answer = self.answers[node]
        if answer is None:
            await asyncio.Event().wait()  # no answer: start's own bound must end this
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)


def without_ray(
    sray: Any, monkeypatch: pytest.MonkeyPatch, answers: dict[str, bool | BaseException | None]
) -> tuple[InProcessActors, Nodes]:
    """``start`` over in-process actors and the nodes' stand-in answers (no Ray at all)."""
    actors, nodes = InProcessActors(sray), Nodes(answers)
    context = SimpleNamespace(was_current_actor_reconstructed=False)
    monkeypatch.setattr(sray.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(sray.ray, "get_runtime_context", lambda: context)
    monkeypatch.setattr(sray.ray, "kill", lambda actor, no_restart: None)
    monkeypatch.setattr(sray, "RemoteShard", actors)
    monkeypatch.setattr(sray, "NodeAffinitySchedulingStrategy", lambda *a, **k: None)
    monkeypatch.setattr(sray, "check_node", nodes.check_node, raising=False)
    return actors, nodes


def test_start_reopens_a_store_another_node_holds_and_makes_nothing(
    sray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    actors, nodes = without_ray(sray, monkeypatch, {"n1": False, "n2": True})
    data = tmp_path / "kv"  # none here: this node is not one that holds the store
    with caplog.at_level(logging.INFO, logger="corosm.shards"), pytest.raises(ShardFailed) as info:
        run(sray.start(KVMachine(), data, shards=3, nodes=["n1", "n2"], name="t"))
    # Every shard fails: their "node" (this one) lacks the store, and they may not make it.
    assert f"cannot start: ShardLayoutMismatch: {data} has no {MANIFEST}" in str(info.value)
    assert nodes.asked == [("n1", str(data), Layout(3)), ("n2", str(data), Layout(3))]
    assert [(spec.index, spec.create) for spec in actors.started] == [
        (0, False),
        (1, False),
        (2, False),
    ]
    assert list(tmp_path.iterdir()) == []  # no shard started empty here
    assert any(
        r.levelno == logging.INFO and "Ray node n2 holds it: reopening the store" in r.getMessage()
        for r in caplog.records
    ), caplog.records


def test_start_makes_a_new_store_when_no_shard_node_holds_it(
    sray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    actors, nodes = without_ray(sray, monkeypatch, {"n1": False, "n2": False})
    data = tmp_path / "kv"

    async def go() -> None:
        kv = await sray.start(KVMachine(), data, shards=2, nodes=["n1", "n2"], name="t")
        try:
            for shard in (0, 1):
                assert await kv.submit(Write(keys_on(shard, 2, 1)[0], b"v")) == OK
        finally:
            await kv.close()

    run(go())
    assert [node for node, _, _ in nodes.asked] == ["n1", "n2"]
    assert [(spec.index, spec.create) for spec in actors.started] == [(0, True), (1, True)]
    assert read_layout(data) == Layout(2)  # the shards made it


def test_start_asks_no_node_when_the_store_is_here(
    sray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    actors, nodes = without_ray(sray, monkeypatch, {})
    data = tmp_path / "kv"
    check_store(data, Layout(2))

    async def go() -> None:
        kv = await sray.start(KVMachine(), data, shards=2, nodes=["n1", "n2"], name="t")
        await kv.close()

    run(go())
    assert nodes.asked == []
    assert [spec.create for spec in actors.started] == [False, False]


@pytest.mark.parametrize(
    "error",
    [
        ShardLayoutMismatch("/data/kv holds 3 shard(s), not 2: re-shard it"),
        DataError("data directory '/data/kv' is a file, where a directory was expected"),
    ],
    ids=["mismatch", "data-error"],
)
def test_start_raises_a_node_s_data_error_naming_it_before_any_shard_starts(
    sray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: DataError
) -> None:
    actors, _ = without_ray(sray, monkeypatch, {"n1": False, "n2": error})
    with pytest.raises(DataError) as info:
        run(sray.start(KVMachine(), tmp_path / "kv", shards=3, nodes=["n1", "n2"]))
    assert type(info.value) is type(error)
    assert str(info.value) == (
        "Ray node n2, which would run shard(s) 1, cannot use the data directory (no shard "
        f"was started): {error}"
    )
    assert actors.started == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (None, f"gave no answer within {BOUND} s (Limits.hello_timeout)"),
        (RuntimeError("node lost"), "could not answer (RuntimeError: node lost)"),
    ],
    ids=["silent", "ray-error"],
)
def test_start_refuses_to_guess_for_a_node_that_does_not_answer(
    sray: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: BaseException | None,
    why: str,
) -> None:
    actors, _ = without_ray(sray, monkeypatch, {"n1": False, "n2": answer})
    data = tmp_path / "kv"
    limits = Limits(hello_timeout=BOUND)
    with pytest.raises(ShardUnavailable) as info:
        run(sray.start(KVMachine(), data, shards=4, nodes=["n1", "n2"], limits=limits))
    assert str(info.value) == (
        f"shard 1: Ray node n2, which would run shard(s) 1, 3, {why} whether it holds the "
        f"store at {data}, so no shard was started (one could start empty beside the "
        "store); start again once the node answers"
    )
    assert actors.started == [] and list(tmp_path.iterdir()) == []


def test_check_node_runs_check_here_on_the_node_it_names(
    sray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    pinned: list[tuple[str, bool]] = []
    strategy = sray.NodeAffinitySchedulingStrategy

    def pin(node_id: str, soft: bool) -> Any:
        pinned.append((node_id, soft))
        return strategy(node_id, soft=soft)

    monkeypatch.setattr(sray, "NodeAffinitySchedulingStrategy", pin)
    store, new, in_the_way = tmp_path / "kv", tmp_path / "new" / "kv", tmp_path / "notes"
    check_store(store, Layout(2))
    in_the_way.write_text("someone's notes")
    with pytest.raises(DataError) as here:
        check_here(in_the_way, Layout(2))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, namespace="corosm-tests")
    try:
        node = ray.get_runtime_context().get_node_id()

        async def ask(path: Path) -> bool:
            held: bool = await sray.check_node(node, str(path), Layout(2))
            return held

        assert run(ask(new)) is False
        assert run(ask(store)) is True
        with pytest.raises(DataError) as there:
            run(ask(in_the_way))
    finally:
        ray.shutdown()
    assert type(there.value) is DataError and str(there.value) == str(here.value)  # no traceback
    assert pinned == [(node, False)] * 3
    assert not new.exists() and not (tmp_path / "new").exists()  # read-only
