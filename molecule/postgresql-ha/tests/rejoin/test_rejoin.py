"""After the old primary was booted again (and after the re-converge): it follows the new one."""

import time


def test_old_primary_rejoined_as_a_streaming_replica(cluster, drill):
    old, new = drill["old_primary"], drill["new_primary"]
    members = cluster.wait_for(
        lambda ms: (
            any(
                m["name"] == old
                and m["role"] in ("replica", "sync_standby")
                and m["state"] == "running"
                for m in ms
            )
            and len({m.get("timeline") for m in ms}) == 1
        ),
        120,
    )
    assert {m["name"] for m in members} == set(cluster.addresses)
    # Patroni 3.0 reports "running" as soon as PostgreSQL accepts connections; the WAL receiver
    # connects to the primary a moment later.
    deadline = time.monotonic() + 60
    rows: list[str] = []
    while time.monotonic() < deadline:
        rows = cluster.sql(new, "SELECT application_name, state FROM pg_stat_replication")
        rows = rows.splitlines()
        if f"{old}|streaming" in rows:
            break
        time.sleep(2)
    assert f"{old}|streaming" in rows


def test_new_primary_kept_its_role(cluster, drill):
    assert cluster.primary() == drill["new_primary"]


def test_old_primary_has_the_data_written_after_the_failover(cluster, drill):
    old = drill["old_primary"]
    assert cluster.marker_count(old, drill["token"]) == 1
    assert int(cluster.sql(old, "SELECT count(*) FROM after_failover", database="inkdeploy")) >= 1


def test_old_primary_was_rewound_or_needed_no_rewind(cluster, drill):
    log = cluster.host(drill["old_primary"]).check_output(
        "journalctl -u patroni --no-pager -o cat | grep -E 'pg_rewind|rewind' || true"
    )
    # Patroni runs pg_rewind when the old timeline diverged; either way it must not have
    # fallen back to deleting the data directory and cloning from scratch.
    assert "removing data directory" not in log.lower()
