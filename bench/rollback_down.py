#!/usr/bin/env python3
"""`inkdeploy rollback` with one host powered off: how soon traffic is back on the last good
release, how long the command takes, and how many requests failed meanwhile.

Runs on a lab that site.yml has converged (default: the demo lab `make demo` builds,
inventories/lab/hosts.yml, 13 hosts), with the two releases' artifacts in dist/. Per run, under
steady HTTPS load through a load balancer that stays up: a blue-green rollout to --to, then the
host named by --down is hard-killed (`lab kill`), then `inkdeploy rollback`; the host is booted
again and the next run starts when `inkdeploy status` shows it back. Good hosts to name: a
deploy lock host that is no load balancer (db1 or mon1 in the full lab, data1 in the small one:
the lock and the release history then come from the other lock hosts), or the first load
balancer of a lab with two (small topology: lb1; the load then goes through lb2).

Figures: `traffic_switched_s` as the rollback reports it (command start to the load balancers
serving the old release), the command's wall time (it also restarts the Celery workers on the
old release, which dominates), and the requests that failed, as a browser or urllib3 counts
them, with raw connection resets beside them.

Usage:
  bench/rollback_down.py [--inventory inventories/lab/hosts.yml] [--lab default] [--down db1]
                         [--runs 5] [--from-version 1.0.0] [--to 2.0.0] [--rate 50]
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
from inkdeploy.loadgen import LoadConfig, LoadGenerator

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "inkdeploy")


def run_cli(*args: str, timeout: float = 900) -> tuple[int, dict[str, Any], str, float]:
    """Exit code, the result record of a --json command, its stderr, and its wall time."""
    began = time.monotonic()
    proc = subprocess.run([CLI, *args, "--json"], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, check=False)  # fmt: skip
    result: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            if item.get("type") == "result":
                result = item["data"]
    return proc.returncode, result, proc.stderr.strip(), time.monotonic() - began


def lab(verb: str, host: str, name: str) -> None:
    subprocess.run([CLI, "lab", verb, "--lab", name, host], check=True, capture_output=True)


def wait_back(
    inventory: Path, host: str, timeout_s: float = 240, weights_may_differ: bool = False
) -> float:
    """Seconds until `inkdeploy status` names HOST nowhere as silent, sees no problem and no
    critical alert firing."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        proc = subprocess.run([CLI, "status", "-i", str(inventory), "--json"],
                              capture_output=True, text=True, cwd=REPO, check=False)  # fmt: skip
        if proc.returncode == 0:
            seen = json.loads(proc.stdout)
            silent = [
                *seen["fleet"]["unreachable"], *seen["fleet"]["lb_unreachable"],
                *seen["fleet"]["lock_silent"], *seen["fleet"]["workers_silent"],
                *seen["db"]["unreachable"], *seen["etcd"]["unreachable"],
                *seen["redis"]["unreachable"], *(seen.get("backup") or {}).get("unreachable", {}),
            ]  # fmt: skip
            problems = seen["db"]["problems"] + seen["etcd"]["problems"]
            # the next rollout's pre-flight refuses while a critical alert fires (InstanceDown)
            problems += [a for a in seen["alerts"] if a["severity"] == "critical"]
            differ = seen["fleet"]["weights_disagree"] and not weights_may_differ
            if host not in silent and not problems and not differ:
                return time.monotonic() - began
        time.sleep(3)
    sys.exit(f"{host} did not come back within {timeout_s:.0f} s; see `inkdeploy status`.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", type=Path, default=REPO / "inventories/lab/hosts.yml")
    parser.add_argument("--lab", default="default")
    parser.add_argument("--down", default="db1")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--from-version", default="1.0.0")
    parser.add_argument("--to", default="2.0.0")
    parser.add_argument("--rate", type=float, default=50)
    args = parser.parse_args()
    inv = str(args.inventory)
    env = load_environment(args.inventory, require_app=False)
    lbs = [lb for lb in env.groups.get("lb", []) if lb != args.down]
    if not lbs:
        sys.exit(f"{args.down} is the only load balancer: nothing would serve during the bench.")
    url = f"https://{env.address(lbs[0])}/"
    cacert = str(args.inventory.parent / "pki/nginx_lb/ca.crt")
    artifact = REPO / "dist" / f"{env.policy.app}-{args.to}.tar.gz"
    if not artifact.exists():
        sys.exit(f"No artifact {artifact}: build it with `make artifact VERSION={args.to}`.")
    rows = []
    for run in range(1, args.runs + 1):
        load = LoadGenerator(LoadConfig(url, cacert=cacert, rate=args.rate, concurrency=4))
        load.start()
        try:
            rc, _, err, took = run_cli("rollout", "-i", inv, "--version", args.to, "--strategy",
                                       "blue-green", "--artifact", str(artifact), "--yes",
                                       "-m", f"bench run {run}")  # fmt: skip
            if rc != 0:
                sys.exit(f"run {run}: the rollout to {args.to} failed ({rc}): {err[-400:]}")
            lab("kill", args.down, args.lab)
            try:
                rc, result, err, took = run_cli("rollback", "-i", inv, "-m", f"bench run {run}: "
                                                f"{args.down} is down")  # fmt: skip
            finally:
                report = load.stop()
                lab("start", args.down, args.lab)
        finally:
            if load.running:
                load.stop()
        if rc != 0:
            sys.exit(f"run {run}: the rollback with {args.down} down failed ({rc}): {err[-400:]}")
        switched = float(result.get("traffic_switched_s") or float("nan"))
        if args.down in env.groups.get("lb", []):
            # it boots with the weights it had (on --to): set it like the others, as on-call would
            wait_back(args.inventory, args.down, weights_may_differ=True)
            rc, _, err, _ = run_cli("rollback", "-i", inv, "--to", args.from_version, "-m",
                                    f"bench run {run}: {args.down} is back")  # fmt: skip
            if rc != 0:
                sys.exit(f"run {run}: rollback --to {args.from_version} failed: {err[-400:]}")
        back_s = wait_back(args.inventory, args.down)
        rows.append((switched, took, report))
        print(f"run {run}: traffic on {result.get('version', args.from_version)} after "
              f"{switched:.2f} s, command {took:.1f} s; {report.requests} requests, "
              f"{report.failed} failed, {report.raw_resets} raw resets; {args.down} back after "
              f"{back_s:.0f} s", flush=True)  # fmt: skip
    switched = [r[0] for r in rows]
    commands = [r[1] for r in rows]
    failed = sum(r[2].failed for r in rows)
    print(f"\nrollback with {args.down} killed, {args.runs} runs, load through {lbs[0]}; seconds, "
          "median (min-max)")  # fmt: skip
    print(f"  traffic back      {spread(switched)}")
    print(f"  command           {spread(commands)}")
    print(f"  requests          {sum(r[2].requests for r in rows)}, failed {failed}, raw resets "
          f"{sum(r[2].raw_resets for r in rows)}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
