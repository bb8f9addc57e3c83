"""PostgreSQL failover benchmark: RTO and lost commits when the primary host loses power, or
(--switchover) the write outage of `inkdeploy db switchover`.

Boots (or reuses) the lab "bpg" with three database hosts, converges the PostgreSQL tier with
the Molecule scenario's playbook (common, etcd, postgresql, patroni), then for each run:

1. a writer commits numbered rows at a steady rate through the libpq multi-host read-write DSN
   (host=db1,db2,db3 target_session_attrs=read-write), the way the application connects;
2. the primary (asked from Patroni's REST API) is hard-killed with `inkdeploy lab kill`;
3. RTO = time from the kill to the first commit acknowledged after it;
4. acknowledged commits missing afterwards = rows the writer saw committed that the new primary
   does not have (must be 0 with synchronous_mode);
5. the killed host is started again and must rejoin as a replica before the next run.

With --switchover, step 2 is `inkdeploy db switchover` instead of the kill, the figure is the
write outage (the longest gap between two acknowledged commits while it runs), and the old
primary is back as a replica when the command returns.

With --patroni TTL/LOOP_WAIT/RETRY_TIMEOUT (e.g. 10/2/4) the cluster is converged with those
Patroni timings (the role applies them to a running cluster too). With --slow DELAY, nothing is
killed: every database host's outgoing packets are delayed by DELAY (`inkdeploy lab slow`) for
--slow-minutes while the writer runs, and the bench counts the leader changes Patroni records
(false failovers: no host died) and the longest time without an acknowledged commit.

Prints each run, then the median and worst over all runs and the Patroni settings used.
Only lab addresses are contacted (checked against the lab subnet before anything starts).

    .venv/bin/python bench/pg_failover.py [--runs 5] [--rate 20] [--keep] [--switchover]
        [--patroni 10/2/4] [--slow 200ms --slow-minutes 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import yaml

REPO = Path(__file__).resolve().parents[1]
CONVERGE = REPO / "molecule/postgresql-ha/converge.yml"
LAB_ROOT = Path(os.environ.get("INKDEPLOY_LAB_ROOT", "/var/lib/inkdeploy/lab"))
HOSTS = ("db1", "db2", "db3")
# Client-side timeouts: libpq gives up on a host after connect_timeout (2 s is its minimum) and
# TCP notices a dead peer through keepalives and tcp_user_timeout instead of waiting minutes.
CLIENT_OPTIONS = (
    "target_session_attrs=read-write connect_timeout=2 keepalives_idle=1"
    " keepalives_interval=1 keepalives_count=2 tcp_user_timeout=2000"
)


def log(message: str) -> None:
    print(message, flush=True)


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["inkdeploy", "lab", *args], check=check, capture_output=True, text=True)


@dataclass
class Cluster:
    lab: str
    subnet: ipaddress.IPv4Network
    addresses: dict[str, str]
    app_password: str
    database: str = "inkdeploy"
    user: str = "inkdeploy"

    @property
    def ca(self) -> Path:
        """The PostgreSQL CA (postgresql_pki_dir's default, next to the lab's inventory): the
        writer verifies the server as the app does, and Patroni's API is https."""
        return LAB_ROOT / self.lab / "inventory/pki/postgresql/ca.crt"

    @property
    def dsn(self) -> str:
        hosts = ",".join(self.addresses[h] for h in HOSTS)
        tls = f"sslmode=verify-full sslrootcert={self.ca}"
        return (
            f"host={hosts} port=5432 dbname={self.database} user={self.user} {CLIENT_OPTIONS} {tls}"
        )

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, password=self.app_password, autocommit=True)

    def connect_retrying(self, timeout: float) -> psycopg.Connection:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.connect()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def api(self, host: str, path: str, timeout: float = 2.0):
        url = f"https://{self.addresses[host]}:8008{path}"
        context = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # lab
            return json.load(response)

    def members(self) -> list[dict]:
        """Cluster members as any reachable member's REST API reports them."""
        for host in HOSTS:
            try:
                return self.api(host, "/cluster")["members"]
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                continue
        return []

    def primary(self) -> str | None:
        leaders = [m["name"] for m in self.members() if m["role"] in ("leader", "master")]
        return leaders[0] if len(leaders) == 1 else None

    def wait_healthy(self, timeout: float, sync: bool) -> list[dict]:
        """Wait for one leader, every member running, and a synchronous standby if wanted."""
        deadline = time.monotonic() + timeout
        members: list[dict] = []
        while time.monotonic() < deadline:
            members = self.members()
            leaders = [m for m in members if m["role"] in ("leader", "master")]
            running = [m for m in members if m["state"] in ("running", "streaming")]
            sync_ok = not sync or any(m["role"] == "sync_standby" for m in members)
            if len(leaders) == 1 and len(running) == len(HOSTS) and sync_ok:
                return members
            time.sleep(1)
        raise SystemExit(
            f"Cluster in lab {self.lab} not healthy after {timeout:.0f} s: "
            + ", ".join(f"{m['name']} {m['role']} {m['state']}" for m in members)
            + ". Look at 'inkdeploy lab exec --lab "
            + f"{self.lab} db1 -- patronictl -c /etc/patroni/config.yml list'."
        )


