"""How each input orders on its connection, as the machine declares it, asked once per type.

Both front ends (HTTP and RESP) promise read-your-writes per connection and
ask the machine's :meth:`~corosm.core.Machine.order` for every input they
submit. When the machine declares that the answer depends on the input's
type alone (``order_by_type = True``, as the key-value machine's ``ORDER``
table does; see :meth:`~corosm.core.Machine.orders_by_type`), :class:`Orders`
asks once per type and remembers: a lookup by type in place of a call into
the machine, which is interpreted Python in every build.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from corosm.core import Order


class OrderDeclaring(Protocol):
    """The part of a :class:`corosm.core.Machine` a front end asks."""

    def order(self, input: Any, /) -> Order: ...

    def orders_by_type(self) -> bool: ...


class Orders:
    """``machine.order(input)``, remembered per input type when the machine allows it.

    One per server, shared by its connections. Compiled, :meth:`of` is a
    native call and a dict lookup.
    """

    def __init__(self, machine: OrderDeclaring) -> None:
        self._order: Callable[[Any], Order] = machine.order
        self._by_type = machine.orders_by_type()
        self._known: dict[type, Order] = {}

    def of(self, input: Any) -> Order:
        """How ``input`` orders on its connection (raises what ``machine.order`` raises)."""
        order = self._known.get(type(input))
        if order is None:
            order = self._order(input)
            if self._by_type:
                self._known[type(input)] = order
        return order
