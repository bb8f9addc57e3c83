"""`inkdeploy workers restart` without a fleet: which hosts and units, in inventory order, one
host at a time; refusals that restart nothing; a host whose workers do not come back stops the
command and names what was and was not restarted. The lab runs it for real (molecule/celery,
verify tests/restart)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from inkdeploy.inventory import Environment, parse_policy
from inkdeploy.ops import workers
from inkdeploy.ops.workers import (
    CeleryHost,
    WorkersFailed,
    WorkersRefused,
    celery_hosts,
    plan_restart,
    refuse_unanswered,
    restart_workers,
)
from inkdeploy.remote import Reply


def env(hostvars: dict[str, dict[str, Any]] | None = None, **groups: list[str]) -> Environment:
    groups = {"worker": ["worker1", "worker2"], "celery_beat": ["worker1"], **groups}
    hosts = {h for g in groups.values() for h in g}
    hv = {h: {"ansible_host": f"10.0.0.{i}", "ansible_user": "root"}
          for i, h in enumerate(sorted(hosts), 1)}  # fmt: skip
    for host, values in (hostvars or {}).items():
        hv[host].update(values)
    return Environment(Path("inventories/test"), "test", groups, hv, parse_policy(None))


def two_queues() -> dict[str, dict[str, Any]]:
    queues = [{"name": "celery", "concurrency": 2}, {"name": "mail", "concurrency": 1}]
    return {"worker1": {"celery_queues": queues}, "worker2": {"celery_queues": queues[:1]}}


def test_inventory_values_over_the_roles_defaults() -> None:
    fleet = celery_hosts(env(two_queues()))
    assert list(fleet) == ["worker1", "worker2"]
    w1 = fleet["worker1"]
    assert w1.queues == ("celery", "mail") and w1.runs_beat
    assert (w1.app_name, w1.app_module, w1.stop_timeout_s, w1.ping_retries) == (
        "inkapp", "inkapp.celery_app", 300, 30
    )  # fmt: skip
    assert w1.worker_unit("mail") == "inkapp-celery-worker@mail.service"
    assert not fleet["worker2"].runs_beat
    # the role's default queue when the inventory names none
    assert celery_hosts(env())["worker2"].queues == ("celery",)


def test_every_worker_host_in_inventory_order_without_beat() -> None:
    plan = plan_restart(celery_hosts(env(two_queues())), worker_hosts=["worker1", "worker2"])
    assert plan.hosts == ["worker1", "worker2"]
    assert plan.steps[0].units == (
        "inkapp-celery-worker@celery.service", "inkapp-celery-worker@mail.service"
    )  # fmt: skip
    assert not any(s.beat for s in plan.steps) and plan.skipped == {}


def test_beat_only_with_beat_and_only_on_its_host() -> None:
    plan = plan_restart(celery_hosts(env()), beat=True)
    assert plan.steps[0].units[-1] == "inkapp-celery-beat.service" and plan.steps[0].beat
    assert not plan.steps[1].beat
    with pytest.raises(WorkersRefused, match="beat runs on none of the hosts chosen"):
        plan_restart(celery_hosts(env()), beat=True, hosts=["worker2"])


def test_a_beat_host_outside_group_worker_is_restarted_only_for_beat() -> None:
    e = env(worker=["worker1", "worker2"], celery_beat=["sched1"])
    fleet = celery_hosts(e)
    assert plan_restart(fleet, worker_hosts=e.groups["worker"]).hosts == ["worker1", "worker2"]
    plan = plan_restart(fleet, worker_hosts=e.groups["worker"], beat=True)
    assert plan.hosts == ["worker1", "worker2", "sched1"]
    assert plan.steps[2].units == ("inkapp-celery-beat.service",)
    only = plan_restart(fleet, worker_hosts=e.groups["worker"], beat=True, hosts=["sched1"])
    assert only.hosts == ["sched1"]
    with pytest.raises(WorkersRefused, match="Nothing to restart on sched1: no worker queue"):
        plan_restart(fleet, worker_hosts=e.groups["worker"], hosts=["sched1"])


def test_a_queue_restarts_only_its_units_and_leaves_the_other_hosts_alone() -> None:
    e = env(two_queues())
    plan = plan_restart(celery_hosts(e), queues=["mail"], worker_hosts=e.groups["worker"])
    assert [(s.host, s.units) for s in plan.steps] == [
        ("worker1", ("inkapp-celery-worker@mail.service",))
    ]
    assert plan.skipped == {"worker2": "serves none of mail"}


def test_an_unknown_queue_or_host_is_refused_naming_the_valid_ones() -> None:
    fleet = celery_hosts(env(two_queues()))
    with pytest.raises(WorkersRefused) as queue:
        plan_restart(fleet, queues=["emails"])
    assert str(queue.value) == (
        'No worker serves queue "emails" in this inventory (queues: celery, mail); '
        "name one of those."
    )
    assert queue.value.exit_code == 2
    with pytest.raises(
        WorkersRefused, match=r"worker9 is not a worker host .*\(worker1, worker2\)"
    ):
        plan_restart(fleet, hosts=["worker9"])
    with pytest.raises(WorkersRefused, match="worker2 serves no queue named"):
        plan_restart(fleet, hosts=["worker2"], queues=["mail"])
    with pytest.raises(WorkersRefused, match="no host in group worker"):
        plan_restart({}, worker_hosts=[])


def test_a_host_that_does_not_answer_refuses_all_and_suggests_host_for_the_others() -> None:
    plan = plan_restart(celery_hosts(env()))
    refuse_unanswered(plan, {"db1": "down"})  # not planned: no matter
    with pytest.raises(WorkersRefused) as refused:
        refuse_unanswered(plan, {"worker2": "did not answer over SSH (timed out)"})
    assert str(refused.value) == (
        "Nothing was restarted: worker2 did not answer over SSH (timed out); restart the "
        "others with --host worker1."
    )


class FakeRemote:
    """Answers like the hosts would: RESTART_SCRIPT's JSON per host, `test -x` for the check."""

    calls: ClassVar[list[str]] = []
    answers: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, hostvars: dict[str, dict[str, Any]]) -> None:
        self.hostvars = hostvars

    def usable(self, hosts: list[str]) -> bool:
        return True

    def commands(self, argvs: dict[str, list[str]], timeout_s: float | None = None) -> dict:
        return {h: Reply(h, 255 if h in self.answers.get("down", {}) else 0, "", "", 0.1)
                for h in argvs}  # fmt: skip

    def command(self, host: str, argv: list[str], stdin: str = "",
                timeout_s: float | None = None) -> Reply:  # fmt: skip
        params = json.loads(stdin)
        FakeRemote.calls.append(host)
        said = {"hostname": host, "began_at": 1000.0, "ended_at": 1005.0, "nodes":
                [f"{q}@{host}" for q in params["queues"]], "stop_s": {params["units"][0]: 1.5},
                "ping_s": {f"celery@{host}": 3.25}, **self.answers.get(host, {})}  # fmt: skip
        return Reply(host, 0, json.dumps(said), "", 5.0)


