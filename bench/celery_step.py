#!/usr/bin/env python3
"""How long a rollout's Celery step takes: the playbook (celery.yml, what the step ran before)
against the fast path (the link switched by the celery_switch payload, then the warm restart
and ping of `inkdeploy workers restart`), in turns on the same worker hosts.

Runs on a lab site.yml has converged. Both releases (--from-version, whose workers run now, and
--to) must be installed on the worker hosts; the bench installs --to there first with
playbooks/rollout/install.yml (not timed; --artifact, default dist/inkapp-VERSION.tar.gz). Then
per run: the playbook moves the workers to one release and the fast path moves them back to the
other, alternating which goes first, so each sees the same releases and the same load. Each
figure is the controller's wall time for the whole step, every worker host one after the other;
the fast path also reports, per host, the warm shutdown and the seconds until the new workers
answered a ping. The workers end on --from-version, as they began. The step runs outside a
rollout, so the deploy lock must be free (celery.yml checks it).

Usage:
  bench/celery_step.py --inventory /tmp/dev/inventory/hosts.yml [--runs 5]
                       [--from-version 1.0.0] [--to 2.0.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from inkdeploy.fastpath import FastPath
from inkdeploy.inventory import load_environment
from inkdeploy.lab.drill import run_playbook

REPO = Path(__file__).resolve().parents[1]


def by_playbook(inventory: Path, version: str, keep: list[str]) -> float:
    """What the executor ran for the Celery step before the fast path (execute.py)."""
    run = run_playbook("celery.yml", inventory, {
        "app_version": version, "app_artifact": str(REPO / "dist" / f"inkapp-{version}.tar.gz"),
        "app_artifact_optional": True, "app_keep_versions": keep, "app_follow_live": False,
    })  # fmt: skip
    if run.rc != 0:
        sys.exit(f"celery.yml to {version} failed: {run.tail()}")
    return run.seconds


def by_fast_path(fast: FastPath, workers: list[str], version: str, keep: list[str]) -> float:
    began = time.monotonic()
    done = fast.celery_release({"version": version, "hosts": workers, "keep": keep})
    seconds = time.monotonic() - began
    if done is None:
        sys.exit(f"the fast path cannot serve {', '.join(workers)} (release {version} missing?)")
    for host, what in done.items():
        print(f"    {host}: warm shutdown {what['stop_s']} s, ping {what['ping_s']} s after the "
              f"start, {what['seconds']} s in all")  # fmt: skip
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--from-version", default="1.0.0")
    parser.add_argument("--to", default="2.0.0")
    parser.add_argument("--artifact", type=Path, default=None)
    args = parser.parse_args()
    env = load_environment(args.inventory, require_app=False)
    workers = list(env.worker_hosts)
    artifact = args.artifact or REPO / "dist" / f"inkapp-{args.to}.tar.gz"
    install = run_playbook("rollout/install.yml", args.inventory, {
        "rollout_hosts": ",".join(workers), "app_version": args.to,
        "app_artifact": str(artifact), "rollout_migrate": False, "app_follow_live": False,
    })  # fmt: skip
    if install.rc != 0:
        sys.exit(f"installing {args.to} on {', '.join(workers)} failed: {install.tail()}")
    fast = FastPath.of(env)
    keep = sorted({args.from_version, args.to})
    playbook_s: list[float] = []
    fast_s: list[float] = []
    for i in range(args.runs):
        # each run leaves the workers where they began; who goes first alternates
        there, back = (args.to, args.from_version)
        if i % 2 == 0:
            playbook_s.append(by_playbook(args.inventory, there, keep))
            print(f"run {i + 1}: celery.yml to {there}: {playbook_s[-1]:.1f} s; fast path back:")
            fast_s.append(by_fast_path(fast, workers, back, keep))
        else:
            print(f"run {i + 1}: fast path to {there}:")
            fast_s.append(by_fast_path(fast, workers, there, keep))
            playbook_s.append(by_playbook(args.inventory, back, keep))
            print(f"  celery.yml back to {back}: {playbook_s[-1]:.1f} s")
        print(f"  fast path: {fast_s[-1]:.1f} s", flush=True)
    pb, fp = statistics.median(playbook_s), statistics.median(fast_s)
    print(f"\nCelery step on {len(workers)} worker host(s) ({', '.join(workers)}), {args.runs} "
          "runs of each in turns:")  # fmt: skip
    for name, median, seconds in (("celery.yml", pb, playbook_s), ("fast path", fp, fast_s)):
        print(f"  {name:12} median {median:5.1f} s (min {min(seconds):.1f}, "
              f"max {max(seconds):.1f})")  # fmt: skip
    print(f"  celery.yml / fast path: {pb / fp:.1f}x")


if __name__ == "__main__":
    main()
