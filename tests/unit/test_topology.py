import ipaddress

import pytest

from inkdeploy.errors import LabError
from inkdeploy.lab.topology import (
    KNOWN_GROUPS,
    OPTIONAL_GROUPS,
    allocate_addresses,
    builtin_topologies,
    load_topology,
    parse_topology,
)

NET = ipaddress.IPv4Network("10.77.0.0/24")


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def test_builtin_topologies_load_and_full_matches_the_documented_fleet():
    assert {"full", "small", "trio"} <= set(builtin_topologies())
    full = load_topology("full")
    groups = full.groups()
    assert groups["lb"] == ["lb1"]
    assert groups["app"] == ["app1", "app2", "app3"]
    assert groups["worker"] == ["worker1"]
    assert groups["celery_beat"] == ["worker1"]
    assert groups["db"] == groups["etcd"] == ["db1", "db2", "db3"]
    assert groups["redis"] == groups["sentinel"] == ["redis1", "redis2", "redis3"]
    assert groups["monitoring"] == ["mon1"]
    assert groups["logging"] == ["log1"]
    assert groups["backup"] == ["backup1"]
    assert len(full.hosts) == 14


def test_the_stack_tests_small_topology_has_two_load_balancers():
    groups = load_topology("small").groups()
    assert groups["lb"] == ["lb1", "lb2"] and groups["app"] == ["app1", "app2"]


@pytest.mark.parametrize("name", ["full", "small", "trio"])
def test_every_builtin_topology_covers_every_group(name):
    groups = load_topology(name).groups()
    required = [g for g in KNOWN_GROUPS if g not in OPTIONAL_GROUPS or name != "trio"]
    assert all(groups[g] for g in required), [g for g in required if not groups[g]]


def test_unknown_group_is_named_with_the_allowed_ones():
    with pytest.raises(LabError) as err:
        parse_topology("name: t\nhosts:\n  a1: {groups: [apps]}\n", "t.yml")
    assert "unknown group(s) apps" in err.value.message
    assert "celery_beat" in err.value.message


def test_beat_on_two_hosts_is_refused():
    text = "name: t\nhosts:\n  w1: {groups: [celery_beat]}\n  w2: {groups: [celery_beat]}\n"
    with pytest.raises(LabError, match="celery_beat must be on exactly one host"):
        parse_topology(text, "t.yml")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: t\nhosts: {}\n", "at least one host"),
        ("name: t\nhosts:\n  Bad_Name: {}\n", "hosts.Bad_Name"),
        ("name: t\nsubnet: 8.8.8.0/24\nhosts:\n  a: {}\n", "not a private network"),
        ("name: t\nhosts:\n  a: {colour: red}\n", "Extra inputs are not permitted"),
        ("- just a list\n", "must be a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_topologies_say_what_is_wrong(text, fragment):
    with pytest.raises(LabError) as err:
        parse_topology(text, "t.yml")
    assert fragment in err.value.message


def test_missing_topology_lists_the_builtin_ones():
    with pytest.raises(LabError, match="use one of full, small, trio"):
        load_topology("nosuch")
    with pytest.raises(LabError, match="does not exist"):
        load_topology("/nonexistent/topology.yml")


def test_addresses_are_sequential_from_dot_ten_in_topology_order():
    topo = load_topology("trio")
    assert allocate_addresses(topo, NET) == {
        "lb1": ip("10.77.0.10"),
        "app1": ip("10.77.0.11"),
        "db1": ip("10.77.0.12"),
    }


def test_existing_hosts_keep_their_address_when_a_host_is_inserted():
    before = {"lb1": ip("10.77.0.10"), "db1": ip("10.77.0.11")}
    topo = parse_topology("name: t\nhosts:\n  lb1: {}\n  app1: {}\n  db1: {}\n", "t.yml")
    after = allocate_addresses(topo, NET, before)
    assert after["lb1"] == before["lb1"]
    assert after["db1"] == before["db1"]
    assert after["app1"] == ip("10.77.0.12")


def test_hosts_left_out_of_a_topology_keep_their_address_reserved():
    previous = {"old1": ip("10.77.0.10")}
    topo = parse_topology("name: t\nhosts:\n  new1: {}\n", "t.yml")
    assert allocate_addresses(topo, NET, previous)["new1"] == ip("10.77.0.11")


def test_explicit_addresses_win_and_are_checked():
    topo = parse_topology("name: t\nhosts:\n  a: {address: 10.77.0.50}\n  b: {}\n", "t.yml")
    assert allocate_addresses(topo, NET) == {"a": ip("10.77.0.50"), "b": ip("10.77.0.10")}
    outside = parse_topology("name: t\nhosts:\n  a: {address: 10.9.0.5}\n", "t.yml")
    with pytest.raises(LabError, match=r"not a host address in 10\.77\.0\.0/24"):
        allocate_addresses(outside, NET)
    gateway = parse_topology("name: t\nhosts:\n  a: {address: 10.77.0.1}\n", "t.yml")
    with pytest.raises(LabError, match="already used"):
        allocate_addresses(gateway, NET)


def test_a_full_subnet_is_reported():
    hosts = "".join(f"  h{i}: {{}}\n" for i in range(6))
    topo = parse_topology(f"name: t\nhosts:\n{hosts}", "t.yml")
    with pytest.raises(LabError, match="no free address left for h5"):
        allocate_addresses(topo, ipaddress.IPv4Network("10.77.0.0/28"))
