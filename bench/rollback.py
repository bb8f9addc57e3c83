#!/usr/bin/env python3
"""`inkdeploy rollback` end to end, over the SSH fast path and over the playbooks, in turns on
the same converged lab: how soon traffic is back on the last good release and how long the
whole command takes, with each step's time from the command's own --json events.

Per run, under steady HTTPS load through the first load balancer (the rollout's metric gates
need traffic): a blue-green rollout to --to (not timed), then `inkdeploy rollback` (timed),
with the requests that failed meanwhile counted. Odd runs
use the inventory as it is (the fast path on, the default); even runs a copy of it whose
rollout policy says `fast_path: false`, so every step runs its playbook as before the fast
paths existed. Both copies share the lab, its certificates and the release history on the lock
hosts; the rollout journal of each is next to its own inventory.

Runs on a lab site.yml converged (default: the small lab the stack tests use, reused), with
both releases' artifacts in dist/.

Usage:
  bench/rollback.py [--inventory /tmp/dev/inventory/hosts.yml] [--runs 5] [--to 2.0.0]
                    [--only fast|playbooks]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from figures import spread  # bench/figures.py: python puts bench/ first on sys.path
from inkdeploy.inventory import load_environment
from inkdeploy.loadgen import LoadConfig, LoadGenerator

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "inkdeploy")


def run_cli(*args: str, timeout: float = 900) -> tuple[int, list[dict[str, Any]], str, float]:
    """Exit code, the --json events (the result last), stderr, wall time."""
    began = time.monotonic()
    proc = subprocess.run([CLI, *args, "--json"], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, check=False)  # fmt: skip
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr.strip(), time.monotonic() - began


def playbook_inventory(inventory: Path, into: Path) -> Path:
    """A copy of INVENTORY's directory (hosts file, group_vars resolved, pki linked) whose
    inkdeploy_rollout says fast_path: false."""
    source = inventory.parent
    shutil.copy(inventory, into / inventory.name)
    shutil.copytree(source / "group_vars", into / "group_vars", symlinks=False)
    if (source / "pki").exists():
        (into / "pki").symlink_to((source / "pki").resolve())
    all_vars = into / "group_vars" / "all.yml"
    data = yaml.safe_load(all_vars.read_text())
    data.setdefault("inkdeploy_rollout", {})["fast_path"] = False
    all_vars.write_text(yaml.safe_dump(data, sort_keys=False))
    return into / inventory.name


def rollout_and_rollback(
    inv: str, version: str, artifact: Path, run: int, kind: str
) -> tuple[int, list[dict[str, Any]], str, float]:
    rc, _, err, _ = run_cli("rollout", "-i", inv, "--version", version, "--strategy",
                            "blue-green", "--artifact", str(artifact), "--yes",
                            "-m", f"bench run {run} ({kind})")  # fmt: skip
    if rc != 0:
        sys.exit(f"run {run} ({kind}): the rollout to {version} failed: {err[-400:]}")
    return run_cli("rollback", "-i", inv, "-m", f"bench run {run} ({kind})")


def step_times(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per step kind as the events report them (fast_path actions and playbooks)."""
    times: dict[str, float] = defaultdict(float)
    for event in events:
        data = event.get("data") or {}
        if event.get("type") == "fast_path":
            times[f"fast {data['action']}"] += float(data.get("seconds") or 0)
        elif event.get("type") == "playbook":
            times[f"playbook {data['playbook']}"] += float(data.get("seconds") or 0)
    return dict(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", type=Path, default=Path("/tmp/dev/inventory/hosts.yml"))
    parser.add_argument("--runs", type=int, default=5, help="runs of each kind")
    parser.add_argument("--to", default="2.0.0")
    parser.add_argument("--only", choices=["fast", "playbooks"])
    parser.add_argument("--rate", type=float, default=30, help="requests per second")
    args = parser.parse_args()
    env = load_environment(args.inventory, require_app=False)
    url = f"https://{env.address(env.groups['lb'][0])}/"
    cacert = str(args.inventory.parent / "pki/nginx_lb/ca.crt")
    artifact = REPO / "dist" / f"{env.policy.app}-{args.to}.tar.gz"
    if not artifact.exists():
        sys.exit(f"No artifact {artifact}: build it with `make artifact VERSION={args.to}`.")
    kinds = ["fast", "playbooks"] if args.only is None else [args.only]
    results: dict[str, list[tuple[float, float, dict[str, float]]]] = {k: [] for k in kinds}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="inkdeploy-bench-rollback-") as tmp:
        inventories = {"fast": args.inventory,
                       "playbooks": playbook_inventory(args.inventory, Path(tmp))}  # fmt: skip
        for run in range(1, args.runs + 1):
            for kind in kinds:
                inv = str(inventories[kind])
                load = LoadGenerator(LoadConfig(url, cacert=cacert, rate=args.rate, concurrency=4))
                load.start()
                try:
                    rc, events, err, took = rollout_and_rollback(inv, args.to, artifact, run, kind)
                finally:
                    report = load.stop()
                if rc != 0:
                    sys.exit(f"run {run} ({kind}): the rollback failed ({rc}): {err[-400:]}")
                result = next(e["data"] for e in events if e.get("type") == "result")
                switched = float(result.get("traffic_switched_s") or float("nan"))
                steps = step_times(events)
                results[kind].append((switched, took, steps))
                failed += report.failed
                slowest = ", ".join(f"{k} {v:.1f}" for k, v in
                                    sorted(steps.items(), key=lambda kv: -kv[1])[:4])  # fmt: skip
                print(f"run {run} {kind:9}: traffic back {switched:5.2f} s, command {took:5.1f} s"
                      f" ({slowest}); {report.requests} requests, {report.failed} failed",
                      flush=True)  # fmt: skip
    print(f"\nrollback after a blue-green rollout to {args.to}, {args.runs} runs each, "
          "in turns; seconds, median (min-max)")  # fmt: skip
    for kind, rows in results.items():
        print(f"  {kind:9}  traffic back {spread([r[0] for r in rows])}"
              f"   command {spread([r[1] for r in rows])}")  # fmt: skip
        names = sorted({n for r in rows for n in r[2]})
        for name in names:
            print(f"             {name:32} {spread([r[2].get(name, 0.0) for r in rows])}")
    if len(results) == 2:
        ratio = statistics.median(r[1] for r in results["playbooks"]) / statistics.median(
            r[1] for r in results["fast"]
        )
        print(f"  the command over the fast path is {ratio:.1f}x faster (medians, same lab)")
    print(f"  requests failed during the rollouts and rollbacks: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
