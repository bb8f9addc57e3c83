"""The executor without a fleet: a recording runner stands in for ansible-runner, the journal and
the control file are real files. What is checked: steps run in order and are journalled so a
killed rollout can be read back; the first failure stops the walk; hooks get the INKDEPLOY_*
variables; pause, promote and abort from another process are obeyed."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from inkdeploy.config import Policy
from inkdeploy.events import Events, JsonLinesFile
from inkdeploy.execute import Context, Executor
from inkdeploy.plan import Plan
from inkdeploy.runner import PlaybookResult, TaskFailure
from inkdeploy.state.journal import Journal
from inkdeploy.steps import (
    Analysis,
    Approval,
    Hook,
    HttpCheck,
    Install,
    SetWeights,
    StartSlot,
    Step,
)


class RecordingRunner:
    """Records each playbook run; fails the one named in fail_on."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_on = fail_on

    def run(self, playbook: str, extravars: dict[str, Any] | None = None, **_: Any) -> Any:
        self.calls.append((playbook, extravars or {}))
        result = PlaybookResult(playbook, rc=0, status="successful", seconds=0.01)
        if playbook == self.fail_on:
            result.rc = 2
            result.failures.append(TaskFailure("app1", "Start 2.0.0", "unit failed to start"))
        return result


def make(
    tmp_path: Path, steps: list[Step], runner: RecordingRunner, policy: Policy | None = None
) -> tuple[Executor, Journal, Context]:
    journal = Journal(tmp_path / ".inkdeploy")
    events = Events("r1", [JsonLinesFile(journal.path("r1"))])
    plan = Plan("r1", "rollout", "canary", "2.0.0", "1.0.0", steps)
    events.emit("rollout_started", pid=12345678, **plan.to_dict())
    ctx = Context(
        runner=runner,  # type: ignore[arg-type]
        policy=policy or Policy(),
        events=events,
        journal=journal,
        addresses={"app1": "127.0.0.1"},
        slot_ports={"app1": {"blue": 8001, "green": 8002}},
        environment="unit",
        artifact=tmp_path / "a.tar.gz",
        sleep=lambda s: time.sleep(min(s, 0.01)),
    )
    return Executor(ctx, plan), journal, ctx


INSTALL = Install(("app1",), "2.0.0", True)
START = StartSlot({"app1": "green"}, "2.0.0", {"app1": ["blue", "green"]})
TEN = SetWeights({"app1:blue": 90, "app1:green": 10}, "canary at 10%", 0.1)
ALL = SetWeights({"app1:blue": 0, "app1:green": 100}, "promote: 100%", 1.0)


def test_steps_run_in_order_and_the_journal_reads_back(tmp_path: Path) -> None:
    runner = RecordingRunner()
    executor, journal, _ = make(tmp_path, [INSTALL, START, ALL], runner)
    outcome = executor.run()
    assert outcome.ok
    assert [c[0] for c in runner.calls] == [
        "rollout/install.yml", "rollout/start-slot.yml", "lb-weights.yml",
    ]  # fmt: skip
    install_vars = runner.calls[0][1]
    assert install_vars["rollout_migrate"] is True and install_vars["app_follow_live"] is False
    assert runner.calls[2][1] == {"nginx_lb_slot_weights": ALL.weights}
    view = journal.read("r1")
    assert view.steps == [INSTALL, START, ALL]
    assert view.done == {0, 1, 2} and view.next_step == 3
    # the process in the journal does not exist: it reads as interrupted, not running
    assert view.interrupted and not view.active


def test_the_first_failure_stops_the_walk_and_names_host_and_task(tmp_path: Path) -> None:
    runner = RecordingRunner(fail_on="rollout/start-slot.yml")
    executor, journal, _ = make(tmp_path, [INSTALL, START, ALL], runner)
    outcome = executor.run()
    assert not outcome.ok and outcome.failed_step == 1
    assert (
        outcome.message
        == "rollout/start-slot.yml: Start 2.0.0 failed on app1: unit failed to start"
    )
    assert "lb-weights.yml" not in [c[0] for c in runner.calls]
    view = journal.read("r1")
    assert view.done == {0} and view.failed == {1: outcome.message}


