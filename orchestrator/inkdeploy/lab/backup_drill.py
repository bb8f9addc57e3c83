"""The point-in-time restore drill on a lab: pgbench data, a committer writing timestamped rows,
a full backup, an accidental DROP TABLE, `inkdeploy restore --to` one second before it.

Used by the stack test (tests/stack/test_stack_backup.py) and bench/restore.py. Everything runs
through the CLI (`inkdeploy backup now`, `restore`, `db status`) and `inkdeploy lab exec`, as an
operator would; the drill only adds the writer and the checks.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inkdeploy.lab.drill import CLI, PROJECT
from inkdeploy.ops.backup import stamp

ACKED = "/var/tmp/inkdeploy-drill-acked.txt"
STOP = "/var/tmp/inkdeploy-drill-stop"
UNIT = "inkdeploy-drill-committer"
# Runs on the leader as postgres: one autocommit INSERT after another; each acknowledged row's
# id and insert time go to ACKED only after the commit returned.
INSERT = "INSERT INTO drill_commits DEFAULT VALUES RETURNING id, extract(epoch from at)"
COMMITTER = "\n".join(
    (
        "import os, time, psycopg2",
        'conn = psycopg2.connect(dbname="drill", host="/var/run/postgresql")',
        "conn.autocommit = True",
        "cur = conn.cursor()",
        f'with open("{ACKED}", "a", buffering=1) as out:',
        f'    while not os.path.exists("{STOP}"):',
        f'        cur.execute("{INSERT}")',
        "        row = cur.fetchone()",
        '        out.write(f"{row[0]} {row[1]}\\n")',
        "        time.sleep(0.01)",
    )
)
# A row inserted this close before the target may commit just after it (the commit follows
# the insert by a few milliseconds); it may be missing without a fault.
EDGE_S = 0.2


@dataclass
class DrillReport:
    scale: int
    leader_before: str
    db_bytes: int = 0  # the cluster's size in the backup
    backup_label: str = ""
    backup_s: float = 0.0  # `inkdeploy backup now` wall time
    drop_at: float = 0.0  # unix time of the DROP TABLE
    target: str = ""
    restore_wall_s: float = 0.0
    rto_s: float = 0.0  # restore command start to the app answering with the database
    leader_after: str | None = None
    replicas_streaming: list[str] = field(default_factory=list)
    accounts_rows: int = 0
    acked: int = 0  # rows the committer saw committed
    acked_before_target: int = 0
    missing_before_target: list[int] = field(default_factory=list)  # must be empty
    present_after_target: list[int] = field(default_factory=list)  # must be empty
    discarded_after_target: int = 0  # acked rows after the target: the loss asked for
    newest_kept_before_target_s: float | None = None  # target - newest row kept
    app_status: int | None = None
    app_body: str = ""
    restore: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_gb(self) -> float:
        return self.rto_s / (self.db_bytes / 1e9) if self.db_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds_per_gb": round(self.seconds_per_gb, 1)}


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=PROJECT, check=False
    )


def _ok(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    return proc.stdout


class Lab:
    def __init__(self, lab: str, inventory: Path) -> None:
        self.lab, self.inventory = lab, inventory

    def on(self, host: str, *cmd: str, timeout: float = 600) -> str:
        proc = _cli("lab", "exec", "--lab", self.lab, host, "--", *cmd, timeout=timeout)
        return _ok(proc, f"{' '.join(cmd)[:80]} on {host}")

    def sql(self, host: str, sql: str, db: str = "drill") -> str:
        return self.on(host, "runuser", "-u", "postgres", "--", "psql", "-XAtq",
                       "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql).strip()  # fmt: skip

    def cli_json(self, *args: str, timeout: float = 900) -> dict[str, Any]:
        out = _ok(_cli(*args, "-i", str(self.inventory), "--json", timeout=timeout), args[0])
        return json.loads(out)


def _leader(lab: Lab) -> str:
    status = lab.cli_json("db", "status")
    if not status.get("leader"):
        raise AssertionError(f"no leader before the drill: {status}")
    return str(status["leader"])


def restore_drill(
    lab: str,
    inventory: Path,
    app_url: str,
    cacert: Path,
    scale: int = 20,
    say: Callable[[str], None] = lambda _: None,
) -> DrillReport:
    """Run the drill once; the report holds what the checks need. Leaves the drill database
    dropped and the committer stopped."""
    import httpx  # the controller's dependency; imported here to keep the module light

    run = Lab(lab, inventory)
    leader = _leader(run)
    report = DrillReport(scale, leader)
    say(f"pgbench -i -s {scale} on {leader}")
    run.on(
        leader, "sh", "-c", f"rm -f {ACKED} {STOP}; systemctl reset-failed {UNIT} 2>/dev/null; true"
    )
    run.sql(leader, "DROP DATABASE IF EXISTS drill", db="postgres")
    run.sql(leader, "CREATE DATABASE drill", db="postgres")
    run.on(leader, "runuser", "-u", "postgres", "--", "pgbench", "-i", "-q", "-s", str(scale),
           "drill", timeout=1200)  # fmt: skip
    run.sql(leader, "CREATE TABLE drill_commits (id bigserial PRIMARY KEY, "
                    "at timestamptz NOT NULL DEFAULT clock_timestamp())")  # fmt: skip
    run.on(leader, "systemd-run", f"--unit={UNIT}", "--uid=postgres", "--collect",
           "python3", "-c", COMMITTER)  # fmt: skip
    time.sleep(3)
    say("inkdeploy backup now --type full")
    began = time.monotonic()
    backup = run.cli_json("backup", "now", "--type", "full", timeout=1800)
    report.backup_s = round(time.monotonic() - began, 2)
    report.backup_label = backup["backup"]["label"]
    report.db_bytes = int(backup["backup"]["size"])
    time.sleep(5)  # writes go on after the backup: they must come back from the archived WAL
    say("DROP TABLE pgbench_accounts (the accident)")
    report.drop_at = float(
        run.sql(
            leader, "SELECT extract(epoch from clock_timestamp()); DROP TABLE pgbench_accounts"
        ).splitlines()[0]
    )
    time.sleep(2)
    run.on(leader, "touch", STOP)
    run.on(leader, "sh", "-c", f"while systemctl is-active -q {UNIT}; do sleep 0.2; done")
    target = report.drop_at - 1.0
    report.target = stamp(target)
    say(f"inkdeploy restore --to '{report.target}'")
    began = time.monotonic()
    result = run.cli_json("restore", "--to", report.target, "--yes", timeout=1800)
    report.restore_wall_s = round(time.monotonic() - began, 2)
    report.restore = result
    report.rto_s = float(result["rto_s"])
    report.leader_after = result["leader_after"]
    report.replicas_streaming = list(result["replicas"])
    new = str(report.leader_after)
    report.accounts_rows = int(run.sql(new, "SELECT count(*) FROM pgbench_accounts"))
    kept = {int(x) for x in run.sql(new, "SELECT id FROM drill_commits").split()}
    acked = [
        (int(i), float(at))
        for i, at in (line.split() for line in run.on(leader, "cat", ACKED).splitlines() if line)
    ]
    report.acked = len(acked)
    report.acked_before_target = sum(1 for _, at in acked if at <= target)
    report.missing_before_target = [i for i, at in acked if at <= target - EDGE_S and i not in kept]
    report.present_after_target = [i for i, at in acked if at > target and i in kept]
    report.discarded_after_target = sum(1 for _, at in acked if at > target)
    kept_before = [at for i, at in acked if i in kept and at <= target]
    if kept_before:
        report.newest_kept_before_target_s = round(target - max(kept_before), 3)
    # the site's page through the load balancer: it reads the visit count from PostgreSQL
    tls = ssl.create_default_context(cafile=str(cacert))
    with httpx.Client(verify=tls, timeout=10, trust_env=False) as client:
        response = client.get(app_url)
    visits = re.search(r'id="visits">\d+<', response.text)
    report.app_status = response.status_code
    report.app_body = visits.group(0) if visits else response.text[:300]
    run.sql(new, "DROP DATABASE drill", db="postgres")
    run.on(leader, "rm", "-f", ACKED, STOP)
    return report
