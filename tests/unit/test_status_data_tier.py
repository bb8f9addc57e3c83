"""The data tier of `inkdeploy status` and `db status` beyond Patroni's /cluster: etcd's health
and leader, and each replica's lag in seconds from its own GET /patroni (answer shapes of
etcd 3.4 and Patroni 3.0, as Debian 12 ships them); the Celery workers per queue with the
release each runs. The lab runs them for real (tests/stack/test_stack.py)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inkdeploy.fleet import build_fleet
from inkdeploy.inventory import Environment, Policy
from inkdeploy.ops.db import db_status, describe_lag, summarize
from inkdeploy.ops.etcd import etcd_status
from inkdeploy.ops.etcd import summarize as summarize_etcd
from inkdeploy.ops.overview import expected_queues, worker_lines
from inkdeploy.preflight import Observation
from tests.unit.test_ops import _closed_port
from tests.unit.test_preflight import JsonServer, cluster, config, down, leader, member

IDS = {"db1": "8e9e05c52164694d", "db2": "91bc3c398fb3c146", "db3": "fd422379fda50e48"}


def health(host: str, ok: bool = True, reason: str = "") -> Observation:
    data = {"health": "true" if ok else "false", "reason": reason}
    return Observation(host, f"{host}:2379", 0.01, data=data)


def state(host: str, leader_host: str | None, term: int = 4) -> Observation:
    data = {
        "header": {"cluster_id": "cdf818194e3a8c32", "member_id": IDS[host], "revision": "871",
                   "raft_term": str(term)},
        "version": "3.4.23",
        "dbSize": "69632",
        "leader": IDS[leader_host] if leader_host else "0",
        "raftIndex": "1406",
        "raftTerm": str(term),
    }  # fmt: skip
    return Observation(host, f"{host}:2379", 0.01, data=data)


def test_etcd_three_healthy_members_agree_on_the_leader() -> None:
    hosts = ("db1", "db2", "db3")
    status = summarize_etcd([health(h) for h in hosts], [state(h, "db2") for h in hosts])
    assert (status.leader, status.healthy, status.problems) == ("db2", list(hosts), [])
    assert status.describe() == "etcd: 3 of 3 healthy, leader db2 (raft term 4)"
    assert status.to_dict()["members"][1]["version"] == "3.4.23"


def test_etcd_one_member_down_is_named_but_quorum_holds() -> None:
    status = summarize_etcd(
        [health("db1"), health("db2"), down("db3")], [state("db1", "db2"), state("db2", "db2")]
    )
    assert status.unreachable == {"db3": "no answer within 2 s"}
    assert status.problems == [] and status.leader == "db2"
    assert status.describe() == "etcd: 2 of 3 healthy, leader db2 (raft term 4)"


def test_etcd_without_quorum_says_what_it_means_for_postgresql() -> None:
    status = summarize_etcd(
        [health("db1", False, "RAFT NO LEADER"), down("db2"), down("db3")],
        [state("db1", None), down("db2"), down("db3")],
    )
    assert status.leader is None and status.describe().startswith("etcd: 0 of 3 healthy, no leader")
    assert status.problems[0].startswith(
        "etcd has 0 healthy member(s) of 3, fewer than the 2 it needs: Patroni can neither renew "
        "nor take the leader key"
    )
    assert status.problems[1] == (
        "etcd on db1 answers but calls itself unhealthy: RAFT NO LEADER; see 'journalctl -u etcd' "
        "on db1."
    )


def test_etcd_members_naming_different_leaders_is_a_problem() -> None:
    status = summarize_etcd(
        [health(h) for h in ("db1", "db2", "db3")],
        [state("db1", "db1", 5), state("db2", "db3", 4), state("db3", "db3", 4)],
    )
    assert status.leader is None
    assert status.problems == [
        "The etcd members name different leaders (db1 names db1, db2 names db3, db3 names db3): "
        "an election in progress or a partition; check `etcdctl endpoint status --cluster` on a "
        "db host."
    ]
    assert "raft term 5" in status.describe()


def _ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A CA (DIRECTORY/ca.crt) and a server certificate for 127.0.0.1 it signed, as the etcd
    role's internal CA issues them; returns (ca.crt, server.crt, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test etcd CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "ca.crt", directory / "server.crt", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class TlsJsonServer(JsonServer):
    """JsonServer over https with CERT and KEY, as etcd serves its client port."""

    def __init__(self, routes: dict, cert: Path, key: Path) -> None:
        super().__init__(routes)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)


def _etcd_routes(host: str) -> dict:
    return {"/health": {"health": "true", "reason": ""},
            "/v3/maintenance/status": state(host, "db3").data}  # fmt: skip


def test_etcd_status_asks_every_member_at_once_over_https_trusting_the_etcd_ca(
    tmp_path: Path,
) -> None:
    # the etcd role's default CA place: pki/etcd next to the inventory
    ca, cert, key = _ca_and_server_cert(tmp_path / "pki" / "etcd")
    with (
        TlsJsonServer(_etcd_routes("db1"), cert, key) as db1,
        TlsJsonServer(_etcd_routes("db3"), cert, key) as db3,
    ):
        ports = {"db1": db1.port, "db2": _closed_port(), "db3": db3.port}
        hostvars = {h: {"ansible_host": "127.0.0.1", "etcd_client_port": p}
                    for h, p in ports.items()}  # fmt: skip
        env = Environment(tmp_path / "hosts.yml", "test", {"etcd": list(ports)},
                          hostvars, Policy.model_validate({}))  # fmt: skip
        began = time.monotonic()
        status = etcd_status(env)
        seconds = time.monotonic() - began
    assert ca.exists()
    assert status.leader == "db3" and status.healthy == ["db1", "db3"]
    assert status.unreachable == {"db2": "connection refused"}
    assert status.problems == [] and seconds < 2


def test_etcd_status_refuses_a_certificate_from_another_ca_and_names_a_missing_ca(
    tmp_path: Path,
) -> None:
    _, cert, key = _ca_and_server_cert(tmp_path / "served")
    _ca_and_server_cert(tmp_path / "other")  # etcd_pki_dir points at a CA that did not sign
    with TlsJsonServer(_etcd_routes("db1"), cert, key) as db1:
        hostvars = {
            "db1": {"ansible_host": "127.0.0.1", "etcd_client_port": db1.port,
                    "etcd_pki_dir": str(tmp_path / "other")},
            "db2": {"ansible_host": "127.0.0.1", "etcd_client_port": db1.port},
        }  # fmt: skip
        env = Environment(tmp_path / "inv" / "hosts.yml", "test", {"etcd": ["db1", "db2"]},
                          hostvars, Policy.model_validate({}))  # fmt: skip
        status = etcd_status(env)
    assert status.healthy == [], status
    assert "CERTIFICATE_VERIFY_FAILED" in status.unreachable["db1"], status.unreachable
    # db2 has no etcd_pki_dir: the default, next to the inventory, does not exist
    missing = tmp_path / "inv" / "pki" / "etcd" / "ca.crt"
    assert status.unreachable["db2"] == (
        f"etcd's CA certificate {missing} is missing on this machine (the etcd role creates it "
        "next to the inventory, or where etcd_pki_dir says)"
    )


def test_patroni_is_asked_over_https_trusting_the_postgresql_ca_unless_tls_is_off(
    tmp_path: Path,
) -> None:
    # the postgresql role's default CA place: pki/postgresql next to the inventory; Patroni
    # serves its REST API with the member's PostgreSQL certificate
    _, cert, key = _ca_and_server_cert(tmp_path / "pki" / "postgresql")
    routes = {"/cluster": {"members": [leader("db1")]}, "/config": {}, "/patroni": {}}
    with TlsJsonServer(routes, cert, key) as db1, JsonServer(routes) as db2:
        hostvars = {
            "db1": {"ansible_host": "127.0.0.1", "patroni_restapi_port": db1.port},
            # plain http where the inventory turns PostgreSQL's TLS off
            "db2": {"ansible_host": "127.0.0.1", "patroni_restapi_port": db2.port,
                    "postgresql_tls": False},
            # https against a CA that is not there: a reason, not a crash
            "db3": {"ansible_host": "127.0.0.1", "patroni_restapi_port": db1.port,
                    "postgresql_pki_dir": str(tmp_path / "nowhere")},
        }  # fmt: skip
        env = Environment(tmp_path / "hosts.yml", "test", {"db": ["db1", "db2", "db3"]},
                          hostvars, Policy.model_validate({}))  # fmt: skip
        status = db_status(env)
    assert sorted(status.answered) == ["db1", "db2"], status
    assert status.unreachable["db3"] == (
        f"postgresql's CA certificate {tmp_path / 'nowhere' / 'ca.crt'} is missing on this "
        "machine (the postgresql role creates it next to the inventory, or where "
        "postgresql_pki_dir says)"
    )


def own(host: str, received: int, replayed: int, stamp: str | None) -> Observation:
    """A replica's GET /patroni as Patroni 3.0 answers it."""
    xlog = {"received_location": received, "replayed_location": replayed,
            "replayed_timestamp": stamp, "paused": False}  # fmt: skip
    data = {"state": "running", "role": "replica", "xlog": xlog, "timeline": 3,
            "replication_state": "streaming"}  # fmt: skip
    return Observation(host, f"{host}:8008", 0.01, data=data)


