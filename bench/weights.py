"""A weight step through playbooks/lb-weights.yml against the same step over the SSH fast path
(inkdeploy/fastpath.py), side by side in one run, on a converged lab; and the other actions a
rollback waits for (read the fleet, take and release the deploy lock) both ways.

    python bench/weights.py                                  # the lab of `make demo`
    python bench/weights.py --inventory /tmp/dev/inventory/hosts.yml --runs 7 --json

Each round runs every action once per path, in alternating order, and times it from the call to
its return: for a weight step that is when every load balancer's new workers answer with the new
weights (both paths wait for that). The weights moved are the live slot's, between 100 and 99,
so traffic is not disturbed. Prints the median and the spread per action and path, and the
ratio of the medians. Needs a lab that playbooks/site.yml built and no rollout running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestrator"))

from inkdeploy.deploy import Session
from inkdeploy.runner import Runner

PROJECT = Path(__file__).resolve().parents[1]


def timed(action: Callable[[], Any]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, default=PROJECT / "inventories/lab/hosts.yml")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    session = Session.open(args.inventory)
    fast = session.fast
    if fast is None or fast.set_weights({}) is None:
        sys.exit("The fast path cannot reach this inventory's load balancers; see remote.py.")
    fleet = session.read_fleet()
    live = {h: s for h in fleet.hosts if (s := fleet.live_slot(h))}
    runner = Runner(args.inventory)
    lock = session.lock

    def weights(value: int) -> dict[str, int]:
        return {f"{h}:{s}": value for h, s in live.items()}

    def playbook_weights(value: int) -> None:
        result = runner.run("lb-weights.yml", {"nginx_lb_slot_weights": weights(value)})
        if not result.ok:
            sys.exit(f"lb-weights.yml failed: {result.first_failure()}")

    def lock_cycle(fast_path: bool) -> None:
        lock.fast = fast if fast_path else None
        holder = {"user": "bench", "rollout": "bench-weights", "version": "", "message": "bench"}
        lock.acquire(holder, lease_s=60)
        lock.release("bench-weights")

    def read(fast_path: bool) -> None:
        session.fast = fast if fast_path else None
        session.lock.fast = session.fast
        session.read_fleet()

    figures: dict[str, dict[str, list[float]]] = {
        "weight step": {"playbook": [], "fast path": []},
        "read the fleet": {"playbook": [], "fast path": []},
        "lock acquire + release": {"playbook": [], "fast path": []},
    }
    value = 99
    for run in range(args.runs):
        order = ("playbook", "fast path") if run % 2 == 0 else ("fast path", "playbook")
        for path in order:
            value = 100 if value == 99 else 99
            if path == "playbook":
                seconds = timed(lambda v=value: playbook_weights(v))
            else:
                seconds = timed(lambda v=value: fast.set_weights(weights(v)))
            figures["weight step"][path].append(seconds)
            figures["read the fleet"][path].append(timed(lambda p=path: read(p == "fast path")))
            figures["lock acquire + release"][path].append(
                timed(lambda p=path: lock_cycle(p == "fast path"))
            )
        print(f"round {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
    fast.set_weights(weights(100))

    summary = {
        action: {
            path: {
                "median_s": round(statistics.median(values), 3),
                "min_s": round(min(values), 3),
                "max_s": round(max(values), 3),
                "runs": len(values),
            }
            for path, values in paths.items()
        }
        for action, paths in figures.items()
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"{'action':<24} {'playbook (median, range)':>28} {'fast path (median, range)':>28}  ratio"
    )
    for action, paths in summary.items():
        cells = [
            f"{p['median_s']:.2f} s ({p['min_s']:.2f}-{p['max_s']:.2f})"
            for p in (paths["playbook"], paths["fast path"])
        ]
        ratio = paths["playbook"]["median_s"] / max(paths["fast path"]["median_s"], 1e-6)
        print(f"{action:<24} {cells[0]:>28} {cells[1]:>28}  {ratio:.1f}x")
    print(f"({args.runs} runs each, alternating, on {args.inventory})")


if __name__ == "__main__":
    main()
