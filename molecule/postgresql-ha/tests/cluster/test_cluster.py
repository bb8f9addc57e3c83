"""After converge: one primary, two streaming replicas with slots, auth enforced, checksums on."""

import psycopg
import pytest

# the members only: the scenario's backup1 runs no PostgreSQL, etcd or Patroni
testinfra_hosts = ["ansible://db"]

# Never checked: pg_hba.conf rejects the superuser over the network before any password.
WRONG = "not-the-password"
SAFE_METHODS = {"scram-sha-256", "peer", "reject"}


def test_exactly_one_primary_and_two_replicas(cluster):
    members = cluster.wait_for(lambda ms: all(m["state"] == "running" for m in ms), 60)
    roles = sorted(m["role"] for m in members)
    assert len(members) == 3
    assert sum(r in ("leader", "master") for r in roles) == 1
    assert sum(r in ("replica", "sync_standby") for r in roles) == 2
    # synchronous_mode is on in this scenario: one of the replicas is the synchronous standby.
    assert roles.count("sync_standby") == 1


def test_replicas_stream_with_slots(cluster):
    primary = cluster.primary()
    replicas = sorted(set(cluster.addresses) - {primary})
    rows = cluster.sql(
        primary, "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY 1"
    ).splitlines()
    assert [row.split("|")[:2] for row in rows] == [[r, "streaming"] for r in replicas]
    assert sorted(row.split("|")[2] for row in rows) == ["async", "sync"]
    slots = cluster.sql(
        primary,
        "SELECT slot_name, slot_type, active FROM pg_replication_slots ORDER BY 1",
    ).splitlines()
    assert slots == [f"{r}|physical|t" for r in replicas]


def test_data_checksums_and_scram_only(host):
    settings = host.check_output(
        "runuser -u postgres -- psql -X -At -c 'SHOW data_checksums' -c 'SHOW password_encryption'"
    ).splitlines()
    assert settings == ["on", "scram-sha-256"]
    rules = host.check_output(
        "runuser -u postgres -- psql -X -At -c "
        "\"SELECT auth_method, coalesce(error, '') FROM pg_hba_file_rules\""
    ).splitlines()
    assert rules, "pg_hba_file_rules is empty"
    assert {r.split("|")[1] for r in rules} == {""}, "pg_hba.conf has errors"
    assert {r.split("|")[0] for r in rules} <= SAFE_METHODS
    # Every stored password is a SCRAM verifier (no md5 hashes, no plain text).
    stored = host.check_output(
        "runuser -u postgres -- psql -X -At -c "
        "\"SELECT rolname || ' ' || left(rolpassword, 14) FROM pg_authid"
        ' WHERE rolpassword IS NOT NULL"'
    ).splitlines()
    assert stored and all(line.endswith("SCRAM-SHA-256$") for line in stored), stored


def test_app_connects_with_password_to_the_primary(cluster):
    primary = cluster.primary()
    with cluster.app_connect() as conn:
        assert conn.info.host == cluster.addresses[primary]
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False


def test_read_dsn_prefers_a_standby(cluster):
    with cluster.app_connect(target_session_attrs="prefer-standby") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_connecting_without_password_is_refused(cluster):
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(cluster.dsn(), password="", autocommit=True)


def test_superuser_over_the_network_is_refused(cluster):
    # The right superuser name from an address pg_hba.conf does not admit for it: rejected
    # before any password is asked.
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf"):
        psycopg.connect(cluster.dsn(user="postgres", dbname="postgres"), password=WRONG)


def test_app_user_from_a_non_allowed_address_is_refused(cluster):
    primary = cluster.primary()
    other = next(m for m in cluster.addresses if m != primary)
    result = cluster.host(other).run(
        "PGPASSWORD=\"$P\" psql -X -At -h %s -d inkdeploy -U inkdeploy -c 'SELECT 1'",
        cluster.addresses[primary],
    )
    # $P is unset on purpose: the rejection happens before authentication anyway.
    assert result.rc != 0
    assert "pg_hba.conf rejects connection" in result.stderr


def test_restapi_unsafe_endpoints_need_credentials(cluster):
    primary = cluster.primary()
    other = next(m for m in cluster.addresses if m != primary)
    code = cluster.host(other).check_output(
        "curl -s -o /dev/null -w '%%{http_code}' --cacert /etc/postgresql/15/inkdeploy/tls/ca.crt "
        "-X POST https://%s:8008/restart",
        cluster.addresses[primary],
    )
    assert code == "401"
    # Read-only endpoints stay open for health checks.
    assert cluster.api(primary, "/patroni")["role"] in ("master", "primary")


# etcd speaks https only (its CA is in /etc/etcd/tls); member list and /health need no login
# (`etcdctl endpoint health` does: etcd 3.4 answers its test read "user name is empty").
ETCDCTL = "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/tls/ca.crt"
ETCD_HEALTH = (
    'python3 -c "import ssl, sys, urllib.request; '
    "c = ssl.create_default_context(cafile='/etc/etcd/tls/ca.crt'); "
    "r = urllib.request.urlopen(sys.argv[1] + '/health', context=c, timeout=3); "
    'print(r.read().decode())" '
)


def test_etcd_has_three_healthy_members(host):
    members = host.check_output(f"{ETCDCTL} member list").splitlines()
    assert len(members) == 3
    assert all(", started, " in m for m in members)
    assert all(", https://" in m for m in members), members  # peer and client URLs
    for member in members:
        client_url = member.split(", ")[-2]
        assert host.check_output(ETCD_HEALTH + client_url) == '{"health":"true"}', client_url


def test_patroni_configuration_validates(host):
    assert host.run("/usr/local/sbin/inkdeploy-patroni-validate /etc/patroni/config.yml").rc == 0
    config = host.file("/etc/patroni/config.yml")
    assert config.user == "postgres"
    assert config.mode == 0o600
