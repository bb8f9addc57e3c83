"""The deploy lock: the Ansible module that holds it (run for real on this machine against a
temporary directory) and the controller's reading of a holder (stale or not)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from inkdeploy.runner import PROJECT
from inkdeploy.state.lock import describe_holder, staleness

MODULE = PROJECT / "playbooks/rollout/library/inkdeploy_lock.py"


def lock_module(directory: Path, **args: Any) -> dict[str, Any]:
    """One run of playbooks/rollout/library/inkdeploy_lock, as Ansible runs a module: a Python
    process that reads its arguments from a JSON file."""
    arguments = {"name": "inkapp", "dir": str(directory), **args}
    argfile = directory / f"args-{time.monotonic_ns()}.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": arguments}))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(argfile)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    result = json.loads(proc.stdout)
    assert not result.get("failed"), result
    return result


def holder(rollout: str, **extra: Any) -> dict[str, Any]:
    return {"user": "alice", "controller": "ops1", "pid": 1, "rollout": rollout,
            "version": "2.0.0", "strategy": "canary", "message": "friday fix", **extra}  # fmt: skip


def test_only_one_of_several_racing_controllers_gets_the_lock(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(
            lambda i: lock_module(tmp_path, state="acquire", holder=holder(f"r{i}")), range(5)
        ))  # fmt: skip
    winners = [r for r in results if r["acquired"]]
    assert len(winners) == 1
    owner = winners[0]["holder"]["rollout"]
    # every loser is told who won
    assert all(r["holder"]["rollout"] == owner for r in results if not r["acquired"])
    assert json.loads((tmp_path / "inkapp.lock").read_text())["rollout"] == owner


def test_release_only_by_its_rollout_or_force_and_history_is_appended(tmp_path: Path) -> None:
    lock_module(tmp_path, state="acquire", holder=holder("r1"))
    other = lock_module(tmp_path, state="release", rollout="r2")
    assert other["holder"]["rollout"] == "r1"  # not released by someone else
    record = {"rollout": "r1", "version": "2.0.0", "result": "succeeded"}
    mine = lock_module(tmp_path, state="release", rollout="r1", record=record)
    assert mine["holder"] == {} and mine["history"][-1] == record
    lock_module(tmp_path, state="acquire", holder=holder("r3"))
    forced = lock_module(tmp_path, state="release", force=True)
    assert forced["holder"] == {}
    # a resumed rollout takes its own lock back; nobody else does
    lock_module(tmp_path, state="acquire", holder=holder("r4"))
    assert lock_module(tmp_path, state="acquire", holder=holder("r4"), rollout="r4")["acquired"]
    assert not lock_module(tmp_path, state="acquire", holder=holder("r5"))["acquired"]


def test_a_holder_whose_process_is_gone_is_stale_and_says_so() -> None:
    import socket

    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    dead = holder("r1", controller=socket.gethostname(), pid=proc.pid, acquired_at=time.time())
    assert staleness(dead, 7200) == "stale: that process no longer runs on this controller"
    alive = holder("r1", controller=socket.gethostname(), pid=os.getpid(),
                   acquired_at=time.time())  # fmt: skip
    assert staleness(alive, 7200) == ""
    old = holder("r1", acquired_at=time.time() - 3 * 3600)
    assert staleness(old, 7200) == "possibly stale: older than 2.0 h"
    text = describe_holder(old, 7200)
    assert text.startswith("alice on ops1 (pid 1) since ")
    assert 'rolling out 2.0.0 (canary): "friday fix" [possibly stale' in text


def test_a_lease_that_is_not_renewed_expires_and_the_next_acquire_takes_over(
    tmp_path: Path,
) -> None:
    # a 4 s lease: each module run is a Python process (up to a second on a loaded machine)
    first = lock_module(tmp_path, state="acquire", holder=holder("r1"), lease_s=4)
    assert first["acquired"] and first["holder"]["lease_s"] == 4
    # renewed by its owner: still held past the first lease; someone else's heartbeat renews
    # nothing
    time.sleep(2.5)
    assert lock_module(tmp_path, state="heartbeat", rollout="r1")["acquired"]
    assert not lock_module(tmp_path, state="heartbeat", rollout="r2")["acquired"]
    time.sleep(1.6)  # past the first lease, inside the renewed one
    assert not lock_module(tmp_path, state="acquire", holder=holder("r2"))["acquired"]
    # silent for longer than the lease: the holder is reported expired and loses the lock
    time.sleep(4.2)
    seen = lock_module(tmp_path, state="query")["holder"]
    assert seen["rollout"] == "r1" and seen["expired"] is True
    assert staleness(seen, 7200).startswith("stale: its lease ran out")
    taken = lock_module(tmp_path, state="acquire", holder=holder("r2"), lease_s=30)
    assert taken["acquired"] and taken["holder"]["rollout"] == "r2"
    assert taken["took_over"]["rollout"] == "r1"
    assert taken["history"][-1]["result"] == "taken_over"
    # the dead holder's next heartbeat learns it lost the lock and gets the new holder
    late = lock_module(tmp_path, state="heartbeat", rollout="r1")
    assert not late["acquired"] and late["holder"]["rollout"] == "r2"


def test_a_heartbeat_never_brings_back_a_released_lock(tmp_path: Path) -> None:
    lock_module(tmp_path, state="acquire", holder=holder("r1"), lease_s=30)
    lock_module(tmp_path, state="release", force=True)
    beat = lock_module(tmp_path, state="heartbeat", rollout="r1")
    assert not beat["acquired"] and beat["holder"] == {}
    assert not (tmp_path / "inkapp.lock").exists()


def test_an_empty_lock_file_is_held_briefly_then_counts_as_free(tmp_path: Path) -> None:
    lock = tmp_path / "inkapp.lock"
    lock.write_text("")  # a crash between creating and writing (older versions), a full disk
    fresh = lock_module(tmp_path, state="acquire", holder=holder("r1"))
    assert not fresh["acquired"] and fresh["holder"]["corrupt"] is True
    assert describe_holder(fresh["holder"], 7200).startswith("an unreadable lock file")
    old = time.time() - 120
    os.utime(lock, (old, old))
    assert lock_module(tmp_path, state="query")["holder"] == {}
    taken = lock_module(tmp_path, state="acquire", holder=holder("r2"))
    assert taken["acquired"]
    assert json.loads(lock.read_text())["rollout"] == "r2"
    # the lock is put in place whole (linked from a temporary file that is then removed)
    assert not list(tmp_path.glob("*.tmp"))
