#!/usr/bin/env python3
"""`inkdeploy drain` and `undrain` under steady HTTPS load: how long each command takes, how
soon the drained host had no connection left, and how many requests failed.

Runs on a lab that site.yml has converged (default: the demo lab `make demo` builds,
inventories/lab/hosts.yml). Each run is inkdeploy.lab.drill's drain drill, as the stack test
runs it once: load through the first load balancer, `inkdeploy drain HOST`, a few seconds
drained, `inkdeploy undrain HOST`, a few seconds back. Failed requests count as a browser or
urllib3 sees them (one retry of an idempotent request on a reused connection closed before any
response byte; ../shared/lab-notes.md); raw connection resets are reported beside them.

Usage:
  bench/drain.py [--inventory inventories/lab/hosts.yml] [--host app1] [--runs 5] [--rate 100]
Changes only the host's load balancer weights, and gives them back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from figures import spread  # bench/figures.py: python puts bench/ first on sys.path
from inkdeploy.inventory import load_environment
from inkdeploy.lab.drill import drain_drill

REPO = Path(__file__).resolve().parents[1]


def first_lb_address(inventory: Path) -> str:
    env = load_environment(inventory, require_app=False)
    lbs = env.groups.get("lb") or []
    if not lbs:
        sys.exit(f"No host in group lb in {inventory}.")
    return env.address(lbs[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", type=Path, default=REPO / "inventories/lab/hosts.yml")
    parser.add_argument("--host", default="app1")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=100)
    args = parser.parse_args()
    if not args.inventory.exists():
        sys.exit(f"No lab inventory at {args.inventory}: run `make demo` first, or pass "
                 "--inventory.")  # fmt: skip
    url = f"https://{first_lb_address(args.inventory)}/"
    cacert = args.inventory.parent / "pki/nginx_lb/ca.crt"
    rows = []
    for run in range(1, args.runs + 1):
        result = drain_drill(args.inventory, url, cacert, args.host, rate=args.rate)
        report = result.report
        idle = result.answers["drain"].get("idle_after_s")
        rows.append((result.steps["drain"], result.steps["return"], idle, report))
        print(f"run {run}: drain {result.steps['drain']:.1f} s (no connection left after "
              f"{idle} s), undrain {result.steps['return']:.1f} s; {report.requests} requests, "
              f"{report.failed} failed, {report.raw_resets} raw resets", flush=True)  # fmt: skip
    drains = [r[0] for r in rows]
    undrains = [r[1] for r in rows]
    idles = [r[2] for r in rows if r[2] is not None]
    requests = sum(r[3].requests for r in rows)
    failed = sum(r[3].failed for r in rows)
    print(f"\ndrain {args.host} under {args.rate:g} requests/s, {args.runs} runs; seconds, median "
          "(min-max)")  # fmt: skip
    print(f"  drain command     {spread(drains)}")
    print(f"  undrain command   {spread(undrains)}")
    print(f"  no connection     {spread(idles) if idles else 'not seen'} after the drain began")
    print(f"  requests          {requests}, failed {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
