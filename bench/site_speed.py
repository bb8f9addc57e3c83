#!/usr/bin/env python3
"""How long a no-op `site.yml` takes on a converged lab, with Ansible's linear strategy and, when
the optional mitogen package is installed, with Mitogen's, run by run in turns so both see the
same machine load.

A no-op run is what every re-converge, every idempotence check and every tier playbook of a
test pays before it changes anything: its time is Ansible's per-task cost, not the services'.
Each run must report changed=0 and failed=0 on every host (the bench stops otherwise: a
strategy that changes or breaks something is not faster, it is wrong). Per strategy it prints
the median, min and max wall time, the median controller CPU (user+sys of ansible-playbook and
its children), the ratio of the medians, and the ten roles that took longest in the last run
of each strategy (ansible.posix.profile_roles: wall time while the role's tasks ran).

Usage:
  bench/site_speed.py --inventory /tmp/dev/inventory/hosts.yml [--runs 5]
                      [--artifact dist/inkapp-1.0.0.tar.gz] [--strategies linear mitogen_linear]
Mitogen: pip install -c requirements/constraints.txt mitogen (pinned there; not installed by
default, docs/speed.md says why).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = str(REPO / "playbooks" / "site.yml")
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
ROLE_LINE = re.compile(r"^(\S+) -+ ([\d.]+)s$", re.M)


def mitogen_strategy_dir() -> Path | None:
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "plugins" / "strategy"


def one_run(inventory: str, artifact: str, strategy: str) -> tuple[float, float, dict[str, float]]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STRATEGY=strategy,
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_roles")  # fmt: skip
    if strategy.startswith("mitogen"):
        plugins = mitogen_strategy_dir()
        if plugins is None:
            sys.exit("mitogen is not installed: "
                     "pip install -c requirements/constraints.txt mitogen")  # fmt: skip
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(plugins)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", inventory, PLAYBOOK,
         "-e", f"app_artifact={artifact}"],
        capture_output=True, text=True, cwd=REPO, env=env, check=False,
    )  # fmt: skip
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    recap = RECAP.findall(run.stdout)
    bad = [f"{h} changed={c} unreachable={u} failed={f}" for h, c, u, f in recap
           if (c, u, f) != ("0", "0", "0")]  # fmt: skip
    if run.returncode != 0 or not recap or bad:
        sys.exit(f"{strategy}: site.yml was no no-op (rc {run.returncode}): {'; '.join(bad)}\n"
                 f"{run.stdout[-3000:]}{run.stderr[-2000:]}")  # fmt: skip
    roles_part = run.stdout.rsplit("ROLES RECAP", 1)[-1]
    roles = {name: float(s) for name, s in ROLE_LINE.findall(roles_part) if name != "total"}
    return wall, cpu, roles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", required=True, help="a lab site.yml has converged")
    parser.add_argument("--artifact", default=str(REPO / "dist" / "inkapp-1.0.0.tar.gz"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--strategies", nargs="+", default=None,
        help="default: linear, and mitogen_linear if mitogen is installed",
    )  # fmt: skip
    args = parser.parse_args()
    strategies = args.strategies or (
        ["linear", "mitogen_linear"] if mitogen_strategy_dir() else ["linear"]
    )
    walls: dict[str, list[float]] = {s: [] for s in strategies}
    cpus: dict[str, list[float]] = {s: [] for s in strategies}
    roles: dict[str, dict[str, float]] = {}
    for i in range(args.runs):
        for strategy in strategies:
            wall, cpu, roles[strategy] = one_run(args.inventory, args.artifact, strategy)
            walls[strategy].append(wall)
            cpus[strategy].append(cpu)
            print(f"run {i + 1}/{args.runs} {strategy}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print(f"\nno-op site.yml, {args.runs} runs per strategy in turns "
          f"({len(os.sched_getaffinity(0))} CPUs)")  # fmt: skip
    for s in strategies:
        w = walls[s]
        cpu = statistics.median(cpus[s])
        print(f"  {s:15} median {statistics.median(w):6.1f} s (min {min(w):.1f}, max "
              f"{max(w):.1f}), controller CPU median {cpu:.1f} s")  # fmt: skip
    if len(strategies) > 1:
        base = statistics.median(walls[strategies[0]])
        for s in strategies[1:]:
            print(f"  {strategies[0]} / {s}: {base / statistics.median(walls[s]):.2f}x")
    for s in strategies:
        top = sorted(roles[s].items(), key=lambda kv: -kv[1])[:10]
        print(f"\n  slowest roles, last {s} run: "
              + ", ".join(f"{name} {sec:.1f} s" for name, sec in top))  # fmt: skip


if __name__ == "__main__":
    main()
