"""`inkdeploy redis failover` on the converged cluster, from the lab controller, as on-call runs it.

A writer follows the master through the sentinels (redis-py Sentinel, as the app does) and
INCRs a counter and SETs numbered keys while the command moves the master. Afterwards: a new
master that every sentinel names, the old master replicating from it, and every write the
writer saw acknowledged present on the new master. The command's own refusals change nothing.

The scenario's firewall admits Redis and Sentinel from the cluster's hosts only; the command
and the writer run on the controller, so this module admits the controller's address for its
duration (one rule per host, removed afterwards) and leaves the firewall as it found it.
The drill after this step (kill the master) finds the master through the sentinels, whichever
host it is now.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

MASTER_NAME = "inkdeploy"
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "."))
INVENTORY = EPHEMERAL / "inventory" / "lab.yml"  # written by `inkdeploy lab up`, with secrets
# redis_tls is on in this scenario: the redis role's CA, made next to the inventory.
TLS = {
    "ssl": True,
    "ssl_ca_certs": str(INVENTORY.parent / "pki" / "redis" / "ca.crt"),
    "ssl_cert_reqs": "required",
}
RULE_COMMENT = "molecule ops test: controller"
TIMEOUT = 0.5  # writer socket and connect timeouts, seconds
PREFIX = "molecule:ops"


def inkdeploy(*args: str, inventory: Path = INVENTORY) -> subprocess.CompletedProcess[str]:
    here = Path(sys.executable).parent / "inkdeploy"
    cli = str(here) if here.exists() else shutil.which("inkdeploy") or "inkdeploy"
    return subprocess.run(
        [cli, "redis", *args, "-i", str(inventory)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def controller_address(target: str) -> str:
    """The controller's address on the route to TARGET (the lab bridge's gateway)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((target, 9))
        return str(probe.getsockname()[0])


@pytest.fixture(scope="module")
def secrets() -> dict[str, Any]:
    return yaml.safe_load(INVENTORY.read_text())["all"]["vars"]


@pytest.fixture(scope="module")
def controller_access(cluster) -> Iterator[str]:
    """Admit the controller to Redis and Sentinel on every host while this module runs."""
    me = controller_address(cluster.address[cluster.names[0]])
    rule = f'ip saddr {me} tcp dport {{ 6379, 26379 }} accept comment "{RULE_COMMENT}"'
    for name in cluster.names:
        command = shlex.quote(f"insert rule inet inkdeploy input {rule}")
        cluster.hosts[name].check_output(f"nft {command}")
    yield me
    for name in cluster.names:
        host = cluster.hosts[name]
        listing = host.check_output("nft -a list chain inet inkdeploy input")
        for line in listing.splitlines():
            if RULE_COMMENT in line:
                handle = line.rsplit("# handle", 1)[1].strip()
                host.check_output(f"nft delete rule inet inkdeploy input handle {handle}")
        assert RULE_COMMENT not in host.check_output("nft list ruleset")


