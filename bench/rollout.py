"""Rollout time for 1, 2 and 3 app hosts per strategy (rolling, blue-green, canary), and the
orchestrator's overhead against a plain `ansible-playbook` with `serial:` doing the same install
and switch steps without gates (bench/plain-rollout.yml), as a ratio measured in the same run.

    python bench/rollout.py                 # N = 3, 2, 1 app hosts, 3 runs of each, ~1 hour
    python bench/rollout.py --quick         # smoke test: N = 2, one run of each
    python bench/rollout.py --runs 5 --json

Needs root (it boots its own lab, 'brollout' on 10.77.54.0/24, from bench/rollout-topology.yml:
lb1, app1..app3, worker1, data1) and PyPI for the builds. Every rollout, the orchestrator's and
the plain one, runs under steady HTTPS load through the load balancer (inkdeploy.loadgen), and
the figures say what its clients saw: failed requests (a browser-like client that retries an
idempotent request once on a reused connection closed before any response byte) and raw
connection resets. The orchestrator runs with the lab's rollout policy (inventories/lab/
group_vars/all.yml, analysis windows included): most of its extra time is those gates.

Both releases (1.0.0 and 2.0.0) are installed on every host before the first timed rollout, and
the rollouts alternate between them: the figures are for a release that is installed already
(the orchestrator's Install step and the plain playbook's install tasks find it in place).

The N-host environments are copies of the lab inventory whose `app` group has app1..appN only
(the other app hosts keep running but are not part of it); playbooks/loadbalancer.yml makes the
load balancer's upstream match each one. They run from N = 3 down, so that the hosts an
environment keeps always run the release its rollouts left live.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestrator"))

from inkdeploy.fleet import parse_weights
from inkdeploy.lab.drill import inventory_address, lab_inventory, run_playbook
from inkdeploy.loadgen import LoadConfig, LoadGenerator, Report

PROJECT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
BINDIR = Path(sys.executable).parent
CLI = str(BINDIR / "inkdeploy")
STRATEGIES = ("rolling", "blue-green", "canary")
VERSIONS = ("1.0.0", "2.0.0")
TOOLS = ("orchestrator", "plain")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sh(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BINDIR}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@dataclass
class Timed:
    rc: int
    seconds: float
    stdout: str
    stderr: str


def timed(cmd: list[str], timeout: float = 1800) -> Timed:
    started = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=PROJECT, env=ansible_env(), capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    return Timed(proc.returncode, time.monotonic() - started, proc.stdout, proc.stderr)


# ------------------------------------------------------------------------------ environments


def environment(work: Path, lab_inventory_file: Path, hosts: int) -> Path:
    """A copy of the lab's inventory whose app group has app1..appN, with the lab's group_vars
    and the load balancer's CA (pki/) linked beside it, so the certificate stays the same."""
    data = yaml.safe_load(lab_inventory_file.read_text())
    apps = sorted(data["all"]["children"]["app"]["hosts"])[:hosts]
    data["all"]["children"]["app"]["hosts"] = dict.fromkeys(apps)
    folder = work / f"env-{hosts}"
    folder.mkdir()
    for name in ("group_vars", "pki"):
        source = lab_inventory_file.parent / name
        (folder / name).symlink_to(source.resolve())
    inventory = folder / "hosts.yml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    return inventory


def status(inventory: Path) -> dict[str, Any]:
    run = timed([CLI, "status", "-i", str(inventory), "--json"], timeout=300)
    if run.rc != 0:
        raise RuntimeError(f"inkdeploy status failed (rc {run.rc}): {run.stderr or run.stdout}")
    fleet: dict[str, Any] = json.loads(run.stdout)["fleet"]
    return fleet


def live_release(fleet: dict[str, Any]) -> str | None:
    """The one release every app host serves from exactly one live slot, None otherwise."""
    versions = set()
    for host in fleet["hosts"].values():
        live = [s for s in host["slots"].values() if s["weight"] > 0 and s["active"]]
        if len(live) != 1:
            return None
        versions.add(live[0]["version"])
    return versions.pop() if len(versions) == 1 else None


