"""A machine's own misuse of corosm is the machine's bug: a 500, not the caller's 400.

A handler that raises :class:`UsageError` refuses its input (HTTP 400: the
caller sent something the machine does not take). But a ``handle`` that is
not an ``async def``, or a handler awaiting a future another machine
started, is wrong whatever the caller sent: :class:`HandlerMisuse`, which
the HTTP front end answers with 500, as it does ``ForeignAwaitError``.
"""

from __future__ import annotations

from typing import Any

from corosm import HandlerMisuse, UsageError
from corosm.core import Context, Future, InputArrived, ReplyError, Sleep, Stepper
from corosm.frontends.http.machineapp import failure_response


def _failure(stepper: Stepper[Any, Any, Any]) -> BaseException:
    [failure] = stepper.feed(InputArrived("c", None))
    assert isinstance(failure, ReplyError)
    return failure.error


def test_a_handle_that_is_not_async_is_the_machines_bug(fn_machine: Any) -> None:
    def not_async(ctx: Context[Any], inp: Any) -> Any:
        return "plain value"

    error = _failure(Stepper(fn_machine(not_async)))
    assert isinstance(error, HandlerMisuse) and "async def" in str(error)
    reply = failure_response(error)
    assert reply.status == 500 and b"async def" in reply.body


def test_a_future_of_another_machine_is_the_awaiting_machines_bug(fn_machine: Any) -> None:
    leaked: list[Future[Any]] = []

    async def leaks(ctx: Context[Any], inp: Any) -> Any:
        leaked.append(ctx.start(Sleep(1.0)))  # kept past its handler: a bug in the making
        return "left it running"

    async def awaits_it(ctx: Context[Any], inp: Any) -> Any:
        return await leaked[0]

    Stepper(fn_machine(leaks)).feed(InputArrived("owner", None))
    error = _failure(Stepper(fn_machine(awaits_it)))
    assert isinstance(error, HandlerMisuse) and "not started by this machine" in str(error)
    assert failure_response(error).status == 500


def test_a_usage_error_the_handler_raises_is_still_its_refusal(fn_machine: Any) -> None:
    async def refuses(ctx: Context[Any], inp: Any) -> Any:
        raise UsageError("amount must be positive")

    error = _failure(Stepper(fn_machine(refuses)))
    assert not isinstance(error, HandlerMisuse)
    reply = failure_response(error)
    assert reply.status == 400 and b"amount must be positive" in reply.body