class Writer(threading.Thread):
    """INCR a counter and SET a numbered key as fast as 100 pairs a second, through Sentinel;
    every acknowledged write is recorded with its time."""

    def __init__(self, cluster, secrets: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.sentinel = Sentinel(
            [(cluster.address[n], 26379) for n in cluster.names],
            sentinel_kwargs={
                "password": secrets["redis_sentinel_password"],
                "socket_timeout": TIMEOUT,
                "socket_connect_timeout": TIMEOUT,
                "retry": Retry(NoBackoff(), 0),
                **TLS,
            },
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            **TLS,
        )
        self.client = self.sentinel.master_for(
            MASTER_NAME, password=secrets["redis_password"], retry=Retry(NoBackoff(), 0)
        )
        self.run_id = str(int(time.time()))
        self.counter = f"{PREFIX}:{self.run_id}:counter"
        self.incr_acked = 0
        self.keys: list[str] = []
        self.acked_at: list[float] = []
        self.errors: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            try:
                self.client.incr(self.counter)
                self.incr_acked += 1
                self.acked_at.append(time.monotonic())
                key = f"{PREFIX}:{self.run_id}:{seq}"
                self.client.set(key, seq)
                self.keys.append(key)
                self.acked_at.append(time.monotonic())
            except (redis.RedisError, OSError) as exc:
                kind = type(exc).__name__
                self.errors[kind] = self.errors.get(kind, 0) + 1
                time.sleep(0.02)
            time.sleep(0.01)

    def longest_gap(self) -> float:
        times = self.acked_at
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def master_of(cluster) -> str:
    return cluster.by_address[cluster.sentinel_view(cluster.names[0])]


def roles(cluster) -> dict[str, str]:
    return {n: cluster.redis(n, "ROLE").stdout.splitlines()[0] for n in cluster.names}


def test_dry_run_names_master_and_candidates_and_changes_nothing(cluster, controller_access):
    before, before_roles = master_of(cluster), roles(cluster)
    proc = inkdeploy("failover", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["dry_run"] is True
    assert plan["old_master"] == f"{cluster.address[before]}:6379"
    others = {f"{cluster.address[n]}:6379" for n in cluster.names if n != before}
    assert set(plan["candidates"]) == others
    assert plan["lock"] == "no deploy lock in this inventory"
    assert plan["message"].startswith("Would move the Redis master")
    assert master_of(cluster) == before and roles(cluster) == before_roles


def test_a_master_name_the_sentinels_do_not_monitor_is_refused(
    cluster, controller_access, tmp_path
):
    data = yaml.safe_load(INVENTORY.read_text())
    data["all"]["vars"]["redis_sentinel_master_name"] = "no-such-master"
    # the scenario's group_vars (TLS on) and CA stay beside the original inventory
    data["all"]["vars"].update(redis_tls=True, redis_pki_dir=str(INVENTORY.parent / "pki/redis"))
    wrong = tmp_path / "lab.yml"
    wrong.write_text(yaml.safe_dump(data))
    wrong.chmod(0o600)
    before, before_roles = master_of(cluster), roles(cluster)
    proc = inkdeploy("failover", inventory=wrong)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = " ".join((proc.stdout + proc.stderr).split())
    assert 'monitor no master named "no-such-master"' in said
    assert "Traceback" not in said
    assert master_of(cluster) == before and roles(cluster) == before_roles


def test_failover_moves_the_master_and_keeps_every_acknowledged_write(
    cluster, controller_access, secrets, capsys
):
    old = master_of(cluster)
    writer = Writer(cluster, secrets)
    writer.start()
    assert cluster.eventually(lambda: writer.incr_acked >= 50, timeout=10), writer.errors
    began = time.monotonic()
    proc = inkdeploy("failover", "--json")
    ran_s = time.monotonic() - began
    # a moment more of writes against the new master
    seen = len(writer.acked_at)
    more = cluster.eventually(lambda: len(writer.acked_at) > seen + 100, timeout=15)
    writer.stop.set()
    writer.join(5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert more, f"the writer stalled after the failover: {writer.errors}; {proc.stdout}"
    result = json.loads(proc.stdout)

    assert result["old_master"] == f"{cluster.address[old]}:6379"
    new = cluster.by_address[result["new_master"].rsplit(":", 1)[0]]
    assert new != old
    assert cluster.info(new)["role"] == "master"
    # every sentinel names the new master (the command waited for a majority)
    agree = cluster.eventually(
        lambda: all(cluster.sentinel_view(n) == cluster.address[new] for n in cluster.names),
        timeout=10,
    )
    assert agree, {n: cluster.sentinel_view(n) for n in cluster.names}
    # the old master replicates from the new one within a bound
    info = cluster.eventually(
        lambda: (
            (i := cluster.info(old))["role"] == "slave"
            and i["master_host"] == cluster.address[new]
            and i["master_link_status"] == "up"
            and i
        ),
        timeout=30,
    )
    assert info, cluster.info(old)

    # every write the writer saw acknowledged is on the new master
    master = redis.Redis(
        host=cluster.address[new], password=secrets["redis_password"], socket_timeout=3, **TLS
    )
    counter = int(master.get(writer.counter) or 0)
    missing = 0
    for i in range(0, len(writer.keys), 500):
        values = master.mget(writer.keys[i : i + 500])
        missing += sum(v is None for v in values)
    figures = {
        "old_master": old,
        "new_master": new,
        "command_seconds": result["seconds"],
        "command_wall_seconds": round(ran_s, 2),
        "agreed_after_s": result["agreed_after_s"],
        "writes_held_s": result["writes_held_s"],
        "old_master_replicates_at_end": result["old_master_replicates"],
        "old_master_role": result["old_master_role"],
        "longest_gap_s": round(writer.longest_gap(), 2),
        "incr_acknowledged": writer.incr_acked,
        "counter_on_new_master": counter,
        "keys_acknowledged": len(writer.keys),
        "keys_missing": missing,
        "writer_errors": writer.errors,
        "message": result["message"],
    }
    (EPHEMERAL / "redis-failover-command.json").write_text(json.dumps(figures, indent=2) + "\n")
    with capsys.disabled():
        print(
            f"\nredis failover drill: {old} -> {new}; command {result['seconds']} s "
            f"(sentinels agreed after {result['agreed_after_s']} s, writes held "
            f"{result['writes_held_s']} s); longest time without an acknowledged write "
            f"{writer.longest_gap():.2f} s; acknowledged INCR {writer.incr_acked}, counter "
            f"{counter}; acknowledged SET {len(writer.keys)}, missing {missing}; writer errors "
            f"{writer.errors}; old master a replica at the end: "
            f"{result['old_master_replicates']} ({result['old_master_role']})\n"
            f"  message: {result['message']}"
        )
    assert counter >= writer.incr_acked
    assert missing == 0
    for i in range(0, len(writer.keys), 500):  # leave the data set as it was
        master.delete(*writer.keys[i : i + 500])
    master.delete(writer.counter)
