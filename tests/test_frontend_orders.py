"""Machine.order asked once per input type, only where the machine declares it may be.

Both front ends ask :class:`corosm.frontends.ordering.Orders` how an input
orders on its connection. A machine that declares ``order_by_type`` is asked
once per type; any other, and any subclass that overrides ``order`` without
declaring again, for every input: remembering an answer that depends on more
than the type would let a write overtake the one before it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corosm.apps.kv.inputs import Delete, Input, Read, Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK
from corosm.core import Machine, Order
from corosm.frontends.ordering import Orders
from corosm.frontends.resp.protocol import encode_command
from test_http_hardening import submitted_in_stages
from test_resp_server import FakeRuntime as RespFakeRuntime
from test_resp_server import connect, in_loop, settle


class Plain(Machine[None, Any, Any]):
    """Declares nothing: every input WRITE, asked every time."""


class ByTypeOnly(Plain):
    """Sets the flag alone: it speaks for the order() inherited from Machine."""

    order_by_type = True


class SlowKeysWait(KVMachine):
    """Overrides order() by key, and does not declare it by type."""

    def order(self, input: Input) -> Order:
        if isinstance(input, Write) and input.key.startswith(b"slow"):
            return Order.WRITE
        return super().order(input)


class DeclaresAgain(SlowKeysWait):
    order_by_type = True  # wrong for SlowKeysWait's order, but declared: believed


class Inherits(KVMachine):
    """Changes nothing about order: KVMachine's declaration holds."""


@pytest.mark.parametrize(
    ("machine", "by_type"),
    [
        (Plain(), False),
        (ByTypeOnly(), True),
        (KVMachine(), True),
        (Inherits(), True),
        (SlowKeysWait(), False),
        (DeclaresAgain(), True),
    ],
)
def test_orders_by_type_follows_the_class_that_decides_order(
    machine: Machine[Any, Any, Any], by_type: bool
) -> None:
    assert machine.orders_by_type() is by_type


class Counting(KVMachine):
    """KVMachine's order, counted; declared by type or not."""

    def __init__(self, by_type: bool) -> None:
        self.by_type = by_type
        self.asked: list[type] = []

    def orders_by_type(self) -> bool:  # per instance, for the test
        return self.by_type

    def order(self, input: Input) -> Order:
        self.asked.append(type(input))
        return super().order(input)


@pytest.mark.parametrize("by_type", [True, False])
def test_orders_asks_the_machine_once_per_type_only_when_declared(by_type: bool) -> None:
    machine = Counting(by_type)
    orders = Orders(machine)
    inputs = [Read(b"a"), Write(b"a", b"1"), Read(b"b"), Write(b"b", b"2"), Delete(b"a")]
    got = [orders.of(i) for i in inputs] + [orders.of(i) for i in inputs]
    assert got == [KVMachine().order(i) for i in inputs] * 2
    if by_type:
        assert machine.asked == [Read, Write, Delete]
    else:
        assert machine.asked == [type(i) for i in inputs] * 2


def test_http_session_asks_a_key_dependent_order_for_every_write() -> None:
    """Write "a" is LOGGED and goes at once; Write "slow" is WRITE and must wait for it."""
    bodies = (b'Write "a" 1', b'Write "slow" 2', b'Read "a"')
    stages = submitted_in_stages(SlowKeysWait(), bodies)
    # Remembered by type, the second write would have gone with the first.
    assert [[i.key for i in stage] for stage in stages] == [[b"a"], [b"slow"], [b"a"]]


@in_loop
async def test_resp_connection_asks_a_key_dependent_order_for_every_write() -> None:
    rt = RespFakeRuntime(asyncio.get_running_loop())
    rt.machine = SlowKeysWait()
    proto, _ = connect(rt)
    # PING between the SETs: a run of SETs would be one WriteMany.
    burst = encode_command("SET", "a", "1") + b"PING\r\n" + encode_command("SET", "slow", "2")
    proto.data_received(burst)
    assert [i.key for i, _ in rt.pending] == [b"a"]  # the WRITE waits for the LOGGED one
    rt.answer(0, OK)
    await settle()
    assert [i.key for i, _ in rt.pending] == [b"a", b"slow"]


class OrderFails(KVMachine):
    """order() raises for one key: a machine's bug, met by one input."""

    def order(self, input: Input) -> Order:
        if isinstance(input, Write) and input.key == b"boom":
            raise RuntimeError("order() is broken")
        return super().order(input)


@in_loop
async def test_resp_fails_the_input_whose_order_raises_and_answers_the_rest() -> None:
    rt = RespFakeRuntime(asyncio.get_running_loop())
    rt.machine = OrderFails()
    proto, transport = connect(rt)
    # PING between the SETs: a run of SETs would be one WriteMany.
    proto.data_received(
        encode_command("SET", "boom", "1") + b"PING\r\n" + encode_command("SET", "a", "2")
    )
    assert [i.key for i, _ in rt.pending] == [b"a"]  # only the input order() could place
    rt.answer(0, OK)
    await settle()
    replies = b"".join(transport.writes)
    assert replies == b"-ERR internal error (please report it): RuntimeError\r\n+PONG\r\n+OK\r\n"
    assert not transport.closed
