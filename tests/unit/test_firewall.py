"""The common role's default-deny firewall: how a port entry's sources are resolved from the
inventory (roles/common/filter_plugins/common_network.py) and what the defaults leave open."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

ROLE = Path(__file__).resolve().parents[2] / "roles/common"
_spec = importlib.util.spec_from_file_location(
    "common_network", ROLE / "filter_plugins/common_network.py"
)
assert _spec and _spec.loader
network = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(network)
resolve = network.common_firewall_resolve

GROUPS = {"app": ["app1", "app2"], "db": ["db1"], "monitoring": [], "lb": ["lb1"]}
HOSTVARS = {
    "app1": {"ansible_host": "10.0.0.21"},
    "app2": {"ansible_host": "10.0.0.22"},
    "db1": {"ansible_host": "10.0.0.41"},
    "lb1": {"ansible_host": "2001:db8::10"},
}


def entry(**fields: object) -> dict[str, object]:
    return {"port": 5432, "proto": "tcp", "sources": [], "source_groups": [], "admin": False,
            "comment": "", **fields}  # fmt: skip


def test_source_groups_become_their_hosts_addresses() -> None:
    [got] = resolve([entry(source_groups=["app", "db", "lb"])], GROUPS, HOSTVARS, [])
    assert got["sources"] == ["10.0.0.21/32", "10.0.0.22/32", "10.0.0.41/32", "2001:db8::10/128"]
    assert got["anywhere"] is False


def test_admin_adds_the_admin_network_and_sources_add_cidrs() -> None:
    [got] = resolve(
        [entry(source_groups=["db"], admin=True, sources=["192.0.2.0/28"])],
        GROUPS, HOSTVARS, ["10.9.0.0/24"],
    )  # fmt: skip
    assert got["sources"] == ["10.0.0.41/32", "10.9.0.0/24", "192.0.2.0/28"]


def test_an_entry_whose_groups_are_empty_stays_closed_instead_of_opening_to_anyone() -> None:
    empty_group, admin_without_network = resolve(
        [entry(source_groups=["monitoring"]), entry(admin=True)], GROUPS, HOSTVARS, []
    )
    assert empty_group["sources"] == [] and empty_group["anywhere"] is False
    assert admin_without_network["sources"] == [] and admin_without_network["anywhere"] is False


def test_only_an_entry_naming_no_source_is_open_to_anywhere() -> None:
    [got] = resolve([entry(port=443)], GROUPS, HOSTVARS, ["10.9.0.0/24"])
    assert got["anywhere"] is True and got["sources"] == []


def test_a_host_without_an_ip_address_fails_naming_it() -> None:
    hostvars = {**HOSTVARS, "db1": {"ansible_host": "db1.example.net"}}
    with pytest.raises(AnsibleFilterError, match=r"host db1 \(group db\): 'db1.example.net'"):
        resolve([entry(source_groups=["db"])], GROUPS, hostvars, [])


def test_the_defaults_open_only_http_and_https_on_the_load_balancers_to_anyone() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    entries = [
        (group, e)
        for group, group_entries in defaults["common_firewall_group_ports"].items()
        for e in group_entries
    ] + [("all hosts", e) for e in defaults["common_firewall_all_hosts_ports"]]
    open_to_all = sorted(
        (group, e["port"])
        for group, e in entries
        if not e.get("source_groups") and not e.get("admin") and not e.get("sources")
    )
    assert open_to_all == [("lb", 80), ("lb", 443)]
    by_port = {e["port"]: e for _, e in entries}
    assert by_port[2379]["source_groups"] == ["db", "etcd"]
    assert by_port[2381]["source_groups"] == ["monitoring"]
    assert by_port[2380]["source_groups"] == ["etcd"]
    assert "app" not in by_port[8001]["source_groups"]
    assert by_port[9100]["source_groups"] == ["monitoring"] and not by_port[9100].get("admin")
    assert by_port[9093].get("admin") and by_port[9093]["source_groups"] == ["monitoring"]
