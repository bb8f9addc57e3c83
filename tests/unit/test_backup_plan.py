"""What `inkdeploy restore` plans from `pgbackrest info` and the cluster: which backup, which
member, what is refused (ops/backup.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from inkdeploy.ops.backup import BackupError, parse_info, parse_target, plan_restore, stamp
from inkdeploy.ops.backup_run import BackupOverview

T0 = datetime(2026, 12, 6, 20, 0, 0, tzinfo=UTC).timestamp()


def _set(label: str, kind: str, start: float, stop: float, error: bool = False) -> dict:
    return {
        "label": label,
        "type": kind,
        "timestamp": {"start": start, "stop": stop},
        "info": {"size": 320_000_000, "delta": 1, "repository": {"size": 9, "delta": 40_000_000}},
        "archive": {"start": "000000010000000000000003", "stop": "000000010000000000000004"},
        "prior": None if kind == "full" else "20261206-200000F",
        "error": error,
    }


INFO = json.dumps(
    [
        {"name": "other", "status": {"code": 0, "message": "ok"}, "backup": [], "archive": []},
        {
            "name": "inkdeploy",
            "status": {"code": 0, "message": "ok"},
            "backup": [
                _set("20261206-200000F", "full", T0, T0 + 30),
                _set("20261206-200000F_20261206-201000D", "diff", T0 + 600, T0 + 610),
                _set("20261206-200000F_20261206-202000D", "diff", T0 + 1200, T0 + 1210, True),
            ],
            "archive": [
                {"id": "15-1", "min": "000000010000000000000003", "max": "00000002000000000000000A"}
            ],
        },
    ]
)
DB = ["db1", "db2", "db3"]
ALL_UP = {"db1": "", "db2": "", "db3": ""}


def test_info_is_read_for_the_stanza_with_the_archived_wal_range():
    repo = parse_info(INFO, "inkdeploy")
    assert [s.label for s in repo.good] == ["20261206-200000F", "20261206-200000F_20261206-201000D"]
    assert repo.sets[2].error and repo.newest and repo.newest.type == "diff"
    assert (repo.wal_min, repo.wal_max) == ("000000010000000000000003", "00000002000000000000000A")
    assert repo.sets[0].seconds == 30 and repo.sets[0].repo_size == 40_000_000


def test_a_missing_stanza_says_how_to_create_it():
    with pytest.raises(BackupError, match=r"no stanza main; run site\.yml"):
        parse_info(INFO, "main")


def test_target_times_are_utc_unless_a_zone_is_given_and_never_in_the_future():
    now = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)
    assert parse_target("2026-12-06 20:15:00", now) == datetime(2026, 12, 6, 20, 15, tzinfo=UTC)
    assert parse_target("2026-12-06T21:15:00+01:00", now).hour == 20
    with pytest.raises(BackupError, match=r"is in the future; .* use --latest"):
        parse_target("2026-12-06 21:00:01", now)
    with pytest.raises(BackupError, match='is not a time; give it as "2026-12-06 21:03:04"'):
        parse_target("yesterday", now)
    assert stamp(T0 + 0.25) == "2026-12-06 20:00:00.250+00"


def test_a_point_in_time_uses_the_newest_good_backup_that_ended_before_it():
    repo = parse_info(INFO, "inkdeploy")
    # after the failed diff at +1210: the good diff (+610) is the newest that ended before
    plan = plan_restore(repo, datetime.fromtimestamp(T0 + 1500, UTC), DB, ALL_UP, "db2", "backup1")
    assert plan.backup.label == "20261206-200000F_20261206-201000D"
    assert plan.restore_on == "db2" and plan.recreate == ("db1", "db3")
    assert plan.pgbackrest_args == [
        "--delta",
        "--set=20261206-200000F_20261206-201000D",
        "--type=time",
        "--target=2026-12-06 20:25:00.000+00",
        "--target-action=promote",
    ]
    # between the full's end and the diff's end: the full
    plan = plan_restore(repo, datetime.fromtimestamp(T0 + 300, UTC), DB, ALL_UP, "db2", "backup1")
    assert plan.backup.label == "20261206-200000F"
    assert "Every write after the target is lost" in plan.summary
    assert plan.steps[3].startswith("on db2: pgbackrest restore --delta --set=20261206-200000F ")


def test_latest_restores_the_newest_good_backup_to_the_end_of_the_archive():
    repo = parse_info(INFO, "inkdeploy")
    plan = plan_restore(repo, None, DB, ALL_UP, "db1", "backup1")
    assert plan.backup.type == "diff" and plan.pgbackrest_args[-1] == "--type=default"
    assert plan.to_dict()["latest"] is True and plan.to_dict()["target"] is None


def test_a_target_before_every_backup_names_the_earliest_restorable_point():
    repo = parse_info(INFO, "inkdeploy")
    with pytest.raises(BackupError) as err:
        plan_restore(repo, datetime.fromtimestamp(T0 + 10, UTC), DB, ALL_UP, "db1", "backup1")
    assert err.value.message == (
        "No backup ended before 2026-12-06 20:00:10.000+00; the earliest point a restore can "
        "reach is 2026-12-06 20:00:30.000+00 (backup 20261206-200000F)."
    )


def test_a_dead_leader_is_left_out_and_the_first_member_that_answers_is_restored():
    repo = parse_info(INFO, "inkdeploy")
    reachable = {"db1": "did not answer over SSH (timeout)", "db2": "", "db3": ""}
    plan = plan_restore(repo, None, DB, reachable, "db1", "backup1")
    assert plan.restore_on == "db2" and plan.recreate == ("db3",)
    assert plan.down == {"db1": "did not answer over SSH (timeout)"}
    assert "db1 did not answer and is left out: run `inkdeploy db reinit HOST`" in plan.summary


def test_no_backup_or_no_member_refuses_before_anything_changes():
    empty = parse_info(
        json.dumps([{"name": "inkdeploy", "status": {"code": 2, "message": "no valid backups"}}]),
        "inkdeploy",
    )
    with pytest.raises(BackupError, match=r"has no usable backup .*no valid backups.*backup now"):
        plan_restore(empty, None, DB, ALL_UP, "db1", "backup1")
    repo = parse_info(INFO, "inkdeploy")
    with pytest.raises(BackupError, match=r"No db host answered over SSH .*bring one up first"):
        plan_restore(repo, None, ["db1"], {"db1": "refused"}, None, "backup1")


def test_status_line_names_the_newest_backup_of_each_type_and_a_silent_repository():
    repo = parse_info(INFO, "inkdeploy")
    seen = BackupOverview("backup1", "inkdeploy", "ok", {s.type: s for s in repo.good}, "0000000A")
    assert seen.describe(T0 + 610 + 1800) == (
        "Backups on backup1: newest diff 0.5 h ago, full 0.7 h ago; WAL archived up to 0000000A"
    )
    assert seen.to_dict()["newest"]["full"]["label"] == "20261206-200000F"
    silent = BackupOverview("backup1", unreachable={"backup1": "did not answer over SSH"})
    assert silent.describe(T0) == "Backups: the repository host backup1 did not answer"
