"""Steps as data: their dict form (journal, --json) is a copy with the same content."""

from __future__ import annotations

from dataclasses import asdict

from inkdeploy.fleet import Fleet, Slot
from inkdeploy.steps import Record, SetWeights, StartSlot, step_from_dict


def test_to_dict_has_what_asdict_has_and_shares_nothing_with_the_step() -> None:
    steps = [
        StartSlot({"app1": "green"}, "2.0.0", {"app1": ["blue", "green"]}),
        SetWeights({"app1:blue": 90, "app1:green": 10}, "canary at 10%", 0.1),
        Record({"app1": {"slot": "green", "version": "2.0.0"}}, "2.0.0", ("worker1",)),
    ]
    for step in steps:
        data = step.to_dict()
        assert data == {"kind": step.kind, **asdict(step)}
        assert step_from_dict(data) == step
    start = steps[0].to_dict()
    start["scrape"]["app1"].append("red")
    record = steps[2].to_dict()
    record["live"]["app1"]["slot"] = "blue"
    assert steps[0].scrape == {"app1": ["blue", "green"]}
    assert steps[2].live == {"app1": {"slot": "green", "version": "2.0.0"}}


def test_scrape_is_worked_out_once_but_each_caller_gets_its_own_copy() -> None:
    slots = {
        "app1:blue": Slot("app1", "blue", "1.0.0", True, True, 100),
        "app1:green": Slot("app1", "green", None, False, False, 0),
    }
    fleet = Fleet("inkapp", ("app1",), {"app1": "10.0.0.1"}, slots)
    first = fleet.scrape()
    first["app1"].append("green")
    assert fleet.scrape() == {"app1": ["blue"]}
