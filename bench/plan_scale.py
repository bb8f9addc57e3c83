"""How long `inkdeploy plan` takes on the controller for 10, 100 and 1,000 app hosts.

    python bench/plan_scale.py                # N = 10, 100, 1000; 5 runs of each
    python bench/plan_scale.py --hosts 1000 --runs 7 --json

No lab: it writes an inventory of N app hosts (lb1, worker1, data1 and app0001..appN, with the
lab's group_vars, so every host carries the real variable set), then times what `plan` does on
the controller, phase by phase:
  inventory  load_environment: `ansible-inventory --list` and the rollout policy
  fleet      build_fleet from the facts the fleet read returns (one slot record per host and the
             LB's upstreams.conf, generated here as the facts playbook would hand them over)
  plan       make_plan and the plan's JSON form (what the journal stores), per strategy;
             `plan` in the first column is inventory + fleet + the environment's own strategy
The lab policy rolls one host at a time, so a rolling plan for N hosts has N batches, each
carrying the LB's full weights: its size grows with N squared (the MB column says how much).
Reading the facts over SSH is not timed here: that scales with the hosts' round trips, not the
controller's planning, and bench/scale.py-style lab runs measure it. Medians over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "orchestrator"))

from inkdeploy.fleet import build_fleet  # noqa: E402
from inkdeploy.inventory import load_environment  # noqa: E402
from inkdeploy.plan import make_plan  # noqa: E402

APP = "inkapp"
LIVE, NEXT = "1.0.0", "2.0.0"


def app_hosts(n: int) -> list[str]:
    return [f"app{i:04d}" for i in range(1, n + 1)]


def write_inventory(directory: Path, n: int) -> Path:
    """An inventory like the lab's, with N app hosts on made-up addresses."""
    hosts = {f"app{i:04d}": {"ansible_host": f"10.{80 + i // 62500}.{i // 250 % 250}.{i % 250 + 2}"}
             for i in range(1, n + 1)}  # fmt: skip
    inventory = {
        "all": {
            "children": {
                "lb": {"hosts": {"lb1": {"ansible_host": "10.79.0.10"}}},
                "app": {"hosts": hosts},
                "worker": {"hosts": {"worker1": {"ansible_host": "10.79.0.11"}}},
                "celery_beat": {"hosts": {"worker1": None}},
                "db": {"hosts": {"data1": {"ansible_host": "10.79.0.12"}}},
                "redis": {"hosts": {"data1": None}},
                "sentinel": {"hosts": {"data1": None}},
                "monitoring": {"hosts": {"data1": None}},
            }
        }
    }
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    (directory / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
    return path


def facts(hosts: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """What the facts playbook hands over: each host's slots, and the LB's upstreams.conf."""
    slot = {"active": True, "healthy": True, "version": LIVE, "health": {"version": LIVE}}
    idle = {"active": False, "healthy": False, "version": None}
    slots = {h: {"releases": [LIVE], "slots": {"blue": slot, "green": idle}} for h in hosts}
    slots["worker1"] = {"slots": {"celery": {"version": LIVE}}}
    weights = {
        f"{APP}:{h}:{s}": (100 if s == "blue" else 0) for h in hosts for s in ("blue", "green")
    }
    conf = f"# inkdeploy-weights: {json.dumps(weights)}\nupstream {APP} {{}}\n"
    return slots, {"lb1": conf}


STRATEGIES = ("canary", "blue-green", "rolling")


def measure(inventory: Path, n: int) -> dict[str, float]:
    """Seconds per phase; `plan_s` is what `inkdeploy plan` spends on the controller with the
    environment's own strategy, each STRATEGIES entry the planning and JSON form of that one."""
    started = time.perf_counter()
    env = load_environment(inventory)
    loaded = time.perf_counter()
    slots, confs = facts(env.app_hosts)
    fleet = build_fleet(
        env.policy.app, env.app_hosts, {h: env.address(h) for h in env.app_hosts}, slots, confs,
        env.worker_hosts,
    )  # fmt: skip
    built = time.perf_counter()
    assert len(fleet.hosts) == n, (len(fleet.hosts), n)
    row = {"inventory_s": loaded - started, "fleet_s": built - loaded}
    for strategy in STRATEGIES:
        begun = time.perf_counter()
        plan = make_plan(fleet, env.policy, NEXT, strategy, tuple(env.worker_hosts))  # type: ignore[arg-type]
        text = json.dumps(plan.to_dict())
        row[strategy] = time.perf_counter() - begun
        row[f"{strategy}_steps"] = float(len(plan.steps))
        row[f"{strategy}_mb"] = len(text) / 1e6
    row["plan_s"] = row["inventory_s"] + row["fleet_s"] + row[env.policy.strategy]
    row["strategy"] = env.policy.strategy  # type: ignore[assignment]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    results = []
    for n in args.hosts:
        with tempfile.TemporaryDirectory(prefix="inkdeploy-plan-scale-") as tmp:
            inventory = write_inventory(Path(tmp), n)
            runs = [measure(inventory, n) for _ in range(args.runs)]
        row: dict[str, Any] = {"hosts": n, "runs": args.runs, "strategy": runs[0]["strategy"]}
        for key in ("plan_s", "inventory_s", "fleet_s", *STRATEGIES):
            row[key] = round(statistics.median(r[key] for r in runs), 3)
        for strategy in STRATEGIES:
            row[f"{strategy}_steps"] = int(runs[0][f"{strategy}_steps"])
            row[f"{strategy}_mb"] = round(runs[0][f"{strategy}_mb"], 1)
        results.append(row)
        if not args.json:
            each = ", ".join(
                f"{s} {row[s]:.2f} s ({row[s + '_steps']} steps, {row[s + '_mb']} MB)"
                for s in STRATEGIES
            )
            print(
                f"{n:>5} app hosts: plan ({row['strategy']}) {row['plan_s']:.2f} s, median of "
                f"{args.runs}: inventory {row['inventory_s']:.2f} s, fleet {row['fleet_s']:.3f} s;"
                f" per strategy, plan + JSON: {each}",
                flush=True,
            )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
