"""Fault verbs for drills and failover tests: kill, stop, start, partition, heal, slow."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest

from .conftest import LAB, inkdeploy, ok, on, status, tcp_probe

pytestmark = pytest.mark.lab
CONSOLE = Path(f"/var/lib/inkdeploy/lab/{LAB}/hosts")


def host(name: str) -> dict:
    return next(h for h in status()["hosts"] if h["name"] == name)


def boot_log(name: str) -> str:
    """The console output of the host's most recent boot."""
    text = (CONSOLE / name / "console.log").read_text(errors="replace")
    return text.rsplit("===== boot", 1)[-1]


def test_kill_is_a_hard_power_cut_and_start_boots_again(lab):
    before = on("db1", "cat", "/proc/sys/kernel/random/boot_id").stdout
    ok("lab", "kill", "db1")
    assert host("db1")["power"] == "stopped"
    # No orderly shutdown happened: systemd never reached its shutdown target.
    log = boot_log("db1")
    assert "shutdown.target" not in log and "Halting system" not in log
    assert tcp_probe("lb1", "db1", timeout=1) != 0
    ok("lab", "start", "db1")
    assert host("db1")["system"] == "running"
    assert on("db1", "cat", "/proc/sys/kernel/random/boot_id").stdout != before


def test_stop_is_a_clean_shutdown(lab):
    ok("lab", "stop", "app1")
    assert host("app1")["power"] == "stopped"
    log = boot_log("app1")
    assert "shutdown.target" in log and "Halting system." in log
    ok("lab", "start", "app1")
    assert host("app1")["system"] == "running"


def test_a_started_host_keeps_its_disk(lab):
    on("db1", "sh", "-c", "echo kept > /root/marker && sync")
    ok("lab", "kill", "db1")
    ok("lab", "start", "db1")
    assert on("db1", "cat", "/root/marker").stdout.strip() == "kept"


def test_partition_cuts_the_host_off_and_heal_restores_it(lab):
    ok("lab", "partition", "app1")
    try:
        assert tcp_probe("lb1", "app1", timeout=1.5) != 0
        st = host("app1")
        assert st["network"] == "partitioned"
        assert st["power"] == "running"
        assert st["system"] == "unreachable"
    finally:
        ok("lab", "heal", "app1")
    assert tcp_probe("lb1", "app1") == 0
    assert host("app1")["network"] == "ok"


def test_slow_loss_drops_packets_and_heal_undoes_it(lab):
    ok("lab", "slow", "app1", "--loss", "100%")
    try:
        assert host("app1")["network"] == "loss 100%"
        assert tcp_probe("lb1", "app1", timeout=1.5) != 0
    finally:
        ok("lab", "heal", "app1")
    assert tcp_probe("lb1", "app1") == 0


def _kernel_has_netem() -> bool:
    try:
        config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return True  # no config to read: assume a stock kernel with netem as a module
    return "CONFIG_NET_SCH_NETEM=y" in config or "CONFIG_NET_SCH_NETEM=m" in config


def test_slow_delay_adds_latency_or_says_the_kernel_cannot(lab):
    proc = inkdeploy("lab", "slow", "app1", "--delay", "200ms")
    if not _kernel_has_netem():
        assert proc.returncode == 1
        assert "no netem queueing discipline" in proc.stderr
        assert host("app1")["network"] == "ok"
        return
    assert proc.returncode == 0, proc.stderr
    try:
        started = time.monotonic()
        assert tcp_probe("lb1", "app1", timeout=3) == 0
        assert time.monotonic() - started >= 0.2
    finally:
        ok("lab", "heal", "app1")


def test_fault_verbs_refuse_a_stopped_host(lab):
    ok("lab", "stop", "lb1")
    try:
        proc = inkdeploy("lab", "partition", "lb1")
        assert proc.returncode == 1
        assert "is not running; start it with 'inkdeploy lab start lb1'" in proc.stderr
    finally:
        ok("lab", "start", "lb1")
