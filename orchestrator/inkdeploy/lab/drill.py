"""Rehearsals on a lab: run the project's playbooks against a lab inventory, change load balancer
weights, and measure what a drain or a hard kill costs the clients of the load balancer.

Used by the end-to-end tests (tests/stack) and the benchmarks (bench/drain.py); the load
comes from `inkdeploy.loadgen`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inkdeploy.loadgen import LoadConfig, LoadGenerator, Report

PROJECT = Path(__file__).resolve().parents[3]
PLAYBOOKS = PROJECT / "playbooks"
CLI = str(Path(sys.executable).with_name("inkdeploy"))
_RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.M)
# The default callback's task and handler headers, and its "changed: [host]" result lines (with
# "=> (item=...)" for loops, "-> delegate" for delegation).
_TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<task>.*)\] \*+$")
_CHANGED = re.compile(r"^changed: \[(?P<host>[^\]\s]+)")


@dataclass(frozen=True)
class PlaybookRun:
    """One ansible-playbook run: exit code, wall time, output and the PLAY RECAP per host."""

    playbook: str
    rc: int
    seconds: float
    output: str
    recap: dict[str, dict[str, int]]

    @property
    def changed(self) -> dict[str, int]:
        return {host: counts.get("changed", 0) for host, counts in self.recap.items()}

    @property
    def changed_tasks(self) -> dict[str, set[str]]:
        """{task or handler name ("role : name"): the hosts it changed} from the output."""
        return changed_tasks(self.output)

    @property
    def failed_hosts(self) -> list[str]:
        return [
            host
            for host, counts in self.recap.items()
            if counts.get("failed", 0) or counts.get("unreachable", 0)
        ]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def changed_tasks(output: str) -> dict[str, set[str]]:
    """The tasks and handlers that reported a change in ansible-playbook's output (the default
    callback), each with the hosts it changed."""
    changed: dict[str, set[str]] = {}
    task = ""
    for line in output.splitlines():
        if header := _TASK.match(line):
            task = header.group("task")
        elif result := _CHANGED.match(line):
            changed.setdefault(task, set()).add(result.group("host"))
    return changed


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP block of ansible-playbook's output as {host: {ok: n, changed: n, ...}}."""
    _, _, recap = output.rpartition("PLAY RECAP")
    result: dict[str, dict[str, int]] = {}
    for match in _RECAP.finditer(recap):
        counts = dict(pair.split("=") for pair in match.group("counts").split())
        result[match.group("host")] = {key: int(value) for key, value in counts.items()}
    return result


def run_playbook(
    playbook: str,
    inventory: Path,
    extra_vars: dict[str, object] | None = None,
    timeout: float = 3600,
    limit: str | None = None,
) -> PlaybookRun:
    """Run playbooks/PLAYBOOK against INVENTORY (only the hosts of LIMIT, if given) with the
    project's ansible.cfg."""
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOKS / playbook)]
    if limit:
        cmd += ["--limit", limit]
    if extra_vars:
        cmd += ["--extra-vars", json.dumps(extra_vars)]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    started = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - started
    return PlaybookRun(playbook, proc.returncode, seconds, proc.stdout, parse_recap(proc.stdout))


def lab_inventory(work: Path) -> Path:
    """Where a lab's hosts.yml goes (pass it to `lab up --inventory`), in WORK/inventory with
    the lab's group_vars (inventories/lab/group_vars, the demo's settings) linked beside it."""
    inventory_dir = work / "inventory"
    inventory_dir.mkdir()
    (inventory_dir / "group_vars").symlink_to(PROJECT / "inventories/lab/group_vars")
    return inventory_dir / "hosts.yml"


