"""PostgreSQL and Patroni's REST API speak TLS (issue 14): certificates from the postgresql
role's internal CA on the controller, every network rule of pg_hba.conf is hostssl, clients and
members verify the server, and a plaintext connection is refused even with the right password.

The controller is an allowed client here (converge.yml's extra pg_hba rule and firewall port),
so the refusals below are TLS's doing, not the firewall's or a missing rule's."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import psycopg
import pytest
import yaml

from conftest import EPHEMERAL, PG_CA, assert_member_certificate

testinfra_hosts = ["ansible://db"]

PKI = PG_CA.parent
TLS_DIR = "/etc/postgresql/15/inkdeploy/tls"
ETCD_CA = EPHEMERAL / "inventory" / "pki" / "etcd" / "ca.crt"


def test_a_plaintext_connection_is_refused_even_with_the_right_password(cluster):
    primary = cluster.primary()
    dsn = cluster.dsn(host=cluster.addresses[primary], sslmode="disable", sslrootcert="")
    refused = r"pg_hba\.conf rejects connection.*no encryption"
    with pytest.raises(psycopg.OperationalError, match=refused):
        psycopg.connect(dsn, password=cluster.app_password, autocommit=True)


def test_the_app_dsn_verifies_the_server_and_gets_tls(cluster):
    with cluster.app_connect() as conn:
        version, cipher = conn.execute(
            "SELECT version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"
        ).fetchone()
    assert version in ("TLSv1.2", "TLSv1.3") and cipher


def test_a_server_certificate_from_another_ca_is_not_trusted(cluster):
    # the etcd CA is real but never signed a PostgreSQL certificate
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(cluster.dsn(sslrootcert=str(ETCD_CA)), password=cluster.app_password)


def test_a_name_the_certificate_does_not_carry_is_refused(cluster):
    primary = cluster.primary()
    # right server, right CA, but connected by a name that is not in its certificate
    dsn = cluster.dsn(host="localhost.invalid", hostaddr=cluster.addresses[primary])
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(dsn, password=cluster.app_password)


def test_every_rule_that_admits_over_the_network_is_hostssl(host, cluster):
    name = host.backend.get_hostname()
    rows = cluster.sql(
        name, "SELECT type, auth_method FROM pg_hba_file_rules WHERE error IS NULL"
    ).splitlines()
    network = [row.split("|") for row in rows if not row.startswith("local|")]
    admitting = [kind for kind, method in network if method != "reject"]
    assert admitting and set(admitting) == {"hostssl"}, rows
    assert {kind for kind, method in network if method == "reject"} == {"host"}, rows
    assert cluster.sql(name, "SHOW ssl") == "on"


def test_replicas_stream_over_verified_tls(cluster):
    primary = cluster.primary()
    rows = cluster.sql(
        primary,
        "SELECT r.application_name, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s "
        "USING (pid) ORDER BY 1",
    ).splitlines()
    assert len(rows) == len(cluster.addresses) - 1 and all(r.endswith("|t") for r in rows), rows
    for member in cluster.addresses:
        if member == primary:
            continue
        conninfo = cluster.sql(member, "SHOW primary_conninfo")
        assert "sslmode=verify-full" in conninfo and f"sslrootcert={TLS_DIR}/ca.crt" in conninfo


def test_patroni_api_is_https_with_the_member_certificate(cluster):
    primary = cluster.primary()
    address = cluster.addresses[primary]
    assert cluster.api(primary, "/patroni")["role"] in ("master", "primary")
    # plain http on the same port gets no HTTP answer (the server wants a TLS handshake)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{address}:8008/patroni", timeout=3)
    # and the etcd CA does not vouch for it
    other = ssl.create_default_context(cafile=str(ETCD_CA))
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"https://{address}:8008/patroni", timeout=3, context=other)


def test_member_tls_files_and_certificate(host, cluster):
    key = host.file(f"{TLS_DIR}/server.key")
    assert (key.user, key.group, key.mode) == ("postgres", "postgres", 0o600)
    assert_member_certificate(host, cluster, PKI, f"{TLS_DIR}/server.crt")
    # Patroni serves its API with the same certificate and patronictl trusts the CA
    config = yaml.safe_load(host.file("/etc/patroni/config.yml").content_string)
    assert config["restapi"]["certfile"] == f"{TLS_DIR}/server.crt"
    assert config["ctl"]["cacert"] == f"{TLS_DIR}/ca.crt"
    assert host.run("patronictl -c /etc/patroni/config.yml list").rc == 0
