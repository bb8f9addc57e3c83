"""The executor without a fleet: a recording runner stands in for ansible-runner, the journal and
the control file are real files. What is checked: steps run in order and are journalled so a
killed rollout can be read back; the first failure stops the walk; hooks get the INKDEPLOY_*
variables; pause, promote and abort from another process are obeyed."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from inkdeploy.config import Policy
from inkdeploy.events import Events, JsonLinesFile
from inkdeploy.execute import HOOK_BASE_ENV, WARMUP_S, Context, Executor
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


def test_hooks_get_a_minimal_environment_and_their_secrets_stay_out_of_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INKDEPLOY_GRAFANA_TOKEN", "glsa_not_for_hooks")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_not_for_hooks")
    monkeypatch.setenv("DEPLOY_CHANNEL", "ops")
    out = tmp_path / "hook.env"
    hook = Hook("pre", (f"env | sort > {out}",))
    failing = Hook(
        "post", ("notify --token tok-s3cr3t || { echo 'token=tok-s3cr3t bad' >&2; exit 4; }",)
    )
    policy = Policy.model_validate({"hooks": {"env": ["DEPLOY_CHANNEL"]}})
    executor, journal, _ = make(tmp_path, [hook, failing], RecordingRunner(), policy)
    outcome = executor.run()
    names = {line.split("=", 1)[0] for line in out.read_text().splitlines()}
    assert "INKDEPLOY_GRAFANA_TOKEN" not in names and "AWS_SECRET_ACCESS_KEY" not in names
    assert {"PATH", "HOME", "DEPLOY_CHANNEL", "INKDEPLOY_VERSION"} <= names
    assert names - {"DEPLOY_CHANNEL", *HOOK_BASE_ENV} <= {
        "INKDEPLOY_ROLLOUT_ID", "INKDEPLOY_VERSION", "INKDEPLOY_PREVIOUS_VERSION",
        "INKDEPLOY_STRATEGY", "INKDEPLOY_ENVIRONMENT", "INKDEPLOY_RESULT",
        "PWD", "SHLVL", "_",  # the shell's own
    }  # fmt: skip
    # the failing hook's command line and output are in the journal with the token masked
    assert not outcome.ok and "notify --token ***" in outcome.message
    journal_text = journal.path("r1").read_text()
    assert "tok-s3cr3t" not in journal_text and "notify --token ***" in journal_text


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


class FakeClock:
    """Wall-clock time that moves only when the executor sleeps: the analysis loop runs through
    its checks at once, and the fake Prometheus lays each series out from the window's start."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.05)


CANARY_Q = 'version:http_errors:ratio_rate30s{version="2.0.0"}'
BASELINE_Q = 'version:http_errors:ratio_rate30s{version="1.0.0"}'


def analyse(
    tmp_path: Path, canary: list[float], baseline: list[float] | None, **gate: Any
) -> tuple[Any, list[dict[str, Any]], float]:
    """One 60 s analysis of 2.0.0 (against 1.0.0 when BASELINE is given) with the error-ratio
    gate only, values one per 5 s from the window's start; returns the outcome, the events and
    the window-relative time of the step's end."""
    from tests.unit.test_gates_prometheus import FakePrometheus

    clock = FakeClock()
    policy = Policy.model_validate(
        {
            "prometheus_gates": [
                {
                    "name": "error ratio of {version}",
                    "query": 'version:http_errors:ratio_rate30s{{version="{version}"}}',
                    "threshold": 0.01,
                    **gate,
                }
            ],
            "pause_timeout_s": 0.01,
        }
    )
    step = Analysis("canary at 10%", "2.0.0", 60, "1.0.0" if baseline is not None else None)
    with FakePrometheus() as prom:
        prom.matrix[CANARY_Q] = [({"version": "2.0.0"}, canary)]
        if baseline is not None:
            prom.matrix[BASELINE_Q] = [({"version": "1.0.0"}, baseline)]
        executor, journal, ctx = make(tmp_path, [step], RecordingRunner(), policy)
        ctx.clock, ctx.sleep, ctx.prometheus_url = clock, clock.sleep, prom.url
        if baseline is None:
            executor.plan = dataclasses.replace(executor.plan, previous=None)
        began = clock.now + WARMUP_S
        outcome = executor.run()
    events = [json.loads(x) for x in journal.path("r1").read_text().splitlines()]
    return outcome, events, clock.now - began