@pytest.fixture
def fake_remote(monkeypatch: pytest.MonkeyPatch) -> type[FakeRemote]:
    FakeRemote.calls = []
    FakeRemote.answers = {}
    monkeypatch.setattr(workers, "Remote", FakeRemote)
    return FakeRemote


def test_restart_goes_host_by_host_and_reports_stop_and_ping(fake_remote: type) -> None:
    result = restart_workers(env())
    assert fake_remote.calls == ["worker1", "worker2"]
    assert result.restarted == ["worker1", "worker2"] and result.lock == "none in this inventory"
    assert (result.hosts[0].stop_s, result.hosts[0].ping_s) == (1.5, 3.25)
    assert result.message.startswith("Restarted the workers on worker1, worker2 one host")
    assert "worker1 stop 1.5 s + ping 3.2 s" in result.message
    assert result.to_dict()["hosts"][1]["nodes"] == ["celery@worker2"]


def test_the_first_host_that_fails_stops_the_restart(fake_remote: type) -> None:
    e = env(worker=["worker1", "worker2", "worker3"])
    fake_remote.answers = {"worker2": {"error": "no ping answer from celery@worker2 within 30 s"}}
    with pytest.raises(WorkersFailed) as failed:
        restart_workers(e)
    assert fake_remote.calls == ["worker1", "worker2"]
    assert "no ping answer from celery@worker2" in failed.value.message
    assert "Restarted before it: worker1; not restarted: worker3." in failed.value.message


def test_nothing_is_restarted_when_a_host_is_down(fake_remote: type) -> None:
    fake_remote.answers = {"down": {"worker1": {}}}
    with pytest.raises(WorkersRefused, match="restart the others with --host worker2"):
        restart_workers(env())
    assert fake_remote.calls == []


def test_dry_run_restarts_nothing(fake_remote: type) -> None:
    result = restart_workers(env(), dry_run=True, queues=["celery"])
    assert fake_remote.calls == [] and result.dry_run
    assert result.message == (
        "Would restart, one host at a time: worker1 (inkapp-celery-worker@celery.service); "
        "worker2 (inkapp-celery-worker@celery.service)."
    )


def test_cli_refuses_an_unknown_queue_with_exit_2(
    fake_remote: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inkdeploy.cli import app
    from inkdeploy.ops import workers_cli

    monkeypatch.setattr(workers_cli, "load_environment", lambda *a, **k: env())
    result = CliRunner().invoke(app, ["workers", "restart", "-i", ".", "--queue", "nope"])
    assert result.exit_code == 2 and fake_remote.calls == []
    assert 'No worker serves queue "nope"' in result.output


def test_celery_host_needs_plain_values() -> None:
    e = env({"worker1": {"celery_app_module": "{{ lookup('env', 'X') }}"}})
    with pytest.raises(WorkersRefused, match="celery_app_module is a template"):
        celery_hosts(e)
    assert CeleryHost(("q",), app_root="/opt").home == "/opt/inkapp"
