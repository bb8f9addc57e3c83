#!/usr/bin/env python3
"""Point-in-time restore: RTO and data kept, per run and as medians, with the time per GB.

Runs the drill of tests/stack/test_stack_backup.py (inkdeploy/lab/backup_drill.py) on a lab
that site.yml has converged (default: the demo lab `make demo` builds, full topology: three db
hosts, so the restore also re-clones two replicas): pgbench data at --scale, a committer writing
timestamped rows, `inkdeploy backup now --type full`, more writes, DROP TABLE pgbench_accounts,
`inkdeploy restore --to` one second before the drop. Each run checks what the test checks
(table back whole, every row committed before the target there, none after it, the app
answers) and prints:

  rto_s      restore command start to every serving app slot answering with the database
  command_s  the whole restore command (it then waits for the replicas to stream)
  per_gb_s   RTO divided by the database size in the backup
  backup_s   `inkdeploy backup now --type full` (from a replica when there is one)

Usage:
  bench/restore.py [--inventory inventories/lab/hosts.yml] [--lab default] [--runs 3]
                   [--scale 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from inkdeploy.lab.backup_drill import DrillReport, restore_drill
from inkdeploy.lab.drill import inventory_address

REPO = Path(__file__).resolve().parents[1]


def check(report: DrillReport) -> list[str]:
    problems = []
    if report.accounts_rows != report.scale * 100_000:
        problems.append(f"pgbench_accounts has {report.accounts_rows} rows")
    if report.missing_before_target:
        problems.append(f"{len(report.missing_before_target)} rows before the target missing")
    if report.present_after_target:
        problems.append(f"{len(report.present_after_target)} rows after the target present")
    if report.app_status != 200 or not report.app_body.startswith('id="visits">'):
        problems.append(f"the app answered {report.app_status}: {report.app_body}")
    return problems


def median(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", type=Path, default=REPO / "inventories/lab/hosts.yml")
    parser.add_argument("--lab", default="default")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=20)
    args = parser.parse_args()
    lb = inventory_address(args.inventory, "lb1")
    cacert = args.inventory.parent / "pki/nginx_lb/ca.crt"
    reports: list[DrillReport] = []
    for number in range(1, args.runs + 1):
        report = restore_drill(args.lab, args.inventory, f"https://{lb}/", cacert, args.scale,
                               say=lambda text: print(f"  {text}", flush=True))  # fmt: skip
        problems = check(report)
        print(
            f"run {number}: {report.db_bytes / 1e6:.0f} MB, backup {report.backup_s:.1f} s, "
            f"RTO {report.rto_s:.1f} s, command {report.restore_wall_s:.1f} s, "
            f"{report.acked_before_target} rows kept, {report.discarded_after_target} after the "
            f"target discarded, replicas {','.join(report.replicas_streaming) or 'none'}"
            + (f"; PROBLEMS: {'; '.join(problems)}" if problems else ""),
            flush=True,
        )
        steps = report.restore["steps"]
        print("  steps: " + ", ".join(f"{s['step']} {s['seconds']}" for s in steps), flush=True)
        if problems:
            sys.exit(1)
        reports.append(report)
    size = statistics.median(r.db_bytes for r in reports)
    print(f"\n{len(reports)} runs, database {size / 1e6:.0f} MB (pgbench scale {args.scale}), "
          "median (min-max), seconds:")  # fmt: skip
    print(f"  rto_s      {median([r.rto_s for r in reports])}")
    print(f"  command_s  {median([r.restore_wall_s for r in reports])}")
    print(f"  per_gb_s   {median([r.seconds_per_gb for r in reports])}")
    print(f"  backup_s   {median([r.backup_s for r in reports])}")


if __name__ == "__main__":
    main()
