#!/usr/bin/env python3
"""Redis failover through Sentinel: how long writes fail, and how many acknowledged ones are lost.

Boots (or reuses) the lab "bredis" (three hosts, each with redis-server and redis-sentinel),
converges it with bench/redis_failover.yml, then per run: a writer on the controller follows the
master through the sentinels (redis-py Sentinel, as the app will) and SETs numbered keys at a
steady rate, recording every write the server acknowledged. The master's host is hard-killed
(`inkdeploy lab kill`, a power cut). The run reports:

  RTO        time without an acknowledged write: the old master's last one -> the new
             master's first one (also shown: from the moment `lab kill` returned)
  lost       acknowledged writes missing on the new master once the old host has rejoined

Then the killed host is booted again and must come back as a replica before the next run.
Modes: "async" acknowledges on the master's reply (Redis replication is asynchronous); "wait"
also sends WAIT 1 and counts a write as acknowledged only when a replica confirmed it.
With --via-command the runs are planned instead: no host is killed, `inkdeploy redis failover`
moves the master (mode "command"), and RTO is the longest time without an acknowledged write
while it runs.

Only lab addresses are targeted. Usage:
  bench/redis_failover.py [--runs 5] [--wait-runs 3] [--rate 200] [--keep] [--no-converge]
  bench/redis_failover.py --via-command [--runs 5] [--rate 200] [--keep] [--no-converge]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

LAB = "bredis"
SUBNET = "10.77.52.0/24"
MASTER_NAME = "inkdeploy"
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "inkdeploy")
LAB_ROOT = Path(os.environ.get("INKDEPLOY_LAB_ROOT", "/var/lib/inkdeploy/lab"))
INVENTORY = LAB_ROOT / LAB / "inventory" / "hosts.yml"
TOPOLOGY = """\
name: bredis
description: Redis failover bench, three hosts with redis-server and redis-sentinel each.
hosts:
  redis1: {groups: [redis, sentinel]}
  redis2: {groups: [redis, sentinel]}
  redis3: {groups: [redis, sentinel]}
