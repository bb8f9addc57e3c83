"""The orchestrator's commands under faults, on a fleet in memory (tests/unit/fakefleet.py: the
real deploy lock module, real HTTP health checks, every playbook applied to the fleet's state):
a rollout killed at any point of its automatic rollback is finished by `rollout --resume` as a
rollback, never promoted; the lock is taken before the fleet is read; a lock taken away stops a
rollout without a rollback; signals wait until the rollback is done; pauses time out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from inkdeploy import deploy, preflight
from inkdeploy.state.journal import Journal, state_dir
from inkdeploy.state.lock import LockHeld

from .fakefleet import V1, V2, Call, FakeFleet
from .loopback import LoopbackServer


def _fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Iterator[FakeFleet]:
    with FakeFleet(tmp_path, **kw) as fake:
        monkeypatch.setattr(deploy, "Runner", fake.runner)
        monkeypatch.setattr(deploy, "PROJECT", tmp_path)
        monkeypatch.setattr(preflight, "LB_HTTPS_PORT", fake.lb.port)
        yield fake


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFleet]:
    yield from _fleet(tmp_path, monkeypatch)


@pytest.fixture
def two_lbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFleet]:
    yield from _fleet(tmp_path, monkeypatch, lbs=("lb1", "lb2"))


def request(fleet: FakeFleet, inventory: Path, **extra: Any) -> deploy.RolloutRequest:
    return deploy.RolloutRequest(inventory, V2, artifact=fleet.artifact(), **extra)


def canary_serves(call: Call) -> bool:
    """CALL is the weights reload that gives the canary (app1 green) part of the traffic."""
    weights = call.extravars.get("nginx_lb_slot_weights") or {}
    return call.playbook == "lb-weights.yml" and 0 < weights.get("app1:green", 0) < 100


def control_when_canary_serves(fleet: FakeFleet, inventory: Path, action: str) -> None:
    """`inkdeploy ACTION` (abort, pause) from another shell once the canary gets traffic."""
    journal = Journal(state_dir(inventory))

    def hook(call: Call) -> None:
        if canary_serves(call):
            journal.request(action, "oncall")

    fleet.on_call = hook


def test_a_rollout_takes_the_lock_before_it_reads_the_fleet_and_promotes(
    fleet: FakeFleet,
) -> None:
    inventory = fleet.inventory()
    result = deploy.rollout(request(fleet, inventory))
    assert result.result == "succeeded", result.message
    assert fleet.serving() == {V2: 200}
    first, second = fleet.calls[0], fleet.calls[1]
    assert first.playbook == "rollout/lock.yml"
    assert first.extravars["rollout_lock"]["state"] == "acquire"
    assert first.extravars["rollout_lock"]["lease_s"] == 10
    assert second.playbook == "rollout/facts.yml"  # read under the lock
    # every playbook after the lock was taken told the fleet's lock checks who it is
    rollout_id = result.rollout
    # (lease renewals run beside the steps on a runner of their own: on a loaded machine a
    # rollout lasts long enough for some)
    steps = [
        c for c in fleet.calls[1:-1]
        if (c.extravars.get("rollout_lock") or {}).get("state") != "heartbeat"
    ]  # fmt: skip
    assert all(c.extravars.get("inkdeploy_lock_owner") == rollout_id for c in steps)
    assert fleet.lock(state="query")["holder"] == {}
    assert fleet.lock(state="query")["history"][-1]["result"] == "succeeded"


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def failed_canary(fleet: FakeFleet) -> dict[str, Any]:
    """A canary aborted at 10 % and rolled back, with the fleet, the lock and the journal as
    they were at each of its events (what a SIGKILL at that moment would have left)."""
    inventory = fleet.inventory()
    control_when_canary_serves(fleet, inventory, "abort")
    journal = Journal(state_dir(inventory))
    moments: list[dict[str, Any]] = []

    def snapshot(event: Any) -> None:
        lines = journal.path(event.rollout).read_text().splitlines()
        lock = fleet.lockdir / "inkapp.lock"
        moments.append({
            "type": event.type, "data": event.data, "lines": lines, "fleet": fleet.snapshot(),
            "lock": lock.read_text() if lock.exists() else None,
        })  # fmt: skip

    result = deploy.rollout(request(fleet, inventory), on_event=snapshot)
    assert result.result == "rolled_back", result.message
    assert fleet.serving() == {V1: 200}
    fleet.on_call = None
    return {"inventory": inventory, "journal": journal, "rollout": result.rollout,
            "moments": moments}  # fmt: skip


def kill_at(fleet: FakeFleet, canary: dict[str, Any], moment: dict[str, Any]) -> None:
    """Put journal, fleet and lock back to MOMENT, with the orchestrator's process gone."""
    journal: Journal = canary["journal"]
    pid = dead_pid()
    lines = []
    for line in moment["lines"]:
        event = json.loads(line)
        if event["type"] == "rollout_started":
            event["data"]["pid"] = pid
        lines.append(json.dumps(event))
    journal.path(canary["rollout"]).write_text("\n".join(lines) + "\n")
    journal.set_current(canary["rollout"])
    fleet.restore(moment["fleet"])
    lock = fleet.lockdir / "inkapp.lock"
    if moment["lock"] is None:
        lock.unlink(missing_ok=True)
    else:
        holder = json.loads(moment["lock"])
        lock.write_text(json.dumps({**holder, "pid": pid}))
    fleet.calls.clear()