def upstream_hosts(lab: str, app: str = "inkapp") -> list[str]:
    conf = sh(CLI, "lab", "exec", "--lab", lab, "lb1", "--", "cat",
              "/etc/nginx/inkdeploy/upstreams.conf")  # fmt: skip
    return sorted({key.split(":")[0] for key in parse_weights(conf, app)})


# --------------------------------------------------------------------------------- one run


@dataclass
class Run:
    tool: str
    strategy: str
    hosts: int
    index: int
    version: str
    previous: str | None
    rc: int
    seconds: float
    ok: bool
    note: str = ""
    load: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def last_json(stdout: str) -> dict[str, Any]:
    """The result `inkdeploy rollout --json` prints after its events: a line
    {"type": "result", "data": {...}}, or (older versions) an indented object."""
    lines = stdout.splitlines()
    for line in reversed(lines):
        if line.startswith('{"type": "result"') or line.startswith('{"type":"result"'):
            try:
                data: dict[str, Any] = json.loads(line)["data"]
                return data
            except (json.JSONDecodeError, KeyError, TypeError):
                break
    for start in range(len(lines) - 1, -1, -1):
        if lines[start] == "{":
            try:
                result: dict[str, Any] = json.loads("\n".join(lines[start:]))
                return result
            except json.JSONDecodeError:
                break
    return {}


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def load_summary(report: Report) -> dict[str, Any]:
    return {
        "requests": report.requests,
        "failed": report.failed,
        "raw_resets": report.raw_resets,
        "failed_by_kind": report.failed_by_kind,
        "status_codes": report.status_codes,
        "p99_ms": round(report.latency_ms["p99"], 1) if report.latency_ms else None,
        "max_ms": round(report.latency_ms["max"], 1) if report.latency_ms else None,
        "versions": report.versions,
    }


def one_run(
    tool: str,
    strategy: str,
    inventory: Path,
    artifacts: dict[str, Path],
    hosts: int,
    index: int,
    load: LoadConfig,
    logs: Path,
    settle: float,
) -> Run:
    fleet = status(inventory)
    previous = live_release(fleet)
    if previous not in VERSIONS:
        raise RuntimeError(
            f"Before the {tool} {strategy} run on {hosts} host(s) the fleet does not serve one "
            f"known release from one live slot per host: {json.dumps(fleet['hosts'])}"
        )
    version = VERSIONS[1 - VERSIONS.index(previous)]
    artifact = str(artifacts[version])
    if tool == "orchestrator":
        cmd = [CLI, "rollout", "-i", str(inventory), "--version", version, "--artifact", artifact,
               "--strategy", strategy, "--yes", "--json"]  # fmt: skip
    else:
        cmd = [str(BINDIR / "ansible-playbook"), "-i", str(inventory),
               str(BENCH / "plain-rollout.yml"), "-e", f"rollout_strategy={strategy}",
               "-e", f"app_version={version}", "-e", f"app_artifact={artifact}"]  # fmt: skip
    gen = LoadGenerator(load).start()
    try:
        time.sleep(settle)
        run = timed(cmd)
        time.sleep(settle)
    finally:
        report = gen.stop()
    name = f"{hosts}-{strategy}-{index}-{tool}"
    (logs / f"{name}.out").write_text(run.stdout)
    (logs / f"{name}.err").write_text(run.stderr)
    after = live_release(status(inventory))
    result = last_json(run.stdout) if tool == "orchestrator" else {}
    ok = run.rc == 0 and after == version
    note = ""
    if run.rc != 0:
        note = tail(result.get("message") or run.stderr or run.stdout, 12)
    elif after != version:
        note = f"exit 0 but the fleet serves {after or 'a mix of releases'} afterwards"
    summary = {k: result[k] for k in ("result", "seconds", "message") if k in result}
    if result.get("gates"):
        summary["gates"] = len(result["gates"])
    return Run(tool, strategy, hosts, index, version, previous, run.rc, run.seconds, ok, note,
               load_summary(report), summary)  # fmt: skip


# ------------------------------------------------------------------------------- figures


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def cell(runs: list[Run]) -> dict[str, Any]:
    good = [r for r in runs if r.ok]
    return {
        "runs": len(runs),
        "ok": len(good),
        "seconds": [round(r.seconds, 1) for r in runs],
        "median_s": median([r.seconds for r in good]),
        "failed": [r.load.get("failed") for r in runs],
        "raw_resets": [r.load.get("raw_resets") for r in runs],
        "requests": [r.load.get("requests") for r in runs],
        "notes": sorted({r.note.splitlines()[-1] for r in runs if r.note}),
    }


