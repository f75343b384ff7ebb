"""The bank example, served: JSON transfers per second, PER_KEY against EXCLUSIVE.

Theory of operation
-------------------
``corosm bench --only bank`` serves ``examples/bank`` the way its README
does (``python -m corosm serve --machine examples.bank.machine:Bank``,
``--fsync always``, the checkout's root on ``PYTHONPATH``) twice at once:
``Bank`` (``Policy.PER_KEY``) and ``ExclusiveBank`` (the same machine,
``Policy.EXCLUSIVE``), each pinned to the server core like every other
contender. Each opens :data:`FUNDED` accounts with a balance no run can
exhaust, then wrk POSTs JSON transfers between random pairs of accounts at
64 connections, the two servers alternating round by round, in two cases:
1,000 accounts (two transfers rarely share one) and 8 accounts (most do, so
``PER_KEY`` waits too). The ratio is what ``EXCLUSIVE`` costs: one input at
a time means one fsync per transfer instead of a group commit for all the
transfers in flight.

Every wrk run gets a script of its own whose transfer ids carry the run's
number, so no id repeats (a repeat would answer ``AlreadyDone`` without
journaling anything). After the runs the suite reads every balance back:
transfers move money but never make or destroy it, and a total that
differs is written into the report's notes.

The example lives in the source checkout, not in the installed package:
without ``examples/bank`` the scenario is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import corosm
from corosm.bench.contenders import Contender
from corosm.bench.procs import (
    ContenderUnavailable,
    cpu_seconds,
    free_port,
    need_tool,
    start_server,
)
from corosm.bench.results import Results, Sample, pairwise_ratio

# The shared Lua (thread numbers, the JSON summary line that parse_wrk_output reads).
from corosm.bench.wrk import _COMMON_LUA, WrkResult
from corosm.client import AsyncClient

if TYPE_CHECKING:
    from corosm.bench.suite import Suite

SCENARIO = "bank"
CONNECTIONS = 64
ACCOUNT_CASES = (1000, 8)
FUNDED = max(ACCOUNT_CASES)
OPENING_BALANCE = 10**12
MACHINES = (
    ("per_key", "examples.bank.machine:Bank"),
    ("exclusive", "examples.bank.machine:ExclusiveBank"),
)

_TRANSFER_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local seeded = false
function request()
  if not seeded then
    math.randomseed(RUN * 7919 + thread_no)
    seeded = true
  end
  counter = counter + 1
  local s = math.random(0, ACCOUNTS - 1)
  local t = math.random(0, ACCOUNTS - 2)
  if t >= s then t = t + 1 end
  return wrk.format(nil, "/", nil, string.format(
    '{"type":"Transfer","id":"r%d-%d","source":"a%d","target":"a%d","amount":%d}',
    RUN, counter, s, t, math.random(1, 100)))
end
"""


def transfer_script(accounts: int, run: int) -> str:
    """wrk's Lua for run number ``run``: transfers between ``accounts`` accounts, new ids."""
    if accounts < 2 or run < 0:
        raise ValueError(f"need at least 2 accounts and a run number >= 0, got {accounts}, {run}")
    body = _TRANSFER_LUA.replace("ACCOUNTS", str(accounts)).replace("RUN", str(run))
    return _COMMON_LUA + body


def checkout_root() -> Path | None:
    """The folder that holds ``examples/bank`` (a source checkout of corosm), or None."""
    for base in (Path(corosm.__file__).resolve().parents[2], Path.cwd()):
        if (base / "examples" / "bank" / "machine.py").is_file():
            return base
    return None


def contender(name: str, machine: str, root: Path) -> Contender:
    """``corosm serve --machine`` for one variant, fsync always, with ``root`` importable."""
    # After root, the PYTHONPATH this bench runs with (the compiled build, when it does).
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    pythonpath = f"PYTHONPATH={path}".replace("{", "{{").replace("}", "}}")
    argv = ("env", pythonpath, sys.executable, "-m", "corosm", "serve", "--host", "127.0.0.1",
            "--port", "{port}", "--data-dir", "{data_dir}", "--fsync", "always",
            "--log-level", "warning", "--machine", machine)  # fmt: skip
    return Contender(name, f"examples/bank {machine.rpartition(':')[2]}, fsync=always", argv)


@dataclass(frozen=True, slots=True)
class _Server:
    """A started server: its name in the report, its port and pid."""

    name: str
    port: int
    pid: int


def run_in_suite(suite: Suite) -> None:
    """The ``bank`` scenario of ``corosm bench`` (see the module docs)."""
    root = checkout_root()
    try:
        need_tool("wrk")
        if root is None:
            raise ContenderUnavailable(
                "examples/bank was not found: run corosm bench from a source checkout of corosm "
                "(the example is not part of the installed package)"
            )
    except ContenderUnavailable as exc:
        suite.results.unavailable[SCENARIO] = str(exc)
        suite.say(f"{SCENARIO}: skipped: {exc}")
        return
    runs = itertools.count(1)  # numbers every wrk run's transfer ids
    with _servers(suite, root) as servers:
        for accounts in ACCOUNT_CASES:
            for rnd in range(suite.plan.rounds):
                for server in servers:
                    _measure(suite, server, accounts=accounts, rnd=rnd, run=next(runs))
        for server in servers:
            _check_total(suite, server.name, asyncio.run(_total(server.port)))


def _check_total(suite: Suite, name: str, total: int) -> None:
    deposited = FUNDED * OPENING_BALANCE
    if total == deposited:
        suite.say(f"{SCENARIO} {name}: balances add up to the deposits: {total:,}")
        return
    problem = f"{SCENARIO} {name}: balances add up to {total:,}, not the {deposited:,} deposited"
    suite.results.notes.append(problem)
    suite.say(problem)


