"""`inkdeploy plan` at 1,000 app hosts: the inventory bench/plan_scale.py generates, read the way
the CLI reads it, plans what it planned before the speed-ups (a golden plan for 5 hosts, written
by the code before them), rolling batches of the policy's size, and planning in well under 1 s."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from inkdeploy.config import Policy
from inkdeploy.errors import PlanError
from inkdeploy.fleet import Fleet, build_fleet
from inkdeploy.inventory import Environment, load_environment, parse_policy
from inkdeploy.plan import make_plan
from inkdeploy.steps import HttpCheck, SetWeights, StartSlot
from inkdeploy.strategies.common import weights_for

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "data" / "plan_scale_5_hosts.json"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plan_scale", REPO / "bench" / "plan_scale.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fleet_from(env: Environment, facts: dict[str, Any]) -> Fleet:
    addresses = {h: env.address(h) for h in env.app_hosts}
    return build_fleet(env.policy.app, env.app_hosts, addresses, facts["slots"], facts["confs"],
                       env.worker_hosts)  # fmt: skip


def generated(tmp_path: Path, n: int) -> tuple[Path, dict[str, Any]]:
    plan_scale = bench()
    return plan_scale.write_inventory(tmp_path, n), plan_scale.facts(n)


def memory_fleet(n: int) -> Fleet:
    """N app hosts on 1.0.0 in blue, all traffic there, as the bench's facts say."""
    data = bench().facts(n)
    hosts = [f"app{i:04d}" for i in range(1, n + 1)]
    workers = [h for h in data["slots"] if h.startswith("worker")]
    return build_fleet("inkapp", hosts, {h: h for h in hosts}, data["slots"], data["confs"],
                       workers)  # fmt: skip


def test_a_generated_inventory_plans_what_it_planned_before(tmp_path: Path) -> None:
    inventory, facts = generated(tmp_path, 5)
    env = load_environment(inventory)
    fleet = fleet_from(env, facts)
    raw = env.hostvars[env.app_hosts[0]]["inkdeploy_rollout"]
    golden = json.loads(GOLDEN.read_text())
    for name, overrides in (("rolling", None), ("canary", None), ("blue-green", None),
                            ("rolling 40%", {"rolling": {"max_unavailable": "40%"}})):  # fmt: skip
        policy = parse_policy(raw, overrides)
        plan = make_plan(fleet, policy, "2.0.0", name.split()[0],  # type: ignore[arg-type]
                         tuple(env.worker_hosts), rollout="golden")  # fmt: skip
        assert json.loads(json.dumps(plan.to_dict())) == golden[name], name


def test_a_generated_1000_host_inventory_reads_as_ansible_inventory_lists_it(
    tmp_path: Path,
) -> None:
    """load_environment reads it with inventory_list.py (one-line JSON): the same groups and
    variables as `ansible-inventory --list`, the lab's group_vars on every host."""
    inventory, _ = generated(tmp_path, 1000)
    stock_cli = str(Path(sys.executable).parent / "ansible-inventory")
    stock = json.loads(
        subprocess.run(
            [stock_cli, "-i", str(inventory), "--list"],
            capture_output=True, text=True, cwd=REPO, check=True, timeout=300,
            env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        ).stdout
    )  # fmt: skip
    env = load_environment(inventory)
    assert env.hostvars == stock["_meta"]["hostvars"]
    assert env.groups["app"] == stock["app"]["hosts"] == [f"app{i:04d}" for i in range(1, 1001)]
    assert env.groups["lb"] == ["lb1", "lb2"] and len(env.worker_hosts) == 50
    assert env.address("app1000") == stock["_meta"]["hostvars"]["app1000"]["ansible_host"]
    assert env.policy.strategy == "canary" and env.policy.canary.steps == [10, 50, 100]