"""
TIMEOUT = 0.5  # client socket and connect timeout, seconds
# The redis role's CA next to the inventory exists when the cluster runs with redis_tls on.
_CA = INVENTORY.parent / "pki" / "redis" / "ca.crt"
TLS = {"ssl": True, "ssl_ca_certs": str(_CA), "ssl_cert_reqs": "required"} if _CA.exists() else {}


def lab(*args: str) -> str:
    proc = subprocess.run([CLI, "lab", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"inkdeploy lab {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


class Cluster:
    """Addresses and passwords from the lab inventory; clients through the sentinels."""

    def __init__(self) -> None:
        inventory = yaml.safe_load(INVENTORY.read_text())
        hosts = inventory["all"]["hosts"]
        self.address = {name: hosts[name]["ansible_host"] for name in sorted(hosts)}
        self.name_of = {addr: name for name, addr in self.address.items()}
        secrets = inventory["all"]["vars"]
        self._password = secrets["redis_password"]
        self._sentinel_password = sentinel_password = secrets["redis_sentinel_password"]
        self.sentinel = Sentinel(
            [(addr, 26379) for addr in self.address.values()],
            sentinel_kwargs={
                "password": sentinel_password,
                "socket_timeout": TIMEOUT,
                "socket_connect_timeout": TIMEOUT,
                # redis-py 6+ retries a failed connection 10 times with backoff by default: a
                # dead sentinel first in the list then stalls each master lookup by ~8 s.
                "retry": Retry(NoBackoff(), 0),
                **TLS,
            },
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            **TLS,
        )

    def master_client(self) -> redis.Redis:
        # One attempt per call: the writer's own loop retries, so each attempt is timed.
        return self.sentinel.master_for(
            MASTER_NAME, password=self._password, retry=Retry(NoBackoff(), 0)
        )

    def direct(self, name: str) -> redis.Redis:
        return redis.Redis(
            host=self.address[name],
            password=self._password,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            **TLS,
        )

    def master_name(self) -> str:
        address, _ = self.sentinel.discover_master(MASTER_NAME)
        return self.name_of[address]

    def healthy(self) -> bool:
        """Sentinels agree, the master has every other host as a linked replica."""
        try:
            views = set()
            for addr in self.address.values():
                s = redis.Redis(
                    host=addr,
                    port=26379,
                    password=self._sentinel_password,
                    socket_timeout=TIMEOUT,
                    socket_connect_timeout=TIMEOUT,
                    **TLS,
                )
                state = s.sentinel_master(MASTER_NAME)
                if state["num-other-sentinels"] != 2 or state["num-slaves"] != 2:
                    return False
                views.add(state["ip"])
            if len(views) != 1:
                return False
            master = self.name_of[views.pop()]
            info = self.direct(master).info("replication")
            linked = [
                v for k, v in info.items() if k.startswith("slave") and v.get("state") == "online"
            ]
            for name in self.address:
                if name != master:
                    rinfo = self.direct(name).info("replication")
                    if rinfo.get("master_link_status") != "up":
                        return False
            return info["role"] == "master" and len(linked) == 2
        except (redis.RedisError, OSError, KeyError):
            return False

    def wait_healthy(self, timeout: float) -> float:
        started = time.monotonic()
        while not self.healthy():
            if time.monotonic() - started > timeout:
                sys.exit(
                    f"cluster not healthy after {timeout:.0f} s;"
                    f" see `inkdeploy lab status --lab {LAB}`"
                )
            time.sleep(0.5)
        return time.monotonic() - started


class Writer(threading.Thread):
    """SET bench:RUN:SEQ at a steady rate through Sentinel; records acknowledged SEQs and times."""

    def __init__(self, cluster: Cluster, run: str, rate: float, wait: bool) -> None:
        super().__init__(daemon=True)
        self.cluster, self.run_id, self.interval, self.wait = cluster, run, 1.0 / rate, wait
        self.acked: list[tuple[int, float]] = []
        self.attempts = 0
        self.errors: dict[str, int] = {}
        self.unconfirmed = 0  # wait mode: written, but WAIT saw no replica in time
        self.stop = threading.Event()

    def run(self) -> None:
        client = self.cluster.master_client()
        seq = 0
        next_tick = time.monotonic()
        while not self.stop.is_set():
            seq += 1
            self.attempts += 1
            try:
                client.set(f"bench:{self.run_id}:{seq}", seq)
                if self.wait and client.execute_command("WAIT", 1, 1000) < 1:
                    self.unconfirmed += 1
                else:
                    self.acked.append((seq, time.monotonic()))
            except (redis.RedisError, OSError) as exc:
                kind = type(exc).__name__
                if isinstance(exc, redis.ResponseError):
                    kind = str(exc).split()[0]
                self.errors[kind] = self.errors.get(kind, 0) + 1
            next_tick += self.interval
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.monotonic()


def lost_writes(cluster: Cluster, run_id: str, writer: Writer) -> int:
    master = cluster.master_client()
    keys = [f"bench:{run_id}:{seq}" for seq, _ in writer.acked]
    present = 0
    for i in range(0, len(keys), 500):
        present += sum(v is not None for v in master.mget(keys[i : i + 500]))
    return len(keys) - present


def command_run(cluster: Cluster, number: int, rate: float) -> dict:
    """A planned failover with the on-call verb while the writer writes; nothing is killed."""
    run_id = f"{int(time.time())}-{number}"
    old = cluster.master_name()
    writer = Writer(cluster, run_id, rate, wait=False)
    writer.start()
    time.sleep(2.0)
    started = time.monotonic()
    proc = subprocess.run(
        [CLI, "redis", "failover", "--json", "-i", str(INVENTORY)], capture_output=True, text=True
    )
    done = time.monotonic()
    if proc.returncode != 0:
        writer.stop.set()
        sys.exit(f"run {number}: inkdeploy redis failover failed:\n{proc.stdout}{proc.stderr}")
    result = json.loads(proc.stdout)
    time.sleep(2.0)
    writer.stop.set()
    writer.join()
    times = [t for _, t in writer.acked]
    window = [t for t in times if t >= started - 1.0]
    rto = max((b - a for a, b in itertools.pairwise(window)), default=0.0)
    rejoin = cluster.wait_healthy(90)
    return {
        "mode": "command",
        "killed": old,
        "new_master": cluster.master_name(),
        "rto": rto,
        "since_kill": 0.0,
        "kill_cli": done - started,
        "agreed_after_s": result["agreed_after_s"],
        "acked": len(writer.acked),
        "lost": lost_writes(cluster, run_id, writer),
        "attempts": writer.attempts,
        "errors": writer.errors,
        "unconfirmed": 0,
        "rejoin": rejoin,
    }


def one_run(cluster: Cluster, number: int, mode: str, rate: float) -> dict:
    if mode == "command":
        return command_run(cluster, number, rate)
    run_id = f"{int(time.time())}-{number}"
    old = cluster.master_name()
    writer = Writer(cluster, run_id, rate, wait=(mode == "wait"))
    writer.start()
    time.sleep(2.0)
    kill_started = time.monotonic()
    lab("kill", "--lab", LAB, old)
    # The power cut happens somewhere inside the CLI call; once it has returned the old master
    # is certainly gone, so every write acknowledged afterwards was taken by the new master.
    killed_at = time.monotonic()
    deadline = killed_at + 60
    while not any(t > killed_at for _, t in writer.acked[-5:]):
        if time.monotonic() > deadline:
            writer.stop.set()
            sys.exit(f"run {number}: no acknowledged write within 60 s of killing {old}")
        time.sleep(0.05)
    time.sleep(2.0)
    writer.stop.set()
    writer.join()
    # Acknowledged up to the end of the kill command: the old master (a failover takes seconds).
    before = [t for _, t in writer.acked if t <= killed_at]
    after = [t for _, t in writer.acked if t > killed_at]
    rto = after[0] - (before[-1] if before else kill_started)
    since_kill = after[0] - killed_at
    new = cluster.master_name()

    lab("start", "--lab", LAB, old)
    rejoin = cluster.wait_healthy(90)

    lost = lost_writes(cluster, run_id, writer)
    return {
        "mode": mode,
        "killed": old,
        "new_master": new,
        "rto": rto,
        "since_kill": since_kill,
        "kill_cli": killed_at - kill_started,
        "acked": len(writer.acked),
        "lost": lost,
        "attempts": writer.attempts,
        "errors": writer.errors,
        "unconfirmed": writer.unconfirmed,
        "rejoin": rejoin,
    }


def summarise(mode: str, runs: list[dict]) -> None:
    if not runs:
        return
    rtos = [r["rto"] for r in runs]
    lost = [r["lost"] for r in runs]
    print(f"\n{mode}: {len(runs)} runs")
    print(
        f"  RTO (no acknowledged write): median {statistics.median(rtos):.2f} s, "
        f"worst {max(rtos):.2f} s, best {min(rtos):.2f} s"
    )
    print(
        f"  acknowledged writes lost: median {statistics.median(lost):g}, worst {max(lost)}, "
        f"total {sum(lost)} of {sum(r['acked'] for r in runs)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs in async mode")
    parser.add_argument("--wait-runs", type=int, default=3, help="runs with WAIT 1 per write")
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second")
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    parser.add_argument("--no-converge", action="store_true", help="skip ansible-playbook")
    parser.add_argument(
        "--via-command",
        action="store_true",
        help="planned failovers with `inkdeploy redis failover` instead of killing the master",
    )
    args = parser.parse_args()

    started = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix=f"{LAB}-") as topology:
        topology.write(TOPOLOGY)
        topology.flush()
        up = json.loads(
            lab("up", "--lab", LAB, "--topology", topology.name, "--subnet", SUBNET, "--json")
        )
    print(
        f"lab {LAB}: {len(up['booted'])} host(s) booted"
        f" ({', '.join(up['booted']) or 'all were running'})"
    )
    if not args.no_converge:
        t = time.monotonic()
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        proc = subprocess.run(
            [
                str(BIN / "ansible-playbook"),
                "-i",
                str(INVENTORY),
                str(REPO / "bench/redis_failover.yml"),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
        if proc.returncode != 0:
            sys.exit(f"converge failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
        recap = proc.stdout[proc.stdout.rfind("PLAY RECAP") :].strip()
        print(f"converge: {time.monotonic() - t:.0f} s\n{recap}")
    cluster = Cluster()
    cluster.wait_healthy(60)
    print(f"master: {cluster.master_name()}; writer: {args.rate:g} SET/s through Sentinel, "
          f"client timeouts {TIMEOUT} s")  # fmt: skip

    results: list[dict] = []
    plan = ["async"] * args.runs + ["wait"] * args.wait_runs
    if args.via_command:
        plan = ["command"] * args.runs
    for number, mode in enumerate(plan, 1):
        r = one_run(cluster, number, mode, args.rate)
        results.append(r)
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "none"
        extra = f", unconfirmed by WAIT {r['unconfirmed']}" if mode == "wait" else ""
        if mode == "command":
            print(
                f"run {number} command: {r['killed']} -> {r['new_master']}; RTO {r['rto']:.2f} s "
                f"(command {r['kill_cli']:.1f} s, sentinels agreed after "
                f"{r['agreed_after_s']:.2f} s); acknowledged {r['acked']}, lost {r['lost']}; "
                f"failed attempts: {errors}; healthy again {r['rejoin']:.1f} s after it returned"
            )
            continue
        print(
            f"run {number} {mode:5}: killed {r['killed']}, new master {r['new_master']}; "
            f"RTO {r['rto']:.2f} s (after the kill command returned: {r['since_kill']:.2f} s); "
            f"acknowledged {r['acked']}, "
            f"lost {r['lost']}{extra}; failed attempts: {errors}; "
            f"old host back as replica {r['rejoin']:.1f} s after boot"
        )
    for mode in ("async", "wait", "command"):
        summarise(mode, [r for r in results if r["mode"] == mode])
    print(f"\ntotal bench time {time.monotonic() - started:.0f} s")
    if not args.keep:
        lab("down", "--lab", LAB)


if __name__ == "__main__":
    main()