@dataclass
class Writer:
    """Commits (run, seq) rows at a steady rate on its own thread, recording what was acked."""

    cluster: Cluster
    run: int
    rate: float
    acked: dict[int, float] = field(default_factory=dict)
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def loop(self) -> None:
        conn = None
        seq = 0
        interval = 1.0 / self.rate
        next_tick = time.monotonic()
        while not self.stop.is_set():
            seq += 1
            try:
                if conn is None:
                    conn = self.cluster.connect()
                conn.execute(
                    "INSERT INTO bench_failover (run, seq) VALUES (%s, %s)", (self.run, seq)
                )
                self.acked[seq] = time.monotonic()
            except psycopg.Error:
                self.failures += 1
                if conn is not None:
                    conn.close()
                conn = None
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.monotonic()
        if conn is not None:
            conn.close()


def load_cluster(lab_name: str) -> Cluster:
    inventory = yaml.safe_load((LAB_ROOT / lab_name / "inventory/hosts.yml").read_text())
    variables = inventory["all"]["vars"]
    subnet = ipaddress.ip_network(variables["inkdeploy_lab_subnet"])
    addresses = {h: inventory["all"]["hosts"][h]["ansible_host"] for h in HOSTS}
    # Only lab addresses: private, inside the lab's own subnet.
    for host, address in addresses.items():
        ip = ipaddress.ip_address(address)
        if ip not in subnet or not ip.is_private:
            raise SystemExit(
                f"{host} has address {address}, outside lab subnet {subnet}; refusing."
            )
    return Cluster(lab_name, subnet, addresses, variables["postgresql_app_password"])