OK = [0.0] * 20
OUTAGE = [0.0, 0.0, 0.3, 0.6, 0.6, 0.4, 0.2] + [0.0] * 13  # samples 2-6 breach (10-30 s)


def test_a_baseline_trailing_the_canary_by_two_scrapes_still_makes_a_fleet_wide_pause(
    tmp_path: Path,
) -> None:
    # A database outage: both versions fail requests, but the baseline's rates show it two
    # samples (10 s) later. At the 15 s check only the canary breaches; acting then would roll
    # back a healthy release. Confirmed 15 s later, the baseline breaches too: a pause.
    outcome, events, _ = analyse(tmp_path, OUTAGE, [0.0] * 4 + OUTAGE[2:])
    kinds = [e["type"] for e in events]
    warning = next(e["data"]["message"] for e in events if e["type"] == "warning")
    assert (
        warning.startswith('Gate "error ratio of 2.0.0" failed')
        and "Confirming it in 15 s" in warning
    )
    paused = next(e["data"]["reason"] for e in events if e["type"] == "paused")
    assert "AND on the baseline 1.0.0" in paused and "fleet-wide" in paused
    assert kinds.index("warning") < kinds.index("paused")
    # nobody answered the pause (pause_timeout_s), so the step failed on that, not on the gate
    assert not outcome.ok and "without resume" in outcome.message
    # acting at once, the same data blames the release at the 15 s check
    shutil.rmtree(tmp_path / ".inkdeploy")
    outcome, _, ended = analyse(tmp_path, OUTAGE, [0.0] * 4 + OUTAGE[2:], confirm_s=0)
    assert 'Gate "error ratio of 2.0.0" failed' in outcome.message and 15 <= ended < 20


def test_a_bad_canary_beside_a_healthy_baseline_fails_once_confirmed(tmp_path: Path) -> None:
    bad = [0.0, 0.2] + [0.3] * 18  # breaches from 5 s on
    outcome, events, ended = analyse(tmp_path, bad, OK)
    assert not outcome.ok and 'Gate "error ratio of 2.0.0" failed' in outcome.message
    assert "paused" not in [e["type"] for e in events]
    # first seen at the 15 s check, acted on 15 s later: well before the 60 s window ends
    assert 30 <= ended < 35


def test_without_a_baseline_or_with_confirmation_off_a_failure_acts_at_once(
    tmp_path: Path,
) -> None:
    bad = [0.0, 0.2] + [0.3] * 18
    for baseline, gate in ((None, {}), (OK, {"confirm_s": 0})):
        outcome, events, ended = analyse(tmp_path, bad, baseline, **gate)
        assert not outcome.ok and 'Gate "error ratio of 2.0.0" failed' in outcome.message
        assert "warning" not in [e["type"] for e in events]
        assert 15 <= ended < 20  # the 15 s check
        shutil.rmtree(tmp_path / ".inkdeploy")


def test_a_failure_that_clears_before_its_confirmation_is_not_acted_on(tmp_path: Path) -> None:
    # One bad sample at 15 s: against a 15 % spike tolerance it fails the 15 s check (1 of 4),
    # and is within the tolerance at the confirmation (1 of 7): the window runs to its end.
    blip = [0.0, 0.0, 0.0, 0.2] + [0.0] * 16
    outcome, events, ended = analyse(tmp_path, blip, OK, max_breach_ratio=0.15)
    assert outcome.ok, outcome.message
    assert "warning" in [e["type"] for e in events]
    assert 60 <= ended < 65
