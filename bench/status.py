#!/usr/bin/env python3
"""How fast `inkdeploy status` answers on a converged lab, healthy and with one host down.

Runs on a lab that site.yml has converged (default: the demo lab `make demo` builds, 13 hosts,
inventories/lab/hosts.yml). Per scenario it runs `inkdeploy status --json` RUNS times and
records the wall time (process start to exit, what a person waits) and the time the command
reports for itself (after Python's start-up). Scenarios: the healthy stack, then for each host
named with --down (default: one host per tier: lb1, app2, worker1, db1, redis2, mon1) that host
killed (`lab kill`, a power cut) or cut off the network (`lab partition`, for hosts given as
HOST:partition), then booted or healed again. For each down host it checks that status named
it (as an unreachable app host, load balancer, lock host, worker host, Patroni member, etcd
member, sentinel, or Prometheus that did not answer).

Usage:
  bench/status.py [--inventory inventories/lab/hosts.yml] [--lab default] [--runs 5]
                  [--down lb1 app2 worker1 db1 redis2:partition mon1]
Changes the lab's hosts' power and network only; the stack itself is not touched.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from figures import spread  # bench/figures.py: python puts bench/ first on sys.path
from inkdeploy.inventory import load_environment

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "inkdeploy")
DOWN = ["lb1", "app2", "worker1", "db1", "redis2:partition", "mon1"]


def lab(*args: str, name: str) -> None:
    subprocess.run([CLI, "lab", *args, "--lab", name], check=True, capture_output=True,
                   text=True, cwd=REPO)  # fmt: skip


def status(inventory: Path) -> tuple[float, dict[str, Any]]:
    began = time.monotonic()
    run = subprocess.run([CLI, "status", "-i", str(inventory), "--json"], capture_output=True,
                         text=True, cwd=REPO)  # fmt: skip
    wall = time.monotonic() - began
    if run.returncode != 0:
        sys.exit(f"inkdeploy status failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    return wall, json.loads(run.stdout)


def named(seen: dict[str, Any], host: str, address: str) -> list[str]:
    """Where status says HOST did not answer."""
    fleet = seen["fleet"]
    where = [
        what
        for what, hosts in (
            ("app host", fleet.get("unreachable")),
            ("load balancer", fleet.get("lb_unreachable")),
            ("lock host", fleet.get("lock_silent")),
            ("worker host", fleet.get("workers_silent")),
            ("patroni", seen["db"].get("unreachable")),
            ("etcd", seen["etcd"].get("unreachable")),
            ("sentinel", seen["redis"].get("unreachable")),
            ("backup repository", (seen.get("backup") or {}).get("unreachable")),
        )
        if host in (hosts or ())
    ]
    if f"//{address}:" in (seen.get("alerts_unknown") or ""):
        where.append("prometheus")
    return where


def measure(inventory: Path, runs: int) -> tuple[list[float], list[float], dict[str, Any]]:
    walls, inside, last = [], [], {}
    for _ in range(runs):
        wall, last = status(inventory)
        walls.append(wall)
        inside.append(float(last["seconds"]))
    return walls, inside, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", type=Path, default=REPO / "inventories/lab/hosts.yml")
    parser.add_argument("--lab", default="default")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--down", nargs="*", default=DOWN)
    parser.add_argument("--settle", type=float, default=20.0, help="Seconds between scenarios.")
    args = parser.parse_args()
    if not args.inventory.exists():
        sys.exit(f"No lab inventory at {args.inventory}: run `make demo` first, or pass "
                 "--inventory and --lab.")  # fmt: skip
    env = load_environment(args.inventory, require_app=False)
    rows = []
    walls, inside, seen = measure(args.inventory, args.runs)
    rows.append(("healthy", walls, inside, "-"))
    for item in args.down:
        host, _, how = item.partition(":")
        how = how or "kill"
        lab("partition" if how == "partition" else "kill", host, name=args.lab)
        try:
            walls, inside, seen = measure(args.inventory, args.runs)
            where = named(seen, host, env.address(host))
        finally:
            lab("heal" if how == "partition" else "start", host, name=args.lab)
        rows.append((f"{host} {'partitioned' if how == 'partition' else 'killed'}", walls, inside,
                     ", ".join(where) or "NOT NAMED"))  # fmt: skip
        time.sleep(args.settle)
    print(f"\ninkdeploy status on {args.inventory} (lab {args.lab}), {args.runs} runs each; "
          "seconds, median (min-max)")  # fmt: skip
    print(f"{'scenario':<22} {'wall':>18} {'in command':>18}  named as")
    for name, walls, inside, where in rows:
        print(f"{name:<22} {spread(walls):>18} {spread(inside):>18}  {where}")
    missed = [name for name, *_rest, where in rows if where == "NOT NAMED"]
    if missed:
        print(f"status did not name the host down in: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
