"""The strategies and the rollback planner, on fleets built in memory: what `inkdeploy plan`
prints is what the rollout does, so these pin the order of steps, the weights and the checks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from inkdeploy.config import Policy
from inkdeploy.fleet import Fleet, Slot, build_fleet, parse_weights
from inkdeploy.plan import PlanError, emergency_weights, make_plan, restore_steps
from inkdeploy.steps import (
    Analysis,
    Celery,
    HttpCheck,
    Install,
    Record,
    SetWeights,
    StartSlot,
    StopSlot,
    step_from_dict,
)
from inkdeploy.strategies.common import split_weights


def fleet_of(
    hosts: int = 2,
    live: str = "blue",
    version: str = "1.0.0",
    idle_version: str | None = None,
    idle_active: bool = False,
    weights: dict[str, int] | None = None,
) -> Fleet:
    names = [f"app{i}" for i in range(1, hosts + 1)]
    slots = {}
    for host in names:
        for slot in ("blue", "green"):
            is_live = slot == live
            key = f"{host}:{slot}"
            weight = (weights or {}).get(key, 100 if is_live else 0)
            slots[key] = Slot(
                host, slot,
                version if is_live else idle_version,
                active=is_live or idle_active,
                healthy=is_live or idle_active,
                weight=weight,
            )  # fmt: skip
    releases = {h: tuple(v for v in {version, idle_version} if v) for h in names}
    return Fleet("inkapp", tuple(names), {h: f"10.0.0.{i}" for i, h in enumerate(names)}, slots,
                 releases, {"worker1": version}, ("lb1",))  # fmt: skip


def kinds(steps: list) -> list[str]:
    return [s.kind for s in steps]


def test_blue_green_installs_starts_idle_gates_switches_bakes_then_stops_old() -> None:
    plan = make_plan(fleet_of(), Policy(), "2.0.0", "blue-green", ("worker1",))
    assert kinds(plan.steps) == [
        "install", "start_slot", "http_check", "set_weights", "analysis", "record", "celery",
        "stop_slot",
    ]  # fmt: skip
    install, start, _, switch, bake, record, celery, stop = plan.steps
    # what is live is recorded on the hosts once the bake passed (site.yml follows it)
    assert isinstance(record, Record) and record.workers == ("worker1",)
    assert record.live == {h: {"slot": "green", "version": "2.0.0"} for h in ("app1", "app2")}
    # the worker hosts get the release before any traffic moves; the Celery step only switches
    assert isinstance(install, Install) and install.migrate
    assert install.hosts == ("app1", "app2", "worker1")
    assert isinstance(start, StartSlot) and start.slots == {"app1": "green", "app2": "green"}
    assert start.scrape == {"app1": ["blue", "green"], "app2": ["blue", "green"]}
    assert isinstance(switch, SetWeights)
    assert switch.weights == {"app1:blue": 0, "app1:green": 100, "app2:blue": 0, "app2:green": 100}
    assert isinstance(bake, Analysis) and not bake.judge
    assert isinstance(celery, Celery) and celery.version == "2.0.0"
    assert isinstance(stop, StopSlot) and stop.slots == {"app1": "blue", "app2": "blue"}
    assert stop.after_s == 900  # kept for an instant rollback, then stopped by a timer
    assert stop.scrape == {"app1": ["green"], "app2": ["green"]}
    assert plan.previous == "1.0.0"


def test_blue_green_keeps_old_slots_when_asked() -> None:
    policy = Policy.model_validate({"blue_green": {"stop_old": False}})
    plan = make_plan(fleet_of(), policy, "2.0.0", "blue-green", ())
    assert "stop_slot" not in kinds(plan.steps) and "celery" not in kinds(plan.steps)


def test_canary_weights_give_the_exact_share_and_judge_runs_below_100() -> None:
    fleet = fleet_of(hosts=3)
    plan = make_plan(fleet, Policy(), "2.0.0", "canary", ())
    weights = [s for s in plan.steps if isinstance(s, SetWeights)]
    assert [w.label for w in weights] == ["canary at 10%", "canary at 50%", "promote: 100%"]
    for step, share in zip(weights[:2], (0.10, 0.50), strict=True):
        w = step.weights
        new = w["app1:green"]
        total = sum(w.values())
        assert new / total == pytest.approx(share)
        assert all(0 <= v <= 1000 for v in w.values())
        # the baseline keeps serving on every host, including the canary host's old slot
        assert w["app1:blue"] > 0 and w["app2:blue"] > 0 and w["app3:blue"] > 0
    analyses = [s for s in plan.steps if isinstance(s, Analysis)]
    assert [a.judge for a in analyses] == [True, True, False]
    assert analyses[0].baseline == "1.0.0"
    # the other hosts get the release before all traffic moves
    starts = [s for s in plan.steps if isinstance(s, StartSlot)]
    assert starts[0].slots == {"app1": "green"}
    assert starts[1].slots == {"app2": "green", "app3": "green"}
    promote = plan.steps.index(weights[2])
    assert plan.steps.index(starts[1]) < promote


@pytest.mark.parametrize(("old", "new", "percent"), [(2, 1, 10), (20, 1, 99), (10, 10, 1)])
def test_split_weights_stay_within_nginx_limits(old: int, new: int, percent: int) -> None:
    fleet = fleet_of(hosts=max(old, new))
    w = split_weights(fleet, {h: "blue" for h in fleet.hosts[:old]},
                      {h: "green" for h in fleet.hosts[:new]}, percent)  # fmt: skip
    share = sum(v for k, v in w.items() if k.endswith("green")) / sum(w.values())
    assert share == pytest.approx(percent / 100, abs=0.01)
    assert max(w.values()) <= 1000 and min(v for v in w.values() if v) >= 1


def test_rolling_drains_one_batch_at_a_time_and_merges_return_with_next_drain() -> None:
    plan = make_plan(fleet_of(hosts=3), Policy(), "2.0.0", "rolling", ())
    weights = [s.weights for s in plan.steps if isinstance(s, SetWeights)]
    # 3 batches: drain 1; return 1 + drain 2; return 2 + drain 3; return 3 = 4 reloads
    assert len(weights) == 4
    assert weights[0]["app1:blue"] == 0 and weights[0]["app2:blue"] == 100
    assert weights[1]["app1:blue"] == 100 and weights[1]["app2:blue"] == 0
    assert weights[3] == {f"app{i}:{s}": (100 if s == "blue" else 0)
                          for i in (1, 2, 3) for s in ("blue", "green")}  # fmt: skip
    starts = [s for s in plan.steps if isinstance(s, StartSlot)]
    assert [s.slots for s in starts] == [{"app1": "blue"}, {"app2": "blue"}, {"app3": "blue"}]
    # never more than one host out of service at once
    for w in weights:
        assert sum(1 for i in (1, 2, 3) if w[f"app{i}:blue"] == 0) <= 1
    assert all(isinstance(plan.steps[i + 1], HttpCheck)
               for i, s in enumerate(plan.steps) if isinstance(s, StartSlot))  # fmt: skip


def test_rolling_refuses_to_go_below_min_healthy() -> None:
    policy = Policy.model_validate({"rolling": {"max_unavailable": "50%", "min_healthy": 2}})
    with pytest.raises(PlanError, match=r"below rolling\.min_healthy = 2"):
        make_plan(fleet_of(hosts=2), policy, "2.0.0", "rolling", ())


def test_refuses_a_split_fleet_and_a_version_already_live() -> None:
    split = fleet_of(idle_version="2.0.0", idle_active=True,
                     weights={"app1:green": 50, "app2:green": 0})  # fmt: skip
    with pytest.raises(PlanError, match="split between releases"):
        make_plan(split, Policy(), "3.0.0", "canary", ())
    with pytest.raises(PlanError, match="already live"):
        make_plan(fleet_of(), Policy(), "1.0.0", "canary", ())


def test_refuses_an_unhealthy_live_slot() -> None:
    fleet = fleet_of()
    slots = dict(fleet.slots)
    s = slots["app2:blue"]
    slots["app2:blue"] = Slot(s.host, s.slot, s.version, True, False, s.weight)
    bad = Fleet(fleet.app, fleet.hosts, fleet.addresses, slots, fleet.releases)
    with pytest.raises(PlanError, match=r"not healthy \(app2:blue\)"):
        make_plan(bad, Policy(), "2.0.0", "canary", ())


def test_restore_after_blue_green_is_only_a_weight_switch_when_old_slots_run() -> None:
    # after blue-green with the old slots kept: green 2.0.0 live, blue 1.0.0 still running
    fleet = fleet_of(live="green", version="2.0.0", idle_version="1.0.0", idle_active=True)
    steps = restore_steps(fleet, "1.0.0", stop_others=False)
    # the old slots' delayed stop is cancelled, then one reload
    assert kinds(steps) == ["keep_slot", "set_weights", "record"]
    assert steps[0].slots == {"app1": "blue", "app2": "blue"}
    assert steps[1].weights["app1:blue"] == 100 and steps[1].weights["app1:green"] == 0


def test_restore_starts_a_stopped_old_slot_first_and_stops_the_abandoned_one() -> None:
    fleet = fleet_of(live="green", version="2.0.0", idle_version="1.0.0", idle_active=False)
    steps = restore_steps(fleet, "1.0.0", workers=("worker1",))
    assert kinds(steps) == [
        "start_slot", "http_check", "set_weights", "record", "celery", "stop_slot",
    ]  # fmt: skip
    assert steps[0].slots == {"app1": "blue", "app2": "blue"}
    assert steps[5].slots == {"app1": "green", "app2": "green"}


def test_restore_checks_a_running_old_slot_whose_probe_failed_instead_of_restarting_it() -> None:
    """A dead database host first in the DSN makes a fresh connection wait for its connect
    timeout, so the idle old slot's health probe fails while it runs fine: the rollback waits
    for its health (the HTTP check retries) and switches, with no 20 s restart of a good slot."""
    fleet = fleet_of(live="green", version="2.0.0", idle_version="1.0.0", idle_active=True)
    app2 = fleet.slots["app2:blue"]
    fleet = replace(fleet, slots={**fleet.slots, "app2:blue": replace(app2, healthy=False)})
    steps = restore_steps(fleet, "1.0.0", stop_others=False)
    assert kinds(steps) == ["keep_slot", "http_check", "set_weights", "record"]
    assert steps[0].slots == {"app1": "blue", "app2": "blue"}
    assert steps[1].slots == {"app2": "blue"} and steps[1].version == "1.0.0"


def test_restore_refuses_a_release_that_is_not_installed() -> None:
    with pytest.raises(PlanError, match="no longer installed on app1, app2"):
        restore_steps(fleet_of(), "0.9.0")


def test_steps_survive_the_journal_round_trip() -> None:
    plan = make_plan(fleet_of(hosts=3), Policy(), "2.0.0", "canary", ("worker1",))
    assert [step_from_dict(s.to_dict()) for s in plan.steps] == plan.steps


def test_fleet_from_facts_reads_the_weights_line_nginx_lb_writes() -> None:
    conf = (
        '# inkdeploy-weights: {"inkapp:app1:blue": 90, "inkapp:app1:green": 10, "x:app1:blue": 1}\n'
    )
    assert parse_weights(conf, "inkapp") == {"app1:blue": 90, "app1:green": 10}
    facts = {"app1": {"slots": {"blue": {"version": "1.0.0", "active": True, "healthy": True},
                                "green": {"version": "2.0.0", "active": True, "healthy": True}},
                      "releases": ["1.0.0", "2.0.0"]}}  # fmt: skip
    fleet = build_fleet("inkapp", ["app1"], {"app1": "10.0.0.1"}, facts, {"lb1": conf})
    assert fleet.live_slot("app1") == "blue"
    assert fleet.live_versions == {"1.0.0": 90, "2.0.0": 10}


def test_policy_rejects_bad_input_with_the_field_named() -> None:
    from inkdeploy.inventory import ConfigError, parse_policy

    with pytest.raises(ConfigError, match=r"inkdeploy_rollout\.canary\.steps"):
        parse_policy({"canary": {"steps": [10, 50]}})
    with pytest.raises(ConfigError, match=r"inkdeploy_rollout\.strategy"):
        parse_policy({"strategy": "yolo"})


@pytest.mark.parametrize("env", ["lab", "production"])
def test_the_committed_inventories_rollout_settings_are_valid(env: str) -> None:
    import yaml

    from inkdeploy.inventory import parse_policy
    from inkdeploy.runner import PROJECT

    group_vars = PROJECT / f"inventories/{env}/group_vars"
    # production keeps group all in a directory (main.yml beside the vault file)
    path = (
        group_vars / "all.yml" if (group_vars / "all.yml").exists() else group_vars / "all/main.yml"
    )
    data = yaml.safe_load(path.read_text())
    policy = parse_policy(data["inkdeploy_rollout"])
    assert policy.canary.steps[-1] == 100


def test_a_failed_canary_gets_its_old_weights_back_in_one_reload_before_anything_else() -> None:
    fleet = fleet_of()
    plan = make_plan(fleet, Policy(), "2.0.0", "canary", ())
    failed_at = next(i for i, s in enumerate(plan.steps) if isinstance(s, Analysis))
    step = emergency_weights(plan, failed_at)
    assert step is not None and step.weights == fleet.weights
    # once old slots were stopped, or when live slots were replaced (rolling), it must look first
    assert emergency_weights(plan, len(plan.steps) - 1) is None
    rolling = make_plan(fleet_of(hosts=3), Policy(), "2.0.0", "rolling", ())
    assert emergency_weights(rolling, 3) is None
