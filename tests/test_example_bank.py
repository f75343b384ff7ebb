"""examples/bank, every part of it: the machine, its simulation, served, killed, measured.

In process: the journal codec, recovery with snapshots, the audit holding
only its own account (a gate instead of its real latency, so nothing is
timed) and giving up at its timeout. In the simulator: the bank passes 300
seeds, and the planted overdraft (the same machine under INTERLEAVE) is
found within 50 and shows a balance below zero; the README's ``corosm sim``
commands as written. Served by a real ``corosm serve --machine
examples.bank.machine:Bank`` process (the repository's root on
``PYTHONPATH``): typed round trips and read-your-writes through the Python
client, the README's curl session as written, and ``kill -9`` under
concurrent transfers: after the restart no money was made or lost, every
acknowledged transfer is there, and retrying the unknown ones settles them.
Last, the benchmark's ``bank`` scenario, small, with real wrk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import corosm
from corosm.bench import bank as bench_bank
from corosm.bench.procs import Pinning
from corosm.bench.suite import QUICK, Suite
from corosm.client import (
    AsyncClient,
    Client,
    ConnectionLost,
    RequestRejected,
    ServerUnreachable,
)
from corosm.runtime import Runtime
from corosm.runtime import run as corosm_run
from corosm.testing.sim import run_campaign, run_seed
from serverproc import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ is a package at the repository's root

from examples.bank import checks  # noqa: E402
from examples.bank import machine as bank  # noqa: E402
from examples.bank.machine import (  # noqa: E402
    AlreadyDone,
    Audit,
    AuditReport,
    Balance,
    Bank,
    BankOutput,
    Books,
    Deposit,
    Deposited,
    Frozen,
    GetBalance,
    Moved,
    Refused,
    Transfer,
    Transferred,
)
from examples.bank.sim import OVERDRAFT_SPEC, SPEC  # noqa: E402

BANK = ("--machine", "examples.bank.machine:Bank")
README = ROOT / "examples" / "bank" / "README.md"


@pytest.fixture(autouse=True, scope="module")
def importable_examples() -> Iterator[None]:
    """Server and ``corosm sim`` processes import ``examples.bank`` from the repository's root."""
    path = os.environ.get("PYTHONPATH")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))
        yield


# --- the machine, in process ----------------------------------------------------------


def test_records_round_trip_through_the_journal_codec() -> None:
    machine = Bank()
    for record in (
        Deposited("alice", 10),
        Moved("t1", "alice", "bob", 3),
        Frozen("mallory", ("sanctions", "fraud")),
    ):
        assert machine.decode_record(machine.encode_record(record)) == record
    with pytest.raises(ValueError, match="not a bank record"):
        machine.decode_record(b'["withdraw", "alice", 5]')


def test_recovery_replays_the_journal_and_restores_snapshots(tmp_path: Path) -> None:
    inputs: list[Any] = [Deposit("alice", 100), Deposit("bob", 5)]
    inputs += [Transfer(f"t{i}", "alice", "bob", 7) for i in range(10)]
    inputs += [Transfer("t3", "alice", "bob", 7), Audit("mallory"), Deposit("mallory", 1)]

    async def main() -> tuple[Books, int, Books]:
        async with corosm.open(Bank(), tmp_path, snapshot_every=4) as host:
            for input in inputs:
                await host.submit(input)
            live = host.machine.copy_state(host.stepper.state)
        async with corosm.open(Bank(), tmp_path) as host:
            assert host.recovery is not None
            return live, host.recovery.snapshot_lsn, host.stepper.state

    live, snapshot_lsn, recovered = corosm_run(main())
    assert live.balances == {"alice": 30, "bob": 75, "mallory": 1}
    assert live.frozen == {"mallory"} and len(live.transfers) == 10
    assert snapshot_lsn > 0, "no snapshot was taken"
    assert recovered == live


GATE_TIMEOUT = 10.0


def _gated(gate: threading.Event) -> Callable[[str, str], bool]:
    """A check that answers only once ``gate`` is set (instead of after a real delay)."""

    def check(watchlist: str, account: str) -> bool:
        gate.wait(GATE_TIMEOUT)
        return checks.listed(watchlist, account)

    return check


