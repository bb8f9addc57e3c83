"""Fault verbs for drills and failover tests: kill, stop, start, partition, heal, slow."""

from __future__ import annotations

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


def connect_ms(src: str, dst: str, count: int = 5) -> list[float]:
    code = (
        "import socket,sys,time\n"
        f"for _ in range({count}):\n"
        "    s=socket.socket(); t=time.monotonic(); s.connect((sys.argv[1], 22))\n"
        "    print((time.monotonic()-t)*1000); s.close()"
    )
    proc = on(src, "python3", "-c", code, dst)
    assert proc.returncode == 0, proc.stderr
    return [float(x) for x in proc.stdout.split()]


def test_slow_delay_adds_latency_both_ways_and_heal_removes_it(lab):
    assert max(connect_ms("lb1", "app1")) < 50
    ok("lab", "slow", "app1", "--delay", "200ms")
    try:
        assert host("app1")["network"] == "delay 200ms"
        # Packets app1 sends are held 200 ms: its SYN-ACK, and its own SYN to another host.
        for sample in (connect_ms("lb1", "app1"), connect_ms("app1", "db1")):
            assert all(195 <= ms < 400 for ms in sample), sample
    finally:
        ok("lab", "heal", "app1")
    assert max(connect_ms("lb1", "app1")) < 50


def test_a_slowed_host_can_be_killed_and_started(lab):
    ok("lab", "slow", "db1", "--delay", "100ms", "--loss", "1%")
    ok("lab", "kill", "db1")
    ok("lab", "start", "db1")
    st = host("db1")
    assert st["network"] == "ok" and st["system"] == "running"
    # A delay left behind would slow every connection. The first one to a host that has just
    # booted may wait a SYN retransmit (1 s; seen in CI), so it is not the measure.
    sample = connect_ms("lb1", "db1", count=6)[1:]
    assert max(sample) < 50, sample


def test_fault_verbs_refuse_a_stopped_host(lab):
    ok("lab", "stop", "lb1")
    try:
        proc = inkdeploy("lab", "partition", "lb1")
        assert proc.returncode == 1
        assert "is not running; start it with 'inkdeploy lab start lb1'" in proc.stderr
    finally:
        ok("lab", "start", "lb1")
