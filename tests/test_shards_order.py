"""A caller's batches in number order, and its inputs in order per key: driven by hand."""

from __future__ import annotations

import random

import pytest

from corosm.core.machine import Order
from corosm.errors import InternalError
from corosm.shards.order import CallerGate, Sequencer, Ticket


def test_sequencer_puts_batches_back_in_order() -> None:
    seq: Sequencer[str] = Sequencer()
    assert seq.arrive(2, "c") == []
    assert seq.arrive(1, "b") == []
    assert seq.waiting == 2
    assert seq.arrive(0, "a") == ["a", "b", "c"]
    assert seq.arrive(3, "d") == ["d"]
    assert (seq.next, seq.waiting) == (4, 0)


def test_sequencer_refuses_a_batch_twice() -> None:
    seq: Sequencer[str] = Sequencer()
    seq.arrive(0, "a")
    seq.arrive(2, "c")
    for again in (0, 2):
        with pytest.raises(InternalError, match="arrived twice"):
            seq.arrive(again, "x")


def test_sequencer_abandons_early_batches_in_order() -> None:
    seq: Sequencer[str] = Sequencer()
    seq.arrive(5, "f")
    seq.arrive(3, "d")
    assert seq.abandon() == ["d", "f"]
    assert seq.waiting == 0


@pytest.mark.parametrize("seed", range(20))
def test_sequencer_any_arrival_order(seed: int) -> None:
    order = list(range(50))
    random.Random(seed).shuffle(order)
    seq: Sequencer[int] = Sequencer()
    started = [b for n in order for b in seq.arrive(n, n)]
    assert started == list(range(50)), f"seed {seed}"


class Log:
    """Tickets that record when they start; ``answer(name)`` finishes one."""

    def __init__(self) -> None:
        self.gate = CallerGate()
        self.started: list[str] = []
        self.tickets: dict[str, Ticket] = {}

    def offer(self, name: str, order: Order, *keys: str) -> None:
        ticket = Ticket(tuple(keys), order, lambda: self.started.append(name))
        self.tickets[name] = ticket
        self.gate.offer(ticket)

    def answer(self, name: str) -> None:
        self.gate.answered(self.tickets[name])


W, R, D = Order.LOGGED, Order.READ, Order.WRITE


def test_logged_writes_on_one_key_go_at_once_in_order() -> None:
    log = Log()
    for n in ("w1", "w2", "w3"):
        log.offer(n, W, "x")
    assert log.started == ["w1", "w2", "w3"]  # the host admits them in this order


def test_a_read_waits_for_the_callers_earlier_writes_on_its_key_only() -> None:
    log = Log()
    log.offer("w1", W, "x")
    log.offer("r1", R, "x")
    log.offer("ry", R, "y")
    log.offer("w2", W, "x")  # behind the waiting read: it must not overtake it
    assert log.started == ["w1", "ry"]
    log.answer("ry")
    log.answer("w1")
    assert log.started == ["w1", "ry", "r1", "w2"]
    log.answer("r1")
    log.answer("w2")
    assert log.gate.held == 0 and not log.gate._lines


def test_a_delete_waits_for_earlier_writes_and_later_reads_wait_for_it() -> None:
    log = Log()
    log.offer("w", W, "x")
    log.offer("del", D, "x")
    log.offer("r", R, "x")
    assert log.started == ["w"]
    log.answer("w")
    assert log.started == ["w", "del"]
    log.answer("del")
    assert log.started == ["w", "del", "r"]


def test_reads_do_not_wait_for_reads() -> None:
    log = Log()
    for n in ("r1", "r2", "r3"):
        log.offer(n, R, "x")
    assert log.started == ["r1", "r2", "r3"]
    assert not log.gate._lines  # reads leave nothing behind


def test_a_multi_key_input_waits_on_each_of_its_keys() -> None:
    log = Log()
    log.offer("wx", W, "x")
    log.offer("wy", W, "y")
    log.offer("mget", R, "x", "y")
    log.offer("rz", R, "z")
    assert log.started == ["wx", "wy", "rz"]
    log.answer("wx")
    assert "mget" not in log.started
    log.answer("wy")
    assert log.started[-1] == "mget"


def test_an_input_without_keys_starts_at_once() -> None:
    log = Log()
    log.offer("w", W, "x")
    log.offer("size", R)
    assert log.started == ["w", "size"]


@pytest.mark.parametrize("seed", range(30))
def test_random_traffic_keeps_per_key_order_and_never_sticks(seed: int) -> None:
    rng = random.Random(seed)
    log = Log()
    offered: list[tuple[str, tuple[str, ...]]] = []
    answered: set[str] = set()

    def answer_one() -> None:
        running = [n for n in log.started if n not in answered]
        name = running[rng.randrange(len(running))]
        answered.add(name)
        log.answer(name)

    for i in range(300):
        if len(log.started) > len(answered) and rng.random() < 0.45:
            answer_one()
        else:
            keys = tuple(rng.sample("abcd", rng.choice([1, 1, 2])))
            offered.append((f"i{i}", keys))
            log.offer(f"i{i}", rng.choice([W, W, R, D]), *keys)
    while len(log.started) > len(answered):
        answer_one()
    assert sorted(log.started) == sorted(n for n, _ in offered), f"seed {seed}: stuck"
    position = {n: i for i, n in enumerate(log.started)}
    for key in "abcd":
        on_key = [n for n, keys in offered if key in keys]
        assert sorted(on_key, key=position.__getitem__) == on_key, f"seed {seed}, key {key}"
    assert log.gate.held == 0 and not log.gate._lines, f"seed {seed}"
