"""Bad arguments to the simulator get a UsageError naming the argument, the value and the rule.

Before, most of these failed deep inside a run with a bare TypeError or
AttributeError (``FaultPlan(crash_probability="0.1")``, ``run_campaign(spec,
5)``, ``SimSpec(faults={})``), or were taken silently (``check_budget=0``,
``crash_probability=True``, seeds that are strings).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from corosm.core.effects import Sleep
from corosm.errors import UsageError
from corosm.testing.sim import (
    FaultPlan,
    World,
    check_epochs,
    cli,
    end_states,
    run_campaign,
    run_seed,
    run_with,
    simulate,
)
from corosm.testing.sim.hypothesis import assert_linearizable, fault_plans, schedules
from corosm.testing.sim.kv import KV_SPEC


def bad(value: object) -> Any:
    """``value`` typed Any: a wrong-typed argument that type checkers let through."""
    return value


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("crash_probability", "0.1", "a number in [0, 1]"),
        ("crash_probability", None, "a number in [0, 1]"),
        ("crash_probability", True, "a number in [0, 1]"),
        ("tear_probability", -0.5, "a number in [0, 1]"),
        ("clients", True, "an int >= 1"),
        ("clients", 2.0, "an int >= 1"),
        ("max_crashes", -1, "an int >= 0"),
        ("io_latency", [0.1, 0.2], "a (low, high) tuple of seconds"),
        ("io_latency", "ab", "a (low, high) tuple of seconds"),
        ("io_latency", (0.1,), "a (low, high) tuple of seconds"),
        ("io_latency", (False, True), "a (low, high) tuple of seconds"),
        ("think_time", (0.0, float("inf")), "a (low, high) tuple of seconds"),
        ("client_timeout", True, "a positive number of seconds"),
        ("client_timeout", "1", "a positive number of seconds"),
    ],
)
def test_fault_plan_names_the_field_the_value_and_what_it_must_be(
    field: str, value: object, expected: str
) -> None:
    with pytest.raises(UsageError) as info:
        FaultPlan(**{field: value})
    message = str(info.value)
    assert message.startswith(f"FaultPlan.{field} must be {expected}")
    assert message.endswith(f"got {value!r}")


def test_fault_plan_still_takes_ints_for_seconds_and_probabilities() -> None:
    plan = FaultPlan(client_timeout=1, crash_probability=1, io_latency=(0, 1), max_crashes=0)
    assert plan.client_timeout == 1 and plan.io_latency == (0, 1)
    assert FaultPlan.calm(clients=1).clients == 1


def test_calm_refuses_a_field_it_does_not_have() -> None:
    with pytest.raises(UsageError, match="FaultPlan has no field 'client'") as info:
        FaultPlan.calm(client=2)
    assert "clients" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("faults", {}, "a FaultPlan"),
        ("workload", None, "a function"),
        ("model_step", 3, "a function"),
        ("model_init", None, "a function"),
        ("machine_factory", "KVMachine", "a function"),
        ("recover", None, "a function"),
        ("observe", 1, "None or a function"),
        ("partition", "key", "None or a function"),
        ("effects", [Sleep], "None or a mapping {EffectClass: fn(effect, rng)}"),
        ("effects", {int: print}, "None or a mapping {EffectClass: fn(effect, rng)}"),
        ("effects", {Sleep: 0.5}, "None or a mapping {EffectClass: fn(effect, rng)}"),
        ("mutant", "no-such-bug", "None or one of: admit-past-max-inflight"),
        ("mutant", 3, "None or one of: admit-past-max-inflight"),
        ("name", 3, "None or 'module:attribute'"),
        ("name", "no_colon", "None or 'module:attribute'"),
        ("check_budget", 0, "an int >= 1"),
        ("check_budget", -1, "an int >= 1"),
        ("check_budget", "5", "an int >= 1"),
        ("check_budget", True, "an int >= 1"),
    ],
)
def test_sim_spec_is_checked_when_built(field: str, value: object, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        dataclasses.replace(KV_SPEC, **{field: value})
    message = str(info.value)
    assert message.startswith(f"SimSpec.{field} must be {expected}")
    assert message.endswith(f"got {value!r}")


def test_a_sim_spec_with_valid_options_is_unchanged() -> None:
    spec = dataclasses.replace(KV_SPEC, mutant="reply-before-fsync", check_budget=1, name="m:s")
    assert (
        spec.replay_command(3)
        == "corosm sim --machine m:s --seed 3 --mutant reply-before-fsync --replay"
    )
    assert dataclasses.replace(KV_SPEC, effects={Sleep: lambda e, r: None}).effects is not None


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        (5, "seeds must be an iterable of ints, e.g. range(1000), got 5"),
        ("12", "seeds must be an iterable of ints, e.g. range(1000), got '12'"),
        (None, "seeds must be an iterable of ints, e.g. range(1000), got None"),
        (["a"], "seed must be an int, got 'a'"),
        ([1.5], "seed must be an int, got 1.5"),
        ([True], "seed must be an int, got True"),
    ],
)
def test_run_campaign_wants_an_iterable_of_int_seeds(seeds: Any, message: str) -> None:
    with pytest.raises(UsageError) as info:
        run_campaign(KV_SPEC, seeds)
    assert str(info.value) == message


def test_run_campaign_checks_its_spec_and_progress() -> None:
    with pytest.raises(UsageError, match=r"^spec must be a SimSpec, got None$"):
        run_campaign(bad(None), range(1))
    with pytest.raises(UsageError, match=r"^progress must be None or a function, got 3$"):
        run_campaign(KV_SPEC, range(1), bad(3))


def test_run_seed_and_run_with_check_the_seed_spec_and_rng() -> None:
    with pytest.raises(UsageError, match=r"^seed must be an int, got '1'$"):
        run_seed(KV_SPEC, bad("1"))
    with pytest.raises(UsageError, match=r"^spec must be a SimSpec, got None$"):
        run_seed(bad(None), 1)
    with pytest.raises(UsageError, match=r"^rng must be a random.Random, got 3$"):
        run_with(KV_SPEC, bad(3))
    assert run_seed(KV_SPEC, -3).seed == -3  # any int is a seed


def test_simulate_names_an_unknown_option_and_checks_the_rest() -> None:
    parts = (KV_SPEC.machine_factory, KV_SPEC.model_step, KV_SPEC.model_init, KV_SPEC.workload)
    with pytest.raises(UsageError, match=r"^simulate\(\) has no option 'check_budjet'") as info:
        simulate(*parts, seeds=range(1), check_budjet=5)
    assert "check_budget" in str(info.value)
    with pytest.raises(UsageError, match=r"^seeds must be an iterable of ints"):
        simulate(*parts, seeds=bad(3))
    with pytest.raises(UsageError, match=r"^SimSpec.faults must be a FaultPlan, got \{\}$"):
        simulate(*parts, seeds=range(1), faults=bad({}))


def test_world_checks_its_arguments() -> None:
    factory, workload = KV_SPEC.machine_factory, KV_SPEC.workload
    with pytest.raises(UsageError, match=r"^World\(rng=...\) must be a random.Random, got 3$"):
        World(factory, workload, bad(3))
    with pytest.raises(UsageError, match=r"^World\(plan=...\) must be None or a FaultPlan"):
        World(factory, workload, random.Random(0), bad({}))
    with pytest.raises(UsageError, match=r"^World\(machine_factory=...\) must be a function"):
        World(bad(None), workload, random.Random(0))


def test_the_checker_entry_points_check_their_budget_and_model() -> None:
    init, step = KV_SPEC.model_init, KV_SPEC.model_step
    with pytest.raises(UsageError, match=r"^budget must be an int >= 1, got 0$"):
        check_epochs([], init, step, 0)
    with pytest.raises(UsageError, match=r"^epochs must be a sequence of Epoch, got None$"):
        check_epochs(bad(None), init, step)
    with pytest.raises(UsageError, match=r"^budget must be an int >= 1, got 'x'$"):
        end_states([], [init()], step, bad("x"))
    with pytest.raises(UsageError, match=r"^model_step must be a function, got None$"):
        end_states([], [init()], bad(None))


def test_hypothesis_helpers_check_their_arguments_when_called() -> None:
    with pytest.raises(UsageError, match=r"^fault_plans\(max_clients=...\) must be an int >= 1"):
        fault_plans(max_clients=0)
    with pytest.raises(UsageError, match=r"^fault_plans\(faults=...\) must be True or False"):
        fault_plans(faults=bad("yes"))
    with pytest.raises(UsageError, match=r"^spec must be a SimSpec, got None$"):
        schedules(bad(None))
    with pytest.raises(UsageError, match=r"^plan must be None or a FaultPlan, got \{\}$"):
        assert_linearizable(KV_SPEC, random.Random(0), bad({}))


# -- the command line ------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="corosm")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", *argv])
    out, err = io.StringIO(), io.StringIO()
    return cli.run(args, out, err), out.getvalue(), err.getvalue()


@pytest.fixture
def user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path holding broken spec modules, as a user might write them."""
    files = {
        "sim_syntax_error.py": "x = (\n",
        "sim_raises.py": "raise RuntimeError('no database here')\n",
        "sim_factory_raises.py": "def make():\n    raise KeyError('k')\n",
        "sim_bad_spec.py": (
            "import dataclasses\nfrom corosm.testing.sim.kv import KV_SPEC\n"
            "SPEC = dataclasses.replace(KV_SPEC, faults={})\n"
        ),
        "sim_bad_model.py": (
            "import dataclasses\nfrom corosm.testing.sim.kv import KV_SPEC\n"
            "def step(state, input):\n    raise KeyError(input)\n"
            "SPEC = dataclasses.replace(KV_SPEC, model_step=step, name=None)\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in files:
        monkeypatch.delitem(sys.modules, name.removesuffix(".py"), raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("machine", "words"),
    [
        ("..relative:SPEC", ["importing module '..relative'", "raised TypeError"]),
        ("sim_syntax_error:SPEC", ["importing module 'sim_syntax_error'", "SyntaxError"]),
        ("sim_raises:SPEC", ["raised RuntimeError: no database here"]),
        ("sim_factory_raises:make", ["sim_factory_raises:make is callable", "KeyError"]),
        ("corosm.testing.sim.kv:kv_workload", ["missing 1 required positional argument"]),
        ("sim_bad_spec:SPEC", ["SimSpec.faults must be a FaultPlan, got {}"]),
        ("sim_bad_model:SPEC", ["model_step raised KeyError"]),
    ],
)
def test_cli_bad_machine_is_one_line_and_exit_2(
    user_modules: Path, machine: str, words: list[str]
) -> None:
    status, _, err = run_cli("--machine", machine, "--seeds", "2")
    assert status == 2
    message = err.strip()
    assert message.startswith("corosm sim: ") and "\n" not in message, err
    assert "Traceback" not in err
    for word in words:
        assert word in message


def test_cli_bad_flag_values_exit_2_through_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["sim", "--seeds", "x"], ["sim", "--seed", "1.5"], ["sim", "--mutant", "nope"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        assert "corosm sim: error: argument" in capsys.readouterr().err
    assert cli.main(["sim", "--seeds", "-1"]) == 2
    assert "--seeds must be at least 1, not -1" in capsys.readouterr().err
