"""``corosm serve --machine``: a user's machine over HTTP with typed JSON, end to end.

A real ``corosm serve --machine tests.machines.ledger:Ledger`` process on a
free port (the repository's root on ``PYTHONPATH``), driven through the
Python client and raw sockets: typed round trips, pipelining with
read-your-writes on one connection, bad bodies answered 400/413 naming the
field, a failing handler answered 500 alone, health and metrics, ``kill -9``
under writes with nothing acknowledged lost, and the one-line refusals at
start-up (a machine that cannot be imported, one without types,
``--resp-port`` with a machine that is not the key-value one), and the
session of docs/serving.md as written. One in-process section drives the
HTTP app on an in-memory runtime to map every kind of handler failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corosm import Context, Machine, Order
from corosm.client import (
    AsyncClient,
    Client,
    ConnectionLost,
    RequestRejected,
    ServerFailed,
    ServerUnreachable,
)
from corosm.errors import UsageError
from corosm.frontends.http import start_http_server
from corosm.frontends.http.machineapp import MachineHttpApp
from corosm.frontends.jsoncodec import MachineCodec
from corosm.runtime import Runtime
from corosm.runtime import run as corosm_run
from machines.ledger import (
    Balance,
    Deposit,
    GetBalance,
    LedgerOutput,
    Moved,
    Refused,
    Transfer,
    Withdraw,
)
from rawclient import exchange, read_response
from serverproc import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
LEDGER = ("--machine", "tests.machines.ledger:Ledger")


@pytest.fixture(autouse=True, scope="module")
def importable_machines() -> Iterator[None]:
    """The server process imports ``tests.machines...`` from the repository's root."""
    path = os.environ.get("PYTHONPATH")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))
        yield


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests that only add to it (each uses accounts of its own)."""
    with ServerProcess(tmp_path_factory.mktemp("ledger") / "data", *LEDGER) as server:
        yield server


@pytest.fixture
def fresh_ledger(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "data", *LEDGER) as server:
        yield server


def post(server: ServerProcess, body: bytes | str, path: str = "/") -> tuple[int, str]:
    status, reply = server.request("POST", path, body.encode() if isinstance(body, str) else body)
    return status, reply.decode()


# --- typed round trips --------------------------------------------------------------


def test_submit_dataclasses_and_dicts_through_the_client(ledger: ServerProcess) -> None:
    with Client(port=ledger.port) as bank:
        assert bank.submit(Deposit("alice", 100)) == {
            "type": "Balance",
            "account": "alice",
            "balance": 100,
        }
        assert bank.submit(Withdraw("alice", 500), LedgerOutput) == Refused(
            "alice has 100, not 500"
        )
        moved = bank.submit(Transfer("alice", "bob", 30), LedgerOutput)
        assert moved == Moved(Balance("alice", 70), Balance("bob", 30))
        reply = bank.submit({"type": "GetBalance", "account": "bob"})
        assert reply == {"type": "Balance", "account": "bob", "balance": 30}
        assert bank.submit(GetBalance("carol"), Balance) == Balance("carol", 0)


def test_the_wire_is_plain_json(ledger: ServerProcess) -> None:
    status, reply = post(ledger, '{"type": "Deposit", "account": "w1", "amount": 5}')
    assert status == 200
    assert json.loads(reply) == {"type": "Balance", "account": "w1", "balance": 5}
    status, reply = post(ledger, '{"type":"Transfer","source":"w1","target":"w2","amount":2}')
    assert json.loads(reply) == {
        "type": "Moved",
        "source": {"type": "Balance", "account": "w1", "balance": 3},
        "target": {"type": "Balance", "account": "w2", "balance": 2},
    }


# --- bad bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"type": "Steal", "account": "a"}', 'type: expected one of "Deposit", "Withdraw"'),
        ('{"account": "a", "amount": 1}', 'type: missing; expected one of "Deposit"'),
        ('{"type": "Deposit", "account": "a"}', "amount: missing"),
        (
            '{"type": "Deposit", "account": "a", "amount": "x"}',
            'amount: expected an integer, got "x"',
        ),
        (
            '{"type": "Deposit", "account": "a", "amount": "5"}',
            'amount: expected an integer, got "5"',
        ),
        ('{"type": "Deposit", "account": "a", "amount": 1, "memo": "hi"}', "memo: unknown field"),
        ('{"type": "Deposit", "account": 7, "amount": 1}', "account: expected a string, got 7"),
        ('{"type": "Deposit", "account": "a", "amount": -3}', "amount must be positive, got -3"),
        ('Write "x" 1', "the body is not JSON: expected value at line 1 column 1"),
        ("", "the body is not JSON: EOF while parsing"),
        ("[1, 2]", 'expected an object with "type" one of "Deposit"'),
    ],
)
def test_a_bad_body_is_400_naming_the_field(ledger: ServerProcess, body: str, message: str) -> None:
    status, reply = post(ledger, body)
    assert status == 400, reply
    assert message in reply
    assert reply.endswith("\n") and "Traceback" not in reply


def test_every_problem_gets_its_own_line(ledger: ServerProcess) -> None:
    status, reply = post(ledger, '{"type": "Transfer", "source": 1, "amount": "x", "note": 2}')
    assert status == 400
    assert sorted(reply.splitlines()) == [
        'amount: expected an integer, got "x"',
        "note: unknown field",
        "source: expected a string, got 1",
        "target: missing",
    ]


def test_a_body_over_the_limit_is_413(ledger: ServerProcess) -> None:
    memo = "x" * (2 * 1024 * 1024)
    status, reply = post(ledger, json.dumps({"type": "Deposit", "account": memo, "amount": 1}))
    assert status == 413
    assert "request body too large" in reply


def test_other_routes_and_methods(ledger: ServerProcess) -> None:
    assert ledger.request("GET", "/")[0] == 405
    status, reply = post(ledger, '{"type": "GetBalance", "account": "a"}', path="/kv/a")
    assert status == 404 and "expected POST / with a JSON input" in reply
    with Client(port=ledger.port) as bank, pytest.raises(RequestRejected) as rejected:
        bank.submit({"type": "Deposit", "account": "a", "amount": 0})
    assert rejected.value.status == 400
    assert "amount must be positive, got 0" in rejected.value.message


def test_a_failing_handler_fails_its_input_alone(ledger: ServerProcess) -> None:
    status, reply = post(ledger, '{"type": "Explode", "message": "kaboom\\nsecond line"}')
    assert status == 500
    assert reply == (
        "the request failed in the machine: handler raised RuntimeError: kaboom second line\n"
    )
    with Client(port=ledger.port) as bank:
        with pytest.raises(ServerFailed):
            bank.submit({"type": "Explode", "message": "again"})
        assert bank.submit(Deposit("f1", 1), Balance) == Balance("f1", 1)


# --- health, metrics ------------------------------------------------------------------


def test_health_and_metrics(fresh_ledger: ServerProcess) -> None:
    with Client(port=fresh_ledger.port) as bank:
        bank.submit(Deposit("a", 1))
        post(fresh_ledger, "not json")
        assert bank.health() is None
        metrics = bank.metrics()
    assert 'corosm_http_requests_total{kind="submit",status="200"} 1' in metrics
    assert 'corosm_http_requests_total{kind="submit",status="400"} 1' in metrics
    assert "corosm_journal_fsync_seconds_count" in metrics


# --- pipelining and read-your-writes ----------------------------------------------------


def _request(body: str) -> bytes:
    data = body.encode()
    return b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)


def test_pipelined_reads_see_the_connections_earlier_writes(ledger: ServerProcess) -> None:
    deposit = '{"type": "Deposit", "account": "p", "amount": 1}'
    read = '{"type": "GetBalance", "account": "p"}'
    bodies = [deposit if i % 3 else read for i in range(60)]

    async def pipeline() -> list[dict[str, object]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", ledger.port)
        try:
            writer.write(b"".join(_request(body) for body in bodies))  # one burst
            replies = [await read_response(reader, timeout=20) for _ in bodies]
        finally:
            writer.close()
        assert all(reply.status == 200 for reply in replies), replies
        return [json.loads(reply.body) for reply in replies]

    replies = asyncio.run(pipeline())
    deposits = 0
    for body, reply in zip(bodies, replies, strict=True):
        if body == deposit:
            deposits += 1
        assert reply == {"type": "Balance", "account": "p", "balance": deposits}


def test_async_client_pipelines_submit(ledger: ServerProcess) -> None:
    async def main() -> list[object]:
        async with AsyncClient(port=ledger.port) as bank:
            calls = [bank.submit(Deposit("q", 1), Balance) for _ in range(20)]
            calls.append(bank.submit(GetBalance("q"), Balance))
            return list(await asyncio.gather(*calls))

    results = asyncio.run(main())
    assert results[:-1] == [Balance("q", n) for n in range(1, 21)]
    assert results[-1] == Balance("q", 20)


# --- durability -----------------------------------------------------------------------

WRITERS = 4
ACKS_BEFORE_KILL = 120


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked = dict.fromkeys(range(WRITERS), 0)
    tried = dict.fromkeys(range(WRITERS), 0)
    enough = threading.Event()
    lock = threading.Lock()
    failures: list[BaseException] = []

    def write_until_killed(port: int, writer: int) -> None:
        with Client(port=port, timeout=10) as bank:
            try:
                while True:
                    tried[writer] += 1
                    balance = bank.submit(Deposit(f"w{writer}", 1), Balance)
                    assert balance == Balance(f"w{writer}", tried[writer])
                    acked[writer] = tried[writer]
                    with lock:
                        if sum(acked.values()) >= ACKS_BEFORE_KILL:
                            enough.set()
            except (ConnectionLost, ServerUnreachable):
                pass  # the server was killed: expected
            except BaseException as exc:
                failures.append(exc)
                enough.set()

    server = ServerProcess(data, *LEDGER).start()
    try:
        threads = [
            threading.Thread(target=write_until_killed, args=(server.port, i))
            for i in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        assert enough.wait(60), "writers made no progress"
        server.kill()  # mid-load: the writers are still sending
        for thread in threads:
            thread.join(15)
    finally:
        server.close()
    assert failures == []
    with ServerProcess(data, *LEDGER) as server, Client(port=server.port) as bank:
        for writer in range(WRITERS):
            balance = bank.submit(GetBalance(f"w{writer}"), Balance).balance
            # A deposit sent but not yet acknowledged may also have survived.
            assert acked[writer] <= balance <= tried[writer], (writer, acked, tried, balance)


def test_sigterm_flushes_and_a_restart_recovers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, *LEDGER, "--fsync", "never") as server:
        with Client(port=server.port) as bank:
            for _ in range(10):
                bank.submit(Deposit("s", 2))
        assert server.terminate() == 0
    with ServerProcess(data, *LEDGER) as server, Client(port=server.port) as bank:
        assert bank.submit(GetBalance("s"), Balance) == Balance("s", 20)


# --- refusals at start-up -------------------------------------------------------------


def serve(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "corosm", "serve", "--port", "0"]
    command += ["--data-dir", str(tmp_path / "data"), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_a_machine_that_cannot_be_imported(tmp_path: Path) -> None:
    line = one_line(serve(tmp_path, "--machine", "nowhere.bank:Bank"))
    assert line.startswith("corosm: --machine nowhere.bank:Bank: cannot import 'nowhere.bank'")
    assert "PYTHONPATH" in line and "run corosm serve from the folder" in line
    line = one_line(serve(tmp_path, "--machine", "tests.machines.ledger:Nope"))
    assert "has no 'Nope'" in line
    line = one_line(serve(tmp_path, "--machine", "tests.machines.ledger"))
    assert "--machine must be package.module:Class" in line
    assert not (tmp_path / "data").exists()  # refused before touching the disk


def test_a_machine_module_that_exits_or_a_machine_that_cannot_start(tmp_path: Path) -> None:
    # sys.exit(3) on import exited 3 with no word (3 means "no answer"); an
    # initial_state() that raised printed a traceback.
    line = one_line(serve(tmp_path, "--machine", "tests.machines.exits:Any"))
    assert line == (
        "corosm: --machine tests.machines.exits:Any: "
        "importing 'tests.machines.exits' raised SystemExit: 3"
    )
    line = one_line(serve(tmp_path, "--machine", "tests.machines.ledger:BrokenStart"))
    assert line == ("corosm: BrokenStart.initial_state() raised RuntimeError: no opening balances")


def test_a_machine_without_types(tmp_path: Path) -> None:
    line = one_line(serve(tmp_path, "--machine", "tests.machines.ledger:Untyped"))
    assert "Untyped does not declare its types" in line
    assert "Machine[State, Input, Output]" in line


def test_resp_port_needs_the_key_value_machine(tmp_path: Path) -> None:
    line = one_line(serve(tmp_path, *LEDGER, "--resp-port", "0"))
    assert "--resp-port serves the key-value machine's Redis commands" in line


def test_the_key_value_machine_named_explicitly_keeps_its_routes(tmp_path: Path) -> None:
    kv = ("--machine", "corosm.apps.kv.machine:KVMachine")
    with ServerProcess(tmp_path / "data", *kv) as server:
        assert server.request("POST", "/", b'Write "x" 1') == (200, b"Ok")
        assert server.request("GET", "/kv/x") == (200, b"1")


# --- docs/serving.md, as written ------------------------------------------------------

SERVING = ROOT / "docs" / "serving.md"
CURL = re.compile(r"^\$ curl -s -d '(.*)' localhost:8080/$")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", SERVING.read_text(), flags=re.DOTALL)


def _curl_session() -> list[tuple[str, str]]:
    """(body, expected reply) for each ``curl`` of the docs' session."""
    session = next(block for block in _blocks("console") if "curl" in block)
    exchanges: list[tuple[str, str]] = []
    for line in session.splitlines():
        match = CURL.match(line)
        if match:
            exchanges.append((match.group(1), ""))
        else:
            body, reply = exchanges[-1]
            exchanges[-1] = (body, reply + line + "\n")
    return exchanges


