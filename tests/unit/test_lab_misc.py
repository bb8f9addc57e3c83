import ipaddress
from pathlib import Path

import pytest

from inkdeploy.errors import LabError
from inkdeploy.lab import system
from inkdeploy.lab.cli import parse_delay, parse_loss
from inkdeploy.lab.layout import LabLayout, check_lab_name
from inkdeploy.lab.machines import render_etc_hosts


def test_lab_names_fit_in_interface_names():
    layout = LabLayout.for_lab("abcdefghij", Path("/x"))
    assert len(layout.bridge) <= 15
    for bad in ("", "Upper", "1abc", "has-dash", "abcdefghijk"):
        with pytest.raises(LabError, match="not allowed"):
            check_lab_name(bad)


def test_kernel_object_names_are_per_lab():
    a, b = LabLayout.for_lab("a", Path("/x")), LabLayout.for_lab("b", Path("/x"))
    assert a.bridge != b.bridge
    assert a.machine("db1") != b.machine("db1")
    assert a.veth("db1") == "vb-ink-a-db1"


def test_subnet_conflict_names_the_interface():
    in_use = [("eth0", ipaddress.IPv4Network("10.77.0.0/16"))]
    assert system.subnet_conflict(ipaddress.IPv4Network("10.77.3.0/24"), in_use) == (
        "10.77.0.0/16 on eth0"
    )
    assert system.subnet_conflict(ipaddress.IPv4Network("10.78.0.0/24"), in_use) is None


def test_missing_tools_name_the_debian_package(monkeypatch):
    monkeypatch.setattr(system.shutil, "which", lambda t: None if t == "debootstrap" else "/x")
    with pytest.raises(LabError, match="Missing debootstrap; install the Debian package"):
        system.require_tools()


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        system.require_root()


def test_disk_full_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(system.shutil, "disk_usage", lambda p: type("u", (), {"free": 10})())
    with pytest.raises(LabError, match="Not enough disk space"):
        system.require_free_space(tmp_path / "not" / "yet")


def test_delay_and_loss_parsing():
    assert parse_delay("200ms") == 200
    assert parse_delay("1s") == 1000
    assert parse_loss("5%") == 5.0
    assert parse_loss("0.5") == 0.5
    for bad in ("fast", "-1ms"):
        with pytest.raises(LabError):
            parse_delay(bad)
    with pytest.raises(LabError):
        parse_loss("150%")


def test_etc_hosts_lists_every_host():
    text = render_etc_hosts({"db1": ipaddress.IPv4Address("10.77.0.11")})
    assert "10.77.0.11\tdb1" in text
    assert text.startswith("127.0.0.1\tlocalhost")


def test_a_recreated_host_loses_its_cached_facts_in_every_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inkdeploy.lab import manager

    cache = tmp_path / ".cache" / "ansible-facts"
    for inventory in ("lab_hosts.yml-1", "inventory_hosts.yml-2"):
        (cache / inventory).mkdir(parents=True)
        for host in ("app1", "app11"):
            (cache / inventory / f"s1_{host}").write_text("{}")
    monkeypatch.setattr(
        manager, "project_inventory_path", lambda: tmp_path / "inventories/lab/hosts.yml"
    )
    manager._forget_cached_facts("app1")
    left = sorted(str(p.relative_to(cache)) for p in cache.glob("*/*"))
    assert left == ["inventory_hosts.yml-2/s1_app11", "lab_hosts.yml-1/s1_app11"]
