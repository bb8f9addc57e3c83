"""Shared helpers for the postgresql-ha verify steps (pytest-testinfra, ansible backend).

Cluster-wide facts come from Patroni's REST API, asked from the controller (lab addresses only);
SQL runs on the members as the postgres OS user (peer authentication on the local socket).
The failover drill's playbooks record what they did in MOLECULE_EPHEMERAL_DIRECTORY/failover.json.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import testinfra
import yaml
from cryptography import x509

EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "."))
INVENTORY = EPHEMERAL / "inventory" / "lab.yml"
# postgresql_pki_dir's default: {{ inventory_dir }}/pki/postgresql (the server certificates of
# PostgreSQL and of Patroni's REST API)
PG_CA = EPHEMERAL / "inventory" / "pki" / "postgresql" / "ca.crt"
LEADER_ROLES = ("leader", "master")


@dataclass
class Cluster:
    addresses: dict[str, str]
    app_password: str
    subnet: str

    def api(self, member: str, path: str):
        url = f"https://{self.addresses[member]}:8008{path}"
        context = ssl.create_default_context(cafile=str(PG_CA))
        with urllib.request.urlopen(url, timeout=3, context=context) as response:  # lab only
            return json.load(response)

    def members(self, exclude: tuple[str, ...] = ()) -> list[dict]:
        for member in self.addresses:
            if member in exclude:
                continue
            try:
                return self.api(member, "/cluster")["members"]
            except OSError:
                continue
        return []

    def wait_for(self, predicate, timeout: float, exclude: tuple[str, ...] = ()) -> list[dict]:
        """Poll /cluster until predicate(members) holds; return the members."""
        deadline = time.monotonic() + timeout
        members: list[dict] = []
        while time.monotonic() < deadline:
            members = self.members(exclude)
            if members and predicate(members):
                return members
            time.sleep(1)
        states = ", ".join(f"{m['name']} {m['role']} {m['state']}" for m in members)
        pytest.fail(f"cluster did not reach the expected state in {timeout:.0f} s: {states}")

    def primary(self, exclude: tuple[str, ...] = ()) -> str:
        members = self.wait_for(
            lambda ms: len([m for m in ms if m["role"] in LEADER_ROLES]) == 1, 60, exclude
        )
        return next(m["name"] for m in members if m["role"] in LEADER_ROLES)

    def new_primary(self, old: str, timeout: float = 90) -> str:
        """Wait until a member other than OLD holds the leader lock and runs; return it."""
        members = self.wait_for(
            lambda ms: any(
                m["role"] in LEADER_ROLES and m["name"] != old and m["state"] == "running"
                for m in ms
            ),
            timeout,
            exclude=(old,),
        )
        return next(m["name"] for m in members if m["role"] in LEADER_ROLES)

    def dsn(self, **overrides: str) -> str:
        options = {
            "host": ",".join(self.addresses.values()),
            "port": "5432",
            "dbname": "inkdeploy",
            "user": "inkdeploy",
            "target_session_attrs": "read-write",
            "connect_timeout": "3",
            "sslmode": "verify-full",
            "sslrootcert": str(PG_CA),
        }
        options.update(overrides)
        return " ".join(f"{k}={v}" for k, v in options.items())

    def app_connect(self, **overrides: str) -> psycopg.Connection:
        return psycopg.connect(self.dsn(**overrides), password=self.app_password, autocommit=True)

    def app_connect_retrying(self, timeout: float, **overrides: str) -> psycopg.Connection:
        """Connect, retrying while the promoted member finishes coming up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.app_connect(**overrides)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def marker_count(self, member: str, token: str) -> int:
        """Rows of the drill's marker table with TOKEN, read on MEMBER itself (any role)."""
        with self.app_connect(host=self.addresses[member], target_session_attrs="any") as conn:
            query = "SELECT count(*) FROM failover_marker WHERE token = %s"
            return conn.execute(query, (token,)).fetchone()[0]

    def host(self, member: str):
        return testinfra.get_host(f"ansible://{member}?ansible_inventory={INVENTORY}")

    def sql(self, member: str, query: str, database: str = "postgres") -> str:
        """Run QUERY with psql on MEMBER as postgres; return the unaligned output."""
        command = f"runuser -u postgres -- psql -X -At -d {database} -c {shlex.quote(query)}"
        return self.host(member).check_output(command)


def assert_member_certificate(host, cluster: Cluster, pki: Path, installed: str) -> None:
    """INSTALLED (a path on HOST) is the certificate the internal CA in PKI (on the controller)
    signed for this member: the member's address and name as SANs, at most 365 days, and the
    CA key readable by its owner only."""
    name = host.backend.get_hostname()
    served = host.file(installed).content_string.strip()
    assert served == (pki / f"{name}.crt").read_text().strip()
    cert = x509.load_pem_x509_certificate(served.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert cluster.addresses[name] in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert name in sans.get_values_for_type(x509.DNSName)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=365), lifetime
    assert (pki / "ca.key").stat().st_mode & 0o077 == 0


class Committer:
    """The target of bench/pg_failover.py's writer: the app's multi-host read-write DSN with
    short client timeouts, so a dead or demoted primary is noticed in seconds."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.dsn = cluster.dsn(connect_timeout="2", keepalives_idle="1", keepalives_interval="1",
                               keepalives_count="2", tcp_user_timeout="2000")  # fmt: skip

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, password=self.cluster.app_password, autocommit=True)


@pytest.fixture
def committer(cluster: Cluster) -> Committer:
    return Committer(cluster)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    inventory = yaml.safe_load(INVENTORY.read_text())
    variables = inventory["all"]["vars"]
    db_hosts = inventory["all"]["children"]["db"]["hosts"]
    addresses = {name: inventory["all"]["hosts"][name]["ansible_host"] for name in db_hosts}
    return Cluster(
        addresses, variables["postgresql_app_password"], variables["inkdeploy_lab_subnet"]
    )


@pytest.fixture(scope="session")
def drill() -> dict:
    """What the failover drill's side-effect playbooks recorded."""
    return json.loads((EPHEMERAL / "failover.json").read_text())
