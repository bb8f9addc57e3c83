"""`inkdeploy maintenance on|off`: a freeze held in the deploy lock (on three lock hosts, the real
lock module on each), recorded in the history, never lifting a rollout's lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from inkdeploy.ops.maintenance import NotMaintenance, maintenance_off, maintenance_on
from inkdeploy.state.lock import LockHeld, describe_holder

from .test_lock_quorum import LockHosts, lock, me


@pytest.fixture
def hosts(tmp_path: Path) -> LockHosts:
    return LockHosts(tmp_path)


def test_maintenance_on_holds_the_lock_until_off_and_both_are_recorded(
    hosts: LockHosts, tmp_path: Path
) -> None:
    fleet_lock = lock(hosts, tmp_path)
    on = maintenance_on(fleet_lock, "disk swap s3cret", ["s3cret"])
    assert on.changed and on.holder["strategy"] == "maintenance"
    holder = fleet_lock.query()["holder"]
    assert "in maintenance" in describe_holder(holder, 7200) and "disk swap" in holder["message"]
    assert not holder.get("lease_s")  # holds until lifted, whoever ran the command
    with pytest.raises(LockHeld):  # a rollout is refused meanwhile
        fleet_lock.acquire(me("rollout-1"), lease_s=30)
    again = maintenance_on(fleet_lock, "twice", [])
    assert not again.changed and "in maintenance already" in again.message
    off = maintenance_off(fleet_lock, "done", [])
    assert off.changed and fleet_lock.query()["holder"] == {}
    rows = [(r["kind"], r["result"], r["reason"]) for r in fleet_lock.query()["history"]]
    assert rows == [("maintenance", "on", "disk swap ***"), ("maintenance", "off", "done")]


def test_maintenance_off_never_lifts_a_rollouts_lock_and_on_is_refused_while_one_runs(
    hosts: LockHosts, tmp_path: Path
) -> None:
    fleet_lock = lock(hosts, tmp_path)
    fleet_lock.acquire(me("rollout-1"), lease_s=30)
    with pytest.raises(NotMaintenance, match="not held for maintenance"):
        maintenance_off(fleet_lock, "oops", [])
    with pytest.raises(LockHeld):
        maintenance_on(fleet_lock, "disk swap", [])
    assert fleet_lock.query()["holder"]["rollout"] == "rollout-1"
    assert fleet_lock.query()["history"] == []


def test_maintenance_off_when_free_changes_nothing(hosts: LockHosts, tmp_path: Path) -> None:
    result = maintenance_off(lock(hosts, tmp_path), "done", [])
    assert not result.changed and result.message == "The fleet is not in maintenance."


def test_the_commands_print_json_and_refuse_in_one_sentence(
    hosts: LockHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from inkdeploy.cli import app

    class Session:
        lock = lock(hosts, tmp_path)

        @staticmethod
        def secrets() -> list[str]:
            return []

    monkeypatch.setattr("inkdeploy.ops.cli.Session.open", lambda _inventory: Session)
    on = CliRunner().invoke(app, ["maintenance", "on", "-i", "x", "-m", "disk", "--json"])
    assert on.exit_code == 0, on.output
    assert json.loads(on.output)["changed"] is True
    Session.lock.release(Session.lock.query()["holder"]["rollout"], force=True)
    Session.lock.acquire(me("rollout-1"), lease_s=30)
    off = CliRunner().invoke(app, ["maintenance", "off", "-i", "x"])
    assert off.exit_code == 3 and "not held for maintenance" in off.output
    assert "Traceback" not in off.output
