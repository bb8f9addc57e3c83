"""The lab fleet behaves like plain VMs: systemd, sshd, own addresses, apt, isolation."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import LAB, SUBNET, inkdeploy, ok, on, status, tcp_probe

pytestmark = pytest.mark.lab
HOSTS = ("lb1", "app1", "db1")
ADDR = {"lb1": "10.77.40.10", "app1": "10.77.40.11", "db1": "10.77.40.12"}


def test_up_boots_every_host_and_writes_the_inventory(lab):
    assert sorted(lab["booted"]) == sorted(HOSTS)
    assert lab["subnet"] == SUBNET
    st = status()
    assert {h["name"]: h["address"] for h in st["hosts"]} == ADDR
    assert all(h["power"] == "running" and h["system"] == "running" for h in st["hosts"])


def test_ansible_reaches_every_host_through_the_generated_inventory(lab):
    proc = subprocess.run(
        ["ansible", "-i", lab["inventory"], "all", "-m", "ansible.builtin.ping", "-o"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in HOSTS:
        assert f"{host} | SUCCESS" in proc.stdout


def test_inventory_groups_come_from_the_topology(lab):
    proc = subprocess.run(
        ["ansible-inventory", "-i", lab["inventory"], "--list"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    inv = json.loads(proc.stdout)
    assert inv["lb"]["hosts"] == ["lb1"]
    assert inv["celery_beat"]["hosts"] == ["app1"]
    assert sorted(inv["redis"]["hosts"]) == ["db1"]


def test_each_host_is_its_own_machine(lab):
    seen_ids = set()
    for host in HOSTS:
        proc = on(host, "sh", "-c", "hostname; cat /etc/machine-id; readlink /proc/1/exe; "
                  "systemctl is-system-running; ip -4 -o addr show scope global")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        name, machine_id, init, state, addr = proc.stdout.splitlines()
        assert name == host
        assert init.endswith("systemd")
        assert state == "running"
        assert f"{ADDR[host]}/24" in addr
        seen_ids.add(machine_id)
    assert len(seen_ids) == len(HOSTS)


def test_hosts_reach_each_other_by_name_and_address(lab):
    for src in HOSTS:
        for dst in HOSTS:
            if src != dst:
                assert tcp_probe(src, ADDR[dst]) == 0
                assert tcp_probe(src, dst) == 0


def test_hosts_cannot_reach_anything_outside_the_lab(lab):
    # No packet leaves: with no route the kernel refuses at once (ENETUNREACH = 101).
    for target in ("192.0.2.1", "198.51.100.7"):
        assert tcp_probe("app1", target) == 101
    route = on("app1", "ip", "route", "get", "192.0.2.1")
    assert route.returncode != 0 and "unreachable" in route.stderr
    # The controller drops anything forwarded between the lab bridge and other interfaces.
    rules = subprocess.run(
        ["nft", "list", "table", "inet", f"inkdeploy_lab_{LAB}"], capture_output=True, text=True
    ).stdout
    assert f'iifname "ink-{LAB}" oifname != "ink-{LAB}"' in rules and "drop" in rules


def test_apt_installs_through_the_lab_proxy(lab):
    proc = on("db1", "sh", "-c",
              "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
              "apt-get install -y -qq --no-install-recommends tree >/dev/null && tree --version",
              timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tree v")
    proxy = on("db1", "cat", "/etc/apt/apt.conf.d/00inkdeploy-proxy").stdout
    assert 'Acquire::http::Proxy "http://10.77.40.1:3142";' in proxy


def test_host_keys_are_pinned_not_trusted_on_first_use(lab):
    # A wrong key in known_hosts must make SSH fail: strict checking is really on.
    proc = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", "UserKnownHostsFile=/dev/null", "-i", f"/var/lib/inkdeploy/lab/{LAB}/ssh/id_ed25519",
         f"root@{ADDR['lb1']}", "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_up_again_keeps_running_hosts(lab):
    pids = {h["name"]: h["pid"] for h in status()["hosts"]}
    again = json.loads(ok("lab", "up", "--topology", "trio", "--json"))
    assert again["booted"] == []
    assert sorted(again["kept"]) == sorted(HOSTS)
    assert {h["name"]: h["pid"] for h in status()["hosts"]} == pids


def test_up_on_another_subnet_is_refused_without_changes(lab):
    proc = inkdeploy("lab", "up", "--topology", "trio", "--subnet", "10.77.41.0/24")
    assert proc.returncode == 1
    assert "already runs on 10.77.40.0/24" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_exec_returns_the_remote_exit_code(lab):
    assert on("app1", "sh", "-c", "exit 7").returncode == 7
    assert on("app1", "true").returncode == 0


def test_unknown_host_is_a_clear_error(lab):
    proc = inkdeploy("lab", "kill", "nosuch")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error: Lab 'itest' has no host 'nosuch'")
