"""`inkdeploy rollout` on the stack lab (after test_stack.py, on the same fleet), under steady
HTTPS load through both load balancers (one name, DNS round robin): rolling, blue-green and
canary from v1 to v2 with no failed request, fast rollback, two bad canaries rolled back
automatically (one with Ctrl-C pressed twice during its rollback), two rollouts started at once,
a pre-flight refusal, SIGKILL mid-canary then resume or rollback, SIGKILL during an automatic
rollback then resume, the lock released by force under a running rollout, site.yml and
lb-weights.yml refused during a freeze, a database outage mid-canary that pauses instead of
rolling back, and bad input that changes nothing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from inkdeploy.lab.drill import inventory_groups, run_playbook
from inkdeploy.loadgen import LoadConfig, LoadGenerator, Report

from .conftest import CLI, LAB, REPO, Stack, inkdeploy

pytestmark = pytest.mark.stack

V1, V2, BAD_ERRORS, BAD_LATENCY = "1.0.0", "2.0.0", "3.0.0", "3.0.1"
# Requests/s through the load balancers during every rollout test. 50 is enough for the gates
# (the canary host gets 5/s at its 10 % step, 25 requests per 5 s scrape) and leaves CI's two
# cores to the lab: the load generator, Nginx and Gunicorn share them with Ansible.
LOAD_RATE = 50


@dataclass
class Releases:
    dist: Path

    def artifact(self, version: str) -> Path:
        return self.dist / f"inkapp-{version}.tar.gz"


@pytest.fixture(scope="module")
def releases(stack: Stack) -> Releases:
    dist = stack.artifact.parent
    builds = {
        V2: [],
        BAD_ERRORS: ["--fault-errors", "20%"],
        BAD_LATENCY: ["--fault-latency", "400ms"],
    }
    for version, extra in builds.items():
        if not (dist / f"inkapp-{version}.tar.gz").exists():
            run = inkdeploy("build", str(REPO / "examples/inkapp"), "--version", version,
                            "--out", str(dist), "--no-verify", *extra, timeout=900)  # fmt: skip
            assert run.returncode == 0, run.stdout + run.stderr
    return Releases(dist)


@dataclass
class Run:
    rc: int
    events: list[dict[str, Any]]
    result: dict[str, Any]
    stderr: str
    seconds: float

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["type"] == kind]


def parse_run(rc: int, stdout: str, stderr: str, seconds: float) -> Run:
    events, result = [], {}
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if item.get("type") == "result":
            result = item["data"]
        else:
            events.append(item)
    return Run(rc, events, result, stderr, seconds)


def cli(stack: Stack, *args: str, inventory: Path | None = None, timeout: float = 900) -> Run:
    started = time.monotonic()
    proc = subprocess.run(
        [CLI, *args, "-i", str(inventory or stack.inventory), "--json"],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False,
    )  # fmt: skip
    stack.transcripts.append(proc.stdout + proc.stderr)
    return parse_run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def rollout(stack: Stack, releases: Releases, version: str, strategy: str, *extra: str) -> Run:
    return cli(stack, "rollout", "--version", version, "--strategy", strategy,
               "--artifact", str(releases.artifact(version)), "--yes", *extra)  # fmt: skip


def status(stack: Stack, inventory: Path | None = None) -> dict[str, Any]:
    run = subprocess.run(
        [CLI, "status", "-i", str(inventory or stack.inventory), "--json"],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def fleet_view(stack: Stack) -> dict[str, Any]:
    """What must not change when a command is refused: versions, activity and weights."""
    fleet = status(stack)["fleet"]
    return {
        host: {slot: (s["version"], s["active"], s["weight"]) for slot, s in h["slots"].items()}
        for host, h in fleet["hosts"].items()
    }


def live(stack: Stack) -> dict[str, int]:
    return status(stack)["fleet"]["live_versions"]


def worker_release_and_pids(stack: Stack) -> str:
    """worker1's Celery link target and its units' main PIDs: equal before and after a run
    means the workers neither moved to another release nor restarted."""
    shown = stack.on("worker1", "sh", "-c", "readlink /srv/inkapp/slots/celery; systemctl show "
                     "-p MainPID --value inkapp-celery-worker@celery.service "
                     "inkapp-celery-beat.service")  # fmt: skip
    link, *pids = shown.stdout.split()
    assert "/releases/" in link and pids and "0" not in pids, shown.stdout + shown.stderr
    return shown.stdout


def fire_pending_slot_stops(stack: Stack) -> list[str]:
    """Run now every old-slot stop a rollout scheduled (stop_old_after_s, a transient timer per
    slot): what a test compares before and after must not change under it when a timer fires.
    Returns the HOST:TIMER pairs fired."""
    fired = []
    for host in ("app1", "app2"):
        listed = stack.on(host, "systemctl", "list-units", "--plain", "--no-legend",
                          "--type=timer", "--state=active", "inkdeploy-stop-*").stdout  # fmt: skip
        for timer in (line.split()[0] for line in listed.splitlines() if line.strip()):
            service = timer.removesuffix(".timer") + ".service"
            ran = stack.on(host, "systemctl", "start", service)
            assert ran.returncode == 0, ran.stdout + ran.stderr
            stack.on(host, "systemctl", "stop", timer)
            fired.append(f"{host}:{timer}")
    return fired


@pytest.fixture
def load(stack: Stack) -> Iterator[LoadGenerator]:
    # The site's name stands for both load balancers (DNS round robin): connections alternate.
    gen = LoadGenerator(
        LoadConfig(
            stack.url, cacert=str(stack.cacert), rate=LOAD_RATE, concurrency=8, addresses=stack.lbs
        )
    ).start()
    try:
        yield gen
    finally:
        if gen.running:
            gen.stop()


def no_failures(report: Report) -> None:
    assert report.failed == 0, (report.failed_by_kind, report.failures[:5])


def both_lbs_served(stack: Stack, report: Report) -> None:
    assert all(report.by_address.get(lb, 0) > 0 for lb in stack.lbs), report.by_address


def alt_inventory(stack: Stack, tmp_path: Path, rollout_settings: dict[str, Any] | None = None,
                  extra_app_host: str | None = None) -> Path:  # fmt: skip
    """Another environment directory for the same fleet (its own journal), optionally with
    different rollout settings or one more app host."""
    directory = tmp_path / "env"
    (directory / "group_vars" / "all").mkdir(parents=True)
    (directory / "group_vars" / "all" / "lab.yml").symlink_to(
        REPO / "inventories/lab/group_vars/all.yml"
    )
    if rollout_settings is not None:
        (directory / "group_vars" / "all" / "zz_rollout.yml").write_text(
            yaml.safe_dump({"inkdeploy_rollout": rollout_settings})
        )
    hosts = yaml.safe_load(stack.inventory.read_text())
    if extra_app_host:
        hosts["all"]["hosts"]["app9"] = {
            **hosts["all"]["hosts"]["app2"], "ansible_host": extra_app_host,
        }  # fmt: skip
        hosts["all"]["children"]["app"]["hosts"]["app9"] = None
    (directory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    shutil.copytree(stack.inventory.parent / "pki", directory / "pki")
    return directory / "hosts.yml"


# -- bad input: one sentence, non-zero exit, fleet untouched ------------------------------------


def test_bad_input_is_refused_and_the_fleet_is_left_as_it_was(
    stack: Stack, releases: Releases, tmp_path: Path
) -> None:
    before = fleet_view(stack)
    unknown = rollout(stack, releases, V2, "yolo")
    assert unknown.rc == 2 and "Unknown strategy 'yolo'" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    missing = cli(stack, "rollout", "--version", V2, "--artifact", "/nonexistent/a.tar.gz",
                  "--strategy", "canary", "--yes")  # fmt: skip
    assert missing.rc == 2 and "/nonexistent/a.tar.gz does not exist" in missing.stderr

    not_built = cli(stack, "rollout", "--version", "9.9.9", "--strategy", "canary", "--yes")
    assert not_built.rc == 2 and "No artifact for 9.9.9" in not_built.stderr
    assert "inkdeploy build" in not_built.stderr

    wrong = cli(stack, "rollout", "--version", V2, "--artifact", str(releases.artifact(V1)),
                "--strategy", "canary", "--yes")  # fmt: skip
    assert wrong.rc == 2 and f"holds version {V1}, not {V2}" in wrong.stderr

    steps = alt_inventory(stack, tmp_path / "steps", {"canary": {"steps": [10, 50]}})
    bad_steps = rollout_in(stack, releases, steps)
    assert bad_steps.rc == 2 and "canary.steps must end with 100" in bad_steps.stderr

    query = alt_inventory(stack, tmp_path / "query", {"prometheus_gates": [
        {"name": "broken", "query": "rate(http_requests_total[5m]", "threshold": 1}]})  # fmt: skip
    bad_query = rollout_in(stack, releases, query)
    assert bad_query.rc != 0 and "Prometheus" in bad_query.stderr
    assert "rate(http_requests_total[5m]" in bad_query.stderr

    unused = ".".join([*stack.lb.split(".")[:3], "250"])  # in the lab's subnet, no host there
    unreachable = alt_inventory(stack, tmp_path / "far", extra_app_host=unused)
    far = rollout_in(stack, releases, unreachable)
    assert far.rc != 0 and "Could not read the fleet" in far.stderr and "app9" in far.stderr

    for run in (unknown, missing, not_built, wrong, bad_steps, bad_query, far):
        assert "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) <= 4, run.stderr  # one sentence, wrapped
    assert fleet_view(stack) == before
    assert status(stack)["lock"]["holder"] == {}


def test_a_rollout_into_a_fleet_whose_sentinel_is_down_is_refused_by_the_preflight(
    stack: Stack, releases: Releases
) -> None:
    before = fleet_view(stack)
    stopped = stack.on("data1", "systemctl", "stop", "redis-sentinel")
    assert stopped.returncode == 0, stopped.stderr
    try:
        refused = rollout(stack, releases, V2, "canary")
    finally:
        started = stack.on("data1", "systemctl", "start", "redis-sentinel")
        assert started.returncode == 0, started.stderr
    assert refused.rc == 2, refused.stderr
    assert "Pre-flight refused the rollout, nothing was changed:" in refused.stderr
    assert "sentinels named a Redis master" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert fleet_view(stack) == before
    assert status(stack)["lock"]["holder"] == {}


def rollout_in(stack: Stack, releases: Releases, inventory: Path) -> Run:
    return cli(stack, "rollout", "--version", V2, "--artifact", str(releases.artifact(V2)),
               "--strategy", "canary", "--yes", inventory=inventory)  # fmt: skip


# -- the three strategies, v1 -> v2, under load ---------------------------------------------------


def test_rolling_takes_the_fleet_to_v2_without_a_failed_request(
    stack: Stack, releases: Releases, load: LoadGenerator
) -> None:
    """It starts with lb2 behind lb1, as a weights reload that failed on lb2 leaves it: the plan
    says so and its first weights step sets both, so they agree at every step after."""
    assert live(stack) == {V1: 200}
    fleet = status(stack)["fleet"]
    weights = fleet["lb_weights"]["lb1"]
    behind = {**weights, f"app1:{fleet['hosts']['app1']['live_slot']}": 0}
    lagging = run_playbook("lb-weights.yml", stack.inventory,
                           {"nginx_lb_slot_weights": behind}, limit="lb2")  # fmt: skip
    assert lagging.rc == 0, lagging.tail()
    split = status(stack)["fleet"]
    assert split["weights_disagree"] == ["lb2"] and split["lb_weights"]["lb2"] == behind
    run = rollout(stack, releases, V2, "rolling")
    report = load.stop()
    assert run.rc == 0, run.stderr + json.dumps(run.of("step_failed"))
    assert run.result["result"] == "succeeded"
    assert any("lb2" in note for note in run.of("rollout_started")[0]["notes"])
    no_failures(report)
    both_lbs_served(stack, report)
    after = status(stack)["fleet"]
    assert (
        after["weights_disagree"] == [] and after["lb_weights"]["lb1"] == after["lb_weights"]["lb2"]
    )
    assert live(stack) == {V2: 200}
    # one batch at a time: never both hosts drained
    for step in run.of("step_started"):
        if step["step"]["kind"] == "set_weights":
            w = step["step"]["weights"]
            assert w["app1:blue"] + w["app1:green"] > 0 or w["app2:blue"] + w["app2:green"] > 0
    assert report.versions.get(V2, 0) > 0


def test_rollback_after_rolling_restarts_v1_in_the_idle_slots(
    stack: Stack, load: LoadGenerator
) -> None:
    run = cli(stack, "rollback", "--to", V1, "-m", "back for the next strategy")
    report = load.stop()
    assert run.rc == 0, run.stderr
    no_failures(report)
    assert live(stack) == {V1: 200}


def test_blue_green_to_v2_then_rollback_is_an_lb_switch_of_seconds(
    stack: Stack, releases: Releases, load: LoadGenerator
) -> None:
    run = rollout(stack, releases, V2, "blue-green")
    assert run.rc == 0, run.stderr + json.dumps(run.of("step_failed"))
    assert live(stack) == {V2: 200}
    # the old slots keep running (a timer stops them later), so rollback only moves traffic
    fleet = status(stack)["fleet"]["hosts"]
    assert all(h["slots"][other_slot(h)]["active"] for h in fleet.values())
    back = cli(stack, "rollback", "-m", "fast path")
    report = load.stop()
    assert back.rc == 0, back.stderr
    kinds = [s["step"]["kind"] for s in back.of("step_started")]
    assert "start_slot" not in kinds and kinds[:2] == ["keep_slot", "set_weights"]
    switched = back.result["traffic_switched_s"]
    print(f"\nrollback after blue-green: traffic on {V1} after {switched:.1f} s, "
          f"command done in {back.seconds:.1f} s")  # fmt: skip
    # the fast path (one SSH command per host for fleet read, lock, keep and weights): 1.0 s on
    # the dev lab; the bound leaves room for CI's two lanes on two cores
    assert switched < 10
    fast = {e["action"] for e in back.of("fast_path")}
    # every step of the rollback goes over the fast path: no playbook at all
    assert {"keep_slots", "set_weights", "stop_slots", "record", "celery_release"} <= fast, fast
    assert back.of("playbook") == [], back.of("playbook")
    assert live(stack) == {V1: 200}
    no_failures(report)
    assert report.requests > 1000


def test_with_the_first_load_balancer_down_status_and_rollback_still_work(
    stack: Stack, releases: Releases, load: LoadGenerator
) -> None:
    """lb1 holds a third of the deploy lock and history (group deploy_lock: lb1, lb2, data1)
    and half the traffic. Powered off after a blue-green rollout, together with the worker
    host: status names both, rollback moves lb2 back to the last good release under the
    majority's lock and leaves the dead worker host's workers for later; once both are back,
    `rollback --to` sets lb1 like lb2 and restarts worker1's workers on the old release."""
    run = rollout(stack, releases, V2, "blue-green")
    no_failures(load.stop())
    assert run.rc == 0, run.stderr + json.dumps(run.of("step_failed"))
    lb2 = stack.lbs[1]
    on_lb2 = LoadGenerator(LoadConfig(f"https://{lb2}/", cacert=str(stack.cacert), rate=50,
                                      concurrency=4)).start()  # fmt: skip
    inkdeploy("lab", "kill", "--lab", LAB, "lb1")
    inkdeploy("lab", "kill", "--lab", LAB, "worker1")
    try:
        seen = status(stack)
        assert seen["fleet"]["lb_unreachable"] == ["lb1"], seen["fleet"]
        assert seen["fleet"]["workers_silent"] == ["worker1"], seen["fleet"]
        assert seen["fleet"]["lock_silent"] == ["lb1"] and seen["fleet"]["live_versions"] == {
            V2: 200
        }
        print(f"\nstatus with lb1 down: {seen['seconds']:.1f} s inside the command")
        assert seen["seconds"] < 10
        back = cli(stack, "rollback", "-m", "lb1 is down")
        report = on_lb2.stop()
        assert back.rc == 0, back.stderr + json.dumps(back.of("step_failed"))
        notes = " ".join(back.of("rollout_started")[0].get("notes", []))
        assert "Load balancer lb1 does not answer" in notes and f"rollback --to {V1}" in notes
        assert "Worker host worker1 does not answer" in notes
        kinds = [e["step"]["kind"] for e in back.of("step_started")]
        assert "celery" not in kinds, f"the rollback restarted the dead host's workers: {kinds}"
        switched = back.result["traffic_switched_s"]
        print(f"rollback with lb1 down: lb2 on {V1} after {switched:.1f} s, command "
              f"{back.seconds:.1f} s; {report.requests} requests to lb2, "
              f"{report.failed} failed")  # fmt: skip
        assert switched < 10 and live(stack) == {V1: 200}
        no_failures(report)
        assert history_rows(stack)[-1]["reason"] == "lb1 is down"
    finally:
        if on_lb2.running:
            on_lb2.stop()
        inkdeploy("lab", "start", "--lab", LAB, "lb1")
        inkdeploy("lab", "start", "--lab", LAB, "worker1")
    # lb1 is back with the weights it had, worker1's workers on the release they had: the fleet
    # says so, and rollback --to repairs both
    before = status(stack)["fleet"]
    assert before["weights_disagree"], "lb1 came back with other weights"
    assert before["workers"] == {"worker1": V2}, before["workers"]
    fixed = cli(stack, "rollback", "--to", V1, "-m", "lb1 and worker1 are back")
    assert fixed.rc == 0, fixed.stderr + json.dumps(fixed.of("step_failed"))
    assert any(e["step"]["kind"] == "celery" for e in fixed.of("step_started"))
    after = status(stack)["fleet"]
    assert after["weights_disagree"] == [] and after["lb_unreachable"] == []
    assert after["live_versions"] == {V1: 200}
    assert after["queues"]["celery"][0]["release"] == V1, after["queues"]


