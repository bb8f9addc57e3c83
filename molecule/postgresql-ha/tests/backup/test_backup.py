"""pgBackRest on the three-member cluster (synchronous mode) with its repository on backup1:

1. the role's setup: stanza, a first full backup taken from a replica, timers;
2. a failover while WAL is archived under a steady committer: the primary is hard-killed, the
   new primary archives on, and `inkdeploy restore --latest` brings back every acknowledged
   commit, with a leader and two streaming replicas at the end.

Runs last in the scenario: the restore replaces the cluster (a new timeline, cloned replicas).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO))
from bench.pg_failover import Writer  # noqa: E402

INKDEPLOY = str(Path(sys.executable).parent / "inkdeploy")
INVENTORY = str(Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ".")) / "inventory")
LAB = "mpgha"
LEADER_ROLES = ("leader", "master")
RUN = 301


def inkdeploy(*args: str, timeout: float = 900) -> dict:
    proc = subprocess.run([INKDEPLOY, *args, "-i", INVENTORY, "--json"], capture_output=True,
                          text=True, check=False, timeout=timeout)  # fmt: skip
    if proc.returncode != 0:
        said = proc.stdout + proc.stderr
        pytest.fail(f"inkdeploy {' '.join(args)} exited {proc.returncode}: {said}")
    return json.loads(proc.stdout)


def lab(*args: str) -> None:
    subprocess.run([INKDEPLOY, "lab", *args], check=True, capture_output=True, timeout=120)


def all_running(members: list[dict]) -> bool:
    leaders = [m for m in members if m["role"] in LEADER_ROLES and m["state"] == "running"]
    running = [m for m in members if m["state"] in ("running", "streaming")]
    return len(leaders) == 1 and len(running) == 3


def test_the_role_made_a_stanza_and_a_first_full_backup_from_a_replica(cluster) -> None:
    listed = inkdeploy("backup", "list")
    assert listed["status"] == "ok" and listed["repo_host"] == "backup1"
    assert any(b["type"] == "full" and not b["error"] for b in listed["backups"])
    timers = cluster.host("backup1").check_output(
        "systemctl list-timers --all --no-legend 'pgbackrest-*' | awk '{print $(NF-1)}'"
    )
    assert set(timers.split()) >= {
        "pgbackrest-backup-full.timer", "pgbackrest-backup-diff.timer", "pgbackrest-metrics.timer",
    }  # fmt: skip
    conf = cluster.host("backup1").file("/etc/pgbackrest.conf").content_string
    assert "backup-standby=y" in conf and "pg3-host=" in conf


def test_a_failover_while_archiving_loses_nothing_and_restore_latest_brings_it_all_back(
    cluster, committer
) -> None:
    cluster.wait_for(all_running, 180)
    with cluster.app_connect() as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_failover"
            " (run int, seq int, at timestamptz DEFAULT now(), PRIMARY KEY (run, seq))"
        )
        conn.execute("DELETE FROM bench_failover WHERE run = %s", (RUN,))
    writer = Writer(committer, run=RUN, rate=50)
    thread = threading.Thread(target=writer.loop, daemon=True)
    thread.start()
    old = cluster.primary()
    # segments switch and go to the archive while the writer commits, up to the kill
    for _ in range(3):
        cluster.sql(old, "SELECT pg_switch_wal()")
        time.sleep(1)
    killed_at = time.monotonic()
    lab("kill", "--lab", LAB, old)
    new = cluster.new_primary(old, 90)
    failover_s = time.monotonic() - killed_at
    time.sleep(8)  # the new primary takes writes, and archives them
    writer.stop.set()
    thread.join(30)
    acked = set(writer.acked)
    # the new primary archives: pgbackrest check switches a segment there and waits for it
    checked = inkdeploy("backup", "check")
    assert checked["ok"], checked["problems"]
    lab("start", "--lab", LAB, old)
    cluster.wait_for(all_running, 240)
    began = time.monotonic()
    result = inkdeploy("restore", "--latest", "--yes", timeout=1800)
    wall = time.monotonic() - began
    leader = result["leader_after"]
    assert leader == new  # the leader answered: it is the member restored
    assert sorted(result["replicas"]) == sorted(h for h in cluster.addresses if h != leader)
    members = cluster.wait_for(all_running, 120)
    assert next(m["timeline"] for m in members if m["name"] == leader) > 1
    with cluster.app_connect_retrying(60) as conn:
        stored = {r[0] for r in conn.execute(
            "SELECT seq FROM bench_failover WHERE run = %s", (RUN,))}  # fmt: skip
    missing = sorted(acked - stored)
    print(
        f"\nbackup drill: {len(acked)} commits acknowledged across a failover after "
        f"{failover_s:.1f} s ({writer.failures} failed tries while no primary answered); "
        f"restore --latest: RTO {result['rto_s']} s, command {wall:.1f} s, "
        f"{len(missing)} acknowledged commits missing"
    )
    assert missing == [], missing[:20]
    # commits on both sides of the kill: the old primary's (archived before it died, or
    # streamed to the sync standby) and the new primary's
    times = list(writer.acked.values())
    assert sum(t < killed_at for t in times) > 50 and sum(t > killed_at for t in times) > 50
    assert result["problems"] == []