@contextlib.contextmanager
def _servers(suite: Suite, root: Path) -> Iterator[list[_Server]]:
    """Start both variants, funded; yield those that started."""
    with contextlib.ExitStack() as stack:
        started: list[_Server] = []
        for name, machine in MACHINES:
            c = contender(name, machine, root)
            port, data = free_port(), suite.work / f"{SCENARIO}-{name}"
            data.mkdir(parents=True, exist_ok=True)
            argv = suite.pin.wrap_server(c.command(port, data))

            def fund(port: int = port, argv: list[str] = argv) -> None:
                try:
                    asyncio.run(_fund(port))
                except (corosm.CorosmError, OSError) as exc:
                    raise ContenderUnavailable(
                        f"funding the accounts failed: {exc} (command: {shlex.join(argv)})"
                    ) from exc

            log = suite.work / f"{SCENARIO}-{name}.log"
            try:
                proc = start_server(stack, argv, [port], log, fund)
            except ContenderUnavailable as exc:
                suite.results.unavailable[f"{SCENARIO}/{name}"] = str(exc)
                suite.say(f"{SCENARIO}: {name} unavailable: {exc}")
                continue
            started.append(_Server(name, port, proc.pid))  # taskset and env exec: same pid
        yield started


async def _fund(port: int) -> None:
    """Open the accounts ``a0`` ... with ``OPENING_BALANCE`` each (pipelined, one connection)."""
    async with AsyncClient(port=port, timeout=30) as bank:
        await asyncio.gather(
            *(
                bank.submit({"type": "Deposit", "account": f"a{i}", "amount": OPENING_BALANCE})
                for i in range(FUNDED)
            )
        )


async def _total(port: int) -> int:
    """The sum of every funded account's balance."""
    async with AsyncClient(port=port, timeout=30) as bank:
        replies: list[Any] = await asyncio.gather(
            *(bank.submit({"type": "GetBalance", "account": f"a{i}"}) for i in range(FUNDED))
        )
    return sum(int(reply["balance"]) for reply in replies)


def _measure(suite: Suite, server: _Server, *, accounts: int, rnd: int, run: int) -> None:
    """One wrk run of transfers against one server; a Sample with its CPU per transfer."""
    name, port, pid = server.name, server.port, server.pid
    script = suite.work / f"bank-{accounts}-{run}.lua"
    script.write_text(transfer_script(accounts, run), encoding="utf-8")
    before = cpu_seconds(pid)
    try:
        r = suite.wrk(port, script, CONNECTIONS, suite.plan.seconds)
    except corosm.CorosmError as exc:  # wrk failed or overran its time: noted, next run
        suite.results.notes.append(f"{SCENARIO} {name} {accounts} accounts: {exc}")
        return
    after = cpu_seconds(pid, end=True)
    answered = r.requests - r.errors
    values = {"rps": r.ok_rps, "errors": float(r.errors), "p50_ms": r.p50_us / 1e3,
              "p99_ms": r.p99_us / 1e3, "p999_ms": r.p999_us / 1e3}  # fmt: skip
    if before is not None and after is not None and answered > 0:
        values["cpu_us_per_req"] = (after.process - before.process) / answered * 1e6
        values["loop_us_per_req"] = (after.main_thread - before.main_thread) / answered * 1e6
    suite.results.add(Sample(SCENARIO, _case(accounts), accounts, name, rnd, values))
    suite.say(_line(name, accounts, r, values))
    if r.errors > 0.01 * max(1, r.requests):
        suite.results.notes.append(
            f"{SCENARIO} {name} {accounts} accounts round {rnd}: "
            f"{r.errors} of {r.requests} requests failed"
        )


def _case(accounts: int) -> str:
    return f"{accounts:,} accounts, {CONNECTIONS} conns"


def _line(name: str, accounts: int, r: WrkResult, values: dict[str, float]) -> str:
    cpu = values.get("cpu_us_per_req")
    shown = "" if cpu is None else f", {cpu:.0f} us CPU/transfer"
    bad = f", {r.errors} ERRORS" if r.errors else ""
    return (
        f"{SCENARIO} {_case(accounts)} {name}: {r.ok_rps:,.0f} transfers/s, "
        f"p99 {r.p99_us / 1e3:.2f} ms{shown}{bad}"
    )


def bank_section(results: Results) -> list[str]:
    """The report's table: transfers/s of each policy per case, their ratio, latency, CPU."""
    names = results.contenders(SCENARIO)
    header = ["case", *(f"{n} transfers/s" for n in names)]
    if {"per_key", "exclusive"} <= set(names):
        header.append("per_key / exclusive")
    header += [f"{n} p50 / p99 ms" for n in names]
    header += [f"{n} CPU us/transfer (loop)" for n in names]
    rows = []
    for case, _ in results.cases(SCENARIO):
        row = [case, *(_num(results.median(SCENARIO, case, n, "rps"), ",.0f") for n in names)]
        if "per_key / exclusive" in header:
            ratio = pairwise_ratio(results, SCENARIO, case, "per_key", "exclusive")
            row.append("n/a" if ratio is None else f"{ratio:.2f}x")
        for n in names:
            p50, p99 = (results.median(SCENARIO, case, n, k) for k in ("p50_ms", "p99_ms"))
            row.append(f"{_num(p50, '.2f')} / {_num(p99, '.2f')}")
        for n in names:
            whole, loop = (
                results.median(SCENARIO, case, n, k) for k in ("cpu_us_per_req", "loop_us_per_req")
            )
            row.append(f"{_num(whole, '.0f')} ({_num(loop, '.0f')})")
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)