def wait_slot_healthy(
    lab: str, host: str, version: str, port: int = 8001, timeout: float = 90
) -> float:
    """Seconds until HOST's slot on PORT answers /healthz with VERSION; TimeoutError if never."""
    started = time.monotonic()
    answer = ""
    while time.monotonic() - started < timeout:
        proc = subprocess.run(
            [CLI, "lab", "exec", "--lab", lab, host, "--", "curl", "-fsS", "-H", "Host: localhost",
             f"http://127.0.0.1:{port}/healthz"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        answer = proc.stdout
        if proc.returncode == 0 and version in answer:
            return time.monotonic() - started
        time.sleep(2)
    raise TimeoutError(
        f"{host}'s slot on port {port} did not serve {version} within {timeout:.0f} s: {answer}"
    )


def inventory_groups(inventory: Path) -> dict[str, list[str]]:
    """Group name to host names, from a hosts.yml as `inkdeploy lab up` writes it."""
    data = yaml.safe_load(inventory.read_text())["all"]
    return {name: sorted(group.get("hosts") or {}) for name, group in data["children"].items()}


def inventory_address(inventory: Path, host: str) -> str:
    return yaml.safe_load(inventory.read_text())["all"]["hosts"][host]["ansible_host"]


@dataclass(frozen=True)
class DrillResult:
    """What the clients saw during one drill, and how long its steps took."""

    name: str
    report: Report
    steps: dict[str, float]  # step name -> seconds it took
    marks: dict[str, float]  # event -> wall-clock time (epoch seconds), for matching logs
    answers: dict[str, Any] = field(default_factory=dict)  # what commands of the drill said

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "steps_s": self.steps,
            "marks": self.marks,
            "load": self.report.to_dict(),
        }


def _load(url: str, cacert: Path, rate: float) -> LoadGenerator:
    return LoadGenerator(LoadConfig(url, cacert=str(cacert), rate=rate, concurrency=8)).start()


def drain_drill(
    inventory: Path, url: str, cacert: Path, host: str, rate: float = 100, settle: float = 5
) -> DrillResult:
    """Under steady load: `inkdeploy drain HOST` (every LB, then the wait for requests in
    flight), wait, `inkdeploy undrain HOST`, wait. The commands' JSON answers are in `answers`."""
    gen = _load(url, cacert, rate)
    steps: dict[str, float] = {}
    marks: dict[str, float] = {}
    answers: dict[str, dict[str, Any]] = {}
    try:
        time.sleep(settle)
        steps["drain"], answers["drain"] = _on_call(inventory, "drain", host)
        marks["drained"] = time.time()
        time.sleep(settle)
        marks["returning"] = time.time()
        steps["return"], answers["undrain"] = _on_call(inventory, "undrain", host)
        marks["returned"] = time.time()
        time.sleep(settle)
    finally:
        report = gen.stop()
    return DrillResult(f"drain {host}", report, steps, marks, answers)


def _on_call(inventory: Path, verb: str, host: str) -> tuple[float, dict[str, Any]]:
    """Seconds and JSON answer of `inkdeploy VERB HOST`; RuntimeError with its message if it
    fails."""
    started = time.monotonic()
    proc = subprocess.run(
        [CLI, verb, host, "-i", str(inventory), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"inkdeploy {verb} {host} failed: {proc.stderr.strip()}")
    return seconds, json.loads(proc.stdout)


def kill_drill(
    inventory: Path,
    url: str,
    cacert: Path,
    host: str,
    lab: str,
    rate: float = 100,
    settle: float = 5,
    after: float = 30,
    while_down: Callable[[], Any] | None = None,
) -> DrillResult:
    """Under steady load: hard power cut of HOST (`inkdeploy lab kill`), AFTER seconds of load
    while passive health checks take it out, then WHILE_DOWN (if given: what an on-call engineer
    does with the host down; its result is in `answers["while_down"]`), then the host is started
    again (not measured)."""
    gen = _load(url, cacert, rate)
    answers: dict[str, Any] = {}
    steps: dict[str, float] = {}
    marks: dict[str, float] = {}
    try:
        time.sleep(settle)
        marks["kill"] = time.time()
        started = time.monotonic()
        subprocess.run([CLI, "lab", "kill", "--lab", lab, host], check=True, capture_output=True)
        steps["kill"] = time.monotonic() - started
        time.sleep(after)
        if while_down:
            answers["while_down"] = while_down()
    finally:
        report = gen.stop()
    started = time.monotonic()
    subprocess.run([CLI, "lab", "start", "--lab", lab, host], check=True, capture_output=True)
    steps["restart"] = time.monotonic() - started
    return DrillResult(f"kill {host}", report, steps, marks, answers)
