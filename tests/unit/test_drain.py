"""Drained app hosts: what drain/undrain decide, and that rollouts and rollbacks leave a drained
host as it is while a host a rolling batch drained itself gets its traffic back. The commands
themselves run on the lab (tests/stack/test_stack.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from inkdeploy.config import Policy
from inkdeploy.deploy import Session
from inkdeploy.errors import InkdeployError
from inkdeploy.fastpath import RemoteError
from inkdeploy.fleet import Fleet, drain_marks
from inkdeploy.inventory import Environment
from inkdeploy.ops.drain import DrainRefused, drain_weights, undrain_weights
from inkdeploy.plan import make_plan, restore_steps, rollback_plan
from inkdeploy.runner import Runner
from inkdeploy.state.journal import Journal
from inkdeploy.state.lock import FleetLock
from inkdeploy.steps import Install, SetWeights, StartSlot

from .test_plan import fleet_of

DRAINED = {"app3:blue": 0, "app3:green": 0}


def three_hosts_app3_drained(**kw: object) -> Fleet:
    fleet = fleet_of(hosts=3, weights=DRAINED, **kw)  # type: ignore[arg-type]
    return replace(fleet, drain_marks=frozenset({"app3"}))


def weight_steps(steps: list) -> list[SetWeights]:
    return [s for s in steps if isinstance(s, SetWeights)]


def test_a_host_is_drained_when_an_operator_drained_it_and_it_has_no_weight() -> None:
    assert three_hosts_app3_drained().drained == ("app3",)
    # at weight 0 without a drain in the history (a rolling batch, a failed rollback): not
    # drained, so a restore gives it traffic back
    assert fleet_of(hosts=3, weights=DRAINED).drained == ()
    # drained once, undrained since: the weights say it serves
    assert replace(fleet_of(hosts=3), drain_marks=frozenset({"app3"})).drained == ()
    nothing = {f"app{i}:{s}": 0 for i in (1, 2) for s in ("blue", "green")}
    every = replace(fleet_of(hosts=2, weights=nothing), drain_marks=frozenset({"app1", "app2"}))
    assert every.drained == ()


def test_the_last_drain_or_undrain_in_the_history_counts() -> None:
    rows = [
        {"kind": "drain", "host": "app1", "result": "succeeded"},
        {"kind": "drain", "host": "app2", "result": "succeeded"},
        {"kind": "rollout", "version": "2.0.0", "result": "succeeded"},
        {"kind": "undrain", "host": "app2", "result": "succeeded"},
        {"kind": "drain", "host": "app3", "result": "failed"},
    ]
    assert drain_marks(rows) == {"app1"}


@pytest.mark.parametrize("strategy", ["canary", "rolling", "blue-green"])
def test_a_rollout_leaves_a_drained_host_out(strategy: str) -> None:
    fleet = three_hosts_app3_drained()
    plan = make_plan(fleet, Policy(), "2.0.0", strategy, ("worker1",))  # type: ignore[arg-type]
    for step in plan.steps:
        if isinstance(step, SetWeights):
            assert not any(key.startswith("app3:") for key in step.weights), step
        if isinstance(step, Install | StartSlot):
            hosts = step.hosts if isinstance(step, Install) else tuple(step.slots)
            assert "app3" not in hosts, step
    assert "app3" not in plan.base_weights
    assert any("app3" in note and "undrain" in note for note in plan.notes)
    # the emergency restore puts back the whole picture, the drained host at 0 included
    assert {k: plan.weights[k] for k in DRAINED} == DRAINED


def test_a_rollback_leaves_a_drained_host_out() -> None:
    fleet = three_hosts_app3_drained(live="green", idle_version="1.0.0", idle_active=True)
    # green live with 1.0.0 means: rolled forward to 1.0.0 earlier; go back to the idle slot
    fleet = replace(
        fleet,
        slots={
            k: replace(v, version="2.0.0") if v.slot == "green" else v
            for k, v in fleet.slots.items()
        },
    )
    plan = rollback_plan(fleet, "1.0.0", "2.0.0", ("worker1",))
    (switch,) = weight_steps(plan.steps)
    assert switch.weights == {
        "app1:blue": 100, "app1:green": 0, "app2:blue": 100, "app2:green": 0,
    }  # fmt: skip
    assert plan.notes and "app3" in plan.notes[0]


def test_a_host_the_rolling_batch_drained_gets_traffic_back_in_the_automatic_rollback() -> None:
    """Rolling drains a batch itself; the rollout's base weights name it, so a restore after
    a failure in that batch brings it back (only hosts absent from them are left out)."""
    fleet = fleet_of(hosts=3, weights={"app1:blue": 0, "app1:green": 0})
    base = {"app1": 100, "app2": 100, "app3": 100}
    steps = restore_steps(fleet, "1.0.0", base, ("worker1",))
    (switch,) = weight_steps(steps)
    assert switch.weights["app1:blue"] == 100


def test_drain_refuses_to_take_the_last_serving_host_out() -> None:
    fleet = fleet_of(hosts=2, weights={"app2:blue": 0, "app2:green": 0})
    fleet = replace(fleet, drain_marks=frozenset({"app2"}))
    with pytest.raises(DrainRefused, match="No other app host serves"):
        drain_weights(fleet, "app1")
    assert drain_weights(fleet, "app2") == {}  # drained already: nothing to do


def test_drain_names_the_hosts_when_the_host_is_unknown() -> None:
    with pytest.raises(DrainRefused, match=r"app9 is not an app host .*app1, app2"):
        drain_weights(fleet_of(hosts=2), "app9")


def test_drain_sets_both_slots_to_zero() -> None:
    assert drain_weights(fleet_of(hosts=2), "app2") == {"app2:blue": 0, "app2:green": 0}


def test_undrain_gives_the_healthy_slot_of_the_live_release_its_weight_back() -> None:
    assert undrain_weights(three_hosts_app3_drained(), "app3") == {
        "app3:blue": 100,
        "app3:green": 0,
    }
    assert undrain_weights(three_hosts_app3_drained(), "app1") == {}  # not drained


def test_undrain_refuses_a_host_that_runs_another_release() -> None:
    fleet = three_hosts_app3_drained()
    fleet = replace(
        fleet,
        slots={
            k: replace(v, version="0.9.0") if k == "app3:blue" else v
            for k, v in fleet.slots.items()
        },
    )
    with pytest.raises(
        DrainRefused, match=r"app3 runs 0\.9\.0 in blue but the fleet serves 1\.0\.0"
    ):
        undrain_weights(fleet, "app3")


def test_undrain_refuses_a_host_that_does_not_answer() -> None:
    fleet = replace(three_hosts_app3_drained(), unreachable=("app3",))
    with pytest.raises(DrainRefused, match="app3 does not answer"):
        undrain_weights(fleet, "app3")


# -- reading a fleet with a host down (Session.read_fleet over the fast path) -------------


def upstreams_conf(weights: dict[str, int]) -> str:
    full = {f"inkapp:{k}": v for k, v in weights.items()}
    return f"# inkdeploy-weights: {json.dumps(full, sort_keys=True)}\n"


class StubFast:
    """The fast path's answers: app1 serves, app2 is down (no SSH answer)."""

    def __init__(self, weights: dict[str, int], history: list[dict[str, Any]]) -> None:
        self.weights = weights
        self.history = history
        self.slot_reads: list[tuple[float, tuple[str, ...] | None]] = []

    def upstreams(
        self, tolerate_unreachable: bool = False, none_may_answer: bool = False, timeout_s=4.0
    ) -> dict[str, str]:
        return {"lb1": upstreams_conf(self.weights)}

    def serves(self, hosts: tuple[str, ...]) -> bool:
        return True

    def lock_each(self, hosts: tuple[str, ...], args: dict[str, Any], timeout_s: float) -> dict:
        return {h: {"holder": {}, "history": self.history} for h in hosts}

    def slots(self, timeout_s: float = 15, hosts: tuple[str, ...] | None = None) -> dict:
        self.slot_reads.append((timeout_s, hosts))
        live = {"version": "1.0.0", "active": True, "healthy": True}
        answers = {
            "app1": {"slots": {"blue": live, "green": {}}, "releases": ["1.0.0"]},
            "app2": RemoteError("app2", "did not answer over SSH (timeout)", unreachable=True),
        }
        return {h: answers[h] for h in (hosts or answers)}