@pytest.mark.parametrize(
    ("max_unavailable", "sizes"),
    [
        (1, [1] * 1000),
        ("10%", [100] * 10),
        ("25%", [250] * 4),
        (3, [3] * 333 + [1]),
        ("33%", [330, 330, 330, 10]),
    ],
)
def test_rolling_1000_hosts_drains_batches_of_the_policy_size(
    max_unavailable: int | str, sizes: list[int]
) -> None:
    fleet = memory_fleet(1000)
    policy = Policy.model_validate({"rolling": {"max_unavailable": max_unavailable}})
    plan = make_plan(fleet, policy, "2.0.0", "rolling", ("worker1",), rollout="r")
    starts = [s for s in plan.steps if isinstance(s, StartSlot)]
    assert [len(s.slots) for s in starts] == sizes
    assert [h for s in starts for h in s.slots] == list(fleet.hosts)  # each once, in order
    drains = [s for s in plan.steps if isinstance(s, SetWeights)]
    assert len(drains) == len(sizes) + 1
    live = dict.fromkeys(fleet.hosts, "blue")
    done = 0
    for index, (drain, start) in enumerate(zip(drains, starts, strict=False)):
        if index % 97 == 0 or index == len(starts) - 1:
            # the weights as the strategy worked them out before: the batch's base weight at 0
            before = weights_for(live, {h: 0 if h in start.slots else 100 for h in fleet.hosts})
            assert drain.weights == before, index
        assert len(drain.weights) == 2000
        assert [k for k, w in drain.weights.items() if w == 0 and k.endswith(":blue")] == [
            f"{h}:blue" for h in start.slots
        ]
        assert drain.new_share == done / 1000
        assert drain.label.startswith(f"drain batch {index + 1}/{len(sizes)} ")
        done += len(start.slots)
        gate = plan.steps[plan.steps.index(start) + 1]
        assert isinstance(gate, HttpCheck) and gate.slots == start.slots
    assert drains[-1].weights == weights_for(live, dict.fromkeys(fleet.hosts, 100))
    assert drains[-1].new_share == 1.0


def test_rolling_1000_hosts_refuses_batches_that_leave_too_few_serving() -> None:
    policy = Policy.model_validate({"rolling": {"max_unavailable": "60%", "min_healthy": "50%"}})
    with pytest.raises(
        PlanError, match=r"1000 app host\(s\) 600 at a time would leave 400 serving"
    ):
        make_plan(memory_fleet(1000), policy, "2.0.0", "rolling", (), rollout="r")


def test_the_plan_dict_is_what_asdict_gives_and_shares_nothing_with_the_steps() -> None:
    plan = make_plan(memory_fleet(20), Policy(), "2.0.0", "rolling", ("worker1",), rollout="r")
    data = plan.to_dict()
    assert data["steps"] == [{"kind": s.kind, **asdict(s)} for s in plan.steps]
    starts = [(s, d) for s, d in zip(plan.steps, data["steps"], strict=True)
              if isinstance(s, StartSlot)]  # fmt: skip
    # every batch holds the same scrape targets: one copy, shared as the steps share theirs
    assert starts[0][0].scrape is starts[1][0].scrape
    assert starts[0][1]["scrape"] is starts[1][1]["scrape"]
    assert starts[0][1]["scrape"] is not starts[0][0].scrape
    starts[0][1]["scrape"]["app0001"].append("green")
    data["steps"][1]["weights"]["app0001:blue"] = 7
    assert starts[0][0].scrape["app0001"] == ["blue"]
    first = plan.steps[1]
    assert isinstance(first, SetWeights) and first.weights["app0001:blue"] == 0  # batch 1


@pytest.mark.parametrize("strategy", ["rolling", "canary", "blue-green"])
def test_planning_1000_hosts_takes_well_under_a_second(strategy: str) -> None:
    """make_plan with the inventory read and the fleet built; rolling one host at a time (the
    lab's policy) is the largest plan: 1,000 batches of 2,000 weights. CPU seconds, so a busy
    machine does not make it flaky; it took ~0.1 s on the 2-core lab machine."""
    fleet = memory_fleet(1000)
    began = time.process_time()
    plan = make_plan(fleet, Policy(), "2.0.0", strategy, ("worker1",), rollout="r")  # type: ignore[arg-type]
    seconds = time.process_time() - began
    assert len(plan.steps[0].hosts) == 1001  # the install: every app host and worker1
    assert seconds < 1.0, f"{strategy} plan for 1,000 hosts took {seconds:.2f} s of CPU"
