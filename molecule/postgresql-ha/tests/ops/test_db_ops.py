"""On-call drills for `inkdeploy db` on the converged three-member cluster (synchronous mode):

0. `db status` shows each replica's lag in bytes and seconds and etcd's health;
1. switchover under a steady committer (bench/pg_failover.py's writer, the app's multi-host DSN):
   no acknowledged commit lost, the write outage printed;
2. a refused switchover changes nothing;
3. pause, hard-kill the leader (Patroni fails nothing over while paused), `db failover --to` the
   sync standby, resume, boot the old leader: it rejoins as a replica;
4. wipe a replica's data directory under the running server, `db reinit` it: it streams again
   and has the rows written since.

The tests run in order and leave the cluster healthy, unpaused, with all three members, for the
scenario's kill-the-primary drill that follows.
"""

from __future__ import annotations

import itertools
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
# the lab's hosts.yml with its secrets, and Molecule's own inventory beside it
INVENTORY = str(Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ".")) / "inventory")
LAB = "mpgha"
LEADER_ROLES = ("leader", "master")


def inkdeploy(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([INKDEPLOY, *args], capture_output=True, text=True, check=False,
                          timeout=400)  # fmt: skip
    if check and proc.returncode != 0:
        pytest.fail(
            f"inkdeploy {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
        )
    return proc


def db(*args: str) -> dict:
    return json.loads(inkdeploy("db", *args, "-i", INVENTORY, "--json").stdout)


def healthy(members: list[dict]) -> bool:
    leaders = [m for m in members if m["role"] in LEADER_ROLES and m["state"] == "running"]
    running = [m for m in members if m["state"] in ("running", "streaming")]
    return (
        len(leaders) == 1
        and len(running) == 3
        and any(m["role"] == "sync_standby" for m in members)
    )


def test_db_status_shows_lag_in_seconds_and_etcd_health(cluster) -> None:
    """Each replica's lag in bytes and seconds (0 s once it has replayed everything), and
    etcd's three members healthy with one leader, read in one command within seconds."""
    cluster.wait_for(healthy, 120)
    with cluster.app_connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS lag_probe (at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO lag_probe DEFAULT VALUES")
    deadline = time.monotonic() + 30
    while True:
        status = db("status")
        replicas = [m for m in status["members"] if m["role"] not in LEADER_ROLES]
        caught_up = all(m["lag_bytes"] == 0 and m["lag_seconds"] == 0 for m in replicas)
        if caught_up or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(replicas) == 2 and caught_up, status["members"]
    etcd = status["etcd"]
    assert sorted(etcd["healthy"]) == sorted(cluster.addresses), etcd
    assert etcd["leader"] in cluster.addresses and etcd["problems"] == [], etcd
    print(f"\ndb status with lag in seconds and etcd: {status['seconds']:.2f} s inside the command")
    assert status["seconds"] < 3


def test_switchover_under_write_load_loses_no_acknowledged_commit(cluster, committer) -> None:
    cluster.wait_for(healthy, 120)
    with cluster.app_connect() as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_failover"
            " (run int, seq int, at timestamptz DEFAULT now(), PRIMARY KEY (run, seq))"
        )
    writer = Writer(committer, run=101, rate=50)
    thread = threading.Thread(target=writer.loop, daemon=True)
    thread.start()
    time.sleep(3)
    started = time.monotonic()
    result = db("switchover")
    command_s = time.monotonic() - started
    time.sleep(3)
    writer.stop.set()
    thread.join(15)

    assert (
        result["changed"] and result["leader_after"] == result["target"] != result["leader_before"]
    )
    assert result["old_leader_back_s"] is not None, result["message"]
    acked = writer.acked
    with cluster.app_connect_retrying(30) as conn:
        stored = {r[0] for r in conn.execute("SELECT seq FROM bench_failover WHERE run = 101")}
    lost = sorted(set(acked) - stored)
    times = sorted(acked.values())
    outage = max(b - a for a, b in itertools.pairwise(times))
    print(
        f"\ndb switchover {result['leader_before']} -> {result['target']} under 50 commits/s: "
        f"leader after {result['seconds']:.1f} s, old leader streaming after "
        f"{result['old_leader_back_s']:.1f} s, command {command_s:.1f} s; write outage "
        f"{outage:.2f} s; {len(acked)} commits acknowledged, {len(lost)} lost, "
        f"{writer.failures} failed attempts"
    )
    assert not lost, f"acknowledged commits missing after the switchover: {lost[:10]}"
    assert outage < 15, f"writes stopped for {outage:.1f} s during the switchover"


def test_a_refused_switchover_says_why_and_changes_nothing(cluster) -> None:
    leader = cluster.primary()
    proc = inkdeploy("db", "switchover", "--to", leader, "-i", INVENTORY, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{leader} is the leader already" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert cluster.primary() == leader


def test_paused_cluster_fails_over_only_to_the_named_member(cluster) -> None:
    assert db("pause")["changed"]
    leader = cluster.primary()
    members = cluster.wait_for(lambda ms: any(m["role"] == "sync_standby" for m in ms), 60)
    standby = next(m["name"] for m in members if m["role"] == "sync_standby")
    with cluster.app_connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ops_marker (token text PRIMARY KEY)")
        conn.execute("INSERT INTO ops_marker VALUES ('before-kill')")
    subprocess.run([INKDEPLOY, "lab", "kill", "--lab", LAB, leader], check=True)
    try:
        time.sleep(20)  # longer than Patroni's ttl: unpaused, a new leader would be running now
        status = db("status")
        assert status["paused"]
        # the killed leader was an etcd member too: named, and the two others keep quorum
        assert list(status["etcd"]["unreachable"]) == [leader], status["etcd"]
        assert len(status["etcd"]["healthy"]) == 2 and status["etcd"]["problems"] == []
        assert not any(
            m["role"] in LEADER_ROLES and m["state"] == "running" and m["name"] != leader
            for m in status["members"]
        ), status["members"]

        result = db("failover", "--to", standby, "--yes")
        print(f"\ndb failover --to {standby} with {leader} killed, cluster paused: leader "
              f"after {result['seconds']:.1f} s (ran on {result['ran_on']})")  # fmt: skip
        assert result["leader_after"] == standby
        with cluster.app_connect_retrying(30) as conn:
            assert conn.info.host == cluster.addresses[standby]
            assert conn.execute("SELECT count(*) FROM ops_marker").fetchone()[0] == 1
    finally:
        db("resume")
        subprocess.run([INKDEPLOY, "lab", "start", "--lab", LAB, leader], check=True)
    assert not db("status")["paused"]
    back = cluster.wait_for(
        lambda ms: (
            healthy(ms) and any(m["name"] == leader and m["role"] not in LEADER_ROLES for m in ms)
        ),
        180,
    )
    assert next(m["name"] for m in back if m["role"] in LEADER_ROLES) == standby


def test_reinit_rebuilds_a_replica_whose_data_directory_was_wiped(cluster) -> None:
    members = cluster.wait_for(healthy, 120)
    replica = next(m["name"] for m in members if m["role"] == "replica")
    host = cluster.host(replica)
    host.run_expect([0], "rm -rf /var/lib/postgresql/15/main/*")
    assert host.check_output("ls -A /var/lib/postgresql/15/main") == ""

    result = db("reinit", replica, "--yes")
    print(f"\ndb reinit {replica} (data directory wiped): streaming again after "
          f"{result['seconds']:.1f} s")  # fmt: skip
    assert result["changed"] and result["target"] == replica
    assert host.file("/var/lib/postgresql/15/main/global/pg_control").exists
    with cluster.app_connect() as conn:
        conn.execute("INSERT INTO ops_marker VALUES ('after-reinit')")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with cluster.app_connect(host=cluster.addresses[replica], target_session_attrs="any") as c:
            rows = c.execute("SELECT count(*) FROM ops_marker").fetchone()[0]
        if rows == 2:
            break
        time.sleep(1)
    assert rows == 2, f"{replica} has {rows} of the 2 marker rows after reinit"
    cluster.wait_for(healthy, 60)