def boot_and_converge(
    lab_name: str, subnet: str, skip_converge: bool, extra: dict[str, int] | None = None
) -> None:
    topology = {
        "name": "bench-pg",
        "description": "bench/pg_failover.py: three database hosts",
        "hosts": {h: {"groups": ["db", "etcd"]} for h in HOSTS},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        yaml.safe_dump(topology, fh)
    started = time.monotonic()
    result = lab("up", "--lab", lab_name, "--topology", fh.name, "--subnet", subnet, check=False)
    Path(fh.name).unlink()
    if result.returncode != 0:
        raise SystemExit(f"lab up failed:\n{result.stdout}{result.stderr}")
    for host in HOSTS:  # a previous interrupted run may have left a host powered off
        if lab("exec", "--lab", lab_name, host, "--", "true", check=False).returncode != 0:
            lab("start", "--lab", lab_name, host)
    log(f"lab {lab_name} up in {time.monotonic() - started:.1f} s")
    if skip_converge and not extra:
        return
    started = time.monotonic()
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(LAB_ROOT / lab_name / "inventory/hosts.yml"),
            *([f"--extra-vars={json.dumps(extra)}"] if extra else []),  # JSON: numbers stay numbers
            str(CONVERGE),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"converge failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    log(f"converged in {time.monotonic() - started:.1f} s")


def switchover_run(cluster: Cluster, run: int, rate: float, sync: bool) -> dict:
    """`inkdeploy db switchover` under the writer: the longest gap between acknowledged commits."""
    cluster.wait_healthy(120, sync)
    primary = cluster.primary()
    writer = Writer(cluster, run, rate)
    thread = threading.Thread(target=writer.loop, daemon=True)
    thread.start()
    time.sleep(3)
    started = time.monotonic()
    inventory = LAB_ROOT / cluster.lab / "inventory/hosts.yml"
    proc = subprocess.run(
        ["inkdeploy", "db", "switchover", "--json", "-i", str(inventory)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    ended = time.monotonic()
    time.sleep(3)
    writer.stop.set()
    thread.join(timeout=30)
    if proc.returncode != 0:
        raise SystemExit(f"Run {run}: inkdeploy db switchover failed: {proc.stdout}{proc.stderr}")
    result = json.loads(proc.stdout)
    times = sorted(t for t in writer.acked.values() if started - 1 <= t <= ended + 3)
    outage = max((b - a for a, b in itertools.pairwise(times)), default=float("nan"))
    with cluster.connect_retrying(30) as conn:
        present = {
            row[0] for row in conn.execute("SELECT seq FROM bench_failover WHERE run = %s", (run,))
        }
    acked = set(writer.acked)
    return {
        "run": run,
        "killed": primary,
        "new_primary": result["leader_after"],
        "rto": outage,
        "command_s": ended - started,
        "acked": len(acked),
        "missing": sorted(acked - present),
        "in_doubt": len(present - acked),
        "failed_attempts": writer.failures,
        "rejoined_as": "replica" if result.get("old_leader_back_s") is not None else "not yet",
        "rejoin_s": result.get("old_leader_back_s") or float("nan"),
    }


def slow_run(
    cluster: Cluster, run: int, rate: float, sync: bool, delay: str, minutes: float
) -> dict:
    """The writer for MINUTES with every database host's outgoing packets delayed by DELAY:
    leader changes Patroni records meanwhile (no host died, so each is a false failover) and
    the longest time without an acknowledged commit."""
    cluster.wait_healthy(120, sync)
    primary = cluster.primary()
    timelines = len(cluster.api(primary or HOSTS[0], "/history") or [])
    writer = Writer(cluster, run, rate)
    thread = threading.Thread(target=writer.loop, daemon=True)
    thread.start()
    time.sleep(3)
    started = time.monotonic()
    try:
        for host in HOSTS:
            lab("slow", "--lab", cluster.lab, host, "--delay", delay)
        time.sleep(minutes * 60)
    finally:
        for host in HOSTS:
            lab("heal", "--lab", cluster.lab, host, check=False)
    ended = time.monotonic()
    time.sleep(3)
    writer.stop.set()
    thread.join(timeout=30)
    cluster.wait_healthy(180, sync)
    after = cluster.primary()
    changes = len(cluster.api(after or HOSTS[0], "/history") or []) - timelines
    stamps = sorted(t for t in writer.acked.values() if started - 1 <= t <= ended + 3)
    gaps = [b - a for a, b in itertools.pairwise(stamps)] or [ended - started]
    return {
        "run": run,
        "primary_before": primary,
        "primary_after": after,
        "leader_changes": changes,
        "acked": len(stamps),
        "longest_gap_s": max(gaps),
        "failed_attempts": writer.failures,
    }


def one_run(cluster: Cluster, run: int, rate: float, sync: bool) -> dict:
    cluster.wait_healthy(120, sync)
    primary = cluster.primary()
    if primary is None:
        raise SystemExit("No single primary before the run.")
    writer = Writer(cluster, run, rate)
    thread = threading.Thread(target=writer.loop, daemon=True)
    thread.start()
    time.sleep(3)  # steady state first
    before_kill = len(writer.acked)
    if before_kill == 0:
        writer.stop.set()
        raise SystemExit("The writer committed nothing in 3 s before the kill.")
    lab("kill", "--lab", cluster.lab, primary)
    # The power is off once "lab kill" returns (SIGKILL to the host's PID 1, reaped); a commit
    # acknowledged before that may still come from the old primary.
    killed_at = time.monotonic()
    rto = None
    deadline = killed_at + 90
    while time.monotonic() < deadline:
        after = [t for t in list(writer.acked.values()) if t > killed_at]
        if after:
            rto = min(after) - killed_at
            break
        time.sleep(0.05)
    time.sleep(3)  # a few commits on the new primary
    writer.stop.set()
    thread.join(timeout=30)
    if rto is None:
        raise SystemExit(f"Run {run}: no commit succeeded within 90 s of killing {primary}.")
    new_primary = cluster.primary()
    with cluster.connect_retrying(30) as conn:
        present = {
            row[0] for row in conn.execute("SELECT seq FROM bench_failover WHERE run = %s", (run,))
        }
    acked = set(writer.acked)
    missing = sorted(acked - present)
    in_doubt = len(present - acked)  # committed, but the acknowledgement never arrived
    # Restore: boot the old primary; it must come back as a replica (pg_rewind).
    restored_at = time.monotonic()
    lab("start", "--lab", cluster.lab, primary)
    members = cluster.wait_healthy(180, sync)
    rejoined = next(m for m in members if m["name"] == primary)
    return {
        "run": run,
        "killed": primary,
        "new_primary": new_primary,
        "rto": rto,
        "acked": len(acked),
        "missing": missing,
        "in_doubt": in_doubt,
        "failed_attempts": writer.failures,
        "rejoined_as": rejoined["role"],
        "rejoin_s": time.monotonic() - restored_at,
    }


def log_settings(settings: dict, sync: bool) -> None:
    dcs = {k: settings.get(k) for k in ("ttl", "loop_wait", "retry_timeout")}
    log(
        "Patroni settings: "
        + ", ".join(f"{k} {v} s" for k, v in dcs.items())
        + f", synchronous_mode {str(sync).lower()},"
        + f" synchronous_mode_strict {str(settings.get('synchronous_mode_strict', False)).lower()},"
        + f" maximum_lag_on_failover {settings.get('maximum_lag_on_failover')}"
        + f", use_pg_rewind {str(settings.get('postgresql', {}).get('use_pg_rewind')).lower()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", default="bpg")
    parser.add_argument("--subnet", default="10.77.51.0/24")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="commits per second")
    parser.add_argument("--skip-converge", action="store_true", help="reuse a converged lab")
    parser.add_argument("--keep", action="store_true", help="leave the lab running at the end")
    parser.add_argument(
        "--switchover", action="store_true", help="inkdeploy db switchover instead of a kill"
    )
    parser.add_argument(
        "--patroni",
        metavar="TTL/LOOP_WAIT/RETRY_TIMEOUT",
        help="converge with these Patroni timings (seconds), e.g. 10/2/4",
    )
    parser.add_argument(
        "--slow", metavar="DELAY", help="no kill: delay every db host's packets, e.g. 200ms"
    )
    parser.add_argument("--slow-minutes", type=float, default=5.0)
    args = parser.parse_args()
    if not ipaddress.ip_network(args.subnet).is_private:
        raise SystemExit(f"--subnet {args.subnet} is not a private network; refusing.")
    extra: dict[str, int] = {}
    if args.patroni:
        try:
            ttl, loop_wait, retry = (int(x) for x in args.patroni.split("/"))
        except ValueError:
            raise SystemExit("--patroni takes TTL/LOOP_WAIT/RETRY_TIMEOUT, e.g. 10/2/4") from None
        extra = {"patroni_ttl": ttl, "patroni_loop_wait": loop_wait, "patroni_retry_timeout": retry}

    bench_started = time.monotonic()
    boot_and_converge(args.lab, args.subnet, args.skip_converge, extra)
    cluster = load_cluster(args.lab)
    cluster.wait_healthy(180, sync=False)
    settings = cluster.api(cluster.primary() or HOSTS[0], "/config")
    sync = bool(settings.get("synchronous_mode"))
    with cluster.connect() as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_failover"
            " (run int, seq int, at timestamptz DEFAULT now(), PRIMARY KEY (run, seq))"
        )
        conn.execute("TRUNCATE bench_failover")

    log(
        f"PostgreSQL failover: {args.runs} runs, writer {args.rate:g} commits/s through"
        f" host={','.join(cluster.addresses[h] for h in HOSTS)} target_session_attrs=read-write"
    )
    if args.slow:
        slow_results = []
        for run in range(1, args.runs + 1):
            r = slow_run(cluster, run, args.rate, sync, args.slow, args.slow_minutes)
            slow_results.append(r)
            log(
                f"  run {run}: {args.slow} on every db host for {args.slow_minutes:g} min:"
                f" {r['leader_changes']} leader changes ({r['primary_before']} ->"
                f" {r['primary_after']}), {r['acked']} commits acknowledged, longest gap"
                f" {r['longest_gap_s']:.2f} s, {r['failed_attempts']} failed attempts"
            )
        changes = sum(r["leader_changes"] for r in slow_results)
        log(
            f"false failovers under {args.slow}: {changes} in"
            f" {args.runs * args.slow_minutes:g} min; longest gap median"
            f" {statistics.median(r['longest_gap_s'] for r in slow_results):.2f} s"
        )
        log_settings(settings, sync)
        log(f"bench took {time.monotonic() - bench_started:.0f} s")
        if not args.keep:
            lab("down", "--lab", args.lab)
        return 0
    results = []
    what = "write outage" if args.switchover else "RTO"
    for run in range(1, args.runs + 1):
        r = (switchover_run if args.switchover else one_run)(cluster, run, args.rate, sync)
        results.append(r)
        how = (
            f"switched over from {r['killed']} to {r['new_primary']} in {r['command_s']:.1f} s"
            if args.switchover
            else f"killed {r['killed']} -> new primary {r['new_primary']}"
        )
        log(
            f"  run {run}: {how}:"
            f" {what} {r['rto']:.2f} s, {r['acked']} commits acknowledged,"
            f" {len(r['missing'])} missing{' ' + str(r['missing']) if r['missing'] else ''},"
            f" {r['in_doubt']} committed without ack, {r['failed_attempts']} failed attempts;"
            f" {r['killed']} rejoined as {r['rejoined_as']} in {r['rejoin_s']:.1f} s"
        )

    rtos = [r["rto"] for r in results]
    lost = sum(len(r["missing"]) for r in results)
    log(
        f"{what}: median {statistics.median(rtos):.2f} s, worst {max(rtos):.2f} s,"
        f" best {min(rtos):.2f} s over {len(rtos)} runs"
    )
    if args.switchover:
        commands = [r["command_s"] for r in results]
        log(f"inkdeploy db switchover: median {statistics.median(commands):.1f} s per command")
    log(f"acknowledged commits missing afterwards: {lost} in all runs")
    log_settings(settings, sync)
    log(f"bench took {time.monotonic() - bench_started:.0f} s")
    if not args.keep:
        lab("down", "--lab", args.lab)
    return 1 if (sync and lost) else 0


if __name__ == "__main__":
    sys.exit(main())