def session_with(fast: StubFast, tmp_path: Path) -> Session:
    env = Environment(
        tmp_path / "hosts.yml", "test", {"app": ["app1", "app2"], "lb": ["lb1"]}, {}, Policy()
    )
    runner = Runner(env.inventory)
    lock = FleetLock(runner, "inkapp", fast=fast, hosts=("lb1",))  # type: ignore[arg-type]
    return Session(env, runner, Journal(tmp_path), lock, fast=fast)  # type: ignore[arg-type]


SERVING = {"app1:blue": 100, "app1:green": 0, "app2:blue": 100, "app2:green": 0}
APP2_DRAINED = {**SERVING, "app2:blue": 0}


def test_a_silent_host_that_still_has_weight_stops_a_rollout_with_what_to_do(
    tmp_path: Path,
) -> None:
    fast = StubFast(SERVING, [])
    with pytest.raises(InkdeployError, match="inkdeploy drain app2"):
        session_with(fast, tmp_path).read_fleet()
    # asked once more, more patiently, before giving up
    assert [hosts for _, hosts in fast.slot_reads] == [None, ("app2",)]
    assert fast.slot_reads[1][0] > fast.slot_reads[0][0]


def test_a_silent_host_drained_by_an_operator_is_left_out(tmp_path: Path) -> None:
    drained = [{"kind": "drain", "host": "app2", "result": "succeeded"}]
    fleet = session_with(StubFast(APP2_DRAINED, drained), tmp_path).read_fleet()
    assert fleet.unreachable == ("app2",) and fleet.drained == ("app2",)
    plan = make_plan(fleet, Policy(), "2.0.0", "blue-green", ())
    assert all("app2" not in getattr(s, "weights", {}) for s in plan.steps)