def test_the_docs_example_serves_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bank, client_example = _blocks("python")
    (tmp_path / "bank.py").write_text(bank)
    # The installed command, run from the folder that holds bank.py, no PYTHONPATH.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    corosm = [str(Path(sys.executable).with_name("corosm"))]
    machine = ("--machine", "bank:Bank")
    with ServerProcess(tmp_path / "data", *machine, command=corosm, cwd=tmp_path) as server:
        exchanges = _curl_session()
        assert len(exchanges) == 9
        for body, expected in exchanges:
            status, reply = post(server, body)
            assert reply.rstrip("\n") == expected.rstrip("\n"), body
            assert status == (200 if reply.startswith("{") else 400), (body, reply)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "bank", raising=False)
        exec(client_example.replace("8080", str(server.port)), {"__name__": "docs_example"})
    printed = re.search(r"print\(.*\)\s+# (.*)", client_example)
    assert printed is not None
    assert capsys.readouterr().out.strip() == printed.group(1)


# --- failures, mapped once for every machine (in-process, no journal) -------------------


@dataclass(frozen=True)
class Ask:
    what: str


class Quirky(Machine[dict[str, int], Ask, Balance]):
    """Fails in every way a handler can, on request."""

    def order(self, input: Ask) -> Order:
        if input.what == "order":
            raise RuntimeError("order() is broken")
        return Order.READ

    def initial_state(self) -> dict[str, int]:
        return {}

    async def handle(self, ctx: Context[dict[str, int]], input: Ask) -> Balance:
        match input.what:
            case "refuse":
                raise UsageError("no such account: zed")
            case "wrong":
                return 5  # type: ignore[return-value]  # not a Balance: the server's 500
            case "io":
                await ctx.call(_fail_io)
        return Balance(input.what, 0)


