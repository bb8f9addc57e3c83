"""The web tier on a lab: how long site.yml takes (fresh and no-op), and what draining and
hard-killing an app host cost the clients of the load balancer, under steady HTTPS load.

    python bench/web_tier.py                       # small topology (6 hosts), 3 drills of each
    python bench/web_tier.py --topology full --runs 5 --json

Needs root (it boots its own lab, 'bweb' on 10.77.53.0/24 by default) and PyPI for the build.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestrator"))

from inkdeploy.lab.drill import (
    DrillResult,
    drain_drill,
    inventory_address,
    kill_drill,
    lab_inventory,
    run_playbook,
    wait_slot_healthy,
)

PROJECT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("inkdeploy"))


def sh(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def summary(name: str, results: list[DrillResult]) -> dict[str, object]:
    reports = [r.report for r in results]
    kinds: dict[str, int] = {}
    for report in reports:
        for kind, count in report.failed_by_kind.items():
            kinds[kind] = kinds.get(kind, 0) + count
    last_failure = [r.last_failure_s for r in reports if r.last_failure_s is not None]
    return {
        "drill": name,
        "runs": len(results),
        "requests": [r.requests for r in reports],
        "failed": [r.failed for r in reports],
        "raw_resets": [r.raw_resets for r in reports],
        "slow_over_1s": [r.slow["over_1s"] if r.slow else None for r in reports],
        "slow_over_5s": [r.slow["over_5s"] if r.slow else None for r in reports],
        "failed_by_kind_total": kinds,
        "p99_ms_median": statistics.median(r.latency_ms["p99"] for r in reports if r.latency_ms),
        "max_ms_worst": max(r.latency_ms["max"] for r in reports if r.latency_ms),
        "last_failure_s": last_failure,
        "steps_s": [r.steps for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="bweb")
    parser.add_argument("--subnet", default="10.77.53.0/24")
    parser.add_argument("--topology", default="small")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    version = "1.0.0"
    sh(CLI, "build", str(PROJECT / "examples/inkapp"), "--version", version, "--out", str(work))
    artifact = work / f"inkapp-{version}.tar.gz"
    inventory = lab_inventory(work)
    subprocess.run([CLI, "lab", "down", "--lab", args.lab], capture_output=True, check=False)
    sh(CLI, "lab", "up", "--lab", args.lab, "--subnet", args.subnet, "--topology", args.topology,
       "--inventory", str(inventory))  # fmt: skip
    figures: dict[str, object] = {"topology": args.topology}
    try:
        extra = {"app_artifact": str(artifact)}
        fresh = run_playbook("site.yml", inventory, extra)
        if fresh.rc != 0:
            sys.exit(f"site.yml failed on the fresh lab:\n{fresh.tail()}")
        noop = run_playbook("site.yml", inventory, extra)
        figures["site_yml_fresh_s"] = round(fresh.seconds, 1)
        figures["site_yml_noop_s"] = round(noop.seconds, 1)
        figures["site_yml_noop_changed"] = sum(noop.changed.values())
        figures["hosts"] = len(fresh.recap)

        lb = inventory_address(inventory, "lb1")
        url, cacert = f"https://{lb}/", inventory.parent / "pki/nginx_lb/ca.crt"
        drains, kills = [], []
        for _ in range(args.runs):
            drains.append(drain_drill(inventory, url, cacert, "app1", rate=args.rate))
            kills.append(kill_drill(inventory, url, cacert, "app2", args.lab, rate=args.rate))
            try:
                wait_slot_healthy(args.lab, "app2", version, timeout=120)
            except TimeoutError as exc:
                sys.exit(str(exc))
            time.sleep(12)  # past nginx's fail_timeout, so app2 is back in rotation
        figures["drain"] = summary("drain app1 and bring it back", drains)
        figures["kill"] = summary("hard-kill app2", kills)
    finally:
        if not args.keep:
            down = [CLI, "lab", "down", "--lab", args.lab]
            subprocess.run(down, capture_output=True, check=False)

    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{args.topology}: {figures['hosts']} hosts")
    print(f"  site.yml on a fresh lab: {figures['site_yml_fresh_s']} s")
    print(
        f"  site.yml again (no-op):  {figures['site_yml_noop_s']} s, "
        f"changed={figures['site_yml_noop_changed']}"
    )
    for key in ("drain", "kill"):
        s = figures[key]
        print(f"  {s['drill']} at {args.rate:.0f} req/s, {s['runs']} runs:")
        print(f"    requests {s['requests']}")
        print(f"    failed (browser-like client) {s['failed']}")
        print(f"    failed by kind, all runs {s['failed_by_kind_total']}")
        print(f"    raw keep-alive resets (retried once) {s['raw_resets']}")
        print(f"    ok but slower than 1 s {s['slow_over_1s']}, than 5 s {s['slow_over_5s']}")
        print(f"    last failure at s {s['last_failure_s']}")
        print(f"    p99 median {s['p99_ms_median']:.1f} ms, worst max {s['max_ms_worst']:.0f} ms")


if __name__ == "__main__":
    main()
