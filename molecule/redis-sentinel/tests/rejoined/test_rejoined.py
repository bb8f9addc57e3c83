"""The old master host is back: a replica of the new master, and the sentinels still agree.

Runs twice: right after the old host booted, and after the re-converge (which must change
nothing and keep the new master)."""


def test_one_master_and_it_is_not_the_old_one(cluster, drill):
    views = {name: cluster.sentinel_view(name) for name in cluster.names}
    assert len(set(views.values())) == 1, views
    master_address = next(iter(views.values()))
    assert master_address != drill["old_address"]
    roles = {n: cluster.redis(n, "ROLE").stdout.splitlines()[0] for n in cluster.names}
    assert sorted(roles.values()) == ["master", "slave", "slave"], roles
    assert roles[cluster.by_address[master_address]] == "master"


def test_old_master_replicates_the_new_master(cluster, drill):
    old = drill["old_master"]
    master_address = cluster.sentinel_view(old)
    info = cluster.info(old)
    assert info["role"] == "slave"
    assert info["master_host"] == master_address
    assert info["master_link_status"] == "up"
    # It has the writes made while it was down.
    assert cluster.redis(old, "GET", "molecule:after-failover").stdout == "written"
    # Sentinel rewrote its redis.conf: the replicaof line now names the new master.
    conf = cluster.hosts[old].file("/etc/redis/redis.conf").content_string
    assert f"replicaof {master_address} 6379" in conf.splitlines()


def test_sentinels_see_two_linked_replicas_and_two_peers(cluster, drill):
    for name in cluster.names:
        master = cluster.eventually(
            lambda n=name: (
                (m := cluster.sentinel_master(n))["num-slaves"] == "2"
                and m["num-other-sentinels"] == "2"
                and m["flags"] == "master"
                and m
            ),
            timeout=15,
        )
        assert master, f"sentinel on {name}: {cluster.sentinel_master(name)}"
    new_master = cluster.by_address[cluster.sentinel_view(drill["old_master"])]
    assert cluster.info(new_master)["connected_slaves"] == "2"