def test_a_silent_host_at_weight_0_without_a_drain_is_not_taken_for_drained(
    tmp_path: Path,
) -> None:
    with pytest.raises(InkdeployError, match="inkdeploy drain app2"):
        session_with(StubFast(APP2_DRAINED, []), tmp_path).read_fleet()


def test_status_shows_a_silent_host_without_asking_twice(tmp_path: Path) -> None:
    fast = StubFast(SERVING, [])
    fleet = session_with(fast, tmp_path).read_fleet(tolerate_unreachable=True)
    assert fleet.unreachable == ("app2",)
    assert len(fast.slot_reads) == 1


class DeadWorkerFast(StubFast):
    """Both app hosts serve; worker1 (a worker host only) does not answer."""

    def slots(self, timeout_s: float = 15, hosts: tuple[str, ...] | None = None) -> dict:
        self.slot_reads.append((timeout_s, hosts))
        live = {"version": "1.0.0", "active": True, "healthy": True}
        app = {"slots": {"blue": live, "green": {}}, "releases": ["1.0.0"]}
        dead = RemoteError("worker1", "did not answer over SSH (timeout)", unreachable=True)
        answers = {"app1": app, "app2": app, "worker1": dead}
        return {h: answers[h] for h in (hosts or answers)}


def test_a_dead_worker_host_stops_a_rollout_but_not_a_rollback(tmp_path: Path) -> None:
    """A rollout would restart workers it cannot reach; a rollback moves traffic first and
    leaves that host's workers as they are (its plan says so), without a patient second ask."""
    env = Environment(tmp_path / "hosts.yml", "test",
                      {"app": ["app1", "app2"], "lb": ["lb1"], "worker": ["worker1"]}, {},
                      Policy())  # fmt: skip
    fast = DeadWorkerFast(SERVING, [])

    def session() -> Session:
        runner = Runner(env.inventory)
        lock = FleetLock(runner, "inkapp", fast=fast, hosts=("lb1",))  # type: ignore[arg-type]
        return Session(env, runner, Journal(tmp_path), lock, fast=fast)  # type: ignore[arg-type]

    with pytest.raises(InkdeployError, match="worker1: did not answer over SSH"):
        session().read_fleet()
    fast.slot_reads.clear()
    fleet = session().read_fleet(lbs_may_be_down=True)
    assert fleet.workers_silent == ("worker1",) and fleet.unreachable == ()
    assert len(fast.slot_reads) == 1