def test_replica_lag_in_seconds_zero_when_caught_up_else_the_age_of_the_last_replay() -> None:
    now = 1_800_000_000.0

    def stamp(ago: float) -> str:  # as Patroni prints pg_last_xact_replay_timestamp()
        whole = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(now - ago)))
        return f"{whole}.{round((now - ago) % 1 * 1e6):06d}+00:00"

    replicas = (member("db2", "sync_standby", lag=0), member("db3", "replica", lag=3 << 20),
                member("db4", "replica", lag=0))  # fmt: skip
    view = cluster("db1", leader("db1"), *replicas)
    status = summarize(
        [view],
        [config("db1", True)],
        False,
        [own("db2", 500, 500, stamp(40)), own("db3", 900, 400, stamp(12.5)), down("db4")],
        now=now,
    )
    lag = {m.name: m.lag_seconds for m in status.members}
    assert lag == {"db1": None, "db2": 0.0, "db3": 12.5, "db4": None}
    assert status.to_dict()["members"][2]["lag_seconds"] == 12.5
    assert [describe_lag(m) for m in status.members] == ["-", "0 B, 0 s", "3.0 MB, 12.5 s", "0 B"]
    # a replica with byte lag but nothing replayed yet (no timestamp) stays unknown in seconds
    fresh = summarize([view], [], False, [own("db3", 900, 400, None)], now=now)
    assert fresh.members[2].lag_seconds is None


