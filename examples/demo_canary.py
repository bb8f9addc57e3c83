"""The end of `make demo`: a canary rollout of the demo app on the lab, under steady HTTPS load
through the load balancer, and what the clients saw.

    python examples/demo_canary.py [--inventory inventories/lab/hosts.yml]

Rolls out whichever of the two demo releases is not live (1.1.0, or 1.0.0 when 1.1.0 already
is), so `make demo` can be run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from inkdeploy.lab.drill import inventory_address
from inkdeploy.loadgen import LoadConfig, LoadGenerator

PROJECT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("inkdeploy"))
RELEASES = ("1.0.0", "1.1.0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, default=PROJECT / "inventories/lab/hosts.yml")
    parser.add_argument("--rate", type=float, default=50)
    args = parser.parse_args()
    status = subprocess.run(
        [CLI, "status", "-i", str(args.inventory), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if status.returncode != 0:
        sys.stderr.write(status.stderr)
        return status.returncode
    live = json.loads(status.stdout)["fleet"]["current_version"]
    target = RELEASES[1] if live != RELEASES[1] else RELEASES[0]
    artifact = PROJECT / "dist" / f"inkapp-{target}.tar.gz"
    lb = inventory_address(args.inventory, "lb1")
    cacert = args.inventory.parent / "pki/nginx_lb/ca.crt"
    print(f"Canary rollout {live} -> {target} while {args.rate:.0f} requests/s go to https://{lb}/")
    load = LoadGenerator(
        LoadConfig(f"https://{lb}/", cacert=str(cacert), rate=args.rate, concurrency=8)
    ).start()
    try:
        rollout = subprocess.run(
            [CLI, "rollout", "-i", str(args.inventory), "--version", target, "--artifact",
             str(artifact), "--strategy", "canary", "--yes", "-m", "make demo"],
            check=False,
        )  # fmt: skip
    finally:
        report = load.stop()
    print(
        f"Clients: {report.requests} requests, {report.failed} failed, "
        f"{report.raw_resets} keep-alive resets retried; versions served: {report.versions}"
    )
    subprocess.run([CLI, "status", "-i", str(args.inventory)], check=False)
    return rollout.returncode


if __name__ == "__main__":
    sys.exit(main())
