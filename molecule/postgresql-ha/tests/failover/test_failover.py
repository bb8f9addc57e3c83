"""After the primary was hard-killed: a new primary, writes work, nothing committed is lost."""


def test_a_new_primary_was_elected(cluster, drill):
    old = drill["old_primary"]
    new = cluster.new_primary(old)
    assert new != old


def test_the_new_primary_accepts_writes_through_the_multi_host_dsn(cluster, drill):
    new = cluster.new_primary(drill["old_primary"])
    with cluster.app_connect_retrying(30) as conn:
        assert conn.info.host == cluster.addresses[new]
        conn.execute("CREATE TABLE IF NOT EXISTS after_failover (id serial PRIMARY KEY)")
        assert conn.execute("INSERT INTO after_failover DEFAULT VALUES RETURNING id").fetchone()


def test_the_row_committed_before_the_kill_survived(cluster, drill):
    new = cluster.new_primary(drill["old_primary"])
    assert cluster.marker_count(new, drill["token"]) == 1