# --- Celery workers per queue ---------------------------------------------------------------


def celery_facts(version: str, *units: tuple[str, str, str | None], beat: str | None = None):
    workers = [{"unit": f"inkapp-celery-worker@{q}.service", "queue": q, "state": s, "release": r}
               for q, s, r in units]  # fmt: skip
    return {"slots": {"celery": {"version": version, "active": None, "workers": workers,
                                 "beat": beat}}, "releases": [version]}  # fmt: skip


def test_status_lists_each_queue_with_its_workers_release_and_what_is_wrong() -> None:
    one = celery_facts("2.0.0", ("celery", "active", "1.0.0"), ("mail", "active", "2.0.0"),
                       beat="active")  # fmt: skip
    two = celery_facts("2.0.0", ("celery", "active", "2.0.0"), ("mail", "failed", None))
    facts = {"worker1": one, "worker2": two}
    fleet = build_fleet("inkapp", [], {}, facts, {}, ["worker1", "worker2", "worker3"])
    fleet = replace(fleet, workers_silent=("worker3",))
    assert list(fleet.queues) == ["celery", "mail"]
    assert fleet.to_dict()["queues"]["mail"][1] == {
        "host": "worker2", "queue": "mail", "state": "failed", "release": None
    }  # fmt: skip
    lines = worker_lines(fleet, {"worker3": ("reports",)})
    assert lines == [
        ("", "Celery queue celery: worker1 1.0.0 active (installed 2.0.0: restart pending), "
             "worker2 2.0.0 active"),
        ("", "Celery queue mail: worker1 2.0.0 active, worker2 - failed"),
        ("", "Celery queue reports: worker3 - unreachable"),
        ("red", "Celery queue reports has no running worker: its tasks wait in the broker "
                "until worker3 answers again."),
        ("", "Celery beat on worker1: active"),
        ("red", "Worker host worker3 is unreachable: only the other worker hosts serve its "
                "queues."),
    ]  # fmt: skip


def test_the_inventory_names_the_queues_of_a_silent_worker_host() -> None:
    hostvars = {"worker1": {"celery_queues": [{"name": "celery"}, {"name": "mail"}]},
                "worker2": {}}  # fmt: skip
    env = Environment(Path("/nonexistent/hosts.yml"), "test", {"worker": ["worker1", "worker2"]},
                      hostvars, Policy.model_validate({}))  # fmt: skip
    assert expected_queues(env) == {"worker1": ("celery", "mail"), "worker2": ("celery",)}


def test_a_running_replica_the_leader_does_not_stream_to_is_a_problem() -> None:
    """/cluster alone calls a replica whose data directory was wiped "running"; the leader's
    own GET /patroni lists who streams from it (pg_stat_replication)."""
    view = cluster("db1", leader("db1"), member("db2", "sync_standby", lag=0),
                   member("db3", "replica", lag=0))  # fmt: skip
    replication = [{"usename": "replicator", "application_name": "db2", "client_addr": "10.0.0.2",
                    "state": "streaming", "sync_state": "sync", "sync_priority": 1}]  # fmt: skip
    leader_own = Observation("db1", "db1:8008", 0.01, data={"role": "master", "state": "running",
                             "xlog": {"location": 900}, "replication": replication})  # fmt: skip
    status = summarize([view], [config("db1", True)], False, [leader_own])
    assert status.problems == [
        "Patroni calls replica db3 streaming, but the leader db1 lists no WAL stream to it "
        "(pg_stat_replication); if that lasts more than a minute, `inkdeploy db reinit db3`."
    ]
    # without the leader's own answer nothing is claimed
    assert summarize([view], [config("db1", True)], False, []).problems == []