def figures_of(runs: list[Run], hosts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in hosts:
        for strategy in STRATEGIES:
            mine = [r for r in runs if r.hosts == n and r.strategy == strategy]
            if not mine:
                continue
            orch = cell([r for r in mine if r.tool == "orchestrator"])
            plain = cell([r for r in mine if r.tool == "plain"])
            ratio = (
                round(orch["median_s"] / plain["median_s"], 2)
                if orch["median_s"] and plain["median_s"]
                else None
            )
            rows.append({"hosts": n, "strategy": strategy, "orchestrator": orch,
                         "plain": plain, "ratio": ratio})  # fmt: skip
    return rows


def failures(c: dict[str, Any]) -> str:
    """'failed per run | resets per run', e.g. '0/0/0 | 3/5/4'."""
    failed = "/".join(str(x) for x in c["failed"])
    return f"{failed} | " + "/".join(str(x) for x in c["raw_resets"])


def print_table(figures: dict[str, Any]) -> None:
    print(
        f"rollout bench, lab {figures['lab']}: {figures['runs']} run(s) per cell, "
        f"{figures['rate']:.0f} req/s through the LB during every rollout"
    )
    print(f"  site.yml on the fresh lab (3 app hosts): {figures['site_yml_s']} s; installing "
          f"2.0.0 beside it: {figures.get('install_2_0_0_s')} s")  # fmt: skip
    for n, hosts in figures.get("upstreams", {}).items():
        print(f"  N={n}: LB upstream hosts {hosts} (loadbalancer.yml {figures['lb_yml_s'][n]} s)")
    head = (
        f"  {'N':>2} {'strategy':<10} {'orch med s':>10} {'plain med s':>11} {'ratio':>6}  "
        f"{'orch failed/resets':<22} {'plain failed/resets':<22}"
    )
    print(head)
    for row in figures["table"]:
        o, p = row["orchestrator"], row["plain"]
        print(
            f"  {row['hosts']:>2} {row['strategy']:<10} {o['median_s']!s:>10} "
            f"{p['median_s']!s:>11} {row['ratio']!s:>6}  {failures(o):<22} {failures(p):<22}"
        )
    print("  (failed | resets: per run, in run order; medians over the runs that succeeded)")
    for row in figures["table"]:
        for tool in TOOLS:
            c = row[tool]
            if c["ok"] < c["runs"] or c["notes"]:
                print(
                    f"  N={row['hosts']} {row['strategy']} {tool}: {c['ok']}/{c['runs']} ok, "
                    f"all times {c['seconds']}; {'; '.join(c['notes'])}"
                )


# ---------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="brollout")
    parser.add_argument("--subnet", default="10.77.54.0/24")
    parser.add_argument("--runs", type=int, default=3, help="runs per (N, strategy) and tool")
    parser.add_argument("--hosts", default="3,2,1", help="app host counts, in this order")
    parser.add_argument("--rate", type=float, default=50, help="requests/s through the LB")
    parser.add_argument("--settle", type=float, default=3, help="load before and after, s")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 run, N=2 only")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()
    runs_per = 1 if args.quick else args.runs
    host_counts = [2] if args.quick else [int(x) for x in args.hosts.split(",")]
    if any(not 1 <= n <= 3 for n in host_counts):
        sys.exit("--hosts: the lab has 3 app hosts; give counts from 1 to 3.")

    work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    logs = work / "logs"
    logs.mkdir()
    log(f"work directory {work}")
    artifacts: dict[str, Path] = {}
    for version in VERSIONS:
        sh(CLI, "build", str(PROJECT / "examples/inkapp"), "--version", version, "--out",
           str(work / "dist"))  # fmt: skip
        artifacts[version] = work / "dist" / f"inkapp-{version}.tar.gz"
    inventory = lab_inventory(work)
    subprocess.run([CLI, "lab", "down", "--lab", args.lab], capture_output=True, check=False)
    topology = str(BENCH / "rollout-topology.yml")
    sh(CLI, "lab", "up", "--lab", args.lab, "--subnet", args.subnet, "--topology", topology,
       "--inventory", str(inventory))  # fmt: skip
    figures: dict[str, Any] = {"lab": args.lab, "runs": runs_per, "rate": args.rate,
                               "work": str(work), "upstreams": {}, "lb_yml_s": {}}  # fmt: skip
    runs: list[Run] = []
    try:
        log("site.yml on the fresh lab")
        site = run_playbook("site.yml", inventory, {"app_artifact": str(artifacts["1.0.0"])})
        (logs / "site.yml.out").write_text(site.output)
        if site.rc != 0:
            sys.exit(f"site.yml failed on the fresh lab:\n{site.tail()}")
        figures["site_yml_s"] = round(site.seconds, 1)
        # Every timed rollout alternates between the two releases, so after the first one each
        # finds its release installed already; install 2.0.0 now too, or the first timed run
        # alone would pay for a fresh install (venv, pip, collectstatic) on every host.
        log("install 2.0.0 on the app and worker hosts (not timed as a rollout)")
        warm = run_playbook("rollout/install.yml", inventory, {
            "rollout_hosts": "app:worker", "app_version": "2.0.0",
            "app_artifact": str(artifacts["2.0.0"]), "rollout_migrate": False,
        })  # fmt: skip
        (logs / "install-2.0.0.out").write_text(warm.output)
        if warm.rc != 0:
            sys.exit(f"Installing 2.0.0 failed:\n{warm.tail()}")
        figures["install_2_0_0_s"] = round(warm.seconds, 1)
        lb = inventory_address(inventory, "lb1")
        load = LoadConfig(f"https://{lb}/", cacert=str(inventory.parent / "pki/nginx_lb/ca.crt"),
                          rate=args.rate, concurrency=8)  # fmt: skip
        turn = 0
        for n in host_counts:
            env = environment(work, inventory, n)
            lb_run = run_playbook("loadbalancer.yml", env)
            (logs / f"loadbalancer-{n}.out").write_text(lb_run.output)
            if lb_run.rc != 0:
                sys.exit(f"loadbalancer.yml for {n} app host(s) failed:\n{lb_run.tail()}")
            members = upstream_hosts(args.lab)
            figures["upstreams"][n] = members
            figures["lb_yml_s"][n] = round(lb_run.seconds, 1)
            expected = [f"app{i}" for i in range(1, n + 1)]
            if members != expected:
                sys.exit(f"The LB's upstream has {members} after loadbalancer.yml, not {expected}")
            for strategy in STRATEGIES:
                refused = False
                for index in range(runs_per):
                    order = TOOLS if turn % 2 == 0 else TOOLS[::-1]
                    turn += 1
                    for tool in order:
                        if tool == "orchestrator" and refused:
                            continue
                        log(f"N={n} {strategy} run {index + 1}/{runs_per}: {tool}")
                        run = one_run(tool, strategy, inventory=env, artifacts=artifacts,
                                      hosts=n, index=index, load=load, logs=logs,
                                      settle=args.settle)  # fmt: skip
                        runs.append(run)
                        log(
                            f"  {run.version} in {run.seconds:.1f} s, rc {run.rc}, ok {run.ok}, "
                            f"failed {run.load['failed']}, resets {run.load['raw_resets']}"
                            + (f"\n  {run.note}" if run.note else "")
                        )
                        # the orchestrator refuses a plan (exit 2) without changing anything;
                        # it would refuse the same way in every run
                        refused = refused or (tool == "orchestrator" and run.rc == 2)
                figures["table"] = figures_of(runs, host_counts)
                figures["all_runs"] = [r.to_dict() for r in runs]
                (work / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    finally:
        figures["table"] = figures_of(runs, host_counts)
        figures["all_runs"] = [r.to_dict() for r in runs]
        (work / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
        if not args.keep:
            log(f"lab down --lab {args.lab}")
            down = [CLI, "lab", "down", "--lab", args.lab]
            subprocess.run(down, capture_output=True, check=False)
        shutil.rmtree(work / "dist", ignore_errors=True)

    if args.json:
        print(json.dumps(figures, indent=2, default=str))
        return
    print_table(figures)


if __name__ == "__main__":
    main()
