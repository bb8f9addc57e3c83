"""`inkdeploy db switchover | failover | reinit | pause | resume`: what each decides from the
cluster's state (pure), and that a refusal changes nothing and says what to do. The operations
themselves run against real Patroni clusters in the postgresql-ha Molecule scenario's drills."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from inkdeploy.ops.db import DbStatus, Member, summarize
from inkdeploy.ops.db_plan import (
    DbRefused,
    old_leader_back,
    plan_failover,
    plan_pause,
    plan_reinit,
    plan_switchover,
    reached,
)
from tests.unit.test_preflight import JsonServer, cluster, config, fleet, leader, member


def m(name: str, role: str = "replica", state: str = "streaming", lag: int | None = 0,
      timeline: int = 3, nofailover: bool = False) -> Member:  # fmt: skip
    return Member(name, f"10.0.0.{name[-1]}", role, state, timeline, lag, nofailover)


def cluster_of(*members: Member, sync: bool = True, paused: bool = False, **kw) -> DbStatus:
    return DbStatus(
        members=list(members),
        leader=next((x.name for x in members if x.role == "leader"), None),
        synchronous_mode=sync,
        paused=paused,
        answered={x.name: 0.01 for x in members},
        **kw,
    )


HEALTHY = (m("db1", "leader", "running", None), m("db2", "sync_standby", lag=0), m("db3", lag=4096))


# --- switchover -----------------------------------------------------------------------------


def test_switchover_goes_to_the_sync_standby_and_runs_on_the_leader_first() -> None:
    plan = plan_switchover(cluster_of(*HEALTHY), None)
    assert (plan.leader, plan.target, plan.destructive) == ("db1", "db2", False)
    assert plan.request == {"method": "POST", "path": "/switchover",
                            "body": {"leader": "db1", "candidate": "db2"}}  # fmt: skip
    assert plan.run_on[0] == "db1" and set(plan.run_on) == {"db1", "db2", "db3"}


def test_switchover_refuses_an_async_replica_in_synchronous_mode_naming_why() -> None:
    with pytest.raises(DbRefused, match="db3 is not a synchronous standby"):
        plan_switchover(cluster_of(*HEALTHY), "db3")


def test_switchover_refuses_when_no_healthy_sync_standby_exists() -> None:
    broken = (m("db1", "leader", "running", None), m("db2", "replica", "stopped", None), m("db3"))
    with pytest.raises(DbRefused, match="No healthy synchronous standby") as refused:
        plan_switchover(cluster_of(*broken), None)
    assert "nothing was changed" in str(refused.value)


def test_switchover_without_synchronous_mode_takes_the_least_lagging_streaming_replica() -> None:
    members = (m("db1", "leader", "running", None), m("db2", lag=9000), m("db3", lag=10))
    assert plan_switchover(cluster_of(*members, sync=False), None).target == "db3"
    tagged = (m("db1", "leader", "running", None), m("db2", nofailover=True))
    with pytest.raises(DbRefused, match="No healthy streaming replica"):
        plan_switchover(cluster_of(*tagged, sync=False), None)


@pytest.mark.parametrize(
    ("to", "why"),
    [("db1", "db1 is the leader already"), ("db9", "db9 is not a member of the PostgreSQL")],
)
def test_switchover_refuses_the_leader_itself_and_unknown_names(to: str, why: str) -> None:
    with pytest.raises(DbRefused, match=why):
        plan_switchover(cluster_of(*HEALTHY), to)


def test_switchover_refuses_without_a_running_leader_or_while_paused() -> None:
    leaderless = (m("db2", "sync_standby"), m("db3"))
    with pytest.raises(DbRefused, match="db failover --to HOST"):
        plan_switchover(cluster_of(*leaderless), None)
    with pytest.raises(DbRefused, match="paused"):
        plan_switchover(cluster_of(*HEALTHY, paused=True), None)


def test_switchover_is_reached_when_the_target_leads_and_done_when_the_old_leader_streams() -> None:
    plan = plan_switchover(cluster_of(*HEALTHY), None)
    assert not reached(plan, cluster_of(*HEALTHY))
    moved = (m("db1", "replica", "stopped", None), m("db2", "leader", "running", None), m("db3"))
    assert reached(plan, cluster_of(*moved)) and not old_leader_back(plan, cluster_of(*moved))
    settled = (m("db1", "sync_standby"), m("db2", "leader", "running", None), m("db3"))
    assert old_leader_back(plan, cluster_of(*settled))


# --- failover -------------------------------------------------------------------------------


def test_failover_promotes_a_named_member_with_the_leader_gone_and_runs_on_it_first() -> None:
    gone = (m("db2", "sync_standby"), m("db3"))  # db1 died; paused, nobody took over
    plan = plan_failover(cluster_of(*gone, paused=True, unreachable={"db1": "refused"}),
                         "db2")  # fmt: skip
    assert (plan.leader, plan.target, plan.destructive) == (None, "db2", False)
    assert plan.request == {"method": "POST", "path": "/failover", "body": {"candidate": "db2"}}
    assert plan.run_on[0] == "db2" and "no running leader" in plan.summary


def test_failover_to_an_async_replica_is_destructive_and_says_what_is_lost() -> None:
    plan = plan_failover(cluster_of(*HEALTHY), "db3")
    assert plan.destructive and "commits it had not received are lost" in plan.summary


def test_failover_refuses_the_running_leader_and_a_stopped_member() -> None:
    with pytest.raises(DbRefused, match="running leader already"):
        plan_failover(cluster_of(*HEALTHY), "db1")
    stopped = (m("db1", "leader", "running", None), m("db2", "replica", "stopped", None))
    with pytest.raises(DbRefused, match="db2 is stopped, not a running replica"):
        plan_failover(cluster_of(*stopped), "db2")


# --- reinit ---------------------------------------------------------------------------------


def test_reinit_rebuilds_a_replica_from_the_leader_and_waits() -> None:
    plan = plan_reinit(cluster_of(*HEALTHY), "db3", "inkdeploy")
    assert plan.destructive and plan.argv[-5:] == ["reinit", "inkdeploy", "db3", "--force",
                                                   "--wait"]  # fmt: skip
    assert plan.run_on[:2] == ["db1", "db3"]


def test_reinit_refuses_the_leader_a_silent_member_and_a_leaderless_cluster() -> None:
    with pytest.raises(DbRefused, match="db1 is the leader"):
        plan_reinit(cluster_of(*HEALTHY), "db1", "s")
    silent = cluster_of(*HEALTHY, unreachable={"db3": "no answer within 2 s"})
    with pytest.raises(DbRefused, match="Patroni on db3 does not answer"):
        plan_reinit(silent, "db3", "s")
    with pytest.raises(DbRefused, match="no running leader to copy db3 from"):
        plan_reinit(cluster_of(m("db2"), m("db3", "replica", "start failed")), "db3", "s")


def test_reinit_is_reached_only_when_the_member_streams_on_the_leaders_timeline() -> None:
    plan = plan_reinit(cluster_of(*HEALTHY), "db3", "s")
    behind = (m("db1", "leader", "running", None, timeline=4), m("db3", timeline=3))
    assert not reached(plan, cluster_of(*behind))
    caught_up = (m("db1", "leader", "running", None, timeline=4), m("db3", timeline=4))
    assert reached(plan, cluster_of(*caught_up))


# --- pause / resume ---------------------------------------------------------------------------


def test_pause_and_resume_change_only_what_needs_changing() -> None:
    assert plan_pause(cluster_of(*HEALTHY), True).request["body"] == {"pause": True}
    assert plan_pause(cluster_of(*HEALTHY, paused=True), True).noop
    resume = plan_pause(cluster_of(*HEALTHY, paused=True), False)
    assert resume.request == {"method": "PATCH", "path": "/config", "body": {"pause": None}}
    assert reached(resume, cluster_of(*HEALTHY))
    assert not reached(resume, cluster_of(*HEALTHY, paused=True))


def test_nothing_answers_is_refused_by_every_planner() -> None:
    empty = DbStatus(unreachable={"db1": "no answer within 2 s"})
    planners = (
        lambda: plan_switchover(empty, None),
        lambda: plan_failover(empty, "db1"),
        lambda: plan_reinit(empty, "db1", "s"),
        lambda: plan_pause(empty, True),
    )
    for plan in planners:
        with pytest.raises(DbRefused, match="No Patroni member answered"):
            plan()


def test_status_reads_pause_and_nofailover_from_patroni() -> None:
    tagged = {**member("db2"), "tags": {"nofailover": True}}
    obs = cluster("db1", leader("db1"), tagged)
    obs.data["pause"] = True
    status = summarize([obs], [config("db1", True)], False)
    assert status.paused and status.to_dict()["paused"] is True
    assert [x.nofailover for x in status.members] == [False, True]


# --- the commands ---------------------------------------------------------------------------


def _cli(monkeypatch, routes: dict, *args: str):
    with JsonServer(routes) as db1:
        env = fleet(patroni={"db1": db1.port}, sentinels={}, lbs={}, prometheus=None)
        for where in ("inkdeploy.ops.db_cli",):
            monkeypatch.setattr(f"{where}.load_environment", lambda _inventory, *_, **_kw: env)

        def no_ssh(*_args, **_kw):
            raise AssertionError("a refused command must not reach a host")

        monkeypatch.setattr("inkdeploy.ops.db_actions._run_on_member", no_ssh)
        monkeypatch.setattr("inkdeploy.ops.held.Session.of", no_ssh)
        from inkdeploy.cli import app

        return CliRunner().invoke(app, ["db", *args, "-i", "x"])


def test_switchover_cli_refuses_without_a_sync_standby_exit_2_no_traceback(monkeypatch) -> None:
    routes = {"/cluster": {"members": [leader("db1"), member("db2", state="stopped")]},
              "/config": {"synchronous_mode": True}}  # fmt: skip
    result = _cli(monkeypatch, routes, "switchover")
    assert result.exit_code == 2, result.output
    assert "No healthy synchronous standby to switch over to" in result.output
    assert "Traceback" not in result.output


def test_failover_cli_asks_first_and_refuses_without_a_terminal(monkeypatch) -> None:
    routes = {"/cluster": {"members": [leader("db1"), member("db2")]},
              "/config": {"synchronous_mode": False}}  # fmt: skip
    result = _cli(monkeypatch, routes, "failover", "--to", "db2")
    assert result.exit_code == 2 and "Pass --yes to confirm; nothing was changed" in result.output


def test_dry_run_json_says_what_would_happen_and_touches_nothing(monkeypatch) -> None:
    routes = {"/cluster": {"members": [leader("db1"), member("db2", "sync_standby")]},
              "/config": {"synchronous_mode": True}}  # fmt: skip
    result = _cli(monkeypatch, routes, "switchover", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["dry_run"], data["changed"], data["target"]) == (True, False, "db2")
    assert data["summary"].startswith("Switch the leader over from db1 to db2")
