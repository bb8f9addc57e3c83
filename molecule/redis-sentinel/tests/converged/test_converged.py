"""A converged cluster: one master, two linked replicas, three agreeing sentinels, auth enforced."""

import pytest

TLS_CA = "/etc/ssl/inkdeploy/redis/ca.crt"  # the scenario runs with redis_tls on (molecule.yml)


def roles(cluster):
    return {name: cluster.redis(name, "ROLE").stdout.splitlines()[0] for name in cluster.names}


def test_exactly_one_master_and_it_is_the_first_host(cluster):
    seen = roles(cluster)
    assert sorted(seen.values()) == ["master", "slave", "slave"], seen
    # A brand-new cluster starts with the first host of the redis group as master.
    assert seen[cluster.names[0]] == "master"


def test_replicas_are_connected_with_link_up(cluster):
    master = cluster.names[0]
    for name in cluster.names[1:]:
        info = cluster.info(name)
        assert info["role"] == "slave"
        assert info["master_host"] == cluster.address[master]
        assert info["master_link_status"] == "up"
    info = cluster.info(master)
    assert info["connected_slaves"] == "2"
    replicas = {info[f"slave{i}"].split(",")[0].removeprefix("ip=") for i in range(2)}
    assert replicas == {cluster.address[n] for n in cluster.names[1:]}


def test_writes_replicate(cluster):
    master = cluster.names[0]
    assert cluster.redis(master, "SET", "molecule:probe", "42").stdout == "OK"
    # WAIT 2 replicas, 2 s: both acknowledged the write.
    assert cluster.redis(master, "WAIT", "2", "2000").stdout == "2"
    for name in cluster.names[1:]:
        assert cluster.redis(name, "GET", "molecule:probe").stdout == "42"
        assert "READONLY" in cluster.redis(name, "SET", "molecule:probe", "43").stdout


def test_sentinels_agree_and_see_the_whole_cluster(cluster):
    master_address = cluster.address[cluster.names[0]]
    for name in cluster.names:
        assert cluster.sentinel_view(name) == master_address
        master = cluster.sentinel_master(name)
        assert master["flags"] == "master"
        assert master["num-slaves"] == "2"
        assert master["num-other-sentinels"] == "2"
        assert master["quorum"] == "2"
        assert cluster.sentinel(name, "CKQUORUM", "inkdeploy").stdout.startswith(
            "OK 3 usable Sentinels"
        )


def test_failover_settings_applied(cluster):
    master = cluster.sentinel_master(cluster.names[0])
    assert master["down-after-milliseconds"] == "3000"
    assert master["failover-timeout"] == "30000"
    assert master["parallel-syncs"] == "1"


@pytest.mark.parametrize("port", [6379, 26379])
def test_commands_without_password_are_refused(cluster, port):
    for name in cluster.names:
        result = cluster.redis(name, "PING", port=port, auth=False)
        assert "NOAUTH Authentication required" in result.stdout + result.stderr
        other = cluster.address[cluster.names[(cluster.names.index(name) + 1) % 3]]
        result = cluster.redis(name, "PING", port=port, target=other, auth=False)
        assert "NOAUTH Authentication required" in result.stdout + result.stderr


@pytest.mark.parametrize("port", [6379, 26379])
def test_wrong_password_is_refused(cluster, port):
    result = cluster.hosts[cluster.names[0]].run(
        f"REDISCLI_AUTH=wrong-password redis-cli --tls --cacert {TLS_CA} -p {port} "
        "--no-auth-warning PING"
    )
    assert "WRONGPASS" in result.stdout + result.stderr or "ERR" in result.stdout + result.stderr


