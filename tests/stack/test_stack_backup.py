"""Backups on the converged stack lab: what site.yml set up (stanza, first full backup, WAL
archiving, metrics), the on-call verbs, and the point-in-time restore drill (pgbench data, a
committer, an accidental DROP TABLE, restore to one second before it)."""

from __future__ import annotations

import json
import time

import pytest

from inkdeploy.lab.backup_drill import restore_drill
from inkdeploy.lab.drill import inventory_address

from .conftest import LAB, Stack, inkdeploy

pytestmark = pytest.mark.stack


def _json(*args: str, timeout: float = 600) -> dict:
    proc = inkdeploy(*args, "--json", timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _metrics(stack: Stack, host: str, port: int) -> str:
    """HOST's exporter on PORT, scraped from the monitoring host: the firewall admits only it."""
    url = f"http://{inventory_address(stack.inventory, host)}:{port}/metrics"
    proc = stack.on("data1", "curl", "-sSf", "--max-time", "10", url)  # data1: group monitoring
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_site_yml_leaves_a_full_backup_archiving_and_metrics(stack: Stack) -> None:
    inv = str(stack.inventory)
    listed = _json("backup", "list", "-i", inv)
    assert listed["status"] == "ok" and listed["repo_host"] == "backup1"
    assert [b["type"] for b in listed["backups"] if not b["error"]][:1] == ["full"]
    checked = _json("backup", "check", "-i", inv)
    assert checked["ok"], checked["problems"]
    assert checked["newest_age_s"] < 24 * 3600
    status = _json("status", "-i", inv)["backup"]  # `inkdeploy status` shows it too
    fulls = [b["label"] for b in listed["backups"] if b["type"] == "full" and not b["error"]]
    assert status["newest"]["full"]["label"] == fulls[-1]
    assert status["unreachable"] == {} and status["problems"] == []
    # the repository host's metrics timer and the db host's archive query reach the exporters
    node = _metrics(stack, "backup1", 9100)
    assert 'pgbackrest_info_success{stanza="inkdeploy"} 1' in node
    assert (
        'pgbackrest_backup_last_completion_timestamp_seconds{stanza="inkdeploy",type="full"}'
        in node
    )
    postgres = _metrics(stack, "data1", 9187)
    assert "pg_archive_ready_files" in postgres and "pg_archive_archived_count" in postgres
    # WAL goes to the repository: archive_mode on through Patroni's cluster-wide settings
    settings = "select current_setting('archive_mode'), current_setting('archive_command')"
    archive = stack.on("data1", "runuser", "-u", "postgres", "--", "psql", "-XAtc", settings)
    assert archive.stdout.strip() == "on|pgbackrest --stanza=inkdeploy archive-push %p"


def test_restore_refuses_what_it_cannot_do_and_changes_nothing(stack: Stack) -> None:
    inv = str(stack.inventory)
    before = _json("db", "status", "-i", inv)
    neither = inkdeploy("restore", "-i", inv)
    assert neither.returncode == 1 and "Give either --to" in neither.stdout + neither.stderr
    too_early = inkdeploy("restore", "-i", inv, "--to", "2001-01-01 00:00:00", "--yes")
    assert too_early.returncode == 1
    assert (
        "No backup ended before 2001-01-01 00:00:00.000+00" in too_early.stdout + too_early.stderr
    )
    unconfirmed = inkdeploy("restore", "-i", inv, "--latest")  # no terminal to ask on
    assert unconfirmed.returncode == 1 and "Pass --yes to confirm" in unconfirmed.stderr
    plan = _json("restore", "-i", inv, "--latest", "--dry-run")["plan"]
    assert plan["restore_on"] == before["leader"] and plan["latest"]
    assert any("pgbackrest restore --delta" in step for step in plan["steps"])
    after = _json("db", "status", "-i", inv)
    assert after["leader"] == before["leader"]
    assert [m["timeline"] for m in after["members"]] == [m["timeline"] for m in before["members"]]


def test_point_in_time_restore_brings_back_a_dropped_table(stack: Stack) -> None:
    began = time.monotonic()
    report = restore_drill(LAB, stack.inventory, stack.url, stack.cacert, scale=20, say=print)
    figures = report.to_dict()
    steps = figures.pop("restore")["steps"]
    print(json.dumps(figures, indent=1))
    print("restore steps (seconds each; leader elected, app answers: since the start):")
    print("\n".join(f"  {s['step']} {s['host']}: {s['seconds']}" for s in steps))
    print(
        f"restore drill: database {report.db_bytes / 1e6:.0f} MB (pgbench scale {report.scale}); "
        f"backup {report.backup_s:.1f} s; restore to {report.target}: RTO {report.rto_s:.1f} s "
        f"({report.seconds_per_gb:.0f} s per GB), command {report.restore_wall_s:.1f} s; "
        f"{report.acked_before_target} acknowledged rows before the target kept, newest kept "
        f"{report.newest_kept_before_target_s} s before it; {report.discarded_after_target} rows "
        f"after it discarded as asked; drill {time.monotonic() - began:.0f} s"
    )
    assert report.accounts_rows == report.scale * 100_000  # the dropped table is back, whole
    assert report.missing_before_target == []  # every commit before the target is there
    assert report.present_after_target == []  # none after it
    assert report.acked_before_target > 100 and report.discarded_after_target > 50
    assert report.leader_after == report.leader_before  # one db host: itself, restored
    assert report.app_status == 200 and report.app_body.startswith('id="visits">')
    assert report.rto_s < 300
    steps = [s["step"] for s in report.restore["steps"]]
    assert steps[:5] == [
        "archive the current WAL",
        "stop Patroni", "remove the cluster from etcd", "pgbackrest restore", "recover and promote",
    ]  # fmt: skip
    assert report.restore["problems"] == []  # pgbackrest check passed on the new timeline
    # the cluster goes on: a new timeline, archiving to the same repository
    checked = _json("backup", "check", "-i", str(stack.inventory))
    assert checked["ok"], checked["problems"]
