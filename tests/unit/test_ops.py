"""On-call status verbs without a fleet: what Patroni's members and the sentinels answer (real
answer shapes) becomes members, leader, lag, master, replicas and one-sentence problems; a member
that does not answer is named, not waited for twice. The lab runs them for real
(tests/stack/test_stack.py)."""

from __future__ import annotations

import json
import socket
import time

from typer.testing import CliRunner

from inkdeploy.ops.db import db_status, summarize
from inkdeploy.ops.redis import summarize as summarize_redis
from inkdeploy.preflight import Observation
from tests.unit.test_preflight import JsonServer, cluster, config, down, fleet, leader, member


def test_db_status_shows_members_leader_sync_standby_and_lag() -> None:
    view = cluster("db1", leader("db1"), member("db2", "sync_standby", lag=0),
                   member("db3", "replica", lag=3 << 20))  # fmt: skip
    status = summarize([view, cluster("db2", *view.data["members"]), down("db3")],
                       [config("db1", True)], False)  # fmt: skip
    assert status.problems == [
        "Patroni on db3 (db3:8008) did not answer GET /cluster: no answer within 2 s; check "
        "'systemctl status patroni' on db3."
    ]
    assert (status.leader, status.sync_standbys, status.synchronous_mode) == ("db1", ["db2"], True)
    assert status.seen_by == "db1"
    assert [(m.name, m.role, m.lag_bytes) for m in status.members] == [
        ("db1", "leader", None), ("db2", "sync_standby", 0), ("db3", "replica", 3 << 20)
    ]  # fmt: skip
    assert status.unreachable == {"db3": "no answer within 2 s"}
    assert status.to_dict()["members"][0]["timeline"] == 3


def test_db_status_says_what_is_wrong_without_the_rollouts_force_option() -> None:
    no_leader = summarize(
        [cluster("db1", member("db1", state="running"), member("db2"))], [], False
    )
    assert not no_leader.ok and no_leader.leader is None
    assert no_leader.problems[0].startswith("Patroni on db1 reports no leader")
    assert all("--force" not in p for p in no_leader.problems)
    nobody = summarize([down("db1"), down("db2", "connection refused")], [], False)
    assert nobody.members == [] and set(nobody.unreachable) == {"db1", "db2"}
    assert any("did not answer GET /cluster" in p for p in nobody.problems)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_db_status_asks_every_member_at_once_and_names_the_dead_one() -> None:
    members = {"members": [leader("db1"), member("db2", "sync_standby")]}
    routes = {"/cluster": members, "/config": {"synchronous_mode": True}}
    with JsonServer(routes) as db1:
        env = fleet(patroni={"db1": db1.port, "db2": _closed_port()}, sentinels={}, lbs={},
                    prometheus=None)  # fmt: skip
        began = time.monotonic()
        status = db_status(env)
        seconds = time.monotonic() - began
    assert status.leader == "db1" and status.sync_standbys == ["db2"]
    assert status.unreachable == {"db2": "connection refused"}
    port = env.hostvars["db2"]["patroni_restapi_port"]
    assert status.problems == [
        f"Patroni on db2 (127.0.0.1:{port}) did not answer GET /cluster: connection refused; "
        "check 'systemctl status patroni' on db2."
    ]
    assert seconds < 2


def test_db_status_cli_prints_json_for_automation(monkeypatch) -> None:
    routes = {"/cluster": {"members": [leader("db1")]}, "/config": {"synchronous_mode": False}}
    with JsonServer(routes) as db1:
        env = fleet(patroni={"db1": db1.port}, sentinels={}, lbs={}, prometheus=None)
        monkeypatch.setattr("inkdeploy.ops.cli.load_environment", lambda _inventory, **_kw: env)
        from inkdeploy.cli import app

        result = CliRunner().invoke(app, ["db", "status", "-i", "x", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["ok"], data["leader"], data["unreachable"]) == (True, "db1", {})
    assert data["members"][0]["role"] == "leader"


def sentinel(
    host: str, master: list[str] | None, flags: str = "master", replicas=()
) -> Observation:
    info = ["name", "inkdeploy", "ip", master[0] if master else "", "flags", flags]
    entries = [["ip", ip, "port", "6379", "flags", f, "master-link-status", link,
                "slave-repl-offset", "4242", "master-link-down-time", "0"]
               for ip, f, link in replicas]  # fmt: skip
    return Observation(host, f"{host}:26379", 0.01, data=[master, info, entries])


def test_redis_status_names_the_agreed_master_and_the_replicas_link_state() -> None:
    hosts = {"10.0.0.5": "redis1", "10.0.0.6": "redis2", "10.0.0.7": "redis3"}
    replicas = [("10.0.0.6", "slave", "ok"), ("10.0.0.7", "slave", "ok")]
    obs = [sentinel(f"s{i}", ["10.0.0.5", "6379"], replicas=replicas) for i in (1, 2)]
    status = summarize_redis([*obs, down("s3")], "inkdeploy", hosts)
    assert status.ok, status.problems
    assert (status.master, status.master_host) == ("10.0.0.5:6379", "redis1")
    assert status.said == {"s1": "10.0.0.5:6379", "s2": "10.0.0.5:6379"}
    assert status.unreachable == {"s3": "no answer within 2 s"}
    assert [(r.host, r.link, r.offset) for r in status.replicas] == [
        ("redis2", "ok", 4242), ("redis3", "ok", 4242)
    ]  # fmt: skip


def test_redis_status_problems_a_split_a_down_master_and_a_broken_replica() -> None:
    hosts = {"10.0.0.5": "redis1", "10.0.0.6": "redis2"}
    split = summarize_redis(
        [sentinel("s1", ["10.0.0.5", "6379"]), sentinel("s2", ["10.0.0.6", "6379"])],
        "inkdeploy", hosts,
    )  # fmt: skip
    assert split.problems[0].startswith('The sentinels disagree on the Redis master of "inkdeploy"')
    assert "--force" not in split.problems[0]
    broken = summarize_redis(
        [sentinel("s1", ["10.0.0.5", "6379"], flags="master,s_down",
                  replicas=[("10.0.0.6", "slave,disconnected", "err")])],
        "inkdeploy", hosts,
    )  # fmt: skip
    assert broken.master_flags == ["master", "s_down"]
    assert any("flags the master 10.0.0.5:6379 as master,s_down" in p for p in broken.problems)
    assert any(p.startswith("Replica redis2 is not replicating") for p in broken.problems)


def test_status_lists_firing_alerts_most_severe_first_without_the_watchdog() -> None:
    from inkdeploy.ops.overview import firing

    raw = [
        {"state": "firing", "labels": {"alertname": "Watchdog", "severity": "none"}},
        {"state": "pending", "labels": {"alertname": "HighLatency", "severity": "critical"}},
        {"state": "firing", "labels": {"alertname": "DiskFilling", "severity": "warning",
                                       "host": "data1"}, "activeAt": "2026-12-06T09:00:00Z"},
        {"state": "firing", "labels": {"alertname": "PostgresDown", "severity": "critical",
                                       "instance": "10.0.0.5:9187"},
         "annotations": {"summary": "PostgreSQL is down"}},
    ]  # fmt: skip
    alerts = firing(raw)
    assert [a.name for a in alerts] == ["PostgresDown", "DiskFilling"]
    assert alerts[0].describe() == "PostgresDown (critical) on 10.0.0.5:9187: PostgreSQL is down"
    assert alerts[1].describe() == "DiskFilling (warning) on data1 since 2026-12-06T09:00:00Z"