def _fail_io() -> None:
    raise OSError("disk on fire")


def _post_raw(body: str) -> bytes:
    data = body.encode()
    return b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)


@pytest.mark.parametrize(
    ("what", "status", "reply"),
    [
        ("ok", 200, b'{"type":"Balance","account":"ok","balance":0}'),
        ("refuse", 400, b"the machine refused the input: no such account: zed\n"),
        ("wrong", 500, b"internal error: Quirky's output type is "),
        ("io", 500, b"EffectError: "),
        ("order", 500, b"internal error; see the server log\n"),
    ],
)
def test_failures_map_to_statuses(what: str, status: int, reply: bytes) -> None:
    async def main() -> None:
        async with Runtime(Quirky()) as runtime:
            app = MachineHttpApp(runtime, MachineCodec(runtime.machine))
            server = await start_http_server(app, "127.0.0.1", 0)
            try:
                raw = _post_raw(json.dumps({"type": "Ask", "what": what}))
                first, after = await exchange(
                    "127.0.0.1", server.port, raw + _post_raw('{"what": "after"}'), count=2
                )
            finally:
                await server.shutdown(grace=2.0)
        assert first.status == status
        assert first.body.startswith(reply), first.body
        if status != 200:
            assert b"Traceback" not in first.body and first.body.count(b"\n") == 1
        assert (after.status, json.loads(after.body)["account"]) == (200, "after")

    corosm_run(main())
