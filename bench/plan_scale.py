"""How long `inkdeploy plan --json` takes for 10, 100 and 1,000 app hosts, per strategy.

    python bench/plan_scale.py                       # N = 10, 100, 1000; 5 runs each
    python bench/plan_scale.py --hosts 1000 --runs 7 --strategies rolling
    python bench/plan_scale.py --hosts 1000 --inventory-only   # the inventory read, each way
    python bench/plan_scale.py --baseline /tmp/base   # and a checkout of main, in turns

No lab: it writes an inventory shaped like the one `inkdeploy lab up` writes (all.vars, every
host under all.hosts with its address, the topology's groups as children, the lab's
group_vars linked beside it) with N app hosts and the other groups at a realistic size for
them (2 load balancers, N/20 worker hosts, 3 each of PostgreSQL+etcd and Redis+Sentinel,
monitoring, logging, backup). Each run is a fresh process: bench/plan_scale_child.py runs the
real CLI (`inkdeploy plan -i INV --version 2.0.0 --strategy S --json`) with the fleet's SSH and
HTTP answers given from a file (every slot on 1.0.0, healthy, all traffic on blue), since the
hosts do not exist. The JSON is checked (N hosts installed, N base weights, the step count).

Printed per N and strategy: the wall time of the command (median, min, max over the runs) and
the medians of its phases: imports (interpreter start to the CLI), inventory (`ansible-inventory
--list`, then the rest of load_environment), fleet (build_fleet from the facts), planning
(make_plan), preflight (its evaluation, no probes), rendering (the JSON on stdout), other (the
rest: typer, artifact check, gate queries, interpreter exit). Reading the facts over SSH is not
in it: that is the hosts' round trips, not the controller's planning.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "plan_scale_child.py"
APP = "inkapp"
LIVE, NEXT = "1.0.0", "2.0.0"
STRATEGIES = ("rolling", "canary", "blue-green")
PHASES = ("imports", "ansible_inventory", "environment", "fleet", "planning", "preflight",
          "rendering", "other")  # fmt: skip


def address(i: int) -> str:
    return f"10.{80 + i // 62500}.{i // 250 % 250}.{i % 250 + 2}"


def topology(n: int) -> dict[str, list[str]]:
    """Group -> hosts: N app hosts, the rest sized as a fleet of that size would have them."""
    workers = [f"worker{i}" for i in range(1, max(1, n // 20) + 1)]
    db = ["db1", "db2", "db3"]
    redis = ["redis1", "redis2", "redis3"]
    return {
        "lb": ["lb1", "lb2"],
        "app": [f"app{i:04d}" for i in range(1, n + 1)],
        "worker": workers,
        "celery_beat": workers[:1],
        "db": db,
        "etcd": db,
        "redis": redis,
        "sentinel": redis,
        "monitoring": ["mon1"],
        "logging": ["log1"],
        "backup": ["backup1"],
        "deploy_lock": ["lb1", "db1", "mon1"],
    }


def write_inventory(directory: Path, n: int) -> Path:
    """hosts.yml as inkdeploy.lab.inventory.build_inventory lays it out, and the lab's
    group_vars (the rollout policy and the stack's settings, Jinja templates included)."""
    groups = topology(n)
    names = list(dict.fromkeys(h for members in groups.values() for h in members))
    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(directory / "id_ed25519"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={directory / 'known_hosts'}",
                "ansible_python_interpreter": "/usr/bin/python3",
                "common_apt_proxy": "http://10.79.0.1:3142",
                "inkapp_secret_key": "not-a-secret",
            },
            "hosts": {h: {"ansible_host": address(i)} for i, h in enumerate(names, 1)},
            "children": {g: {"hosts": dict.fromkeys(members)} for g, members in groups.items()},
        }
    }
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    (directory / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
    return path


def facts(n: int) -> dict[str, Any]:
    """What the fleet read hands over: each host's slots, each LB's upstreams.conf, the lock."""
    groups = topology(n)
    slot = {"active": True, "healthy": True, "version": LIVE, "health": {"version": LIVE}}
    idle = {"active": False, "healthy": False, "version": None}
    slots: dict[str, Any] = {
        h: {"releases": [LIVE], "slots": {"blue": slot, "green": idle}} for h in groups["app"]
    }
    for worker in groups["worker"]:
        slots[worker] = {"slots": {"celery": {"version": LIVE}}}
    weights = {f"{APP}:{h}:{s}": (100 if s == "blue" else 0)
               for h in groups["app"] for s in ("blue", "green")}  # fmt: skip
    conf = f"# inkdeploy-weights: {json.dumps(weights)}\nupstream {APP} {{}}\n"
    return {"slots": slots, "confs": dict.fromkeys(groups["lb"], conf), "lock": {}}


def write_artifact(directory: Path) -> Path:
    """A file check_artifact accepts for NEXT (only its manifest is read)."""
    top = directory / "build" / f"{APP}-{NEXT}"
    top.mkdir(parents=True)
    manifest = {"name": APP, "version": NEXT, "built_at": "2026-12-07T00:00:00Z",
                "python": "3.11.2", "project_settings": "inkapp.settings",
                "wsgi": "inkapp.wsgi:application", "requirement": APP, "wheels": {}}  # fmt: skip
    (top / "manifest.json").write_text(json.dumps(manifest))
    path = directory / f"{APP}-{NEXT}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return path


def check(plan: dict[str, Any], n: int, strategy: str) -> None:
    install = next(s for s in plan["steps"] if s["kind"] == "install")
    assert plan["strategy"] == strategy and plan["version"] == NEXT, plan["strategy"]
    assert plan["previous"] == LIVE, plan["previous"]
    assert len(install["hosts"]) == n and len(plan["base_weights"]) == n, (n, strategy)


def run_once(
    tmp: Path, inventory: Path, artifact: Path, n: int, strategy: str, tree: Path = REPO
) -> dict[str, Any]:
    """One `inkdeploy plan` run of the orchestrator in TREE (this checkout or --baseline)."""
    times = tmp / "times.json"
    argv = [sys.executable, str(CHILD), str(tmp / "facts.json"), str(times), "plan",
            "-i", str(inventory), "--version", NEXT, "--strategy", strategy,
            "--artifact", str(artifact), "--json"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    path = os.pathsep.join([str(tree / "orchestrator"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "ANSIBLE_CONFIG": str(tree / "ansible.cfg")}
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tree, env=env, check=False)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"inkdeploy plan failed ({proc.returncode}): {proc.stderr[-2000:]}")
    plan = json.loads(proc.stdout)
    check(plan, n, strategy)
    phases = json.loads(times.read_text())
    phases["environment"] -= phases["ansible_inventory"]
    phases["other"] = wall - sum(phases.get(p, 0.0) for p in PHASES if p != "other")
    return {
        "wall": wall,
        "cpu": cpu,
        **phases,
        "steps": len(plan["steps"]),
        "mb": len(proc.stdout) / 1e6,
    }


def measure(
    n: int, strategies: list[str], runs: int, trees: dict[str, Path]
) -> list[dict[str, Any]]:
    """RUNS runs per strategy of each of TREES (label -> checkout), taking turns run by run, so
    a baseline and this checkout see the same load on a shared machine."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="inkdeploy-plan-scale-") as name:
        tmp = Path(name)
        inventory = write_inventory(tmp, n)
        (tmp / "facts.json").write_text(json.dumps(facts(n)))
        artifact = write_artifact(tmp)
        for strategy in strategies:
            samples: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
            for _ in range(runs):
                for label, tree in trees.items():
                    samples[label].append(run_once(tmp, inventory, artifact, n, strategy, tree))
            for label, taken in samples.items():
                walls = [s["wall"] for s in taken]
                row: dict[str, Any] = {
                    "code": label, "hosts": n, "strategy": strategy, "runs": runs,
                    "median_s": statistics.median(walls), "min_s": min(walls),
                    "max_s": max(walls), "cpu_s": statistics.median(s["cpu"] for s in taken),
                    "steps": taken[0]["steps"], "json_mb": taken[0]["mb"],
                }  # fmt: skip
                for phase in PHASES:
                    row[phase] = statistics.median(s.get(phase, 0.0) for s in taken)
                rows.append(row)
                print(line(row), flush=True)
    return rows


ANSIBLE_DEFAULT_ORDER = "host_list,script,auto,yaml,ini,toml"
INVENTORY_VARIANTS = (
    ("ansible-inventory --list, Ansible's plugin order", ["--list"], ANSIBLE_DEFAULT_ORDER),
    ("ansible-inventory --list, yaml before auto", ["--list"], None),
    ("inventory_list.py --list (what plan runs)", ["--list"], None),
    ("ansible-inventory --list --export", ["--list", "--export"], None),
)


def inventory_variants(n: int, runs: int) -> None:
    """The inventory read alone, each way: median wall and CPU seconds, size of its JSON."""
    bindir = Path(sys.executable).parent
    script = REPO / "orchestrator" / "inkdeploy" / "inventory_list.py"
    with tempfile.TemporaryDirectory(prefix="inkdeploy-plan-scale-") as name:
        inventory = write_inventory(Path(name), n)
        for label, args, order in INVENTORY_VARIANTS:
            env = {**os.environ, **({"ANSIBLE_INVENTORY_ENABLED": order} if order else {})}
            if label.startswith("inventory_list"):
                argv = [sys.executable, "-P", str(script)]
            else:
                argv = [str(bindir / "ansible-inventory")]
            walls, cpus = [], []
            for _ in range(runs):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                began = time.perf_counter()
                proc = subprocess.run([*argv, "-i", str(inventory), *args], capture_output=True,
                                      text=True, cwd=REPO, env=env, check=True)  # fmt: skip
                walls.append(time.perf_counter() - began)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            size = len(proc.stdout) / 1e6
            print(f"{n:>5} {label:<50} {wall:6.2f} {cpu:6.2f} {size:7.2f}", flush=True)


def line(row: dict[str, Any]) -> str:
    phases = " ".join(f"{row[p]:6.3f}" for p in PHASES)
    return (
        f"{row['code']:<8} {row['hosts']:>5} {row['strategy']:<10} {row['median_s']:6.2f} "
        f"{row['min_s']:6.2f} {row['max_s']:6.2f} {row['cpu_s']:6.2f} | {phases} | "
        f"{row['steps']:>5} {row['json_mb']:7.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="Also write the rows to this file.")
    parser.add_argument("--baseline", type=Path, help="Another checkout (e.g. `git worktree add "
                        "/tmp/base main`) to time in turns with this one.")  # fmt: skip
    parser.add_argument("--inventory-only", action="store_true",
                        help="Time only the inventory read, each way it can be done.")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    if args.inventory_only:
        print(f"The inventory read alone, medians over {args.runs} runs")
        print(f"{'hosts':>5} {'how':<50} {'wall':>6} {'cpu':>6} {'JSON MB':>7}")
        for n in args.hosts:
            inventory_variants(n, args.runs)
        return 0
    print(
        f"inkdeploy plan --json: wall seconds over {args.runs} runs, the median of its CPU "
        "seconds (user+sys, ansible-inventory included) and of its phases' wall seconds"
    )
    head = " ".join(f"{p[:6]:>6}" for p in PHASES)
    print(f"{'code':<8} {'hosts':>5} {'strategy':<10} {'median':>6} {'min':>6} {'max':>6} "
          f"{'cpu':>6} | {head} | {'steps':>5} {'JSON MB':>7}")  # fmt: skip
    trees = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    rows = [row for n in args.hosts for row in measure(n, args.strategies, args.runs, trees)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
