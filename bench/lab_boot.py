#!/usr/bin/env python3
"""How long `inkdeploy lab up` takes for N hosts, and what an idle host costs in memory and disk.

Each run boots a fresh lab (the base image is cached, host overlays are new), measured from the
CLI call until every host answers SSH with systemd 'running', then tears it down. Memory per
idle host is the PSS of every process in the host's cgroup after the fleet has settled (the
kernel's own memory for the namespaces is not included). Prints medians and worst cases.

Usage: bench/lab_boot.py [--runs-small 5] [--runs-full 3] [--settle 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAB = "bench"
SUBNET = "10.77.50.0/24"
CLI = str(Path(sys.executable).with_name("inkdeploy"))
CGROUP = Path("/sys/fs/cgroup/systemd/inkdeploy") / LAB
LAB_DIR = Path(os.environ.get("INKDEPLOY_LAB_ROOT", "/var/lib/inkdeploy/lab")) / LAB


def cli(*args: str) -> str:
    proc = subprocess.run([CLI, *args, "--lab", LAB], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"inkdeploy {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def host_pss_kib(host: str) -> int:
    pids: set[int] = set()
    for procs in (CGROUP / host).rglob("cgroup.procs"):
        pids.update(int(p) for p in procs.read_text().split())
    return sum(pss_kib(p) for p in pids)


def disk_kib(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0


def one_run(topology: str, settle: float, measure: bool) -> dict:
    subprocess.run([CLI, "lab", "down", "--lab", LAB], capture_output=True)
    started = time.monotonic()
    up = json.loads(cli("lab", "up", "--topology", topology, "--subnet", SUBNET, "--json"))
    seconds = time.monotonic() - started
    result = {"seconds": seconds, "hosts": len(up["booted"]), "repaired": up["repaired"]}
    if measure:
        time.sleep(settle)
        per_host = {h: host_pss_kib(h) for h in up["booted"]}
        result["pss_kib"] = per_host
        result["disk_kib"] = {h: disk_kib(LAB_DIR / "hosts" / h / "upper") for h in up["booted"]}
    cli("lab", "down")
    return result


def summarise(name: str, runs: list[dict]) -> None:
    times = [r["seconds"] for r in runs]
    n = runs[0]["hosts"]
    print(f"\n{name}: {n} hosts, {len(runs)} runs")
    print(f"  lab up (boot + SSH + systemd running): median {statistics.median(times):.2f} s, "
          f"worst {max(times):.2f} s, best {min(times):.2f} s")  # fmt: skip
    repaired = sum(len(r["repaired"]) for r in runs)
    print(f"  hosts that needed a unit repaired at boot: {repaired} of {n * len(runs)}")
    measured = [r for r in runs if "pss_kib" in r]
    if measured:
        per_host = [v / 1024 for r in measured for v in r["pss_kib"].values()]
        fleet = sum(measured[-1]["pss_kib"].values()) / 1024
        disks = [v / 1024 for r in measured for v in r["disk_kib"].values()]
        print(
            f"  memory per idle host (PSS of its processes): "
            f"median {statistics.median(per_host):.1f} MiB, max {max(per_host):.1f} MiB; "
            f"fleet {fleet:.0f} MiB"
        )
        print(
            f"  disk per fresh host (overlay upper dir): median {statistics.median(disks):.1f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-small", type=int, default=5)
    parser.add_argument("--runs-full", type=int, default=3)
    parser.add_argument("--settle", type=float, default=10.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("The lab needs root; run this benchmark as root.")
    cli("lab", "up", "--topology", "trio", "--subnet", SUBNET)  # warm: image built, proxy ready
    cli("lab", "down")
    print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}")
    small = [one_run("trio", args.settle, measure=(i == 0)) for i in range(args.runs_small)]
    full = [one_run("full", args.settle, measure=(i == 0)) for i in range(args.runs_full)]
    summarise("trio", small)
    summarise("full", full)


if __name__ == "__main__":
    main()
