"""After the master host was hard-killed: the sentinels elected a new master that takes writes."""


def survivors(cluster, drill):
    return [n for n in cluster.names if n != drill["old_master"]]


def test_surviving_sentinels_agree_on_a_new_master(cluster, drill):
    views = {name: cluster.sentinel_view(name) for name in survivors(cluster, drill)}
    assert len(set(views.values())) == 1, views
    new_address = next(iter(views.values()))
    assert new_address != drill["old_address"]
    assert cluster.by_address[new_address] in survivors(cluster, drill)


def test_new_master_is_master_and_old_one_is_down_for_the_sentinels(cluster, drill):
    name = survivors(cluster, drill)[0]
    new_master = cluster.by_address[cluster.sentinel_view(name)]
    assert cluster.info(new_master)["role"] == "master"

    def old_listed_down():
        lines = cluster.sentinel(name, "REPLICAS", "inkdeploy").stdout.splitlines()
        # Flat field/value list per replica; find the old master's flags.
        for i, line in enumerate(lines):
            if line == "ip" and lines[i + 1] == drill["old_address"]:
                flags = lines[lines.index("flags", i) + 1]
                return "s_down" in flags and flags
        return False

    # The killed host is now listed as a replica of the new master, flagged down (s_down).
    assert cluster.eventually(old_listed_down, timeout=10)


def test_new_master_accepts_writes(cluster, drill):
    name = survivors(cluster, drill)[0]
    new_master = cluster.by_address[cluster.sentinel_view(name)]
    assert cluster.redis(new_master, "SET", "molecule:after-failover", "written").stdout == "OK"
    assert cluster.redis(new_master, "INCR", "molecule:counter").stdout.isdigit()
    other = next(n for n in survivors(cluster, drill) if n != new_master)
    info = cluster.eventually(
        lambda: (i := cluster.info(other))["master_link_status"] == "up" and i, timeout=20
    )
    assert info, "the remaining replica did not link to the new master"
    assert info["master_host"] == cluster.address[new_master]
    assert cluster.redis(new_master, "WAIT", "1", "2000").stdout == "1"
    assert cluster.redis(other, "GET", "molecule:after-failover").stdout == "written"