def test_a_failed_http_gate_says_what_it_saw(tmp_path: Path) -> None:
    policy = Policy.model_validate({"http_gate": {"retries": 2, "interval_s": 0.05}})
    executor, journal, ctx = make(
        tmp_path, [HttpCheck({"app1": "green"}, "2.0.0"), ALL], RecordingRunner(), policy
    )
    ctx.addresses["app1"] = "127.0.0.1"  # nothing listens on the green port here
    outcome = executor.run()
    assert not outcome.ok
    assert outcome.message.startswith(
        'Gate "app healthy" failed: GET http://127.0.0.1:8002/healthz'
    )
    assert "app1 green (2.0.0)" in outcome.message and "2 tries" in outcome.message
    lines = [json.loads(x) for x in journal.path("r1").read_text().splitlines()]
    gate = next(x["data"] for x in lines if x["type"] == "gate")
    assert gate["outcome"] == "fail" and len(gate["evidence"]["attempts"]) == 2


def test_hooks_get_the_rollout_in_their_environment_and_a_failing_one_stops(
    tmp_path: Path,
) -> None:
    out = tmp_path / "hook.env"
    hook = Hook("pre", (f"env | grep ^INKDEPLOY_ | sort > {out}",))
    failing = Hook("pre", ("echo 'database is read-only' >&2; exit 3",))
    executor, _, _ = make(tmp_path, [hook, failing, INSTALL], RecordingRunner())
    outcome = executor.run()
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert env["INKDEPLOY_VERSION"] == "2.0.0" and env["INKDEPLOY_PREVIOUS_VERSION"] == "1.0.0"
    assert env["INKDEPLOY_STRATEGY"] == "canary" and env["INKDEPLOY_ROLLOUT_ID"] == "r1"
    assert not outcome.ok and outcome.failed_step == 1
    assert "exited 3: database is read-only" in outcome.message


def test_abort_from_another_process_stops_before_the_next_step(tmp_path: Path) -> None:
    runner = RecordingRunner()
    executor, journal, _ = make(tmp_path, [INSTALL, START, ALL], runner)
    journal.request("abort", "alice")
    outcome = executor.run()
    assert not outcome.ok and outcome.message == "Aborted by alice (`inkdeploy abort`)."
    assert runner.calls == []


def test_pause_holds_until_resume(tmp_path: Path) -> None:
    runner = RecordingRunner()
    executor, journal, _ = make(tmp_path, [INSTALL, ALL], runner)
    journal.request("pause", "bob")
    done = threading.Event()

    def walk() -> None:
        executor.run()
        done.set()

    threading.Thread(target=walk, daemon=True).start()
    time.sleep(0.3)
    assert runner.calls == [] and not done.is_set()
    journal.request("resume", "bob")
    assert done.wait(5)
    assert len(runner.calls) == 2


def test_promote_skips_the_remaining_canary_steps_and_approval(tmp_path: Path) -> None:
    steps: list[Step] = [
        START,
        TEN,
        Analysis("canary at 10%", "2.0.0", 600, "1.0.0", judge=True),
        Approval("after canary at 10%"),
        ALL,
    ]
    runner = RecordingRunner()
    executor, journal, _ = make(tmp_path, steps, runner)
    journal.request("promote", "carol")
    outcome = executor.run()
    assert outcome.ok
    # straight from the start to 100 %: no 10 % weights, no analysis window, no approval wait
    assert [c[0] for c in runner.calls] == ["rollout/start-slot.yml", "lb-weights.yml"]
    assert runner.calls[1][1]["nginx_lb_slot_weights"] == ALL.weights


def test_an_approval_waits_for_promote(tmp_path: Path) -> None:
    runner = RecordingRunner()
    executor, journal, _ = make(tmp_path, [Approval("after canary at 50%"), ALL], runner)
    threading.Timer(0.3, journal.request, ("promote", "dave")).start()
    started = time.monotonic()
    assert executor.run().ok
    assert time.monotonic() - started >= 0.25
    events = [json.loads(x) for x in journal.path("r1").read_text().splitlines()]
    approved = next(e["data"] for e in events if e["type"] == "approved")
    assert approved == {"label": "after canary at 50%", "by": "dave"}


@pytest.mark.parametrize("action", ["abort"])
def test_an_approval_can_be_refused(tmp_path: Path, action: str) -> None:
    runner = RecordingRunner()
    executor, journal, _ = make(tmp_path, [Approval("after canary at 50%"), ALL], runner)
    threading.Timer(0.2, journal.request, (action, "erin")).start()
    outcome = executor.run()
    assert not outcome.ok and "Aborted by erin" in outcome.message
    assert runner.calls == []