@pytest.mark.parametrize("port", [6379, 26379])
def test_plain_text_is_refused_and_tls_is_verified(cluster, port):
    """TLS only (redis_tls): a plain-text client gets no answer, with or without the password,
    on loopback and from another cluster host; a client that does not trust the internal CA
    fails the handshake; one that trusts it gets PONG."""
    for name in cluster.names:
        other = cluster.address[cluster.names[(cluster.names.index(name) + 1) % 3]]
        for target in (None, other):
            plain = cluster.redis(name, "PING", port=port, target=target, tls=False)
            assert "PONG" not in plain.stdout, (name, target, plain)
            secure = cluster.redis(name, "PING", port=port, target=target)
            assert secure.stdout == "PONG", (name, target, secure)
        untrusted = cluster.hosts[name].run(
            f"timeout 5 redis-cli --tls --cacert /etc/ssl/certs/ca-certificates.crt -p {port} PING"
        )
        assert "PONG" not in untrusted.stdout
        assert "certificate verify failed" in untrusted.stdout + untrusted.stderr


def test_servers_listen_and_replicate_with_tls_only(cluster):
    for name in cluster.names:
        settings = {}
        for key in ("port", "tls-port", "tls-replication", "tls-auth-clients"):
            reply = cluster.redis(name, "CONFIG", "GET", key).stdout.splitlines()
            settings[reply[0]] = reply[1]
        assert settings == {
            "port": "0",
            "tls-port": "6379",
            "tls-replication": "yes",
            "tls-auth-clients": "no",
        }
    master = cluster.sentinel_master(cluster.names[0])["ip"]
    info = cluster.info(cluster.by_address[master])
    assert info["connected_slaves"] == "2"  # the replicas' links work, so they are TLS too


@pytest.mark.parametrize("port", [6379, 26379])
def test_listens_on_the_lab_address_and_loopback_only(cluster, port):
    for name in cluster.names:
        out = cluster.hosts[name].check_output(f"ss -Hltn 'sport = :{port}'")
        local = sorted(line.split()[3] for line in out.splitlines())
        assert local == sorted([f"127.0.0.1:{port}", f"{cluster.address[name]}:{port}"])


@pytest.mark.parametrize("port", [6379, 26379])
def test_other_addresses_are_dropped(cluster, port):
    """The controller (bridge address .1) is not a cluster host: the firewall drops it."""
    for name in cluster.names:
        assert cluster.tcp_connect(cluster.address[name], port) == "dropped"


def test_dangerous_commands_are_disabled(cluster):
    master = cluster.names[0]
    assert "unknown command" in cluster.redis(master, "FLUSHALL").stdout
    assert "DEBUG command not allowed" in cluster.redis(master, "DEBUG", "SLEEP", "0").stdout


def test_persistence_and_memory_settings(cluster):
    for name in cluster.names:
        got = cluster.redis(
            name, "CONFIG", "GET", "appendonly", "appendfsync", "maxmemory*", "protected-mode"
        ).stdout.splitlines()
        conf = dict(zip(got[::2], got[1::2], strict=True))
        assert conf["appendonly"] == "yes"
        assert conf["appendfsync"] == "everysec"
        assert conf["maxmemory"] == str(256 * 1024 * 1024)
        assert conf["maxmemory-policy"] == "volatile-lru"
        assert conf["protected-mode"] == "yes"


def test_config_files_written_once_and_owned_by_redis(cluster):
    for name in cluster.names:
        host = cluster.hosts[name]
        for path in ["/etc/redis/redis.conf", "/etc/redis/sentinel.conf"]:
            conf = host.file(path)
            assert conf.user == "redis"
            assert conf.mode == 0o640
            head = conf.content_string.splitlines()[:5]
            assert "# Ansible managed" in head
            assert any(line.startswith("# inkdeploy: ") and "written once" in line for line in head)
        # Sentinel has taken over its file (it records its id there).
        assert "sentinel myid " in host.file("/etc/redis/sentinel.conf").content_string


@pytest.mark.parametrize("service", ["redis-server", "redis-sentinel"])
def test_services_enabled_and_running(cluster, service):
    for name in cluster.names:
        unit = cluster.hosts[name].service(service)
        assert unit.is_enabled
        assert unit.is_running