def rollback_moments(moments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """From the failed step (or the abort) to just before the rollout's last event."""
    first = next(i for i, m in enumerate(moments) if m["type"] == "step_failed")
    last = next(i for i, m in enumerate(moments) if m["type"] == "rollout_finished")
    return moments[first:last]


def test_resume_after_a_kill_anywhere_in_the_rollback_finishes_the_rollback(
    fleet: FakeFleet, failed_canary: dict[str, Any]
) -> None:
    moments = rollback_moments(failed_canary["moments"])
    kinds = {m["type"] for m in moments}
    assert {"step_failed", "rollback_started", "step_started", "playbook"} <= kinds
    for moment in moments:
        kill_at(fleet, failed_canary, moment)
        view = failed_canary["journal"].read(failed_canary["rollout"])
        assert view.interrupted and view.must_roll_back, moment["type"]
        result = deploy.resume(failed_canary["inventory"])
        where = f"killed at {moment['type']} {moment['data'].get('description', '')}"
        assert result.result == "rolled_back", where
        assert fleet.serving() == {V1: 200}, where
        # nothing in the resumed run gave the bad release traffic or started it again
        for call in fleet.calls:
            weights = call.extravars.get("nginx_lb_slot_weights") or {}
            assert weights.get("app1:green", 0) == 0, (where, call)
            assert call.extravars.get("app_version") in (None, V1), (where, call)
        history = fleet.lock(state="query")["history"]
        assert history[-1]["result"] == "rolled_back" and history[-1]["abandoned"] == V2, where
        assert fleet.lock(state="query")["holder"] == {}, where
        assert fleet.state.workers == {"worker1": V1}, where


def _race(inventory: Path, artifact: Path, barrier: Any, queue: Any) -> None:
    barrier.wait()
    try:
        result = deploy.rollout(deploy.RolloutRequest(inventory, V2, artifact=artifact))
        queue.put(("ran", result.result))
    except LockHeld as exc:
        queue.put(("refused", exc.message))


def test_two_rollouts_started_at_once_one_runs_the_other_names_the_holder(
    fleet: FakeFleet, tmp_path: Path
) -> None:
    import multiprocessing
    import shutil

    first = fleet.inventory()
    second = tmp_path / "inventory2" / "hosts.yml"
    shutil.copytree(first.parent, second.parent)  # another shell, another journal
    artifact = fleet.artifact()
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(inv, artifact, barrier, queue))
             for inv in (first, second)]  # fmt: skip
    for proc in procs:
        proc.start()
    outcomes = sorted(queue.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    assert [o[0] for o in outcomes] == ["ran", "refused"], outcomes
    message = outcomes[1][1]
    assert message.startswith("Another rollout holds the deploy lock: ")
    assert "rolling out 2.0.0 (canary)" in message
    # exactly one rollout ran to its end (forked, the winner's health checks may reach the
    # other process's copy of the fleet, so its result is not the point); the refused one left
    # no trace in the history
    history = fleet.lock(state="query")["history"]
    assert [row["result"] for row in history] == [outcomes[0][1]]


def test_a_lock_released_by_force_stops_the_rollout_at_its_next_step_without_rollback(
    fleet: FakeFleet,
) -> None:
    inventory = fleet.inventory()
    released: list[float] = []

    def hook(call: Call) -> None:
        if canary_serves(call):
            fleet.lock(state="release", force=True)  # `inkdeploy lock release --force`
            released.append(time.monotonic())
            time.sleep(4)  # a slow weights reload: the heartbeat (every 2.5 s) notices meanwhile

    fleet.on_call = hook
    result = deploy.rollout(request(fleet, inventory))
    assert released
    assert result.result == "stopped", result.message
    assert "The deploy lock was taken from this rollout (now free" in result.message
    assert "without rolling back" in result.message
    # nothing ran after the step during which the lock went: the canary weights stay
    last = fleet.calls.index(next(c for c in fleet.calls if c.playbook == "lb-weights.yml"))
    assert [c.playbook for c in fleet.calls[last + 1 :]] == ["rollout/lock.yml"]  # the release
    assert fleet.serving() == {V1: 180, V2: 20}
    assert fleet.lock(state="query")["history"][-1]["result"] == "stopped"
    # it stays the current rollout: a new one is refused until `rollback` undoes the split,
    # with the weights from before it (100 each, not the canary's 90)
    journal = Journal(state_dir(inventory))
    view = journal.read(result.rollout)
    assert journal.current() == result.rollout and view.stopped and view.interrupted
    with pytest.raises(deploy.PlanError, match=r"stopped at step .* deploy lock was taken away"):
        deploy.rollout(request(fleet, inventory))
    back = deploy.rollback(inventory)
    assert back.result == "succeeded", back.message
    assert fleet.serving() == {V1: 200} and journal.current() is None
    assert fleet.lock(state="query")["history"][-1]["abandoned"] == V2


def test_ctrl_c_twice_during_the_rollback_waits_until_traffic_is_back(fleet: FakeFleet) -> None:
    inventory = fleet.inventory()
    control_when_canary_serves(fleet, inventory, "abort")
    abort = fleet.on_call
    sent: list[str] = []

    def hook(call: Call) -> None:
        assert abort
        abort(call)
        weights = call.extravars.get("nginx_lb_slot_weights") or {}
        if call.playbook == "lb-weights.yml" and weights.get("app1:green") == 0 and not sent:
            # the emergency reload of the rollback: the operator presses Ctrl-C twice
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            sent.append(call.playbook)

    fleet.on_call = hook
    result = deploy.rollout(request(fleet, inventory))
    assert sent
    assert result.result == "rolled_back", result.message
    assert "A Ctrl-C/SIGTERM during the rollback was held until it finished." in result.message
    assert fleet.serving() == {V1: 200}
    assert fleet.state.workers == {"worker1": V1}
    assert fleet.lock(state="query")["holder"] == {}
    lines = Journal(state_dir(inventory)).path(result.rollout).read_text().splitlines()
    deferred = [json.loads(line) for line in lines if '"signal_deferred"' in line]
    assert [e["data"]["signal"] for e in deferred] == ["SIGINT", "SIGINT"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_pause_that_nobody_answers_times_out_and_rolls_back(fleet: FakeFleet) -> None:
    inventory = fleet.inventory({"pause_timeout_s": 1})
    journal = Journal(state_dir(inventory))
    control_when_canary_serves(fleet, inventory, "pause")
    began = time.monotonic()
    result = deploy.rollout(request(fleet, inventory))
    assert result.result == "rolled_back", result.message
    assert "Paused for 1 s without resume, promote or abort (pause_timeout_s)" in result.message
    assert time.monotonic() - began < 30
    assert fleet.serving() == {V1: 200}
    # while it waited, the journal (what `inkdeploy status` reads) showed the pause
    lines = journal.path(result.rollout).read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"type":"paused"' in line)
    journal.path("cut").write_text("\n".join(lines[: cut + 1]) + "\n")
    paused = journal.read("cut").paused
    assert paused and paused["timeout_s"] == 1 and paused["by"] == "oncall"
    assert paused["since"] == pytest.approx(time.time(), abs=60)
    assert journal.read(result.rollout).paused is None


def test_a_failing_pre_flight_refuses_under_the_lock_and_force_overrides_it(
    fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = fleet.inventory()
    with LoopbackServer(BaseHTTPRequestHandler) as gone:
        closed = gone.port
    monkeypatch.setattr(preflight, "LB_HTTPS_PORT", closed)  # nothing listens there now
    with pytest.raises(deploy.PreflightFailed) as refused:
        deploy.rollout(request(fleet, inventory))
    assert refused.value.message.startswith(
        "Pre-flight refused the rollout, nothing was changed: Load balancer lb1 "
        f"(127.0.0.1:{closed}) did not accept a TCP connection: connection refused;"
    )
    assert refused.value.exit_code == 2
    assert fleet.playbooks() == ["rollout/lock.yml", "rollout/facts.yml", "rollout/lock.yml"]
    assert fleet.lock(state="query")["holder"] == {} and fleet.serving() == {V1: 200}
    assert fleet.lock(state="query")["history"] == []
    result = deploy.rollout(request(fleet, inventory, force=True))
    assert result.result == "succeeded"
    lines = Journal(state_dir(inventory)).path(result.rollout).read_text().splitlines()
    warnings = [json.loads(x)["data"]["message"] for x in lines if '"type":"warning"' in x]
    assert any(
        w.startswith("Pre-flight (overridden with --force): Load balancer lb1") for w in warnings
    )


def test_weights_one_lb_missed_are_repaired_by_the_next_rollout_not_a_reason_to_refuse(
    two_lbs: FakeFleet,
) -> None:
    """lb2 missed a reload (it still drains app1): same release everywhere, so the next rollout
    plans from lb1 and its first weights step sets both."""
    two_lbs.state.weights["lb2"]["app1:blue"] = 0
    inventory = two_lbs.inventory()
    session = deploy.Session.open(inventory)
    plan, _, _ = deploy.prepare(session, request(two_lbs, inventory))
    assert any("lb2" in note and "sets every load balancer" in note for note in plan.notes)
    result = deploy.rollout(request(two_lbs, inventory))
    assert result.result == "succeeded", result.message
    assert two_lbs.state.weights["lb1"] == two_lbs.state.weights["lb2"]
    assert two_lbs.serving("lb1") == two_lbs.serving("lb2") == {V2: 200}


def test_an_lb_left_on_another_release_is_refused_until_a_rollback_sets_both(
    two_lbs: FakeFleet,
) -> None:
    """A reload failed on lb2 while the canary was taken out: lb2 still sends 10 % to it."""
    inventory = two_lbs.inventory()
    two_lbs.state.slots["app1"]["green"] = {"version": V2, "active": True}
    two_lbs.state.releases["app1"].add(V2)
    two_lbs.state.weights["lb2"].update({"app1:blue": 90, "app1:green": 10, "app2:blue": 100})
    with pytest.raises(deploy.PlanError) as refused:
        deploy.rollout(request(two_lbs, inventory))
    assert refused.value.message.startswith(
        "Load balancer lb2 still sends traffic to 2.0.0 while the first serves 1.0.0;"
    )
    assert two_lbs.lock(state="query")["holder"] == {}
    back = deploy.rollback(inventory, to=V1)
    assert back.result == "succeeded", back.message
    assert two_lbs.serving("lb1") == two_lbs.serving("lb2") == {V1: 200}
    assert not two_lbs.state.slots["app1"]["green"]["active"]  # the stray canary stopped


def test_a_signal_that_arrives_while_an_event_is_written_does_not_deadlock(
    tmp_path: Path,
) -> None:
    """Seen on the lab: Ctrl-C right after `rollback_started` reached the terminal landed while
    that event was still being written (the events' lock held); a handler that emitted an event
    itself waited for that lock forever."""
    script = f"""
import os, signal, time
from inkdeploy.deploy import deferred_signals
from inkdeploy.events import Events, JsonLinesFile
events = Events("r1", [JsonLinesFile({str(tmp_path / "j.jsonl")!r})])
with deferred_signals(events) as held:
    with events._lock:  # an emit in progress
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
assert [s for s, _ in held] == [signal.SIGINT, signal.SIGTERM], held
events.close()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("inkdeploy: rolling back") == 2
    lines = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [e["data"]["signal"] for e in lines] == ["SIGINT", "SIGTERM"]