def test_an_audit_holds_its_own_account_and_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    monkeypatch.setattr(checks, "check", _gated(gate))
    monkeypatch.setattr(bank, "AUDIT_TIMEOUT", GATE_TIMEOUT)  # however slow this box is

    async def main() -> None:
        async with Runtime(Bank()) as rt:
            await rt.submit(Deposit("mallory", 50))
            await rt.submit(Deposit("alice", 50))
            audit = rt.submit_nowait(Audit("mallory"))
            from_mallory = rt.submit_nowait(Transfer("m1", "mallory", "bob", 10))
            # alice's transfer does not wait: the audit holds "mallory", the waiting
            # transfer "mallory" and "bob", and this one "alice" and "carol".
            reply = await rt.submit(Transfer("a1", "alice", "carol", 10))
            assert reply == Transferred("a1", 40, 10)
            assert not audit.done() and not from_mallory.done()
            gate.set()
            assert await audit == AuditReport("mallory", 50, ("sanctions", "fraud"), True)
            # mallory's transfer waited for the audit, then saw the freeze.
            assert await from_mallory == Refused("mallory is frozen")

    corosm_run(main())


def test_an_audit_gives_up_at_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    monkeypatch.setattr(checks, "check", _gated(gate))
    monkeypatch.setattr(bank, "AUDIT_TIMEOUT", 0.05)

    async def main() -> None:
        async with Runtime(Bank()) as rt:
            reply = await rt.submit(Audit("mallory"))
            assert reply == Refused("the audit of mallory timed out; nothing was changed")
            assert rt.stepper.state.frozen == set()
            gate.set()  # let the worker threads finish before stop() joins them

    corosm_run(main())


# --- the simulator ------------------------------------------------------------------------


def test_the_bank_passes_the_simulator() -> None:
    result = run_campaign(SPEC, range(300))
    print(result.summary())
    assert result.ok, result.summary()
    assert result.crashes > 0


def _below_zero(seed: int) -> list[str]:
    """The replies of ``seed``'s run (under OVERDRAFT_SPEC) that show a negative balance."""
    seen = []
    for epoch in run_seed(OVERDRAFT_SPEC, seed).run.epochs:
        for op in epoch.operations:
            output = op.output
            if isinstance(output, Transferred) and output.source_balance < 0:
                seen.append(f"{op.input} -> {output}")
            if isinstance(output, Balance | AuditReport) and output.balance < 0:
                seen.append(f"{op.input} -> {output}")
    return seen


def test_the_planted_overdraft_is_caught_within_50_seeds() -> None:
    result = run_campaign(OVERDRAFT_SPEC, range(50))
    assert result.failure is not None, "the overdraft bug went unnoticed for 50 seeds"
    report = result.failure.report()
    print(report)
    assert "not linearizable" in report
    assert _below_zero(result.failure.seed), "the failing seed shows no negative balance"
    assert "--machine examples.bank.sim:OVERDRAFT_SPEC" in report
    again = run_seed(OVERDRAFT_SPEC, result.failure.seed)
    assert again.violation is not None and again.violation.summary == result.failure.summary


def _readme_commands(program: str) -> list[tuple[str, str]]:
    """(command, first line of its output) for each ``$ ...`` of the README naming ``program``."""
    found = []
    lines = README.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("$ ") and program in line:
            found.append((line[2:], lines[i + 1]))
    return found