def other_slot(host: dict[str, Any]) -> str:
    return "green" if host["live_slot"] == "blue" else "blue"


def history_rows(stack: Stack) -> list[dict[str, Any]]:
    run = subprocess.run([CLI, "history", "-i", str(stack.inventory), "--json"],
                         capture_output=True, text=True, check=True, cwd=REPO)  # fmt: skip
    return list(json.loads(run.stdout))


def start_rollout(inventory: Path, releases: Releases, version: str, strategy: str,
                  *extra: str) -> subprocess.Popen[str]:  # fmt: skip
    return subprocess.Popen(
        [CLI, "rollout", "-i", str(inventory), "--version", version, "--strategy", strategy,
         "--artifact", str(releases.artifact(version)), "--yes", "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip


def test_canary_to_v2_two_started_at_once_one_runs_the_other_is_refused(
    stack: Stack, releases: Releases, load: LoadGenerator, tmp_path: Path
) -> None:
    """Two shells (two journals) start the same rollout in the same second: the lock is taken
    before either reads the fleet, so exactly one runs and the other is told who holds it."""
    there = alt_inventory(stack, tmp_path)
    rows_before = len(history_rows(stack))
    procs = {inv: start_rollout(inv, releases, V2, "canary", "-m", "friday fix")
             for inv in (stack.inventory, there)}  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        losers = [inv for inv, p in procs.items() if p.poll() is not None]
        assert len(losers) == 1, "neither rollout was refused"
        loser = losers[0]
        winner = next(inv for inv in procs if inv != loser)
        _, lost = procs[loser].communicate()
        assert procs[loser].returncode == 3, lost
        assert "Another rollout holds the deploy lock" in lost
        assert f"rolling out {V2} (canary)" in lost and '"friday fix"' in lost
        time.sleep(5)
        # from the winner's controller: the journal knows a rollout runs
        same = cli(stack, "rollout", "--version", V2, "--artifact", str(releases.artifact(V2)),
                   "--strategy", "canary", "--yes", inventory=winner)  # fmt: skip
        assert same.rc == 3 and "still running from this controller" in same.stderr
        # from the loser's (its own journal): the lock on the fleet refuses it
        other = cli(stack, "rollout", "--version", V2, "--artifact", str(releases.artifact(V2)),
                    "--strategy", "blue-green", "--yes", inventory=loser)  # fmt: skip
        assert other.rc == 3, other.stderr
        assert "Another rollout holds the deploy lock" in other.stderr
        stdout, stderr = procs[winner].communicate(timeout=900)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    report = load.stop()
    run = parse_run(procs[winner].returncode, stdout, stderr, 0)
    assert run.rc == 0, stderr + json.dumps(run.of("step_failed"))
    no_failures(report)
    print(f"\ncanary {V1} -> {V2}: {report.requests} requests, {report.failed} failed, "
          f"{report.raw_resets} raw resets")  # fmt: skip
    # the whole canary under the full offered load: no request left unsent
    assert report.requests >= 5_000 and report.requests >= 0.95 * report.offered
    both_lbs_served(stack, report)
    assert live(stack) == {V2: 200}
    judged = [g for g in run.of("gate") if g["kind"] == "judge"]
    assert len(judged) == 2 and all(g["outcome"] == "pass" for g in judged)
    assert status(stack)["lock"]["holder"] == {}
    # the pre-flight ran under the lock and found the small lab fit
    started = run.of("rollout_started")[0]
    assert started["preflight"]["ok"] is True, started["preflight"]
    assert {c["name"] for c in started["preflight"]["checks"]} == {
        "patroni", "sentinel", "alerts", "load balancers"}  # fmt: skip
    # one history entry for the one that ran; the refused ones left none
    assert len(history_rows(stack)) == rows_before + 1
    assert history_rows(stack)[-1]["rollout"] == run.result["rollout"]


# -- bad canaries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "caught_by"), [(BAD_ERRORS, "error ratio"), (BAD_LATENCY, "p95 latency")]
)
def test_a_bad_canary_is_rolled_back_automatically(
    stack: Stack, releases: Releases, load: LoadGenerator, version: str, caught_by: str
) -> None:
    proc = start_rollout(stack.inventory, releases, version, "canary")
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if version == BAD_ERRORS and json.loads(line)["type"] == "rollback_started":
            # the operator presses Ctrl-C twice while traffic is being moved back (apart:
            # two signals sent at once may reach the process as one)
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            break
    stdout, stderr = proc.communicate(timeout=600)
    run = parse_run(proc.returncode, "".join(lines) + stdout, stderr, 0)
    report = load.stop()
    assert run.rc == 4, run.stderr
    assert run.result["result"] == "rolled_back"
    assert (
        caught_by in run.result["message"] and f"Traffic is back on {V2}" in run.result["message"]
    )
    assert live(stack) == {V2: 200}
    first, last = report.first_second_with(version), report.last_second_with(version)
    assert first is not None and last is not None
    exposure = last - first + 1
    canary_failed = report.failed
    print(f"\nbad canary {version}: caught by {caught_by} {exposure} s after its first request, "
          f"{report.versions.get(version)} requests on it, {canary_failed} user requests failed; "
          f"{run.result['message']}")  # fmt: skip
    assert exposure <= 90
    if version == BAD_LATENCY:
        assert "judge" in run.result["message"]
        no_failures(report)
    else:  # the two Ctrl-C were held until the rollback was done
        assert [e["signal"] for e in run.of("signal_deferred")] == ["SIGINT", "SIGINT"]
        assert "held until it finished" in run.result["message"]
        assert status(stack)["lock"]["holder"] == {}
    history = cli(stack, "history")
    assert history.rc == 0


def test_history_records_who_what_and_why(stack: Stack) -> None:
    run = subprocess.run([CLI, "history", "-i", str(stack.inventory), "--json"],
                         capture_output=True, text=True, check=False, cwd=REPO)  # fmt: skip
    rows = json.loads(run.stdout)
    results = [(r["kind"], r["version"], r["result"]) for r in rows]
    assert ("rollout", V2, "succeeded") in results
    assert ("rollout", BAD_ERRORS, "rolled_back") in results
    bad = next(r for r in rows if r["version"] == BAD_ERRORS)
    assert bad["abandoned"] == BAD_ERRORS and "error ratio" in bad["reason"] and bad["user"]


def test_sigkill_during_the_automatic_rollback_then_resume_finishes_the_rollback(
    stack: Stack, releases: Releases, load: LoadGenerator
) -> None:
    """Killed while bringing traffic back from a bad canary: `rollout --resume` finishes the
    rollback; it never runs the failed gate again nor promotes the bad release."""
    assert live(stack) == {V2: 200}
    rows_before = len(history_rows(stack))
    proc = start_rollout(stack.inventory, releases, BAD_ERRORS, "canary")
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["type"] == "rollback_started":
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = status(stack)
    assert state["rollout"]["state"] == "interrupted" and state["rollout"]["rolling_back"]
    refused = rollout(stack, releases, V1, "canary")
    assert refused.rc == 2 and "interrupted during its automatic rollback" in refused.stderr
    resumed = cli(stack, "rollout", "--resume")
    load.stop()
    assert resumed.result["result"] == "rolled_back", resumed.stderr
    assert resumed.rc == 4  # the rollout failed; the message says traffic is back
    assert f"Traffic is back on {V2}" in resumed.result["message"]
    kinds = {s["step"]["kind"] for s in resumed.of("step_started")}
    assert not kinds & {"install", "start_slot", "http_check", "analysis"}, kinds
    after = status(stack)
    assert after["fleet"]["live_versions"] == {V2: 200} and after["rollout"] is None
    assert after["lock"]["holder"] == {}
    rows = history_rows(stack)
    assert len(rows) == rows_before + 1
    assert (rows[-1]["version"], rows[-1]["result"]) == (BAD_ERRORS, "rolled_back")
    assert rows[-1]["abandoned"] == BAD_ERRORS


# -- the orchestrator killed mid-canary ---------------------------------------------------------


def start_and_kill_mid_canary(stack: Stack, releases: Releases, version: str) -> str:
    proc = start_rollout(stack.inventory, releases, version, "canary")
    assert proc.stdout is not None
    rollout_id = ""
    for line in proc.stdout:
        event = json.loads(line)
        rollout_id = event["rollout"]
        step = event["data"].get("step", {})
        if event["type"] == "step_started" and step.get("kind") == "analysis":
            break
    else:  # it ended before its first analysis: refused, or failed
        pytest.fail(f"the canary to {version} ended early: {proc.wait()} {proc.stderr.read()}")
    time.sleep(5)  # inside the analysis window at 10 %
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return rollout_id


def test_sigkill_mid_canary_then_rollback_ends_consistent(
    stack: Stack, releases: Releases, load: LoadGenerator
) -> None:
    rollout_id = start_and_kill_mid_canary(stack, releases, V1)
    state = status(stack)
    assert state["rollout"]["rollout"] == rollout_id and state["rollout"]["state"] == "interrupted"
    assert "canary at 10%" in state["rollout"]["step_description"]
    assert state["lock"]["holder"]["rollout"] == rollout_id
    assert state["lock"]["stale"].startswith("stale")
    assert set(state["fleet"]["live_versions"]) == {V1, V2}  # the split it was killed in
    # a new rollout is refused until the interrupted one is dealt with
    refused = rollout(stack, releases, V1, "canary")
    assert refused.rc == 2 and "was interrupted" in refused.stderr
    back = cli(stack, "rollback")
    report = load.stop()
    assert back.rc == 0, back.stderr
    no_failures(report)
    after = status(stack)
    assert after["fleet"]["live_versions"] == {V2: 200} and after["rollout"] is None
    assert after["lock"]["holder"] == {}


def test_sigkill_mid_canary_then_resume_finishes_it(
    stack: Stack, releases: Releases, load: LoadGenerator
) -> None:
    start_and_kill_mid_canary(stack, releases, V1)
    assert status(stack)["rollout"]["state"] == "interrupted"
    resumed = cli(stack, "rollout", "--resume")
    report = load.stop()
    assert resumed.rc == 0, resumed.stderr + json.dumps(resumed.of("step_failed"))
    no_failures(report)
    after = status(stack)
    assert after["fleet"]["live_versions"] == {V1: 200} and after["rollout"] is None
    assert after["lock"]["holder"] == {}
    assert all(w == V1 for w in after["fleet"]["workers"].values())


def test_a_lock_released_by_force_stops_the_running_rollout(
    stack: Stack, releases: Releases, load: LoadGenerator
) -> None:
    """`lock release --force` while a canary runs: the holder stops at its next step without
    rolling back (someone else owns the fleet now); `rollback` then repairs the split."""
    assert live(stack) == {V1: 200}
    proc = start_rollout(stack.inventory, releases, V2, "canary")
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["type"] == "step_started" and event["data"]["step"]["kind"] == "analysis":
            break
    forced = subprocess.run([CLI, "lock", "release", "--force", "-i", str(stack.inventory)],
                            capture_output=True, text=True, cwd=REPO, check=False)  # fmt: skip
    released = time.monotonic()
    assert forced.returncode == 0 and "stops at its next step" in forced.stdout, forced.stderr
    stdout, stderr = proc.communicate(timeout=300)
    stopped_after = time.monotonic() - released
    run = parse_run(proc.returncode, stdout, stderr, 0)
    assert run.rc == 4 and run.result["result"] == "stopped", stderr
    assert "The deploy lock was taken from this rollout (now free" in run.result["message"]
    assert not run.of("rollback_started")
    print(f"\nlock released by force: the rollout stopped {stopped_after:.1f} s later")
    assert stopped_after < 60
    state = status(stack)
    assert set(state["fleet"]["live_versions"]) == {V1, V2} and state["lock"]["holder"] == {}
    assert state["rollout"]["state"] == "stopped"  # left for `rollback` to undo
    back = cli(stack, "rollback", "-m", "after the forced release")
    report = load.stop()
    assert back.rc == 0, back.stderr
    no_failures(report)
    assert live(stack) == {V1: 200} and status(stack)["rollout"] is None


def test_site_yml_and_lb_weights_refuse_while_someone_holds_the_lock(stack: Stack) -> None:
    before = fleet_view(stack)
    held = subprocess.run([CLI, "lock", "acquire", "-i", str(stack.inventory), "-m", "db work"],
                          capture_output=True, text=True, cwd=REPO, check=False)  # fmt: skip
    assert held.returncode == 0, held.stderr
    try:
        drain = {"app1:blue": 0, "app1:green": 0, "app2:blue": 100, "app2:green": 0}
        weights = stack.playbook("lb-weights.yml", nginx_lb_slot_weights=drain)
        site = stack.playbook("site.yml")
    finally:
        subprocess.run([CLI, "lock", "release", "-i", str(stack.inventory)],
                       capture_output=True, text=True, cwd=REPO, check=True)  # fmt: skip
    for run in (weights, site):
        assert run.rc != 0
        assert "The deploy lock is held by" in run.output and '"db work"' in run.output
        # nothing ran past the lock check, on every lock host (group deploy_lock)
        assert set(run.recap) == {"lb1", "lb2", "data1"}, run.recap
        assert all(r["ok"] == 1 and r["failed"] == 1 for r in run.recap.values()), run.recap
    assert fleet_view(stack) == before


def test_a_database_outage_during_a_canary_pauses_it_instead_of_blaming_the_release(
    stack: Stack, releases: Releases, load: LoadGenerator
) -> None:
    """PostgreSQL goes away for a while in the canary's analysis window: both releases fail
    requests, so the error gate pauses the rollout (fleet-wide) instead of rolling back a
    healthy release; once the database is back the operator resumes and the canary goes on."""
    assert live(stack) == {V1: 200}
    proc = start_rollout(stack.inventory, releases, V2, "canary")
    assert proc.stdout is not None
    paused: dict[str, Any] = {}
    try:
        for line in proc.stdout:
            event = json.loads(line)
            if event["type"] == "step_started" and event["data"]["step"]["kind"] == "analysis":
                break
        time.sleep(12)  # into the analysis window (it starts 10 s after the weights change)
        stop = stack.on("data1", "systemctl", "stop", "patroni")
        assert stop.returncode == 0, stop.stderr
        stopped = time.monotonic()
        # the on-call view while the database is down answers at once and says so
        db = subprocess.run([CLI, "db", "status", "-i", str(stack.inventory), "--json"],
                            capture_output=True, text=True, cwd=REPO, check=False)  # fmt: skip
        time.sleep(max(0.0, 12 - (time.monotonic() - stopped)))
        start = stack.on("data1", "systemctl", "start", "patroni")
        assert start.returncode == 0, start.stderr
        back = time.monotonic()
        for line in proc.stdout:
            event = json.loads(line)
            assert event["type"] not in {"rollback_started", "step_failed"}, json.dumps(
                event["data"], indent=1
            )
            if event["type"] == "paused":
                paused = event["data"]
                break
        assert "fleet-wide" in paused.get("reason", ""), paused
        # the 30 s rates behind the gate must forget the outage before the canary goes on
        time.sleep(max(0.0, 45 - (time.monotonic() - back)))
        resumed = subprocess.run([CLI, "resume", "-i", str(stack.inventory)],
                                 capture_output=True, text=True, cwd=REPO, check=False)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        rest, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = load.stop()
    run = parse_run(proc.returncode, rest, stderr, 0)
    assert run.rc == 0, stderr + json.dumps(run.of("step_failed"))
    assert live(stack) == {V2: 200}
    assert db.returncode == 0, db.stdout + db.stderr
    db_status = json.loads(db.stdout)
    assert not db_status["ok"], db_status
    assert list(db_status["unreachable"]) == ["data1"] and db_status["seconds"] < 5, db_status
    print(f"\ndatabase outage mid-canary: paused with {paused['reason']!r}; "
          f"{report.failed} of {report.requests} requests failed during the outage, "
          "resumed and promoted")  # fmt: skip
    assert report.failed > 0  # the outage was real: both releases failed requests


# What a re-converge after rollouts may change: the rollouts installed releases (the bad canaries'
# too) on every app and worker host, and the app role prunes all but the newest few that no slot
# uses. Nothing else: this run is also the stack's idempotence check (site.yml's first run is
# the converge; the tests in between change only releases, weights and data).
# (The task's name ends with app_keep_releases.)
PRUNE = "app : Remove old releases, never one a slot uses or app_keep_versions names; keep "


def test_site_yml_after_the_rollouts_keeps_what_is_live_and_changes_nothing_else(
    stack: Stack, load: LoadGenerator
) -> None:
    """The inventory still says 1.0.0 in blue, and site.yml is given the 1.0.0 artifact with -e;
    the rollouts moved slots around and left 2.0.0 live. A plain re-converge must deploy what is
    live (recorded on the hosts), not undo it nor trip over the artifact of another version, and
    change nothing but the pruning of old releases. The old slots' stop timers the rollouts left
    are fired first: one firing during the run would stop a slot that site.yml never touched."""
    print(f"\nfired pending slot stops first: {fire_pending_slot_stops(stack) or 'none'}")
    before = status(stack)
    assert before["fleet"]["live_versions"] == {V2: 200}
    workers_before = worker_release_and_pids(stack)
    run = stack.playbook("site.yml")
    report = load.stop()
    assert run.rc == 0, run.tail()
    changed = run.changed_tasks
    print(f"site.yml after the rollouts: {run.seconds:.0f} s, changed: {changed or 'nothing'}")
    groups = inventory_groups(stack.inventory)
    release_hosts = set(groups["app"]) | set(groups["worker"])
    pruned = {task for task in changed if task.startswith(PRUNE)}
    assert set(changed) == pruned, run.tail(150)
    assert all(hosts <= release_hosts for hosts in changed.values()), changed
    # every change the recap counts is one of those (the output's parse missed none)
    assert {h for h, n in run.changed.items() if n} == set().union(*changed.values()), run.recap
    after = status(stack)
    assert after["fleet"]["live_versions"] == before["fleet"]["live_versions"]
    assert fleet_view(stack) == {
        host: {slot: (s["version"], s["active"], s["weight"]) for slot, s in h["slots"].items()}
        for host, h in before["fleet"]["hosts"].items()
    }
    # the workers neither moved nor restarted (the prune never touches what the celery slot uses)
    assert worker_release_and_pids(stack) == workers_before
    no_failures(report)
    targets = stack.on("data1", "cat", "/etc/prometheus/file_sd/app.yml").stdout
    for h in after["fleet"]["hosts"].values():
        port = 8001 if h["live_slot"] == "blue" else 8002
        assert f"{h['address']}:{port}" in targets, targets


def test_no_secret_reached_the_journal_or_a_runner_artifact(stack: Stack) -> None:
    secrets = stack.secrets()
    assert len(secrets) >= 5
    journals = list((stack.inventory.parent / ".inkdeploy" / "rollouts").glob("*.jsonl"))
    assert len(journals) >= 8
    for journal in journals:
        text = journal.read_text()
        leaked = [name for name, value in secrets.items() if value in text]
        assert not leaked, f"{journal.name} holds the value of {leaked}"
    # ansible-runner's private directories (artifacts, extra vars) are deleted after each run,
    # and those of a killed orchestrator by the next one: only running orchestrators have one
    for leftover in Path(tempfile.gettempdir()).glob("inkdeploy-runner-*"):
        pid = int(leftover.name.split("-")[2])
        assert Path(f"/proc/{pid}").exists(), f"{leftover} outlived its orchestrator"
