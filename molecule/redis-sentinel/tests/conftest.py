"""Shared helpers for the redis-sentinel scenario's tests (pytest-testinfra, ansible backend).

Tests here are about the cluster, not one host, so they do not use testinfra's per-host `host`
fixture: `cluster` gives every scenario host by name. Passwords never leave the hosts: commands
read them from the host's own redis.conf / sentinel.conf, so nothing secret is in a command line
on the controller or in a test report.
"""

import json
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import testinfra

MASTER_NAME = "inkdeploy"
REDIS_AUTH = "$(sed -n 's/^requirepass \"\\(.*\\)\"$/\\1/p' /etc/redis/redis.conf)"
SENTINEL_AUTH = "$(sed -n 's/^requirepass \"\\(.*\\)\"$/\\1/p' /etc/redis/sentinel.conf)"
# The scenario runs with redis_tls on (molecule.yml), as production does: TLS only, verified.
TLS_CA = "/etc/ssl/inkdeploy/redis/ca.crt"


class Cluster:
    """The scenario's hosts, with redis-cli helpers that run on them."""

    def __init__(self, inventory):
        from testinfra.utils.ansible_runner import AnsibleRunner

        self.runner = AnsibleRunner.get_runner(inventory)
        self.names = sorted(self.runner.get_hosts("redis"))
        self.hosts = {
            name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
            for name in self.names
        }
        self.address = {
            name: self.runner.get_variables(name)["ansible_host"] for name in self.names
        }
        self.by_address = {addr: name for name, addr in self.address.items()}

    def redis(self, name, *args, port=6379, target=None, auth=True, tls=True):
        """redis-cli on host NAME against TARGET (default: itself), over TLS unless TLS is
        false: rc, stripped stdout, stderr."""
        env = f"REDISCLI_AUTH={REDIS_AUTH if port == 6379 else SENTINEL_AUTH} " if auth else ""
        where = f"-h {target} " if target else ""
        secure = f"--tls --cacert {TLS_CA} " if tls else ""
        cmd = f"{env}timeout 5 redis-cli {secure}{where}-p {port} --no-auth-warning " + " ".join(
            args
        )
        result = self.hosts[name].run(cmd)
        return SimpleNamespace(
            rc=result.rc, stdout=result.stdout.strip(), stderr=result.stderr.strip()
        )

    def sentinel(self, name, *args):
        return self.redis(name, "SENTINEL", *args, port=26379)

    def info(self, name, section="replication", target=None):
        out = self.redis(name, "INFO", section, target=target).stdout
        return dict(
            line.split(":", 1) for line in out.splitlines() if ":" in line and line[0] != "#"
        )

    def sentinel_master(self, name):
        lines = self.sentinel(name, "MASTER", MASTER_NAME).stdout.splitlines()
        return dict(zip(lines[::2], lines[1::2], strict=True))

    def sentinel_view(self, name):
        """The master address sentinel NAME reports."""
        return self.sentinel(name, "get-master-addr-by-name", MASTER_NAME).stdout.split()[0]

    @staticmethod
    def eventually(check, timeout=20.0, interval=0.5):
        """Return check()'s value once it is truthy; fail with the last value after TIMEOUT."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(interval)

    @staticmethod
    def tcp_connect(address, port, timeout=3.0):
        """'open', 'refused' or 'dropped' from this process (the lab controller)."""
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return "open"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "dropped"


@pytest.fixture(scope="session")
def cluster(pytestconfig):
    return Cluster(pytestconfig.option.ansible_inventory)


@pytest.fixture(scope="session")
def drill():
    """What the failover drill recorded: old_master, old_address."""
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "failover.json"
    return json.loads(path.read_text())