def test_the_readme_sim_commands_as_written() -> None:
    commands = _readme_commands("corosm sim")
    assert len(commands) == 2
    corosm_cli = str(Path(sys.executable).with_name("corosm"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command, first_line in commands:
        argv = command.removeprefix("PYTHONPATH=. ").split()
        assert argv[0] == "corosm"
        if "--machine examples.bank.sim:SPEC" in command:
            argv[argv.index("--seeds") + 1] = "100"  # the README's 2,000 take 10 s
        done = subprocess.run(
            [corosm_cli, *argv[1:]],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
            check=False,
        )
        if "OVERDRAFT" in command:
            assert done.returncode == 1, done.stdout + done.stderr
            assert done.stdout.splitlines()[0].endswith("FAILED")
            assert "source_balance=-" in done.stdout
        else:
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.startswith("100 seeds, 3000 operations")
            assert first_line.startswith("2000 seeds, 60000 operations")


# --- served ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests that only add to it (each uses accounts of its own)."""
    with ServerProcess(tmp_path_factory.mktemp("bank") / "data", *BANK) as server:
        yield server


def test_deposits_and_transfers_through_the_client(served: ServerProcess) -> None:
    with Client(port=served.port) as client:
        assert client.submit(Deposit("c-ann", 100), BankOutput) == Balance("c-ann", 100)
        assert client.submit(GetBalance("c-ann"), BankOutput) == Balance("c-ann", 100)
        moved = client.submit(Transfer("1", "c-ann", "c-ben", 40), BankOutput)
        assert moved == Transferred("1", 60, 40)
        assert client.submit(GetBalance("c-ben"), BankOutput) == Balance("c-ben", 40)
        assert client.submit(Transfer("1", "c-ann", "c-ben", 40), BankOutput) == AlreadyDone("1")
        refused = client.submit(Transfer("2", "c-ben", "c-ann", 41), BankOutput)
        assert refused == Refused("c-ben has 40, not 41")
        assert client.submit({"type": "GetBalance", "account": "c-ann"}) == {
            "type": "Balance",
            "account": "c-ann",
            "balance": 60,
        }
        with pytest.raises(RequestRejected, match="source and target are both"):
            client.submit(
                {"type": "Transfer", "id": "3", "source": "x", "target": "x", "amount": 1}
            )


def test_pipelined_inputs_read_their_writes(served: ServerProcess) -> None:
    async def main() -> list[Any]:
        async with AsyncClient(port=served.port) as client:
            calls = [client.submit(Deposit("p-a", 10), BankOutput) for _ in range(10)]
            calls += [
                client.submit(Transfer(f"p{i}", "p-a", "p-b", 7), BankOutput) for i in range(20)
            ]
            calls += [client.submit(GetBalance(name), BankOutput) for name in ("p-a", "p-b")]
            return list(await asyncio.gather(*calls))

    replies = corosm_run(main())
    assert replies[:10] == [Balance("p-a", 10 * n) for n in range(1, 11)]
    moved = [r for r in replies[10:30] if isinstance(r, Transferred)]
    assert len(moved) == 14  # 100 // 7: the rest were refused, in order
    assert all(isinstance(r, Refused) for r in replies[24:30])
    assert replies[30:] == [Balance("p-a", 100 - 14 * 7), Balance("p-b", 14 * 7)]


CURL = re.compile(r"^\$ curl -s -d '(.*)' localhost:8080/$")


def test_the_readme_session_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text()
    session = text.split("```console\n")[2].split("```")[0]
    python = text.split("```python\n")[1].split("```")[0]
    printed = text.split("prints\n\n```\n")[1].split("```")[0]
    exchanges: list[tuple[str, str]] = []
    for line in session.splitlines():
        match = CURL.match(line)
        if match:
            exchanges.append((match.group(1), ""))
        else:
            body, reply = exchanges[-1]
            exchanges[-1] = (body, reply + line + "\n")
    assert len(exchanges) == 8
    with ServerProcess(tmp_path / "data", *BANK) as server:
        for body, expected in exchanges:
            status, reply = server.request("POST", "/", body.encode())
            assert reply.decode().rstrip("\n") == expected.rstrip("\n"), body
            assert status == (200 if reply.startswith(b"{") else 400), (body, reply)
        capsys.readouterr()
        exec(python.replace("8080", str(server.port)), {"__name__": "readme_example"})
    assert capsys.readouterr().out == printed


# --- kill -9 under concurrent transfers ---------------------------------------------------

ACCOUNTS = [f"k{i}" for i in range(6)]
OPENING = 1_000
WRITERS = 6
ACKS_BEFORE_KILL = 150


@dataclasses.dataclass
class Ledger:
    """What the writers saw: transfers acknowledged, and those whose outcome is unknown."""

    acked: list[Transfer] = dataclasses.field(default_factory=list)
    unknown: list[Transfer] = dataclasses.field(default_factory=list)
    failures: list[BaseException] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    enough: threading.Event = dataclasses.field(default_factory=threading.Event)


def _transfer_until_killed(port: int, writer: int, seen: Ledger) -> None:
    rng = random.Random(writer)
    with Client(port=port, timeout=10) as client:
        for n in range(1_000_000):
            source, target = rng.sample(ACCOUNTS, 2)
            transfer = Transfer(f"w{writer}-{n}", source, target, rng.randrange(1, 300))
            try:
                reply = client.submit(transfer, BankOutput)
            except (ConnectionLost, ServerUnreachable):
                with seen.lock:
                    seen.unknown.append(transfer)  # killed: it may or may not have happened
                return
            except BaseException as exc:
                seen.failures.append(exc)
                seen.enough.set()
                return
            with seen.lock:
                if isinstance(reply, Transferred):
                    seen.acked.append(transfer)
                elif not isinstance(reply, Refused):
                    seen.failures.append(AssertionError(f"{transfer} -> {reply}"))
                if len(seen.acked) >= ACKS_BEFORE_KILL:
                    seen.enough.set()


def test_kill_9_mid_transfers_loses_no_money_and_no_acknowledged_transfer(tmp_path: Path) -> None:
    data, seen = tmp_path / "data", Ledger()
    with ServerProcess(data, *BANK) as server:
        with Client(port=server.port) as client:
            for account in ACCOUNTS:
                assert client.submit(Deposit(account, OPENING), BankOutput) == Balance(
                    account, OPENING
                )
        writers = [
            threading.Thread(target=_transfer_until_killed, args=(server.port, w, seen))
            for w in range(WRITERS)
        ]
        for thread in writers:
            thread.start()
        assert seen.enough.wait(60), "the writers made no progress"
        server.kill()  # mid-load: every writer has a transfer in flight or about to be
        for thread in writers:
            thread.join(15)
    assert seen.failures == []
    assert len(seen.acked) >= ACKS_BEFORE_KILL and seen.unknown

    with ServerProcess(data, *BANK) as server, Client(port=server.port) as client:
        balances = {a: client.submit(GetBalance(a), Balance).balance for a in ACCOUNTS}
        assert sum(balances.values()) == OPENING * len(ACCOUNTS), balances  # moved, never made
        assert min(balances.values()) >= 0, balances
        # Every acknowledged transfer is in the recovered books: a retry moves nothing.
        for transfer in seen.acked:
            assert client.submit(transfer, BankOutput) == AlreadyDone(transfer.id)
        # A transfer whose outcome was unknown is settled by retrying it, safely.
        applied = list(seen.acked)
        for transfer in seen.unknown:
            reply = client.submit(transfer, BankOutput)
            assert isinstance(reply, AlreadyDone | Transferred | Refused), reply
            if not isinstance(reply, Refused):
                applied.append(transfer)
        expected = dict.fromkeys(ACCOUNTS, OPENING)
        for transfer in applied:
            expected[transfer.source] -= transfer.amount
            expected[transfer.target] += transfer.amount
        assert {a: client.submit(GetBalance(a), Balance).balance for a in ACCOUNTS} == expected


# --- the benchmark scenario ----------------------------------------------------------------


def test_the_bench_scenario_measures_both_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_tool: Callable[..., str]
) -> None:
    require_tool("wrk", apt="wrk")
    monkeypatch.setattr(bench_bank, "ACCOUNT_CASES", (8,))
    said: list[str] = []
    plan = dataclasses.replace(QUICK, rounds=1, seconds=1)
    results = Suite(plan, tmp_path, progress=said.append, pinning=Pinning((), ())).run(["bank"])
    assert results.unavailable == {}, results.unavailable
    assert results.notes == [], results.notes
    assert results.contenders("bank") == ["per_key", "exclusive"]
    for sample in results.select("bank"):
        assert sample.values["rps"] > 0 and sample.values["errors"] == 0, sample
    table = "\n".join(bench_bank.bank_section(results))
    assert "| 8 accounts, 64 conns |" in table and "per_key / exclusive" in table
    assert any("balances add up to the deposits" in line for line in said), said


def test_the_transfer_script_gives_every_run_its_own_ids() -> None:
    first, second = bench_bank.transfer_script(8, 1), bench_bank.transfer_script(8, 2)
    assert '"id":"r%d-%d"' in first and "ACCOUNTS" not in first
    assert first != second and "math.randomseed(1 * 7919" in first
    with pytest.raises(ValueError, match="at least 2 accounts"):
        bench_bank.transfer_script(1, 1)
