"""`inkdeploy workers restart` drill: 20 tasks of 3-5 s are running and queued while the workers
restart one host at a time. Every task must finish exactly once (none lost to the warm shutdown,
none run twice), worker2 must serve the queue while worker1 restarts, and an unknown queue must
be refused without restarting anything."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from celery_client import run

testinfra_hosts = ["worker1"]

WORKERS = ["worker1", "worker2"]
UNITS = "inkapp-celery-worker@celery inkapp-celery-beat"
TASKS = 20
INKDEPLOY = Path(sys.executable).parent / "inkdeploy"
# Run on worker1 after `drill, count = ...`: wait for every task's "done" mark, then a little
# longer (a task delivered twice would count again), and print the drill's cache entries.
COLLECT = """
marks = ("started", "done", "result")
keys = [f"inkapp:tally:{drill}:{n}:{mark}" for n in range(count) for mark in marks]
deadline = time.time() + 180
while True:
    got = cache.get_many(keys)
    if sum(1 for k in got if k.endswith(":done")) == count or time.time() > deadline:
        break
    time.sleep(1)
time.sleep(6)
got = cache.get_many(keys)
print(json.dumps({k.split(":", 3)[3]: v for k, v in got.items()}))
"""


def inkdeploy(host: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as on-call runs it, on the scenario's inventory (hosts, keys, group_vars)."""
    inventory = host.backend.ansible_inventory
    return subprocess.run(
        [str(INKDEPLOY), "workers", "restart", "-i", inventory, *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def main_pids(host: Any) -> dict[str, str]:
    """Unit -> main PID on each worker host (a restart changes it)."""
    inventory = host.backend.ansible_inventory
    pids = {}
    for name in WORKERS:
        other = host.get_host(f"ansible://{name}", ansible_inventory=inventory)
        out = other.check_output(f"systemctl show -p MainPID --value {UNITS}").split()
        pids.update({f"{name}:{unit}": pid for unit, pid in zip(UNITS.split(), out, strict=True)})
    return pids


def test_an_unknown_queue_is_refused_and_nothing_restarts(host: Any) -> None:
    before = main_pids(host)
    result = inkdeploy(host, "--queue", "no-such-queue")
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert 'No worker serves queue "no-such-queue" in this inventory (queues: celery)' in message
    assert main_pids(host) == before


def test_restart_one_host_at_a_time_loses_no_task_and_runs_none_twice(
    host: Any, capsys: Any
) -> None:
    drill = uuid.uuid4().hex[:12]
    before = main_pids(host)
    queued = run(
        host,
        f"ids = [tasks.tally.delay('{drill}', n, 3 + n % 3).id for n in range({TASKS})]; "
        "print(json.dumps({'ids': ids}))",
    )
    assert len(set(queued["ids"])) == TASKS
    time.sleep(1)  # the workers take their first tasks: some run, the rest wait in the queue
    began = time.monotonic()
    restart = inkdeploy(host, "--json", "-m", "molecule restart drill")
    took = time.monotonic() - began
    assert restart.returncode == 0, restart.stdout + restart.stderr
    result = json.loads(restart.stdout)
    hosts = result["hosts"]
    assert [h["host"] for h in hosts] == WORKERS and result["restarted"] == WORKERS
    assert result["lock"] == "none in this inventory"
    # one after the other: worker2 began only once worker1 answered its ping again
    assert hosts[0]["ended_at"] <= hosts[1]["began_at"]
    after = main_pids(host)
    for name in WORKERS:
        assert (
            after[f"{name}:inkapp-celery-worker@celery"]
            != before[f"{name}:inkapp-celery-worker@celery"]
        )
    # beat is left alone without --beat
    assert after["worker1:inkapp-celery-beat"] == before["worker1:inkapp-celery-beat"]

    tally = run(host, f"drill, count = {drill!r}, {TASKS}\n" + COLLECT)
    started = {n: tally.get(f"{n}:started", 0) for n in range(TASKS)}
    done = {n: tally.get(f"{n}:done", 0) for n in range(TASKS)}
    results = [tally[f"{n}:result"] for n in range(TASKS) if f"{n}:result" in tally]
    lost = [n for n in range(TASKS) if done[n] == 0]
    twice = [n for n in range(TASKS) if started[n] > 1 or done[n] > 1]
    # the queue kept being served: worker2 ran a task while worker1 restarted
    w1 = hosts[0]
    served = [r for r in results if r["worker"] == "worker2"
              and r["started"] < w1["ended_at"] and r["finished"] > w1["began_at"]]  # fmt: skip
    # the warm shutdown let the tasks running on worker1 when its restart began finish there
    finished_through = [
        r
        for r in results
        if r["worker"] == "worker1" and r["started"] < w1["began_at"] < r["finished"]
    ]
    with capsys.disabled():
        print()
        for h in hosts:
            print(
                f"restart drill: {h['host']}: warm shutdown {h['stop_s']} s, ping answered "
                f"{h['ping_s']} s after the start, {h['seconds']} s in all "
                f"(window {h['ended_at'] - h['began_at']:.2f} s)"
            )
        print(
            f"restart drill: total {result['seconds']} s (command {took:.1f} s); tasks "
            f"completed {TASKS - len(lost)}/{TASKS}, lost {lost}, run twice {twice}; "
            f"by worker1 {sum(r['worker'] == 'worker1' for r in results)}, by worker2 "
            f"{sum(r['worker'] == 'worker2' for r in results)}; tasks worker2 ran during "
            f"worker1's restart: {len(served)}; running on worker1 when its stop began and "
            f"finished there: {len(finished_through)}"
        )
    assert not lost, f"tasks lost: {lost}"
    assert not twice, f"tasks run twice: {twice}"
    assert served, "no task ran on worker2 while worker1 restarted"
    assert finished_through, "no task was running on worker1 when its restart began"
