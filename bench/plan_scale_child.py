"""`inkdeploy plan ARGS...` as the CLI runs it, with the fleet's network answers given from a
file instead of SSH and HTTP, and each phase timed. bench/plan_scale.py starts it.

    python bench/plan_scale_child.py FACTS.json TIMES.json plan -i INVENTORY --version V ...

Everything on the controller is the real code path (imports, typer, `ansible-inventory --list`,
the environment and policy, build_fleet, make_plan, the pre-flight's evaluation, the gate
queries' rendering, the plan's JSON or text). Replaced, because a generated inventory has no
hosts behind it: the fleet read over SSH (Session._read_fast returns FACTS: slots, upstreams,
lock), the pre-flight's probes (no answers: it reports each check as unanswered) and Prometheus'
parse of the gate queries (accepted). TIMES gets the seconds per phase when the command exits.
"""

import time

STARTED = time.perf_counter()

import atexit  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

TIMES: dict[str, float] = {}


def timed(phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[phase] = TIMES.get(phase, 0.0) + time.perf_counter() - began

    return wrapper


def main() -> None:
    facts_file, times_file, *argv = sys.argv[1:]
    real_run = subprocess.run

    def run(args: Any, *rest: Any, **kwargs: Any) -> Any:
        if "ansible-inventory" in str(args[0]) or "inventory_list" in str(args[2:3]):
            return timed("ansible_inventory", real_run)(args, *rest, **kwargs)
        return real_run(args, *rest, **kwargs)

    subprocess.run = run  # type: ignore[assignment]

    def write_times() -> None:
        TIMES["total_in_process"] = time.perf_counter() - STARTED
        Path(times_file).write_text(json.dumps(TIMES))

    atexit.register(write_times)

    from inkdeploy import cli, deploy, deploy_cli, preflight
    from inkdeploy.gates.prometheus import PrometheusClient

    TIMES["imports"] = time.perf_counter() - STARTED
    facts = json.loads(Path(facts_file).read_text())

    def read_fast(self: Any, *args: Any, **kwargs: Any) -> Any:
        return facts["slots"], facts["confs"], facts["lock"], (), ()

    deploy.Session._read_fast = read_fast  # type: ignore[method-assign]
    preflight.run_probes = lambda tasks, timeout_s: []
    PrometheusClient.check_query = lambda self, query: None  # type: ignore[method-assign]
    deploy.load_environment = timed("environment", deploy.load_environment)
    deploy.build_fleet = timed("fleet", deploy.build_fleet)
    deploy.make_plan = timed("planning", deploy.make_plan)
    deploy_cli.run_preflight = timed("preflight", deploy_cli.run_preflight)
    for name in ("print_json", "print_plan", "print_gates"):
        setattr(deploy_cli, name, timed("rendering", getattr(deploy_cli, name)))
    sys.argv = ["inkdeploy", *argv]
    cli.main()


if __name__ == "__main__":
    main()
